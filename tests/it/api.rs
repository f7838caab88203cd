//! The admin API and the review pages through `router(state).oneshot(request)`, plus one test on a real socket.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use portal_bridge::api::{ApiState, Queued, RunAnswer, SourceState, key_segment, router};
use portal_bridge::domain::{ItemStatus, RunStatus, Stage, Trigger};
use portal_bridge::metrics::Metrics;
use portal_bridge::pipeline::{Job, RunReport};
use portal_bridge::store::lease::Fence;
use portal_bridge::store::ledger::{Batch, LedgerRow};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::support::TestApp;

pub const TOKEN: &str = "test-admin-token-0123456789";
/// The form whose label changes between the two runs: it has a diff.
pub const CHANGED: &str = "aachen-forms/S05000101@1.0";
const CHANGED_FILE: &str = "demo/aachen/forms/S05000101_bewohnerparkausweis.xml";
pub const OLD_NAME: &str = "Antrag auf Bewohnerparkausweis Aachen";
pub const NEW_NAME: &str = "Antrag auf Bewohnerparkausweis der Stadt Aachen";
/// The form that is broken from the start: it is quarantined under its file key.
const BROKEN_FILE: &str = "demo/aachen/forms/S05000102_hundesteuer-anmeldung.xml";
pub const BROKEN_KEY: &str = "aachen-forms/file:demo/aachen/forms/S05000102_hundesteuer-anmeldung.xml";

/// The demo after two runs: the first with one broken form (quarantined), the second after a
/// label change of another form. Documents are recorded as the pipeline does after each
/// delivery, so the changed form has a diff.
pub struct Review {
    pub app: TestApp,
    pub first: RunReport,
    pub second: RunReport,
}

