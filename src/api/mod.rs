//! The admin HTTP API: health, readiness, Prometheus metrics, JSON views of runs, items and
//! adoptions, the operator's actions, and the review pages.
//!
//! ```text
//! GET    /healthz                      200 "ok" while the process runs (no token)
//! GET    /readyz                       200 {database, sources} when the database answers, else 503 (no token)
//! GET    /metrics                      OpenMetrics text (viewer)
//! GET    /api/runs?limit=              recent runs, newest first (viewer)
//! POST   /api/runs                     {"sources": [..], "items": [..], "force": false, "allow_withdrawals": false,
//!                                      "reason": ".."} → 202 {"queued": true, "run_id": N} once the run has its
//!                                      sources, 409 {error, source, holder} when one is busy (operator)
//! GET    /api/runs/{id}                the run, its events and the call confirming held withdrawals (viewer)
//! GET    /api/items?status=&source=    ledger rows (viewer)
//! GET    /api/items/{key}              rows per target and the item's log; key percent-encoded or with its `/` (viewer)
//! POST   /api/items/{key}/retry        {"reason"} → a run of the item: 202 with the run id, or 409 (operator)
//! POST   /api/items/{key}/skip         {"reason"} → 200; left alone until its content changes (operator)
//! POST   /api/items/{key}/unskip       {"reason"?} → 200; the skip undone, migrated as any other (operator)
//! POST   /api/items/{key}/resolve      {"overwrite": true, "reason"} → a run overwriting the portal's copy (operator)
//! POST   /api/retry                    {"items": [..]} or {"status", "source"}, and "reason" → 202, or 200 when
//!                                      nothing is in that status (operator)
//! GET    /api/adoptions                every adoption (viewer)
//! POST   /api/adoptions                {"ars", "service", "name", "force", "reason"} → 201 added, 200 existed (operator)
//! DELETE /api/adoptions/{ars}/{service} {"reason"} (optional) → 200, or 404 (operator)
//! GET    / and /runs, /runs/{id}, /items/{key}, /items/{key}/diff, /quarantine   review pages (viewer)
//! GET    /quality?source=              the quality report per form, for the regions (viewer)
//! GET    /plans, /plans/{id}           review pages of plans: waiting ones first; one with its diffs (viewer)
//! POST   /plans/{id}/decide            the plan page's form: approve or reject (approver, Basic or bearer,
//!                                      from this site, with the page's anti-CSRF token; see [`csrf`])
//! ```
//!
//! Each action goes through [`crate::ops`], logged with the token's name and the reason. Who may
//! call what: see [`auth`] (roles viewer < operator < approver, named tokens in [`tokens`]).

mod actions;
mod auth;
mod csrf;
mod held;
mod html;
mod json;
mod metrics;
mod pages;
mod plan_form;
mod plan_pages;
mod plans;
mod quality;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::pipeline::{Busy, Job};
use crate::store::{Store, StoreError};

pub use auth::{ADMIN_NAME, Access, Approver, FormApprover, Operator, SignedIn, Viewer, ViewerPage, token_matches};
pub use csrf::{FORM_LIFETIME, FormKey};

/// What is known about one source right now. The scheduler writes `running` and `next_run_at`
/// (and `last_error` for a run it could not start); the last run's own result and the last success
/// come from the store ([`ApiState::sources_now`]), whatever started the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceState {
    /// A run of this source is in progress.
    pub running: bool,
    /// Next scheduled fire time (RFC 3339), if the source has a schedule.
    pub next_run_at: Option<String>,
    pub last_run_id: Option<i64>,
    /// The source's own result in its last run (`ok` although the run as a whole was `partial`,
    /// if the problems were other sources').
    pub last_status: Option<String>,
    /// End of the last run in which this source went through without problems of its own (RFC 3339).
    pub last_success_at: Option<String>,
    /// Why the last run of the source failed or stopped (e.g. the source could not be read).
    pub last_error: Option<String>,
}

/// A job the admin API hands to the daemon, and where the daemon answers whether its run started.
#[derive(Debug)]
pub struct Queued {
    pub job: Job,
    /// What the run does once it holds its sources, before it goes on ([`crate::ops::prelude`]).
    pub prelude: crate::ops::Prelude,
    pub answer: tokio::sync::oneshot::Sender<RunAnswer>,
}

/// The daemon's answer to a [`Queued`] job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAnswer {
    /// The run holds its sources and is recorded: it happens (and ends with a status) for sure.
    Started { run_id: i64 },
    /// A source of the job is held by another run; nothing was started.
    Busy(Busy),
    /// The run could not be started (e.g. the database failed); nothing was started.
    Refused(String),
}

