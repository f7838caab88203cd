//! The daemon: schedules with overlap policies, catch-up of missed runs, reload on SIGHUP, and
//! graceful shutdown on SIGTERM that leaves the next start a clean reconciliation.

use std::time::{Duration, Instant};

use portal_sim::{self, SimConfig, SimState};

use crate::support::TestApp;

async fn sim(latency_ms: u64) -> (SimState, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = SimState::new(SimConfig { latency_ms, ..Default::default() });
    tokio::spawn(portal_sim::serve(listener, state.clone()));
    (state, url)
}

/// A config with one feed of `count` records delivered over HTTP to the simulator, on a schedule.
fn config_text(url: &str, count: usize, schedule: &str, overlap: &str, extra: &str) -> String {
    let _ = count;
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
[daemon]
shutdown_grace_secs = 20
[[target]]
id = "portal"
delivery = "http"
[target.http]
url = "{url}"
token_file = "token"
concurrency = 1
max_retries = 2
retry_base_ms = 10

[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
split = "array"
key = ".id"
mappings = ["echo"]
schedule = "{schedule}"
overlap = "{overlap}"
{extra}
"#
    )
}

fn prepare(dir: &std::path::Path, count: usize) {
    std::fs::create_dir_all(dir.join("feed")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("token"), "sim-token").unwrap();
    std::fs::write(dir.join("admin-token"), "admin-secret").unwrap();
    write_feed(dir, count, 0);
    std::fs::write(
        dir.join("mappings/echo.toml"),
        "name = \"echo\"\nprogram = \"{id: .id, round: .round}\"\n[input]\nformat = \"json\"\n[output]\ntarget = \"portal\"\nformat = \"json\"\n",
    )
    .unwrap();
}

/// Rewrites the feed so that every record changes (each run then has deliveries to make).
fn write_feed(dir: &std::path::Path, count: usize, round: usize) {
    let records: Vec<_> = (0..count).map(|i| serde_json::json!({"id": format!("r{i:03}"), "round": round})).collect();
    std::fs::write(dir.join("feed/records.json"), serde_json::to_string(&records).unwrap()).unwrap();
}

