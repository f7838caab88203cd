//! What an operator sees of the bridge's state (issue 17): each source's own last result and last
//! success whatever started the run, times in the configured zone, when an item was quarantined,
//! and documents delivered with warnings listed and counted (CLI, API, pages, metrics).

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use portal_bridge::api::{SourceState, router};
use portal_bridge::domain::{Clock, RunStatus, Trigger};
use portal_bridge::pipeline::{self, Deps, Job};
use serde_json::Value;

use crate::api::{call, state_for};
use crate::support::TestApp;

/// The demo form that is broken in these tests: quarantined under its file key.
const BROKEN_FILE: &str = "demo/aachen/forms/S05000102_hundesteuer-anmeldung.xml";
const BROKEN_KEY: &str = "aachen-forms/file:demo/aachen/forms/S05000102_hundesteuer-anmeldung.xml";
/// The demo form whose form-platform document carries a warning (a pattern that is prose).
const WARNED_KEY: &str = "bergisches-staedtedreieck-forms/S05000111@2.0";
const WARNING: &str = "pattern \"Codeliste Regionalschlüssel\" is prose, not a regular expression";

fn break_form(app: &TestApp) {
    let path = app.path(BROKEN_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.find("<xdf:struktur>").unwrap() + 20;
    std::fs::write(&path, &text[..cut]).unwrap();
}

struct Fixed(DateTime<Utc>);

impl Clock for Fixed {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn at(deps: &Deps, time: DateTime<Utc>) -> Deps {
    Deps { clock: Arc::new(Fixed(time)), ..deps.clone() }
}

/// A router on `app` whose daemon knows every configured source (as the daemon's start does) but
/// has seen none of their runs: what it shows comes from the store.
fn fresh_daemon_router(app: &TestApp) -> (axum::Router, portal_bridge::api::ApiState) {
    let (state, rx) = state_for(app, None, false, 8);
    std::mem::forget(rx);
    state
        .sources
        .write()
        .unwrap()
        .extend(app.deps.config.sources.iter().map(|s| (s.id.clone(), SourceState::default())));
    (router(state.clone()), state)
}

#[tokio::test]
async fn each_source_shows_its_own_last_result_and_last_success_for_a_cli_run() {
    let app = TestApp::demo().await;
    break_form(&app);
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Partial, "{:?}", report.problems);
    let run_id = report.run_id.unwrap();
    let (router, _) = fresh_daemon_router(&app);

    let ready = call(&router, axum::http::Method::GET, "/readyz", None, None).await.json();
    let aachen = &ready["sources"]["aachen-forms"];
    assert_eq!(aachen["last_status"], "partial", "{ready:#}");
    assert_eq!(aachen["last_run_id"], run_id, "{ready:#}");
    assert_eq!(aachen["last_success_at"], Value::Null, "the broken form keeps aachen-forms from succeeding: {ready:#}");
    let owl = &ready["sources"]["owl-forms"];
    assert_eq!(owl["last_status"], "ok", "owl-forms had no problem of its own: {ready:#}");
    assert!(owl["last_success_at"].is_string(), "a CLI run counts as a success: {ready:#}");

    let metrics = call(&router, axum::http::Method::GET, "/metrics", None, None).await.body;
    assert!(metrics.contains("portal_bridge_source_last_success_timestamp_seconds{source=\"owl-forms\"}"), "{metrics}");
    assert!(
        !metrics.contains("portal_bridge_source_last_success_timestamp_seconds{source=\"aachen-forms\"}"),
        "{metrics}"
    );

    let page = call(&router, axum::http::Method::GET, "/runs", None, None).await.body;
    let row = |source: &str| -> String {
        let start = page.find(&format!(">{source}</a></td>")).unwrap_or_else(|| panic!("no row for {source}: {page}"));
        page[start..start + page[start..].find("</tr>").unwrap()].to_owned()
    };
    assert!(row("aachen-forms").contains(">partial<"), "{}", row("aachen-forms"));
    assert!(row("owl-forms").contains(">ok<"), "{}", row("owl-forms"));
    assert!(!row("owl-forms").contains(">partial<"), "{}", row("owl-forms"));
}

#[tokio::test]
async fn pages_show_times_in_the_configured_time_zone() {
    let app = TestApp::demo().await;
    assert_eq!(app.deps.config.timezone, chrono_tz::Europe::Berlin);
    // Summer and winter: the page names the zone's offset of that day.
    let summer = Utc.with_ymd_and_hms(2024, 7, 1, 10, 0, 3).unwrap();
    let deps = at(&app.deps, summer);
    let report = pipeline::run(Job::all(Trigger::Cli), &deps).await.unwrap();
    let (router, _) = fresh_daemon_router(&app);
    let runs = call(&router, axum::http::Method::GET, "/runs", None, None).await.body;
    assert!(runs.contains("2024-07-01 12:00:03 CEST"), "{runs}");
    assert!(!runs.contains(" UTC"), "{runs}");
    assert!(runs.contains("Europe/Berlin"), "the page names the zone: {runs}");
    let run =
        call(&router, axum::http::Method::GET, &format!("/runs/{}", report.run_id.unwrap()), None, None).await.body;
    assert!(run.contains("2024-07-01 12:00:03 CEST"), "{run}");

    let winter = Utc.with_ymd_and_hms(2024, 12, 1, 10, 0, 3).unwrap();
    let deps = at(&app.deps, winter);
    pipeline::run(Job { force: true, ..Job::all(Trigger::Cli) }, &deps).await.unwrap();
    let runs = call(&router, axum::http::Method::GET, "/runs", None, None).await.body;
    assert!(runs.contains("2024-12-01 11:00:03 CET"), "{runs}");
}

#[tokio::test]
async fn quarantine_since_is_when_the_item_was_quarantined() {
    let app = TestApp::demo().await;
    break_form(&app);
    let first = Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap();
    let later = Utc.with_ymd_and_hms(2024, 3, 5, 8, 0, 0).unwrap();
    pipeline::run(Job::all(Trigger::Cli), &at(&app.deps, first)).await.unwrap();
    // The next run finds it broken again (and updates its row): it stays quarantined since the first.
    let again = pipeline::run(Job { force: true, ..Job::all(Trigger::Cli) }, &at(&app.deps, later)).await.unwrap();
    assert!(again.problems.iter().any(|p| p.item_key == BROKEN_KEY), "{:?}", again.problems);
    let (router, _) = fresh_daemon_router(&app);
    let page = call(&router, axum::http::Method::GET, "/quarantine", None, None).await.body;
    let start = page.find(&format!(">{BROKEN_KEY}</a>")).expect("listed");
    let row = &page[start..start + page[start..].find("</tr>").unwrap()];
    assert!(row.contains("2024-03-04 09:00:00 CET"), "since the first run: {row}");
    assert!(!row.contains("2024-03-05"), "not the last update: {row}");
}

#[tokio::test]
async fn a_document_delivered_with_warnings_is_listed_with_them_and_counted() {
    let app = TestApp::demo().await;
    let (router, state) = fresh_daemon_router(&app);
    let job = Job { metrics: Some(state.metrics.clone()), ..Job::all(Trigger::Cli) };
    let report = pipeline::run(job, &app.deps).await.unwrap();
    assert_eq!(report.status, RunStatus::Ok);
    let id = report.run_id.unwrap();
    // The report (what `migrate --json` prints) lists it.
    let json = serde_json::to_value(&report).unwrap();
    let warned = json["warned"].as_array().unwrap_or_else(|| panic!("no `warned` in {json:#}"));
    assert_eq!(warned.len(), 1, "{json:#}");
    assert_eq!(warned[0]["item_key"], WARNED_KEY);
    assert_eq!(warned[0]["target"], "form-platform");
    assert!(warned[0]["warnings"][0].as_str().unwrap().contains(WARNING), "{json:#}");
    assert_eq!(json["counts"]["warned"], 1, "{json:#}");

    // The API's run.
    let run = call(&router, axum::http::Method::GET, &format!("/api/runs/{id}"), None, None).await.json();
    assert_eq!(run["run"]["warned_count"], 1, "{run:#}");
    let warned = run["warned"].as_array().unwrap_or_else(|| panic!("no `warned` in {run:#}"));
    assert_eq!(warned.len(), 1, "{run:#}");
    assert_eq!(warned[0]["item_key"], WARNED_KEY);
    assert!(warned[0]["warnings"][0].as_str().unwrap().contains(WARNING), "{run:#}");

    // The run's page: under its problems, with the warning.
    let page = call(&router, axum::http::Method::GET, &format!("/runs/{id}"), None, None).await.body;
    let problems = &page[page.find("Probleme (Problems)").expect("problems section")..];
    let log = problems.find("Protokoll (Event log)").unwrap();
    let problems = &problems[..log];
    assert!(problems.contains("Mit Warnungen geliefert"), "{problems}");
    assert!(problems.contains(WARNED_KEY), "{problems}");
    assert!(problems.contains("is prose, not a regular expression"), "{problems}");

    // Metrics: documents by outcome.
    let metrics = call(&router, axum::http::Method::GET, "/metrics", None, None).await.body;
    assert!(
        metrics.contains(
            "portal_bridge_documents_total{source=\"bergisches-staedtedreieck-forms\",target=\"form-platform\",outcome=\"warning\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "portal_bridge_documents_total{source=\"owl-forms\",target=\"portal-xml\",outcome=\"delivered\"}"
        ),
        "{metrics}"
    );

    // The CLI: `status` counts it, `migrate` lists it.
    let status = app.command().arg("status").assert().success().get_output().stdout.clone();
    let status = String::from_utf8(status).unwrap();
    assert!(status.contains("1 with warnings"), "{status}");
    std::fs::remove_dir_all(app.path("var/outbox")).unwrap();
    let out = app.command().args(["migrate", "--force"]).assert().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(WARNED_KEY) && out.contains("is prose"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_through_the_daemons_api_fills_readyz_from_the_store() {
    let app = TestApp::demo().await;
    std::fs::write(app.path("admin-token"), "observability-admin-token").unwrap();
    let mut text = std::fs::read_to_string(&app.config_path).unwrap();
    text.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin-token\"\n");
    std::fs::write(&app.config_path, text).unwrap();
    let daemon = app.start_daemon().await;
    let client = reqwest::Client::new();
    let started: Value = client
        .post(format!("{}/api/runs", daemon.base))
        .bearer_auth("observability-admin-token")
        .json(&serde_json::json!({"sources": ["owl-forms"], "reason": "first day"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["run_id"].as_i64().unwrap_or_else(|| panic!("{started}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = app.deps.store.run(id).await.unwrap().unwrap();
        if run.status != "running" {
            assert_eq!(run.trigger, "api");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "run {id} did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ready: Value = client.get(format!("{}/readyz", daemon.base)).send().await.unwrap().json().await.unwrap();
    let owl = &ready["sources"]["owl-forms"];
    assert_eq!(owl["last_run_id"], id, "{ready:#}");
    assert_eq!(owl["last_status"], "ok", "{ready:#}");
    assert!(owl["last_success_at"].is_string(), "{ready:#}");
    assert_eq!(ready["sources"]["aachen-forms"]["last_success_at"], Value::Null, "{ready:#}");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}
