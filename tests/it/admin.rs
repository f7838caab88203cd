//! The daemon's admin API as an operator uses it: confirming held withdrawals through
//! `POST /api/runs`, and a changed admin token taking effect on SIGHUP.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::TestApp;

const TOKEN: &str = "admin-secret";

/// A config with one directory source `feed` of JSON records, copied to an outbox target.
fn config(admin: &str) -> String {
    format!(
        r#"[admin]
{admin}
token_file = "admin-token"
[paths]
mappings = "mappings"
outbox = "var/outbox"
[database]
url = "sqlite://var/bridge.db"
[[target]]
id = "portal"
delivery = "outbox"
[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
mappings = ["echo"]
"#
    )
}

/// The mapping, the admin token and `count` records `r0.json` … in `feed/`.
fn prepare(dir: &std::path::Path, count: usize) {
    std::fs::create_dir_all(dir.join("feed")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("admin-token"), TOKEN).unwrap();
    std::fs::write(
        dir.join("mappings/echo.toml"),
        "name = \"echo\"\nprogram = \".\"\n[input]\nformat = \"json\"\n[output]\ntarget = \"portal\"\nformat = \"json\"\n",
    )
    .unwrap();
    for i in 0..count {
        std::fs::write(dir.join(format!("feed/r{i}.json")), format!("{{\"id\": \"r{i}\"}}")).unwrap();
    }
}

/// Posts `body` to `POST /api/runs` and waits until the run it queued has finished; returns its id.
async fn run_through_api(app: &TestApp, base: &str, body: serde_json::Value) -> i64 {
    let before = app.deps.store.runs(1).await.unwrap().first().map_or(0, |r| r.id);
    let answer =
        reqwest::Client::new().post(format!("{base}/api/runs")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED, "{}", answer.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = app.deps.store.runs(1).await.unwrap();
        if let Some(run) = runs.first().filter(|r| r.id > before && r.finished_at.is_some()) {
            return run.id;
        }
        assert!(Instant::now() < deadline, "the run queued with {body} finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_held_by_the_guard_are_confirmed_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 5);
    let app = TestApp::with_config(dir, &config("listen = \"127.0.0.1:0\"")).await;
    app.migrate().await;
    assert_eq!(app.outbox_files().len(), 5);
    // Two of five records vanish: 40 %, more than the default guard of 10 %.
    for gone in ["r1", "r3"] {
        std::fs::remove_file(app.path(&format!("feed/{gone}.json"))).unwrap();
    }
    let daemon = app.start_daemon().await;

    let held = run_through_api(&app, &daemon.base, serde_json::json!({"sources": ["feed"]})).await;
    assert_eq!(app.outbox_files().len(), 5, "without allow_withdrawals the guard holds them");
    let client = reqwest::Client::new();
    let answer: serde_json::Value =
        client.get(format!("{}/api/runs/{held}", daemon.base)).send().await.unwrap().json().await.unwrap();
    let confirm = &answer["held_withdrawals"][0]["confirm"];
    assert_eq!(answer["held_withdrawals"][0]["source"], "feed", "{answer}");
    assert_eq!(confirm["body"], serde_json::json!({"sources": ["feed"], "allow_withdrawals": true}), "{answer}");
    let page = client.get(format!("{}/runs/{held}", daemon.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Held withdrawals") && page.contains("allow_withdrawals"), "{page}");

    // The call the answer names sends them.
    let confirmed = run_through_api(&app, &daemon.base, confirm["body"].clone()).await;
    assert_eq!(app.outbox_files(), ["portal/feed%2Fr0.json", "portal/feed%2Fr2.json", "portal/feed%2Fr4.json"]);
    let run = app.deps.store.run(confirmed).await.unwrap().unwrap();
    assert_eq!((run.withdrawn_count, run.trigger.as_str()), (2, "api"), "{run:?}");
    for gone in ["feed/r1", "feed/r3"] {
        let rows = app.deps.store.item(gone).await.unwrap();
        assert!(rows.iter().all(|r| r.status == "withdrawn"), "{gone}: {rows:?}");
    }
    let answer: serde_json::Value =
        client.get(format!("{}/api/runs/{confirmed}", daemon.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["held_withdrawals"], serde_json::json!([]), "{answer}");
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

/// A daemon process, stopped with SIGTERM when the test ends (also when it fails).
struct Daemon(std::process::Child);

impl Daemon {
    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(self.0.id().to_string()).status();
        assert!(status.unwrap().success(), "kill -{name}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Status of `POST /api/items/feed%2Fnone/retry` with `token`: 404 (no such item) once the token
/// is accepted, 401 when it is not; the call changes nothing either way.
async fn retry_status(base: &str, token: &str) -> StatusCode {
    let url = format!("{base}/api/items/feed%2Fnone/retry");
    reqwest::Client::new().post(url).bearer_auth(token).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_admin_token_so_a_revoked_one_is_refused() {
    // A free loopback port for the daemon process's admin API.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), 1);
    let app = TestApp::with_config(dir, &config(&format!("listen = \"127.0.0.1:{port}\""))).await;
    let mut daemon = Daemon(app.spawn_daemon());
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon runs");
        assert!(Instant::now() < deadline, "the daemon's admin API answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(retry_status(&base, TOKEN).await, StatusCode::NOT_FOUND);
    assert_eq!(retry_status(&base, "new-secret").await, StatusCode::UNAUTHORIZED);

    std::fs::write(app.path("admin-token"), "new-secret\n").unwrap();
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while retry_status(&base, TOKEN).await != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < deadline, "the revoked token is refused after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(retry_status(&base, "new-secret").await, StatusCode::NOT_FOUND, "the new token works");

    daemon.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon stops on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
