//! The bad-input corpus (`tests/bad-input/cases.toml`) through the real pipeline: every broken or
//! hostile file yields its own per-item error, the run goes on, the good items of the same sources
//! are delivered, no file leaves the outbox, and the process's peak memory stays bounded.
//!
//! Large cases (100,000-deep nesting, 10 million attributes, a 1 GB file …) are generated into the
//! test's temp dir, never committed; the 1 GB file is sparse and must be refused without being read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portal_bridge::delivery::outbox::safe_stem;
use portal_bridge::domain::{ItemKey, ItemStatus, RunStatus};
use portal_bridge::pipeline::{Problem, RunReport};

use crate::corpus::{CORPUS, Case, PARTS, form_key, load_cases, materialise};
use crate::support::{TestApp, copy_dir, repo};

/// Peak resident memory the whole test process may reach (VmHWM), in bytes. Generous: the
/// largest case is a 51 MB file read into memory and decoded up to the attribute limit.
const MAX_PEAK_BYTES: u64 = 512 * 1024 * 1024;

/// A fragment each message of a class carries, so that the class is checked, not only the case text.
fn class_signature(class: &str) -> Option<&'static str> {
    Some(match class {
        "size" => "limits.max_record_bytes",
        "limit" => "(limits.max_",
        "dtd" => "DOCTYPE declarations are not accepted",
        "entity" => "only the five predefined XML entities are allowed",
        "encoding" => "UTF-",
        "not-accepted" => "no mapping of this source takes the record",
        "structure" => "the message has no ",
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
    let form_key = form_key();
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

#[test]
fn the_manifest_lists_every_corpus_file_and_only_those() {
    let cases = load_cases();
    assert!(cases.len() >= 40, "the corpus has {} cases, the issue asks for at least 40", cases.len());
    let listed: std::collections::BTreeSet<&str> =
        cases.iter().filter(|c| c.generated.is_none()).map(|c| c.file.as_str()).collect();
    for dir in PARTS {
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
    // The demo codelists plus the corpus's broken ones; forms/, services/ as the two sources.
    copy_dir(&repo().join("demo/codelists"), &dir.path().join("codelists"));
    materialise(&cases, |file| vec![dir.path().join(file)]);
    let big = dir.path().join("forms/generated-1gb.xml");
    assert_eq!(std::fs::metadata(&big).map(|m| m.len()).ok(), Some(1 << 30), "the 1 GB case is generated");

    let app = TestApp::with_config(dir, &config_text()).await;
    let broken = &app.deps.config.codelists.broken;
    assert_eq!(broken.len(), cases.iter().filter(|c| c.status == "broken").count(), "{broken:#?}");

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
            let id = case.id.clone().ok_or("a delivered case needs `id`")?;
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
        "broken" => {
            // A codelist file: reported by Config::resolve (and so by `check` and in the errors of
            // the items that need it), never a problem of its own.
            if !problems.is_empty() {
                return Err("a codelist file is no record".into());
            }
            let fragment = case.message.as_deref().ok_or("a broken case needs `message`")?;
            let signature = class_signature(&case.class).unwrap_or_default();
            let broken = app.deps.config.codelists.broken.iter().find(|b| b.path.ends_with(&case.file));
            match broken {
                None => Err("not reported as a broken codelist".into()),
                Some(b) if !b.reason.contains(fragment) || !b.reason.contains(signature) => {
                    Err(format!("reported as `{}`, without `{fragment}` or `{signature}`", b.reason))
                }
                Some(_) => Ok(()),
            }
        }
        other => Err(format!("unknown status `{other}`")),
    }
}
