//! The benchmark tool behind `benches/run.sh` (a bench target without libtest's harness):
//!
//! ```text
//! cargo bench --bench bridge -- gen --out DIR --forms-per-region N --services-per-region N [--seed S]
//! cargo bench --bench bridge -- config --corpus DIR --db FILE (--outbox DIR | --http URL --token-file F) --out FILE
//! cargo bench --bench bridge -- change --corpus DIR --percent 1 --round K
//! cargo bench --bench bridge -- stages --config FILE --n N [--repeat R] [--limit L] >> results.jsonl
//! cargo bench --bench bridge -- report --results results.jsonl
//! ```
//!
//! Plain `cargo bench` runs it without a subcommand: a quick smoke run of the stage measurements on
//! a small generated corpus (100 forms, 100 services).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use support::{corpus, stages};

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

/// `cargo bench` without arguments: a small corpus, one repeat, the table.
fn smoke() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("portal-bridge-bench-smoke-{}", std::process::id()));
    let spec = corpus::Spec { forms_per_region: 20, services_per_region: 20, seed: 20_251_127 };
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
    std::fs::write(&results, lines).map_err(|e| e.to_string())?;
    println!("bridge-bench smoke run (100 forms, 100 services; the full benchmark is benches/run.sh)");
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
    rows.sort_by_key(|(kind, group, name)| {
        let rank = STAGE_ORDER.iter().position(|p| name.starts_with(p)).unwrap_or(99);
        (kind != "stage", group != "forms", if kind == "stage" { rank } else { 0 })
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
            stage("map: to_val (tree → jaq value)"),
            stage("map: xdatenfelder2-to-form"),
            stage("map: xdatenfelder2-to-xdf3"),
        ) {
            let both = to_val + form + xdf3;
            println!(
                "N={n}: map stage (to_val + both mappings) runs at {:.2} % of the raw quick-xml throughput on the same bytes \
                 (to_val + xdatenfelder2-to-form alone: {:.2} %, to_val + xdatenfelder2-to-xdf3 alone: {:.2} %)",
                100.0 * parse / both,
                100.0 * parse / (to_val + form),
                100.0 * parse / (to_val + xdf3),
            );
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