/// (started, finished) of every run of the source, in order.
async fn runs(app: &TestApp) -> Vec<(String, Option<String>)> {
    let mut runs: Vec<_> =
        app.deps.store.runs(1000).await.unwrap().into_iter().map(|r| (r.started_at, r.finished_at)).collect();
    runs.reverse();
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_schedule_never_overlaps_a_slow_source_with_forbid() {
    let (_sim, url) = sim(150).await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 8);
    let app = TestApp::with_config(dir, &config_text(&url, 8, "* * * * * *", "forbid", "")).await;
    let daemon = app.start_daemon().await;
    // Each run delivers 8 changed records at 150 ms each: longer than the 1 s schedule.
    for round in 1..=4 {
        write_feed(app.dir.path(), 8, round);
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
    let runs = runs(&app).await;
    assert!(runs.len() >= 2, "the schedule fired repeatedly: {runs:?}");
    for pair in runs.windows(2) {
        let (first_end, second_start) = (pair[0].1.as_deref().expect("finished"), pair[1].0.as_str());
        assert!(first_end <= second_start, "runs overlapped: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_run_is_caught_up_once_at_start_and_skip_waits() {
    let (_sim, url) = sim(0).await;
    for (missed, expect_run) in [("catch-up-once", true), ("skip", false)] {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), 2);
        let extra = format!("missed = \"{missed}\"");
        let app = TestApp::with_config(dir, &config_text(&url, 2, "0 0 * * * *", "forbid", &extra)).await;
        // The last scheduled run started two hours ago: the hourly run in between was missed.
        let two_hours_ago = portal_bridge::store::timestamp(chrono::Utc::now() - chrono::Duration::hours(2));
        let id = app
            .deps
            .store
            .start_run(portal_bridge::domain::Trigger::Schedule, &["feed".into()], &two_hours_ago)
            .await
            .unwrap();
        app.deps
            .store
            .finish_run(id, portal_bridge::domain::RunStatus::Ok, Default::default(), None, &two_hours_ago)
            .await
            .unwrap();
        let daemon = app.start_daemon().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        daemon.shutdown.cancel();
        daemon.task.await.unwrap().unwrap();
        let ran = runs(&app).await.len() > 1;
        assert_eq!(ran, expect_run, "missed = {missed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_on_reload_leaves_the_daemon_on_the_old_one() {
    let (sim, url) = sim(0).await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 3);
    let app = TestApp::with_config(dir, &config_text(&url, 3, "* * * * * *", "forbid", "")).await;
    let daemon = app.start_daemon().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(&app.config_path, "this is = not [valid toml").unwrap();
    daemon.reload.send(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still scheduling on the old config: a new round of records is delivered.
    write_feed(app.dir.path(), 3, 7);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.stats().await.total_effects() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!daemon.task.is_finished(), "the daemon kept running");
    assert_eq!(sim.stats().await.total_effects(), 6, "two rounds of three records");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_zero_and_the_next_start_reconciles_cleanly() {
    let (sim, url) = sim(100).await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 30);
    let app = TestApp::with_config(dir, &config_text(&url, 30, "* * * * * *", "forbid", "")).await;
    let daemon = || app.spawn_daemon();
    let mut child = daemon();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.stats().await.requests < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_at = Instant::now();
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(25), "the daemon exits within its grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit code 0 after SIGTERM: {status:?}");

    // Started again, the daemon finishes the work (at least one more run); every record takes
    // effect exactly once.
    let runs_before = runs(&app).await.len();
    let mut child = daemon();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (sim.stats().await.total_effects() < 30 || runs(&app).await.len() <= runs_before) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success());
    let stats = sim.stats().await;
    assert_eq!(
        stats.total_effects(),
        30,
        "one effect per record: {:?}",
        stats.effects.iter().filter(|e| e.count > 1).collect::<Vec<_>>()
    );
    assert!(app.deps.store.intents().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_with_the_same_schedule_run_each_slot_once() {
    let (_sim, url) = sim(20).await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 4);
    let app = TestApp::with_config(dir, &config_text(&url, 4, "* * * * * *", "forbid", "")).await;
    let (a, b) = (app.start_daemon().await, app.start_daemon().await);
    for round in 1..=3 {
        write_feed(app.dir.path(), 4, round);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    a.shutdown.cancel();
    b.shutdown.cancel();
    a.task.await.unwrap().unwrap();
    b.task.await.unwrap().unwrap();
    let runs = app.deps.store.runs(1000).await.unwrap();
    assert!(runs.len() >= 2, "{runs:?}");
    let mut seconds: Vec<&str> = runs.iter().map(|r| &r.started_at[..19]).collect();
    let total = seconds.len();
    seconds.dedup();
    assert_eq!(seconds.len(), total, "no scheduled second ran twice: {runs:?}");
    crate::audit::assert_chain_verifies(&app.deps.store).await;
}

/// Two daemon processes on one database with a feed of 500 records delivered to a simulator on
/// a one-second schedule; `daemon` is added to their `[daemon]` section.
async fn two_daemons_on_500_records(daemon: &str) -> (SimState, TestApp, Vec<std::process::Child>) {
    let (sim, url) = sim(10).await;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 500);
    let app = TestApp::with_config(dir, &config_text(&url, 500, "* * * * * *", "forbid", "")).await;
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("shutdown_grace_secs = 20", &format!("shutdown_grace_secs = 20\n{daemon}"));
    std::fs::write(&app.config_path, text).unwrap();
    let daemons = vec![app.spawn_daemon(), app.spawn_daemon()];
    (sim, app, daemons)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_daemon_is_killed_the_other_takes_over_after_the_lease_and_nothing_repeats() {
    let (sim, app, mut daemons) = two_daemons_on_500_records("lease_secs = 3").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sim.stats().await.requests < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill the instance that holds the source's lease, mid-run.
    let holder = app
        .deps
        .store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == "source:feed")
        .expect("a lease is held")
        .holder;
    let pid: u32 = holder.split(':').nth(1).unwrap().parse().unwrap();
    let index = daemons.iter().position(|d| d.id() == pid).expect("the holder is one of ours");
    let mut victim = daemons.remove(index);
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let mut survivor = daemons.remove(0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = app.deps.store.items(None, Some("feed"), i64::MAX).await.unwrap();
        let done = rows.len() == 500 && rows.iter().all(|r| matches!(r.status.as_str(), "delivered" | "unchanged"));
        if done && app.deps.store.intents().await.unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the survivor finished the work");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::process::Command::new("kill").arg("-TERM").arg(survivor.id().to_string()).status().unwrap();
    assert!(survivor.wait().unwrap().success());
    let stats = sim.stats().await;
    assert_eq!(stats.total_effects(), 500, "{:?}", stats.effects.iter().filter(|e| e.count > 1).collect::<Vec<_>>());
    let rows = app.deps.store.items(None, Some("feed"), i64::MAX).await.unwrap();
    for row in rows {
        assert_eq!(
            stats.effect_count("portal", &row.item_key, row.output_hash.as_deref().unwrap()),
            1,
            "{}",
            row.item_key
        );
    }
    crate::audit::assert_chain_verifies(&app.deps.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_is_shared_and_a_killed_helpers_batches_are_taken_over() {
    let (sim, app, mut daemons) = two_daemons_on_500_records("lease_secs = 3\nshare_batch = 25").await;
    let pid_of = |holder: &str| -> u32 { holder.split(':').nth(1).unwrap().parse().unwrap() };
    let store = &app.deps.store;

    // Wait until the instance that does not coordinate has finished a batch and holds another.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (run_id, helper) = loop {
        assert!(Instant::now() < deadline, "the other instance helped with the shared run");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(lease) = store.leases().await.unwrap().into_iter().find(|l| l.name == "source:feed") else { continue };
        let Some(run) = store.runs(10).await.unwrap().into_iter().last() else { continue };
        let batches = store.batches_of_run(run.id, "feed").await.unwrap();
        let helped = batches.iter().any(|b| b.done_at.is_some() && b.holder.as_deref() != Some(&lease.holder));
        let claims = store.batch_claims().await.unwrap();
        if let Some(claim) = claims.iter().find(|c| c.holder != lease.holder).filter(|_| helped) {
            break (run.id, claim.holder.clone());
        }
    };
    let index = daemons.iter().position(|d| d.id() == pid_of(&helper)).expect("the helper is one of ours");
    let mut victim = daemons.remove(index);
    victim.kill().unwrap(); // SIGKILL, mid-batch
    victim.wait().unwrap();

    // The coordinator takes the dead helper's batch over once its claim expires and finishes the run.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run = store.runs(10).await.unwrap().into_iter().find(|r| r.id == run_id).unwrap();
        if run.finished_at.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the shared run finished without its helper");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut survivor = daemons.remove(0);
    std::process::Command::new("kill").arg("-TERM").arg(survivor.id().to_string()).status().unwrap();
    assert!(survivor.wait().unwrap().success());

    let rows = store.items(None, Some("feed"), i64::MAX).await.unwrap();
    assert_eq!(rows.len(), 500);
    assert!(rows.iter().all(|r| r.status == "delivered"), "every item delivered by the one run");
    let stats = sim.stats().await;
    assert_eq!(stats.total_effects(), 500, "{:?}", stats.effects.iter().filter(|e| e.count > 1).collect::<Vec<_>>());
    for row in &rows {
        assert_eq!(
            stats.effect_count("portal", &row.item_key, row.output_hash.as_deref().unwrap()),
            1,
            "{}",
            row.item_key
        );
    }
    let run = store.runs(10).await.unwrap().into_iter().find(|r| r.id == run_id).unwrap();
    assert_eq!((run.status.as_str(), run.new_count), ("ok", 500), "the helpers' counts are added up: {run:?}");
    let filter = portal_bridge::store::log::EventFilter { run_id: Some(run_id), limit: 1000, ..Default::default() };
    let events = store.events(&filter).await.unwrap();
    let shared = events.iter().find(|e| e.message.starts_with("shared work done by")).expect("the run says who helped");
    assert!(shared.message.contains(&helper), "{}", shared.message);
    assert_eq!(shared.message.matches(", ").count(), 1, "two instances worked: {}", shared.message);
    assert!(store.intents().await.unwrap().is_empty());
    assert!(store.batch_claims().await.unwrap().is_empty());
    crate::audit::assert_chain_verifies(store).await;
}
