//! Sharing a large run's work pass between the instances on one database: the instance that
//! holds the source's lease scans and decides, writes the work as batches, and every instance
//! (itself included) claims batches, works on them and records the result; the coordinator
//! waits for the last batch and adds up what the others did.
//!
//! A claim lasts [`Share::claim`] and is renewed while its holder works; the batch of an instance
//! that died is claimed again once its claim expired. Deliveries are idempotent (intents and
//! idempotency keys), so a batch worked on twice still has one effect per item.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::Flags;
use super::{Deps, Job, Pair, PipelineError, Problem, SourceFailure, SourceRun};
use crate::codec::Format;
use crate::domain::{ItemKey, Level, Stage, Trigger};
use crate::source::Entry;
use crate::store::batches::ClaimedBatch;
use crate::store::lease::Fence;
use crate::store::runs::{Counted, Counts};

/// How a run shares its work pass with the other instances on the database.
#[derive(Debug, Clone)]
pub struct Share {
    /// Who claims batches: the run's holder for the run's own work, the instance's name for an
    /// instance that helps others (it leaves the batches of its own runs, `<instance>#n`, to them).
    pub instance: Arc<str>,
    /// How long a claim lasts without renewal (on the database's clock); renewed every third of
    /// it while working.
    pub claim: Duration,
    /// (item, mapping) pairs per batch; a run with no more pairs of work than this is not shared.
    pub batch_pairs: usize,
}

impl Share {
    /// True if a work pass of `pairs` pairs is worth sharing.
    pub(super) fn applies(&self, pairs: usize) -> bool {
        self.batch_pairs > 0 && pairs > self.batch_pairs
    }
}

/// How often a waiting coordinator looks at its batches, and how long [`help`] callers should
/// pause when there was nothing to claim.
pub const POLL: Duration = Duration::from_millis(250);

/// One entry of a batch as stored: where to read it and which pairs to work on.
#[derive(Debug, Serialize, Deserialize)]
struct SharedEntry {
    origin: String,
    path: PathBuf,
    format: Option<Format>,
    /// The body of an entry that is not a file (a fetched page), hex-encoded.
    content: Option<String>,
    /// (item key, mapping name)
    pairs: Vec<(ItemKey, String)>,
}

/// A batch as stored: a slice of a plan, with the plan's flags, so that whichever instance claims
/// it does what the job asked (`force` re-delivers unchanged output). Either a slice of the work
/// before mapping — entries with the pairs the decisions left; the claimant maps them into plan
/// steps itself, mapping being the work that sharing spreads — or a slice of a stored plan being
/// applied: its entries by key, whose documents the claimant reads from the plan.
#[derive(Debug, Serialize, Deserialize)]
struct SharedWork {
    /// Stored as the batch's top-level `force` and `allow_withdrawals` (batches of earlier
    /// versions carry `force` only).
    #[serde(flatten)]
    flags: Flags,
    entries: Vec<SharedEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<PlanSlice>,
}

/// Entries of a stored plan to apply: (item key, target).
#[derive(Debug, Serialize, Deserialize)]
struct PlanSlice {
    id: i64,
    entries: Vec<(String, String)>,
}

/// What a claimed batch asks for.
enum BatchWork {
    /// Map these pairs and deliver the documents.
    Map(Vec<(Entry, Vec<Pair>)>),
    /// Apply these steps of stored plan `plan_id`.
    Apply { plan_id: i64, steps: Vec<super::plan::Step> },
}

impl BatchWork {
    /// The item keys the batch works on.
    fn keys(&self) -> Vec<String> {
        match self {
            BatchWork::Map(jobs) => {
                jobs.iter().flat_map(|(_, pairs)| pairs.iter().map(|(key, _)| key.to_string())).collect()
            }
            BatchWork::Apply { steps, .. } => steps.iter().map(|step| step.key.to_string()).collect(),
        }
    }

    fn pairs(&self) -> usize {
        match self {
            BatchWork::Map(jobs) => jobs.iter().map(|(_, pairs)| pairs.len()).sum(),
            BatchWork::Apply { steps, .. } => steps.len(),
        }
    }
}

