//! The pipeline: one run over some sources — list, read and key records, skip what is unchanged,
//! map, validate, deliver, and record every outcome in the ledger and the migration log.
//!
//! A source is processed in two passes. The *scan* reads and decodes every entry to learn each
//! record's key and content hash and keeps only those; comparing them with the ledger tells which
//! (item, mapping) pairs need work. The *work* pass decodes only the entries that have work and
//! maps, validates and delivers. CPU-bound passes run on blocking threads, several entries at once;
//! memory holds the keys of a source, not its documents. A daemon shares the work pass of a large
//! run with the other instances on its database (see [`share`]).

pub mod codelists;
pub mod hold;
mod scan_cache;
pub mod share;
pub mod stop;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Source};
use crate::delivery::{self, Action, Journal, LeftOver, Request, Resume, Sent, Ticket};
use crate::domain::{Clock, ItemKey, ItemStatus, Level, RunStatus, Stage, Trigger};
use crate::mapping::Mapping;
use crate::source::{self, Entry, Record, RecordError};
use crate::store::documents::NewDocument;
use crate::store::intents::Intent;
use crate::store::lease::Fence;
use crate::store::ledger::{Batch, LedgerRow};
use crate::store::log::NewEvent;
use crate::store::runs::{Counted, Counts};
use crate::store::{Store, StoreError, timestamp};
use crate::validate::Validators;

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
            allow_withdrawals: false,
            progress: ProgressHandle::default(),
            metrics: None,
            share: None,
            holder: None,
            wait: std::time::Duration::ZERO,
            stop: Stop::default(),
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
}

/// One item at one target that did not go through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub item_key: String,
    pub target: String,
    pub status: ItemStatus,
    pub stage: Stage,
    pub message: String,
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

/// A run that holds its sources and is recorded, ready to be carried out.
pub struct Started {
    job: Job,
    deps: Deps,
    selected: Vec<Arc<Source>>,
    hold: Option<hold::Hold>,
    run_id: Option<i64>,
    span: tracing::Span,
}

/// Begins a run: closes runs that died without closing themselves, takes the leases of the job's
/// sources (waiting up to `job.wait` for busy ones: [`PipelineError::Busy`] after that) and records
/// the run with its holder. A dry run takes and records nothing.
pub async fn start(job: Job, deps: &Deps) -> Result<Started, PipelineError> {
    let config = &deps.config;
    let wanted: BTreeSet<&str> =
        job.sources.iter().map(String::as_str).chain(job.items.iter().map(ItemKey::source)).collect();
    let mut selected: Vec<Arc<Source>> = Vec::new();
    for id in &wanted {
        let source = config.source(id).ok_or_else(|| PipelineError::UnknownSource((*id).into()))?;
        selected.push(source.clone());
    }
    if wanted.is_empty() {
        selected = config.sources.clone();
    }
    let span = tracing::info_span!("run", run_id = tracing::field::Empty, trigger = %job.trigger);
    if job.dry_run {
        return Ok(Started { job, deps: deps.clone(), selected, hold: None, run_id: None, span });
    }
    let store = &deps.store;
    let source_ids: Vec<String> = selected.iter().map(|s| s.id.clone()).collect();
    let holder = job.holder.clone().unwrap_or_else(|| hold::holder_name(&hold::instance_name(), 1));
    let hold = hold::Hold::take(store, &holder, &source_ids, config.lease, job.wait, &job.stop).await?;
    // A run whose lease this run just took over (it had expired) is dead, as is any other whose
    // holder holds no live lease: closed before this run is recorded.
    match store.close_dead_runs().await {
        Ok(ids) => {
            for id in ids {
                tracing::warn!(run_id = id, "closed as aborted: the run's process ended without closing it");
            }
        }
        Err(e) => {
            hold.release().await;
            return Err(e.into());
        }
    }
    let run_id = match store.start_held_run(job.trigger, &source_ids, Some(&holder), &timestamp(deps.clock.now())).await
    {
        Ok(id) => id,
        Err(e) => {
            hold.release().await;
            return Err(e.into());
        }
    };
    span.record("run_id", run_id);
    Ok(Started { job, deps: deps.clone(), selected, hold: Some(hold), run_id: Some(run_id), span })
}

impl Started {
    /// The run's id (`None` for a dry run).
    pub fn run_id(&self) -> Option<i64> {
        self.run_id
    }

    /// What a write to `source_id`'s items must hold while this run holds the source (an operator's
    /// change made under the run's lease before it goes on, e.g. `resolve`).
    pub fn fence(&self, source_id: &str) -> Fence {
        self.hold.as_ref().map_or(Fence::None, |hold| hold.fence(source_id))
    }

    /// Asks the run to stop.
    pub fn stop(&self) -> Stop {
        self.job.stop.clone()
    }

