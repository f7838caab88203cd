//! The HTTP source against a local ZuFi-like server on 127.0.0.1:0: pagination, conditional GET,
//! retries of transient failures, Retry-After, permanent failures and timeouts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portal_bridge::domain::RunStatus;
use portal_bridge::store::log::EventFilter;
use serde_json::json;

use crate::support::TestApp;

const TOKEN: &str = "s3cr3t-token-value";

/// What the fake ZuFi API does; shared with the handler.
#[derive(Default)]
struct Upstream {
    records: Vec<serde_json::Value>,
    page_size: usize,
    /// Answers to give before serving normally, one per request.
    failures: VecDeque<(StatusCode, Option<&'static str>)>,
    delay: Duration,
    /// Every request: (page, If-None-Match sent, time).
    seen: Vec<(usize, Option<String>, Instant)>,
    not_modified: usize,
}

type Shared = Arc<Mutex<Upstream>>;

async fn zustaendigkeiten(
    State(state): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let if_none_match = headers.get("if-none-match").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (failure, delay) = {
        let mut up = state.lock().unwrap();
        up.seen.push((page, if_none_match.clone(), Instant::now()));
        (up.failures.pop_front(), up.delay)
    };
    tokio::time::sleep(delay).await;
    if let Some((status, retry_after)) = failure {
        let mut response = (status, "{\"fehler\": \"upstream says no\"}").into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", seconds.parse().unwrap());
        }
        return response;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, "{\"fehler\": \"token missing or wrong\"}").into_response();
    }
    let mut up = state.lock().unwrap();
    let start = (page - 1) * up.page_size;
    let body: Vec<_> = up.records.iter().skip(start).take(up.page_size).cloned().collect();
    let body = serde_json::to_string(&body).unwrap();
    let etag = format!("\"{}\"", portal_bridge::domain::ContentHash::of(body.as_bytes()).short());
    if if_none_match.as_deref() == Some(etag.as_str()) {
        up.not_modified += 1;
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    (StatusCode::OK, [("etag", etag), ("content-type", "application/json".into())], body).into_response()
}

/// The same records, paged by `Link: rel="next"` headers with relative URLs.
async fn linked(
    State(state): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let page: usize = query.get("p").and_then(|p| p.parse().ok()).unwrap_or(1);
    let mut up = state.lock().unwrap();
    up.seen.push((page, None, Instant::now()));
    let start = (page - 1) * up.page_size;
    let body: Vec<_> = up.records.iter().skip(start).take(up.page_size).cloned().collect();
    let more = start + up.page_size < up.records.len();
    let mut response = (StatusCode::OK, serde_json::to_string(&body).unwrap()).into_response();
    if more {
        let link = format!("</linked?p={}>; rel=\"next\", </linked?p=1>; rel=\"first\"", page + 1);
        response.headers_mut().insert("link", link.parse().unwrap());
    }
    response
}

fn record(key: &str, name: &str) -> serde_json::Value {
    json!({
        "leistung": { "schluessel": key, "bezeichnung": name, "bezeichnung2": name, "typisierung": "4",
                      "kurztext": format!("Kurztext zu {name}"), "vertrauensniveau": "substanziell" },
        "organisationseinheit": []
    })
}

