//! Reconciling: before a run does new work for a source, the deliveries an interrupted run left
//! as intents are finished through the delivery journal — the target is probed first, and only
//! what it does not hold is sent again, with the same idempotency key.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::plan::{Base, Change, Document, Inputs, Step};
use super::{Deps, Job, PipelineError, Problem, SourceRun, hold};
use crate::delivery::{Action, LeftOver, Request};
use crate::domain::{ItemKey, Level, Stage};
use crate::store::StoreError;
use crate::store::intents::Intent;
use crate::store::lease::Fence;
use crate::store::runs::{Counted, Counts};

/// What reconciling one source's unfinished deliveries counted: the source's run goes on from it,
/// so that a reconciled pair counts once in the run.
pub(super) struct Seed {
    pub counts: Counts,
    pub reconciled: HashMap<(String, String), Counted>,
    pub problems: Vec<Problem>,
    pub settled: HashMap<ItemKey, Result<(), String>>,
}

/// Reconciles every intent an interrupted run left for the run's sources, source by source,
/// before new work starts. Intents of other sources are left to whoever runs those (another
/// run may be delivering them right now: it holds their lease).
pub(super) async fn reconcile(
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

impl SourceRun {
    /// Goes on from what reconciling the source counted earlier in this run.
    pub(super) fn seed(&mut self, seed: Seed) {
        self.counts.add(seed.counts);
        self.reconciled.extend(seed.reconciled);
        self.problems.extend(seed.problems);
        self.settled.extend(seed.settled);
    }

    /// Finishes deliveries that an interrupted run left as intents; intents the journal drops are
    /// settled with the next ledger write (the scan maps those items anew).
    async fn reconcile(&mut self, intents: Vec<Intent>) -> Result<(), StoreError> {
        let mut steps = Vec::new();
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
                    let resume = request.resume.clone();
                    steps.push((left_over_step(*request), resume));
                }
            }
        }
        self.apply_all(steps).await
    }
}

/// The step a left-over delivery finishes: what its intent recorded, not mapped again.
fn left_over_step(request: Request) -> Step {
    let Request { key, target, action, known_version, delivered, provenance, .. } = request;
    let change = match action {
        Action::Put { body, format, output_hash } => {
            let document = Document { format, hash: output_hash, body };
            if known_version.is_some() { Change::Update { document } } else { Change::Create { document } }
        }
        Action::Delete => Change::Withdraw,
    };
    Step {
        key,
        target,
        source_id: provenance.source_id,
        origin: provenance.origin,
        change,
        base: Base { version: known_version, hash: delivered, refresh: false },
        warnings: Vec::new(),
        inputs: Inputs {
            content_hash: provenance.content_hash,
            mapping: provenance.mapping,
            mapping_version: provenance.mapping_version,
            settings_hash: None,
            adoptions: provenance.adoptions,
            leika_key: None,
        },
    }
}
