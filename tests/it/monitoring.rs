//! The monitoring files in deploy/monitoring/: the Grafana dashboard and the Prometheus alert rules
//! name only metrics (and labels) the daemon really exports, and promtool accepts the rules, passes
//! their unit tests and parses every dashboard query.
//!
//! promtool (Debian package prometheus) missing: under `CI=true` the test fails; elsewhere it
//! explains and skips the promtool part.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portal_bridge::domain::Trigger;

use crate::support::{TestApp, repo};

fn monitoring() -> PathBuf {
    repo().join("deploy/monitoring")
}

/// Every PromQL expression of the alert rules, with the alert's name.
fn rule_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("portal-bridge.rules.yml")).unwrap();
    // The rules file is YAML; its `expr:` values are one line each (checked here).
    let mut exprs = Vec::new();
    let mut alert = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = name.to_owned();
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            assert!(!expr.starts_with('|') && !expr.starts_with('>'), "{alert}: keep expr on one line");
            exprs.push((alert.clone(), expr.to_owned()));
        }
    }
    assert!(exprs.len() >= 8, "{exprs:?}");
    exprs
}

/// Every PromQL expression of the dashboard's panels, with the panel's title.
fn dashboard_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "portal-bridge");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap().to_owned();
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}: use the dashboard's data source");
            exprs.push((title.clone(), target["expr"].as_str().unwrap().to_owned()));
        }
    }
    exprs
}

/// Metric names (`portal_bridge_…`) in a PromQL expression, each with the label names its selector
/// and the enclosing aggregations (`by (…)`, `on (…)`) use.
fn references(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut grouping = BTreeSet::new();
    for keyword in ["by", "on", "without", "ignoring"] {
        let mut rest = expr;
        while let Some(at) = rest.find(&format!("{keyword} (")) {
            let after = &rest[at + keyword.len() + 2..];
            let end = after.find(')').unwrap();
            grouping.extend(after[..end].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
            rest = &after[end..];
        }
    }
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("portal_bridge_") {
        let preceded_by_word = rest[..at].chars().next_back().is_some_and(word);
        let tail = &rest[at..];
        let end = tail.find(|c| !word(c)).unwrap_or(tail.len());
        let name = &tail[..end];
        let mut labels = grouping.clone();
        if tail[end..].starts_with('{') {
            let close = tail[end..].find('}').unwrap();
            for matcher in tail[end + 1..end + close].split(',') {
                let label = matcher.split(['=', '!', '~']).next().unwrap().trim();
                if !label.is_empty() {
                    labels.insert(label.to_owned());
                }
            }
        }
        if !preceded_by_word {
            found.push((name.to_owned(), labels));
        }
        rest = &tail[end..];
    }
    found
}

/// The series names each exported family has in the text format, and the labels seen on them.
fn exported(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>) {
    let mut series = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (family, kind) = rest.split_once(' ').unwrap();
        let names: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "gauge" => &[""],
            other => panic!("a {other} family: {family}"),
        };
        for suffix in names {
            series.insert(format!("{family}{suffix}"), family.to_owned());
        }
    }
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let Some(family) = series.get(&line[..name_end]) else { continue };
        let seen = labels.entry(family.clone()).or_default();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').unwrap();
            for pair in line[name_end + 1..close].split("\",") {
                seen.insert(pair.split('=').next().unwrap().trim().to_owned());
            }
        }
    }
    (series, labels)
}

