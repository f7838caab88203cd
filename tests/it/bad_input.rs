//! The bad-input corpus (`tests/bad-input/cases.toml`) through the real pipeline: every broken or
//! hostile file yields its own per-item error, the run goes on, the good items of the same sources
//! are delivered, no file leaves the outbox, and the process's peak memory stays bounded.
//!
//! Large cases (100,000-deep nesting, 10 million attributes, a 1 GB file …) are generated into the
//! test's temp dir, never committed; the 1 GB file is sparse and must be refused without being read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portal_bridge::domain::{ItemKey, ItemStatus, RunStatus};
use portal_bridge::pipeline::{Problem, RunReport};
use portal_bridge::target::outbox::safe_stem;
use serde::Deserialize;

use crate::support::{TestApp, copy_dir, repo};

/// Peak resident memory the whole test process may reach (VmHWM), in bytes. Generous: the
/// largest case is a 51 MB file read into memory and decoded up to the attribute limit.
const MAX_PEAK_BYTES: u64 = 512 * 1024 * 1024;

/// Where the case files live, and where the test puts them (each directory is one source).
const CORPUS: &str = "tests/bad-input";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

/// One case of `cases.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Path under `tests/bad-input/` (`forms/…` or `services/…`).
    file: String,
    /// Made at test time by the generator of this name instead of read from the corpus.
    generated: Option<String>,
    /// For a feed: the index of the record the case is about.
    record: Option<usize>,
    /// What is wrong with the input.
    what: String,
    /// `quarantined` (every problem of the file or record has it) or `delivered`.
    status: String,
    /// Pipeline stage of the problem: `decode`, `map` or `validate`.
    stage: Option<String>,
    /// Kind of error, see the head of cases.toml.
    class: String,
    /// A fragment every problem message of the case contains.
    message: Option<String>,
    /// For delivered cases: the record's external id, to find its outbox files.
    id: Option<String>,
    /// For long ids: `id` is followed by this text repeated until the id is `id_length` bytes long.
    id_repeat: Option<String>,
    id_length: Option<usize>,
}

impl Case {
    /// The origin the pipeline names in its messages: the path relative to the config root, plus
    /// `#index` for a record of a feed.
    fn origin(&self) -> String {
        match self.record {
            Some(index) => format!("{}#{index}", self.file),
            None => self.file.clone(),
        }
    }

    fn source(&self) -> &'static str {
        if self.file.starts_with("forms/") { "bad-forms" } else { "bad-services" }
    }
}

/// A fragment each message of a class carries, so that the class is checked, not only the case text.
fn class_signature(class: &str) -> Option<&'static str> {
    Some(match class {
        "size" => "limits.max_record_bytes",
        "limit" => "(limits.max_",
        "dtd" => "DOCTYPE declarations are not accepted",
        "entity" => "only the five predefined XML entities are allowed",
        "encoding" => "UTF-",
        "not-accepted" => "no mapping of this source accepts the record",
        "duplicate-id" => "the id occurs in",
        "codelist" => "codelist urn:",
        "schema" => "does not accept the document",
        "feed" => "holds no JSON array",
        "id" => "the id ",
        "key" => "the key expression",
        "syntax" | "accepted" => return None,
        other => panic!("unknown class `{other}` in cases.toml"),
    })
}

fn config_text() -> String {
    let bridge = std::fs::read_to_string(repo().join("config/bridge.toml")).unwrap();
    // The form key expression of the shipped config, so that ids are read as in production.
    let start = bridge.find("key = '''").expect("config/bridge.toml has a form key expression");
    let end = start + 9 + bridge[start + 9..].find("'''").unwrap() + 3;
    let form_key = &bridge[start..end];
    let mappings = repo().join("mappings").display().to_string();
    format!(
        r#"root = "."
[database]
url = "sqlite://var/bridge.db"
[paths]
mappings = {mappings:?}
codelists = "codelists"
outbox = "var/outbox"
[limits]
# Room for the 10-million-attribute file (51 MB) to be read and refused by max_attributes;
# everything else is the default.
max_record_bytes = 67_108_864

[[target]]
id = "form-platform"
delivery = "outbox"

[[target]]
id = "portal-xml"
delivery = "outbox"

[[source]]
id = "bad-forms"
region = "test"
kind = "directory"
path = "forms"
include = ["*.xml"]
format = "xml"
{form_key}
mappings = ["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"]

[[source]]
id = "bad-services"
region = "test"
kind = "directory"
path = "services"
include = ["*.json"]
format = "json"
split = "array"
key = ".leistung.schluessel"
mappings = ["zufi-to-xzufi"]
"#
    )
}