struct Server {
    state: Shared,
    url: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(records: usize) -> Server {
    let state: Shared = Arc::new(Mutex::new(Upstream {
        records: (0..records).map(|i| record(&format!("990120010010{i:02}"), &format!("Leistung Nr. {i}"))).collect(),
        page_size: 2,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/zustaendigkeiten", get(zustaendigkeiten))
        .route("/linked", get(linked))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/zustaendigkeiten?regionalSchluessel=053340000000", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { state, url, _task: task }
}

/// A bridge with one HTTP source (and, when `with_directory`, a directory source that must not be
/// affected by the HTTP source's failures).
async fn bridge(url: &str, http: &str, with_directory: bool) -> TestApp {
    // Defaults for the [source.http] table; lines in `http` replace them by key.
    let defaults = "pagination = \"page\"\npage_size_param = \"size\"\npage_size = 2\nretry_base_ms = 20\nretry_max_ms = 2000\nmax_retries = 3\nrequests_per_second = 50";
    let mut settings: Vec<(String, String)> = Vec::new();
    for line in defaults.lines().chain(http.lines()).filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').expect("key = value");
        settings.retain(|(k, _)| k != key.trim());
        settings.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    let http: String = settings.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let mappings = crate::support::repo().join("mappings");
    let mut config = format!(
        r#"
[paths]
mappings = {mappings:?}
[[target]]
id = "form-platform"
[[target]]
id = "portal-xml"

[[source]]
id = "zufi"
region = "owl"
kind = "http"
url = "{url}"
split = "array"
key = ".leistung.schluessel"
mappings = ["zufi-to-xzufi"]
[source.http]
{http}
[source.http.auth]
kind = "bearer"
token_file = "token"
"#
    );
    if with_directory {
        crate::support::copy_dir(&crate::support::repo().join("demo/soest"), &dir.path().join("soest"));
        config.push_str(
            r#"
[[source]]
id = "soest-services"
region = "soest"
kind = "directory"
path = "soest"
include = ["services.json"]
split = "array"
key = ".leistung.schluessel"
mappings = ["zufi-to-xzufi"]
"#,
        );
    }
    TestApp::with_config(dir, &config).await
}

#[tokio::test]
async fn pages_are_followed_and_a_304_costs_no_mapping_work() {
    let server = serve(5).await;
    let app = bridge(&server.url, "", false).await;
    let first = app.migrate().await;
    assert_eq!(first.status, RunStatus::Ok, "{:?} {:?}", first.problems, first.errors);
    assert_eq!(first.counts.new, 5, "5 records on 3 pages of 2");
    assert_eq!(app.outbox_files().len(), 5);
    let pages: Vec<usize> = server.state.lock().unwrap().seen.iter().map(|s| s.0).collect();
    assert_eq!(pages, vec![1, 2, 3]);

    let second = app.migrate().await;
    assert_eq!(second.counts.unchanged, 5);
    assert_eq!((second.counts.new, second.counts.updated), (0, 0));
    {
        let up = server.state.lock().unwrap();
        assert_eq!(up.not_modified, 3, "every page answered 304");
        assert!(up.seen[3..].iter().all(|s| s.1.is_some()), "the second run sent If-None-Match");
    }
    let events = app.deps.store.events(&EventFilter { run_id: second.run_id, ..Default::default() }).await.unwrap();
    assert!(events.iter().all(|e| e.item_key.is_none()), "no item was mapped or delivered: {events:?}");
}

#[tokio::test]
async fn a_503_is_retried_and_a_429_waits_for_retry_after() {
    let server = serve(2).await;
    server.state.lock().unwrap().failures =
        VecDeque::from([(StatusCode::SERVICE_UNAVAILABLE, None), (StatusCode::TOO_MANY_REQUESTS, Some("1"))]);
    let app = bridge(&server.url, "", false).await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.errors);
    assert_eq!(report.counts.new, 2);
    let up = server.state.lock().unwrap();
    assert_eq!(up.seen.len(), 4, "503, 429, page 1, page 2");
    let waited = up.seen[2].2 - up.seen[1].2;
    assert!(waited >= Duration::from_millis(950), "Retry-After: 1 was honoured, waited {waited:?}");
}

#[tokio::test]
async fn a_401_fails_only_its_source_with_a_clear_message_and_no_secret() {
    let server = serve(2).await;
    server.state.lock().unwrap().failures = VecDeque::from([(StatusCode::UNAUTHORIZED, None)]);
    let app = bridge(&server.url, "", true).await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.counts.new, 2, "the directory source's two services are delivered");
    assert_eq!(server.state.lock().unwrap().seen.len(), 1, "a permanent failure is not retried");
    let error = report.errors.join("\n");
    assert!(
        error.contains("source zufi") && error.contains("HTTP 401") && error.contains("upstream says no"),
        "{error}"
    );
    let events = app.deps.store.events(&EventFilter::default()).await.unwrap();
    assert!(events.iter().any(|e| e.level == "error" && e.message.contains("401")));
    assert!(!format!("{report:?}{events:?}").contains(TOKEN), "the token never appears");
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_fails_the_source() {
    let server = serve(2).await;
    server.state.lock().unwrap().delay = Duration::from_secs(5);
    let app = bridge(&server.url, "request_timeout_secs = 1\nmax_retries = 1", true).await;
    let started = Instant::now();
    let report = app.migrate().await;
    assert!(started.elapsed() < Duration::from_secs(5), "the bridge did not wait for the slow server");
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.counts.new, 2, "the other source still went through");
    let error = report.errors.join("\n");
    assert!(error.contains("timed out") && error.contains("2 attempt"), "{error}");
}

#[tokio::test]
async fn link_headers_are_followed() {
    let server = serve(5).await;
    let url = server.url.replace("/zustaendigkeiten?regionalSchluessel=053340000000", "/linked");
    let app = bridge(&url, "pagination = \"link\"", false).await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.errors);
    assert_eq!(report.counts.new, 5);
    let pages: Vec<usize> = server.state.lock().unwrap().seen.iter().map(|s| s.0).collect();
    assert_eq!(pages, vec![1, 2, 3]);
}
