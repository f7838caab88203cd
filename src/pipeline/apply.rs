//! Applying a plan: each step that changes something at its target is sent through the delivery
//! journal (intent → deliver → probe → settle), and every step's outcome is recorded in the ledger
//! and the migration log ([`record`]). A dry run sends nothing and records nothing.

mod record;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::plan::{Change, Step, map_entry};
use super::{
    Applying, BATCH_DOCUMENT_BYTES, BATCH_ROWS, CHUNK_PAIRS, DELIVERIES_IN_FLIGHT, Pair, PipelineError, Problem,
    SourceFailure, SourceRun, Stopped, Work, chunked,
};
use crate::delivery::{Action, Provenance, Request, Resume, Sent, Ticket};
use crate::domain::{ItemStatus, Level, Stage};
use crate::source::Entry;
use crate::store::StoreError;
use crate::store::intents::Intent;
use crate::store::runs::Counted;

/// Intents a run recorded earlier, by (item key, target).
pub(super) type Resumed = HashMap<(String, String), Intent>;

/// A step of the plan with what applying it came to, ready to be recorded.
#[derive(Debug)]
struct Applied {
    step: Step,
    /// The intent the delivery went on from (an earlier claimant's, or one an interrupted run
    /// left: then the target was probed first).
    resume: Option<Resume>,
    /// Whether the delivery's intent is settled with the outcome or kept.
    ticket: Ticket,
    result: Result<Done, Problem>,
}

#[derive(Debug)]
enum Done {
    /// Delivered (or, in a dry run, would be delivered) with this output hash; `body` is kept
    /// for the diff with the ledger row.
    Delivered { output_hash: String, location: Option<String>, version: Option<String>, body: Option<bytes::Bytes> },
    /// Mapped, and the output equals what the target already holds.
    Same { output_hash: String },
    /// Gone upstream, and withdrawn from the target; `sent` is false for an item whose document
    /// never reached the target (nothing to withdraw there).
    Withdrawn { location: String, sent: bool },
}

/// The action a step sends, or what it comes to without sending anything (a dry run sends nothing;
/// a delivery that resumes an intent is sent as the intent says).
fn prepare(step: &Step, resumes: bool, dry_run: bool) -> Result<Action, Result<Done, Problem>> {
    match &step.change {
        Change::Refuse { problem } => Err(Err(problem.clone())),
        Change::Nothing { output_hash } => Err(Ok(Done::Same { output_hash: output_hash.clone() })),
        Change::Create { document } | Change::Update { document } if dry_run => {
            Err(Ok(Done::Delivered { output_hash: document.hash.clone(), location: None, version: None, body: None }))
        }
        Change::Create { document } | Change::Update { document } => {
            Ok(Action::Put { body: document.body.clone(), format: document.format, output_hash: document.hash.clone() })
        }
        Change::Withdraw if dry_run => Err(Ok(Done::Withdrawn { location: "(dry run)".into(), sent: false })),
        // Its document never reached the target: there is nothing to take back there.
        Change::Withdraw if step.base.hash.is_none() && !resumes => {
            Err(Ok(Done::Withdrawn { location: step.target.clone(), sent: false }))
        }
        Change::Withdraw => Ok(Action::Delete),
    }
}