/// Shared state of the daemon's sources, by source id.
///
/// The daemon should insert an entry for every configured source at start: `POST /api/runs` then
/// refuses unknown source ids with 400 (while the map is empty, any id is passed on).
pub type SourceStates = Arc<RwLock<BTreeMap<String, SourceState>>>;

/// Everything the router needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// The named tokens and whether reads need one, as currently configured (the daemon sends a
    /// new value when it reloads its configuration).
    pub access: tokio::sync::watch::Receiver<Access>,
    /// Where the actions that run (`POST /api/runs`, retry, resolve) send their jobs (the daemon
    /// runs them and answers whether the run started).
    pub trigger: tokio::sync::mpsc::Sender<Queued>,
    pub sources: SourceStates,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This daemon's instance name: an action that takes a source's lease itself (skip) holds it
    /// as `<instance>#api`.
    pub instance: Arc<str>,
    /// How long such a lease lasts (`[daemon] lease_secs`).
    pub lease: Duration,
    /// What a plan is made with (`POST /api/plans`): the daemon's current configuration, store,
    /// schemas and clock (a new value after a reload).
    pub deps: tokio::sync::watch::Receiver<crate::pipeline::Deps>,
    /// The item pages' last verification of the audit chain, reused for [`ChainCache::TTL`].
    pub chain: ChainCache,
}

/// The last [`crate::store::Store::verify_chain`] report the item pages show: the whole chain is
/// verified at most once a minute per daemon (a chain of a million entries takes seconds,
/// docs/performance.md), and views waiting meanwhile share the one verification. A change made
/// directly in the database thus shows on the pages within a minute; `audit verify` always
/// recomputes.
#[derive(Debug, Clone, Default)]
pub struct ChainCache(Arc<tokio::sync::Mutex<Option<(std::time::Instant, crate::store::audit::ChainReport)>>>);

impl ChainCache {
    /// How long a verification is shown before the chain is verified again.
    pub const TTL: Duration = Duration::from_secs(60);

    /// The cached report while it is fresh, else a new verification of the whole chain.
    pub(crate) async fn report(&self, store: &Store) -> Result<crate::store::audit::ChainReport, StoreError> {
        let mut cached = self.0.lock().await;
        if let Some((at, report)) = cached.as_ref()
            && at.elapsed() < Self::TTL
        {
            return Ok(report.clone());
        }
        let report = store.verify_chain(None).await?;
        *cached = Some((std::time::Instant::now(), report.clone()));
        Ok(report)
    }
}

impl ApiState {
    /// A copy of the source states (never holds the lock across an await).
    fn source_states(&self) -> BTreeMap<String, SourceState> {
        match self.sources.read() {
            Ok(states) => states.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The configured sources with what the scheduler knows (running, next run) and, from the
    /// store, each one's last result and last success. Without a daemon's list of sources, every
    /// source the store knows.
    async fn sources_now(&self) -> Result<BTreeMap<String, SourceState>, StoreError> {
        let mut states = self.source_states();
        let known = !states.is_empty();
        for result in self.store.source_results().await? {
            let state = match states.get_mut(&result.source_id) {
                Some(state) => state,
                None if known => continue,
                None => states.entry(result.source_id.clone()).or_default(),
            };
            state.last_run_id = Some(result.run_id);
            state.last_status = Some(result.status);
            state.last_success_at = result.last_success_at;
            if result.error.is_some() || state.last_error.is_none() {
                state.last_error = result.error;
            }
        }
        Ok(states)
    }

    /// The configured time zone, that pages show times in.
    fn timezone(&self) -> chrono_tz::Tz {
        self.deps.borrow().config.timezone
    }
}

/// The admin API and the review pages on `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(json::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/api/runs", get(json::runs).post(actions::start_run))
        .route("/api/runs/{id}", get(json::run))
        .route("/api/audit/head", get(json::audit_head))
        .route("/api/audit/prune", post(actions::audit_prune))
        .route("/api/items", get(json::items))
        // One wildcard serves `aachen-forms%2FS05000101@1.0` and `aachen-forms/S05000101@1.0` alike.
        .route("/api/items/{*key}", get(json::item).post(actions::item_action))
        .route("/api/retry", post(actions::retry_many))
        .route("/api/plans", get(plans::list).post(plans::make))
        .route("/api/plans/{id}", get(plans::show))
        .route("/api/plans/{id}/approve", post(plans::approve))
        .route("/api/plans/{id}/reject", post(plans::reject))
        .route("/api/plans/{id}/apply", post(plans::apply))
        .route("/api/adoptions", get(actions::adoptions).post(actions::adopt))
        .route("/api/adoptions/import", post(actions::import_adoptions))
        .route("/api/adoptions/{ars}/{service}", delete(actions::unadopt))
        .route("/", get(pages::runs))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/items/{*key}", get(pages::item_or_diff))
        .route("/quarantine", get(pages::quarantine))
        .route("/quality", get(quality::quality))
        .route("/plans", get(plan_pages::list))
        .route("/plans/{id}", get(plan_pages::show))
        .route("/plans/{id}/decide", post(plan_form::decide))
        .fallback(not_found)
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        json::ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint {}", uri.path())).into_response()
    } else {
        pages::not_found_page(&format!("Die Seite {} gibt es nicht (no such page).", uri.path()))
    }
}