    /// Carries the run out, renewing its leases meanwhile, closes its record and gives the leases
    /// back. A run asked to stop ends as `interrupted`; one that lost a lease as `aborted`; one that
    /// failed on the way as `failed` (its error returned) — none stays `running`.
    pub async fn finish(self) -> Result<RunReport, PipelineError> {
        use tracing::Instrument;
        let Started { job, deps, selected, hold, run_id, span } = self;
        let mut report = RunReport {
            run_id,
            status: RunStatus::Running,
            counts: Counts::default(),
            problems: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let work = run_in(&job, &deps, &selected, hold.as_ref(), &mut report).instrument(span.clone());
        let result = match &hold {
            Some(hold) => tokio::select! {
                result = work => result,
                () = hold.keep(&job.stop) => unreachable!("renewing never ends by itself"),
            },
            None => work.await,
        };
        let failed = match result {
            Ok(()) => None,
            Err(PipelineError::Store(StoreError::LeaseLost(why))) => {
                job.stop.stop(Stopped::LeaseLost(why));
                None
            }
            Err(e) => Some(e),
        };
        report.status = match (&failed, job.stop.why()) {
            (Some(_), _) => RunStatus::Failed,
            (None, Some(Stopped::LeaseLost(_))) => RunStatus::Aborted,
            (None, Some(Stopped::Interrupted(_))) => RunStatus::Interrupted,
            (None, None) => report.status,
        };
        if let Some(why) = job.stop.why() {
            report.errors.push(why.to_string());
        }
        if let Some(e) = &failed {
            report.errors.push(e.to_string());
        }
        if let Some(id) = run_id {
            let message = (!report.errors.is_empty()).then(|| report.errors.join("; "));
            let closed = deps
                .store
                .finish_run(id, report.status, report.counts, message.as_deref(), &timestamp(deps.clock.now()))
                .await;
            if let Err(e) = closed {
                tracing::error!(run_id = id, "cannot close the run's record (the next start closes it): {e}");
            }
        }
        if let Some(hold) = hold {
            hold.release().await;
        }
        let _entered = span.enter();
        tracing::info!(run_id, status = %report.status, counts = ?report.counts, "run finished");
        match failed {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// The run itself, inside its tracing span; what it did so far is in `report` even when it fails.
async fn run_in(
    job: &Job,
    deps: &Deps,
    selected: &[Arc<Source>],
    hold: Option<&hold::Hold>,
    report: &mut RunReport,
) -> Result<(), PipelineError> {
    // The directory's codelists joined by those fetched before (with XRepository configured).
    let (deps, mut run_codelists) = codelists::for_run(deps).await?;
    let deps = &deps;
    let config = &deps.config;
    let source_ids: Vec<String> = selected.iter().map(|s| s.id.clone()).collect();
    let run_id = report.run_id;
    if run_id.is_some() {
        // A broken codelist fails the items that need it; the log names it even if none does.
        for broken in &config.codelists.broken {
            let event = NewEvent {
                at: timestamp(deps.clock.now()),
                run_id,
                item_key: None,
                target: None,
                stage: Stage::Run,
                level: Level::Warn,
                message: format!("{broken}; items that need it fail"),
            };
            deps.store.append_event(&event).await?;
        }
    }
    tracing::info!(run_id, sources = ?source_ids, force = job.force, dry_run = job.dry_run, holder = hold.map(hold::Hold::holder), "run started");

    let mut failed_sources = 0;
    // What reconciling earlier runs' unfinished deliveries counted, per source.
    let mut reconciled: HashMap<String, Seed> = HashMap::new();
    if !job.dry_run {
        // Batches of an earlier run that a helper still works on are finished (or their claims
        // expire) before this run reconciles anything of the source.
        for id in &source_ids {
            share::clear_earlier(deps, id).await?;
        }
        reconciled = reconcile(job, deps, &source_ids, run_id, hold).await?;
        tidy_targets(config, selected).await;
    }
    // What this run settled per item so far, for sources that depend on others (form links).
    let mut settled: HashMap<ItemKey, Result<(), String>> = HashMap::new();
    // Codelists fetched for one source serve the sources after it.
    let mut run_deps = deps.clone();
    for source in selected {
        if job.stop.is_stopped() {
            break;
        }
        let items: BTreeSet<ItemKey> = job.items.iter().filter(|k| k.source() == source.id).cloned().collect();
        let source = run_deps.config.source(&source.id).expect("the same sources").clone();
        let fence = hold.map_or(Fence::None, |h| h.fence(&source.id));
        let mut run = SourceRun::new(&run_deps, source.clone(), job, run_id, items, fence).await?;
        if let Some(seed) = reconciled.remove(&source.id) {
            run.seed(seed);
        }
        run.earlier = std::mem::take(&mut settled);
        run.codelists = run_codelists.take();
        match run.execute().await {
            Ok(()) => {}
            Err(SourceFailure::Fatal(e)) => {
                report.counts.add(run.counts);
                return Err(e);
            }
            Err(SourceFailure::Source(message)) => {
                failed_sources += 1;
                report.errors.push(format!("source {}: {message}", source.id));
                run.event(None, None, Stage::Fetch, Level::Error, message);
            }
        }
        let flushed = run.flush().await;
        report.counts.add(run.counts);
        flushed?;
        report.problems.extend(run.problems);
        report.errors.extend(run.missing_items);
        report.warnings.extend(run.warnings);
        settled = run.earlier;
        settled.extend(run.settled);
        run_codelists = run.codelists.take();
        run_deps = run.deps.clone();
    }
    for (_, seed) in reconciled {
        // Sources the run did not get to (it was stopped): what reconciling them did still counts.
        report.counts.add(seed.counts);
        report.problems.extend(seed.problems);
    }

    report.status = if failed_sources > 0 && failed_sources == selected.len() {
        RunStatus::Failed
    } else if report.counts.problems() > 0 || !report.errors.is_empty() {
        RunStatus::Partial
    } else {
        RunStatus::Ok
    };
    Ok(())
}

/// Lets the targets the run's sources deliver to tidy up (what killed writes left in an outbox).
async fn tidy_targets(config: &Config, sources: &[Arc<Source>]) {
    let targets: BTreeSet<&str> =
        sources.iter().flat_map(|source| source.mappings.iter()).map(|m| m.output.target.as_str()).collect();
    for target in targets.into_iter().filter_map(|id| config.target(id)) {
        target.delivery.tidy().await;
    }
}

/// What reconciling one source's unfinished deliveries counted: the source's run goes on from it,
/// so that a reconciled pair counts once in the run.
struct Seed {
    counts: Counts,
    reconciled: HashMap<(String, String), Counted>,
    problems: Vec<Problem>,
    settled: HashMap<ItemKey, Result<(), String>>,
}

/// Reconciles every intent an interrupted run left for the run's sources, source by source,
/// before new work starts. Intents of other sources are left to whoever runs those (another
/// run may be delivering them right now: it holds their lease).
async fn reconcile(
    job: &Job,
    deps: &Deps,
    sources: &[String],
    run_id: Option<i64>,
    hold: Option<&hold::Hold>,
) -> Result<HashMap<String, Seed>, PipelineError> {
    let mut by_source: BTreeMap<String, Vec<Intent>> = BTreeMap::new();
    for intent in deps.store.intents().await? {
        if !sources.contains(&intent.source_id) {
            continue;
        }
        by_source.entry(intent.source_id.clone()).or_default().push(intent);
    }
    let mut seeds = HashMap::new();
    for (source_id, intents) in by_source {
        let Some(source) = deps.config.source(&source_id) else {
            tracing::warn!(source = %source_id, count = intents.len(), "unfinished deliveries of a source that is no longer configured are left alone");
            continue;
        };
        let orphaned = intents.iter().filter(|i| deps.config.target(&i.target).is_none()).count();
        if orphaned > 0 {
            tracing::warn!(source = %source_id, orphaned, "unfinished deliveries to targets that are no longer configured are left alone");
        }
        let intents: Vec<Intent> = intents.into_iter().filter(|i| deps.config.target(&i.target).is_some()).collect();
        let fence = hold.map_or(Fence::None, |h| h.fence(&source_id));
        let mut run = SourceRun::new(deps, source.clone(), job, run_id, BTreeSet::new(), fence).await?;
        run.reconcile(intents).await?;
        let reconciled = run.tally.into_iter().map(|(key, target, kind)| ((key, target), kind)).collect();
        let seed = Seed { counts: run.counts, reconciled, problems: run.problems, settled: run.settled };
        seeds.insert(source_id, seed);
    }
    Ok(seeds)
}

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

/// Per entry: its records, or why it yielded none.
type EntryScan = Result<Vec<Result<Scanned, RecordError>>, RecordError>;

/// What the scan learned about one record.
#[derive(Debug, Clone)]
struct Scanned {
    origin: String,
    key: ItemKey,
    hash: crate::domain::ContentHash,
    /// Mappings of the source that accept this record.
    mappings: Vec<Arc<Mapping>>,
    /// The form the record's online service uses, if the source links forms.
    form: Option<ItemKey>,
    /// Why each mapping of the source refuses the record, when none takes it.
    refusals: Option<String>,
    /// The codelists the record refers to.
    codelists: Vec<crate::mapping::references::Reference>,
}

/// The result of working on one (item, mapping) pair.
#[derive(Debug)]
struct Outcome {
    key: ItemKey,
    target: String,
    origin: String,
    content_hash: Option<String>,
    mapping: Option<String>,
    mapping_version: Option<String>,
    /// What the mapping reported it could not carry over (logged as warnings).
    warnings: Vec<String>,
    /// The adoptions (comma-separated ARS) the document was mapped with, for sources with adoptions.
    adoptions: Option<String>,
    /// The intent this delivery goes on from: an earlier claimant's of a shared batch, or one an
    /// interrupted run left (then the target is probed before anything is sent).
    resume: Option<Resume>,
    /// After sending: whether the delivery's intent is settled with the outcome or kept.
    ticket: Ticket,
    result: Result<Done, Problem>,
}

#[derive(Debug)]
enum Done {
    /// Ready to be sent; [`send`] sends it through the journal and turns it into one of the others.
    /// `known_version` is the target's version of what we last delivered (`If-Match`), `delivered`
    /// the output hash of that document; `refresh` asks the target for its version first (a forced
    /// delivery, or a withdrawal whose version we do not know).
    Pending { action: Action, known_version: Option<String>, delivered: Option<String>, refresh: bool },
    /// Delivered (or, in a dry run, would be delivered) with this output hash; `body` is kept
    /// for the diff with the ledger row.
    Delivered { output_hash: String, location: Option<String>, version: Option<String>, body: Option<bytes::Bytes> },
    /// Mapped, and the output equals what the target already holds.
    Same { output_hash: String },
    /// Gone upstream, and withdrawn from the target; `sent` is false for an item whose document
    /// never reached the target (nothing to withdraw there).
    Withdrawn { location: String, sent: bool },
}

/// What the blocking passes of one source share: read-only while a pass goes on.
#[derive(Clone)]
struct Work {
    deps: Deps,
    source: Arc<Source>,
    ledger: HashMap<(String, String), LedgerRow>,
    inputs: source::Inputs,
    dry_run: bool,
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
}

impl SourceRun {
    async fn new(
        deps: &Deps,
        source: Arc<Source>,
        job: &Job,
        run_id: Option<i64>,
        items: BTreeSet<ItemKey>,
        fence: Fence,
    ) -> Result<Self, PipelineError> {
        let ledger = deps.store.ledger_of_source(&source.id).await?;
        let inputs = source::Inputs {
            adoptions: if source.leika_key.is_some() {
                deps.store.adoptions_by_service().await?
            } else {
                HashMap::new()
            },
        };
        let work = Arc::new(Work {
            deps: deps.clone(),
            source: source.clone(),
            ledger,
            inputs,
            scan_cache: Default::default(),
            settings: settings_hashes(&deps.config, &source),
            dry_run: job.dry_run,
            force: job.force,
            metrics: job.metrics.clone(),
            journal: Journal::new(deps.store.clone(), fence.clone(), deps.clock.clone(), run_id, job.metrics.clone()),
            stop: job.stop.clone(),
        });
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        Ok(Self {
            deps: deps.clone(),
            source,
            force: job.force,
            dry_run: job.dry_run,
            allow_withdrawals: job.allow_withdrawals,
            progress: job.progress.clone(),
            run_id,
            items,
            work,
            batch: Batch::default(),
            counts: Counts::default(),
            problems: Vec::new(),
            missing_items: Vec::new(),
            workers,
            share: job.share.clone(),
            cached_entries: 0,
            earlier: HashMap::new(),
            settled: HashMap::new(),
            codelists: None,
            warnings: Vec::new(),
            unreadable: Vec::new(),
            tally: Vec::new(),
            reconciled: HashMap::new(),
            written: HashMap::new(),
            fence,
            stop: job.stop.clone(),
        })
    }

    /// Goes on from what reconciling the source counted earlier in this run.
    fn seed(&mut self, seed: Seed) {
        self.counts.add(seed.counts);
        self.reconciled.extend(seed.reconciled);
        self.problems.extend(seed.problems);
        self.settled.extend(seed.settled);
    }

    /// Counts a pair's outcome. A pair whose delivery this run reconciled first and then worked on
    /// again counts as its later outcome only (its reconciliation's problem, if any, is dropped).
    fn count(&mut self, key: &str, target: &str, kind: Counted) {
        if let Some(before) = self.reconciled.remove(&(key.to_owned(), target.to_owned())) {
            self.counts.bump(before, -1);
            self.problems.retain(|p| !(p.item_key == key && p.target == target));
        }
        self.counts.bump(kind, 1);
        self.tally.push((key.to_owned(), target.to_owned(), kind));
    }

    /// The state the passes share, to change between passes (copied if a pass still holds it).
    fn work_mut(&mut self) -> &mut Work {
        Arc::make_mut(&mut self.work)
    }

    /// Queues a ledger row for the next write, at the revision the run last saw or wrote it.
    fn push_row(&mut self, mut row: LedgerRow) {
        let pair = (row.item_key.clone(), row.target.clone());
        if let Some(revision) = self.written.get(&pair) {
            row.revision = *revision;
        }
        self.written.insert(pair, row.revision + 1);
        self.batch.rows.push(row);
    }

    async fn execute(&mut self) -> Result<(), SourceFailure> {
        let config = self.deps.config.clone();
        let context = source::ListContext {
            root: &config.root,
            store: &self.deps.store,
            now: self.now(),
            record_cache: !self.dry_run,
        };
        let fetch_started = std::time::Instant::now();
        let entries = source::list(&self.source, &context).await.map_err(|e| SourceFailure::Source(e.to_string()))?;
        self.work.observe(Stage::Fetch, fetch_started);

        // Pass 1: scan every entry for keys and hashes.
        let cache = scan_cache::ScanCache::load(&config, &self.source, &self.deps.store).await?;
        Arc::get_mut(&mut self.work).expect("no pass has started yet").scan_cache = cache;
        let scans = self.scan(&entries).await?;
        let listed = entries.len();
        let mut by_key: BTreeMap<ItemKey, Vec<usize>> = BTreeMap::new();
        let mut records: Vec<Scanned> = Vec::new();
        let mut readable_origins = BTreeSet::new();
        for (entry, scan) in entries.iter().zip(scans) {
            match scan {
                Err(error) => self.record_error(&error),
                Ok(items) => {
                    readable_origins.insert(entry.origin.clone());
                    for item in items {
                        match item {
                            Err(error) => self.record_error(&error),
                            Ok(scanned) => {
                                readable_origins.insert(scanned.origin.clone());
                                by_key.entry(scanned.key.clone()).or_default().push(records.len());
                                records.push(scanned);
                            }
                        }
                    }
                }
            }
        }
        self.retire_placeholders(&readable_origins);
        // Codelists the records refer to that nobody has yet: fetched before anything is mapped.
        self.fetch_codelists(&mut records).await?;
        let pairs: usize = records.iter().map(|r| r.mappings.len().max(1)).sum();
        self.progress.source_started(&self.source.id, pairs as u64);
        let vanished = self.vanished(&by_key);
        for wanted in &self.items {
            if !by_key.contains_key(wanted) {
                self.missing_items.push(format!("item {wanted} was not found in source {}", self.source.id));
            }
        }

        // Decide, per (item, mapping), whether there is work.
        let forms = self.form_problems(&records).await?;
        let mut work: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
        for (key, indices) in &by_key {
            if !self.items.is_empty() && !self.items.contains(key) {
                continue;
            }
            if indices.len() > 1 {
                let origins: Vec<&str> = indices.iter().map(|&i| records[i].origin.as_str()).collect();
                for &i in indices {
                    let message =
                        format!("the id occurs in {} records of this source: {}", indices.len(), origins.join(", "));
                    self.quarantine_all(&records[i], Stage::Decode, message);
                }
                continue;
            }
            let record = &records[indices[0]];
            if record.mappings.is_empty() {
                let reasons = record.refusals.as_deref().unwrap_or("root element or namespace differ");
                self.quarantine_all(
                    record,
                    Stage::Map,
                    format!("no mapping of this source takes the record: {reasons}"),
                );
                continue;
            }
            for mapping in &record.mappings {
                let target = &mapping.output.target;
                let work_state = self.work.clone();
                let previous = work_state.ledger.get(&(key.to_string(), target.clone()));
                let same_inputs = previous.is_some_and(|row| {
                    row.content_hash.as_deref() == Some(record.hash.as_str())
                        && row.mapping_version.as_deref() == Some(mapping.version.as_str())
                        && row.settings_hash.as_ref() == work_state.settings.get(target)
                });
                let unchanged = same_inputs && previous.is_some_and(|row| work_state.target_holds(row));
                if let Some(message) =
                    previous.filter(|_| same_inputs && !unchanged).and_then(|row| work_state.lost(row))
                {
                    self.event(Some(key), Some(target), Stage::Deliver, Level::Warn, message);
                }
                let skipped = previous.is_some_and(|row| {
                    row.skip_reason.is_some() && row.skip_hash.as_deref() == Some(record.hash.as_str())
                });
                let form_problem = record.form.as_ref().and_then(|f| forms.get(f));
                if skipped && !self.force {
                    self.count(key.as_str(), target, Counted::Unchanged);
                    self.progress.advance();
                    self.settled.entry(key.clone()).or_insert(Ok(()));
                } else if let Some(problem) = form_problem {
                    // Do not point citizens at a form that did not go through, nor leave an
                    // unchanged service pointing at a form that was withdrawn or quarantined since.
                    self.record_outcome(problem_outcome(
                        key,
                        mapping,
                        record.origin.clone(),
                        Some(record.hash.to_string()),
                        ItemStatus::Failed,
                        Stage::Map,
                        format!("held back: {problem}"),
                    ));
                } else if unchanged && !self.force {
                    self.count(key.as_str(), target, Counted::Unchanged);
                    self.progress.advance();
                    self.settled.entry(key.clone()).or_insert(Ok(()));
                    let row = previous.expect("unchanged implies a row");
                    if row.status != ItemStatus::Unchanged.as_str() && !self.dry_run {
                        let mut row = row.clone();
                        row.status = ItemStatus::Unchanged.as_str().into();
                        row.updated_at = self.now();
                        row.last_run_id = self.run_id;
                        self.push_row(row);
                    }
                } else {
                    let file = record.origin.split('#').next().unwrap_or(&record.origin).to_owned();
                    work.entry(file).or_default().push((key.clone(), mapping.clone()));
                }
            }
        }
        self.flush().await?;
        if self.stop.is_stopped() {
            return Ok(());
        }

        // Pass 2: map, validate and deliver where there is work, shared with other instances
        // when the run is large and the daemon shares.
        let jobs: Vec<(Entry, Vec<Pair>)> =
            entries.into_iter().filter_map(|entry| work.remove(&entry.origin).map(|w| (entry, w))).collect();
        let pairs: usize = jobs.iter().map(|(_, pairs)| pairs.len()).sum();
        match self.share.clone() {
            Some(share) if share.applies(pairs) && !self.dry_run && self.run_id.is_some() => {
                self.deliver_shared(jobs, &share).await?
            }
            _ => self.deliver(jobs, Resumed::new()).await?,
        }
        if self.stop.is_stopped() {
            return Ok(());
        }
        self.send_all(vanished).await?;
        let c = self.counts;
        self.progress.source_finished(&self.source.id, &c);
        self.event(
            None,
            None,
            Stage::Run,
            Level::Info,
            format!(
                "source {}: {} new, {} updated, {} unchanged, {} failed, {} quarantined{}",
                self.source.id,
                c.new,
                c.updated,
                c.unchanged,
                c.failed,
                c.quarantined,
                match self.work.scan_cache.fingerprint {
                    Some(_) => format!("; {} of {listed} entries unchanged since the last scan", self.cached_entries),
                    None => String::new(),
                }
            ),
        );
        Ok(())
    }

    /// Pass 2 on this instance: maps, validates and delivers `jobs`, recording every outcome.
    /// `resumed` holds intents this run recorded before for some of the pairs (a shared batch whose
    /// first claimant died): those deliveries are sent again as they were, with their idempotency key
    /// and base version, so that what the first claimant already sent takes no second effect.
    async fn deliver(&mut self, jobs: Vec<(Entry, Vec<Pair>)>, resumed: Resumed) -> Result<(), SourceFailure> {
        let (work, sender) = (self.work.clone(), self.work.clone());
        let resumed = Arc::new(resumed);
        let stop = self.stop.clone();
        // Entries with many records are split so that both cores stay busy; outcomes are keyed,
        // so the order in which chunks finish does not matter. Once the run is asked to stop, no
        // entry is started and no delivery sent; those in flight settle and are recorded.
        let mut stream = futures::stream::iter(chunked(jobs, CHUNK_PAIRS))
            .take_until(Box::pin(async move { stop.stopped().await }))
            .map(move |(entry, pairs)| {
                let work = work.clone();
                tokio::task::spawn_blocking(move || work_entry(&work, &entry, &pairs))
            })
            .buffer_unordered(2 * self.workers)
            .flat_map(|joined| {
                let items: Vec<Result<Outcome, String>> = match joined {
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e.to_string())],
                };
                futures::stream::iter(items)
            })
            // Each delivery is a task of its own: a delivery holding a database connection must
            // go on while this loop waits for the database in `flush`, or the two wait for each
            // other until the pool gives up. A delivery task ends with the run (it is aborted when
            // the run is dropped), never after it.
            .map(move |item| {
                let (work, resumed) = (sender.clone(), resumed.clone());
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                    match item {
                        Ok(outcome) => Ok(send(&work, resume(outcome, &resumed)).await),
                        Err(e) => Err(e),
                    }
                }))
            })
            .buffer_unordered(DELIVERIES_IN_FLIGHT);
        while let Some(result) = stream.next().await {
            let outcome = result
                .map_err(|e| e.to_string())
                .and_then(|sent| sent)
                .map_err(|e| SourceFailure::Fatal(PipelineError::Worker(e)))?;
            // Not sent: the run was asked to stop first.
            let Some(outcome) = outcome else { continue };
            self.record_outcome(outcome);
            if self.batch.rows.len() >= BATCH_ROWS || self.batch.document_bytes() >= BATCH_DOCUMENT_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Pass 1 over every entry (several at once, results in entry order), keeping the scan cache
    /// up to date.
    async fn scan(&mut self, entries: &[Entry]) -> Result<Vec<EntryScan>, SourceFailure> {
        let mut stream = futures::stream::iter(entries.iter().cloned())
            .map(|entry| {
                let work = self.work.clone();
                tokio::task::spawn_blocking(move || scan_cache::scan_entry(&work, entry))
            })
            .buffered(2 * self.workers);
        let mut scans = Vec::with_capacity(entries.len());
        let mut fresh = Vec::new();
        while let Some(result) = stream.next().await {
            let scanned = result.map_err(|e| SourceFailure::Fatal(PipelineError::Worker(e.to_string())))?;
            scans.push(scanned.scan);
            fresh.extend(scanned.fresh);
            self.cached_entries += usize::from(scanned.cached);
        }
        if !self.dry_run && self.work.scan_cache.fingerprint.is_some() {
            let listed: BTreeSet<&str> = entries.iter().map(|e| e.origin.as_str()).collect();
            let gone: Vec<String> =
                self.work.scan_cache.entries.keys().filter(|o| !listed.contains(o.as_str())).cloned().collect();
            self.deps.store.update_scan_cache(&self.source.id, &fresh, &gone).await?;
        }
        Ok(scans)
    }

    /// Items of this source that no record carries any more, as withdrawals to send. The guard
    /// holds them back when more than the source's share vanished at once (a broken upstream
    /// looks exactly like that) unless the job allows it.
    fn vanished(&mut self, seen: &BTreeMap<ItemKey, Vec<usize>>) -> Vec<Outcome> {
        if !self.items.is_empty() {
            return Vec::new();
        }
        if !self.unreadable.is_empty() {
            // An item is absent only if the whole source was read: a file caught half-written or
            // broken upstream hides its items, which must not take them off the portal.
            let gone = self.vanished_keys(seen).len();
            if gone > 0 {
                let files = self.unreadable.len();
                let shown: Vec<&str> = self.unreadable.iter().take(5).map(String::as_str).collect();
                let message = format!(
                    "{gone} items of source {} were not found, but {files} of its entries could not be read ({}{}); \
                     nothing is withdrawn until the source reads completely",
                    self.source.id,
                    shown.join(", "),
                    if files > shown.len() { ", …" } else { "" }
                );
                self.event(None, None, Stage::Fetch, Level::Warn, message.clone());
                self.warnings.push(message);
            }
            return Vec::new();
        }
        let work = self.work.clone();
        let live = live_rows(&work);
        let known: BTreeSet<&str> = live.iter().map(|row| row.item_key.as_str()).collect();
        let gone = self.vanished_keys(seen);
        if gone.is_empty() {
            return Vec::new();
        }
        let share = gone.len() as f64 / known.len() as f64;
        let limit = self.source.max_withdrawal_share;
        if share > limit && !self.allow_withdrawals {
            let message = format!(
                "{} of {} items ({:.0} %) vanished from source {}, more than the guard allows ({:.0} %); \
                 their withdrawals are held. If this is intended: migrate --source {} --allow-withdrawals",
                gone.len(),
                known.len(),
                share * 100.0,
                self.source.id,
                limit * 100.0,
                self.source.id
            );
            self.event(None, None, Stage::Fetch, Level::Error, message.clone());
            self.missing_items.push(message);
            return Vec::new();
        }
        live.into_iter()
            .filter(|row| gone.contains(row.item_key.as_str()))
            .map(|row| Outcome {
                key: ItemKey::parse(&row.item_key).expect("stored keys are valid"),
                target: row.target.clone(),
                origin: row.origin.clone(),
                content_hash: row.content_hash.clone(),
                mapping: row.mapping.clone(),
                mapping_version: row.mapping_version.clone(),
                warnings: Vec::new(),
                adoptions: row.adoptions.clone(),
                resume: None,
                ticket: Ticket::default(),
                result: Ok(if self.dry_run {
                    Done::Withdrawn { location: "(dry run)".into(), sent: false }
                } else if row.output_hash.is_none() {
                    // Its document never reached the target: there is nothing to take back there.
                    Done::Withdrawn { location: row.target.clone(), sent: false }
                } else {
                    Done::Pending {
                        action: Action::Delete,
                        known_version: row.target_version.clone(),
                        delivered: row.output_hash.clone(),
                        refresh: row.target_version.is_none(),
                    }
                }),
            })
            .collect()
    }

    /// Keys of the ledger's live items that no record of this run carries.
    fn vanished_keys(&self, seen: &BTreeMap<ItemKey, Vec<usize>>) -> BTreeSet<String> {
        live_rows(&self.work)
            .into_iter()
            .map(|row| row.item_key.as_str())
            .filter(|key| ItemKey::parse(key).is_none_or(|k| !seen.contains_key(&k)))
            .map(str::to_owned)
            .collect()
    }

    /// Finishes deliveries that an interrupted run left as intents: the target is asked first,
    /// and only what it does not hold is sent again, with the same idempotency key.
    async fn reconcile(&mut self, intents: Vec<Intent>) -> Result<(), StoreError> {
        let mut outcomes = Vec::new();
        for intent in intents {
            let Some(key) = ItemKey::parse(&intent.item_key) else { continue };
            let target = self.deps.config.target(&intent.target).expect("orphaned intents are filtered out");
            let target_id = intent.target.clone();
            match self.work.journal.left_over(target.delivery.as_ref(), key.clone(), intent).await {
                LeftOver::Dropped { message, ticket } => {
                    self.event(Some(&key), Some(&target_id), Stage::Deliver, Level::Warn, message);
                    ticket.settle(key.as_str(), &target_id, &mut self.batch);
                }
                LeftOver::Resume { request, message } => {
                    self.event(Some(&key), Some(&target_id), Stage::Deliver, Level::Warn, message);
                    let Request { key, target, action, known_version, delivered, refresh, provenance, resume } =
                        request;
                    outcomes.push(Outcome {
                        key,
                        target,
                        origin: provenance.origin,
                        content_hash: provenance.content_hash,
                        mapping: provenance.mapping,
                        mapping_version: provenance.mapping_version,
                        warnings: Vec::new(),
                        adoptions: provenance.adoptions,
                        resume,
                        ticket: Ticket::default(),
                        result: Ok(Done::Pending { action, known_version, delivered, refresh }),
                    });
                }
            }
        }
        self.send_all(outcomes).await
    }

    /// Sends ready outcomes (withdrawals, reconciliations) and records what happened.
    async fn send_all(&mut self, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        let work = self.work.clone();
        let mut stream =
            futures::stream::iter(outcomes).map(|outcome| send(&work, outcome)).buffer_unordered(DELIVERIES_IN_FLIGHT);
        while let Some(outcome) = stream.next().await {
            if let Some(outcome) = outcome {
                self.record_outcome(outcome);
            }
        }
        drop(stream);
        self.flush().await
    }

    /// For every form the records link to that did not go through: why not.
    async fn form_problems(&self, records: &[Scanned]) -> Result<HashMap<ItemKey, String>, StoreError> {
        let mut problems = HashMap::new();
        let forms: BTreeSet<&ItemKey> = records.iter().filter_map(|r| r.form.as_ref()).collect();
        for form in forms {
            if let Some(result) = self.earlier.get(form) {
                if let Err(why) = result {
                    problems.insert(form.clone(), format!("its form {form} is {why}"));
                }
                continue;
            }
            let rows = self.deps.store.item(form.as_str()).await?;
            let bad = rows.iter().find(|r| !matches!(r.status.as_str(), "delivered" | "unchanged"));
            let problem = match (rows.is_empty(), bad) {
                (true, _) => Some(format!("its form {form} is not known (not migrated yet, or a wrong form id)")),
                (false, Some(row)) => Some(format!(
                    "its form {form} is {} at {}{}",
                    row.status,
                    row.target,
                    row.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                )),
                (false, None) => None,
            };
            if let Some(problem) = problem {
                problems.insert(form.clone(), problem);
            }
        }
        Ok(problems)
    }

    fn now(&self) -> String {
        timestamp(self.deps.clock.now())
    }

    fn event(&mut self, key: Option<&ItemKey>, target: Option<&str>, stage: Stage, level: Level, message: String) {
        if self.dry_run {
            return;
        }
        self.batch.events.push(NewEvent {
            at: self.now(),
            run_id: self.run_id,
            item_key: key.map(ToString::to_string),
            target: target.map(str::to_owned),
            stage,
            level,
            message,
        });
    }

    /// A file (or feed record) that yielded no usable record: tracked under a placeholder key.
    fn record_error(&mut self, error: &RecordError) {
        self.unreadable.push(error.origin().to_owned());
        let key = source::placeholder_key(&self.source, error.origin());
        let stage = match error {
            RecordError::Read { .. } => Stage::Decode,
            RecordError::Key { .. } => Stage::Map,
        };
        if !self.items.is_empty() && !self.items.contains(&key) {
            return;
        }
        self.record_outcome(Outcome {
            key: key.clone(),
            target: ANY_TARGET.into(),
            origin: error.origin().into(),
            content_hash: None,
            mapping: None,
            mapping_version: None,
            warnings: Vec::new(),
            adoptions: None,
            resume: None,
            ticket: Ticket::default(),
            result: Err(Problem {
                item_key: key.to_string(),
                target: ANY_TARGET.into(),
                status: ItemStatus::Quarantined,
                stage,
                message: error.to_string(),
            }),
        });
    }

    fn quarantine_all(&mut self, record: &Scanned, stage: Stage, message: String) {
        let targets: Vec<String> = if record.mappings.is_empty() {
            vec![ANY_TARGET.into()]
        } else {
            record.mappings.iter().map(|m| m.output.target.clone()).collect()
        };
        for target in targets {
            self.record_outcome(Outcome {
                key: record.key.clone(),
                target: target.clone(),
                origin: record.origin.clone(),
                content_hash: Some(record.hash.to_string()),
                mapping: None,
                mapping_version: None,
                warnings: Vec::new(),
                adoptions: None,
                resume: None,
                ticket: Ticket::default(),
                result: Err(Problem {
                    item_key: record.key.to_string(),
                    target,
                    status: ItemStatus::Quarantined,
                    stage,
                    message: format!("{}: {message}", record.origin),
                }),
            });
        }
    }

    /// Files that read again retire the placeholder rows their earlier failures left behind.
    fn retire_placeholders(&mut self, readable: &BTreeSet<String>) {
        let stale: Vec<LedgerRow> = self
            .work
            .ledger
            .values()
            .filter(|row| {
                row.target == ANY_TARGET
                    && row.status != ItemStatus::Withdrawn.as_str()
                    && readable.contains(&row.origin)
            })
            .cloned()
            .collect();
        for mut row in stale {
            if self.dry_run {
                continue;
            }
            let key = ItemKey::parse(&row.item_key).expect("stored keys are valid");
            row.status = ItemStatus::Withdrawn.as_str().into();
            row.updated_at = self.now();
            row.last_run_id = self.run_id;
            self.event(
                Some(&key),
                Some(ANY_TARGET),
                Stage::Decode,
                Level::Info,
                format!("{} reads again; its records are tracked under their own keys", row.origin),
            );
            self.push_row(row);
        }
    }

    fn record_outcome(&mut self, outcome: Outcome) {
        self.progress.advance();
        let now = self.now();
        let work = self.work.clone();
        let ledger = &work.ledger;
        match &outcome.result {
            // A withdrawn form is no form to link to.
            Ok(Done::Withdrawn { .. }) => {
                self.settled.insert(outcome.key.clone(), Err("withdrawn (gone upstream)".into()));
            }
            Ok(_) => {
                self.settled.entry(outcome.key.clone()).or_insert(Ok(()));
            }
            Err(problem) => {
                let why = format!("{} at {}: {}", problem.status, problem.target, problem.message);
                self.settled.insert(outcome.key.clone(), Err(why));
            }
        }
        let previous = ledger.get(&(outcome.key.to_string(), outcome.target.clone()));
        let mut row = previous.cloned().unwrap_or_else(|| LedgerRow {
            item_key: outcome.key.to_string(),
            target: outcome.target.clone(),
            source_id: self.source.id.clone(),
            origin: outcome.origin.clone(),
            content_hash: None,
            mapping: None,
            mapping_version: None,
            output_hash: None,
            output_path: None,
            status: ItemStatus::New.as_str().into(),
            attempts: 0,
            last_error: None,
            first_seen_at: now.clone(),
            updated_at: now.clone(),
            delivered_at: None,
            last_run_id: None,
            adoptions: None,
            target_version: None,
            skip_reason: None,
            skip_hash: None,
            settings_hash: None,
            revision: 0,
        });
        row.origin = outcome.origin.clone();
        row.content_hash = outcome.content_hash.clone();
        row.mapping = outcome.mapping.clone().or(row.mapping);
        row.updated_at = now.clone();
        row.last_run_id = self.run_id;
        let (key, target) = (&outcome.key, outcome.target.as_str());
        if let (Ok(_), Some(now_adopted)) = (&outcome.result, &outcome.adoptions) {
            for change in adoption_changes(previous.and_then(|p| p.adoptions.as_deref()), now_adopted) {
                self.event(Some(key), Some(target), Stage::Map, Level::Info, change);
            }
            row.adoptions = Some(now_adopted.clone());
        }
        for warning in &outcome.warnings {
            self.event(Some(key), Some(target), Stage::Map, Level::Warn, warning.clone());
        }
        outcome.ticket.settle(key.as_str(), target, &mut self.batch);
        // What the item was mapped with, unless the outcome is an earlier run's delivery that this
        // run only finished (reconciled): that one was mapped with settings this run does not know.
        let probed = outcome.resume.as_ref().is_some_and(|resume| resume.probe);
        if matches!(outcome.result, Ok(Done::Delivered { .. } | Done::Same { .. })) && !probed {
            row.settings_hash = work.settings.get(target).cloned();
        }
        match outcome.result {
            Ok(Done::Pending { .. }) => unreachable!("send() resolves every pending delivery"),
            Ok(Done::Withdrawn { location, sent }) => {
                self.count(key.as_str(), target, Counted::Withdrawn);
                let message = if sent {
                    format!("withdrawn: gone upstream, removed from {location}")
                } else {
                    format!("withdrawn: gone upstream; its document never reached {location}, so nothing was sent")
                };
                self.event(Some(key), Some(target), Stage::Deliver, Level::Info, message);
                row.status = ItemStatus::Withdrawn.as_str().into();
                row.output_hash = None;
                row.target_version = None;
                row.attempts = 0;
                row.last_error = None;
            }
            Ok(Done::Delivered { output_hash, location, version, body }) => {
                // Kept (the last two per item and target) for the review pages' diff.
                if let Some(body) = body {
                    self.batch.documents.push(NewDocument {
                        item_key: key.to_string(),
                        target: target.to_owned(),
                        output_hash: output_hash.clone(),
                        body,
                        delivered_at: now.clone(),
                    });
                }
                let first = previous.is_none_or(|p| p.output_hash.is_none());
                self.count(key.as_str(), target, if first { Counted::New } else { Counted::Updated });
                let verb = if first { "new" } else { "updated" };
                let place = location.clone().unwrap_or_default();
                self.event(
                    Some(key),
                    Some(target),
                    Stage::Deliver,
                    Level::Info,
                    format!("{verb}: delivered to {place} (output {})", &output_hash[..12]),
                );
                row.mapping_version = outcome.mapping_version;
                row.output_hash = Some(output_hash);
                row.output_path = location.or(row.output_path);
                row.target_version = version;
                row.status = ItemStatus::Delivered.as_str().into();
                row.attempts = 0;
                row.last_error = None;
                row.delivered_at = Some(now);
            }
            Ok(Done::Same { output_hash }) => {
                self.count(key.as_str(), target, Counted::Unchanged);
                self.event(
                    Some(key),
                    Some(target),
                    Stage::Map,
                    Level::Info,
                    format!("re-mapped; output {} is what the target holds", &output_hash[..12]),
                );
                row.mapping_version = outcome.mapping_version;
                row.status = ItemStatus::Unchanged.as_str().into();
                row.attempts = 0;
                row.last_error = None;
            }
            Err(problem) => {
                let kind = match problem.status {
                    ItemStatus::Failed => Counted::Failed,
                    ItemStatus::Conflict => Counted::Conflict,
                    _ => Counted::Quarantined,
                };
                self.count(key.as_str(), target, kind);
                let level = Level::Error;
                self.event(Some(key), Some(target), problem.stage, level, problem.message.clone());
                tracing::warn!(item = %key, target, stage = %problem.stage, "{}", problem.message);
                row.mapping_version = outcome.mapping_version.or(row.mapping_version);
                row.status = problem.status.as_str().into();
                row.attempts += 1;
                row.last_error = Some(problem.message.clone());
                self.problems.push(problem);
            }
        }
        if !self.dry_run {
            self.push_row(row);
        }
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.dry_run {
            self.batch = Batch::default();
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let written = self.deps.store.write_fenced_batch(&batch, &self.fence).await;
        if let Err(StoreError::LeaseLost(why)) = &written {
            self.stop.stop(Stopped::LeaseLost(why.clone()));
        }
        written
    }
}

/// Per target of the source's mappings: the hash of the source's settings that shape its documents
/// (`$source`: region, params, on_missing_codelist; the form link) and of where the target delivers.
fn settings_hashes(config: &Config, source: &Source) -> HashMap<String, String> {
    use sha2::Digest;
    let form_link = source.form_link.as_ref().map(|link| link.source.as_str());
    let shared = serde_json::json!({ "source": source.context(), "form_link": form_link });
    source
        .mappings
        .iter()
        .map(|mapping| {
            let target = &mapping.output.target;
            let delivery = config.target(target).map(|t| t.delivery.fingerprint()).unwrap_or_default();
            let text = format!("{shared}\n{target}\n{delivery}");
            (target.clone(), hex::encode(sha2::Sha256::digest(text.as_bytes())))
        })
        .collect()
}

/// The ledger rows of items the source still carries (as far as the ledger knows).
fn live_rows(work: &Work) -> Vec<&LedgerRow> {
    work.ledger
        .values()
        .filter(|row| row.target != ANY_TARGET && row.status != ItemStatus::Withdrawn.as_str())
        .collect()
}

/// Reads one entry into records, decoded without forced arrays: keys, hashes and the scan see that
/// tree, and each mapping shapes it by its own `arrays` when it reads the record ([`Mapping::read`]).
fn read_records(work: &Work, entry: &Entry) -> Result<Vec<Result<Record, RecordError>>, RecordError> {
    let config = &work.deps.config;
    source::read_entry(&work.source, entry, &work.inputs, config.limits, config.max_record_bytes)
}

/// Pass 2 for one entry: decode again, and map, validate and deliver the requested pairs.
fn work_entry(work: &Work, entry: &Entry, pairs: &[Pair]) -> Vec<Outcome> {
    let deps = &work.deps;
    let mut outcomes = work_pairs(work, entry, pairs);
    // Lenient reading: deviations from a configured input XSD are warnings on every outcome.
    // Checked once per schema: the mappings of one standard share their input XSD.
    let mut deviations: HashMap<&std::path::Path, Option<String>> = HashMap::new();
    for (_, mapping) in pairs {
        if let Some(schema) = &mapping.input_schema {
            deviations.entry(schema.as_path()).or_insert_with(|| {
                entry
                    .bytes(deps.config.max_record_bytes)
                    .and_then(|bytes| deps.validators.check_input(schema, &bytes))
                    .err()
            });
        }
    }
    for outcome in &mut outcomes {
        let schema = outcome.mapping.as_deref().and_then(|m| pairs.iter().find(|(_, p)| p.name == m));
        let schema = schema.and_then(|(_, mapping)| mapping.input_schema.as_deref());
        if let Some(Some(deviation)) = schema.and_then(|s| deviations.get(s)) {
            outcome.warnings.insert(0, format!("{}: {deviation}", entry.origin));
        }
    }
    outcomes
}

fn work_pairs(work: &Work, entry: &Entry, pairs: &[Pair]) -> Vec<Outcome> {
    let Work { deps, source, ledger, dry_run, force, .. } = work;
    let config = &deps.config;
    let records = match read_records(work, entry) {
        Ok(records) => records,
        // The file changed or vanished since the scan; report it against every pair.
        Err(error) => {
            return pairs
                .iter()
                .map(|(key, mapping)| {
                    problem_outcome(
                        key,
                        mapping,
                        entry.origin.clone(),
                        None,
                        ItemStatus::Failed,
                        Stage::Decode,
                        error.to_string(),
                    )
                })
                .collect();
        }
    };
    let records: HashMap<ItemKey, Record> =
        records.into_iter().filter_map(Result::ok).map(|r| (r.key.clone(), r)).collect();
    let mut outcomes = Vec::with_capacity(pairs.len());
    for (key, mapping) in pairs {
        let Some(record) = records.get(key) else {
            outcomes.push(problem_outcome(
                key,
                mapping,
                entry.origin.clone(),
                None,
                ItemStatus::Failed,
                Stage::Decode,
                format!("{}: the record changed while the run was reading it; it is retried next run", entry.origin),
            ));
            continue;
        };
        let context = record.context(source);
        let hash = Some(record.hash.to_string());
        let fail = |status, stage, message: String| {
            problem_outcome(
                key,
                mapping,
                record.origin.clone(),
                hash.clone(),
                status,
                stage,
                format!("{}: {message}", record.origin),
            )
        };
        let mapping_started = std::time::Instant::now();
        let mapped = if mapping.input.arrays.is_empty() {
            mapping.apply(record.val(), &context, &config.codelists_val, config.budget)
        } else {
            mapping
                .read(record.format, &record.decoded)
                .and_then(|tree| mapping.apply(&tree, &context, &config.codelists_val, config.budget))
        };
        work.observe(Stage::Map, mapping_started);
        let document = match mapped {
            Ok(document) => document,
            Err(e) => {
                outcomes.push(fail(ItemStatus::Quarantined, Stage::Map, e.to_string()));
                continue;
            }
        };
        let validation_started = std::time::Instant::now();
        let validated = deps.validators.check(mapping.output.schema.as_deref(), &document);
        work.observe(Stage::Validate, validation_started);
        if let Err(e) = validated {
            outcomes.push(fail(ItemStatus::Quarantined, Stage::Validate, e));
            continue;
        }
        let output_hash = document.hash.to_string();
        let previous = ledger.get(&(key.to_string(), mapping.output.target.clone()));
        // Unless forced, a document equal to what the target holds is not sent again.
        let target_holds_it = !*force
            && previous
                .is_some_and(|row| row.output_hash.as_deref() == Some(output_hash.as_str()) && work.target_holds(row));
        let done = if target_holds_it {
            Ok(Done::Same { output_hash })
        } else if *dry_run {
            Ok(Done::Delivered { output_hash, location: None, version: None, body: None })
        } else {
            let action = Action::Put { body: document.bytes.into(), format: document.format, output_hash };
            Ok(Done::Pending {
                action,
                known_version: previous.and_then(|row| row.target_version.clone()),
                delivered: previous.and_then(|row| row.output_hash.clone()),
                refresh: *force,
            })
        };
        outcomes.push(Outcome {
            key: key.clone(),
            target: mapping.output.target.clone(),
            origin: record.origin.clone(),
            content_hash: hash.clone(),
            mapping: Some(mapping.name.clone()),
            mapping_version: Some(mapping.version.to_string()),
            warnings: document.warnings,
            adoptions: source.leika_key.as_ref().map(|_| adoption_list(&record.adoptions)),
            resume: None,
            ticket: Ticket::default(),
            result: done,
        });
    }
    outcomes
}

/// Intents a run recorded earlier, by (item key, target).
pub(crate) type Resumed = HashMap<(String, String), Intent>;

/// A pending delivery of the same document as an intent of this run: sent as the intent says.
fn resume(mut outcome: Outcome, resumed: &Resumed) -> Outcome {
    let Some(intent) = resumed.get(&(outcome.key.to_string(), outcome.target.clone())) else { return outcome };
    if let Ok(Done::Pending { action, .. }) = &outcome.result {
        outcome.resume = Resume::of(intent, action);
    }
    outcome
}

/// Sends a pending delivery through the journal (intent, delivery, probe) and resolves the
/// outcome. Outcomes that are not pending pass through. `None`: not sent and nothing recorded,
/// since the run was asked to stop (or lost its lease) first.
async fn send(work: &Work, mut outcome: Outcome) -> Option<Outcome> {
    let Ok(Done::Pending { action, known_version, delivered, refresh }) = &outcome.result else {
        return Some(outcome);
    };
    if work.stop.is_stopped() {
        return None;
    }
    let target = work.deps.config.target(&outcome.target).expect("targets are checked by Config::resolve");
    let request = Request {
        key: outcome.key.clone(),
        target: outcome.target.clone(),
        action: action.clone(),
        known_version: known_version.clone(),
        delivered: delivered.clone(),
        refresh: *refresh,
        provenance: delivery::Provenance {
            source_id: work.source.id.clone(),
            origin: outcome.origin.clone(),
            content_hash: outcome.content_hash.clone(),
            mapping: outcome.mapping.clone(),
            mapping_version: outcome.mapping_version.clone(),
            adoptions: outcome.adoptions.clone(),
        },
        resume: outcome.resume.clone(),
    };
    let action = action.clone();
    let (ticket, delivered) = match work.journal.send(target.delivery.as_ref(), request).await {
        Sent::Fenced(why) => {
            work.stop.stop(Stopped::LeaseLost(why));
            return None;
        }
        Sent::Done { ticket, result } => (ticket, result),
    };
    outcome.ticket = ticket;
    outcome.result = match (delivered, action) {
        (Ok(d), Action::Delete) => Ok(Done::Withdrawn { location: d.location, sent: true }),
        (Ok(d), Action::Put { output_hash, body, .. }) => {
            Ok(Done::Delivered { output_hash, location: Some(d.location), version: d.version, body: Some(body) })
        }
        (Err(e), _) => Err(Problem {
            item_key: outcome.key.to_string(),
            target: outcome.target.clone(),
            status: e.status(),
            stage: Stage::Deliver,
            message: e.to_string(),
        }),
    };
    Some(outcome)
}

/// Adoptions as stored in the ledger: the ARS keys, comma-separated, in order.
fn adoption_list(adoptions: &[crate::store::adoptions::Adoption]) -> String {
    adoptions.iter().map(|a| a.ars.as_str()).collect::<Vec<_>>().join(",")
}

/// The log lines that explain a change of adoptions between two ledger values.
fn adoption_changes(before: Option<&str>, after: &str) -> Vec<String> {
    let split =
        |list: &str| -> BTreeSet<String> { list.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect() };
    let (before, after) = (split(before.unwrap_or("")), split(after));
    let added = after.difference(&before).map(|ars| format!("adoption added: {ars}"));
    let removed = before.difference(&after).map(|ars| format!("adoption removed: {ars}"));
    added.chain(removed).collect()
}

fn problem_outcome(
    key: &ItemKey,
    mapping: &Mapping,
    origin: String,
    content_hash: Option<String>,
    status: ItemStatus,
    stage: Stage,
    message: String,
) -> Outcome {
    Outcome {
        key: key.clone(),
        target: mapping.output.target.clone(),
        origin,
        content_hash,
        mapping: Some(mapping.name.clone()),
        mapping_version: Some(mapping.version.to_string()),
        warnings: Vec::new(),
        adoptions: None,
        resume: None,
        ticket: Ticket::default(),
        result: Err(Problem {
            item_key: key.to_string(),
            target: mapping.output.target.clone(),
            status,
            stage,
            message,
        }),
    }
}