/// Writes a generated case file: large inputs are streamed to disk, never held in memory whole.
fn generate(name: &str, path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    match name {
        "xml-deep-nesting" => {
            // 100,000 nested elements inside an otherwise plausible root.
            write!(
                out,
                "<xdf:xdatenfelder.stammdatenschema.0102 xmlns:xdf=\"urn:xoev-de:fim:standard:xdatenfelder_2\">"
            )
            .unwrap();
            for _ in 0..100_000 {
                out.write_all(b"<g>").unwrap();
            }
            for _ in 0..100_000 {
                out.write_all(b"</g>").unwrap();
            }
            out.write_all(b"</xdf:xdatenfelder.stammdatenschema.0102>\n").unwrap();
        }
        "xml-1gb" | "json-1gb" => {
            // Sparse: 1 GiB that costs no disk space; reading it all would take seconds and 1 GiB of memory.
            out.write_all(if name == "xml-1gb" { b"<r>" } else { b"[\"" }).unwrap();
            out.flush().unwrap();
            out.get_ref().set_len(1 << 30).unwrap();
        }
        "xml-10-million-attributes" => {
            // 10,000,000 attributes, 52 per element (one-letter names, so each element is well-formed): 51 MB.
            let names: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
            let attributes: String = names.iter().map(|c| format!(" {c}=\"\"")).collect();
            out.write_all(b"<r>").unwrap();
            let mut written = 0;
            while written < 10_000_000 {
                write!(out, "<e{attributes}/>").unwrap();
                written += names.len();
            }
            out.write_all(b"</r>\n").unwrap();
        }
        "xml-many-elements" => {
            out.write_all(b"<r>").unwrap();
            for _ in 0..600_000 {
                out.write_all(b"<e/>").unwrap();
            }
            out.write_all(b"</r>\n").unwrap();
        }
        "xml-long-text" => {
            out.write_all(b"<r><t>").unwrap();
            out.write_all(&vec![b'x'; 2 << 20]).unwrap();
            out.write_all(b"</t></r>\n").unwrap();
        }
        "xml-long-attribute" => {
            out.write_all(b"<r><t a=\"").unwrap();
            out.write_all(&vec![b'x'; 2 << 20]).unwrap();
            out.write_all(b"\"/></r>\n").unwrap();
        }
        "json-deep-nesting" => {
            out.write_all(&vec![b'['; 100_000]).unwrap();
            out.write_all(&vec![b']'; 100_000]).unwrap();
        }
        "json-many-values" => {
            out.write_all(b"[0").unwrap();
            for _ in 0..600_000 {
                out.write_all(b",0").unwrap();
            }
            out.write_all(b"]\n").unwrap();
        }
        "json-long-string" => {
            out.write_all(b"[{\"leistung\": {\"schluessel\": \"99089001000050\", \"bezeichnung\": \"").unwrap();
            out.write_all(&vec![b'x'; 2 << 20]).unwrap();
            out.write_all(b"\"}}]\n").unwrap();
        }
        other => panic!("unknown generator `{other}` in cases.toml"),
    }
    out.flush().unwrap();
}

/// Peak resident set size of this process so far (VmHWM), in bytes.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files
}

fn load_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(repo().join(CORPUS).join("cases.toml")).unwrap();
    let manifest: Manifest = toml::from_str(&text).unwrap_or_else(|e| panic!("cases.toml: {e}"));
    manifest.case
}

