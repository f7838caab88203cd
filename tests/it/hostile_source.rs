//! The acceptance test of issue 9: a daemon fed the whole bad-input corpus as one source keeps
//! serving `/healthz`, delivers the good items of the other sources and reports every bad file by
//! name in the migration log.
//!
//! The daemon runs in-process (`daemon::run`) with the admin API on a 127.0.0.1:0 listener; the run
//! is triggered through `POST /api/runs`, as an operator would. Every corpus file is in one
//! directory (generated ones included: the sparse 1 GiB files, 100,000-deep nesting, 10 million
//! attributes), read with the default limits; the corpus's codelists are also in the codelist
//! directory, next to the demo ones.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portal_bridge::store::log::EventFilter;

use crate::corpus::{form_key, load_cases, materialise};
use crate::support::{RunningDaemon, TestApp, copy_dir, repo};

/// Longest a `/healthz` answer may take while the corpus is being read. Generous for a loaded
/// 2-core CI machine; the answer does not wait for anything but the runtime.
const HEALTH_BOUND: Duration = Duration::from_secs(2);

/// How often `/healthz` is asked.
const HEALTH_EVERY: Duration = Duration::from_millis(25);

/// The whole test, generation and run included, must end within this.
const DEADLINE: Duration = Duration::from_secs(120);

const TOKEN: &str = "admin-secret";

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
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"

[[target]]
id = "form-platform"
delivery = "outbox"

[[target]]
id = "portal-xml"
delivery = "outbox"

# Every corpus file, XML and JSON, in one source (first, so the others run after it). The format
# follows each file's extension.
[[source]]
id = "hostile"
region = "test"
kind = "directory"
path = "corpus"
include = ["*"]
{form_key}
mappings = ["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3", "zufi-to-xzufi"]

[[source]]
id = "aachen-forms"
region = "aachen"
kind = "directory"
path = "demo/aachen/forms"
include = ["*.xml"]
format = "xml"
{form_key}
mappings = ["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"]

[[source]]
id = "aachen-services"
region = "aachen"
kind = "directory"
path = "demo/aachen"
include = ["services.json"]
format = "json"
split = "array"
key = ".leistung.schluessel"
mappings = ["zufi-to-xzufi"]
form_link = {{ source = "aachen-forms", id = ".leistung.formularId" }}
[source.params]
form_url_template = "https://formulare.kommunalportal.nrw/aachen/{{form}}"
"#
    )
}