impl SourceRun {
    /// Pass 2 on this instance: plans the steps of `jobs` (map, validate) slice by slice on the
    /// blocking threads and applies each step as its slice is made, recording every outcome.
    /// `resumed` holds intents this run recorded before for some of the pairs (a shared batch whose
    /// first claimant died): those deliveries are sent again as they were, with their idempotency key
    /// and base version, so that what the first claimant already sent takes no second effect.
    pub(super) async fn plan_and_apply(
        &mut self,
        jobs: Vec<(Entry, Vec<Pair>)>,
        resumed: Resumed,
    ) -> Result<(), SourceFailure> {
        let (work, sender) = (self.work.clone(), self.work.clone());
        let resumed = Arc::new(resumed);
        let stop = self.stop.clone();
        // Entries with many records are split so that both cores stay busy; steps are keyed, so
        // the order in which slices finish does not matter. Once the run is asked to stop, no
        // entry is started and no delivery sent; those in flight settle and are recorded.
        let mut stream = futures::stream::iter(chunked(jobs, CHUNK_PAIRS))
            .take_until(Box::pin(async move { stop.stopped().await }))
            .map(move |(entry, pairs)| {
                let work = work.clone();
                tokio::task::spawn_blocking(move || map_entry(&work, &entry, &pairs))
            })
            .buffer_unordered(2 * self.workers)
            .flat_map(|joined| {
                let steps: Vec<Result<Step, String>> = match joined {
                    Ok(steps) => steps.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e.to_string())],
                };
                futures::stream::iter(steps)
            })
            // Each delivery is a task of its own: a delivery holding a database connection must
            // go on while this loop waits for the database in `flush`, or the two wait for each
            // other until the pool gives up. A delivery task ends with the run (it is aborted when
            // the run is dropped), never after it.
            .map(move |step| {
                let (work, resumed) = (sender.clone(), resumed.clone());
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                    match step {
                        Ok(step) => {
                            let resume = resumable(&step, &resumed, work.dry_run);
                            Ok(send(&work, step, resume).await)
                        }
                        Err(e) => Err(e),
                    }
                }))
            })
            .buffer_unordered(DELIVERIES_IN_FLIGHT);
        while let Some(result) = stream.next().await {
            let applied = result
                .map_err(|e| e.to_string())
                .and_then(|sent| sent)
                .map_err(|e| SourceFailure::Fatal(PipelineError::Worker(e)))?;
            // Not sent: the run was asked to stop first.
            let Some(applied) = applied else { continue };
            self.record(applied);
            if self.batch.rows.len() >= BATCH_ROWS || self.batch.document_bytes() >= BATCH_DOCUMENT_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Applies steps that are ready (withdrawals; deliveries an interrupted run left, with the
    /// intent they resume) and records what happened.
    pub(super) async fn apply_all(&mut self, steps: Vec<(Step, Option<Resume>)>) -> Result<(), StoreError> {
        let work = self.work.clone();
        let mut stream = futures::stream::iter(steps)
            .map(|(step, resume)| send(&work, step, resume))
            .buffer_unordered(DELIVERIES_IN_FLIGHT);
        while let Some(applied) = stream.next().await {
            if let Some(applied) = applied {
                self.record(applied);
            }
        }
        drop(stream);
        self.flush().await
    }

    /// Applies the steps of a stored plan that belong to this source — shared with the other
    /// instances as slices of the plan when the run shares and they are many (see `share`).
    pub(super) async fn apply_planned(&mut self, applying: &Applying) -> Result<(), SourceFailure> {
        let steps: Vec<Step> = applying.steps.iter().filter(|s| s.source_id == self.source.id).cloned().collect();
        match self.share.clone() {
            Some(share) if share.applies(steps.len()) && self.run_id.is_some() => {
                self.apply_shared(applying.plan_id, steps, &share).await
            }
            _ => self.apply_steps(applying.plan_id, steps, &Resumed::new()).await,
        }
    }

    /// Applies steps of stored plan `plan_id`: each whose base is still what the ledger holds is
    /// sent as planned (the document as stored, `If-Match` the version the plan saw, so a portal
    /// copy changed since comes back as a conflict), going on from an intent in `resumed` if an
    /// earlier claimant of the same slice recorded one; a step whose base moved on is refused as a
    /// conflict without being sent. Each entry of the plan is marked with its outcome.
    pub(super) async fn apply_steps(
        &mut self,
        plan_id: i64,
        steps: Vec<Step>,
        resumed: &Resumed,
    ) -> Result<(), SourceFailure> {
        let mut ready = Vec::new();
        let mut stale = Vec::new();
        let mut done = Vec::new();
        let work = self.work.clone();
        for step in steps {
            let row = work.ledger.get(&(step.key.to_string(), step.target.clone()));
            let now = (row.and_then(|r| r.target_version.as_deref()), row.and_then(|r| r.output_hash.as_deref()));
            let resume = resumable(&step, resumed, self.dry_run);
            // A step an earlier claimant began is finished as it began, whatever the ledger says by now.
            if resume.is_some() || now == (step.base.version.as_deref(), step.base.hash.as_deref()) {
                ready.push((step, resume));
                continue;
            }
            // Applied already, by a run of this plan that died before it could say so.
            if row.is_some_and(|row| holds_step(row, &step)) {
                done.push((step.key.to_string(), step.target.clone()));
                continue;
            }
            let message = format!(
                "the plan builds on {}, but the item has moved on since ({}): another run or plan changed it; \
                 make a new plan",
                describe(step.base.version.as_deref(), step.base.hash.as_deref()),
                describe(now.0, now.1)
            );
            self.event(Some(&step.key), Some(&step.target), Stage::Deliver, Level::Warn, message.clone());
            self.count(step.key.as_str(), &step.target, Counted::Conflict);
            self.problems.push(Problem {
                item_key: step.key.to_string(),
                target: step.target.clone(),
                status: ItemStatus::Conflict,
                stage: Stage::Deliver,
                message: message.clone(),
            });
            stale.push((step.key.to_string(), step.target.clone(), message));
        }
        let sent: Vec<(String, String)> = ready.iter().map(|(s, _)| (s.key.to_string(), s.target.clone())).collect();
        self.apply_all(ready).await?;
        let store = &self.deps.store;
        for (key, target, message) in stale {
            store.set_entry_state(plan_id, &key, &target, "conflict", Some(&message)).await?;
        }
        for (key, target) in done {
            let message = "found applied: an earlier run of this plan delivered it";
            store.set_entry_state(plan_id, &key, &target, "applied", Some(message)).await?;
        }
        let recorded: std::collections::HashSet<(&str, &str)> =
            self.tally.iter().map(|(key, target, _)| (key.as_str(), target.as_str())).collect();
        for (key, target) in sent {
            // Not sent (the run was asked to stop first): the entry stays `planned`.
            if !recorded.contains(&(key.as_str(), target.as_str())) {
                continue;
            }
            let problem = self.problems.iter().find(|p| p.item_key == key && p.target == target);
            let (state, message) = match problem {
                None => ("applied", None),
                Some(p) if p.status == ItemStatus::Conflict => ("conflict", Some(p.message.as_str())),
                Some(p) => ("failed", Some(p.message.as_str())),
            };
            store.set_entry_state(plan_id, &key, &target, state, message).await?;
        }
        Ok(())
    }

    /// Records a step that sends nothing (a refusal) as it is.
    pub(super) fn record_step(&mut self, step: Step) {
        let result = match prepare(&step, false, self.dry_run) {
            Err(result) => result,
            Ok(_) => unreachable!("only steps that send nothing are recorded as they are"),
        };
        self.record(Applied { step, resume: None, ticket: Ticket::default(), result });
    }
}

/// Whether the ledger row says the target holds what `step` would make of it: its document
/// delivered, or the item withdrawn.
fn holds_step(row: &crate::store::ledger::LedgerRow, step: &Step) -> bool {
    match &step.change {
        Change::Create { document } | Change::Update { document } => {
            matches!(row.status.as_str(), "delivered" | "unchanged")
                && row.output_hash.as_deref() == Some(&document.hash)
        }
        Change::Withdraw => row.status == "withdrawn",
        Change::Nothing { .. } | Change::Refuse { .. } => false,
    }
}

/// What an item's base is, for a conflict's message.
fn describe(version: Option<&str>, hash: Option<&str>) -> String {
    match (version, hash) {
        (_, None) => "nothing delivered".into(),
        (Some(version), Some(hash)) => format!("version {version} (document {})", short(hash)),
        (None, Some(hash)) => format!("document {}", short(hash)),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The intent of this run that a step's delivery goes on from: one for the same document.
fn resumable(step: &Step, resumed: &Resumed, dry_run: bool) -> Option<Resume> {
    let intent = resumed.get(&(step.key.to_string(), step.target.clone()))?;
    prepare(step, false, dry_run).ok().and_then(|action| Resume::of(intent, &action))
}

/// Applies one step: one that changes something at its target is sent through the journal
/// (intent, delivery, probe); the others come to what they are. `None`: not sent and nothing
/// recorded, since the run was asked to stop (or lost its lease) first.
async fn send(work: &Work, step: Step, resume: Option<Resume>) -> Option<Applied> {
    if let Some(collect) = &work.collect {
        collect.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(step.clone());
    }
    if let Some(hold) = &work.hold {
        if matches!(step.change, Change::Create { .. } | Change::Update { .. } | Change::Withdraw) {
            hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(step);
            return None;
        }
    }
    let action = match prepare(&step, resume.is_some(), work.dry_run) {
        Ok(action) => action,
        Err(result) => return Some(Applied { step, resume, ticket: Ticket::default(), result }),
    };
    if work.stop.is_stopped() {
        return None;
    }
    let target = work.deps.config.target(&step.target).expect("targets are checked by Config::resolve");
    let request = Request {
        key: step.key.clone(),
        target: step.target.clone(),
        action: action.clone(),
        known_version: step.base.version.clone(),
        delivered: step.base.hash.clone(),
        refresh: step.base.refresh,
        provenance: Provenance {
            source_id: step.source_id.clone(),
            origin: step.origin.clone(),
            content_hash: step.inputs.content_hash.clone(),
            mapping: step.inputs.mapping.clone(),
            mapping_version: step.inputs.mapping_version.clone(),
            adoptions: step.inputs.adoptions.clone(),
        },
        resume: resume.clone(),
    };
    let (ticket, delivered) = match work.journal.send(target.delivery.as_ref(), request).await {
        Sent::Fenced(why) => {
            work.stop.stop(Stopped::LeaseLost(why));
            return None;
        }
        Sent::Done { ticket, result } => (ticket, result),
    };
    let result = match (delivered, action) {
        (Ok(d), Action::Delete) => Ok(Done::Withdrawn { location: d.location, sent: true }),
        (Ok(d), Action::Put { output_hash, body, .. }) => {
            Ok(Done::Delivered { output_hash, location: Some(d.location), version: d.version, body: Some(body) })
        }
        (Err(e), _) => Err(Problem {
            item_key: step.key.to_string(),
            target: step.target.clone(),
            status: e.status(),
            stage: Stage::Deliver,
            message: e.to_string(),
        }),
    };
    Some(Applied { step, resume, ticket, result })
}
