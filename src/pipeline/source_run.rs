//! One source's part of a run: the state the passes share, and the order of its steps — decide,
//! plan and apply the work (on this instance or shared), apply the withdrawals, sum it up.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::apply::Resumed;
use super::{Deps, Job, PipelineError, SourceFailure, SourceRun, Stopped, Work};
use crate::config::{Config, Source};
use crate::delivery::Journal;
use crate::domain::{ItemKey, Level, Stage};
use crate::metrics::Outcome;
use crate::source;
use crate::store::lease::Fence;
use crate::store::ledger::{Batch, LedgerRow, UnchangedMark};
use crate::store::log::NewEvent;
use crate::store::runs::{Counted, Counts};
use crate::store::{StoreError, timestamp};

impl SourceRun {
    pub(super) async fn new(
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
            collect: job.collect.clone().filter(|_| job.dry_run),
            force: job.force,
            metrics: job.metrics.clone(),
            journal: Journal::new(deps.store.clone(), fence.clone(), deps.clock.clone(), run_id, job.metrics.clone()),
            stop: job.stop.clone(),
            hold: None,
            kept: Arc::new(super::kept::Kept::new(super::kept::BUDGET_BYTES)),
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
            warned: Vec::new(),
            unreadable: Vec::new(),
            tally: Vec::new(),
            reconciled: HashMap::new(),
            written: HashMap::new(),
            fence,
            stop: job.stop.clone(),
            author: job.author.clone().filter(|_| deps.config.policy.enabled && !job.dry_run),
            awaiting: Vec::new(),
        })
    }

    /// Whether the policy would want approval if every pair with work changed and every vanished
    /// item were withdrawn (an upper bound of what the source's plan changes).
    fn may_need_approval(&self, decided: &super::plan::Decided) -> bool {
        let mut changed = BTreeSet::new();
        let mut withdrawn = BTreeSet::new();
        let mut targets: std::collections::BTreeMap<String, u64> = Default::default();
        for (key, mapping) in decided.work.iter().flat_map(|(_, pairs)| pairs) {
            changed.insert(key.as_str());
            *targets.entry(mapping.output.target.clone()).or_default() += 1;
        }
        for step in &decided.vanished {
            changed.insert(step.key.as_str());
            withdrawn.insert(step.key.as_str());
            *targets.entry(step.target.clone()).or_default() += 1;
        }
        let known = super::plan::distinct_items(self.work.ledger.keys().map(|(item, _)| item.as_str()));
        let summary = crate::policy::ChangeSummary {
            sources: [(
                self.source.id.clone(),
                crate::policy::SourceChanges {
                    known,
                    changed: changed.len() as u64,
                    withdrawn: withdrawn.len() as u64,
                },
            )]
            .into(),
            targets,
        };
        self.deps.config.policy.judge(&summary).approvers > 0
    }

    /// The changes a gated source held: judged as they are; sent now if the policy needs nobody
    /// for them, else kept for the run's plan (and the log says so).
    async fn release_or_await(&mut self) -> Result<(), SourceFailure> {
        let Some(hold) = self.work_mut().hold.take() else { return Ok(()) };
        let held = std::mem::take(&mut *hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let entries: Vec<_> = held.iter().filter_map(|step| step.entry(String::new()).map(|(e, _)| e)).collect();
        let verdict = super::plan::judge(&self.deps, &entries).await?;
        if verdict.approvers == 0 {
            self.apply_all(held.into_iter().map(|step| (step, None)).collect()).await?;
            return Ok(());
        }
        let message = format!(
            "source {}: {} change(s) await approval ({})",
            self.source.id,
            entries.len(),
            verdict.reasons.join("; ")
        );
        self.event(None, None, Stage::Run, Level::Warn, message);
        self.awaiting = held;
        Ok(())
    }

    /// Counts a pair's outcome. A pair whose delivery this run reconciled first and then worked on
    /// again counts as its later outcome only (its reconciliation's problem, if any, is dropped).
    pub(super) fn count(&mut self, key: &str, target: &str, kind: Counted) {
        if let Some(before) = self.reconciled.remove(&(key.to_owned(), target.to_owned())) {
            self.counts.bump(before, -1);
            self.problems.retain(|p| !(p.item_key == key && p.target == target));
        }
        self.recount(key, target, kind);
        if let Some(metrics) = &self.work.metrics {
            metrics.count_document(&self.source.id, target, outcome(kind));
        }
    }

    /// Counts a pair's outcome that was already counted where it was worked on (another instance's
    /// shared batch): in the run's counts, not again in the metrics.
    pub(super) fn recount(&mut self, key: &str, target: &str, kind: Counted) {
        self.counts.bump(kind, 1);
        self.tally.push((key.to_owned(), target.to_owned(), kind));
    }

    /// The state the passes share, to change between passes (copied if a pass still holds it).
    pub(super) fn work_mut(&mut self) -> &mut Work {
        Arc::make_mut(&mut self.work)
    }

    /// Queues a ledger row for the next write, at the revision the run last saw or wrote it.
    pub(super) fn push_row(&mut self, mut row: LedgerRow) {
        let pair = (row.item_key.clone(), row.target.clone());
        if let Some(revision) = self.written.get(&pair) {
            row.revision = *revision;
        }
        self.written.insert(pair, row.revision + 1);
        self.batch.rows.push(row);
    }

    /// Queues marking `row` (as the run read it) unchanged for the next write, learning `leika_key`
    /// if given: the same as [`Self::push_row`] with the row's status, time and run changed, in one
    /// statement for many rows.
    pub(super) fn push_unchanged(&mut self, row: &LedgerRow, leika_key: Option<String>) {
        let pair = (row.item_key.clone(), row.target.clone());
        let revision = self.written.get(&pair).copied().unwrap_or(row.revision);
        self.written.insert(pair, revision + 1);
        let (updated_at, last_run_id) = (self.now(), self.run_id);
        self.batch.unchanged.push(UnchangedMark {
            item_key: row.item_key.clone(),
            target: row.target.clone(),
            revision,
            leika_key,
            updated_at,
            last_run_id,
        });
    }

    /// Decides, then plans and applies the work (shared with other instances when the run is large
    /// and the daemon shares), then the withdrawals, and logs the source's summary.
    pub(super) async fn execute(&mut self) -> Result<(), SourceFailure> {
        let Some(decided) = self.decide().await? else { return Ok(()) };
        let listed = decided.listed;
        let pairs: usize = decided.work.iter().map(|(_, pairs)| pairs.len()).sum();
        // Whether the policy may want this source's changes approved: judged on what may change
        // (every pair with work, every withdrawal); if so, the changes are held, not sent, and
        // judged again once they are known.
        let gated = self.author.is_some() && self.may_need_approval(&decided);
        if gated {
            self.work_mut().hold = Some(Default::default());
        }
        match self.share.clone() {
            Some(share) if share.applies(pairs) && !self.dry_run && self.run_id.is_some() && !gated => {
                self.deliver_shared(decided.work, &share).await?
            }
            _ => self.plan_and_apply(decided.work, Resumed::new()).await?,
        }
        if self.stop.is_stopped() {
            return Ok(());
        }
        self.apply_all(decided.vanished.into_iter().map(|step| (step, None)).collect()).await?;
        if gated {
            self.release_or_await().await?;
        }
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

    pub(super) fn now(&self) -> String {
        timestamp(self.deps.clock.now())
    }

    pub(super) fn event(
        &mut self,
        key: Option<&ItemKey>,
        target: Option<&str>,
        stage: Stage,
        level: Level,
        message: String,
    ) {
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

    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
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

/// A pair's outcome as the metrics name it.
fn outcome(kind: Counted) -> Outcome {
    match kind {
        Counted::New | Counted::Updated => Outcome::Delivered,
        Counted::Unchanged => Outcome::Unchanged,
        Counted::Failed => Outcome::Failed,
        Counted::Quarantined => Outcome::Quarantined,
        Counted::Withdrawn => Outcome::Withdrawn,
        Counted::Conflict => Outcome::Conflict,
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
