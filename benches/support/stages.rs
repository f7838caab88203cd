//! Per-stage throughput through the library API, on one core, on the same bytes the pipeline reads:
//! raw quick-xml events (the ceiling), `codec::decode`, the scan of pass 1 (`source::read_entry`:
//! decode + key + hash), `Mapping::read`, `Mapping::apply` per mapping, `Validators::check` per document,
//! and the hand-written reference of `xdatenfelder2-to-xdf3` (`reference.rs`), whose bytes and
//! warnings must equal the jq mapping's on every record timed (a difference stops the benchmark).
//!
//! MB/s is always megabytes of *input* (the record's XML or JSON) per second, so rows compare.
//! Stages are timed item by item in one loop, so that the noise of a shared machine hits all of them
//! alike and their ratios stay meaningful; each repeat gives one total per stage, the median is kept.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portal_bridge::codec::{self, Format};
use portal_bridge::config::{Config, Source};
use portal_bridge::mapping::{Mapping, RecordContext};
use portal_bridge::source::{self, Entry, Inputs};
use portal_bridge::validate::Validators;

use super::reference::{self, Reference};

/// The mapping the hand-written reference implements.
pub const REFERENCE_MAPPING: &str = "xdatenfelder2-to-xdf3";
/// Row of `Mapping::read` (summed over every mapping of a record).
pub const READ: &str = "map: Mapping::read (tree → jaq value, shaped by the mapping's arrays)";
/// Row of the jq mapping from the decoded tree: its `Mapping::read` and `Mapping::apply`.
pub const JQ_FROM_TREE: &str = "map: xdatenfelder2-to-xdf3 + its Mapping::read (jq, decoded tree → bytes)";
/// Row of the hand-written reference (decoded tree → the same bytes and warnings).
pub const HAND_WRITTEN: &str = "map: xdatenfelder2-to-xdf3 hand-written reference (decoded tree → bytes)";

/// A source with its entries and their bytes, read before timing starts.
pub type SourceInputs = (Arc<Source>, Vec<(Entry, Bytes)>);

/// One measured stage: items and input bytes per pass, and the seconds of every repeat.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    pub name: String,
    pub items: u64,
    pub bytes: u64,
    pub secs: Vec<f64>,
}

impl Stage {
    pub fn median(&self) -> f64 {
        median(&self.secs)
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Everything a stage run needs, loaded once.
pub struct Loaded {
    pub config: Config,
    pub validators: Validators,
    pub reference: Reference,
}

pub fn load(config_file: &Path) -> Result<Loaded, String> {
    let overrides = portal_bridge::config::Overrides { database_url: None };
    let config = Config::resolve(config_file, &overrides).map_err(|e| e.to_string())?;
    let validators = Validators::load(&config.mappings)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
    Ok(Loaded { config, validators, reference: Reference::new() })
}

/// The files of a directory source, in listing order, with their bytes.
pub fn entries_of(source: &Source, root: &Path, limit: Option<usize>, stride: usize) -> Vec<(Entry, Bytes)> {
    let portal_bridge::config::SourceKind::Directory { path, include, .. } = &source.kind else {
        panic!("benchmarks read directory sources only")
    };
    let entries = source::directory::list(path, include, root, source.format).expect("the corpus lists");
    entries
        .into_iter()
        .step_by(stride.max(1))
        .take(limit.unwrap_or(usize::MAX))
        .map(|mut e| {
            let bytes = Bytes::from(std::fs::read(&e.path).expect("the corpus reads"));
            e.content = Some(bytes.clone());
            (e, bytes)
        })
        .collect()
}

/// Accumulates the time of named stages within one repeat.
#[derive(Default)]
struct Clock {
    totals: BTreeMap<String, (u64, u64, Duration)>,
}

impl Clock {
    fn time<T>(&mut self, name: &str, bytes: usize, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.add(name, bytes, start.elapsed());
        out
    }

    /// Adds a time measured elsewhere to a stage.
    fn add(&mut self, name: &str, bytes: usize, elapsed: Duration) {
        let e = self.totals.entry(name.to_owned()).or_default();
        e.0 += 1;
        e.1 += bytes as u64;
        e.2 += elapsed;
    }

    /// The time of the named stage so far.
    fn total(&self, name: &str) -> Duration {
        self.totals.get(name).map_or(Duration::ZERO, |e| e.2)
    }
}

/// Counts the events of a document with quick-xml's plain reader: no tree, no strings, no
/// namespace resolution. This is the ceiling for any XML stage on these bytes.
pub fn raw_events(bytes: &[u8]) -> usize {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut n = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => return n,
            Ok(_) => n += 1,
            Err(e) => panic!("corpus XML does not parse: {e}"),
        }
    }
}

