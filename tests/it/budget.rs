//! The budget per record (`[limits] max_mapping_seconds`, `max_mapping_bytes`): a mapping or key
//! expression that runs too long, holds too much or recurses without end is stopped, its item is
//! quarantined with a message naming the budget, and the other items of the run are delivered.

use portal_bridge::domain::{ItemStatus, RunStatus};
use portal_bridge::pipeline::Problem;

use crate::support::TestApp;

/// A mapping whose cost the record chooses (`.spin`); any other record maps to a small document.
const SPIN: &str = r#"
def forever: def f: 1 + f; f;
if .spin == "time" then {id, n: (reduce range(1e15) as $i (0; . + 1))}
elif .spin == "time-in-a-loop-of-its-own" then {id, n: (def loop: if . < 0 then . else . + 1 | loop end; 0 | loop)}
elif .spin == "bytes" then {id, n: ([range(1e12)] | length)}
elif .spin == "bytes-by-doubling" then {id, n: (reduce range(64) as $i ("x"; . + .) | length)}
elif .spin == "cartesian" then {id, n: ([.xs[] as $a | .xs[] as $b | .xs[] as $c | [$a, $b, $c]] | length)}
elif .spin == "caught" then {id, n: (try (reduce range(1e15) as $i (0; . + 1)) catch "caught")}
elif .spin == "recursion" then {id, n: forever}
else {id, n: 0} end
"#;

