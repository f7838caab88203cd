//! The pipeline: one run over some sources, in two halves — planning ([`plan`]: list, read and key
//! records, skip what is unchanged, map, validate → plan steps) and applying (`apply`: deliver
//! through the delivery journal, record every outcome in the ledger and the migration log).
//!
//! A source is processed in two passes. The *scan* reads and decodes every entry to learn each
//! record's key and content hash and keeps only those; comparing them with the ledger decides which
//! (item, mapping) pairs need work. The *work* pass decodes only the entries that have work, maps
//! and validates them into the plan's steps, and applies each slice of steps as it is made.
//! CPU-bound passes run on blocking threads, several entries at once; memory holds the keys of a
//! source, not its documents. A run's frame (leases, its record) is [`start`] and
//! [`Started::finish`]; what an interrupted run left is finished first (`reconcile`). A daemon shares
//! the work pass of a large run with the other instances on its database (see [`share`]).

mod apply;
pub mod codelists;
pub mod hold;
mod kept;
pub mod plan;
mod reconcile;
mod run;
mod scan_cache;
pub mod share;
mod source_run;
pub mod stop;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Source};
use crate::delivery::Journal;
use crate::domain::{Clock, ItemKey, ItemStatus, RunStatus, Stage, Trigger};
use crate::mapping::Mapping;
use crate::source::{self, Entry};
use crate::store::lease::Fence;
use crate::store::ledger::{Batch, LedgerRow};
use crate::store::runs::{Counted, Counts};
use crate::store::{Store, StoreError};
use crate::validate::Validators;

pub use run::{Started, start};

/// What to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub trigger: Trigger,
    /// Source ids; empty means all (or those of `items`).
    pub sources: Vec<String>,
    /// Only these items; empty means every item of the selected sources.
    pub items: Vec<ItemKey>,
    /// Re-map and re-deliver even unchanged items.
    pub force: bool,
    /// Map and validate, but deliver nothing and write nothing to the store.
    pub dry_run: bool,
    /// With `dry_run`: every step the run would apply is kept here as well (for a stored plan).
    pub collect: Option<PlanCollector>,
    /// Send withdrawals even when more of a source vanished than its guard allows.
    pub allow_withdrawals: bool,
    /// Who watches the run (a progress bar on a terminal); nobody by default.
    pub progress: ProgressHandle,
    /// Where stage durations and upstream latencies are recorded (the daemon's metrics).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Share the work pass of a large source with the other instances on the database.
    pub share: Option<Share>,
    /// Who holds the run's leases (default: a name of this process's own).
    pub holder: Option<String>,
    /// How long to wait for a source whose lease another run holds (default: not at all).
    pub wait: std::time::Duration,
    /// Asks the run to stop early.
    pub stop: Stop,
    /// Apply this stored plan instead of planning: the run delivers the plan's documents (see
    /// [`Applying`]).
    pub apply: Option<Arc<Applying>>,
    /// Who the run acts for (an operator, an admin token's name, `schedule`). With an approval
    /// policy in the configuration, such a run holds back the changes of a source that the policy
    /// wants approved and stores them as a plan of theirs, awaiting approval (see
    /// [`RunReport::awaiting`]); the rest of the run goes on. `None`: the policy is not consulted.
    pub author: Option<String>,
}

/// A stored plan to apply: the run takes the leases of the plan's sources, reconciles what an
/// interrupted run left, and then, per source, sends exactly the planned documents — an entry
/// whose base moved on since the plan was made (another run or plan changed the item, or the
/// portal's copy changed) is refused as a conflict, never sent over what it did not see.
#[derive(Debug)]
pub struct Applying {
    pub plan_id: i64,
    /// The steps of the plan's entries still to apply (see [`plan::Step::from_entry`]).
    pub steps: Vec<plan::Step>,
}

pub use hold::Busy;
pub use share::{Share, help};
pub use stop::{Stop, Stopped};

impl Job {
    pub fn all(trigger: Trigger) -> Self {
        Self {
            trigger,
            sources: Vec::new(),
            items: Vec::new(),
            force: false,
            dry_run: false,
            collect: None,
            allow_withdrawals: false,
            progress: ProgressHandle::default(),
            metrics: None,
            share: None,
            holder: None,
            wait: std::time::Duration::ZERO,
            stop: Stop::default(),
            apply: None,
            author: None,
        }
    }
}

/// Receives a run's progress: per source the number of item × target pairs, then one step per pair.
pub trait Progress: Send + Sync {
    fn source_started(&self, source: &str, pairs: u64);
    fn advance(&self);
    fn source_finished(&self, source: &str, counts: &Counts);
}

