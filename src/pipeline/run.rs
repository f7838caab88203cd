//! A run's frame: it takes its sources' leases and is recorded ([`start`]), reconciles what an
//! interrupted run left, works source by source, and closes its record and gives the leases back
//! however it ends ([`Started::finish`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::reconcile::{Seed, reconcile};
use super::{Deps, Job, PipelineError, RunReport, SourceFailure, SourceRun, Stop, Stopped, codelists, hold, share};
use crate::config::{Config, Source};
use crate::domain::{ItemKey, Level, RunStatus, Stage};
use crate::store::lease::Fence;
use crate::store::log::NewEvent;
use crate::store::runs::{Counts, SourceResult};
use crate::store::{StoreError, timestamp};

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
            warned: Vec::new(),
            sources: Vec::new(),
            awaiting: None,
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
        // Sources the run did not finish (it failed or was stopped on the way) end as the run did.
        let unfinished = report.errors.last().cloned();
        for source in &selected {
            if run_id.is_some() && !report.sources.iter().any(|r| r.source == source.id) {
                let status = if report.status == RunStatus::Running { RunStatus::Failed } else { report.status };
                report.sources.push(SourceResult { source: source.id.clone(), status, error: unfinished.clone() });
            }
        }
        if let Some(id) = run_id {
            let at = timestamp(deps.clock.now());
            if let Err(e) = deps.store.finish_run_sources(id, &report.sources, &at).await {
                tracing::error!(run_id = id, "cannot record how the run's sources went: {e}");
            }
            let message = (!report.errors.is_empty()).then(|| report.errors.join("; "));
            let closed = deps
                .store
                .finish_run(id, report.status, report.counts, message.as_deref(), &timestamp(deps.clock.now()))
                .await;
            if let Err(e) = closed {
                tracing::error!(run_id = id, "cannot close the run's record (the next start closes it): {e}");
            }
        }
        if let (Some(applying), Some(id)) = (&job.apply, run_id) {
            settle_plan(&deps, applying.plan_id, id, failed.is_none() && job.stop.why().is_none()).await;
        }
        if let Some(hold) = hold {
            hold.release().await;
        }
        let _entered = span.enter();
        let c = &report.counts;
        tracing::info!(
            run_id,
            status = %report.status,
            new = c.new,
            updated = c.updated,
            unchanged = c.unchanged,
            failed = c.failed,
            quarantined = c.quarantined,
            withdrawn = c.withdrawn,
            conflict = c.conflict,
            "run finished"
        );
        // The audit chain's head after the run: kept in the logs, it anchors what came before.
        if run_id.is_some() {
            match deps.store.chain_head().await {
                Ok(Some(head)) => {
                    tracing::info!(run_id, audit_seq = head.seq, audit_head = %head.hash, "audit chain head")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(run_id, "cannot read the audit chain's head: {e}"),
            }
        }
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
    tracing::info!(run_id, sources = %serde_json::Value::from(source_ids.clone()), force = job.force, dry_run = job.dry_run, holder = hold.map(hold::Hold::holder), "run started");

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
    // The changes sources held back for approval: one plan for the run.
    let mut awaiting = Vec::new();
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
        let executed = match &job.apply {
            Some(applying) => run.apply_planned(applying).await,
            None => run.execute().await,
        };
        let mut result = SourceResult { source: source.id.clone(), status: RunStatus::Ok, error: None };
        match executed {
            Ok(()) => {}
            Err(SourceFailure::Fatal(e)) => {
                report.counts.add(run.counts);
                return Err(e);
            }
            Err(SourceFailure::Source(message)) => {
                failed_sources += 1;
                report.errors.push(format!("source {}: {message}", source.id));
                result = SourceResult { status: RunStatus::Failed, error: Some(message.clone()), ..result };
                run.event(None, None, Stage::Fetch, Level::Error, message);
            }
        }
        let flushed = run.flush().await;
        report.counts.add(run.counts);
        flushed?;
        if result.status == RunStatus::Ok {
            if let Some(why) = job.stop.why() {
                let status =
                    if matches!(why, Stopped::LeaseLost(_)) { RunStatus::Aborted } else { RunStatus::Interrupted };
                result = SourceResult { status, error: Some(why.to_string()), ..result };
            } else if run.counts.problems() > 0 || !run.missing_items.is_empty() {
                result.status = RunStatus::Partial;
            }
        }
        if run_id.is_some() {
            report.sources.push(result);
        }
        report.warned.extend(run.warned);
        report.problems.extend(run.problems);
        report.errors.extend(run.missing_items);
        report.warnings.extend(run.warnings);
        awaiting.append(&mut run.awaiting);
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

    if let (Some(author), false) = (&job.author, awaiting.is_empty() || job.stop.is_stopped()) {
        let items: Vec<String> = job.items.iter().map(ToString::to_string).collect();
        let origin = crate::pipeline::plan::Origin {
            author,
            sources: &source_ids,
            items: &items,
            flags: crate::pipeline::plan::Flags { force: job.force, allow_withdrawals: job.allow_withdrawals },
            run_id,
            reuse_open: true,
        };
        let stored = crate::pipeline::plan::store_plan(deps, &origin, awaiting).await?;
        let message = format!(
            "plan {} holds {} awaiting approval by {} person(s) other than {author}: {}",
            stored.id,
            stored.summary,
            stored.verdict.approvers,
            stored.verdict.reasons.join("; ")
        );
        tracing::warn!(run_id, plan_id = stored.id, "{message}");
        if let Some(id) = run_id {
            let event = NewEvent {
                at: timestamp(deps.clock.now()),
                run_id: Some(id),
                item_key: None,
                target: None,
                stage: Stage::Run,
                level: Level::Warn,
                message,
            };
            deps.store.append_event(&event).await?;
        }
        report.awaiting = Some(stored);
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

/// A plan's status once the run that applied it ends: `applied` if the run went through (each
/// entry says how it went), else `approved` again, so that its remaining entries can be applied.
async fn settle_plan(deps: &Deps, plan_id: i64, run_id: i64, completed: bool) {
    use crate::store::plans::PlanStatus;
    let to = if completed { PlanStatus::Applied } else { PlanStatus::Approved };
    let at = timestamp(deps.clock.now());
    match deps.store.set_plan_status(plan_id, PlanStatus::Applying, to, &at, Some(run_id)).await {
        Ok(true) => tracing::info!(plan_id, run_id, status = to.as_str(), "plan applied"),
        Ok(false) => tracing::warn!(plan_id, run_id, "the plan was not `applying` any more when its run ended"),
        Err(e) => tracing::error!(plan_id, run_id, "cannot record the plan's status (it stays `applying`): {e}"),
    }
}
