//! The benchmark tool behind `benches/run.sh` (a bench target without libtest's harness):
//!
//! ```text
//! cargo bench --bench bridge -- gen --out DIR --forms-per-region N --services-per-region N [--seed S]
//! cargo bench --bench bridge -- config --corpus DIR --db FILE (--outbox DIR | --http URL --token-file F) --out FILE
//! cargo bench --bench bridge -- change --corpus DIR --percent 1 --round K
//! cargo bench --bench bridge -- stages --config FILE --n N [--repeat R] [--limit L] >> results.jsonl
//! cargo bench --bench bridge -- real --n N [--repeat R] >> results.jsonl
//! cargo bench --bench bridge -- reference-check [FILE…]
//! cargo bench --bench bridge -- profile-xdf3 FILE [--repeat R]
//! cargo bench --bench bridge -- report --results results.jsonl
//! ```
//!
//! `real` measures the same stages on the real XDatenfelder 2.0 exports of `../shared/fim` (each
//! form alone, then all of them) and on the demo forms. Every stage run of `xdatenfelder2-to-xdf3`
//! also runs the hand-written reference (`support/reference.rs`) and stops the benchmark if its
//! bytes or warnings differ from the jq mapping's; `reference-check` compares the two on any files
//! (default: every XDatenfelder 2.0 input the project has), errors included, without timing.
//!
//! Plain `cargo bench` runs it without a subcommand: a quick smoke run of the stage measurements on
//! a small generated corpus (100 forms, 100 services), and on the real exports if they are there.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use support::{corpus, real, stages};

/// The allocator of the `portal-bridge` binary (src/main.rs), so that the stage timings are those of
/// the product.
#[global_allocator]
static GLOBAL: portal_bridge::alloc::Counting<mimalloc::MiMalloc> = portal_bridge::alloc::Counting(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(name = "bridge-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a corpus (forms, service feeds, codelists) and an outbox config `bridge.toml` in it.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        forms_per_region: usize,
        #[arg(long)]
        services_per_region: usize,
        #[arg(long, default_value_t = 20_251_127)]
        seed: u64,
    },
    /// Writes a bridge config for a corpus.
    Config {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        db: PathBuf,
        #[arg(long, conflicts_with = "http")]
        outbox: Option<PathBuf>,
        #[arg(long, requires = "token_file")]
        http: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Changes a share of the forms (a re-export: new nachrichtID, changed name).
    Change {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long, default_value_t = 1.0)]
        percent: f64,
        #[arg(long, default_value_t = 0)]
        round: u32,
    },
    /// Measures the stages on one core and prints one JSON line per stage.
    Stages {
        #[arg(long)]
        config: PathBuf,
        /// The N of the table row (forms in the corpus).
        #[arg(long)]
        n: u64,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Only the first L files of each source.
        #[arg(long)]
        limit: Option<usize>,
        /// Every K-th file of each source (a sample spread over the corpus).
        #[arg(long, default_value_t = 1)]
        stride: usize,
        /// `forms`, `services` or `all`.
        #[arg(long, default_value = "all")]
        sources: String,
    },
    /// Measures the stages on one core on the real XDatenfelder 2.0 exports of ../shared/fim (each
    /// alone and all together) and on the demo forms; one JSON line per stage and group.
    Real {
        /// The N of the table column these rows go into.
        #[arg(long)]
        n: u64,
        #[arg(long, default_value_t = 7)]
        repeat: usize,
    },
    /// Compares the hand-written reference of xdatenfelder2-to-xdf3 with the jq mapping on files
    /// (default: the real and handmade exports, the demo forms, the mapping fixtures, the bad inputs).
    ReferenceCheck { files: Vec<PathBuf> },
    /// Times the parts of xdatenfelder2-to-xdf3 (its definitions as main terms of their own) on one
    /// XDatenfelder 2.0 file, beside the whole program and the hand-written reference.
    ProfileXdf3 {
        file: PathBuf,
        #[arg(long, default_value_t = 9)]
        repeat: usize,
    },
    /// Prints the table of a results file (JSON lines from `stages` and from run.sh).
    Report {
        #[arg(long)]
        results: PathBuf,
    },
}