/// What the daemon exports at `/metrics` after scheduled runs of the demo and of an HTTP source
/// (served on 127.0.0.1:0), once every family the dashboard or the rules name has shown up or a
/// minute has passed.
async fn scrape_daemon(wanted: &BTreeSet<String>) -> String {
    let services = std::fs::read(repo().join("demo/owl/services.json")).unwrap();
    let upstream = axum::Router::new().route(
        "/services.json",
        axum::routing::get(move || {
            let body = services.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services.json", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });

    let app = TestApp::demo().await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let every_second = text.replacen("schedule = \"0 */2 * * *\"", "schedule = \"* * * * * *\"", 1);
    assert_ne!(text, every_second, "the demo config's form schedule changed; adjust the test");
    let http = format!(
        "\n[[source]]\nid = \"owl-upstream\"\nregion = \"owl\"\nkind = \"http\"\nurl = \"{url}\"\n\
         split = \"array\"\nkey = \".leistung.schluessel\"\nmappings = [\"zufi-to-xzufi\"]\n\
         schedule = \"* * * * * *\"\n"
    );
    std::fs::write(&app.config_path, every_second + &http).unwrap();
    let daemon = app.start_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let response = reqwest::get(format!("{}/metrics", daemon.base)).await.unwrap();
        assert!(response.status().is_success(), "{response:?}");
        let text = response.text().await.unwrap();
        let (series, _) = exported(&text);
        let finished = app
            .deps
            .store
            .runs(10)
            .await
            .unwrap()
            .iter()
            .any(|r| r.trigger == Trigger::Schedule.as_str() && r.finished_at.is_some());
        if finished && wanted.iter().all(|name| series.contains_key(name)) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
    server.abort();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_name_metrics_and_labels_the_daemon_exports() {
    let expressions: Vec<(String, String)> = rule_expressions().into_iter().chain(dashboard_expressions()).collect();
    let wanted = expressions.iter().flat_map(|(_, expr)| references(expr)).map(|(name, _)| name).collect();
    let text = scrape_daemon(&wanted).await;
    // Every request to an HTTP source's upstream is timed.
    assert!(
        text.lines()
            .any(|l| l.starts_with("portal_bridge_upstream_request_duration_seconds_count{source=\"owl-upstream\"}")),
        "upstream requests are timed:\n{text}"
    );
    let (series, labels) = exported(&text);
    // Labels Prometheus adds to every scraped series.
    let scrape_labels: BTreeSet<String> = ["instance", "job", "le"].map(String::from).into();
    let mut wrong = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in expressions {
        for (name, wanted) in references(&expr) {
            let Some(family) = series.get(&name) else {
                wrong.push(format!("{place}: `{name}` is not exported"));
                continue;
            };
            used.insert(family.clone());
            // Labels are checked where the scrape has series of the family.
            if let Some(seen) = labels.get(family) {
                for label in wanted.difference(seen).filter(|l| !scrape_labels.contains(*l)) {
                    wrong.push(format!("{place}: `{name}` has no label `{label}` (it has {seen:?})"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n/metrics:\n{text}");
    // The metrics ops look at first are all on the dashboard or in an alert.
    for family in [
        "portal_bridge_source_last_success_timestamp_seconds",
        "portal_bridge_run_duration_seconds",
        "portal_bridge_documents",
        "portal_bridge_items",
        "portal_bridge_database_up",
    ] {
        assert!(used.contains(family), "{family} is neither on the dashboard nor in an alert");
    }
}

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_ok_and(|s| s.success()) {
        return Some("promtool");
    }
    let message = "promtool (Debian package prometheus) is not installed; .ci/run installs it";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping the promtool checks: {message}");
    None
}

fn promtool_ok(promtool: &str, dir: &Path, args: &[&str]) {
    let output = Command::new(promtool).args(args).current_dir(dir).output().unwrap();
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_passes_their_tests_and_parses_the_dashboard_queries() {
    let Some(promtool) = promtool() else { return };
    let dir = monitoring();
    promtool_ok(promtool, &dir, &["check", "rules", "portal-bridge.rules.yml"]);
    promtool_ok(promtool, &dir, &["test", "rules", "portal-bridge.rules.test.yml"]);
    // The dashboard's queries as recording rules, with Grafana's variables filled in, so that
    // promtool parses each one.
    let scratch = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in dashboard_expressions().into_iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$source", ".*");
        assert!(!expr.contains('$'), "{title}: a Grafana variable this test does not know: {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    std::fs::write(scratch.path().join("dashboard.rules.yml"), rules).unwrap();
    promtool_ok(promtool, scratch.path(), &["check", "rules", "dashboard.rules.yml"]);
}
