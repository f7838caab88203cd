//! Delivery to the portal import API (portal-sim on loopback): faults, exactly one effect per
//! document, crash recovery with SIGKILL, permanent errors, conflicts and withdrawals.

use std::process::Stdio;
use std::time::{Duration, Instant};

use portal_bridge::domain::{ItemStatus, RunStatus};
use portal_sim::{self, FaultPatch, SimConfig, SimState};
use predicates::prelude::*;

use crate::support::TestApp;

const TARGET: &str = "portal";

pub(crate) struct Sim {
    pub state: SimState,
    pub url: String,
    _task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(crate) async fn sim(config: SimConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = SimState::new(config);
    let task = tokio::spawn(portal_sim::serve(listener, state.clone()));
    Sim { state, url, _task: task }
}

/// A bridge with one source of `count` JSON records (`feed/records.json`) mapped 1:1 to an HTTP target.
pub(crate) async fn bridge(sim: &Sim, count: usize, extra_target: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(dir.path().join("token"), "sim-token").unwrap();
    write_records(dir.path(), count, "v1");
    std::fs::write(
        dir.path().join("mappings/echo.toml"),
        "name = \"echo\"\nprogram = \"{id: .id, name: .name, source: $source.id}\"\n[input]\nformat = \"json\"\n\
         [output]\ntarget = \"portal\"\nformat = \"json\"\n",
    )
    .unwrap();
    let config = format!(
        r#"
[[target]]
id = "{TARGET}"
delivery = "http"
[target.http]
url = "{url}"
token_file = "token"
concurrency = 4
requests_per_second = 1000
max_retries = 8
retry_base_ms = 5
retry_max_ms = 1500
request_timeout_secs = 10
{extra_target}

[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
split = "array"
key = ".id"
mappings = ["echo"]
"#,
        url = sim.url
    );
    TestApp::with_config(dir, &config).await
}

pub(crate) fn write_records(dir: &std::path::Path, count: usize, version: &str) {
    let records: Vec<_> = (0..count)
        .map(|i| serde_json::json!({"id": format!("item-{i:04}"), "name": format!("Leistung {i} ({version})")}))
        .collect();
    std::fs::write(dir.join("feed/records.json"), serde_json::to_string(&records).unwrap()).unwrap();
}

/// Every item of the source ended delivered, and the portal saw exactly one effect for each
/// (item, document), none for any other document.
async fn assert_exactly_once(app: &TestApp, sim: &Sim, count: usize) {
    let rows = app.deps.store.items(None, Some("feed"), i64::MAX).await.unwrap();
    assert_eq!(rows.len(), count);
    let stats = sim.state.stats().await;
    for row in &rows {
        assert!(matches!(row.status.as_str(), "delivered" | "unchanged"), "{row:?}");
        let hash = row.output_hash.as_deref().unwrap();
        assert_eq!(stats.effect_count(TARGET, &row.item_key, hash), 1, "{}: one effect for its document", row.item_key);
    }
    assert_eq!(
        stats.total_effects(),
        count as u64,
        "no other effects: {:?}",
        stats.effects.iter().filter(|e| e.count > 1).collect::<Vec<_>>()
    );
    assert!(app.deps.store.intents().await.unwrap().is_empty(), "no unfinished deliveries remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_every_document_takes_effect_exactly_once() {
    let sim = sim(SimConfig {
        fail_rate: 0.2,
        throttle_every: 37,
        retry_after_secs: 1,
        reset_rate: 0.05,
        seed: 7,
        ..Default::default()
    })
    .await;
    let app = bridge(&sim, 300, "").await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems.iter().take(3).collect::<Vec<_>>());
    assert_eq!(report.counts.new, 300);
    assert_exactly_once(&app, &sim, 300).await;
    let stats = sim.state.stats().await;
    assert!(
        stats.faults.unavailable > 20 && stats.faults.throttled > 0 && stats.faults.reset > 0,
        "faults were injected: {:?}",
        stats.faults
    );
    assert!(stats.replays > 0, "a reset's retry is answered as a replay");

    // A second run sends nothing; a changed record is one more effect, for the new document only.
    let again = app.migrate().await;
    assert_eq!(again.counts.unchanged, 300);
    let before = sim.state.stats().await.total_effects();
    let records = app.path("feed/records.json");
    let text = std::fs::read_to_string(&records).unwrap().replacen("Leistung 5 (v1)", "Leistung 5 (v2)", 1);
    std::fs::write(&records, text).unwrap();
    let changed = app.migrate().await;
    assert_eq!(changed.counts.updated, 1);
    assert_eq!(sim.state.stats().await.total_effects(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_point_the_bridge_loses_nothing_and_repeats_no_effect() {
    let sim = sim(SimConfig { latency_ms: 30, seed: 3, ..Default::default() }).await;
    let app = bridge(&sim, 300, "").await;
    // A killed run's lease lapses after 2 s; each restart waits for it (one writer per source).
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{text}\n[daemon]\nlease_secs = 2\n")).unwrap();
    let migrate = || {
        let args = ["migrate", "--json", "--wait", "30"];
        app.std_command().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    };
    // Kill points by the number of requests the portal has seen: before any delivery, during, and
    // after the last one (while the ledger catches up).
    let mut killed_mid_run = 0;
    for kill_at in [0_u64, 40, 130, 220, 300] {
        let mut child = migrate();
        let started = Instant::now();
        loop {
            let seen = sim.state.stats().await.requests;
            let done = child.try_wait().unwrap().is_some();
            if seen >= kill_at || done || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let running = child.try_wait().unwrap().is_none();
        let seen = sim.state.stats().await.requests;
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        if running && seen > 0 {
            killed_mid_run += 1;
        }
    }
    assert!(killed_mid_run >= 3, "the kills hit running deliveries ({killed_mid_run} of 5)");
    // Restarted until a run finds nothing left to do.
    for _ in 0..5 {
        let status = migrate().wait().unwrap();
        if status.success() {
            break;
        }
    }
    assert_exactly_once(&app, &sim, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_quarantines_one_item_until_the_portal_is_fixed_and_a_412_is_a_conflict() {
    let sim = sim(SimConfig {
        reject_keys: vec!["feed/item-0003".into()],
        conflict_keys: vec!["feed/item-0007".into()],
        ..Default::default()
    })
    .await;
    let app = bridge(&sim, 12, "").await;
    let assert = app.command().args(["migrate"]).assert().code(3);
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.contains("quarantined feed/item-0003") && out.contains("HTTP 400"), "{out}");
    assert!(out.contains("conflict feed/item-0007") && out.contains("412"), "{out}");
    let rejected = app.deps.store.item("feed/item-0003").await.unwrap();
    assert_eq!(rejected[0].status, "quarantined");
    assert!(
        rejected[0].last_error.as_deref().unwrap().contains("rejects this document"),
        "the portal's message: {:?}",
        rejected[0].last_error
    );
    assert_eq!(app.deps.store.item("feed/item-0007").await.unwrap()[0].status, "conflict");
    let stats = sim.state.stats().await;
    assert_eq!(stats.total_effects(), 10, "the other ten went through");

    // The portal is fixed: retry delivers the rejected item; the conflict stays until resolved.
    sim.state.patch_faults(FaultPatch { reject_keys: Some(Vec::new()), ..Default::default() }).await.unwrap();
    app.command().args(["retry", "feed/item-0003", "--reason", "portal fixed", "--by", "tester"]).assert().success();
    assert_eq!(app.deps.store.item("feed/item-0003").await.unwrap()[0].status, "delivered");
    app.command().args(["retry", "--status", "conflict"]).assert().code(3);
    assert_eq!(
        app.deps.store.item("feed/item-0007").await.unwrap()[0].status,
        "conflict",
        "not overwritten by a retry"
    );
    app.command()
        .args(["log", "--item", "feed/item-0003"])
        .assert()
        .success()
        .stdout(predicate::str::contains("retry requested by tester: portal fixed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_change_in_the_portal_is_a_conflict_until_resolved_by_overwriting() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 3, "").await;
    assert_eq!(app.migrate().await.counts.new, 3);
    // An editor changes item-0001 in the portal; then the record changes upstream.
    let client = reqwest::Client::new();
    let edit = format!("{}/_sim/edit/targets/{TARGET}/items/{}", sim.url, portal_sim::encode_segment("feed/item-0001"));
    assert!(client.put(&edit).body("{\"von\": \"Redaktion\"}").send().await.unwrap().status().is_success());
    write_records(app.dir.path(), 3, "v2");
    let report = app.migrate().await;
    assert_eq!((report.counts.updated, report.counts.conflict), (2, 1));
    let row = &app.deps.store.item("feed/item-0001").await.unwrap()[0];
    assert_eq!(row.status, ItemStatus::Conflict.as_str());

    app.command().args(["resolve", "feed/item-0001", "--overwrite", "--by", "tester"]).assert().success();
    let row = &app.deps.store.item("feed/item-0001").await.unwrap()[0];
    assert_eq!(row.status, "delivered");
    let stats = sim.state.stats().await;
    assert_eq!(stats.effect_count(TARGET, "feed/item-0001", row.output_hash.as_deref().unwrap()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_withdrawals_are_held_until_confirmed() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 20, "").await;
    app.migrate().await;
    // 30 % vanish upstream.
    write_records(app.dir.path(), 14, "v1");
    let held = app.migrate().await;
    assert_eq!(held.status, RunStatus::Partial);
    assert_eq!(held.counts.withdrawn, 0);
    assert!(
        held.errors.iter().any(|e| e.contains("6 of 20") && e.contains("--allow-withdrawals")),
        "{:?}",
        held.errors
    );
    let withdrawn = sim.state.stats().await.effects.iter().filter(|e| e.sha256 == portal_sim::WITHDRAWN).count();
    assert_eq!(withdrawn, 0, "nothing withdrawn while held");

    let job = portal_bridge::pipeline::Job {
        allow_withdrawals: true,
        sources: vec!["feed".into()],
        ..portal_bridge::pipeline::Job::all(portal_bridge::domain::Trigger::Cli)
    };
    let allowed = app.run(job).await;
    assert_eq!(allowed.status, RunStatus::Ok, "{:?}", allowed.errors);
    assert_eq!(allowed.counts.withdrawn, 6);
    assert_eq!(app.deps.store.item("feed/item-0019").await.unwrap()[0].status, "withdrawn");
    let stats = sim.state.stats().await;
    assert_eq!(stats.effect_count(TARGET, "feed/item-0019", portal_sim::WITHDRAWN), 1);

    // A small loss (one item of 14) is within the guard and withdrawn right away.
    write_records(app.dir.path(), 13, "v1");
    let small = app.migrate().await;
    assert_eq!((small.status, small.counts.withdrawn), (RunStatus::Ok, 1));
}

/// Issue 15's acceptance: a run against a portal with faults on is SIGKILLed several times and still
/// ends with one effect per document; then a forced run, shared by two daemons, of which the helper is
/// SIGKILLed mid-batch, re-delivers every document exactly once more, with no false conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_repeatedly_with_faults_on_and_forced_by_two_daemons_every_document_takes_effect_once() {
    let faults = SimConfig { fail_rate: 0.1, reset_rate: 0.05, latency_ms: 10, seed: 11, ..Default::default() };
    let sim = sim(faults).await;
    let app = bridge(&sim, 300, "").await;
    // A killed run's lease lapses after 3 s; each restart waits for it (one writer per source).
    let lease = "\n[daemon]\nlease_secs = 3\n";
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{text}{lease}")).unwrap();
    let migrate = || {
        let args = ["migrate", "--json", "--wait", "30"];
        app.std_command().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut killed_mid_run = 0;
    for kill_at in [30_u64, 120, 250] {
        let mut child = migrate();
        let started = Instant::now();
        while sim.state.stats().await.requests < kill_at
            && child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        killed_mid_run += usize::from(child.try_wait().unwrap().is_none());
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(killed_mid_run >= 2, "the kills hit running deliveries ({killed_mid_run} of 3)");
    for _ in 0..5 {
        if migrate().wait().unwrap().success() {
            break;
        }
    }
    assert_exactly_once(&app, &sim, 300).await;

    // Two daemons share a forced run: this process's (it coordinates: the API triggers the run on
    // it) and a child process that helps with batches and is killed while it holds one.
    let text = std::fs::read_to_string(&app.config_path).unwrap().replace(lease, "");
    let daemon = "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin-token\"\n\
                  [daemon]\nlease_secs = 3\nshare_batch = 20\nshutdown_grace_secs = 5\n";
    std::fs::write(&app.config_path, format!("{text}{daemon}")).unwrap();
    std::fs::write(app.path("admin-token"), "admin-secret").unwrap();
    let mut helper = app.spawn_daemon();
    let coordinator = app.start_daemon().await;
    let answer = reqwest::Client::new()
        .post(format!("{}/api/runs", coordinator.base))
        .bearer_auth("admin-secret")
        .json(&serde_json::json!({"sources": ["feed"], "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED, "{:?}", answer.text().await);
    let store = &app.deps.store;
    let deadline = Instant::now() + Duration::from_secs(90);
    let run_id = loop {
        assert!(Instant::now() < deadline, "the helper took a batch of the forced run");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Some(lease) = store.leases().await.unwrap().into_iter().find(|l| l.name == "source:feed") else { continue };
        let claims = store.batch_claims().await.unwrap();
        if claims.iter().any(|c| c.holder != lease.holder) {
            break store.runs(1).await.unwrap()[0].id;
        }
    };
    helper.kill().unwrap(); // SIGKILL, mid-batch
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = store.run(run_id).await.unwrap().unwrap();
        if run.finished_at.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the forced run finished without its helper");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coordinator.shutdown.cancel();
    coordinator.task.await.unwrap().unwrap();

    let rows = store.items(None, Some("feed"), i64::MAX).await.unwrap();
    let stats = sim.state.stats().await;
    for row in &rows {
        assert_eq!(row.status, "delivered", "{row:?}");
        let hash = row.output_hash.as_deref().unwrap();
        assert_eq!(stats.effect_count(TARGET, &row.item_key, hash), 2, "{}: one forced effect more", row.item_key);
    }
    assert_eq!(stats.total_effects(), 600);
    assert!(store.intents().await.unwrap().is_empty(), "no unfinished deliveries remain");
    crate::audit::assert_chain_verifies(store).await;
}
