//! Starting a run by hand: some sources, some items or everything, with the job's flags (`force`,
//! `allow_withdrawals` — the operator's confirmation of withdrawals the guard held back).

use super::{Actor, Ctx, OpsError, Prelude, Runner, event, why};
use crate::pipeline::Job;

/// What an operator asks a run to do.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Source ids; none means all (or those of `items`).
    pub sources: Vec<String>,
    /// Item keys; none means every item of the sources.
    pub items: Vec<String>,
    /// Re-map and re-deliver unchanged items too.
    pub force: bool,
    /// Send withdrawals even when more of a source vanished than its guard allows.
    pub allow_withdrawals: bool,
    /// Map and validate only: nothing delivered, recorded or logged.
    pub dry_run: bool,
}

impl RunRequest {
    /// The request's item keys, parsed; refuses a malformed key, an unknown source (its own or an
    /// item's) or an item the ledger does not know (a typo, not a partial run: an item not migrated
    /// yet goes with its source) before anything happens.
    pub(super) async fn checked_items(&self, ctx: &Ctx<'_>) -> Result<Vec<crate::domain::ItemKey>, OpsError> {
        let items = self.items.iter().map(|text| ctx.item_key(text)).collect::<Result<Vec<_>, _>>()?;
        for source in &self.sources {
            ctx.check_source(source)?;
        }
        for key in &items {
            if ctx.store.item(key.as_str()).await?.is_empty() {
                let unknown = super::items::unknown_item(ctx.store, key.as_str()).await?;
                return Err(OpsError::Usage(format!(
                    "{unknown}; an item not migrated yet goes with its source `{}`",
                    key.source()
                )));
            }
        }
        Ok(items)
    }
}

/// Starts a run; once it holds its sources it is logged as `run started by … [with force and
/// allow_withdrawals]: reason` with its id (a dry run records nothing, so nothing is logged).
pub async fn start_run<R: Runner>(
    ctx: &Ctx<'_>,
    runner: &R,
    actor: &Actor,
    request: RunRequest,
    reason: Option<&str>,
) -> Result<R::Run, OpsError> {
    let items = request.checked_items(ctx).await?;
    let flags: Vec<&str> = [(request.force, "force"), (request.allow_withdrawals, "allow_withdrawals")]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
    let with = if flags.is_empty() { String::new() } else { format!(" with {}", flags.join(" and ")) };
    let message = format!("run started by {actor}{with}{}", why(reason));
    let prelude = if request.dry_run {
        Prelude::default()
    } else {
        Prelude { events: vec![event(actor, reason, None, None, message)], ..Prelude::default() }
    };
    let job = Job {
        sources: request.sources,
        items,
        force: request.force,
        allow_withdrawals: request.allow_withdrawals,
        dry_run: request.dry_run,
        author: Some(actor.name.clone()),
        ..Job::all(runner.trigger())
    };
    runner.start(job, prelude).await
}
