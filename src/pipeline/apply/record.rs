//! Recording: what applying a step came to becomes the item's ledger row, events in the migration
//! log and the documents kept for the diff, written in batches with the settling of its intent.

use std::collections::BTreeSet;

use super::{Applied, Done};
use crate::domain::{ItemStatus, Level, Stage};
use crate::metrics::Outcome;
use crate::pipeline::{SourceRun, Warned};
use crate::store::documents::NewDocument;
use crate::store::ledger::LedgerRow;
use crate::store::runs::Counted;

impl SourceRun {
    /// Records what applying a step came to: the ledger row, the log's events, the documents kept
    /// for the diff, the intent settled; and counts it.
    pub(super) fn record(&mut self, applied: Applied) {
        let Applied { step, resume, ticket, result } = applied;
        self.progress.advance();
        let now = self.now();
        let work = self.work.clone();
        let ledger = &work.ledger;
        match &result {
            // A withdrawn form is no form to link to.
            Ok(Done::Withdrawn { .. }) => {
                self.settled.insert(step.key.clone(), Err("withdrawn (gone upstream)".into()));
            }
            Ok(_) => {
                self.settled.entry(step.key.clone()).or_insert(Ok(()));
            }
            Err(problem) => {
                let why = format!("{} at {}: {}", problem.status, problem.target, problem.message);
                self.settled.insert(step.key.clone(), Err(why));
            }
        }
        let previous = ledger.get(&(step.key.to_string(), step.target.clone()));
        let mut row = previous.cloned().unwrap_or_else(|| LedgerRow {
            item_key: step.key.to_string(),
            target: step.target.clone(),
            source_id: self.source.id.clone(),
            origin: step.origin.clone(),
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
            status_since: None,
            leika_key: None,
            revision: 0,
        });
        row.origin = step.origin.clone();
        row.content_hash = step.inputs.content_hash.clone();
        row.mapping = step.inputs.mapping.clone().or(row.mapping);
        row.updated_at = now.clone();
        row.last_run_id = self.run_id;
        if step.inputs.leika_key.is_some() {
            row.leika_key = step.inputs.leika_key.clone();
        }
        let (key, target) = (&step.key, step.target.as_str());
        if let (Ok(_), Some(now_adopted)) = (&result, &step.inputs.adoptions) {
            for change in adoption_changes(previous.and_then(|p| p.adoptions.as_deref()), now_adopted) {
                self.event(Some(key), Some(target), Stage::Map, Level::Info, change);
            }
            row.adoptions = Some(now_adopted.clone());
        }
        for warning in &step.warnings {
            self.event(Some(key), Some(target), Stage::Map, Level::Warn, warning.clone());
        }
        // A document that goes through with warnings is listed and counted as such.
        if matches!(result, Ok(Done::Delivered { .. } | Done::Same { .. })) && !step.warnings.is_empty() {
            self.counts.warned += 1;
            self.warned.push(Warned {
                item_key: key.to_string(),
                target: target.to_owned(),
                warnings: step.warnings.clone(),
            });
            if let Some(metrics) = &self.work.metrics {
                metrics.count_document(&self.source.id, target, Outcome::Warning);
            }
        }
        ticket.settle(key.as_str(), target, &mut self.batch);
        // What the item was mapped with, unless the outcome is an earlier run's delivery that this
        // run only finished (reconciled): that one was mapped with settings this run does not know.
        let probed = resume.as_ref().is_some_and(|resume| resume.probe);
        if matches!(result, Ok(Done::Delivered { .. } | Done::Same { .. })) && !probed {
            row.settings_hash = step.inputs.settings_hash.clone();
        }
        match result {
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
                row.mapping_version = step.inputs.mapping_version;
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
                row.mapping_version = step.inputs.mapping_version;
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
                tracing::warn!(item = %key, source = key.source(), delivery_target = target, stage = %problem.stage, "{}", problem.message);
                row.mapping_version = step.inputs.mapping_version.or(row.mapping_version);
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