/// Slices the steps of stored plan `plan_id` into batches of `size` entries, as stored.
fn plan_batches(plan_id: i64, steps: &[super::plan::Step], size: usize, flags: Flags) -> Vec<(i64, String)> {
    steps
        .chunks(size.max(1))
        .map(|chunk| {
            let slice = PlanSlice {
                id: plan_id,
                entries: chunk.iter().map(|step| (step.key.to_string(), step.target.clone())).collect(),
            };
            let work = SharedWork { flags, entries: Vec::new(), plan: Some(slice) };
            (chunk.len() as i64, serde_json::to_string(&work).expect("batches serialise"))
        })
        .collect()
}

/// What a claimant reports for a batch it finished.
#[derive(Debug, Serialize, Deserialize)]
struct BatchResult {
    holder: String,
    pairs: usize,
    counts: Counts,
    problems: Vec<Problem>,
    /// Items that went through (`None`) or why not.
    settled: Vec<(ItemKey, Option<String>)>,
    /// Every (item, target) pair counted, with what it counted as, so that a pair the coordinator
    /// reconciled first counts once (empty in results of older versions: `counts` then stands).
    #[serde(default)]
    counted: Vec<(String, String, Counted)>,
    /// Documents that went through with warnings.
    #[serde(default)]
    warned: Vec<super::Warned>,
}

/// Groups chunks into batches of about `size` pairs, as stored.
fn batches(jobs: Vec<(Entry, Vec<Pair>)>, size: usize, flags: Flags) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut current: Vec<SharedEntry> = Vec::new();
    let mut pairs = 0;
    let mut close = |current: &mut Vec<SharedEntry>, pairs: &mut usize| {
        if !current.is_empty() {
            let work = SharedWork { flags, entries: std::mem::take(current), plan: None };
            let work = serde_json::to_string(&work).expect("batches serialise");
            out.push((*pairs as i64, work));
            *pairs = 0;
        }
    };
    for (entry, chunk) in super::chunked(jobs, size) {
        if pairs + chunk.len() > size {
            close(&mut current, &mut pairs);
        }
        pairs += chunk.len();
        current.push(SharedEntry {
            origin: entry.origin,
            path: entry.path,
            format: entry.format,
            content: entry.content.map(hex::encode),
            pairs: chunk.into_iter().map(|(key, mapping)| (key, mapping.name.clone())).collect(),
        });
    }
    close(&mut current, &mut pairs);
    out
}

impl SourceRun {
    /// Pass 2, shared: writes the work as batches, works on them alongside the other instances,
    /// waits for the last one and adds up their results.
    pub(super) async fn deliver_shared(
        &mut self,
        jobs: Vec<(Entry, Vec<Pair>)>,
        share: &Share,
    ) -> Result<(), SourceFailure> {
        let flags = Flags { force: self.force, allow_withdrawals: self.allow_withdrawals };
        self.share_out(batches(jobs, share.batch_pairs, flags), share).await
    }

    /// Applies the steps of stored plan `plan_id` shared: slices of the plan as batches, worked on
    /// alongside the other instances (each reads the documents from the plan).
    pub(super) async fn apply_shared(
        &mut self,
        plan_id: i64,
        steps: Vec<super::plan::Step>,
        share: &Share,
    ) -> Result<(), SourceFailure> {
        let flags = Flags { force: self.force, allow_withdrawals: self.allow_withdrawals };
        self.share_out(plan_batches(plan_id, &steps, share.batch_pairs, flags), share).await
    }

