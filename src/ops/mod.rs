//! The operator's actions — retry, skip, resolve, adopt, start a run — one layer for the command
//! line and the admin API alike.
//!
//! Each action checks its arguments first (an unknown source, item or key is refused before
//! anything happens), respects the sources' leases (a run takes them through its [`Runner`], a
//! skip takes the item's source's lease itself), and logs what it did in the migration log with who
//! ([`Actor`]) and why (the reason given): the same event whichever way it came. What was refused
//! leaves no event. The callers only parse their input ([`crate::cli`]: arguments, [`crate::api`]:
//! the request) and show the outcome.

mod adopt;
mod audit;
mod items;
mod plans;
mod runs;

use std::time::Duration;

use crate::domain::{Clock, ItemKey, Trigger};
use crate::pipeline::{Busy, Deps, Job, Stop};
use crate::store::lease::Fence;
use crate::store::operator::OperatorEvent;
use crate::store::{Store, StoreError, timestamp};

pub use adopt::{Imported, adopt_add, adopt_remove, check_adoption, import_adoptions};
pub use audit::{Archive, PruneOutcome, Pruning, When, prune as prune_audit};
pub use items::{RetryWhat, resolve, retry, skip, unknown_item, unskip};
pub use plans::{Made, apply_plan, decide_plan, make_plan};
pub use runs::{RunRequest, start_run};

/// Who acts: an admin token's name, or the OS user of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
}