/// The same with the namespace-resolving reader `codec::xml::decode` is built on.
pub fn ns_events(bytes: &[u8]) -> usize {
    let mut reader = quick_xml::NsReader::from_reader(bytes);
    let mut n = 0;
    loop {
        match reader.read_resolved_event() {
            Ok((_, quick_xml::events::Event::Eof)) => return n,
            Ok(_) => n += 1,
            Err(e) => panic!("corpus XML does not parse: {e}"),
        }
    }
}

/// Measures every stage over the given sources, `repeat` times.
/// `stride` takes every stride-th file of a source (a sample spread over a large corpus), `limit`
/// at most that many of them.
pub fn measure(
    loaded: &Loaded,
    source_ids: &[String],
    limit: Option<usize>,
    stride: usize,
    repeat: usize,
) -> Vec<Stage> {
    measure_inputs(loaded, &inputs_of(loaded, source_ids, limit, stride), repeat)
}

/// The entries of the given sources with their bytes (read before any timing).
pub fn inputs_of(loaded: &Loaded, source_ids: &[String], limit: Option<usize>, stride: usize) -> Vec<SourceInputs> {
    let config = &loaded.config;
    source_ids
        .iter()
        .map(|id| config.source(id).unwrap_or_else(|| panic!("no source {id}")).clone())
        .map(|s| {
            let entries = entries_of(&s, &config.root, limit, stride);
            (s, entries)
        })
        .collect()
}

/// Measures every stage over the given entries, `repeat` times.
pub fn measure_inputs(loaded: &Loaded, inputs: &[SourceInputs], repeat: usize) -> Vec<Stage> {
    let mut runs: Vec<BTreeMap<String, (u64, u64, Duration)>> = Vec::new();
    for _ in 0..repeat.max(1) {
        let mut clock = Clock::default();
        for (source, entries) in inputs {
            let context_source = source.context();
            for (entry, bytes) in entries {
                measure_entry(&mut clock, loaded, source, &context_source, entry, bytes);
            }
        }
        runs.push(clock.totals);
    }
    let names: Vec<String> = runs[0].keys().cloned().collect();
    names
        .into_iter()
        .map(|name| {
            let (items, bytes, _) = runs[0][&name];
            Stage { secs: runs.iter().map(|r| r[&name].2.as_secs_f64()).collect(), name, items, bytes }
        })
        .collect()
}