    /// Writes `batches`, works on them alongside the other instances, waits for the last one and
    /// adds up their results.
    async fn share_out(&mut self, batches: Vec<(i64, String)>, share: &Share) -> Result<(), SourceFailure> {
        let run_id = self.run_id.expect("shared runs are recorded");
        let store = self.deps.store.clone();
        let pairs: i64 = batches.iter().map(|(pairs, _)| pairs).sum();
        store.add_batches(run_id, &self.source.id, &batches).await?;
        self.event(
            None,
            None,
            Stage::Run,
            Level::Info,
            format!("{pairs} pairs of work shared in {} batches of up to {}", batches.len(), share.batch_pairs),
        );
        // Asked to stop, the run works on no further batch; those done still count, the others are
        // left to the next run of the source.
        while !self.stop.is_stopped() {
            match store.claim_batch(&self.source.id, Some(run_id), &share.instance, share.claim, None).await? {
                Some(batch) => self.work_batch(batch, share).await?,
                None if store.batches_of_run(run_id, &self.source.id).await?.iter().all(|b| b.done_at.is_some()) => {
                    break;
                }
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(POLL) => {}
                        () = self.stop.stopped() => {}
                    }
                }
            }
        }
        let mut helpers = BTreeSet::new();
        for batch in store.batches_of_run(run_id, &self.source.id).await? {
            let Some(text) = batch.result else { continue };
            let result: BatchResult = serde_json::from_str(&text).map_err(|e| {
                SourceFailure::Source(format!("the result of shared batch {} is unreadable: {e}", batch.id))
            })?;
            if result.counted.is_empty() {
                self.counts.add(result.counts);
            }
            if !result.counted.is_empty() {
                self.counts.warned += result.counts.warned;
            }
            for (key, target, kind) in result.counted {
                self.recount(&key, &target, kind);
            }
            self.warned.extend(result.warned);
            self.problems.extend(result.problems);
            for (key, why) in result.settled {
                match why {
                    None => {
                        self.settled.entry(key).or_insert(Ok(()));
                    }
                    Some(why) => {
                        self.settled.insert(key, Err(why));
                    }
                }
            }
            if result.holder != *share.instance {
                (0..result.pairs).for_each(|_| self.progress.advance());
            }
            helpers.insert(result.holder);
        }
        store.clear_batches(&self.source.id).await?;
        let helpers: Vec<String> = helpers.into_iter().collect();
        self.event(None, None, Stage::Run, Level::Info, format!("shared work done by {}", helpers.join(", ")));
        Ok(())
    }

    /// Works on a claimed batch (renewing the claim meanwhile) and records its result. The
    /// counts, problems and settled items of the batch go into the result, not into this run.
    /// Its writes are fenced by the claim, and it works from the ledger as it is now: an earlier
    /// claimant (which died or stalled) may have written some of its rows.
    async fn work_batch(&mut self, batch: ClaimedBatch, share: &Share) -> Result<(), SourceFailure> {
        let work = self
            .decode_batch(&batch.work)
            .await
            .map_err(|e| SourceFailure::Source(format!("shared batch {} of run {}: {e}", batch.id, batch.run_id)))?;
        let pairs = work.pairs();
        let keys = work.keys();
        let fresh = self.deps.store.ledger_rows(&self.source.id, &keys).await?;
        let claim = Fence::Claim { batch: batch.id, holder: share.instance.to_string() };
        let fence = std::mem::replace(&mut self.fence, claim.clone());
        {
            let work = self.work_mut();
            work.journal.set_fence(claim);
            for row in fresh {
                work.ledger.insert((row.item_key.clone(), row.target.clone()), row);
            }
        }
        self.written.retain(|(key, _), _| !keys.contains(key));
        let saved = (
            std::mem::take(&mut self.counts),
            std::mem::take(&mut self.problems),
            std::mem::take(&mut self.settled),
            std::mem::take(&mut self.tally),
            std::mem::take(&mut self.reconciled),
            std::mem::take(&mut self.warned),
        );
        let store = self.deps.store.clone();
        let renew = async {
            loop {
                tokio::time::sleep(share.claim / 3).await;
                match store.renew_batch(batch.id, &share.instance, share.claim).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(batch = batch.id, "the claim on a shared batch was lost"),
                    Err(e) => tracing::warn!(batch = batch.id, "cannot renew the claim on a shared batch: {e}"),
                }
            }
        };
        // Deliveries of this batch that an earlier claimant (which died) already started.
        let resumed: super::apply::Resumed = store
            .intents()
            .await?
            .into_iter()
            .filter(|i| i.source_id == self.source.id && i.run_id == Some(batch.run_id))
            .map(|i| ((i.item_key.clone(), i.target.clone()), i))
            .collect();
        let worked = tokio::select! {
            worked = async {
                match work {
                    BatchWork::Map(jobs) => self.plan_and_apply(jobs, resumed).await,
                    BatchWork::Apply { plan_id, steps } => self.apply_steps(plan_id, steps, &resumed).await,
                }
            } => worked,
            () = renew => unreachable!("the renewal loop never ends"),
        };
        let flushed = self.flush().await;
        self.work_mut().journal.set_fence(fence.clone());
        self.fence = fence;
        let counts = std::mem::replace(&mut self.counts, saved.0);
        let problems = std::mem::replace(&mut self.problems, saved.1);
        let settled = std::mem::replace(&mut self.settled, saved.2);
        let counted = std::mem::replace(&mut self.tally, saved.3);
        self.reconciled = saved.4;
        let warned = std::mem::replace(&mut self.warned, saved.5);
        worked?;
        flushed?;
        if self.stop.is_stopped() {
            // Some pairs may not have been sent: the batch is not done; it is left to its claim's
            // expiry and the next run of the source.
            return Ok(());
        }
        let result = BatchResult {
            holder: share.instance.to_string(),
            pairs,
            counts,
            problems,
            settled: settled.into_iter().map(|(key, outcome)| (key, outcome.err())).collect(),
            counted,
            warned,
        };
        let text = serde_json::to_string(&result).expect("results serialise");
        if !self.deps.store.finish_batch(batch.id, &share.instance, &text).await? {
            tracing::warn!(batch = batch.id, "another instance finished this shared batch first");
        }
        Ok(())
    }

    /// The work of a stored batch: pairs with the mappings of this instance's configuration, or
    /// the steps of a plan's slice with their stored documents.
    async fn decode_batch(&self, work: &str) -> Result<BatchWork, String> {
        let work: SharedWork = serde_json::from_str(work).map_err(|e| format!("unreadable work: {e}"))?;
        if work.flags.force != self.force {
            return Err(format!("the batch asks for force = {}, this run has {}", work.flags.force, self.force));
        }
        if let Some(slice) = work.plan {
            let steps = self.plan_slice(&slice, work.flags).await?;
            return Ok(BatchWork::Apply { plan_id: slice.id, steps });
        }
        let jobs = work
            .entries
            .into_iter()
            .map(|shared| {
                let content = match shared.content {
                    Some(text) => Some(bytes::Bytes::from(hex::decode(text).map_err(|e| format!("bad body: {e}"))?)),
                    None => None,
                };
                let pairs = shared
                    .pairs
                    .into_iter()
                    .map(|(key, name)| {
                        let mapping = self.source.mappings.iter().find(|m| m.name == name).ok_or_else(|| {
                            format!("mapping `{name}` is not configured for source {} here", self.source.id)
                        })?;
                        Ok((key, mapping.clone()))
                    })
                    .collect::<Result<Vec<Pair>, String>>()?;
                let entry = Entry { origin: shared.origin, path: shared.path, format: shared.format, content };
                Ok((entry, pairs))
            })
            .collect::<Result<_, String>>()?;
        Ok(BatchWork::Map(jobs))
    }

    /// The steps of a plan's slice, read from the stored plan with their documents.
    async fn plan_slice(&self, slice: &PlanSlice, flags: Flags) -> Result<Vec<super::plan::Step>, String> {
        let store = &self.deps.store;
        let wanted: BTreeSet<(&str, &str)> = slice.entries.iter().map(|(k, t)| (k.as_str(), t.as_str())).collect();
        let entries = store.plan_entries(slice.id).await.map_err(|e| format!("plan {}: {e}", slice.id))?;
        let mut steps = Vec::new();
        for entry in entries.iter().filter(|e| wanted.contains(&(e.item_key.as_str(), e.target.as_str()))) {
            let body = match &entry.document_hash {
                Some(hash) => store.plan_document(hash).await.map_err(|e| format!("plan {}: {e}", slice.id))?,
                None => None,
            };
            steps.push(
                super::plan::Step::from_entry(entry, body, flags).map_err(|e| format!("plan {}: {e}", slice.id))?,
            );
        }
        if steps.len() != wanted.len() {
            return Err(format!("plan {} lacks entries of this slice", slice.id));
        }
        Ok(steps)
    }
}