fn main() {
    // `cargo bench` appends `--bench` to the arguments of every bench target.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        None => smoke(),
        Some(Command::Gen { out, forms_per_region, services_per_region, seed }) => {
            gen_corpus(&out, corpus::Spec { forms_per_region, services_per_region, seed })
        }
        Some(Command::Config { corpus: dir, db, outbox, http, token_file, concurrency, out }) => {
            let delivery = match (&outbox, &http, &token_file) {
                (Some(dir), _, _) => corpus::Delivery::Outbox(dir),
                (None, Some(url), Some(token_file)) => corpus::Delivery::Http { url, token_file, concurrency },
                _ => {
                    eprintln!("config needs --outbox DIR or --http URL --token-file FILE");
                    std::process::exit(2);
                }
            };
            let dir = absolute(&dir);
            std::fs::write(&out, corpus::config(&dir, &mappings_dir(), &absolute(&db), &delivery))
                .map_err(|e| e.to_string())
        }
        Some(Command::Change { corpus: dir, percent, round }) => corpus::change_forms(&dir, percent, round)
            .map(|n| println!("{{\"changed\": {n}}}"))
            .map_err(|e| e.to_string()),
        Some(Command::Stages { config, n, repeat, limit, stride, sources }) => {
            run_stages(&config, n, repeat, limit, stride, &sources)
        }
        Some(Command::Real { n, repeat }) => run_real(n, repeat, &mut std::io::stdout()),
        Some(Command::ReferenceCheck { files }) => reference_check(files),
        Some(Command::ProfileXdf3 { file, repeat }) => profile_xdf3(&file, repeat),
        Some(Command::Report { results }) => report(&results),
    };
    if let Err(e) = result {
        eprintln!("bridge-bench: {e}");
        std::process::exit(1);
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mappings_dir() -> PathBuf {
    repo().join("mappings")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).expect("the current directory exists")
}

fn gen_corpus(out: &Path, spec: corpus::Spec) -> Result<(), String> {
    let out = absolute(out);
    let summary = corpus::generate(spec, &out, &repo().join("demo/codelists")).map_err(|e| e.to_string())?;
    let config = corpus::config(
        &out,
        &mappings_dir(),
        &out.join("var/bridge.db"),
        &corpus::Delivery::Outbox(&out.join("var/outbox")),
    );
    std::fs::create_dir_all(out.join("var")).map_err(|e| e.to_string())?;
    std::fs::write(out.join("bridge.toml"), config).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::json!({
            "forms": summary.forms,
            "form_bytes": summary.form_bytes,
            "mean_form_bytes": summary.form_bytes / summary.forms.max(1) as u64,
            "smallest_form": summary.smallest_form,
            "largest_form": summary.largest_form,
            "services": summary.services,
            "service_bytes": summary.service_bytes,
            "seed": spec.seed,
        })
    );
    Ok(())
}

fn run_stages(
    config: &Path,
    n: u64,
    repeat: usize,
    limit: Option<usize>,
    stride: usize,
    which: &str,
) -> Result<(), String> {
    let loaded = stages::load(config)?;
    let mut ids = Vec::new();
    if which == "forms" || which == "all" {
        ids.push(("forms", corpus::form_sources()));
    }
    if which == "services" || which == "all" {
        ids.push(("services", corpus::service_sources()));
    }
    for (group, sources) in ids {
        for stage in stages::measure(&loaded, &sources, limit, stride, repeat) {
            println!(
                "{}",
                serde_json::json!({
                    "kind": "stage", "n": n, "group": group, "name": stage.name,
                    "items": stage.items, "bytes": stage.bytes, "secs": stage.median(), "secs_all": stage.secs,
                })
            );
        }
    }
    Ok(())
}