/// How long readiness and metrics wait for the database.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(3);

/// True if the database answers within [`DATABASE_TIMEOUT`].
async fn database_answers(store: &Store) -> bool {
    tokio::time::timeout(DATABASE_TIMEOUT, store.ping()).await.unwrap_or(false)
}

/// An item key as one URL path segment (`/` and everything unusual percent-encoded).
pub fn key_segment(key: &str) -> String {
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'@');
    utf8_percent_encode(key, SEGMENT).to_string()
}

/// A value for a URL query string.
fn query_value(value: &str) -> String {
    const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(value, QUERY).to_string()
}

/// Logs a store failure and says what to show.
fn store_failure(e: &StoreError) -> String {
    tracing::error!(error = %e, "admin API: store query failed");
    format!("the database query failed: {e}")
}

/// Timestamps as stored (RFC 3339) for people, in the configured zone `tz` with the zone's
/// abbreviation: `2024-05-01 14:00:03 CEST`.
fn when(text: &str, tz: chrono_tz::Tz) -> String {
    crate::domain::local_time(text, tz)
}

/// The documents of run `id` that went through with warnings, with their warnings, from its log: the
/// warnings of an item at a target that had no error in the run.
async fn warned(store: &Store, id: i64) -> Result<Vec<crate::pipeline::Warned>, StoreError> {
    use crate::domain::Level;
    use crate::store::log::EventFilter;
    let filter = EventFilter { run_id: Some(id), level: Some(Level::Warn), limit: 0, ..Default::default() };
    let events = store.events(&filter).await?;
    let failed: std::collections::HashSet<(&str, &str)> = events
        .iter()
        .filter(|e| e.level == Level::Error.as_str())
        .filter_map(|e| Some((e.item_key.as_deref()?, e.target.as_deref()?)))
        .collect();
    let mut warned: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.level == Level::Warn.as_str()) {
        let (Some(key), Some(target)) = (e.item_key.as_deref(), e.target.as_deref()) else { continue };
        if !failed.contains(&(key, target)) {
            warned.entry((key, target)).or_default().push(e.message.clone());
        }
    }
    Ok(warned
        .into_iter()
        .map(|((key, target), warnings)| crate::pipeline::Warned {
            item_key: key.to_owned(),
            target: target.to_owned(),
            warnings,
        })
        .collect())
}

/// Unix seconds of an RFC 3339 timestamp.
fn unix_seconds(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_one_segment() {
        assert_eq!(key_segment("aachen-forms/S05000101@1.0"), "aachen-forms%2FS05000101@1.0");
        assert_eq!(key_segment("a/file:x y.xml"), "a%2Ffile%3Ax%20y.xml");
        assert_eq!(key_segment("a/<b>%"), "a%2F%3Cb%3E%25");
        assert_eq!(query_value("owl forms&x"), "owl%20forms%26x");
    }

    #[test]
    fn timestamps_are_shown_in_the_configured_zone() {
        assert_eq!(when("2024-05-01T12:00:03.123Z", chrono_tz::UTC), "2024-05-01 12:00:03 UTC");
        assert_eq!(when("2024-05-01T12:00:03.123Z", chrono_tz::Europe::Berlin), "2024-05-01 14:00:03 CEST");
        assert_eq!(when("2024-01-01T12:00:03Z", chrono_tz::Europe::Berlin), "2024-01-01 13:00:03 CET");
        assert_eq!(when("yesterday", chrono_tz::UTC), "yesterday");
        assert_eq!(unix_seconds("1970-01-01T00:01:00Z"), Some(60));
    }
}