/// Before a source's run starts on the instance holding its lease: drops the batches an earlier,
/// interrupted run left (the new scan redoes their work) and waits until batches that another
/// instance is still working on are done or their claims expire.
pub(super) async fn clear_earlier(deps: &Deps, source_id: &str) -> Result<(), PipelineError> {
    let mut waited = false;
    while deps.store.clear_batches(source_id).await? > 0 {
        if !waited {
            tracing::info!(source = %source_id, "waiting for other instances to finish batches of an earlier run");
            waited = true;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Claims one batch of any shared run of a configured source — except the runs of this instance
/// (`<share.instance>#n`), which work on their batches themselves — and works on it. Returns
/// whether there was one; callers pause for [`POLL`] when there was not.
pub async fn help(deps: &Deps, share: &Share, job: &Job) -> Result<bool, PipelineError> {
    let own_runs = format!("{}#", share.instance);
    for source_id in deps.store.sources_with_open_batches().await? {
        if deps.config.source(&source_id).is_none() {
            continue;
        }
        let claimed = deps.store.claim_batch(&source_id, None, &share.instance, share.claim, Some(&own_runs)).await?;
        let Some(batch) = claimed else { continue };
        let (id, run_id) = (batch.id, batch.run_id);
        // The plan's flags travel with its batches: a forced run stays forced on every instance.
        let flags = serde_json::from_str::<SharedWork>(&batch.work).map(|work| work.flags).unwrap_or_default();
        let job = Job {
            trigger: Trigger::Schedule,
            share: Some(share.clone()),
            force: flags.force,
            allow_withdrawals: flags.allow_withdrawals,
            ..job.clone()
        };
        // The codelists the run's holder mapped with: the directory's and the database cache's.
        let (deps, _) = super::codelists::for_run(deps).await?;
        let source = deps.config.source(&source_id).expect("the same sources").clone();
        let mut run = SourceRun::new(&deps, source, &job, Some(run_id), BTreeSet::new(), Fence::None).await?;
        match run.work_batch(batch, share).await {
            Ok(()) => tracing::info!(batch = id, run_id, source = %source_id, "worked on a shared batch"),
            Err(SourceFailure::Fatal(e)) => return Err(e),
            // Left to its claim's expiry: an instance configured for it takes it over.
            Err(SourceFailure::Source(message)) => tracing::warn!(batch = id, run_id, "{message}"),
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plans_flags_travel_with_a_batch_and_older_batches_still_read() {
        let flags = Flags { force: true, allow_withdrawals: true };
        let text = serde_json::to_string(&SharedWork { flags, entries: Vec::new(), plan: None }).unwrap();
        assert_eq!(text, r#"{"force":true,"allow_withdrawals":true,"entries":[]}"#);
        assert_eq!(serde_json::from_str::<SharedWork>(&text).unwrap().flags, flags);
        let older: SharedWork = serde_json::from_str(r#"{"force":true,"entries":[]}"#).unwrap();
        assert_eq!(older.flags, Flags { force: true, allow_withdrawals: false });
    }

    #[test]
    fn a_plans_slices_name_its_entries_and_carry_its_flags() {
        use crate::pipeline::plan::{Base, Change, Inputs, Step};
        let step = |id: &str| Step {
            key: ItemKey::new("feed", id),
            target: "portal".into(),
            source_id: "feed".into(),
            origin: "feed/records.json#1".into(),
            change: Change::Withdraw,
            base: Base::default(),
            warnings: Vec::new(),
            inputs: Inputs::default(),
        };
        let flags = Flags { force: true, allow_withdrawals: true };
        let batches = plan_batches(7, &[step("a"), step("b"), step("c")], 2, flags);
        assert_eq!(batches.iter().map(|(pairs, _)| *pairs).collect::<Vec<_>>(), [2, 1]);
        let work: SharedWork = serde_json::from_str(&batches[1].1).unwrap();
        assert_eq!(work.flags, flags);
        let slice = work.plan.unwrap();
        assert_eq!((slice.id, slice.entries), (7, vec![("feed/c".to_owned(), "portal".to_owned())]));
    }
}
