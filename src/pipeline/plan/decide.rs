//! Pass 1 and the decisions: list and scan a source's entries for keys and hashes, compare them
//! with the ledger, and decide per (item, mapping) whether there is work — refusals and withdrawals
//! become plan steps here, the pairs with work go on to be mapped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;

use super::{Base, Change, Inputs, Step};
use crate::domain::{ItemKey, ItemStatus, Level, Stage};
use crate::mapping::Mapping;
use crate::mapping::references::Reference;
use crate::pipeline::{ANY_TARGET, Pair, PipelineError, Problem, scan_cache};
use crate::pipeline::{SourceFailure, SourceRun, Work};
use crate::source::{self, Entry, RecordError};
use crate::store::StoreError;
use crate::store::ledger::LedgerRow;
use crate::store::runs::Counted;

/// Per entry: its records, or why it yielded none.
pub(in crate::pipeline) type EntryScan = Result<Vec<Result<Scanned, RecordError>>, RecordError>;

/// What the scan learned about one record.
#[derive(Debug, Clone)]
pub(in crate::pipeline) struct Scanned {
    pub origin: String,
    pub key: ItemKey,
    pub hash: crate::domain::ContentHash,
    /// Mappings of the source that accept this record.
    pub mappings: Vec<Arc<Mapping>>,
    /// The form the record's online service uses, if the source links forms.
    pub form: Option<ItemKey>,
    /// The LeiKa key of the record's service (sources with `leika_key`).
    pub leika: Option<String>,
    /// Why each mapping of the source refuses the record, when none takes it.
    pub refusals: Option<String>,
    /// The codelists the record refers to.
    pub codelists: Vec<Reference>,
}

/// What the decisions leave to do for a source.
pub(in crate::pipeline) struct Decided {
    /// Entries with work, each with the (item, mapping) pairs to map, validate and deliver.
    pub work: Vec<(Entry, Vec<Pair>)>,
    /// Items gone upstream, as withdrawal steps.
    pub vanished: Vec<Step>,
    /// How many entries the source listed.
    pub listed: usize,
}