/// The stage lines of the real exports: each export alone (group `real: <file>`), all of them
/// (`real: all N exports`), and the demo forms (`demo: N forms`). Nothing if ../shared/fim is absent.
fn run_real(n: u64, repeat: usize, out: &mut impl std::io::Write) -> Result<(), String> {
    let Some(fim) = real::shared_fim(&repo()) else {
        eprintln!("bridge-bench: ../shared/fim is not there; no rows for the real exports");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("portal-bridge-bench-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = real::setup(&dir, &repo(), &fim)?;
    let loaded = stages::load(&config)?;
    let all = stages::inputs_of(&loaded, &real::real_sources(), None, 1);
    let count: usize = all.iter().map(|(_, entries)| entries.len()).sum();
    let mut groups: Vec<(String, Vec<stages::SourceInputs>)> = Vec::new();
    for (source, entries) in &all {
        for entry in entries {
            let name = entry.0.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            groups.push((format!("real: {name}"), vec![(source.clone(), vec![entry.clone()])]));
        }
    }
    groups.push((format!("real: all {count} exports"), all));
    let demo = stages::inputs_of(&loaded, &real::demo_sources(&repo()), None, 1);
    let demo_count: usize = demo.iter().map(|(_, entries)| entries.len()).sum();
    groups.push((format!("demo: {demo_count} forms"), demo));
    for (group, inputs) in &groups {
        for stage in stages::measure_inputs(&loaded, inputs, repeat) {
            let line = serde_json::json!({
                "kind": "stage", "n": n, "group": group, "name": stage.name,
                "items": stage.items, "bytes": stage.bytes, "secs": stage.median(), "secs_all": stage.secs,
            });
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Maps each file with the jq mapping and with the hand-written reference and compares the
/// results: equal bytes and warnings, or both refuse the record. Files the mapping does not take
/// are counted and skipped.
fn reference_check(mut files: Vec<PathBuf>) -> Result<(), String> {
    let repo = repo();
    let fim = real::shared_fim(&repo);
    if files.is_empty() {
        let mut dirs = vec![repo.join("mappings/tests/xdatenfelder2-to-xdf3"), repo.join("tests/bad-input/forms")];
        dirs.extend(
            std::fs::read_dir(repo.join("demo")).into_iter().flatten().flatten().map(|e| e.path().join("forms")),
        );
        if let Some(fim) = &fim {
            for d in ["samples/xdatenfelder-2", "samples/xdatenfelder-2/more", "samples/xdatenfelder-2/handmade"] {
                dirs.push(fim.join(d));
            }
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "xml"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    let dir = std::env::temp_dir().join(format!("portal-bridge-bench-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = match &fim {
        Some(fim) => real::setup(&dir, &repo, fim)?,
        None => {
            let spec = corpus::Spec { forms_per_region: 1, services_per_region: 1, seed: 1 };
            corpus::generate(spec, &dir, &repo.join("demo/codelists")).map_err(|e| e.to_string())?;
            let text = corpus::config(&dir, &mappings_dir(), &dir.join("bridge.db"), &corpus::Delivery::Outbox(&dir));
            std::fs::write(dir.join("bridge.toml"), text).map_err(|e| e.to_string())?;
            dir.join("bridge.toml")
        }
    };
    let loaded = stages::load(&config)?;
    let config = &loaded.config;
    let mapping = config
        .mappings
        .iter()
        .find(|m| m.name == stages::REFERENCE_MAPPING)
        .ok_or("the mapping xdatenfelder2-to-xdf3 is not loaded")?;
    let source = serde_json::json!({"id": "check", "region": "check", "on_missing_codelist": "warn", "params": {}});
    let context = portal_bridge::mapping::RecordContext {
        source: source.clone(),
        item: serde_json::json!({"key": "k", "id": "k", "origin": "o", "content_hash": "h", "adoptions": [], "form": null}),
    };
    let (mut same, mut both_refuse, mut skipped, mut differ) = (0, 0, 0, 0);
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let Ok(decoded) = portal_bridge::codec::decode(portal_bridge::codec::Format::Xml, &bytes, &[], config.limits)
        else {
            skipped += 1;
            continue;
        };
        if !mapping.accepts(portal_bridge::codec::Format::Xml, &decoded) {
            skipped += 1;
            continue;
        }
        let jq = mapping
            .read(portal_bridge::codec::Format::Xml, &decoded)
            .and_then(|tree| mapping.apply(&tree, &context, &config.codelists_val, config.budget));
        let hand = loaded.reference.convert(&decoded.tree, &config.codelists.table, &source);
        let verdict = match (&jq, hand) {
            (Err(_), Err(_)) => {
                both_refuse += 1;
                continue;
            }
            (Err(e), Ok(_)) => Err(format!("the jq mapping refuses it ({e}), the reference maps it")),
            (Ok(document), hand) => stages::compare(&document.bytes, &document.warnings, hand),
        };
        match verdict {
            Ok(()) => same += 1,
            Err(difference) => {
                differ += 1;
                println!("DIFFERS {}: {difference}", file.display());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} files: {same} the same document and warnings, {both_refuse} refused by both, {skipped} not taken by the mapping, {differ} differ",
        files.len()
    );
    if differ > 0 { Err(format!("{differ} files differ")) } else { Ok(()) }
}

/// See [`support::profile`]; the codelists are those of the real exports (or the corpus's).
fn profile_xdf3(file: &Path, repeat: usize) -> Result<(), String> {
    let repo = repo();
    let fim = real::shared_fim(&repo).ok_or("../shared/fim is not there")?;
    let dir = std::env::temp_dir().join(format!("portal-bridge-bench-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = real::setup(&dir, &repo, &fim)?;
    let loaded = stages::load(&config)?;
    let result = support::profile::run(&loaded, &absolute(file), repeat);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `cargo bench` without arguments: a small corpus, one repeat, the table.
fn smoke() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("portal-bridge-bench-smoke-{}", std::process::id()));
    let spec = corpus::Spec { forms_per_region: 20, services_per_region: 20, seed: 20_251_127 };
    let _ = std::fs::remove_dir_all(&dir);
    corpus::generate(spec, &dir, &repo().join("demo/codelists")).map_err(|e| e.to_string())?;
    let config = dir.join("bridge.toml");
    let text =
        corpus::config(&dir, &mappings_dir(), &dir.join("bridge.db"), &corpus::Delivery::Outbox(&dir.join("out")));
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let loaded = stages::load(&config)?;
    let results = dir.join("results.jsonl");
    let mut lines = String::new();
    for (group, sources) in [("forms", corpus::form_sources()), ("services", corpus::service_sources())] {
        for stage in stages::measure(&loaded, &sources, None, 1, 1) {
            lines.push_str(
                &serde_json::json!({"kind": "stage", "n": 100, "group": group, "name": stage.name,
                    "items": stage.items, "bytes": stage.bytes, "secs": stage.median()})
                .to_string(),
            );
            lines.push('\n');
        }
    }
    let mut real_lines = Vec::new();
    run_real(100, 1, &mut real_lines)?;
    lines.push_str(&String::from_utf8_lossy(&real_lines));
    std::fs::write(&results, lines).map_err(|e| e.to_string())?;
    println!(
        "bridge-bench smoke run (100 forms, 100 services, the real exports; the full benchmark is benches/run.sh)"
    );
    let out = report(&results);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

// ------------------------------------------------------------------ the table

#[derive(Debug, Clone, serde::Deserialize)]
struct Line {
    kind: String,
    n: u64,
    #[serde(default)]
    group: String,
    name: String,
    items: u64,
    #[serde(default)]
    bytes: u64,
    secs: f64,
    #[serde(default)]
    rss_kb: Option<u64>,
    #[serde(default)]
    note: Option<String>,
}

fn report(results: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let lines: Vec<Line> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{l}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut ns: Vec<u64> = lines.iter().map(|l| l.n).collect();
    ns.sort_unstable();
    ns.dedup();
    // Row order: stages in pipeline order (forms, then services), then runs as they first appear.
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for l in &lines {
        let key = (l.kind.clone(), l.group.clone(), l.name.clone());
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    const STAGE_ORDER: [&str; 8] = [
        "parse: quick-xml Reader",
        "parse: quick-xml NsReader",
        "parse: serde",
        "decode",
        "scan",
        "map: to_val",
        "map",
        "validate",
    ];
    // Groups: the corpus forms, then the real exports and demo forms as they appear, then services.
    let mut groups: Vec<String> = vec!["forms".into()];
    for (_, group, _) in &rows {
        if !groups.contains(group) && group != "services" {
            groups.push(group.clone());
        }
    }
    groups.push("services".into());
    let group_rank = |g: &str| groups.iter().position(|x| *x == g).unwrap_or(groups.len());
    rows.sort_by_key(|(kind, group, name)| {
        let rank = STAGE_ORDER.iter().position(|p| name.starts_with(p)).unwrap_or(99);
        (kind != "stage", group_rank(group), if kind == "stage" { rank } else { 0 })
    });
    let mut header = String::from("| stage / run |");
    let mut rule = String::from("|---|");
    for n in &ns {
        header.push_str(&format!(" N={n}: items/s | MB/s | wall s | peak RSS MB |"));
        rule.push_str("---:|---:|---:|---:|");
    }
    println!("{header}\n{rule}");
    let find = |n: u64, kind: &str, group: &str, name: &str| -> Option<Line> {
        let same: Vec<&Line> =
            lines.iter().filter(|l| l.n == n && l.kind == kind && l.group == group && l.name == name).collect();
        median_line(&same)
    };
    for (kind, group, name) in &rows {
        let label = if kind == "stage" { format!("{group}: {name}") } else { name.clone() };
        let mut row = format!("| {label} |");
        for n in &ns {
            match find(*n, kind, group, name) {
                None => row.push_str(" – | – | – | – |"),
                Some(l) => {
                    let items = l.items as f64 / l.secs;
                    let mb = if l.bytes > 0 { format!("{:.1}", l.bytes as f64 / 1e6 / l.secs) } else { "–".into() };
                    let rss = l.rss_kb.map_or("–".into(), |kb| format!("{:.0}", kb as f64 / 1024.0));
                    row.push_str(&format!(" {} | {mb} | {:.2} | {rss} |", fmt_rate(items), l.secs));
                }
            }
        }
        println!("{row}");
    }
    // Ratios measured within one process on the same bytes.
    println!();
    for n in &ns {
        let stage = |name: &str| find(*n, "stage", "forms", name).map(|l| l.secs);
        if let (Some(parse), Some(to_val), Some(form), Some(xdf3)) = (
            stage("parse: quick-xml Reader events"),
            stage(stages::READ),
            stage("map: xdatenfelder2-to-form"),
            stage("map: xdatenfelder2-to-xdf3"),
        ) {
            let both = to_val + form + xdf3;
            println!(
                "N={n}: map stage (Mapping::read + both mappings) runs at {:.2} % of the raw quick-xml throughput on the same bytes \
                 (with half the reads, xdatenfelder2-to-form alone: {:.2} %, xdatenfelder2-to-xdf3 alone: {:.2} %)",
                100.0 * parse / both,
                100.0 * parse / (to_val / 2.0 + form),
                100.0 * parse / (to_val / 2.0 + xdf3),
            );
        }
        // The jq mapping against its hand-written reference, per group, on the same records.
        for group in &groups {
            let stage = |name: &str| find(*n, "stage", group, name);
            if let (Some(jq), Some(apply), Some(hand)) = (
                stage(stages::JQ_FROM_TREE),
                stage(&format!("map: {}", stages::REFERENCE_MAPPING)),
                stage(stages::HAND_WRITTEN),
            ) {
                let per = |l: &Line| 1e3 * l.secs / l.items.max(1) as f64;
                println!(
                    "N={n}: {group}: {} jq {:.3} ms/form (Mapping::read + apply; apply alone {:.3}), hand-written {:.3} ms/form: \
                     jq / hand-written = {:.1}× ({:.1}× for apply alone)",
                    stages::REFERENCE_MAPPING,
                    per(&jq),
                    per(&apply),
                    per(&hand),
                    jq.secs / hand.secs,
                    apply.secs / hand.secs,
                );
            }
        }
        for l in lines.iter().filter(|l| l.n == *n && l.note.is_some()) {
            println!("N={n}: {}: {}", l.name, l.note.as_deref().unwrap_or_default());
        }
        let repeats: Vec<String> = rows
            .iter()
            .filter(|(kind, _, _)| kind == "run")
            .map(|(_, _, name)| {
                (name, lines.iter().filter(|l| l.n == *n && l.kind == "run" && &l.name == name).count())
            })
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("{name} ×{count}"))
            .collect();
        if !repeats.is_empty() {
            println!("N={n}: runs (medians of): {}", repeats.join(", "));
        }
    }
    Ok(())
}

/// The repeats of one row: median wall time, median peak RSS.
fn median_line(same: &[&Line]) -> Option<Line> {
    let first = (*same.first()?).clone();
    let secs = stages::median(&same.iter().map(|l| l.secs).collect::<Vec<_>>());
    let rss: Vec<f64> = same.iter().filter_map(|l| l.rss_kb.map(|kb| kb as f64)).collect();
    let rss_kb = (!rss.is_empty()).then(|| stages::median(&rss) as u64);
    Some(Line { secs, rss_kb, ..first })
}

fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 100.0 { format!("{per_sec:.0}") } else { format!("{per_sec:.1}") }
}
