//! portal-sim on its own: the contract of docs/portal-api.md, idempotent replays and injected faults.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portal_sim::{SimConfig, SimState, SimStats, WITHDRAWN};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TARGET: &str = "portal-xml";
const KEY: &str = "aachen-forms/S05000101@1.0";
const DOC_V1: &str = "<leistung><name>Hundesteuer</name></leistung>";
const DOC_V2: &str = "<leistung><name>Hundesteuer (neu)</name></leistung>";

/// A simulator on 127.0.0.1:0 served by a task that is aborted when this is dropped.
struct Sim {
    base: String,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(portal_sim::serve(listener, SimState::new(config)));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    Sim { base, client, task }
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The idempotency key of docs/portal-api.md for delivering `doc`.
fn put_key(key: &str, target: &str, doc: &str) -> String {
    sha256(&format!("{key}\n{target}\n{}", sha256(doc)))
}

/// The idempotency key of docs/portal-api.md for withdrawing.
fn delete_key(key: &str, target: &str) -> String {
    sha256(&format!("{key}\n{target}\nwithdrawn"))
}

/// The precondition a write sends.
enum Pre<'a> {
    Create,
    Match(&'a str),
    None,
}

impl Sim {
    fn item_url(&self, target: &str, key: &str) -> String {
        format!(
            "{}/targets/{}/items/{}",
            self.base,
            portal_sim::encode_segment(target),
            portal_sim::encode_segment(key)
        )
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        request.bearer_auth("sim-token")
    }

    fn put(&self, key: &str, doc: &str, idempotency: &str, pre: Pre) -> RequestBuilder {
        let request = self
            .authed(self.client.put(self.item_url(TARGET, key)))
            .header("content-type", "application/xml")
            .header("idempotency-key", idempotency)
            .body(doc.to_owned());
        match pre {
            Pre::Create => request.header("if-none-match", "*"),
            Pre::Match(version) => request.header("if-match", format!("\"{version}\"")),
            Pre::None => request,
        }
    }

    /// PUT `doc` with its contract idempotency key.
    async fn deliver(&self, key: &str, doc: &str, pre: Pre<'_>) -> Response {
        self.put(key, doc, &put_key(key, TARGET, doc), pre).send().await.unwrap()
    }

    async fn withdraw(&self, key: &str, version: &str) -> Response {
        self.authed(self.client.delete(self.item_url(TARGET, key)))
            .header("idempotency-key", delete_key(key, TARGET))
            .header("if-match", format!("\"{version}\""))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, key: &str) -> Response {
        self.authed(self.client.get(self.item_url(TARGET, key))).send().await.unwrap()
    }