impl Actor {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The user this process runs as: the name of its user id in the system's user database,
    /// else `$USER`, else `unknown`.
    pub fn os_user() -> Self {
        let name = whoami::fallible::username()
            .ok()
            .or_else(|| std::env::var("USER").ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Self { name }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Why an action was refused or failed. Refusals (`Usage`, `NotFound`, `Busy`) happen before
/// anything is changed or logged.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The arguments are wrong: an unknown source, a malformed key, a missing reason.
    #[error("{0}")]
    Usage(String),
    /// The state of what is named refuses the action (a plan not approved, expired or already
    /// applied; an author approving their own plan).
    #[error("{0}")]
    Refused(String),
    /// The item or adoption named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A source is held by another run (for as long as the caller would wait).
    #[error(transparent)]
    Busy(Busy),
    /// Asked to stop (Ctrl-C) before the action happened.
    #[error("{0}")]
    Stopped(String),
    /// Whoever starts runs cannot take one now (the daemon's queue is full, or it shuts down).
    #[error("{0}")]
    Unavailable(String),
    /// The portal could not be asked (resolve reads its current version first).
    #[error("the portal: {0}")]
    Portal(String),
    /// The run could not be started or its start not recorded.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the actions check against and write to.
pub struct Ctx<'a> {
    pub store: &'a Store,
    /// The configured source ids, to refuse unknown ones up front (`None`: not known here; the
    /// run refuses them).
    pub sources: Option<Vec<String>>,
    pub clock: &'a dyn Clock,
}

impl Ctx<'_> {
    /// Refuses a source id that is empty or not configured.
    fn check_source(&self, id: &str) -> Result<(), OpsError> {
        if id.is_empty() {
            return Err(OpsError::Usage("a source id is empty".into()));
        }
        match &self.sources {
            Some(known) if !known.iter().any(|k| k == id) => {
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                Err(OpsError::Usage(crate::config::unknown_name("source", id, &known)))
            }
            _ => Ok(()),
        }
    }

    /// Parses an item key and checks its source.
    fn item_key(&self, text: &str) -> Result<ItemKey, OpsError> {
        let key = ItemKey::parse(text).ok_or_else(|| {
            OpsError::Usage(format!(
                "`{text}` is not an item key (expected SOURCE/ID, e.g. aachen-forms/S05000101@1.0)"
            ))
        })?;
        self.check_source(key.source())?;
        Ok(key)
    }

    fn now(&self) -> String {
        timestamp(self.clock.now())
    }
}

/// Where an action's run starts: the command line starts it in its own process (waiting for busy
/// sources as long as asked), the admin API hands it to the daemon. Either way the run first takes
/// its sources' leases and is recorded, then [`prelude`] is carried out under those leases, and
/// only then does the run go on; a run that cannot take its sources is [`OpsError::Busy`].
pub trait Runner: Sync {
    /// What the caller gets of a started run (the command line: the run to carry out and report;
    /// the API: its id).
    type Run: Send;
    /// How runs of this runner are recorded.
    fn trigger(&self) -> Trigger;
    fn start(&self, job: Job, prelude: Prelude) -> impl Future<Output = Result<Self::Run, OpsError>> + Send;
}

/// What an operator's run does once it holds its sources, before it goes on: conflicts to take
/// over (resolve), and the action's events, logged with the run's id.
#[derive(Debug, Clone, Default)]
pub struct Prelude {
    overwrite: Vec<Overwrite>,
    events: Vec<OperatorEvent>,
    /// The plan the run applies: it is marked with the run's id (so that a plan whose run died can
    /// be applied again).
    applies: Option<i64>,
}

#[derive(Debug, Clone)]
struct Overwrite {
    key: ItemKey,
    actor: Actor,
    reason: Option<String>,
}

impl Prelude {
    /// True if there is nothing to do (a scheduled run's).
    pub fn is_empty(&self) -> bool {
        self.overwrite.is_empty() && self.events.is_empty() && self.applies.is_none()
    }
}

/// Carries out a run's [`Prelude`] while the run holds its sources: each conflict to overwrite takes
/// over the portal's current version (read through the target's own client) and is logged in the
/// same transaction; then the action's events are logged with `run_id`. `fence` gives the run's
/// fence on a source. The daemon and the command line call this between starting a run and going on.
pub async fn prelude(
    deps: &Deps,
    run_id: Option<i64>,
    fence: &(dyn Fn(&str) -> Fence + Sync),
    prelude: &Prelude,
) -> Result<(), OpsError> {
    for overwrite in &prelude.overwrite {
        items::take_over(deps, run_id, &fence(overwrite.key.source()), overwrite).await?;
    }
    if let (Some(plan), Some(run)) = (prelude.applies, run_id) {
        use crate::store::plans::PlanStatus;
        let at = timestamp(deps.clock.now());
        deps.store.set_plan_status(plan, PlanStatus::Applying, PlanStatus::Applying, &at, Some(run)).await?;
    }
    if prelude.events.is_empty() {
        return Ok(());
    }
    let at = timestamp(deps.clock.now());
    let events: Vec<OperatorEvent> =
        prelude.events.iter().map(|e| OperatorEvent { at: at.clone(), run_id, ..e.clone() }).collect();
    deps.store.append_operator_events(&events).await?;
    Ok(())
}

/// How an operator's write outside any run takes its source's lease (as a run does).
#[derive(Debug, Clone)]
pub struct Holding {
    /// The lease holder's name (`<instance>#<what>`), shown to whoever finds the source busy.
    pub holder: String,
    pub ttl: Duration,
    /// How long to wait for a source another run holds.
    pub wait: Duration,
    /// Stops the wait.
    pub stop: Stop,
}

/// `"{what} by {actor}"`, and `": {reason}"` if one was given: how every operator event reads.
fn said(what: &str, actor: &Actor, reason: Option<&str>) -> String {
    format!("{what} by {actor}{}", why(reason))
}

/// `": {reason}"` for a reason given, else nothing.
fn why(reason: Option<&str>) -> String {
    reason.map(str::trim).filter(|r| !r.is_empty()).map(|r| format!(": {r}")).unwrap_or_default()
}

/// An operator event to be logged (its time and run filled in when it is).
fn event(
    actor: &Actor,
    reason: Option<&str>,
    item_key: Option<&str>,
    target: Option<&str>,
    message: String,
) -> OperatorEvent {
    OperatorEvent {
        at: String::new(),
        run_id: None,
        item_key: item_key.map(str::to_owned),
        target: target.map(str::to_owned),
        actor: actor.name.clone(),
        reason: reason.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_what_who_and_why() {
        let actor = Actor::new("a.mueller");
        assert_eq!(said("skipped", &actor, Some(" by hand ")), "skipped by a.mueller: by hand");
        assert_eq!(said("skipped", &actor, Some("  ")), "skipped by a.mueller");
        assert_eq!(said("skipped", &actor, None), "skipped by a.mueller");
        let e = event(&actor, Some(""), Some("a/b"), None, "m".into());
        assert_eq!((e.reason, e.item_key.as_deref(), e.actor.as_str()), (None, Some("a/b"), "a.mueller"));
    }

    #[test]
    fn the_os_user_has_a_name() {
        assert!(!Actor::os_user().name.is_empty());
    }
}
