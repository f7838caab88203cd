//! The intent journal: a delivery's intent is recorded (fenced by the run's lease or batch claim)
//! before anything is sent, the delivery carries an idempotency key, an intent an interrupted run
//! left is probed before it is sent again, and the intent is settled (removed) in the same
//! transaction as the ledger row that records the outcome — or kept when the outcome is ambiguous.

use std::sync::Arc;

use super::{Action, DeliverError, Delivered, Rebased, Reconcile, Target, idempotency_key};
use crate::domain::{Clock, ItemKey, Stage};
use crate::metrics::Metrics;
use crate::store::intents::Intent;
use crate::store::lease::Fence;
use crate::store::ledger::Batch;
use crate::store::{Store, StoreError, timestamp};

/// What an intent keeps besides the delivery itself, so that a later run can record the outcome of
/// a delivery it did not map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    pub source_id: String,
    pub origin: String,
    pub content_hash: Option<String>,
    pub mapping: Option<String>,
    pub mapping_version: Option<String>,
    /// The adoptions (comma-separated ARS) the document was mapped with.
    pub adoptions: Option<String>,
}

impl Provenance {
    fn of_intent(intent: &Intent) -> Self {
        Self {
            source_id: intent.source_id.clone(),
            origin: intent.origin.clone(),
            content_hash: intent.content_hash.clone(),
            mapping: intent.mapping.clone(),
            mapping_version: intent.mapping_version.clone(),
            adoptions: intent.adoptions.clone(),
        }
    }
}

/// A delivery that an intent recorded earlier: sent as the intent says (same idempotency key, same
/// base version), so that what was sent before takes no second effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub idempotency: String,
    pub known_version: Option<String>,
    /// Left over from an interrupted run: ask the target whether it holds the result before
    /// sending again.
    pub probe: bool,
}

impl Resume {
    /// Resumes `intent` (recorded earlier in the same run) if it is for `action`'s document.
    pub fn of(intent: &Intent, action: &Action) -> Option<Self> {
        (action.output_hash() == intent.output_hash).then(|| Resume {
            idempotency: intent.idempotency_key.clone(),
            known_version: intent.known_version.clone(),
            probe: false,
        })
    }
}

/// One delivery to send for one item at one target.
#[derive(Debug, Clone)]
pub struct Request {
    pub key: ItemKey,
    pub target: String,
    pub action: Action,
    /// The target's version of what we last delivered (`If-Match`); `None`: we believe it holds nothing.
    pub known_version: Option<String>,
    /// Our output hash of what we last delivered.
    pub delivered: Option<String>,
    /// Ask the target what to build on first (a forced delivery, or a withdrawal whose version we
    /// do not know).
    pub refresh: bool,
    pub provenance: Provenance,
    /// The intent this delivery goes on from, if one was recorded before.
    pub resume: Option<Resume>,
}

/// The journal's state of one delivery: whether an intent is recorded for it, and whether the
/// outcome settles it or leaves it for the next run to probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    recorded: bool,
    keep: bool,
}

impl Ticket {
    /// True if recording the outcome removes the delivery's intent.
    pub fn settles(self) -> bool {
        self.recorded && !self.keep
    }

    /// Adds the removal of the delivery's intent to the ledger write that records its outcome
    /// (one transaction: a crash leaves either both or neither).
    pub fn settle(self, item_key: &str, target: &str, batch: &mut Batch) {
        if self.settles() {
            batch.settled_intents.push((item_key.to_owned(), target.to_owned()));
        }
    }
}

/// What sending a [`Request`] came to.
#[derive(Debug)]
pub enum Sent {
    /// Nothing sent, nothing recorded: the fence no longer holds (another run holds the item now);
    /// the text says who.
    Fenced(String),
    /// Delivered (or found delivered), or failed; the ticket says what becomes of the intent.
    Done { ticket: Ticket, result: Result<Delivered, DeliverError> },
}

/// What becomes of an intent that an interrupted run left.
#[derive(Debug)]
pub enum LeftOver {
    /// Dropped, with the warning to log: the ticket settles it with the run's next ledger write,
    /// and the run maps and delivers the item anew.
    Dropped { message: String, ticket: Ticket },
    /// To be finished: the target is probed first, and only what it does not hold is sent again.
    Resume { request: Box<Request>, message: String },
}

/// The journal of one run (or one shared batch): where intents are recorded and what their
/// records must still hold.
#[derive(Clone)]
pub struct Journal {
    store: Store,
    fence: Fence,
    clock: Arc<dyn Clock>,
    run_id: Option<i64>,
    metrics: Option<Arc<Metrics>>,
}

impl Journal {
    pub fn new(
        store: Store,
        fence: Fence,
        clock: Arc<dyn Clock>,
        run_id: Option<i64>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self { store, fence, clock, run_id, metrics }
    }

    /// What an intent's record must hold from now on (the run's lease, or a shared batch's claim).
    pub fn set_fence(&mut self, fence: Fence) {
        self.fence = fence;
    }