    async fn stats(&self) -> SimStats {
        let response = self.client.get(format!("{}/_sim/stats", self.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn configure(&self, patch: Value) -> Response {
        self.client.post(format!("{}/_sim/config", self.base)).json(&patch).send().await.unwrap()
    }
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn create_update_and_failed_preconditions() {
    let sim = start(SimConfig::default()).await;

    let created = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(header(&created, "etag"), Some("\"v1\""));
    assert_eq!(header(&created, "idempotent-replayed"), None);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body, json!({"version": "v1", "sha256": sha256(DOC_V1)}));

    let updated = sim.deliver(KEY, DOC_V2, Pre::Match("v1")).await;
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(header(&updated, "etag"), Some("\"v2\""));
    let body: Value = updated.json().await.unwrap();
    assert_eq!(body, json!({"version": "v2", "sha256": sha256(DOC_V2)}));

    // Stale If-Match, If-None-Match on an existing item, If-Match on an absent item: 412.
    let stale = sim.put(KEY, "<x/>", &put_key(KEY, TARGET, "<x/>"), Pre::Match("v1")).send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = stale.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("v2"), "{body}");
    let exists = sim.put(KEY, "<y/>", &put_key(KEY, TARGET, "<y/>"), Pre::Create).send().await.unwrap();
    assert_eq!(exists.status(), StatusCode::PRECONDITION_FAILED);
    let absent = sim.deliver("other", DOC_V1, Pre::Match("v1")).await;
    assert_eq!(absent.status(), StatusCode::PRECONDITION_FAILED);

    // Malformed requests: no precondition 428, both 400, no Idempotency-Key 400.
    let neither = sim.deliver("other", DOC_V1, Pre::None).await;
    assert_eq!(neither.status(), StatusCode::PRECONDITION_REQUIRED);
    let both = sim.put("other", DOC_V1, "k-both", Pre::Create).header("if-match", "\"v1\"").send().await.unwrap();
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    let no_key = sim
        .authed(sim.client.put(sim.item_url(TARGET, "other")))
        .header("if-none-match", "*")
        .body(DOC_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    let body: Value = no_key.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Idempotency-Key"));

    let stats = sim.stats().await;
    assert_eq!(stats.requests, 8);
    assert_eq!(stats.effect_count(TARGET, KEY, &sha256(DOC_V1)), 1);
    assert_eq!(stats.effect_count(TARGET, KEY, &sha256(DOC_V2)), 1);
    assert_eq!(stats.total_effects(), 2);
    assert_eq!(stats.conflicts, 3);
    assert_eq!(stats.client_errors, 3);
    assert_eq!(stats.stored, 1);
}

#[tokio::test]
async fn replays_answer_the_first_response_without_a_second_effect() {
    let sim = start(SimConfig::default()).await;
    let first = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(first.status(), StatusCode::CREATED);

    let again = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(header(&again, "etag"), Some("\"v1\""));
    assert_eq!(header(&again, "idempotent-replayed"), Some("true"));
    let body: Value = again.json().await.unwrap();
    assert_eq!(body, json!({"version": "v1", "sha256": sha256(DOC_V1)}));

    // The version moved on; a late retry of the first request still sees its original success
    // (replay comes before the precondition, which would now fail).
    assert_eq!(sim.deliver(KEY, DOC_V2, Pre::Match("v1")).await.status(), StatusCode::OK);
    let late = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(late.status(), StatusCode::CREATED);
    assert_eq!(header(&late, "etag"), Some("\"v1\""));
    assert_eq!(header(&late, "idempotent-replayed"), Some("true"));

    // Same key, different body: 422, no effect.
    let reused = sim.put(KEY, "<other/>", &put_key(KEY, TARGET, DOC_V1), Pre::Match("v2")).send().await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(header(&reused, "idempotent-replayed").is_none());

    let stats = sim.stats().await;
    assert_eq!(stats.replays, 2);
    assert_eq!(stats.effect_count(TARGET, KEY, &sha256(DOC_V1)), 1);
    assert_eq!(stats.effect_count(TARGET, KEY, &sha256(DOC_V2)), 1);
    assert_eq!(stats.total_effects(), 2);
    let held = sim.get(KEY).await;
    assert_eq!(held.text().await.unwrap(), DOC_V2);
}

#[tokio::test]
async fn get_returns_body_version_and_hash() {
    let sim = start(SimConfig::default()).await;
    assert_eq!(sim.get(KEY).await.status(), StatusCode::NOT_FOUND);
    sim.deliver(KEY, DOC_V1, Pre::Create).await;

    let held = sim.get(KEY).await;
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(header(&held, "etag"), Some("\"v1\""));
    assert_eq!(header(&held, "x-content-sha256"), Some(sha256(DOC_V1).as_str()));
    assert_eq!(header(&held, "content-type"), Some("application/xml"));
    assert_eq!(held.text().await.unwrap(), DOC_V1);
}

#[tokio::test]
async fn delete_withdraws_once() {
    let sim = start(SimConfig::default()).await;
    sim.deliver(KEY, DOC_V1, Pre::Create).await;

    let without_if_match = sim
        .authed(sim.client.delete(sim.item_url(TARGET, KEY)))
        .header("idempotency-key", "k-no-if-match")
        .send()
        .await
        .unwrap();
    assert_eq!(without_if_match.status(), StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(sim.withdraw(KEY, "v7").await.status(), StatusCode::PRECONDITION_FAILED);

    let deleted = sim.withdraw(KEY, "v1").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.get(KEY).await.status(), StatusCode::NOT_FOUND);
    // The same withdrawal again is a replay; a new one finds nothing.
    let replayed = sim.withdraw(KEY, "v1").await;
    assert_eq!(replayed.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&replayed, "idempotent-replayed"), Some("true"));
    let fresh = sim
        .authed(sim.client.delete(sim.item_url(TARGET, KEY)))
        .header("idempotency-key", "k-another-withdrawal")
        .header("if-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::NOT_FOUND);

    // Versions are not reused after a withdrawal.
    let recreated = sim.deliver(KEY, DOC_V2, Pre::Create).await;
    assert_eq!(recreated.status(), StatusCode::CREATED);
    assert_eq!(header(&recreated, "etag"), Some("\"v2\""));

    let stats = sim.stats().await;
    assert_eq!(stats.effect_count(TARGET, KEY, WITHDRAWN), 1);
    assert_eq!(stats.total_effects(), 3);
    assert_eq!(stats.replays, 1);
    assert_eq!(stats.conflicts, 1);
    assert_eq!(stats.stored, 1);
}

#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let sim = start(SimConfig { token: "t0ken".to_owned(), ..SimConfig::default() }).await;
    let url = sim.item_url(TARGET, KEY);
    let none = sim.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let wrong = sim.client.get(&url).bearer_auth("sim-token").send().await;
    assert_eq!(wrong.unwrap().status(), StatusCode::UNAUTHORIZED);
    let put = sim
        .client
        .put(&url)
        .header("idempotency-key", "k")
        .header("if-none-match", "*")
        .body(DOC_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::UNAUTHORIZED);
    let right = sim.client.get(&url).bearer_auth("t0ken").send().await;
    assert_eq!(right.unwrap().status(), StatusCode::NOT_FOUND);

    let stats = sim.stats().await;
    assert_eq!((stats.requests, stats.unauthorized), (4, 3));
    assert_eq!(stats.total_effects(), 0);
}

/// Statuses and Retry-After headers of `n` GETs against a simulator with 503/429 injection.
async fn fault_pattern(sim: &Sim, n: usize) -> Vec<(u16, Option<String>)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let response = sim.get(KEY).await;
        seen.push((response.status().as_u16(), header(&response, "retry-after").map(str::to_owned)));
    }
    seen
}

#[tokio::test]
async fn injected_503_and_429_follow_the_seed() {
    let config = SimConfig { fail_rate: 0.4, throttle_every: 3, retry_after_secs: 7, seed: 42, ..SimConfig::default() };
    let sim = start(config.clone()).await;
    let pattern = fault_pattern(&sim, 30).await;
    for (i, (status, retry_after)) in pattern.iter().enumerate() {
        if (i + 1) % 3 == 0 {
            assert_eq!((*status, retry_after.as_deref()), (429, Some("7")), "#{i}");
        } else {
            assert!(matches!(status, 503 | 404), "#{i}: {status}");
            assert!(retry_after.is_none());
        }
    }
    let unavailable = pattern.iter().filter(|(s, _)| *s == 503).count() as u64;
    assert!(unavailable > 0 && unavailable < 20, "{pattern:?}");

    let stats = sim.stats().await;
    assert_eq!(stats.requests, 30);
    assert_eq!(stats.faults.throttled, 10);
    assert_eq!(stats.faults.unavailable, unavailable);

    // The same seed gives the same pattern; another seed another one.
    let twin = start(config.clone()).await;
    assert_eq!(fault_pattern(&twin, 30).await, pattern);
    let other = start(SimConfig { seed: 7, ..config }).await;
    assert_ne!(fault_pattern(&other, 30).await, pattern);

    // "Fixing the portal" at runtime.
    let fixed = sim.client.post(format!("{}/_sim/reset-faults", sim.base)).send().await.unwrap();
    assert_eq!(fixed.status(), StatusCode::OK);
    let faults: Value = fixed.json().await.unwrap();
    assert_eq!(faults["fail_rate"], 0.0);
    assert_eq!(faults["throttle_every"], 0);
    assert!(fault_pattern(&sim, 10).await.iter().all(|(s, _)| *s == 404));

    // The JSON of the stats uses the documented names.
    let raw: Value = sim.client.get(format!("{}/_sim/stats", sim.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(raw["faults"]["429"], 10);
    assert_eq!(raw["faults"]["503"], unavailable);
    assert_eq!(raw["faults"]["reset"], 0);
    for field in ["requests", "effects", "replays", "conflicts", "rejections", "stored"] {
        assert!(raw.get(field).is_some(), "{field} missing in {raw}");
    }
}

#[tokio::test]
async fn a_reset_applies_the_effect_but_the_client_sees_no_response() {
    let sim = start(SimConfig { reset_rate: 1.0, ..SimConfig::default() }).await;

    let lost = sim.put(KEY, DOC_V1, &put_key(KEY, TARGET, DOC_V1), Pre::Create).send().await;
    let error = lost.expect_err("the connection is dropped before a response");
    assert!(error.status().is_none(), "{error:?}");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(error.is_request(), "{error:?}");

    // The effect happened exactly once, and the client was not silently retried.
    let stats = sim.stats().await;
    assert_eq!(stats.effect_count(TARGET, KEY, &sha256(DOC_V1)), 1);
    assert_eq!(stats.faults.reset, 1);
    assert_eq!(stats.replays, 0);
    assert_eq!(stats.stored, 1);
    let held = sim.get(KEY).await;
    assert_eq!(header(&held, "x-content-sha256"), Some(sha256(DOC_V1).as_str()));

    // A retry with the same key is a replay of the lost answer (reset applies to effects only).
    let retried = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(header(&retried, "etag"), Some("\"v1\""));
    assert_eq!(header(&retried, "idempotent-replayed"), Some("true"));

    // Withdrawals are cut off the same way.
    let lost = sim
        .authed(sim.client.delete(sim.item_url(TARGET, KEY)))
        .header("idempotency-key", delete_key(KEY, TARGET))
        .header("if-match", "\"v1\"")
        .send()
        .await;
    assert!(lost.is_err());
    assert_eq!(sim.get(KEY).await.status(), StatusCode::NOT_FOUND);
    let retried = sim.withdraw(KEY, "v1").await;
    assert_eq!(retried.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&retried, "idempotent-replayed"), Some("true"));

    // On the wire: not a single byte of the answer, not even the status line.
    let raw = raw_exchange(
        &sim.base,
        &format!(
            "PUT /targets/{TARGET}/items/raw HTTP/1.1\r\nHost: sim\r\n\
             Authorization: Bearer sim-token\r\nIdempotency-Key: raw-1\r\n\
             If-None-Match: *\r\nContent-Length: 3\r\n\r\nraw"
        ),
    )
    .await;
    assert_eq!(raw, "");

    let stats = sim.stats().await;
    assert_eq!(stats.effect_count(TARGET, KEY, &sha256(DOC_V1)), 1);
    assert_eq!(stats.effect_count(TARGET, KEY, WITHDRAWN), 1);
    assert_eq!(stats.effect_count(TARGET, "raw", &sha256("raw")), 1);
    assert_eq!(stats.total_effects(), 3);
    assert_eq!(stats.faults.reset, 3);
    assert_eq!(stats.replays, 2);
}

/// Sends `request` on a fresh connection and returns everything received until it closes.
async fn raw_exchange(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received));
    // A reset instead of an orderly close is fine too; what matters is what arrived before it.
    let _ = read.await.expect("the simulator closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn reset_rate_below_one_follows_the_seed() {
    let sim = start(SimConfig { reset_rate: 0.5, seed: 3, ..SimConfig::default() }).await;
    let mut lost = 0;
    for i in 0..20 {
        let key = format!("item-{i}");
        match sim.deliver_result(&key).await {
            Ok(status) => assert_eq!(status, StatusCode::CREATED),
            Err(_) => lost += 1,
        }
    }
    assert!(lost > 0 && lost < 20, "{lost}");
    let stats = sim.stats().await;
    assert_eq!(stats.faults.reset, lost);
    assert_eq!(stats.total_effects(), 20);
    assert_eq!(stats.stored, 20);
}

impl Sim {
    async fn deliver_result(&self, key: &str) -> reqwest::Result<StatusCode> {
        self.put(key, DOC_V1, &put_key(key, TARGET, DOC_V1), Pre::Create).send().await.map(|r| r.status())
    }
}

#[tokio::test]
async fn conflict_and_reject_keys_until_the_portal_is_fixed() {
    let sim = start(SimConfig {
        conflict_keys: vec![KEY.to_owned()],
        reject_keys: vec!["bad".to_owned()],
        ..SimConfig::default()
    })
    .await;

    let conflict = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(conflict.status(), StatusCode::PRECONDITION_FAILED);
    let rejected = sim.deliver("bad", DOC_V1, Pre::Create).await;
    assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&rejected, "content-type"), Some("application/json"));
    let body: Value = rejected.json().await.unwrap();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");

    let stats = sim.stats().await;
    assert_eq!((stats.conflicts, stats.rejections), (1, 1));
    assert_eq!(stats.total_effects(), 0);

    // Failures are not remembered: once fixed, the same request (same key) goes through.
    let patched = sim.configure(json!({"conflict_keys": [], "reject_keys": []})).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let faults: Value = patched.json().await.unwrap();
    assert_eq!(faults["conflict_keys"], json!([]));
    let created = sim.deliver(KEY, DOC_V1, Pre::Create).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(header(&created, "idempotent-replayed").is_none());
    assert_eq!(sim.deliver("bad", DOC_V1, Pre::Create).await.status(), StatusCode::CREATED);

    // A conflict key blocks withdrawals too.
    sim.configure(json!({"conflict_keys": [KEY]})).await;
    assert_eq!(sim.withdraw(KEY, "v1").await.status(), StatusCode::PRECONDITION_FAILED);

    // Invalid patches change nothing.
    let bad_rate = sim.configure(json!({"fail_rate": 2.0})).await;
    assert_eq!(bad_rate.status(), StatusCode::BAD_REQUEST);
    let unknown = sim.configure(json!({"fail_rat": 0.5})).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let current: Value =
        sim.client.get(format!("{}/_sim/config", sim.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(current["fail_rate"], 0.0);
    assert_eq!(current["conflict_keys"], json!([KEY]));
}

#[tokio::test]
async fn an_editor_change_makes_the_next_write_conflict() {
    let sim = start(SimConfig::default()).await;
    sim.deliver(KEY, DOC_V1, Pre::Create).await;

    let edit_url = format!("{}/_sim/edit/targets/{TARGET}/items/{}", sim.base, portal_sim::encode_segment(KEY));
    let edited = sim.client.put(&edit_url).body("<leistung>edited by hand</leistung>").send().await.unwrap();
    assert_eq!(edited.status(), StatusCode::OK);
    assert_eq!(header(&edited, "etag"), Some("\"v2\""));

    let update = sim.deliver(KEY, DOC_V2, Pre::Match("v1")).await;
    assert_eq!(update.status(), StatusCode::PRECONDITION_FAILED);
    let held = sim.get(KEY).await;
    assert_eq!(header(&held, "etag"), Some("\"v2\""));
    assert_eq!(held.text().await.unwrap(), "<leistung>edited by hand</leistung>");

    let stats = sim.stats().await;
    assert_eq!(stats.edits, 1);
    assert_eq!(stats.conflicts, 1);
    assert_eq!(stats.total_effects(), 1);
}

#[tokio::test]
async fn keys_with_an_encoded_slash_are_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(SimConfig { store_dir: Some(dir.path().to_owned()), ..SimConfig::default() }).await;
    assert!(sim.item_url(TARGET, KEY).ends_with("/aachen-forms%2FS05000101@1.0"));

    assert_eq!(sim.deliver(KEY, DOC_V1, Pre::Create).await.status(), StatusCode::CREATED);
    assert_eq!(sim.get(KEY).await.text().await.unwrap(), DOC_V1);
    let stats = sim.stats().await;
    assert_eq!(stats.effects[0].key, KEY);

    // Unencoded, the slash makes two segments: no such resource.
    let split = sim.authed(sim.client.get(format!("{}/targets/{TARGET}/items/{KEY}", sim.base))).send().await.unwrap();
    assert_eq!(split.status(), StatusCode::NOT_FOUND);

    // The mirror file: one per target and key, percent-encoded.
    let file = dir.path().join(TARGET).join("aachen-forms%2FS05000101@1.0");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), DOC_V1);
    sim.withdraw(KEY, "v1").await;
    assert!(!file.exists());
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let sim = start(SimConfig { latency_ms: 150, ..SimConfig::default() }).await;
    let started = Instant::now();
    assert_eq!(sim.get(KEY).await.status(), StatusCode::NOT_FOUND);
    assert!(started.elapsed() >= Duration::from_millis(150));
    sim.configure(json!({"latency_ms": 0})).await;
    let started = Instant::now();
    sim.get(KEY).await;
    assert!(started.elapsed() < Duration::from_millis(150));
}

/// Kills the child process when dropped, also when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_its_address_and_serves() {
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_portal-sim"))
            .args(["--listen", "127.0.0.1:0", "--token", "bin-token"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
            line
        }),
    )
    .await
    .expect("portal-sim prints its address")
    .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let url = format!("{base}/targets/{TARGET}/items/{}", portal_sim::encode_segment(KEY));
    let response = client.get(&url).bearer_auth("bin-token").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let stats: SimStats = client.get(format!("{base}/_sim/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats.requests, 1);
}