/// An optional [`Progress`] receiver.
#[derive(Clone, Default)]
pub struct ProgressHandle(pub Option<Arc<dyn Progress>>);

impl std::fmt::Debug for ProgressHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ProgressHandle(Some)" } else { "ProgressHandle(None)" })
    }
}

impl ProgressHandle {
    fn source_started(&self, source: &str, pairs: u64) {
        if let Some(p) = &self.0 {
            p.source_started(source, pairs);
        }
    }
    fn advance(&self) {
        if let Some(p) = &self.0 {
            p.advance();
        }
    }
    fn source_finished(&self, source: &str, counts: &Counts) {
        if let Some(p) = &self.0 {
            p.source_finished(source, counts);
        }
    }
}

/// What a run needs from the outside.
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<Config>,
    pub store: Store,
    pub validators: Arc<Validators>,
    pub clock: Arc<dyn Clock>,
}

/// How a run went.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `None` for a dry run, which records nothing.
    pub run_id: Option<i64>,
    pub status: RunStatus,
    pub counts: Counts,
    /// Items that did not go through, with the reason.
    pub problems: Vec<Problem>,
    /// Sources that could not be processed at all, and requested items that were not found.
    pub errors: Vec<String>,
    /// What went wrong without failing an item by itself (e.g. a codelist that could not be fetched).
    pub warnings: Vec<String>,
    /// Documents that went through with warnings, with the warnings.
    pub warned: Vec<Warned>,
    /// How each source of the run went by itself (empty for a dry run).
    pub sources: Vec<crate::store::runs::SourceResult>,
    /// The plan that holds the changes this run did not make because the approval policy wants
    /// them approved first.
    pub awaiting: Option<plan::Stored>,
}

/// One item at one target that did not go through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub item_key: String,
    pub target: String,
    pub status: ItemStatus,
    pub stage: Stage,
    pub message: String,
}

/// A document that went through (delivered, or re-mapped to what the target holds) with warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warned {
    pub item_key: String,
    pub target: String,
    pub warnings: Vec<String>,
}

/// Why a run could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a worker thread failed: {0}")]
    Worker(String),
    /// A source of the run is held by another run (and stayed so for as long as the job waits).
    #[error(transparent)]
    Busy(#[from] Busy),
    /// Asked to stop before the run began.
    #[error("{0}")]
    Stopped(Stopped),
}

impl From<hold::HoldError> for PipelineError {
    fn from(e: hold::HoldError) -> Self {
        match e {
            hold::HoldError::Busy(busy) => PipelineError::Busy(busy),
            hold::HoldError::Stopped(why) => PipelineError::Stopped(why),
            hold::HoldError::Store(e) => PipelineError::Store(e),
        }
    }
}

/// Target id used in the ledger for a file that yielded no record at all.
pub const ANY_TARGET: &str = "*";

/// Ledger rows written per transaction.
const BATCH_ROWS: usize = 500;

/// A batch is written early once the documents it keeps for the diff reach this many bytes.
const BATCH_DOCUMENT_BYTES: usize = 8 << 20;

/// Deliveries sent at once per source (each HTTP target bounds itself further).
const DELIVERIES_IN_FLIGHT: usize = 16;

/// At most this many (item, mapping) pairs of one entry go to one worker task; a feed with many
/// records is worked on in several tasks (each decodes the entry again, which costs far less than
/// mapping its records).
const CHUNK_PAIRS: usize = 32;

/// Splits each entry's pairs into chunks of at most `size`.
fn chunked(jobs: Vec<(Entry, Vec<Pair>)>, size: usize) -> Vec<(Entry, Vec<Pair>)> {
    let mut chunks = Vec::with_capacity(jobs.len());
    for (entry, pairs) in jobs {
        if pairs.len() <= size {
            chunks.push((entry, pairs));
        } else {
            chunks.extend(pairs.chunks(size).map(|chunk| (entry.clone(), chunk.to_vec())));
        }
    }
    chunks
}

/// Runs the pipeline once for `job`: takes its sources ([`start`]), then carries the run out.
pub async fn run(job: Job, deps: &Deps) -> Result<RunReport, PipelineError> {
    start(job, deps).await?.finish().await
}

/// Why a source's part of a run ended early: the run cannot go on (`Fatal`), or only this source
/// failed (`Source`, e.g. it could not be listed) and the run goes on with the next.
enum SourceFailure {
    Fatal(PipelineError),
    Source(String),
}

