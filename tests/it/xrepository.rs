//! Codelists from XRepository: a loopback simulator of its API (genericode, 404, slow, 503-then-200,
//! gueltigeVersion), real FIM exports whose lists are missing, the database cache and `check`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portal_bridge::domain::{ItemStatus, Level, RunStatus, Trigger};
use portal_bridge::pipeline::Job;
use portal_bridge::store::log::EventFilter;
use serde_json::Value;

use crate::support::{TestApp, copy_dir, outbox_config, repo};

const REGISTERGERICHTE: &str = "urn:xoev-de:xunternehmen:codeliste:registergerichte_14";
const KREIS: &str = "urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:kreis_2021-07-31";
const STAAT: &str = "urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:staat";

/// What the simulator serves and what it was asked.
#[derive(Default)]
struct Sim {
    /// canonicalVersionUri → genericode.
    lists: HashMap<String, String>,
    /// canonical URI → the JSON answer of gueltigeVersion.
    valid: HashMap<String, String>,
    /// canonicalVersionUris answered only after 3 s.
    slow: HashSet<String>,
    /// canonicalVersionUri → how many 503 answers come before the list.
    unavailable: HashMap<String, usize>,
    /// Every request, as `genericode <uri>` or `gueltigeVersion <uri>` (URNs decoded).
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Sim>>;

struct Simulator {
    sim: Shared,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Simulator {
    async fn start(sim: Sim) -> Self {
        let sim: Shared = Arc::new(Mutex::new(sim));
        let app = Router::new()
            .route("/api/version_codeliste/{uri}/genericode", get(genericode))
            .route("/api/codeliste/{uri}/gueltigeVersion", get(valid_version))
            .with_state(sim.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { sim, url, task }
    }

    fn requests(&self) -> Vec<String> {
        self.sim.lock().unwrap().requests.clone()
    }

    /// Stops serving: the port refuses connections afterwards.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn genericode(State(sim): State<Shared>, UrlPath(uri): UrlPath<String>) -> Response {
    let (slow, answer) = {
        let mut sim = sim.lock().unwrap();
        sim.requests.push(format!("genericode {uri}"));
        let unavailable = sim.unavailable.get_mut(&uri).filter(|n| **n > 0).map(|n| *n -= 1).is_some();
        let answer = if unavailable {
            (StatusCode::SERVICE_UNAVAILABLE, "try again".to_owned())
        } else {
            match sim.lists.get(&uri) {
                Some(list) => (StatusCode::OK, list.clone()),
                None => (StatusCode::NOT_FOUND, format!("keine Codeliste {uri}")),
            }
        };
        (sim.slow.contains(&uri), answer)
    };
    if slow {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    answer.into_response()
}

async fn valid_version(State(sim): State<Shared>, UrlPath(uri): UrlPath<String>) -> Response {
    let mut sim = sim.lock().unwrap();
    sim.requests.push(format!("gueltigeVersion {uri}"));
    match sim.valid.get(&uri) {
        Some(json) => ([("content-type", "application/json")], json.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "unbekannt").into_response(),
    }
}

/// A genericode list with columns `code` and `name`.
fn list(canonical: &str, version: &str, codes: &[(&str, &str)]) -> String {
    let rows: String = codes
        .iter()
        .map(|(code, name)| {
            format!(
                r#"<Row><Value ColumnRef="code"><SimpleValue>{code}</SimpleValue></Value><Value ColumnRef="name"><SimpleValue>{name}</SimpleValue></Value></Row>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<gc:CodeList xmlns:gc="http://docs.oasis-open.org/codelist/ns/genericode/1.0/">
<Identification><ShortName>liste</ShortName><Version>{version}</Version><CanonicalUri>{canonical}</CanonicalUri>
<CanonicalVersionUri>{canonical}_{version}</CanonicalVersionUri></Identification>
<ColumnSet><Column Id="code" Use="required"/><Column Id="name" Use="required"/><Key Id="k"><ColumnRef Ref="code"/></Key></ColumnSet>
<SimpleCodeList>{rows}</SimpleCodeList></gc:CodeList>"#
    )
}

fn registergerichte() -> String {
    list("urn:xoev-de:xunternehmen:codeliste:registergerichte", "14", &[("R3101", "Aachen"), ("F1103", "Berlin")])
}

fn real(name: &str) -> std::path::PathBuf {
    repo().join("../shared/fim/samples/xdatenfelder-3/real").join(name)
}

fn real_lists() -> std::path::PathBuf {
    repo().join("../shared/fim/samples/xdatenfelder-2/more/codelists-genericode")
}

/// A config with one directory source `forms` (files in `forms/`, codelists in `codelists/`)
/// mapped by `mappings` from `mapping_dir`, and `[codelists.xrepository]` at `url`.
fn config(mapping_dir: &Path, mappings: &str, url: &str, timeout_secs: u64, retries: usize) -> String {
    let xrepository = format!(
        "[codelists.xrepository]\nurl = \"{url}\"\ntimeout_secs = {timeout_secs}\nretries = {retries}\n\
         retry_base_ms = 10\nretry_max_ms = 50\n"
    );
    let source = format!(
        "[[source]]\nid = \"forms\"\nregion = \"test\"\nkind = \"directory\"\npath = \"forms\"\n\
         include = [\"*.xml\"]\nformat = \"xml\"\nmappings = [{mappings}]\n"
    );
    outbox_config(mapping_dir, Path::new("codelists"), &xrepository, &source)
}

/// A temp dir with `forms/` holding `files` and `codelists/` holding the real lists (or none).
fn workspace(files: &[(&str, Vec<u8>)], with_real_lists: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("forms")).unwrap();
    std::fs::create_dir_all(dir.path().join("codelists")).unwrap();
    if with_real_lists {
        copy_dir(&real_lists(), &dir.path().join("codelists"));
    }
    for (name, bytes) in files {
        std::fs::write(dir.path().join("forms").join(name), bytes).unwrap();
    }
    dir
}

/// Every object in `value` that has a `codelist` naming `uri`, with its option codes.
fn options_of(value: &Value, uri: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.get("codelist").and_then(|c| c.get("canonicalVersionUri")).and_then(Value::as_str) == Some(uri) {
                    let codes = map["options"].as_array().into_iter().flatten();
                    found.push(codes.filter_map(|o| o["code"].as_str().map(str::to_owned)).collect());
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    found
}

fn outbox_document(app: &TestApp, key: &str) -> Value {
    let file = app.path("var/outbox/form-platform").join(format!("{}.json", key.replace('/', "%2F")));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap()
}

fn check_output(app: &TestApp) -> String {
    let output = app.command().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "check: {text}\n{}", String::from_utf8_lossy(&output.stderr));
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_list_is_fetched_during_migrate_and_later_runs_work_offline_from_the_database_cache() {
    let started = Instant::now();
    let mut sim = Sim::default();
    sim.lists.insert(REGISTERGERICHTE.into(), registergerichte());
    sim.unavailable.insert(REGISTERGERICHTE.into(), 1);
    let sim = Simulator::start(sim).await;
    let form = std::fs::read(real("S05000001195_xdf3.xml")).unwrap();
    let dir = workspace(&[("S05000001195_xdf3.xml", form)], true);
    let mappings = repo().join("mappings");
    let app = TestApp::with_config(dir, &config(&mappings, r#""xdatenfelder3-to-form""#, &sim.url, 5, 2)).await;
    let key = "forms/S05000001195_xdf3";

    // `check` names the list that is missing, the item and the field that need it.
    let before = check_output(&app);
    assert!(before.contains(&format!("{REGISTERGERICHTE} (14): not cached yet")), "{before}");
    assert!(before.contains(&format!("needed by {key}: F60000000325")), "{before}");
    assert!(!before.contains("staatsangehoerigkeit"), "the directory has that list: {before}");
    assert!(sim.requests().is_empty(), "check fetches nothing");

    let first = app.migrate().await;
    assert_eq!(first.status, RunStatus::Ok, "{:?} {:?}", first.problems, first.warnings);
    assert_eq!(first.counts.new, 1);
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let requests = sim.requests();
    assert_eq!(
        requests,
        [format!("genericode {REGISTERGERICHTE}"), format!("genericode {REGISTERGERICHTE}")],
        "a 503 is retried, and only the missing list is asked for"
    );
    let options = options_of(&outbox_document(&app, key), REGISTERGERICHTE);
    assert!(!options.is_empty(), "the select field refers to the list");
    assert!(options.iter().all(|codes| codes == &["R3101", "F1103"]), "{options:?}");
    let cached = app.deps.store.cached_codelists().await.unwrap();
    assert_eq!(cached.iter().map(|c| c.canonical_version_uri.as_str()).collect::<Vec<_>>(), [REGISTERGERICHTE]);
    let after = check_output(&app);
    assert!(after.contains(&format!("{REGISTERGERICHTE} (14): in the database cache")), "{after}");

    // Offline: XRepository is gone, the cache serves the list; nothing is re-mapped without cause.
    sim.stop().await;
    let second = app.migrate().await;
    assert_eq!(second.status, RunStatus::Ok, "{:?} {:?}", second.problems, second.warnings);
    assert_eq!((second.counts.new, second.counts.updated, second.counts.unchanged), (0, 0, 1));
    std::fs::remove_dir_all(app.path("var/outbox")).unwrap();
    let forced = app.run(Job { force: true, ..Job::all(Trigger::Cli) }).await;
    assert_eq!(forced.status, RunStatus::Ok, "{:?} {:?}", forced.problems, forced.warnings);
    assert!(forced.warnings.is_empty(), "no fetch was needed: {:?}", forced.warnings);
    let options = options_of(&outbox_document(&app, key), REGISTERGERICHTE);
    assert!(!options.is_empty() && options.iter().all(|codes| codes == &["R3101", "F1103"]), "{options:?}");

    // `map --source` maps with the cached list too: the same bytes as migrate delivered.
    let file = app.path("forms/S05000001195_xdf3.xml");
    let output = app
        .command()
        .args(["map", "--source", "forms", "--mapping", "xdatenfelder3-to-form"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let delivered = std::fs::read(app.path("var/outbox/form-platform").join("forms%2FS05000001195_xdf3.json")).unwrap();
    assert!(output.stdout == delivered, "map differs from migrate:\n{}", String::from_utf8_lossy(&output.stdout));
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fetch_is_a_warning_naming_the_urn_and_the_item_is_quarantined_as_before() {
    let started = Instant::now();
    let mut sim = Sim::default();
    // The kreis list is unknown (404); registergerichte answers too late (timeout).
    sim.lists.insert(REGISTERGERICHTE.into(), registergerichte());
    sim.slow.insert(REGISTERGERICHTE.into());
    let sim = Simulator::start(sim).await;
    let files = [
        ("S07000000248_xdf3.xml", std::fs::read(real("S07000000248_xdf3.xml")).unwrap()),
        ("S05000001195_xdf3.xml", std::fs::read(real("S05000001195_xdf3.xml")).unwrap()),
    ];
    let dir = workspace(&files, true);
    let mappings = repo().join("mappings");
    let app = TestApp::with_config(dir, &config(&mappings, r#""xdatenfelder3-to-form""#, &sim.url, 1, 1)).await;

    let check = check_output(&app);
    for urn in [KREIS, REGISTERGERICHTE] {
        assert!(check.contains(&format!("{urn} (")), "check names every missing list: {check}");
    }
    assert!(check.contains("needed by forms/S07000000248_xdf3: "), "{check}");

    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.counts.quarantined, 2, "{:?}", report.problems);
    let warnings = report.warnings.join("\n");
    assert!(warnings.contains(&format!("codelist {KREIS} (2021-07-31) could not be fetched")), "{warnings}");
    assert!(warnings.contains("HTTP 404"), "{warnings}");
    assert!(warnings.contains(&format!("codelist {REGISTERGERICHTE} (14) could not be fetched")), "{warnings}");
    assert!(warnings.contains("timed out"), "{warnings}");
    for problem in &report.problems {
        assert_eq!(problem.status, ItemStatus::Quarantined);
        assert!(problem.message.contains("missing codelist"), "{}", problem.message);
    }
    let events = app
        .deps
        .store
        .events(&EventFilter { run_id: report.run_id, level: Some(Level::Warn), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.level == "warn" && e.message.contains(KREIS)), "the log names the URN");
    let asked = sim.requests();
    assert_eq!(asked.iter().filter(|r| r.ends_with(KREIS)).count(), 1, "a 404 is not retried: {asked:?}");
    assert_eq!(asked.iter().filter(|r| r.ends_with(REGISTERGERICHTE)).count(), 2, "a timeout is: {asked:?}");
    assert!(app.deps.store.cached_codelists().await.unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(30), "timeouts bound the run: {:?}", started.elapsed());

    // XRepository recovers. The files did not change, so the scan takes their records from the scan
    // cache, which remembers their references: the lists are fetched and both forms go through.
    {
        let mut state = sim.sim.lock().unwrap();
        state.slow.clear();
        state
            .lists
            .insert(KREIS.into(), list(KREIS.trim_end_matches("_2021-07-31"), "2021-07-31", &[("05334", "Aachen")]));
    }
    let again = app.migrate().await;
    assert_eq!(again.status, RunStatus::Ok, "{:?} {:?}", again.problems, again.warnings);
    assert_eq!(again.counts.new, 2);
    let summary =
        app.deps.store.events(&EventFilter { run_id: again.run_id, limit: 100, ..Default::default() }).await.unwrap();
    assert!(
        summary.iter().any(|e| e.message.contains("2 of 2 entries unchanged since the last scan")),
        "the references came from the scan cache: {:?}",
        summary.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    let options = options_of(&outbox_document(&app, "forms/S07000000248_xdf3"), KREIS);
    assert!(!options.is_empty() && options.iter().all(|codes| codes == &["05334"]), "{options:?}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reference_without_version_is_fetched_in_its_valid_version_through_gueltige_version() {
    let staat_list = std::fs::read_to_string(real_lists().join("C60000045_staat_2023-02-24_genericode.xml")).unwrap();
    let mut sim = Sim::default();
    sim.lists.insert(format!("{STAAT}_2023-02-24"), staat_list);
    sim.valid
        .insert(STAAT.into(), format!(r#"{{"kennung": "{STAAT}", "version": "2023-02-24", "nameKurz": "Staat"}}"#));
    let sim = Simulator::start(sim).await;
    // A real form whose reference names the list without any version.
    let form = std::fs::read_to_string(real("S07000000200_xdf3.xml")).unwrap();
    let versioned = format!(
        "<xdf3:canonicalIdentification>{STAAT}</xdf3:canonicalIdentification><xdf3:version>2023-02-24</xdf3:version><xdf3:canonicalVersionUri>{STAAT}_2023-02-24</xdf3:canonicalVersionUri>"
    );
    assert!(form.contains(&versioned), "the sample refers to staat_2023-02-24");
    let form =
        form.replace(&versioned, &format!("<xdf3:canonicalIdentification>{STAAT}</xdf3:canonicalIdentification>"));
    let dir = workspace(&[("S07000000200_xdf3.xml", form.into_bytes())], false);
    // A mapping that resolves every reference as written: codelist(canonical; version).
    let mapping_dir = dir.path().join("mappings");
    std::fs::create_dir_all(&mapping_dir).unwrap();
    std::fs::write(
        mapping_dir.join("codes.toml"),
        r#"name = "codes"
program = '''
[.. | select(type == "object" and has("codelisteReferenz")) | .codelisteReferenz
 | codelist(.canonicalIdentification; .version) | {uri: .canonicalVersionUri, codes: (.codes | length)}]
| {lists: .}
'''
[input]
format = "xml"
namespace = "urn:xoev-de:fim:standard:xdatenfelder_3.0.0"
[output]
target = "form-platform"
format = "json"
"#,
    )
    .unwrap();
    let app = TestApp::with_config(dir, &config(&mapping_dir, r#""codes""#, &sim.url, 5, 0)).await;
    let check = check_output(&app);
    assert!(check.contains(&format!("{STAAT} (no version): not cached yet")), "{check}");

    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?} {:?}", report.problems, report.warnings);
    assert_eq!(
        sim.requests(),
        [format!("gueltigeVersion {STAAT}"), format!("genericode {STAAT}_2023-02-24")],
        "the valid version is asked for first"
    );
    let document = outbox_document(&app, "forms/S07000000200_xdf3");
    let lists = document["lists"].as_array().unwrap();
    assert!(!lists.is_empty(), "{document}");
    for list in lists {
        assert_eq!(list["uri"], format!("{STAAT}_2023-02-24"), "{document}");
        assert!(list["codes"].as_u64().unwrap() > 100, "every state of the real list: {document}");
    }
    let check = check_output(&app);
    assert!(check.contains(&format!("{STAAT} (no version): in the database cache")), "{check}");
    sim.stop().await;
}

#[test]
fn the_xrepository_settings_are_checked_up_front_with_file_and_line() {
    use portal_bridge::config::{Config, Overrides};
    let dir = workspace(&[], false);
    let path = dir.path().join("bridge.toml");
    let mappings = repo().join("mappings");
    let text = config(&mappings, r#""xdatenfelder3-to-form""#, "ftp://xrepository.example", 0, 3);
    std::fs::write(&path, &text).unwrap();
    let errors = Config::resolve(&path, &Overrides::default()).expect_err("an ftp URL is refused");
    let line = text.lines().position(|l| l.starts_with("url = \"ftp:")).unwrap() + 1;
    let shown = errors.to_string();
    assert!(
        shown.contains(&format!("bridge.toml:{}: codelists.xrepository: url `ftp://xrepository.example`", line - 1)),
        "{shown}"
    );
    std::fs::write(&path, text.replace("retries = 3", "retries = 3\nattempts = 9")).unwrap();
    let errors = Config::resolve(&path, &Overrides::default()).expect_err("unknown keys are refused");
    assert!(errors.to_string().contains("unknown key `codelists.xrepository.attempts`"), "{errors}");
    assert!(errors.to_string().contains("is not an http(s) URL"), "reported with the other problems: {errors}");
    // Off by default: the shipped configuration fetches nothing.
    let shipped = Config::resolve(&repo().join("config/bridge.toml"), &Overrides::default()).unwrap();
    assert!(shipped.xrepository.is_none());
}
