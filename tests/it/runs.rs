//! Issue 15, several writers, crashes and time: one writer per source at a time whoever starts the
//! work (daemon, API, CLI), leases on the database's clock, runs that always end, and API runs that
//! are never dropped. Every test runs against portal-sim on loopback.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portal_bridge::domain::Clock;
use portal_bridge::store::Store;
use portal_sim::SimConfig;

use crate::delivery::{Sim, sim};
use crate::support::TestApp;

const ADMIN: &str = "admin-secret";

/// A bridge with one source `feed` of `count` JSON records delivered to the simulator, an admin
/// API on loopback, `daemon` lines in `[daemon]` and `source` lines in the source's table.
async fn bridge(sim: &Sim, count: usize, concurrency: usize, daemon: &str, source: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(dir.path().join("token"), "sim-token").unwrap();
    std::fs::write(dir.path().join("admin-token"), ADMIN).unwrap();
    crate::delivery::write_records(dir.path(), count, "v1");
    std::fs::write(
        dir.path().join("mappings/echo.toml"),
        "name = \"echo\"\nprogram = \"{id: .id, name: .name}\"\n[input]\nformat = \"json\"\n\
         [output]\ntarget = \"portal\"\nformat = \"json\"\n",
    )
    .unwrap();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
[daemon]
share_batch = 0
{daemon}

[[target]]
id = "portal"
delivery = "http"
[target.http]
url = "{url}"
token_file = "token"
concurrency = {concurrency}
requests_per_second = 1000
max_retries = 4
retry_base_ms = 5
retry_max_ms = 200
request_timeout_secs = 10

[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
split = "array"
key = ".id"
mappings = ["echo"]
{source}
"#,
        url = sim.url
    );
    TestApp::with_config(dir, &config).await
}

/// Runs one SQL statement with text parameters on either backend (test setup that no API offers).
pub(crate) async fn execute(store: &Store, sql: &str, binds: &[&str]) -> u64 {
    match store {
        Store::Sqlite(pool) => {
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(*bind);
            }
            query.execute(pool).await.unwrap().rows_affected()
        }
        Store::Postgres(pool) => {
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(*bind);
            }
            query.execute(pool).await.unwrap().rows_affected()
        }
    }
}

/// Gives the lease `source:feed` to `holder` until `seconds` from now (replacing any holder).
async fn plant_lease(store: &Store, holder: &str, seconds: i64) {
    let until = portal_bridge::store::timestamp(chrono::Utc::now() + chrono::Duration::seconds(seconds));
    execute(store, "DELETE FROM leases WHERE name = $1", &["source:feed"]).await;
    execute(
        store,
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)",
        &["source:feed", holder, &until],
    )
    .await;
}

/// Waits (bounded) until the simulator has seen `requests` requests.
async fn until_requests(sim: &Sim, requests: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.state.stats().await.requests < requests {
        assert!(Instant::now() < deadline, "the simulator saw {requests} requests");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) until run `id` has finished and returns its row.
async fn finished(app: &TestApp, id: i64) -> portal_bridge::store::runs::RunRow {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(run) = app.deps.store.run(id).await.unwrap().filter(|r| r.finished_at.is_some()) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every item of the feed is delivered and took exactly one effect at the portal; nothing else did.
async fn assert_exactly_once(app: &TestApp, sim: &Sim, count: usize) {
    let rows = app.deps.store.items(None, Some("feed"), i64::MAX).await.unwrap();
    assert_eq!(rows.len(), count);
    let stats = sim.state.stats().await;
    for row in &rows {
        assert!(matches!(row.status.as_str(), "delivered" | "unchanged"), "{row:?}");
        let hash = row.output_hash.as_deref().unwrap();
        assert_eq!(stats.effect_count("portal", &row.item_key, hash), 1, "{}: one effect", row.item_key);
    }
    assert_eq!(
        stats.total_effects(),
        count as u64,
        "no other effects: {:?}",
        stats.effects.iter().filter(|e| e.count > 1).collect::<Vec<_>>()
    );
    assert!(app.deps.store.intents().await.unwrap().is_empty(), "no unfinished deliveries remain");
}

/// No run counted more pairs than exist, each document was counted `new` once over all runs, no two
/// runs of the feed were going at the same time and none is left `running`.
async fn assert_runs_add_up(app: &TestApp, pairs: i64) {
    let mut runs = app.deps.store.runs(1000).await.unwrap();
    runs.reverse();
    let mut new = 0;
    for run in &runs {
        let counted = run.new_count
            + run.updated_count
            + run.unchanged_count
            + run.failed_count
            + run.quarantined_count
            + run.withdrawn_count;
        assert!(counted <= pairs, "run {} counted {counted} of {pairs} pairs: {run:?}", run.id);
        assert_ne!(run.status, "running", "run {} ended: {run:?}", run.id);
        new += run.new_count;
    }
    assert_eq!(new, pairs, "each document counted new once: {runs:#?}");
    let mut spans: Vec<(&str, &str)> =
        runs.iter().map(|r| (r.started_at.as_str(), r.finished_at.as_deref().unwrap_or("9999"))).collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two runs of the feed were going at once: {pair:?} in {runs:#?}");
    }
}

async fn post(base: &str, path: &str, body: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let answer = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text)))
}