    /// Sends one delivery: asks the target what to build on (if the request says so), records the
    /// intent (unless the request resumes one), probes the target (for an intent left over), and
    /// delivers with the intent's idempotency key.
    pub async fn send(&self, target: &dyn Target, request: Request) -> Sent {
        let Request { key, target: target_id, action, mut known_version, delivered, refresh, provenance, resume } =
            request;
        let mut ticket = Ticket::default();
        let mut idempotency = None;
        let mut probe = false;
        if let Some(resume) = resume {
            known_version = resume.known_version;
            idempotency = Some(resume.idempotency);
            probe = resume.probe;
            ticket.recorded = true;
        }
        // The version the idempotency key builds on (see `idempotency_key`).
        let mut key_base = known_version.clone();
        if refresh && !ticket.recorded {
            match target.rebase(&key, &action, known_version, delivered.as_deref()).await {
                Ok(Rebased::Base(version)) => {
                    // A portal that lost its copy gets it created again: that creation must not
                    // pass for a replay of the first one (same document, same base), so it builds
                    // on a base of its own, kept in the intent for as long as the delivery is unfinished.
                    key_base = match (&version, &delivered) {
                        (None, Some(_)) => Some(format!("created again {}", timestamp(self.clock.now()))),
                        _ => version.clone(),
                    };
                    known_version = version;
                }
                Ok(Rebased::AlreadyGone(location)) => {
                    return Sent::Done { ticket, result: Ok(Delivered { location, version: None }) };
                }
                Err(e) => return Sent::Done { ticket, result: Err(e) },
            }
        }
        let idempotency =
            idempotency.unwrap_or_else(|| idempotency_key(&key, &target_id, &action, key_base.as_deref()));
        if !ticket.recorded {
            let intent = Intent {
                item_key: key.to_string(),
                target: target_id.clone(),
                source_id: provenance.source_id,
                origin: provenance.origin,
                action: match action {
                    Action::Put { .. } => "put",
                    Action::Delete => "delete",
                }
                .into(),
                output_hash: action.output_hash().to_owned(),
                idempotency_key: idempotency.clone(),
                body: target.intent_body(&action),
                format: match &action {
                    Action::Put { format, .. } => format.extension(),
                    Action::Delete => "none",
                }
                .into(),
                known_version: known_version.clone(),
                content_hash: provenance.content_hash,
                mapping: provenance.mapping,
                mapping_version: provenance.mapping_version,
                adoptions: provenance.adoptions,
                run_id: self.run_id,
                created_at: timestamp(self.clock.now()),
                delivery: Some(target.kind().into()),
            };
            match self.store.record_fenced_intent(&intent, &self.fence).await {
                Ok(()) => ticket.recorded = true,
                // Another run holds the item now: nothing is sent, nothing more is written.
                Err(StoreError::LeaseLost(why)) => return Sent::Fenced(why),
                // Nothing was sent; the item is retried next run.
                Err(e) => return Sent::Done { ticket, result: Err(DeliverError::Journal(e)) },
            }
        }
        let already = if probe {
            match target.probe(&key, &action).await {
                Ok(found) => found,
                Err(e) => {
                    ticket.keep = e.is_ambiguous();
                    return Sent::Done { ticket, result: Err(e) };
                }
            }
        } else {
            None
        };
        let started = std::time::Instant::now();
        let result = match already {
            Some(delivered) => Ok(delivered),
            None => target.deliver(&key, &action, known_version.as_deref(), &idempotency).await,
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe_stage(Stage::Deliver, started.elapsed().as_secs_f64());
        }
        // A lost answer may hide a stored document: the intent stays, and the next run asks the
        // target before it sends anything else for the item (never a false conflict against our
        // own write).
        if let Err(e) = &result {
            ticket.keep = e.is_ambiguous();
        }
        Sent::Done { ticket, result }
    }

    /// What becomes of an intent an interrupted run left for `target` (as configured now).
    pub async fn left_over(&self, target: &dyn Target, key: ItemKey, intent: Intent) -> LeftOver {
        let dropped = |message| LeftOver::Dropped { message, ticket: Ticket { recorded: true, keep: false } };
        // Intents from before the delivery kind was recorded: only an outbox put has no body.
        let recorded = intent
            .delivery
            .clone()
            .unwrap_or_else(|| if intent.action == "put" && intent.body.is_empty() { "outbox" } else { "http" }.into());
        if recorded != target.kind() {
            // Never send what was meant for another kind of target (an outbox intent has no
            // body): the settings hash of the changed target makes the run map the item anew.
            return dropped(format!(
                "an interrupted run left this delivery for {} when it was an {recorded} target; it now \
                 delivers by {}: the old delivery is dropped and the item is mapped and delivered again",
                intent.target,
                target.kind()
            ));
        }
        let action = match target.reconcile(&key, &intent).await {
            Reconcile::Drop(message) => return dropped(message),
            Reconcile::Resume(action) => action,
        };
        let run = intent.run_id.map_or("an earlier run".to_owned(), |id| format!("run {id}"));
        let message = format!(
            "reconciling a delivery that {run} left unfinished (output {})",
            &intent.output_hash[..12.min(intent.output_hash.len())]
        );
        let request = Request {
            key,
            target: intent.target.clone(),
            action,
            known_version: intent.known_version.clone(),
            delivered: None,
            refresh: false,
            provenance: Provenance::of_intent(&intent),
            resume: Some(Resume {
                idempotency: intent.idempotency_key,
                known_version: intent.known_version,
                probe: true,
            }),
        };
        LeftOver::Resume { request: Box::new(request), message }
    }
}

#[cfg(test)]
mod tests;
