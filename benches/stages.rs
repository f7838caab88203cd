//! Criterion benchmarks of the per-item stages on three generated forms (small, typical, large)
//! and one service record: raw quick-xml parse, `codec::decode`, the scan of pass 1, `Mapping::read` (the tree as a mapping reads it),
//! `Mapping::apply` per mapping and `Validators::check` per document. Throughput is in bytes of the
//! input record, so criterion's MB/s of every stage compare with the raw parse.
//!
//! `cargo bench --bench stages`; the whole-corpus and whole-run numbers come from `benches/run.sh`.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group};
use portal_bridge::codec::{self, Format};
use portal_bridge::mapping::RecordContext;
use portal_bridge::source::{self, Inputs};
use support::{corpus, stages};

/// The allocator of the `portal-bridge` binary (src/main.rs), counting for the mapping budget, so
/// that the timings are those of the product.
#[global_allocator]
static GLOBAL: portal_bridge::alloc::Counting<mimalloc::MiMalloc> = portal_bridge::alloc::Counting(mimalloc::MiMalloc);

/// Generates a tiny corpus whose first forms cover the three size classes.
fn setup() -> (PathBuf, stages::Loaded) {
    let dir = std::env::temp_dir().join(format!("portal-bridge-criterion-{}", std::process::id()));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spec = corpus::Spec { forms_per_region: 60, services_per_region: 2, seed: 20_251_127 };
    corpus::generate(spec, &dir, &repo.join("demo/codelists")).expect("corpus");
    let config = dir.join("bridge.toml");
    let text = corpus::config(
        &dir,
        &repo.join("mappings"),
        &dir.join("bridge.db"),
        &corpus::Delivery::Outbox(&dir.join("out")),
    );
    std::fs::write(&config, text).expect("config");
    let loaded = stages::load(&config).expect("config loads");
    (dir, loaded)
}

fn benches(c: &mut Criterion) {
    let (dir, loaded) = setup();
    let config = &loaded.config;
    let forms_source = config.source("aachen-forms").expect("source").clone();
    let mut entries = stages::entries_of(&forms_source, &config.root, None, 1);
    entries.sort_by_key(|(_, bytes)| bytes.len());
    // Smallest, median and largest of 60 generated forms.
    let picks = [("small", 0), ("typical", entries.len() / 2), ("large", entries.len() - 1)];
    for (label, index) in picks {
        let (entry, bytes) = &entries[index];
        let kb = bytes.len() / 1024;
        let mut group = c.benchmark_group(format!("form-{label}-{kb}KB"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.sample_size(if bytes.len() > 150_000 { 10 } else { 30 });
        group.bench_function("parse: quick-xml Reader events", |b| b.iter(|| stages::raw_events(black_box(bytes))));
        group.bench_function("decode: codec::decode", |b| {
            b.iter(|| codec::decode(Format::Xml, black_box(bytes), &[], config.limits).expect("decodes"))
        });
        group.bench_function("scan: source::read_entry", |b| {
            b.iter(|| {
                source::read_entry(&forms_source, entry, &Inputs::default(), config.limits, u64::MAX).expect("reads")
            })
        });
        let record = source::read_entry(&forms_source, entry, &Inputs::default(), config.limits, u64::MAX)
            .expect("reads")
            .remove(0)
            .expect("a record");
        let context = RecordContext {
            source: forms_source.context(),
            item: serde_json::json!({"key": record.key.as_str(), "id": record.key.external_id(),
                "origin": record.origin, "content_hash": record.hash.as_str(), "adoptions": [], "form": null}),
        };
        for mapping in &forms_source.mappings {
            group.bench_function(format!("map: {} Mapping::read", mapping.name), |b| {
                b.iter(|| mapping.read(record.format, black_box(&record.decoded)).expect("reads"))
            });
            let tree = mapping.read(record.format, &record.decoded).expect("reads");
            group.bench_function(format!("map: {}", mapping.name), |b| {
                b.iter(|| {
                    mapping.apply(black_box(&tree), &context, &config.codelists_val, config.budget).expect("maps")
                })
            });
            let document = mapping.apply(&tree, &context, &config.codelists_val, config.budget).expect("maps");
            let schema = mapping.output.schema.as_deref();
            group.bench_function(format!("validate: {}", mapping.name), |b| {
                b.iter(|| loaded.validators.check(schema, black_box(&document)).expect("valid"))
            });
        }
        group.finish();
    }
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(stage_benches, benches);

/// The benches run on a thread with the stack size of the binary's runtime threads (src/main.rs),
/// so that mapping runs start in place as they do in the product.
fn main() {
    std::thread::Builder::new()
        .stack_size(portal_bridge::mapping::budget::STACK_BYTES)
        .spawn(|| {
            stage_benches();
            criterion::Criterion::default().configure_from_args().final_summary();
        })
        .expect("the bench thread starts")
        .join()
        .expect("the benches ran");
}