#[test]
fn the_manifest_lists_every_corpus_file_and_only_those() {
    let cases = load_cases();
    assert!(cases.len() >= 40, "the corpus has {} cases, the issue asks for at least 40", cases.len());
    let listed: std::collections::BTreeSet<&str> =
        cases.iter().filter(|c| c.generated.is_none()).map(|c| c.file.as_str()).collect();
    for dir in ["forms", "services"] {
        for file in std::fs::read_dir(repo().join(CORPUS).join(dir)).unwrap() {
            let name = format!("{dir}/{}", file.unwrap().file_name().to_string_lossy());
            assert!(listed.contains(name.as_str()), "{name} is in the corpus but not in cases.toml");
        }
    }
    for case in &cases {
        let path = repo().join(CORPUS).join(&case.file);
        match &case.generated {
            Some(_) => assert!(!path.exists(), "{}: generated cases must not be committed", case.file),
            None => assert!(path.is_file(), "{}: listed in cases.toml but missing", case.file),
        }
        assert!(!case.what.trim().is_empty(), "{}: say what is wrong with it", case.file);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_is_quarantined_with_its_own_error_and_the_rest_is_delivered() {
    let started = Instant::now();
    let cases = load_cases();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["forms", "services"] {
        copy_dir(&repo().join(CORPUS).join(sub), &dir.path().join(sub));
    }
    // The demo codelists plus the corpus's broken ones.
    copy_dir(&repo().join("demo/codelists"), &dir.path().join("codelists"));
    copy_dir(&repo().join(CORPUS).join("codelists"), &dir.path().join("codelists"));
    for case in &cases {
        if let Some(generator) = &case.generated {
            generate(generator, &dir.path().join(&case.file));
        }
    }
    let big = dir.path().join("forms/generated-1gb.xml");
    assert_eq!(std::fs::metadata(&big).map(|m| m.len()).ok(), Some(1 << 30), "the 1 GB case is generated");

    let app = TestApp::with_config(dir, &config_text()).await;
    // The hostile codelists are reported as broken, not expanded.
    let broken: Vec<String> =
        app.deps.config.codelists.broken.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken.iter().any(|b| b.contains("billion-laughs-codelist.xml") && b.contains("DOCTYPE")), "{broken:?}");

    let report = app.migrate().await;
    let elapsed = started.elapsed();
    check_report(&app, &cases, &report);

    let peak = peak_memory();
    eprintln!("bad-input corpus: {} cases, {:?}, peak memory {} MB", cases.len(), elapsed, peak >> 20);
    assert!(peak < MAX_PEAK_BYTES, "peak memory {} MB exceeds the bound of {} MB", peak >> 20, MAX_PEAK_BYTES >> 20);
    assert!(elapsed < Duration::from_secs(60), "the corpus took {elapsed:?}");
}

fn check_report(app: &TestApp, cases: &[Case], report: &RunReport) {
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "no source may fail as a whole: {:?}", report.errors);

    // Problems by the origin their message names (`<origin>: …`).
    let mut by_origin: BTreeMap<String, Vec<&Problem>> = BTreeMap::new();
    for problem in &report.problems {
        let origin = problem.message.split(": ").next().unwrap_or_default().to_owned();
        by_origin.entry(origin).or_default().push(problem);
    }
    let mut failures = Vec::new();
    for case in cases {
        let origin = case.origin();
        let problems = by_origin.remove(&origin).unwrap_or_default();
        if let Err(why) = check_case(app, case, &problems) {
            let got: Vec<String> =
                problems.iter().map(|p| format!("{} {} [{}] {}", p.status, p.stage, p.item_key, p.message)).collect();
            failures.push(format!("{origin} ({}): {why}\n    got: {got:#?}", case.what));
        }
    }
    for (origin, problems) in &by_origin {
        failures.push(format!("{origin}: problems without a case in cases.toml: {problems:#?}"));
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // Nothing was written outside the outbox's target directories.
    let outbox = app.path("var/outbox");
    for file in all_files(app.dir.path()) {
        let inside_outbox =
            file.starts_with(outbox.join("form-platform")) || file.starts_with(outbox.join("portal-xml"));
        let relative = file.strip_prefix(app.dir.path()).unwrap().to_string_lossy().into_owned();
        let known = ["forms/", "services/", "codelists/", "var/bridge.db", "bridge.toml"]
            .iter()
            .any(|p| relative.starts_with(p));
        assert!(inside_outbox || known, "unexpected file {}", file.display());
        if inside_outbox {
            assert_eq!(file.parent().unwrap().parent().unwrap(), outbox, "{} is nested", file.display());
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("root:x:0:0"), "{} holds /etc/passwd", file.display());
        }
    }
}

fn check_case(app: &TestApp, case: &Case, problems: &[&Problem]) -> Result<(), String> {
    if let Some(signature) = class_signature(&case.class) {
        if let Some(p) = problems.iter().find(|p| !p.message.contains(signature)) {
            return Err(format!("class {} expects `{signature}` in every message, not in `{}`", case.class, p.message));
        }
    }
    match case.status.as_str() {
        "delivered" => {
            if !problems.is_empty() {
                return Err("expected no problem".into());
            }
            let mut id = case.id.clone().ok_or("a delivered case needs `id`")?;
            if let (Some(repeat), Some(length)) = (&case.id_repeat, case.id_length) {
                while id.len() < length {
                    id.push_str(repeat);
                }
            }
            let key = ItemKey::new(case.source(), &id);
            let targets: &[(&str, &str)] = if case.source() == "bad-forms" {
                &[("form-platform", "json"), ("portal-xml", "xml")]
            } else {
                &[("portal-xml", "xml")]
            };
            for (target, extension) in targets {
                let path = app.path("var/outbox").join(target).join(format!("{}.{extension}", safe_stem(&key)));
                if !path.is_file() {
                    return Err(format!("{key} was not delivered to {}", path.display()));
                }
            }
            Ok(())
        }
        "quarantined" => {
            if problems.is_empty() {
                return Err("expected a problem, got none".into());
            }
            let stage = case.stage.as_deref().ok_or("a quarantined case needs `stage`")?;
            let fragment = case.message.as_deref().ok_or("a quarantined case needs `message`")?;
            for problem in problems {
                if problem.status != ItemStatus::Quarantined {
                    return Err(format!("status {} instead of quarantined", problem.status));
                }
                if problem.stage.as_str() != stage {
                    return Err(format!("stage {} instead of {stage}", problem.stage));
                }
                if !problem.message.contains(fragment) {
                    return Err(format!("message without `{fragment}`"));
                }
            }
            Ok(())
        }
        other => Err(format!("unknown status `{other}`")),
    }
}
