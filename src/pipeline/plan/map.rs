//! Pass 2's planning half: read an entry again, map and validate the pairs decided for it, and
//! make one plan step per pair (a document to create or update, nothing to send, or a refusal).

use std::collections::HashMap;

use super::{Base, Change, Document, Inputs, Step, refusal};
use crate::domain::{ItemKey, ItemStatus, Stage};
use crate::pipeline::Pair;
use crate::pipeline::Work;
use crate::source::{self, Entry, Record, RecordError};

/// Reads one entry into records, decoded without forced arrays: keys, hashes and the scan see that
/// tree, and each mapping shapes it by its own `arrays` when it reads the record
/// ([`crate::mapping::Mapping::read`]).
pub(in crate::pipeline) fn read_records(
    work: &Work,
    entry: &Entry,
) -> Result<Vec<Result<Record, RecordError>>, RecordError> {
    let config = &work.deps.config;
    source::read_entry(&work.source, entry, &work.inputs, config.limits, config.max_record_bytes)
}

/// The plan's steps for one entry: decoded again, the requested pairs mapped and validated.
pub(in crate::pipeline) fn map_entry(work: &Work, entry: &Entry, pairs: &[Pair]) -> Vec<Step> {
    let deps = &work.deps;
    let mut steps = map_pairs(work, entry, pairs);
    // Lenient reading: deviations from a configured input XSD are warnings on every step.
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
    for step in &mut steps {
        let schema = step.inputs.mapping.as_deref().and_then(|m| pairs.iter().find(|(_, p)| p.name == m));
        let schema = schema.and_then(|(_, mapping)| mapping.input_schema.as_deref());
        if let Some(Some(deviation)) = schema.and_then(|s| deviations.get(s)) {
            step.warnings.insert(0, format!("{}: {deviation}", entry.origin));
        }
    }
    steps
}

fn map_pairs(work: &Work, entry: &Entry, pairs: &[Pair]) -> Vec<Step> {
    let Work { deps, source, ledger, force, .. } = work;
    let config = &deps.config;
    // Pass 1's records when it kept them, else the entry read and decoded again.
    let kept = work.kept.take(&entry.origin).map(|records| records.into_iter().map(Ok).collect());
    let records = match kept.map_or_else(|| read_records(work, entry), Ok) {
        Ok(records) => records,
        // The file changed or vanished since the scan; report it against every pair.
        Err(error) => {
            return pairs
                .iter()
                .map(|(key, mapping)| {
                    let why = (ItemStatus::Failed, Stage::Decode, error.to_string());
                    refusal(&source.id, key, mapping, entry.origin.clone(), None, why)
                })
                .collect();
        }
    };
    let records: HashMap<ItemKey, Record> =
        records.into_iter().filter_map(Result::ok).map(|r| (r.key.clone(), r)).collect();
    let mut steps = Vec::with_capacity(pairs.len());
    for (key, mapping) in pairs {
        let Some(record) = records.get(key) else {
            let message =
                format!("{}: the record changed while the run was reading it; it is retried next run", entry.origin);
            steps.push(refusal(
                &source.id,
                key,
                mapping,
                entry.origin.clone(),
                None,
                (ItemStatus::Failed, Stage::Decode, message),
            ));
            continue;
        };
        let context = record.context(source);
        let hash = Some(record.hash.to_string());
        let fail = |status, stage, message: String| {
            let why = (status, stage, format!("{}: {message}", record.origin));
            let mut step = refusal(&source.id, key, mapping, record.origin.clone(), hash.clone(), why);
            // A service that does not map is still one its source has.
            step.inputs.leika_key = record.leika.clone();
            step
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
                steps.push(fail(ItemStatus::Quarantined, Stage::Map, e.to_string()));
                continue;
            }
        };
        let validation_started = std::time::Instant::now();
        let validated = deps.validators.check(mapping.output.schema.as_deref(), &document);
        work.observe(Stage::Validate, validation_started);
        if let Err(e) = validated {
            steps.push(fail(ItemStatus::Quarantined, Stage::Validate, e));
            continue;
        }
        let output_hash = document.hash.to_string();
        let target = &mapping.output.target;
        let previous = ledger.get(&(key.to_string(), target.clone()));
        let base = Base {
            version: previous.and_then(|row| row.target_version.clone()),
            hash: previous.and_then(|row| row.output_hash.clone()),
            refresh: *force,
        };
        // Unless forced, a document equal to what the target holds is not sent again.
        let target_holds_it = !*force
            && previous
                .is_some_and(|row| row.output_hash.as_deref() == Some(output_hash.as_str()) && work.target_holds(row));
        let change = if target_holds_it {
            Change::Nothing { output_hash }
        } else {
            let document = Document { format: document.format, hash: output_hash, body: document.bytes.into() };
            match base.hash {
                Some(_) => Change::Update { document },
                None => Change::Create { document },
            }
        };
        steps.push(Step {
            key: key.clone(),
            target: target.clone(),
            source_id: source.id.clone(),
            origin: record.origin.clone(),
            change,
            base,
            warnings: document.warnings,
            inputs: Inputs {
                content_hash: hash.clone(),
                mapping: Some(mapping.name.clone()),
                mapping_version: Some(mapping.version.to_string()),
                settings_hash: work.settings.get(target).cloned(),
                adoptions: source.leika_key.as_ref().map(|_| adoption_list(&record.adoptions)),
                leika_key: record.leika.clone(),
            },
        });
    }
    steps
}

/// Adoptions as stored in the ledger: the ARS keys, comma-separated, in order.
fn adoption_list(adoptions: &[crate::store::adoptions::Adoption]) -> String {
    adoptions.iter().map(|a| a.ars.as_str()).collect::<Vec<_>>().join(",")
}