impl Review {
    pub async fn new() -> Self {
        let app = TestApp::demo().await;
        let path = app.path(BROKEN_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.find("<xdf:struktur>").unwrap() + 20;
        std::fs::write(&path, &text[..cut]).unwrap();
        let first = app.migrate().await;
        assert_eq!(first.status, RunStatus::Partial, "{:?}", first.problems);
        record_delivered(&app, CHANGED).await;

        let path = app.path(CHANGED_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let old = format!("<xdf:name>{OLD_NAME}</xdf:name>");
        assert!(text.contains(&old), "the demo form's name changed; adjust the test");
        std::fs::write(&path, text.replacen(&old, &format!("<xdf:name>{NEW_NAME}</xdf:name>"), 1)).unwrap();
        let second = app.migrate().await;
        assert!(second.counts.updated >= 2, "{:?}", second.counts);
        record_delivered(&app, CHANGED).await;
        Self { app, first, second }
    }

    pub fn first_id(&self) -> i64 {
        self.first.run_id.unwrap()
    }

    pub fn second_id(&self) -> i64 {
        self.second.run_id.unwrap()
    }

    /// API state on this app's store; the receiver gets the jobs the API sends.
    pub fn state(&self, token: Option<&str>, read_needs_token: bool) -> (ApiState, mpsc::Receiver<Job>) {
        state_for(&self.app, token, read_needs_token, 8)
    }
}

/// What the pipeline will do on each delivery: keep the delivered document.
pub async fn record_delivered(app: &TestApp, key: &str) {
    for row in app.deps.store.item(key).await.unwrap() {
        let (Some(path), Some(hash), Some(at)) = (&row.output_path, &row.output_hash, &row.delivered_at) else {
            continue;
        };
        let body = std::fs::read(path).unwrap();
        app.deps.store.record_document(key, &row.target, hash, &body, at).await.unwrap();
    }
}

/// API state on `app`'s store; the receiver gets the jobs the API sends, each answered as started
/// (run ids 1, 2, …) the way the daemon answers once a run holds its sources and has carried out
/// the action's prelude (here without leases).
pub fn state_for(
    app: &TestApp,
    token: Option<&str>,
    read_needs_token: bool,
    capacity: usize,
) -> (ApiState, mpsc::Receiver<Job>) {
    let (state, mut queued) = raw_state_for(app, token, read_needs_token, capacity);
    let (jobs, rx) = mpsc::channel(capacity);
    let deps = app.deps.clone();
    tokio::spawn(async move {
        let mut run_id = 0;
        while let Some(Queued { job, prelude, answer }) = queued.recv().await {
            run_id += 1;
            portal_bridge::ops::prelude(&deps, Some(run_id), &|_| Fence::None, &prelude).await.unwrap();
            let _ = jobs.send(job).await;
            let _ = answer.send(RunAnswer::Started { run_id });
        }
    });
    (state, rx)
}

/// API state on `app`'s store whose queued jobs nobody answers unless the test does.
pub fn raw_state_for(
    app: &TestApp,
    token: Option<&str>,
    read_needs_token: bool,
    capacity: usize,
) -> (ApiState, mpsc::Receiver<Queued>) {
    let (tx, rx) = mpsc::channel(capacity);
    let state = ApiState {
        store: app.deps.store.clone(),
        access: tokio::sync::watch::channel(portal_bridge::api::Access::single(token.unwrap_or(""), read_needs_token))
            .1,
        trigger: tx,
        sources: Arc::new(RwLock::new(BTreeMap::new())),
        metrics: Arc::new(Metrics::new()),
        instance: "test".into(),
        lease: std::time::Duration::from_secs(60),
        deps: tokio::sync::watch::channel(app.deps.clone()).1,
        chain: Default::default(),
    };
    (state, rx)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    fn challenges(&self) -> Vec<&str> {
        self.headers.get_all(header::WWW_AUTHENTICATE).iter().map(|v| v.to_str().unwrap()).collect()
    }
}

/// One request through the router without a socket; `auth` is the whole Authorization value.
pub async fn call(router: &Router, method: Method, uri: &str, auth: Option<&str>, body: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8(bytes.to_vec()).unwrap() }
}

async fn get(router: &Router, uri: &str) -> Answer {
    call(router, Method::GET, uri, None, None).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(user: &str, password: &str) -> String {
    // Small base64 encoder for the test, independent of the server's decoder.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn error_of(answer: &Answer) -> String {
    answer.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", answer.body)).to_owned()
}

#[tokio::test]
async fn health_is_ok_and_readiness_reports_the_database_and_the_sources() {
    let review = Review::new().await;
    let (state, _rx) = review.state(Some(TOKEN), true);
    state.sources.write().unwrap().insert(
        "aachen-forms".into(),
        SourceState {
            next_run_at: Some("2030-01-01T00:00:00Z".into()),
            last_run_id: Some(review.second_id()),
            last_status: Some("ok".into()),
            ..SourceState::default()
        },
    );
    let router = router(state.clone());

    // Probes need no token, even when reads do.
    let health = get(&router, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (StatusCode::OK, "ok"));
    let ready = get(&router, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let body = ready.json();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["sources"]["aachen-forms"]["next_run_at"], "2030-01-01T00:00:00Z");
    assert_eq!(body["sources"]["aachen-forms"]["last_run_id"], review.second_id());
    assert_eq!(body["sources"]["aachen-forms"]["running"], false);

    // The database goes away: not ready, but still alive.
    state.store.close().await;
    let ready = get(&router, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.body);
    assert_eq!(ready.json()["database"], "unreachable");
    assert_eq!(ready.json()["sources"]["aachen-forms"]["last_status"], "ok");
    assert_eq!(get(&router, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_items_and_runs_and_show_recorded_durations() {
    let review = Review::new().await;
    let (state, _rx) = review.state(Some(TOKEN), false);
    state.metrics.observe_run(Trigger::Schedule, RunStatus::Ok, 42.0);
    state.metrics.observe_stage(Stage::Deliver, 0.02);
    state.metrics.observe_upstream("owl-services", 0.3);
    // What the daemon's memory says of a last success does not count: the store's record does.
    state.sources.write().unwrap().insert(
        "owl-forms".into(),
        SourceState { last_success_at: Some("2024-05-01T12:00:00Z".into()), running: true, ..SourceState::default() },
    );
    let results = review.app.deps.store.source_results().await.unwrap();
    let owl = results.iter().find(|r| r.source_id == "owl-forms").unwrap();
    let success = chrono::DateTime::parse_from_rfc3339(owl.last_success_at.as_deref().unwrap()).unwrap().timestamp();
    let success = format!("portal_bridge_source_last_success_timestamp_seconds{{source=\"owl-forms\"}} {success}");
    let router = router(state);
    let metrics = get(&router, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.header(header::CONTENT_TYPE).starts_with("application/openmetrics-text"), "{:?}", metrics.headers);
    let text = &metrics.body;
    let expect = [
        "portal_bridge_items{source=\"aachen-forms\",target=\"portal-xml\",status=\"delivered\"} 1",
        "portal_bridge_items{source=\"aachen-forms\",target=\"portal-xml\",status=\"unchanged\"} 1",
        "portal_bridge_items{source=\"aachen-forms\",target=\"*\",status=\"quarantined\"} 1",
        "portal_bridge_items{source=\"owl-forms\",target=\"form-platform\",status=\"unchanged\"} 3",
        "portal_bridge_run_duration_seconds_count{trigger=\"schedule\",status=\"ok\"} 1",
        "portal_bridge_run_duration_seconds_sum{trigger=\"schedule\",status=\"ok\"} 42.0",
        "portal_bridge_stage_duration_seconds_count{stage=\"deliver\"} 1",
        "portal_bridge_upstream_request_duration_seconds_count{source=\"owl-services\"} 1",
        "portal_bridge_source_running{source=\"owl-forms\"} 1",
        "portal_bridge_database_up 1",
        "# EOF",
    ];
    let runs = if review.first.status == review.second.status {
        vec![format!("portal_bridge_runs{{trigger=\"cli\",status=\"{}\"}} 2", review.first.status)]
    } else {
        [&review.first, &review.second]
            .map(|r| format!("portal_bridge_runs{{trigger=\"cli\",status=\"{}\"}} 1", r.status))
            .to_vec()
    };
    for line in expect.iter().copied().chain(runs.iter().map(String::as_str)).chain([success.as_str()]) {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    // The ledger counts add up to the number of ledger rows.
    let rows = review.app.deps.store.items(None, None, i64::MAX).await.unwrap().len() as i64;
    let counted: i64 = text
        .lines()
        .filter(|l| l.starts_with("portal_bridge_items{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(counted, rows);
}

#[tokio::test]
async fn runs_are_listed_newest_first_and_one_run_comes_with_its_events() {
    let review = Review::new().await;
    let (state, _rx) = review.state(Some(TOKEN), false);
    let router = router(state);

    let runs = get(&router, "/api/runs").await;
    assert_eq!(runs.status, StatusCode::OK, "{}", runs.body);
    let ids: Vec<i64> = runs.json()["runs"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [review.second_id(), review.first_id()]);
    let one = get(&router, "/api/runs?limit=1").await.json();
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);
    assert_eq!(one["runs"][0]["status"], review.second.status.as_str());
    for bad in ["/api/runs?limit=zero", "/api/runs?limit=0", "/api/runs?limit=-3"] {
        let answer = get(&router, bad).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(!error_of(&answer).is_empty());
    }

    let run = get(&router, &format!("/api/runs/{}", review.first_id())).await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    let body = run.json();
    assert_eq!(body["run"]["id"], review.first_id());
    assert_eq!(body["run"]["status"], "partial");
    assert_eq!(body["run"]["quarantined_count"], 1);
    let events = body["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["run_id"] == review.first_id()));
    let quarantine = events.iter().find(|e| e["item_key"] == BROKEN_KEY && e["level"] == "error").unwrap();
    assert!(quarantine["message"].as_str().unwrap().contains("truncated"), "{quarantine}");

    let unknown = get(&router, "/api/runs/9999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&unknown), "no run 9999");
    assert_eq!(get(&router, "/api/runs/seven").await.status, StatusCode::BAD_REQUEST);
    let nowhere = get(&router, "/api/nowhere").await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert!(error_of(&nowhere).contains("/api/nowhere"));
}

#[tokio::test]
async fn items_are_filtered_and_one_item_is_found_by_either_form_of_its_key() {
    let review = Review::new().await;
    let (state, _rx) = review.state(Some(TOKEN), false);
    let router = router(state);

    let quarantined = get(&router, "/api/items?status=quarantined").await.json();
    let rows = quarantined["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["item_key"], BROKEN_KEY);
    assert!(rows[0]["last_error"].as_str().unwrap().contains("truncated"));
    let owl = get(&router, "/api/items?source=owl-forms").await.json();
    let owl = owl["items"].as_array().unwrap();
    assert_eq!(owl.len(), 6, "3 forms at 2 targets");
    assert!(owl.iter().all(|r| r["source_id"] == "owl-forms"));
    let both = get(&router, "/api/items?source=aachen-forms&status=delivered&limit=2").await.json();
    assert_eq!(both["items"].as_array().unwrap().len(), 2);
    let all = get(&router, "/api/items").await.json();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        review.app.deps.store.items(None, None, 10_000).await.unwrap().len()
    );
    let bad = get(&router, "/api/items?status=done").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(error_of(&bad).contains("quarantined"), "names the valid statuses: {}", bad.body);

    let encoded = get(&router, &format!("/api/items/{}", key_segment(CHANGED))).await;
    assert_eq!(encoded.status, StatusCode::OK, "{}", encoded.body);
    let plain = get(&router, &format!("/api/items/{CHANGED}")).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    assert_eq!(encoded.json(), plain.json());
    let item = plain.json();
    assert_eq!(item["key"], CHANGED);
    let targets: Vec<&str> =
        item["targets"].as_array().unwrap().iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["form-platform", "portal-xml"]);
    let events = item["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["item_key"] == CHANGED));
    assert!(events.iter().any(|e| e["message"].as_str().unwrap().starts_with("updated")), "{events:?}");

    let broken = get(&router, &format!("/api/items/{}", key_segment(BROKEN_KEY))).await;
    assert_eq!(broken.json()["targets"][0]["status"], "quarantined");
    let unknown = get(&router, "/api/items/aachen-forms/S09999999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&unknown), "no item `aachen-forms/S09999999`");
}

#[tokio::test]
async fn starting_a_run_needs_the_token_and_sends_the_job() {
    let review = Review::new().await;
    let (state, mut rx) = review.state(Some(TOKEN), false);
    let router = router(state.clone());
    let body = r#"{"sources": ["owl-forms"], "items": ["aachen-forms/S05000101@1.0"], "force": true}"#;

    // Refused: no header, a wrong token, a prefix of the token, the token plus a character, another scheme.
    let wrong_last = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    let refused = [
        None,
        Some(bearer("nope")),
        Some(bearer(&wrong_last)),
        Some(bearer(&TOKEN[..TOKEN.len() - 1])),
        Some(bearer(&format!("{TOKEN}0"))),
        Some(format!("Token {TOKEN}")),
        Some(basic("ops", TOKEN)), // Basic never authorises a mutating call (a browser re-sends it by itself)
    ];
    for auth in &refused {
        let answer = call(&router, Method::POST, "/api/runs", auth.as_deref(), Some(body)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(answer.challenges(), ["Bearer realm=\"portal-bridge\""], "{auth:?}");
        assert!(!error_of(&answer).contains(TOKEN));
    }
    assert!(rx.try_recv().is_err(), "nothing was queued");

    let answer = call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some(body)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.json(), json!({"queued": true, "run_id": 1}), "the answer names the run");
    let job = rx.recv().await.unwrap();
    assert_eq!(job.trigger, Trigger::Api);
    assert_eq!(job.sources, ["owl-forms"]);
    assert_eq!(job.items.iter().map(|k| k.as_str()).collect::<Vec<_>>(), [CHANGED]);
    assert!(job.force && !job.dry_run && !job.allow_withdrawals);

    // `{}` runs everything.
    let answer = call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some("{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let job = rx.recv().await.unwrap();
    assert!(job.sources.is_empty() && job.items.is_empty() && !job.force);

    // Shapes that are not a run request.
    for bad in [
        r#"{"source": ["owl-forms"]}"#,
        r#"{"sources": "owl-forms"}"#,
        r#"{"force": "yes"}"#,
        r#"["owl-forms"]"#,
        r#"{"items": ["no-slash"]}"#,
        r#"{"sources": [""]}"#,
        "sources=owl-forms",
        "",
    ] {
        let answer = call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some(bad)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {}", answer.body);
        assert!(!error_of(&answer).is_empty());
    }
    // With the daemon's sources known, unknown ids are refused.
    state.sources.write().unwrap().insert("owl-forms".into(), SourceState::default());
    let answer =
        call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some(r#"{"sources": ["owl-form"]}"#)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_of(&answer), "unknown source `owl-form` (did you mean `owl-forms`?); there are: owl-forms");
    let answer = call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some(r#"{"items": ["x/y"]}"#)).await;
    assert_eq!(error_of(&answer), "unknown source `x`; there are: owl-forms");
    assert!(rx.try_recv().is_err(), "nothing was queued");
}

#[tokio::test]
async fn mutating_calls_are_refused_when_no_token_is_configured() {
    let review = Review::new().await;
    let (state, mut rx) = review.state(None, false);
    let router = router(state);
    for auth in [None, Some(bearer(TOKEN)), Some(bearer(""))] {
        let answer = call(&router, Method::POST, "/api/runs", auth.as_deref(), Some("{}")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(error_of(&answer).contains("no admin token is configured"), "{}", answer.body);
        let retry = format!("/api/items/{}/retry", key_segment(CHANGED));
        assert_eq!(call(&router, Method::POST, &retry, auth.as_deref(), None).await.status, StatusCode::UNAUTHORIZED);
    }
    assert!(rx.try_recv().is_err());
    // Reads stay open.
    assert_eq!(get(&router, "/api/runs").await.status, StatusCode::OK);
    assert_eq!(get(&router, "/quarantine").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_retry_is_logged_and_queued_for_the_item() {
    let review = Review::new().await;
    let (state, mut rx) = review.state(Some(TOKEN), false);
    let router = router(state);

    let denied = call(&router, Method::POST, &format!("/api/items/{BROKEN_KEY}/retry"), None, None).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);

    for uri in [format!("/api/items/{}/retry", key_segment(BROKEN_KEY)), format!("/api/items/{BROKEN_KEY}/retry")] {
        let answer = call(&router, Method::POST, &uri, Some(&bearer(TOKEN)), None).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{uri}: {}", answer.body);
        assert_eq!(answer.json()["queued"], true);
        assert!(answer.json()["run_id"].is_i64(), "the answer names the run: {}", answer.body);
        let job = rx.recv().await.unwrap();
        assert_eq!(job.trigger, Trigger::Api);
        assert_eq!(job.items.iter().map(|k| k.as_str()).collect::<Vec<_>>(), [BROKEN_KEY]);
        assert!(job.sources.is_empty() && !job.force);
    }
    let log = get(&router, &format!("/api/items/{}", key_segment(BROKEN_KEY))).await.json();
    let retries: Vec<&Value> =
        log["events"].as_array().unwrap().iter().filter(|e| e["message"] == "retry requested by admin").collect();
    assert_eq!(retries.len(), 2, "{log}");
    // Logged with who (the token's name: the single admin token is `admin`) and the run it started.
    assert!(retries.iter().all(|e| e["stage"] == "operator" && e["level"] == "info" && e["actor"] == "admin"));
    assert_eq!(retries.iter().map(|e| e["run_id"].as_i64()).collect::<Vec<_>>(), [Some(1), Some(2)]);

    let unknown = call(&router, Method::POST, "/api/items/aachen-forms/S0/retry", Some(&bearer(TOKEN)), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let not_retry = call(&router, Method::POST, &format!("/api/items/{CHANGED}"), Some(&bearer(TOKEN)), None).await;
    assert_eq!(not_retry.status, StatusCode::NOT_FOUND);
    let bad_key = call(&router, Method::POST, "/api/items/nokey/retry", Some(&bearer(TOKEN)), None).await;
    assert_eq!(bad_key.status, StatusCode::BAD_REQUEST);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_full_queue_or_a_stopped_daemon_answers_503() {
    let review = Review::new().await;
    let (state, mut rx) = raw_state_for(&review.app, Some(TOKEN), false, 1);
    let router = router(state);
    // The first job waits in the queue for the daemon's answer.
    let first = tokio::spawn({
        let router = router.clone();
        async move { call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some("{}")).await }
    });
    while rx.is_empty() {
        tokio::task::yield_now().await;
    }
    let full = call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some("{}")).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&full).contains("queue is full"));
    // The daemon stops before it starts the queued run: its caller learns so, and so do later ones.
    drop(rx.recv().await);
    drop(rx);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE, "{}", first.body);
    assert!(error_of(&first).contains("did not start the run"), "{}", first.body);
    let closed = call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some("{}")).await;
    assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_run_whose_source_is_busy_is_answered_409_with_the_holder() {
    let review = Review::new().await;
    let (state, mut rx) = raw_state_for(&review.app, Some(TOKEN), false, 4);
    let router = router(state);
    tokio::spawn(async move {
        while let Some(Queued { answer, .. }) = rx.recv().await {
            let busy = portal_bridge::pipeline::Busy {
                source_id: "owl-forms".into(),
                holder: "host-a:41:beef#3".into(),
                until: "2999-01-01T00:00:00.000Z".into(),
            };
            let _ = answer.send(RunAnswer::Busy(busy));
        }
    });
    let answer =
        call(&router, Method::POST, "/api/runs", Some(&bearer(TOKEN)), Some(r#"{"sources": ["owl-forms"]}"#)).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    let json = answer.json();
    assert_eq!((json["source"].as_str(), json["holder"].as_str()), (Some("owl-forms"), Some("host-a:41:beef#3")));
    assert!(error_of(&answer).contains("busy"), "{}", answer.body);
}

#[tokio::test]
async fn reads_need_the_token_when_configured_so() {
    let review = Review::new().await;
    let (state, _rx) = review.state(Some(TOKEN), true);
    let router = router(state);
    let reads = [
        "/metrics".to_string(),
        "/api/runs".into(),
        format!("/api/runs/{}", review.first_id()),
        "/api/items".into(),
        format!("/api/items/{}", key_segment(CHANGED)),
    ];
    let pages = [
        "/".to_string(),
        "/runs".into(),
        format!("/runs/{}", review.first_id()),
        format!("/items/{}", key_segment(CHANGED)),
        format!("/items/{}/diff", key_segment(CHANGED)),
        "/quarantine".into(),
    ];
    for uri in reads.iter().chain(&pages) {
        let is_page = pages.contains(uri);
        for auth in [None, Some(bearer("wrong")), Some(basic("ops", "wrong"))] {
            let answer = call(&router, Method::GET, uri, auth.as_deref(), None).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{uri} {auth:?}");
            assert_eq!(
                answer.challenges(),
                ["Bearer realm=\"portal-bridge\"", "Basic realm=\"portal-bridge\", charset=\"UTF-8\""],
                "a browser asks for the token"
            );
            if is_page {
                assert!(answer.header(header::CONTENT_TYPE).starts_with("text/html"));
                assert!(answer.body.contains("Anmeldung nötig (Sign-in needed)"), "{}", answer.body);
            } else {
                assert!(!error_of(&answer).is_empty());
            }
        }
        for auth in [bearer(TOKEN), basic("ops", TOKEN), basic("", TOKEN)] {
            let answer = call(&router, Method::GET, uri, Some(&auth), None).await;
            assert_eq!(answer.status, StatusCode::OK, "{uri} {auth}: {}", answer.body);
        }
    }
    assert_eq!(get(&router, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&router, "/readyz").await.status, StatusCode::OK);

    // Reads that need a token without one configured: nobody gets in.
    let (state, _rx) = review.state(None, true);
    let closed = portal_bridge::api::router(state);
    let answer = call(&closed, Method::GET, "/api/runs", Some(&bearer(TOKEN)), None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&answer).contains("no admin token is configured"));
}

/// Every page: 200, HTML without scripts, a restrictive CSP, and the texts a person looks for.
#[tokio::test]
async fn review_pages_show_runs_items_quarantine_and_the_diff() {
    let review = Review::new().await;
    let (state, _rx) = review.state(Some(TOKEN), false);
    let router = router(state);
    let (first, second) = (review.first_id(), review.second_id());

    let page = |uri: String| {
        let router = router.clone();
        async move {
            let answer = get(&router, &uri).await;
            assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
            assert_eq!(answer.header(header::CONTENT_TYPE), "text/html; charset=utf-8", "{uri}");
            assert!(answer.header(header::CONTENT_SECURITY_POLICY).starts_with("default-src 'none'"), "{uri}");
            assert!(!answer.body.to_lowercase().contains("<script"), "{uri} has no scripts");
            assert!(answer.body.starts_with("<!DOCTYPE html>"), "{uri}");
            answer.body
        }
    };

    for uri in ["/", "/runs"] {
        let runs = page(uri.into()).await;
        assert!(runs.contains("<title>Läufe (Runs) – portal-bridge</title>"));
        assert!(runs.contains(&format!("<a href=\"/runs/{first}\">#{first}</a>")), "links each run");
        assert!(runs.contains(&format!("<a href=\"/runs/{second}\">#{second}</a>")));
        assert!(runs.contains("<span class=\"status warn\">partial</span>"), "status in colour");
        assert!(runs.contains("<th scope=\"col\">Auslöser <span class=\"en\">(trigger)</span></th>"));
        assert!(runs.contains("href=\"/quarantine?source=aachen-forms\""), "problem counts link to the quarantine");
    }
    assert!(page("/runs?limit=1".into()).await.contains(&format!("#{second}")));

    let run = page(format!("/runs/{first}")).await;
    assert!(run.contains(&format!("<h1>Lauf {first} (Run {first})</h1>")));
    assert!(run.contains("Probleme (Problems)") && run.contains("Protokoll (Event log)"));
    let link = format!("<a href=\"/items/{}\">{BROKEN_KEY}</a>", key_segment(BROKEN_KEY));
    assert!(run.contains(&link), "the quarantined item is listed and linked");
    assert!(run.contains("truncated"), "with its reason");
    assert!(run.contains("<span class=\"status bad\">quarantined</span>"), "and its current status");
    assert!(run.contains("<span class=\"status info\">info</span>"), "the log shows levels in colour");

    for uri in [format!("/items/{}", key_segment(CHANGED)), format!("/items/{CHANGED}")] {
        let item = page(uri).await;
        assert!(item.contains(&format!("<h1>Element (Item) {CHANGED}</h1>")));
        assert!(item.contains("<th scope=\"col\">form-platform</th><th scope=\"col\">portal-xml</th>"));
        assert!(item.contains("<span class=\"status good\">delivered</span>"));
        assert!(item.contains("form-platform/aachen-forms%2FS05000101@1.0.json"), "the output path");
        assert!(item.contains(&format!("href=\"/items/{}/diff\"", key_segment(CHANGED))), "links the diff");
        assert!(item.contains(&format!("<a href=\"/runs/{second}\">#{second}</a>")), "links the last run");
        assert!(item.contains("Migrationsprotokoll (Migration log)") && item.contains("updated: delivered to"));
    }
    let broken = page(format!("/items/{}", key_segment(BROKEN_KEY))).await;
    assert!(broken.contains("<span class=\"status bad\">quarantined</span>") && broken.contains("truncated"));

    for uri in ["/quarantine".to_string(), "/quarantine?source=aachen-forms".into()] {
        let quarantine = page(uri).await;
        assert!(quarantine.contains("<h1>Quarantäne (Quarantine)</h1>"));
        assert!(quarantine.contains(&link));
        assert!(quarantine.contains("truncated"));
        assert!(
            quarantine.contains("<a href=\"/quarantine?source=aachen-forms\">aachen-forms (1)</a>")
                || quarantine.contains("<strong>aachen-forms (1)</strong>")
        );
    }
    let other = page("/quarantine?source=owl-forms".into()).await;
    assert!(other.contains("Nichts zu prüfen (nothing to review)") && !other.contains(BROKEN_KEY));

    for uri in [format!("/items/{}/diff", key_segment(CHANGED)), format!("/items/{CHANGED}/diff")] {
        let diff = page(uri).await;
        assert!(diff.contains(&format!("<h1>Änderungen (Changes) {CHANGED}</h1>")));
        assert!(diff.contains("<h2>form-platform</h2>") && diff.contains("<h2>portal-xml</h2>"));
        assert!(
            diff.contains(&format!(
                "<td class=\"sign\">−</td><td>    &lt;xdf:name&gt;{OLD_NAME}&lt;/xdf:name&gt;</td>"
            )),
            "{diff}"
        );
        assert!(
            diff.contains(&format!(
                "<td class=\"sign\">+</td><td>    &lt;xdf:name&gt;{NEW_NAME}&lt;/xdf:name&gt;</td>"
            )),
            "{diff}"
        );
        assert!(
            diff.contains(&format!("<td class=\"sign\">+</td><td>  &quot;name&quot;: &quot;{NEW_NAME}&quot;,</td>")),
            "{diff}"
        );
        assert!(diff.contains("<tr class=\"hunk\"><td colspan=\"4\">@@ -"));
    }
    let no_versions = page(format!("/items/{}/diff", key_segment("owl-forms/S05000131@1.0"))).await;
    // Delivered once: the pipeline kept that one version, there is nothing to compare yet.
    assert!(no_versions.contains("Erst eine Fassung gespeichert"), "{no_versions}");

    for uri in ["/runs/9999", "/runs/x", "/items/owl-forms%2FS0", "/items/owl-forms/S0/diff", "/nowhere"] {
        let answer = get(&router, uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(answer.body.contains("Nicht gefunden (Not found)"), "{uri}: {}", answer.body);
    }
}

#[tokio::test]
async fn every_value_on_a_page_is_escaped() {
    let review = Review::new().await;
    let hostile = "evil/<script>alert(1)</script>";
    let reason = "<img src=x onerror=alert(2)> & \"quotes\"";
    let row = LedgerRow {
        item_key: hostile.into(),
        target: "portal-xml\"><b>".into(),
        source_id: "evil<i>".into(),
        origin: "<origin>".into(),
        content_hash: Some("<hash>".into()),
        mapping: Some("<mapping>".into()),
        mapping_version: None,
        output_hash: None,
        output_path: Some("</code><h1>".into()),
        status: ItemStatus::Quarantined.as_str().into(),
        attempts: 1,
        last_error: Some(reason.into()),
        first_seen_at: "2024-05-01T12:00:00Z".into(),
        updated_at: "2024-05-01T12:00:00Z".into(),
        delivered_at: None,
        last_run_id: None,
        adoptions: None,
        target_version: None,
        skip_reason: Some("<skip>".into()),
        skip_hash: None,
        settings_hash: None,
        status_since: None,
        leika_key: None,
        revision: 0,
    };
    review.app.deps.store.write_batch(&Batch { rows: vec![row], ..Batch::default() }).await.unwrap();
    review
        .app
        .deps
        .store
        .record_document(hostile, "portal-xml\"><b>", "h1", b"<a>\n", "2024-05-01T12:00:00Z")
        .await
        .unwrap();
    review
        .app
        .deps
        .store
        .record_document(hostile, "portal-xml\"><b>", "h2", b"<script>\n", "2024-05-02T12:00:00Z")
        .await
        .unwrap();
    let (state, _rx) = review.state(Some(TOKEN), false);
    state.sources.write().unwrap().insert(
        "evil<i>".into(),
        SourceState { last_error: Some("<u>fetch</u>".into()), last_status: Some("<s>".into()), ..Default::default() },
    );
    let router = router(state);
    let uris = [
        "/runs".to_string(),
        "/quarantine".into(),
        format!("/quarantine?source={}", "evil%3Ci%3E"),
        "/quality".into(),
        format!("/quality?source={}", "evil%3Ci%3E"),
        format!("/items/{}", key_segment(hostile)),
        format!("/items/{}/diff", key_segment(hostile)),
    ];
    for uri in uris {
        let answer = get(&router, &uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
        let body = answer.body.to_lowercase();
        for markup in ["<script", "<img", "<i>", "<b>", "<u>", "<s>", "<h1>evil", "<origin>", "<skip>", "<mapping>"] {
            assert!(!body.contains(markup), "{uri} lets `{markup}` through:\n{}", answer.body);
        }
    }
    let item = get(&router, &format!("/items/{}", key_segment(hostile))).await.body;
    assert!(item.contains("evil/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(item.contains("&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quotes&quot;"));
    let diff = get(&router, &format!("/items/{}/diff", key_segment(hostile))).await.body;
    assert!(diff.contains("<td class=\"sign\">+</td><td>&lt;script&gt;</td>"), "{diff}");
}

/// One test through a real socket: the router served on 127.0.0.1:0 and called with reqwest.
#[tokio::test]
async fn the_router_serves_on_a_real_socket() {
    let review = Review::new().await;
    let (state, mut rx) = review.state(Some(TOKEN), false);
    let server = Server::start(router(state)).await;
    let client = reqwest::Client::new();

    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");

    let item: Value =
        client.get(server.url(&format!("/api/items/{CHANGED}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(item["key"], CHANGED);
    let encoded = client.get(server.url(&format!("/api/items/{}", key_segment(CHANGED)))).send().await.unwrap();
    assert_eq!(encoded.json::<Value>().await.unwrap(), item);

    let denied = client.post(server.url("/api/runs")).json(&json!({"sources": ["owl-forms"]})).send().await.unwrap();
    assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);
    let queued = client
        .post(server.url("/api/runs"))
        .bearer_auth(TOKEN)
        .json(&json!({"sources": ["owl-forms"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), reqwest::StatusCode::ACCEPTED);
    let job = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!((job.trigger, job.sources), (Trigger::Api, vec!["owl-forms".to_string()]));

    let page = client.get(server.url("/quarantine")).send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains(BROKEN_KEY));
    server.stop().await;
}

/// The router on 127.0.0.1 with an OS-chosen port, stopped gracefully.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self { addr, stop, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
    }
}