/// A clock an hour behind the database's.
struct Behind;

impl Clock for Behind {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() - chrono::Duration::hours(1)
    }
}

/// Finding 12: an instance whose clock is an hour behind holds a source's lease while it runs; a
/// second instance must not take that lease for expired (the database's clock decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_judged_by_the_database_clock_not_by_an_instances_clock() {
    let sim = sim(SimConfig { latency_ms: 20, ..Default::default() }).await;
    let app = bridge(&sim, 200, 1, "lease_secs = 5", "").await;
    let behind = app.start_daemon_with_clock(Arc::new(Behind)).await;
    let right = app.start_daemon().await;
    let (status, body) = post(&behind.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    until_requests(&sim, 20).await;
    let (status, body) = post(&right.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    let holder = app.deps.store.leases().await.unwrap().into_iter().find(|l| l.name == "source:feed").unwrap().holder;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "the source is busy: {body}");
    assert!(body.to_string().contains(&holder), "the answer names the holder {holder}: {body}");
    let first = body_run_id(&post(&behind.base, "/api/runs", r#"{"sources": ["feed"]}"#).await.1);
    assert!(first.is_none(), "a run of a busy source is not started");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app.deps.store.runs(10).await.unwrap().iter().all(|r| r.finished_at.is_some()) {
        assert!(Instant::now() < deadline, "the run finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    behind.shutdown.cancel();
    right.shutdown.cancel();
    behind.task.await.unwrap().unwrap();
    right.task.await.unwrap().unwrap();
    let runs = app.deps.store.runs(10).await.unwrap();
    assert_eq!(runs.len(), 1, "only the lease holder ran the source: {runs:#?}");
    assert_exactly_once(&app, &sim, 200).await;
}

fn body_run_id(body: &serde_json::Value) -> Option<i64> {
    body.get("run_id").and_then(serde_json::Value::as_i64)
}

/// Finding 12: a run whose lease another holder took stops before its next write and ends as
/// `aborted`, naming the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lease_stops_before_its_next_write() {
    let sim = sim(SimConfig { latency_ms: 20, ..Default::default() }).await;
    let app = bridge(&sim, 300, 2, "lease_secs = 5", "").await;
    let daemon = app.start_daemon().await;
    let (status, body) = post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    until_requests(&sim, 30).await;
    let run_id = app.deps.store.runs(1).await.unwrap()[0].id;
    let stolen = execute(
        &app.deps.store,
        "UPDATE leases SET holder = $1, expires_at = $2 WHERE name = $3",
        &["thief:1:beef#1", "2999-01-01T00:00:00.000Z", "source:feed"],
    )
    .await;
    assert_eq!(stolen, 1, "the run held the lease");
    let written = |rows: Vec<portal_bridge::store::ledger::LedgerRow>| {
        rows.into_iter().filter(|r| r.last_run_id == Some(run_id)).map(|r| (r.item_key, r.status)).collect::<Vec<_>>()
    };
    let at_theft = written(app.deps.store.items(None, Some("feed"), i64::MAX).await.unwrap());
    let run = finished(&app, run_id).await;
    let after = written(app.deps.store.items(None, Some("feed"), i64::MAX).await.unwrap());
    assert_eq!(after, at_theft, "nothing was written after the lease was lost");
    assert_eq!(run.status, "aborted", "{run:?}");
    assert!(run.message.as_deref().unwrap_or_default().contains("thief:1:beef#1"), "{run:?}");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

/// Finding 12: `migrate` and `retry` take the per-source lease; when busy they exit 4 naming the
/// holder, or wait up to `--wait` seconds for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_migrate_and_retry_take_the_lease_exit_4_when_busy_or_wait_for_it() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 5, 2, "lease_secs = 5", "").await;
    app.command().args(["migrate"]).assert().success();
    let holder = "other-host:4242:beef#1";
    plant_lease(&app.deps.store, holder, 60).await;
    for args in [&["migrate"][..], &["migrate", "--source", "feed"], &["retry", "feed/item-0001"]] {
        let out = app.command().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?} is busy: {stderr}");
        assert!(stderr.contains(holder) && stderr.contains("feed"), "{args:?} names the source and holder: {stderr}");
    }
    // The holder goes away within the wait: the run happens.
    plant_lease(&app.deps.store, holder, 2).await;
    let out = app.command().args(["migrate", "--wait", "30", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["unchanged"], 5, "{json}");
    assert!(app.deps.store.leases().await.unwrap().is_empty(), "the lease is given back");
}

/// Finding 12 (and the issue's test): a daemon on a schedule and a CLI `migrate` and `retry` on the
/// same source at once: one run at a time, exactly one effect per document, counts ≤ pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_and_cli_migrate_and_retry_at_once_take_one_effect_per_document() {
    let sim = sim(SimConfig { latency_ms: 20, ..Default::default() }).await;
    let app = bridge(&sim, 300, 4, "lease_secs = 3", "schedule = \"* * * * * *\"").await;
    let mut daemon = app.spawn_daemon();
    until_requests(&sim, 20).await;
    let spawn =
        |args: &[&str]| app.std_command().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let migrate = spawn(&["migrate", "--wait", "90"]);
    let retry = spawn(&["retry", "feed/item-0001", "feed/item-0299", "--wait", "90"]);
    for child in [migrate, retry] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::process::Command::new("kill").arg("-TERM").arg(daemon.id().to_string()).status().unwrap();
    assert!(daemon.wait().unwrap().success());
    assert_exactly_once(&app, &sim, 300).await;
    assert_runs_add_up(&app, 300).await;
}

/// Finding 12: `overlap = "replace"` stops the old run, its deliveries included, before the new run
/// starts; the old run ends as `interrupted` and nothing takes effect twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_replace_stops_the_old_run_and_its_deliveries_first() {
    let sim = sim(SimConfig { latency_ms: 30, ..Default::default() }).await;
    let app = bridge(&sim, 200, 4, "lease_secs = 5", "overlap = \"replace\"").await;
    let daemon = app.start_daemon().await;
    let (status, first) = post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{first}");
    until_requests(&sim, 40).await;
    let (status, second) = post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{second}");
    let second = body_run_id(&second).expect("the answer names the new run");
    let old = app.deps.store.runs(10).await.unwrap().into_iter().find(|r| r.id != second).expect("the old run");
    let new = finished(&app, second).await;
    assert_eq!(new.status, "ok", "{new:?}");
    let old = finished(&app, old.id).await;
    assert_eq!(old.status, "interrupted", "{old:?}");
    assert!(old.finished_at <= Some(new.started_at.clone()), "the old run ended before the new one began");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
    assert_exactly_once(&app, &sim, 200).await;
    assert_runs_add_up(&app, 200).await;
}

/// Finding 14: a `migrate` killed mid-run is closed as `aborted` by the next start, and the pairs the
/// next run reconciles are counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_migrate_is_closed_as_aborted_at_the_next_start_and_counted_once() {
    let sim = sim(SimConfig { latency_ms: 30, ..Default::default() }).await;
    let app = bridge(&sim, 300, 4, "lease_secs = 2", "").await;
    let mut child = app.std_command().args(["migrate"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    until_requests(&sim, 60).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = app.deps.store.runs(1).await.unwrap()[0].clone();
    assert_eq!(killed.status, "running");
    let out = app.command().args(["migrate", "--wait", "30", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = app.deps.store.run(killed.id).await.unwrap().unwrap();
    assert_eq!(killed.status, "aborted", "{killed:?}");
    assert!(killed.finished_at.is_some());
    assert_exactly_once(&app, &sim, 300).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counted: i64 = ["new", "updated", "unchanged", "failed", "quarantined", "withdrawn", "conflict"]
        .iter()
        .map(|k| json[k].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 300, "every pair counted once: {json}");
}

/// Finding 14: a delivery that an earlier run left unfinished and that this run reconciles is one
/// pair of the run, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciled_pair_is_counted_once() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 3, 2, "", "").await;
    assert_eq!(app.migrate().await.counts.new, 3);
    let row = app.deps.store.item("feed/item-0001").await.unwrap().remove(0);
    let intent = portal_bridge::store::intents::Intent {
        item_key: row.item_key.clone(),
        target: "portal".into(),
        source_id: "feed".into(),
        origin: row.origin.clone(),
        action: "put".into(),
        output_hash: row.output_hash.clone().unwrap(),
        idempotency_key: "left-over".into(),
        body: b"{}".to_vec(),
        format: "json".into(),
        known_version: None,
        content_hash: row.content_hash.clone(),
        mapping: row.mapping.clone(),
        mapping_version: row.mapping_version.clone(),
        adoptions: None,
        run_id: Some(1),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        delivery: Some("http".into()),
    };
    app.deps.store.record_intent(&intent).await.unwrap();
    let report = app.migrate().await;
    let c = report.counts;
    let counted = c.new + c.updated + c.unchanged + c.failed + c.quarantined + c.withdrawn + c.conflict;
    assert_eq!(counted, 3, "three pairs, each counted once: {c:?}");
    assert_exactly_once(&app, &sim, 3).await;
}

/// Finding 14: Ctrl-C ends a `migrate` cleanly: exit 130, the run closed as `interrupted`, the lease
/// given back, and the next run finishes the work with one effect per document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_migrate_as_interrupted_with_exit_130() {
    let sim = sim(SimConfig { latency_ms: 30, ..Default::default() }).await;
    let app = bridge(&sim, 300, 4, "lease_secs = 30", "").await;
    let mut child = app.std_command().args(["migrate"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    until_requests(&sim, 60).await;
    std::process::Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "migrate ends after Ctrl-C");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    let run = app.deps.store.runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, "interrupted", "{run:?}");
    assert!(run.finished_at.is_some());
    assert!(app.deps.store.leases().await.unwrap().is_empty(), "the lease is given back at once");
    let out = app.command().args(["migrate", "--json"]).output().unwrap();
    assert!(out.status.success(), "no wait needed: {}", String::from_utf8_lossy(&out.stderr));
    assert_exactly_once(&app, &sim, 300).await;
    assert_runs_add_up(&app, 300).await;
}

/// Finding 14: a daemon whose run outlasts the shutdown grace closes that run instead of leaving it
/// `running` forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_after_the_shutdown_grace_is_closed() {
    let sim = sim(SimConfig { latency_ms: 200, ..Default::default() }).await;
    let app = bridge(&sim, 100, 1, "lease_secs = 5\nshutdown_grace_secs = 1", "schedule = \"* * * * * *\"").await;
    let mut daemon = app.spawn_daemon();
    until_requests(&sim, 3).await;
    std::process::Command::new("kill").arg("-TERM").arg(daemon.id().to_string()).status().unwrap();
    assert!(daemon.wait().unwrap().success());
    let runs = app.deps.store.runs(10).await.unwrap();
    assert!(!runs.is_empty());
    for run in &runs {
        assert!(matches!(run.status.as_str(), "interrupted" | "aborted"), "{run:?}");
        assert!(run.finished_at.is_some(), "{run:?}");
    }
    assert!(app.deps.store.leases().await.unwrap().is_empty(), "the stopped daemon holds nothing");
}

/// A clock that panics once, in the first task other than the daemon's own that reads it: the run task.
#[derive(Default)]
struct PanicInRunTask {
    daemon: std::sync::OnceLock<Option<tokio::task::Id>>,
    fired: AtomicBool,
}

impl Clock for PanicInRunTask {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let task = tokio::task::try_id();
        let daemon = *self.daemon.get_or_init(|| task);
        if task != daemon && !self.fired.swap(true, Ordering::SeqCst) {
            panic!("injected: a run task panics");
        }
        chrono::Utc::now()
    }
}