/// One `GET /healthz`: how long it took and the status (`Err`: no answer within the bound).
async fn health(client: &reqwest::Client, url: &str) -> (Duration, Result<u16, String>) {
    let started = Instant::now();
    let answer = tokio::time::timeout(HEALTH_BOUND, client.get(url).send()).await;
    let result = match answer {
        Err(_) => Err(format!("no answer within {HEALTH_BOUND:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(response)) => Ok(response.status().as_u16()),
    };
    (started.elapsed(), result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_fed_the_whole_corpus_as_one_source_stays_healthy_delivers_the_rest_and_names_every_bad_file() {
    let started = Instant::now();
    let cases = load_cases();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("demo/aachen"), &dir.path().join("demo/aachen"));
    copy_dir(&repo().join("demo/codelists"), &dir.path().join("codelists"));
    // One flat directory for the whole corpus; codelists also into the codelist directory.
    let corpus = dir.path().join("corpus");
    let codelists = dir.path().join("codelists");
    materialise(&cases, |file| {
        let name = file.rsplit('/').next().unwrap();
        let mut places = vec![corpus.join(name)];
        if file.starts_with("codelists/") {
            places.push(codelists.join(name));
        }
        places
    });
    std::fs::write(dir.path().join("admin-token"), TOKEN).unwrap();
    let files: Vec<String> =
        std::fs::read_dir(&corpus).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.len(), cases.iter().map(|c| &c.file).collect::<BTreeSet<_>>().len(), "one file per case file");
    let generated = started.elapsed();

    let app = TestApp::with_config(dir, &config_text()).await;
    let RunningDaemon { base, shutdown, task, .. } = app.start_daemon().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let healthz = format!("{base}/healthz");
    // The API answers before anything runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&client, &healthz).await.1 != Ok(200) {
        assert!(Instant::now() < deadline, "the admin API did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Poll /healthz throughout the run, from its own task.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn({
        let (client, url, stop) = (client.clone(), healthz.clone(), stop.clone());
        async move {
            let mut polls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                polls.push(health(&client, &url).await);
                tokio::time::sleep(HEALTH_EVERY).await;
            }
            polls
        }
    });

    let run_started = Instant::now();
    let response =
        client.post(format!("{base}/api/runs")).bearer_auth(TOKEN).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202, "{}", response.text().await.unwrap_or_default());

    // Wait (bounded) until the run is recorded as finished.
    let run = loop {
        let runs = app.deps.store.runs(10).await.unwrap();
        if let Some(run) = runs.into_iter().find(|r| r.finished_at.is_some()) {
            break run;
        }
        assert!(started.elapsed() < DEADLINE, "the run did not finish within {DEADLINE:?}");
        assert!(!task.is_finished(), "the daemon stopped: {:?}", task.await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run_took = run_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let polls = poller.await.unwrap();
    // Still serving after the run.
    assert_eq!(health(&client, &healthz).await.1, Ok(200));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task).await.expect("the daemon stops").unwrap().unwrap();

    // /healthz answered every poll, within the bound.
    let slowest = polls.iter().map(|(took, _)| *took).max().unwrap_or_default();
    let failed: Vec<_> = polls.iter().filter(|(_, result)| *result != Ok(200)).collect();
    assert!(failed.is_empty(), "{} of {} /healthz polls failed: {failed:?}", failed.len(), polls.len());
    assert!(polls.len() >= 3, "/healthz was polled throughout the run, not {} times", polls.len());

    // The run went through all sources: partial (the hostile one), no source failed as a whole.
    assert_eq!(run.status, "partial", "{run:?}");
    assert_eq!(run.message, None, "no source failed as a whole: {run:?}");
    assert_eq!(run.sources, "hostile,aachen-forms,aachen-services");

    // The good sources: every item delivered, to the outbox.
    for source in ["aachen-forms", "aachen-services"] {
        let rows = app.deps.store.items(None, Some(source), i64::MAX).await.unwrap();
        let expected = if source == "aachen-forms" { 3 * 2 } else { 2 };
        assert_eq!(rows.len(), expected, "{source}: {rows:#?}");
        for row in &rows {
            assert_eq!(row.status, "delivered", "{source}: {row:#?}");
            let location = row.output_path.as_deref().unwrap_or_else(|| panic!("{row:?} has an output path"));
            let path = PathBuf::from(location);
            let path = if path.is_absolute() { path } else { app.dir.path().join(path) };
            assert!(path.is_file(), "{}: {} is in the outbox", row.item_key, path.display());
        }
    }

    // The migration log of the run names every bad file (as `corpus/<name>`, the origin).
    let events =
        app.deps.store.events(&EventFilter { run_id: Some(run.id), limit: 0, ..Default::default() }).await.unwrap();
    let log: String = events
        .iter()
        .map(|e| format!("{} {} {}\n", e.item_key.as_deref().unwrap_or("-"), e.level, e.message))
        .collect();
    let bad: BTreeSet<&str> =
        cases.iter().filter(|c| c.status != "delivered").map(|c| c.file.rsplit('/').next().unwrap()).collect();
    let unnamed: Vec<&&str> = bad.iter().filter(|name| !log.contains(&format!("corpus/{name}"))).collect();
    assert!(unnamed.is_empty(), "bad files the migration log does not name: {unnamed:?}\nlog:\n{log}");
    // Every broken codelist is named in a warning of the run, needed or not…
    for case in cases.iter().filter(|c| c.status == "broken") {
        let name = case.file.rsplit('/').next().unwrap();
        assert!(log.contains(&format!("/{name} cannot be used: ")), "{name} is named:\n{log}");
    }
    // …and with the reason where forms need them.
    assert!(
        log.contains("the codelist file that declares it is broken (generated-1gb-codelist.xml: larger than the limit"),
        "{log}"
    );

    eprintln!(
        "hostile source: {} files, generated in {generated:?}, run {run_took:?}, {} /healthz polls, slowest {slowest:?}, whole test {:?}",
        files.len(),
        polls.len(),
        started.elapsed()
    );
}
