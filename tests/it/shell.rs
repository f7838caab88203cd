//! The command line at the shell (#17): closed pipes, colour only on a terminal, JSON logs with
//! top-level fields, error hints, exit codes, `items`, `skip`/`unskip`, `map` as `migrate` delivers.

use std::process::Stdio;

use crate::support::TestApp;

/// The lines of `text` parsed as JSON objects (lines that are not JSON are left out).
fn json_lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test]
async fn a_closed_pipe_ends_the_command_quietly_with_exit_0() {
    let app = TestApp::demo().await;
    app.command().args(["migrate"]).assert().success();
    for args in [&["log"][..], &["log", "--json"], &["status"], &["check"]] {
        // The reader is gone before the command writes anything (as after `| head -1`).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = app.std_command().args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn log_lines_on_a_file_carry_no_colour() {
    let app = TestApp::demo().await;
    std::fs::write(
        app.path("demo/owl/forms/S05000131_fundsache-melden.xml"),
        "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>",
    )
    .unwrap();
    // stderr is a pipe, not a terminal; NO_COLOR is not set.
    let out = app.std_command().env_remove("NO_COLOR").arg("migrate").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN"), "a quarantine is logged: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escape codes off a terminal: {stderr:?}");
}

#[tokio::test]
async fn json_logs_carry_run_item_source_and_delivery_target_at_the_top_with_numbers_as_numbers() {
    let app = TestApp::demo().await;
    std::fs::write(
        app.path("demo/owl/forms/S05000131_fundsache-melden.xml"),
        "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>",
    )
    .unwrap();
    let out = app.std_command().args(["--log-format", "json", "migrate", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = report["run_id"].as_i64().unwrap();
    let lines = json_lines(&out.stderr);
    assert!(!lines.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in &lines {
        assert!(line["module"].as_str().is_some_and(|m| m.starts_with("portal_bridge")), "{line}");
        assert!(line.get("target").is_none(), "no `target` that reads like a delivery target: {line}");
        assert!(line.get("span").is_none() && line.get("spans").is_none(), "{line}");
    }
    let started = lines.iter().find(|l| l["message"] == "run started").expect("a `run started` line");
    assert_eq!(started["run_id"], run_id, "{started}");
    assert!(started["sources"].as_array().is_some_and(|s| s.len() == 10), "sources as a JSON array: {started}");
    let finished = lines.iter().find(|l| l["message"] == "run finished").expect("a `run finished` line");
    assert_eq!(finished["run_id"], run_id, "{finished}");
    assert_eq!(finished["quarantined"], 1, "counts as numbers: {finished}");
    assert!(finished["new"].as_i64().is_some_and(|n| n > 0), "{finished}");
    let quarantined = lines
        .iter()
        .find(|l| l["item"].as_str().is_some_and(|i| i.starts_with("owl-forms/file:")))
        .expect("the quarantined file's line");
    assert_eq!(quarantined["run_id"], run_id, "the run's id at the top: {quarantined}");
    assert_eq!(quarantined["source"], "owl-forms", "{quarantined}");
    assert!(quarantined["delivery_target"].is_string(), "{quarantined}");
    assert_eq!(quarantined["level"], "WARN", "{quarantined}");

    // Text logs: readable counts, not Rust debug text.
    let out = app.std_command().args(["migrate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let finished = stderr.lines().find(|l| l.contains("run finished")).expect(&stderr);
    assert!(!finished.contains("Counts {"), "{finished}");
    assert!(finished.contains("quarantined=1"), "{finished}");
}

/// Runs `args` and returns (exit code, stdout, stderr).
fn run(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = app.std_command().args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn errors_suggest_the_fix() {
    let app = TestApp::demo().await;
    app.command().arg("migrate").assert().success();
    let (code, _, err) = run(&app, &["map", "--mapping", "zufi-to-xzuf", "x.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown mapping `zufi-to-xzuf` (did you mean `zufi-to-xzufi`?)"), "{err}");
    assert!(err.contains("xdatenfelder2-to-form, xdatenfelder2-to-xdf3"), "the list of mappings: {err}");
    let (code, _, err) = run(&app, &["test-mappings", "--mapping", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("there are: xdatenfelder2-to-form"), "{err}");
    let (code, _, err) = run(&app, &["migrate", "--source", "aachen-form"]);
    assert_eq!(code, 2);
    assert!(err.contains("(did you mean `aachen-forms`?)"), "{err}");
    let (code, _, err) = run(&app, &["show", "aachen-forms/S0500010@1.0"]);
    assert_eq!(code, 2);
    assert!(err.contains("(did you mean `aachen-forms/S05000101@1.0`?)"), "{err}");
    let (code, _, err) = run(&app, &["migrate", "--item", "aachen-forms/S0500010@1.0"]);
    assert_eq!(code, 2, "a typo is a usage error, not a partial run: {err}");
    assert!(err.contains("(did you mean `aachen-forms/S05000101@1.0`?)"), "{err}");
    assert_eq!(app.deps.store.runs(10).await.unwrap().len(), 1, "no run recorded for the typo");

    // The cron field and its real range.
    let config = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, config.replacen("schedule = \"0 */2 * * *\"", "schedule = \"0 24 * * *\"", 1))
        .unwrap();
    let (code, _, err) = run(&app, &["check"]);
    assert_eq!(code, 2);
    assert!(err.contains("the hour field `24` has 24, outside its range 0–23"), "{err}");
    assert!(!err.contains("less than 23"), "{err}");
    // An unknown key of a mapping file: the closest known one.
    let mappings = app.path("mappings");
    crate::support::copy_dir(&crate::support::repo().join("mappings"), &mappings);
    let mapping = mappings.join("zufi-to-xzufi.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(&mapping, text.replacen("name = ", "nme = ", 1)).unwrap();
    let schemas = crate::support::repo().join("schemas");
    let config = config.replace(
        &format!("mappings = {:?}", crate::support::repo().join("mappings").display().to_string()),
        &format!("mappings = {:?}", mappings.display().to_string()),
    );
    std::os::unix::fs::symlink(&schemas, app.path("schemas")).unwrap();
    std::fs::write(&app.config_path, &config).unwrap();
    let (code, _, err) = run(&app, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `nme`") && err.contains("(did you mean `name`?)"), "{err}");
}

#[tokio::test]
async fn the_listen_address_may_be_a_host_name() {
    let app = TestApp::demo().await;
    let (code, _, err) = run(&app, &["run", "--listen", "nonsense"]);
    assert_eq!(code, 2);
    assert!(err.contains("localhost:8080"), "the hint shows a host name with a port: {err}");
    // A host name with a port is taken: the daemon starts and listens on it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut daemon = app
        .std_command()
        .args(["run", "--listen", &format!("localhost:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        for host in ["127.0.0.1", "[::1]"] {
            if client.get(format!("http://{host}:{port}/healthz")).send().await.is_ok() {
                up = true;
            }
        }
        if up {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(up, "the daemon listened on localhost:{port}");
}

#[tokio::test]
async fn a_read_only_command_creates_no_database_and_names_the_missing_state_directory() {
    if crate::support::postgres_server().is_some() {
        return; // SQLite's files only.
    }
    let app = TestApp::demo().await;
    app.deps.store.close().await;
    std::fs::remove_dir_all(app.path("var")).unwrap();
    for args in [&["status"][..], &["log"], &["show", "aachen-forms/x"], &["plan", "list"], &["report", "quality"]] {
        let (code, _, err) = run(&app, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("the state directory {} does not exist", app.path("var").display())),
            "{args:?}: {err}"
        );
        assert!(!app.path("var").exists(), "{args:?} created nothing");
    }
    // check says where the first run puts the database, and creates nothing either.
    app.command().arg("check").assert().success();
    assert!(!app.path("var").exists());

    // A database that cannot be written is named as such, once, and `check` refuses it.
    app.command().arg("migrate").assert().success();
    let url = format!("sqlite://{}?mode=ro", app.path("var/bridge.db").display());
    for args in [&["migrate"][..], &["check"]] {
        let out = app.std_command().env(portal_bridge::config::DATABASE_URL_ENV, &url).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        let path = app.path("var/bridge.db").display().to_string();
        assert!(err.contains(&format!("the database {path} is read-only")), "{args:?}: {err}");
        assert_eq!(err.matches("readonly database").count(), 1, "{args:?}: said once: {err}");
    }
}

/// The rows of `items --json` with the arguments `args`.
fn items(app: &TestApp, args: &[&str]) -> Vec<serde_json::Value> {
    let out = app.command().arg("items").args(args).arg("--json").assert().success().get_output().stdout.clone();
    serde_json::from_slice::<Vec<serde_json::Value>>(&out).unwrap()
}

#[tokio::test]
async fn items_lists_by_status_and_source() {
    let app = TestApp::demo().await;
    std::fs::write(
        app.path("demo/owl/forms/S05000131_fundsache-melden.xml"),
        "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>",
    )
    .unwrap();
    app.command().arg("migrate").assert().code(3);
    let all = items(&app, &[]);
    let (forms, services) = crate::support::demo_counts();
    assert_eq!(
        all.len(),
        2 * (forms - 1) + services + 1,
        "item × target rows (services go to portal-xml only) and the placeholder"
    );
    let quarantined = items(&app, &["--status", "quarantined"]);
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0]["item_key"], "owl-forms/file:demo/owl/forms/S05000131_fundsache-melden.xml");
    assert!(quarantined[0]["last_error"].as_str().unwrap().contains("XML"), "{quarantined:?}");
    let soest = items(&app, &["--source", "soest-forms", "--status", "delivered"]);
    assert!(!soest.is_empty() && soest.iter().all(|i| i["source"] == "soest-forms" && i["status"] == "delivered"));
    let text = app.command().args(["items", "--status", "quarantined"]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("owl-forms/file:") && text.contains("1 row(s)"), "{text}");
    let (code, _, err) = run(&app, &["items", "--status", "quarantind"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `quarantined`"), "{err}");
}

#[tokio::test]
async fn a_skipped_file_placeholder_stays_skipped_is_shown_as_skipped_and_can_be_unskipped() {
    let app = TestApp::demo().await;
    let broken = "demo/owl/forms/S05000131_fundsache-melden.xml";
    std::fs::write(app.path(broken), "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>").unwrap();
    app.command().arg("migrate").assert().code(3);
    let key = format!("owl-forms/file:{broken}");
    app.command().args(["skip", &key, "--reason", "fixed upstream next week"]).assert().success();

    // The skip holds: the run is fine, the placeholder is not quarantined again.
    let out = app.command().args(["migrate", "--json"]).assert().code(0).get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["quarantined"], 0, "{report}");
    let skipped = items(&app, &["--status", "skipped"]);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["item_key"], key.as_str());
    assert_eq!(skipped[0]["skip_reason"].as_str().map(|r| r.starts_with("fixed upstream next week")), Some(true));
    assert!(items(&app, &["--status", "quarantined"]).is_empty(), "a skipped item is not counted as quarantined");
    let status = app.command().args(["status", "--json"]).assert().success().get_output().stdout.clone();
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let owl: Vec<&serde_json::Value> =
        status["items"].as_array().unwrap().iter().filter(|c| c["source_id"] == "owl-forms").collect();
    assert!(owl.iter().any(|c| c["status"] == "skipped" && c["count"] == 1), "{owl:?}");
    assert!(!owl.iter().any(|c| c["status"] == "quarantined"), "{owl:?}");
    app.command().args(["show", &key]).assert().success().stdout(predicates::str::contains("skipped"));

    // A changed file is looked at again.
    std::fs::write(app.path(broken), "<xdf:xdatenfelder.stammdatenschema.0102><still-broken>").unwrap();
    app.command().arg("migrate").assert().code(3);
    assert!(items(&app, &["--status", "skipped"]).is_empty());
    app.command().args(["skip", &key, "--reason", "still broken"]).assert().success();
    app.command().arg("migrate").assert().code(0);

    // unskip: the next run quarantines it again; the log says who undid the skip.
    app.command().args(["unskip", &key, "--reason", "they did not fix it", "--by", "a.admin"]).assert().success();
    assert!(items(&app, &["--status", "skipped"]).is_empty());
    app.command().arg("migrate").assert().code(3);
    assert_eq!(items(&app, &["--status", "quarantined"]).len(), 1);
    let log = app.command().args(["log", "--item", &key, "--json"]).assert().success().get_output().stdout.clone();
    assert!(
        json_lines(&log).iter().any(|e| e["message"] == "unskipped by a.admin: they did not fix it"),
        "{}",
        String::from_utf8_lossy(&log)
    );
    let (code, _, err) = run(&app, &["unskip", &key]);
    assert_eq!(code, 2, "not skipped: {err}");
    assert!(err.contains("is not skipped"), "{err}");
    let (code, _, _) = run(&app, &["unskip", "owl-forms/nope"]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn map_with_the_source_prints_exactly_the_outbox_bytes_of_a_split_feed() {
    let app = TestApp::demo().await;
    // A first run records the services' LeiKa keys, which `adopt add` checks.
    app.command().arg("migrate").assert().success();
    app.command()
        .args(["adopt", "add", "--ars", "053150000000", "--service", "99108001001000", "--name", "Stadt Köln"])
        .assert()
        .success();
    app.command().arg("migrate").assert().success();
    let feed = app.path("demo/aachen/services.json");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&feed).unwrap()).unwrap();
    assert!(records.len() > 1, "a feed of several records");
    let mut delivered = Vec::new();
    for record in &records {
        let key = record["leistung"]["schluessel"].as_str().unwrap();
        let file = app.path(&format!("var/outbox/portal-xml/aachen-services%2F{key}.xml"));
        delivered.extend(std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
    }
    let out = app
        .command()
        .args(["map", "--mapping", "zufi-to-xzufi", "--source", "aachen-services"])
        .arg(&feed)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&delivered).contains("053150000000"), "the adoption is in the delivered document");
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&delivered));
    assert_eq!(out, delivered, "the same bytes as the outbox, record by record");
}

/// The exit codes as README.md documents them, command by command: 0 fine, 1 fatal, 2 usage,
/// 3 partial, 5 awaits approval, 6 refused (4 busy and 130 interrupted: tests/it/operators.rs,
/// tests/it/runs.rs).
#[tokio::test]
async fn every_command_exits_with_the_documented_code() {
    let app = TestApp::demo().await;
    let feed = app.path("demo/aachen/services.json").display().to_string();
    let form = "aachen-forms/S05000101@1.0";
    if crate::support::postgres_server().is_none() {
        app.deps.store.close().await;
        std::fs::remove_dir_all(app.path("var")).unwrap();
        for args in [&["status"][..], &["log"], &["items"]] {
            let (got, _, err) = run(&app, args);
            assert_eq!(got, 1, "portal-bridge {}: {err}", args.join(" ")); // no database yet
        }
    }
    check(
        &app,
        &[
            (&["nosuch"], 2),
            (&["--help"], 0),
            (&["migrate", "--dry-run"], 0),
            (&["migrate"], 0),
            (&["status"], 0),
            (&["status", "--json"], 0),
            (&["log"], 0),
            (&["log", "--json", "--limit", "5"], 0),
            (&["log", "--level", "loud"], 2),
            (&["items"], 0),
            (&["items", "--status", "loud"], 2),
            (&["items", "--source", "nope"], 2),
            (&["show", form], 0),
            (&["show", "aachen-forms/nope"], 2),
            (&["show", "no-key"], 2),
            (&["check"], 0),
            (&["test-mappings"], 0),
            (&["test-mappings", "--mapping", "nope"], 2),
            (&["map", "--mapping", "zufi-to-xzufi", "--source", "aachen-services", &feed], 0),
            (&["map", "--mapping", "nope", &feed], 2),
            (&["map", "--mapping", "zufi-to-xzufi", "--source", "nope", &feed], 2),
            (&["migrate", "--item", "aachen-forms/S0500010@1.0"], 2),
            (&["migrate", "--item", "no-key"], 2),
            (&["migrate", "--source", "nope"], 2),
            (&["migrate", "--item", form], 0),
            (&["retry", form], 0),
            (&["retry", "aachen-forms/nope"], 2),
            (&["skip", "aachen-forms/nope", "--reason", "r"], 2),
            (&["skip", form, "--reason", " "], 2),
            (&["skip", form, "--reason", "by hand"], 0),
            (&["unskip", form], 0),
            (&["unskip", form], 2),
            (&["resolve", form, "--overwrite"], 2),
            (&["adopt", "add", "--ars", "x", "--service", "y"], 2),
            (&["adopt", "add", "--ars", "053150000000", "--service", "99108001001000"], 0),
            (&["adopt", "list"], 0),
            (&["adopt", "remove", "--ars", "053150000000", "--service", "99108001001000"], 0),
            (&["adopt", "remove", "--ars", "053150000000", "--service", "99108001001000"], 2),
            (&["plan", "list"], 0),
            (&["plan", "show", "99"], 2),
            (&["approve", "99", "--reason", "r"], 2),
            (&["reject", "99", "--reason", "r"], 2),
            (&["apply", "99"], 2),
            (&["report", "quality"], 0),
            (&["report", "quality", "--source", "nope"], 2),
            (&["run", "--listen", "nonsense"], 2),
            (&["plan", "--source", "nope"], 2),
            (&["plan", "--item", "aachen-forms/nope"], 2),
            (&["audit", "verify", "--since", "yesterday-ish"], 2),
            (&["audit", "export", "--format", "xml"], 2),
            (&["adopt", "import", "no-such-file.csv"], 2),
            (&["retry", "--status", "delivered"], 2),
            (&["migrate", "--dry-run", "--source", "nope"], 2),
        ],
    );
    std::fs::write(app.path("demo/owl/forms/S05000131_fundsache-melden.xml"), "<broken").unwrap();
    check(&app, &[(&["migrate"], 3), (&["migrate", "--source", "owl-forms"], 3)]);

    // With every change to be approved: a run stops at its plan (5); nobody approves their own
    // plan, and an unapproved plan is not applied (6).
    let config = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{config}\n[approval]\nalways = true\n")).unwrap();
    app.command().args(["migrate", "--force"]).assert().code(5);
    let plans = app.command().args(["plan", "list", "--json"]).assert().success().get_output().stdout.clone();
    let plans: serde_json::Value = serde_json::from_slice(&plans).unwrap();
    let id = plans[0]["id"].as_i64().unwrap().to_string();
    check(&app, &[(&["plan", "show", &id], 0), (&["approve", &id, "--reason", "mine"], 6), (&["apply", &id], 6)]);
}

/// Runs each command and checks its exit code; a command that is refused (usage 2, refused 6)
/// leaves no trace in the audit trail: the chain's head is the one before it (#18).
fn check(app: &TestApp, table: &[(&[&str], i32)]) {
    // The head as `audit verify` reads it (null before the database exists): the test's own store
    // may have been closed to show the commands without a database.
    let head = || {
        let (_, out, _) = run(app, &["audit", "verify", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).map(|r| r["head"].clone()).unwrap_or_default()
    };
    for (args, code) in table {
        let before = head();
        let (got, _, err) = run(app, args);
        assert_eq!(got, *code, "portal-bridge {}: {err}", args.join(" "));
        if matches!(code, 2 | 6) {
            let after = head();
            assert_eq!(after, before, "portal-bridge {} was refused, yet it left a trace in the log", args.join(" "));
        }
    }
}

#[tokio::test]
async fn log_pages_through_everything_and_says_when_it_cut() {
    let app = TestApp::demo().await;
    app.command().arg("migrate").assert().success();
    let all = app.command().args(["log", "--all", "--json"]).assert().success().get_output().clone();
    let all = json_lines(&all.stdout);
    assert!(all.len() > 10, "{}", all.len());
    let (code, out, err) = run(&app, &["log", "--json", "--limit", "5"]);
    assert_eq!(code, 0);
    let page = json_lines(out.as_bytes());
    assert_eq!(page, all[all.len() - 5..], "the most recent five, oldest first");
    let first = page[0]["id"].as_i64().unwrap().to_string();
    assert!(err.contains(&format!("showing the last 5 matching events; older ones: --before {first}")), "{err}");
    let (_, out, _) = run(&app, &["log", "--json", "--limit", "5", "--before", &first]);
    assert_eq!(json_lines(out.as_bytes()), all[all.len() - 10..all.len() - 5], "the page before");
    let (_, out, err) = run(&app, &["log", "--json", "--limit", &all.len().to_string()]);
    assert_eq!(json_lines(out.as_bytes()).len(), all.len());
    assert!(err.is_empty(), "nothing cut, nothing said: {err}");
    let (_, out, _) = run(&app, &["log"]);
    assert!(out.lines().nth(1).is_some_and(|l| l.contains(" id ")), "the table shows the ids: {out}");
}

#[tokio::test]
async fn a_german_excel_csv_is_imported_or_refused_with_a_precise_hint_and_its_line() {
    let app = TestApp::demo().await;
    app.migrate().await;
    // Excel on a German system: `;` between fields, Windows-1252 (ö is the one byte 0xF6), CRLF.
    let good = app.path("nachnutzung.csv");
    std::fs::write(&good, b"ars;service;name\r\n053150000000;99108001001000;Stadt K\xF6ln\r\n").unwrap();
    app.command().args(["adopt", "import"]).arg(&good).assert().success();
    let list = app.command().args(["adopt", "list", "--json"]).assert().success().get_output().stdout.clone();
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list[0]["ars"], "053150000000", "{list}");
    assert_eq!(list[0]["name"], "Stadt Köln", "{list}");

    // The ARS as Excel writes a number (leading 0 gone), after a blank line and a quoted line break.
    let bad = app.path("kaputt.csv");
    std::fs::write(
        &bad,
        b"ars;service;name\r\n\r\n051110000000;99108001001000;\"D\xFCssel-\r\ndorf\"\r\n53150000000;99108012005001;K\xF6ln\r\n",
    )
    .unwrap();
    let (code, _, err) = run(&app, &["adopt", "import", &bad.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    let file = bad.display().to_string();
    assert!(err.contains(&format!("{file}:5: ")), "the line of the bad row: {err}");
    assert!(err.contains("0053150000000") || err.contains("053150000000 without its leading 0"), "{err}");
    assert!(err.contains("format the column as text"), "{err}");
    assert!(err.contains("nothing imported"), "{err}");

    let header = app.path("header.csv");
    std::fs::write(&header, "Gemeinde;Leistung\n053150000000;99108001001000\n").unwrap();
    let (code, _, err) = run(&app, &["adopt", "import", &header.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("it has `Gemeinde`, `Leistung`"), "{err}");
}

#[test]
fn mapping_comments_cite_only_documents_in_the_repository() {
    let repo = crate::support::repo();
    let mut names = std::collections::BTreeSet::new();
    let mut stack = vec![repo.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('.') && name != "target" {
                stack.push(path);
            } else {
                names.insert(name);
            }
        }
    }
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(repo.join("mappings")).unwrap().flatten() {
        let path = entry.path();
        if !path.extension().is_some_and(|e| e == "toml" || e == "jq") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let cited = line
                .split(|c: char| !(c.is_alphanumeric() || "./_-".contains(c)))
                .map(|w| w.trim_end_matches('.'))
                .filter(|w| w.ends_with(".md") || w.ends_with(".pdf"));
            for document in cited {
                let found = if document.contains('/') {
                    repo.join(document).exists() || repo.join("mappings").join(document).exists()
                } else {
                    names.contains(document)
                };
                if !found {
                    missing.push(format!("{}:{}: {document}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(missing.is_empty(), "documents cited that the repository does not hold: {missing:#?}");
}

#[tokio::test]
async fn test_mappings_update_regenerates_the_expected_files() {
    let app = TestApp::demo().await;
    let repo = crate::support::repo();
    let mappings = app.path("mappings");
    crate::support::copy_dir(&repo.join("mappings"), &mappings);
    std::os::unix::fs::symlink(repo.join("schemas"), app.path("schemas")).unwrap();
    let config = std::fs::read_to_string(&app.config_path).unwrap().replace(
        &format!("mappings = {:?}", repo.join("mappings").display().to_string()),
        &format!("mappings = {:?}", mappings.display().to_string()),
    );
    std::fs::write(&app.config_path, config).unwrap();
    let cases = mappings.join("tests/zufi-to-xzufi");
    let mut expected: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".expected."))
        .collect();
    expected.sort();
    assert!(expected.len() >= 2);
    let original: Vec<Vec<u8>> = expected.iter().map(|p| std::fs::read(p).unwrap()).collect();
    std::fs::write(&expected[0], "stale\n").unwrap();
    std::fs::remove_file(&expected[1]).unwrap();

    let (code, out, _) = run(&app, &["test-mappings", "--mapping", "zufi-to-xzufi"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("test-mappings --update"), "the failure says how to regenerate: {out}");
    let (code, out, _) = run(&app, &["test-mappings", "--mapping", "zufi-to-xzufi", "--update"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 expected file(s) written, 0 failed"), "{out}");
    for (path, bytes) in expected.iter().zip(&original) {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} is what the mapping gives", path.display());
    }
    app.command().args(["test-mappings"]).assert().success();
}

/// Times on the command line are in the configured time zone with its name (the demo's is
/// Europe/Berlin), as on the review pages; JSON keeps the stored UTC timestamps.
#[tokio::test]
async fn the_command_line_shows_times_in_the_configured_zone() {
    let app = TestApp::demo().await;
    app.migrate().await;
    let zone = |text: &str| text.contains(" CET") || text.contains(" CEST");
    for args in [&["status"][..], &["log", "--limit", "3"], &["items", "--source", "aachen-forms"]] {
        let (code, stdout, stderr) = run(&app, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(zone(&stdout), "{args:?} shows Berlin time:\n{stdout}");
        let raw = stdout
            .split(|c: char| c.is_whitespace() || c == '|')
            .find(|w| chrono::DateTime::parse_from_rfc3339(w).is_ok());
        assert_eq!(raw, None, "{args:?} shows no raw UTC timestamps:\n{stdout}");
    }
    let (_, stdout, _) = run(&app, &["log", "--limit", "1", "--json"]);
    let event: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(
        event["at"].as_str().unwrap().ends_with('Z') || event["at"].as_str().unwrap().contains("+00:00"),
        "{event}"
    );
}