fn measure_entry(
    clock: &mut Clock,
    loaded: &Loaded,
    source: &Arc<Source>,
    context_source: &serde_json::Value,
    entry: &Entry,
    bytes: &Bytes,
) {
    let config = &loaded.config;
    let format = entry.format.expect("corpus files have a format");
    let len = bytes.len();
    if format == Format::Xml {
        std::hint::black_box(clock.time("parse: quick-xml Reader events", len, || raw_events(bytes)));
        std::hint::black_box(clock.time("parse: quick-xml NsReader events", len, || ns_events(bytes)));
    } else {
        std::hint::black_box(clock.time("parse: serde_json IgnoredAny", len, || {
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes).expect("corpus JSON parses")
        }));
    }
    let decoded = clock
        .time("decode: codec::decode", len, || codec::decode(format, bytes, &[], config.limits))
        .expect("corpus decodes");
    std::hint::black_box(&decoded);
    drop(decoded);
    let records = clock
        .time("scan: source::read_entry (decode+key+hash)", len, || {
            source::read_entry(source, entry, &Inputs::default(), config.limits, config.max_record_bytes)
        })
        .expect("corpus entries read");
    // Input bytes per record: a feed's bytes are shared out evenly.
    let per_record = len / records.len().max(1);
    for record in records {
        let record = record.expect("corpus records have keys");
        let context = RecordContext {
            source: context_source.clone(),
            item: serde_json::json!({
                "key": record.key.as_str(),
                "id": record.key.external_id(),
                "origin": record.origin,
                "content_hash": record.hash.as_str(),
                "adoptions": [],
                "form": record.form.as_ref().map(|f| f.as_str()),
            }),
        };
        for mapping in source.mappings.iter().filter(|m: &&Arc<Mapping>| m.accepts(record.format, &record.decoded)) {
            let apply = format!("map: {}", mapping.name);
            let before = clock.total(READ) + clock.total(&apply);
            let tree = clock
                .time(READ, per_record, || mapping.read(record.format, &record.decoded))
                .unwrap_or_else(|e| panic!("{}: {e}", record.origin));
            let document = clock
                .time(&apply, per_record, || mapping.apply(&tree, &context, &config.codelists_val, config.budget))
                .unwrap_or_else(|e| panic!("{}: {e}", record.origin));
            if mapping.name == REFERENCE_MAPPING {
                let jq = clock.total(READ) + clock.total(&apply) - before;
                clock.add(JQ_FROM_TREE, per_record, jq);
                let hand = clock.time(HAND_WRITTEN, per_record, || {
                    loaded.reference.convert(&record.decoded.tree, &config.codelists.table, context_source)
                });
                if let Err(difference) = compare(&document.bytes, &document.warnings, hand) {
                    eprintln!(
                        "bridge-bench: the hand-written reference of {REFERENCE_MAPPING} differs from the jq mapping on {}: {difference}",
                        entry.path.display()
                    );
                    std::process::exit(3);
                }
            }
            let schema = mapping.output.schema.as_deref();
            let kind = match document.format {
                Format::Json => "JSON Schema",
                Format::Xml => "XSD",
            };
            clock
                .time(&format!("validate: {} ({kind})", mapping.name), per_record, || {
                    loaded.validators.check(schema, &document)
                })
                .unwrap_or_else(|e| panic!("{}: {e}", record.origin));
        }
    }
}

/// Whether the reference's result is the jq mapping's document: the same bytes and warnings.
/// Otherwise the first differing line (or warning).
pub fn compare(bytes: &[u8], warnings: &[String], hand: Result<reference::Output, String>) -> Result<(), String> {
    let hand = hand.map_err(|e| format!("the jq mapping maps it, the reference fails: {e}"))?;
    if hand.bytes != bytes {
        let jq = String::from_utf8_lossy(bytes);
        let own = String::from_utf8_lossy(&hand.bytes);
        let (mut jq_lines, mut own_lines) = (jq.lines(), own.lines());
        for line in 1.. {
            match (jq_lines.next(), own_lines.next()) {
                (Some(a), Some(b)) if a == b => continue,
                (None, None) => return Err("the documents differ only in line ends".into()),
                (a, b) => {
                    return Err(format!(
                        "first differing line {line}:\n  jq:        {}\n  reference: {}",
                        a.unwrap_or("(end of document)"),
                        b.unwrap_or("(end of document)")
                    ));
                }
            }
        }
    }
    if hand.warnings != warnings {
        let at = warnings
            .iter()
            .zip(&hand.warnings)
            .position(|(a, b)| a != b)
            .unwrap_or(warnings.len().min(hand.warnings.len()));
        return Err(format!(
            "the documents are equal, the warnings differ at warning {}:\n  jq:        {}\n  reference: {}",
            at + 1,
            warnings.get(at).map_or("(none)", String::as_str),
            hand.warnings.get(at).map_or("(none)", String::as_str)
        ));
    }
    Ok(())
}
