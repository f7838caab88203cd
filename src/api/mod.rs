//! The admin HTTP API: health, readiness, Prometheus metrics, JSON views of runs and items, triggers, and the review pages.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::pipeline::Job;
use crate::store::Store;

/// What the daemon knows about one source right now (the scheduler writes, the API reads).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceState {
    /// A run of this source is in progress.
    pub running: bool,
    /// Next scheduled fire time (RFC 3339), if the source has a schedule.
    pub next_run_at: Option<String>,
    pub last_run_id: Option<i64>,
    pub last_status: Option<String>,
    /// End of the last run of this source that went through without problems (RFC 3339).
    pub last_success_at: Option<String>,
    /// The fetch error of the last run, if the source could not be read.
    pub last_error: Option<String>,
}

/// Shared state of the daemon's sources, by source id.
pub type SourceStates = Arc<RwLock<BTreeMap<String, SourceState>>>;

/// Everything the router needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// Bearer token for mutating calls (and, with `read_needs_token`, for reads). `None`: every
    /// mutating call is refused (401), reads are open unless `read_needs_token`.
    pub admin_token: Option<secrecy::SecretString>,
    pub read_needs_token: bool,
    /// Where `POST /api/runs` and `POST /api/items/{key}/retry` send their jobs (the daemon runs them).
    pub trigger: tokio::sync::mpsc::Sender<Job>,
    pub sources: SourceStates,
    pub metrics: Arc<crate::api::metrics::Metrics>,
}

pub mod metrics {
    //! Prometheus metrics the pipeline and the scheduler record into (filled in by the API work).

    /// The registry and the instruments; see the methods for what is recorded.
    #[derive(Debug, Default)]
    pub struct Metrics {}
}