impl From<StoreError> for SourceFailure {
    fn from(e: StoreError) -> Self {
        SourceFailure::Fatal(e.into())
    }
}

/// An item and one mapping that has work to do for it.
type Pair = (ItemKey, Arc<Mapping>);

/// The steps a dry run would apply, in the order they were made (for `portal-bridge plan`).
pub type PlanCollector = Arc<std::sync::Mutex<Vec<plan::Step>>>;

/// What the blocking passes of one source share: read-only while a pass goes on.
#[derive(Clone)]
struct Work {
    deps: Deps,
    source: Arc<Source>,
    ledger: HashMap<(String, String), LedgerRow>,
    inputs: source::Inputs,
    dry_run: bool,
    /// Where a dry run keeps the steps it would apply.
    collect: Option<PlanCollector>,
    force: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    scan_cache: scan_cache::ScanCache,
    /// Per target: the hash of what, besides the record and the mapping, shapes the item's
    /// document there (`$source`, the form link, where the target delivers). A change re-maps.
    settings: HashMap<String, String>,
    /// Where deliveries are journaled; its fence is what an intent's record must still hold (the
    /// run's lease, or its claim on a shared batch).
    journal: Journal,
    /// Asks the run to stop: no delivery starts after that.
    stop: Stop,
    /// Steps that change something are kept here instead of being sent (a source whose changes
    /// await the policy's verdict).
    hold: Option<PlanCollector>,
    /// Records pass 1 decoded, kept for pass 2 within a budget (an entry decoded once per run).
    kept: Arc<kept::Kept<source::Record>>,
}

impl Work {
    /// Whether the target still holds what the ledger row says we delivered: the row says so,
    /// and the target shows no sign of having lost it.
    fn target_holds(&self, row: &LedgerRow) -> bool {
        matches!(row.status.as_str(), "delivered" | "unchanged") && self.lost(row).is_none()
    }

    /// Why the row's document is visibly gone from its target (an outbox file removed by someone,
    /// or lost with a power failure), if it is.
    fn lost(&self, row: &LedgerRow) -> Option<String> {
        self.deps.config.target(&row.target)?.delivery.lost(row.output_path.as_deref())
    }

    fn observe(&self, stage: Stage, since: std::time::Instant) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_stage(stage, since.elapsed().as_secs_f64());
        }
    }
}

/// One source's part of a run (or of a shared batch): what it counted, found and is about to
/// write. Its methods are spread over the modules of its steps: `source_run` (frame), `plan`
/// (decide, map), `apply` (send, record), `reconcile`, `share`, `codelists`.
struct SourceRun {
    deps: Deps,
    source: Arc<Source>,
    force: bool,
    dry_run: bool,
    allow_withdrawals: bool,
    progress: ProgressHandle,
    run_id: Option<i64>,
    items: BTreeSet<ItemKey>,
    work: Arc<Work>,
    batch: Batch,
    counts: Counts,
    problems: Vec<Problem>,
    missing_items: Vec<String>,
    workers: usize,
    share: Option<Share>,
    /// Entries whose records pass 1 took from the scan cache.
    cached_entries: usize,
    /// Items of earlier sources in this run: went through (`Ok`) or why not.
    earlier: HashMap<ItemKey, Result<(), String>>,
    /// Items of this source in this run: went through (`Ok`) or why not.
    settled: HashMap<ItemKey, Result<(), String>>,
    /// The run's codelists, to fetch missing ones (with XRepository configured).
    codelists: Option<codelists::RunCodelists>,
    /// Warnings of the run that belong to no item.
    warnings: Vec<String>,
    /// Documents that went through with warnings.
    warned: Vec<Warned>,
    /// Entries (or records of a feed) this run could not read: while there are any, the source
    /// was not read completely and nothing of it is withdrawn.
    unreadable: Vec<String>,
    /// Every pair this run (or shared batch) counted, with what it counted as.
    tally: Vec<(String, String, Counted)>,
    /// Pairs whose unfinished delivery this run reconciled first: counted again later in the
    /// run, such a pair counts as its later outcome only.
    reconciled: HashMap<(String, String), Counted>,
    /// The revision each ledger row this run wrote (or is about to write) has then.
    written: HashMap<(String, String), i64>,
    /// What the run's ledger writes must still hold.
    fence: Fence,
    stop: Stop,
    /// Who the run acts for, if the approval policy is to be consulted ([`Job::author`]).
    author: Option<String>,
    /// The changes this source holds back for approval.
    awaiting: Vec<plan::Step>,
}