/// Finding 14: a run task that panics releases its sources: the next run of them happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_run_task_releases_its_sources() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 5, 2, "lease_secs = 30", "").await;
    let clock = Arc::new(PanicInRunTask::default());
    let daemon = app.start_daemon_with_clock(clock.clone()).await;
    post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !clock.fired.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the run task panicked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let run_id = loop {
        let (status, body) = post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
        if status == reqwest::StatusCode::ACCEPTED
            && let Some(id) = body_run_id(&body)
        {
            break id;
        }
        assert!(Instant::now() < deadline, "a run of the source is taken again: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finished(&app, run_id).await.status, "ok");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
    for run in app.deps.store.runs(10).await.unwrap() {
        assert_ne!(run.status, "running", "{run:?}");
    }
    assert_exactly_once(&app, &sim, 5).await;
}

/// Finding 15: a second `migrate` on the same database while the first runs exits 4 ("busy") naming
/// the first; a third with `--wait` runs after it. Each document is new once, counts ≤ pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_migrate_on_one_database_is_busy_or_waits() {
    let sim = sim(SimConfig { latency_ms: 20, ..Default::default() }).await;
    let app = bridge(&sim, 300, 4, "lease_secs = 3", "").await;
    let first = app.std_command().args(["migrate"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    until_requests(&sim, 30).await;
    let second = app.command().args(["migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "busy: {stderr}");
    assert!(stderr.contains("source:feed") || stderr.contains("feed"), "{stderr}");
    let third = app.command().args(["migrate", "--wait", "90", "--json"]).output().unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert!(first.wait_with_output().unwrap().status.success());
    let json: serde_json::Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(json["unchanged"], 300, "the third run came after the first: {json}");
    assert_exactly_once(&app, &sim, 300).await;
    assert_runs_add_up(&app, 300).await;
}

/// Finding 16: after a restart, the dead instance's lease still holds the source: the API says so
/// (409 with the holder) instead of queueing a run that never happens; once the lease is gone, the
/// answer names the run, and that run happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_run_is_never_dropped_and_its_answer_names_the_run() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 5, 2, "lease_secs = 30", "").await;
    let dead = "restarted-host:1:dead#7";
    plant_lease(&app.deps.store, dead, 3).await;
    let daemon = app.start_daemon().await;
    let (status, body) = post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains(dead), "the answer names the holder: {body}");
    assert!(app.deps.store.runs(10).await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    let run_id = loop {
        let (status, body) = post(&daemon.base, "/api/runs", r#"{"sources": ["feed"]}"#).await;
        if status == reqwest::StatusCode::ACCEPTED {
            assert_eq!(body["queued"], true, "{body}");
            break body_run_id(&body).unwrap_or_else(|| panic!("the answer names the run: {body}"));
        }
        assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
        assert!(Instant::now() < deadline, "the lease expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(finished(&app, run_id).await.status, "ok");
    // A retry through the API names its run too.
    let (status, body) = post(&daemon.base, "/api/items/feed%2Fitem-0001/retry", "").await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let retry = body_run_id(&body).unwrap_or_else(|| panic!("the answer names the run: {body}"));
    assert_eq!(finished(&app, retry).await.status, "ok");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
    assert_exactly_once(&app, &sim, 5).await;
}