/// The budgets are far apart, so that each case meets the budget it is about even on a loaded
/// machine: 16 MiB are held within milliseconds, 3 s of compute are not.
fn config(extra_limits: &str) -> String {
    format!(
        r#"
[limits]
max_mapping_seconds = 3
max_mapping_bytes = 16_777_216
{extra_limits}

[[target]]
id = "out"
delivery = "outbox"

[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
split = "array"
key = "if .spin == \"key\" then (reduce range(1e15) as $i (0; . + 1) | tostring) else .id end"
mappings = ["spin"]
"#
    )
}

fn prepare(dir: &std::path::Path, records: &serde_json::Value) {
    std::fs::create_dir_all(dir.join("feed")).unwrap();
    std::fs::create_dir_all(dir.join("mappings")).unwrap();
    std::fs::write(dir.join("feed/records.json"), records.to_string()).unwrap();
    let mapping = format!(
        "name = \"spin\"\nprogram = '''{SPIN}'''\n[input]\nformat = \"json\"\n[output]\ntarget = \"out\"\nformat = \"json\"\n"
    );
    std::fs::write(dir.join("mappings/spin.toml"), mapping).unwrap();
}

fn problem<'a>(problems: &'a [Problem], key: &str) -> &'a Problem {
    problems.iter().find(|p| p.item_key == key || p.message.contains(key)).unwrap_or_else(|| {
        panic!("no problem for {key}: {problems:#?}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_over_its_budget_is_stopped_and_its_item_quarantined_naming_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let xs: Vec<u32> = (0..400).collect();
    let records = serde_json::json!([
        {"id": "good-1"},
        {"id": "time", "spin": "time"},
        {"id": "time-in-a-loop-of-its-own", "spin": "time-in-a-loop-of-its-own"},
        {"id": "bytes", "spin": "bytes"},
        {"id": "bytes-by-doubling", "spin": "bytes-by-doubling"},
        {"id": "cartesian", "spin": "cartesian", "xs": xs},
        {"id": "caught", "spin": "caught"},
        {"id": "recursion", "spin": "recursion"},
        {"id": "key", "spin": "key"},
        {"id": "good-2"},
    ]);
    prepare(dir.path(), &records);
    let app = TestApp::with_config(dir, &config("")).await;
    let report = app.migrate().await;

    assert_eq!(report.status, RunStatus::Partial, "{report:#?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // The good records are delivered, the run went on after each stopped one.
    let files = app.outbox_files();
    assert_eq!(files, ["out/feed%2Fgood-1.json", "out/feed%2Fgood-2.json"], "{report:#?}");

    let seconds = "stopped after running longer than 3 s (limits.max_mapping_seconds)";
    let bytes = "stopped after holding more than 16777216 bytes (limits.max_mapping_bytes)";
    let stack = "stopped after nesting calls deeper than the engine's stack of 32 MiB allows";
    for (id, budget) in [
        ("time", seconds),
        ("time-in-a-loop-of-its-own", seconds),
        ("bytes", bytes),
        ("bytes-by-doubling", bytes),
        // caught by `try`: stopped all the same
        ("caught", seconds),
        ("recursion", stack),
    ] {
        let problem = problem(&report.problems, &format!("feed/{id}"));
        assert_eq!(problem.status, ItemStatus::Quarantined, "{problem:?}");
        assert_eq!(problem.stage.as_str(), "map", "{problem:?}");
        assert!(problem.message.contains(&format!("mapping spin: {budget}")), "{id}: {}", problem.message);
    }
    // 64 million triples: whichever budget it meets first.
    let cartesian = problem(&report.problems, "feed/cartesian");
    assert_eq!(cartesian.status, ItemStatus::Quarantined);
    assert!(cartesian.message.contains("(limits.max_mapping_"), "{}", cartesian.message);
    // The key expression has the same budget.
    let key = problem(&report.problems, "records.json#8");
    assert!(key.message.contains(&format!("the key expression failed: {seconds}")), "{}", key.message);

    // The next run meets the same budgets the same way; the delivered items stay as they are.
    let again = app.migrate().await;
    assert_eq!(again.status, RunStatus::Partial);
    assert_eq!(again.problems.len(), report.problems.len(), "{again:#?}");
    assert_eq!(app.outbox_files(), files);
}

/// Longest a `/healthz` answer may take while the costly records are mapped.
const HEALTH_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// The byte budget of the daemon test, and the peak resident memory docs/robustness.md promises
/// for it: the process's base (256 MiB, generous for a debug build) plus, for each mapping that can
/// run at once (two per core, at least two cores), twice the budget (a run is stopped at the
/// first check past it; one allocation may double what it holds).
const DAEMON_BUDGET_BYTES: u64 = 64 << 20;

fn rss_bound() -> u64 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2) as u64;
    (256 << 20) + 2 * cores * 2 * DAEMON_BUDGET_BYTES
}

/// Peak resident memory (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The daemon binary fed the issue's pathological forms (a rule text of 100,000 ids for `gsub`, a
/// form of regex bombs, a praezisierung of 1,000,000 `[` for `fromjson`) next to good forms, and a feed whose mapping runs out of time and out of
/// memory for two records: `/healthz` answers throughout within 2 s, the process's peak memory stays
/// under the documented bound, the records over budget are quarantined with a message naming the
/// budget, and every other item is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_fed_pathological_records_stays_healthy_and_within_its_memory_bound() {
    use std::io::BufRead;
    let repo = crate::support::repo();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    crate::support::copy_dir(&repo.join("mappings"), &root.join("mappings"));
    crate::support::copy_dir(&repo.join("schemas"), &root.join("schemas"));
    crate::support::copy_dir(&repo.join("demo/codelists"), &root.join("codelists"));
    crate::support::copy_dir(&repo.join("demo/aachen/forms"), &root.join("forms"));
    crate::corpus::generate("xml-many-ids-in-a-rule", &root.join("forms/many-ids.xml"));
    crate::corpus::generate("xml-regex-bombs", &root.join("forms/regex-bombs.xml"));
    crate::corpus::generate("xml-deep-json-praezisierung", &root.join("forms/deep-json.xml"));
    prepare(
        root,
        &serde_json::json!([{"id": "good-1"}, {"id": "bytes", "spin": "bytes"}, {"id": "time", "spin": "time"}, {"id": "good-2"}]),
    );
    std::fs::write(root.join("admin-token"), "admin-secret").unwrap();
    let form_key = crate::corpus::form_key();
    let text = format!(
        r#"root = "."
[database]
url = "sqlite://var/bridge.db"
[paths]
mappings = "mappings"
codelists = "codelists"
outbox = "var/outbox"
[admin]
listen = "127.0.0.1:0"
token_file = "admin-token"
[limits]
# Ample for the linear pathological forms in a debug build on a loaded machine (they must be
# delivered: 100,000 ids took over 2 s while two other builds ran); the spinning item needs it all.
max_mapping_seconds = 15
max_mapping_bytes = {DAEMON_BUDGET_BYTES}

[[target]]
id = "form-platform"
delivery = "outbox"
[[target]]
id = "portal-xml"
delivery = "outbox"
[[target]]
id = "out"
delivery = "outbox"

[[source]]
id = "forms"
region = "aachen"
kind = "directory"
path = "forms"
include = ["*.xml"]
format = "xml"
{form_key}
mappings = ["xdatenfelder2-to-form", "xdatenfelder2-to-xdf3"]

[[source]]
id = "feed"
region = "test"
kind = "directory"
path = "feed"
split = "array"
key = ".id"
mappings = ["spin"]
"#
    );
    let app = TestApp::with_config(dir, &text).await;
    let mut child = app
        .std_command()
        .args(["--log-format", "json", "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The admin API's address from the daemon's log; the rest of the log is drained.
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("admin API listening") {
                let log: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = address_tx.send(log["address"].as_str().unwrap().to_owned());
            }
        }
    });
    let address = address_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the daemon listens");
    let base = format!("http://{address}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = tokio::spawn({
        let (client, url, stop) = (client.clone(), format!("{base}/healthz"), stop.clone());
        async move {
            let mut polls = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let answer = tokio::time::timeout(HEALTH_BOUND, client.get(&url).send()).await;
                polls.push(match answer {
                    Ok(Ok(response)) => Ok(response.status().as_u16()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {HEALTH_BOUND:?} ({:?})", started.elapsed())),
                });
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            polls
        }
    });

    let response = client
        .post(format!("{base}/api/runs"))
        .bearer_auth("admin-secret")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "{}", response.text().await.unwrap_or_default());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let run = loop {
        let runs = app.deps.store.runs(10).await.unwrap();
        if let Some(run) = runs.into_iter().find(|r| r.finished_at.is_some()) {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not finish");
        assert!(child.try_wait().unwrap().is_none(), "the daemon died");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let polls = poller.await.unwrap();
    let peak = peak_rss(pid);
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    assert!(child.wait().unwrap().success(), "the daemon exits cleanly");

    let failed: Vec<_> = polls.iter().filter(|p| **p != Ok(200)).collect();
    assert!(failed.is_empty(), "{} of {} /healthz polls failed: {failed:?}", failed.len(), polls.len());
    assert!(polls.len() >= 3, "/healthz was polled throughout the run");
    eprintln!("daemon: {} /healthz polls, peak RSS {} MiB (bound {} MiB)", polls.len(), peak >> 20, rss_bound() >> 20);
    assert!(peak < rss_bound(), "peak RSS {} MiB over the bound of {} MiB", peak >> 20, rss_bound() >> 20);

    assert_eq!(run.status, "partial", "{run:?}");
    let rows = app.deps.store.items(None, None, i64::MAX).await.unwrap();
    let status = |key: &str, target: &str| {
        let row = rows.iter().find(|r| r.item_key == key && r.target == target);
        row.unwrap_or_else(|| panic!("{key} at {target}: {rows:#?}"))
    };
    // Every form, the pathological ones too, is delivered to both targets.
    for id in ["S05000101@1.0", "S05000102@1.1", "S05000103@2.0", "S99000101@1.0", "S99000102@1.1", "S99000103@2.0"] {
        for target in ["form-platform", "portal-xml"] {
            let row = status(&format!("forms/{id}"), target);
            assert_eq!(row.status, "delivered", "{row:#?}");
        }
    }
    for id in ["good-1", "good-2"] {
        assert_eq!(status(&format!("feed/{id}"), "out").status, "delivered");
    }
    for (id, budget) in [("bytes", "(limits.max_mapping_bytes)"), ("time", "(limits.max_mapping_seconds)")] {
        let row = status(&format!("feed/{id}"), "out");
        assert_eq!(row.status, "quarantined", "{row:#?}");
        assert!(row.last_error.as_deref().unwrap_or_default().contains(budget), "{row:#?}");
    }
}

#[test]
fn budgets_that_allow_nothing_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), &serde_json::json!([]));
    let text = config("")
        .replace("max_mapping_seconds = 3\n", "max_mapping_seconds = 0\n")
        .replace("max_mapping_bytes = 16_777_216\n", "max_mapping_bytes = 0\nmax_mapping_secs = 3\n");
    std::fs::write(dir.path().join("bridge.toml"), text).unwrap();
    let output = assert_cmd::Command::cargo_bin("portal-bridge")
        .unwrap()
        .arg("--config")
        .arg(dir.path().join("bridge.toml"))
        .arg("check")
        .env_remove("PORTAL_BRIDGE_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "bridge.toml:3: limits.max_mapping_seconds = 0: must be more than 0 and at most 86400",
        "bridge.toml:4: limits.max_mapping_bytes must be more than 0",
        "bridge.toml:5: unknown key `limits.max_mapping_secs` (did you mean `max_mapping_seconds`?)",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}