impl SourceRun {
    /// Lists and scans the source, records what needs no mapping (unchanged items, refusals) and
    /// returns the rest; `None` when the run was asked to stop meanwhile (what was decided is
    /// recorded). A source that cannot be listed is a [`SourceFailure::Source`].
    pub(in crate::pipeline) async fn decide(&mut self) -> Result<Option<Decided>, SourceFailure> {
        let config = self.deps.config.clone();
        let context = source::ListContext {
            root: &config.root,
            store: &self.deps.store,
            now: self.now(),
            record_cache: !self.dry_run,
            metrics: self.work.metrics.as_deref(),
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
                Err(error) => self.record_error(entry, &error),
                Ok(items) => {
                    readable_origins.insert(entry.origin.clone());
                    for item in items {
                        match item {
                            Err(error) => self.record_error(entry, &error),
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
                    let why = (ItemStatus::Failed, Stage::Map, format!("held back: {problem}"));
                    let hash = Some(record.hash.to_string());
                    self.record_step(super::refusal(&self.source.id, key, mapping, record.origin.clone(), hash, why));
                } else if unchanged && !self.force {
                    self.count(key.as_str(), target, Counted::Unchanged);
                    self.progress.advance();
                    self.settled.entry(key.clone()).or_insert(Ok(()));
                    let row = previous.expect("unchanged implies a row");
                    // The row also learns its service's LeiKa key (rows from before there was one).
                    let leika_news = record.leika.is_some() && row.leika_key != record.leika;
                    if (row.status != ItemStatus::Unchanged.as_str() || leika_news) && !self.dry_run {
                        self.push_unchanged(row, record.leika.clone());
                    }
                } else {
                    let file = record.origin.split('#').next().unwrap_or(&record.origin).to_owned();
                    work.entry(file).or_default().push((key.clone(), mapping.clone()));
                }
            }
        }
        self.flush().await?;
        if self.stop.is_stopped() {
            return Ok(None);
        }
        let work: Vec<_> =
            entries.into_iter().filter_map(|entry| work.remove(&entry.origin).map(|w| (entry, w))).collect();
        let wanted: BTreeSet<&str> = work.iter().map(|(entry, _): &(Entry, _)| entry.origin.as_str()).collect();
        self.work.kept.retain(|origin| wanted.contains(origin));
        Ok(Some(Decided { work, vanished, listed }))
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
    fn vanished(&mut self, seen: &BTreeMap<ItemKey, Vec<usize>>) -> Vec<Step> {
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
            .map(|row| Step {
                key: ItemKey::parse(&row.item_key).expect("stored keys are valid"),
                target: row.target.clone(),
                source_id: self.source.id.clone(),
                origin: row.origin.clone(),
                change: Change::Withdraw,
                // An item whose document never reached the target has nothing to take back there.
                base: Base {
                    version: row.target_version.clone(),
                    hash: row.output_hash.clone(),
                    refresh: row.target_version.is_none(),
                },
                warnings: Vec::new(),
                inputs: Inputs {
                    content_hash: row.content_hash.clone(),
                    mapping: row.mapping.clone(),
                    mapping_version: row.mapping_version.clone(),
                    settings_hash: None,
                    adoptions: row.adoptions.clone(),
                    leika_key: None,
                },
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

    /// A file (or feed record) that yielded no usable record: tracked under a placeholder key whose
    /// content hash is that of the entry's bytes (and the reason), so that an operator's skip holds
    /// until the file changes.
    fn record_error(&mut self, entry: &source::Entry, error: &RecordError) {
        self.unreadable.push(error.origin().to_owned());
        let key = source::placeholder_key(&self.source, error.origin());
        let stage = match error {
            RecordError::Read { .. } => Stage::Decode,
            RecordError::Key { .. } => Stage::Map,
        };
        if !self.items.is_empty() && !self.items.contains(&key) {
            return;
        }
        let bytes = entry.bytes(self.deps.config.max_record_bytes).unwrap_or_default();
        let hash = crate::domain::ContentHash::of_parts([&bytes[..], error.origin().as_bytes()]).to_string();
        let skipped = self
            .work
            .ledger
            .get(&(key.to_string(), ANY_TARGET.to_owned()))
            .is_some_and(|row| row.skip_reason.is_some() && row.skip_hash.as_deref() == Some(hash.as_str()));
        if skipped && !self.force {
            self.count(key.as_str(), ANY_TARGET, Counted::Unchanged);
            self.settled.entry(key.clone()).or_insert(Ok(()));
            return;
        }
        let problem = Problem {
            item_key: key.to_string(),
            target: ANY_TARGET.into(),
            status: ItemStatus::Quarantined,
            stage,
            message: error.to_string(),
        };
        let inputs = Inputs { content_hash: Some(hash), ..Inputs::default() };
        self.record_step(Step::refused(&key, &self.source.id, error.origin().into(), inputs, problem));
    }

    /// Refuses a record at every target its mappings deliver to (or at none, under [`ANY_TARGET`]).
    fn quarantine_all(&mut self, record: &Scanned, stage: Stage, message: String) {
        let targets: Vec<String> = if record.mappings.is_empty() {
            vec![ANY_TARGET.into()]
        } else {
            record.mappings.iter().map(|m| m.output.target.clone()).collect()
        };
        for target in targets {
            let problem = Problem {
                item_key: record.key.to_string(),
                target,
                status: ItemStatus::Quarantined,
                stage,
                message: format!("{}: {message}", record.origin),
            };
            let inputs = Inputs {
                content_hash: Some(record.hash.to_string()),
                leika_key: record.leika.clone(),
                ..Inputs::default()
            };
            self.record_step(Step::refused(&record.key, &self.source.id, record.origin.clone(), inputs, problem));
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
}

/// The ledger rows of items the source still carries (as far as the ledger knows).
fn live_rows(work: &Work) -> Vec<&LedgerRow> {
    work.ledger
        .values()
        .filter(|row| row.target != ANY_TARGET && row.status != ItemStatus::Withdrawn.as_str())
        .collect()
}
