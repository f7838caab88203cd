//! The command line as an operator uses it: exit codes, JSON output, config errors, status, log and show.

use predicates::prelude::*;

use crate::support::{PgDatabase, TestApp, postgres_server, repo};

#[tokio::test]
async fn migrate_json_reports_counts_and_exit_codes() {
    let app = TestApp::demo().await;
    let out = app.command().args(["migrate", "--json"]).assert().success().get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in ["run_id", "status", "new", "updated", "unchanged", "failed", "quarantined", "withdrawn"] {
        assert!(report.get(key).is_some(), "missing {key} in {report}");
    }
    assert_eq!(report["status"], "ok");
    assert!(report["new"].as_i64().unwrap() > 0);

    std::fs::write(
        app.path("demo/owl/forms/S05000131_fundsache-melden.xml"),
        "<xdf:xdatenfelder.stammdatenschema.0102><xdf:header>",
    )
    .unwrap();
    let out = app.command().args(["migrate", "--json"]).assert().code(3).get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["status"], "partial");
    assert_eq!(report["quarantined"], 1);
}

#[tokio::test]
async fn status_log_and_show_tell_the_story_of_an_item() {
    let app = TestApp::demo().await;
    app.command().args(["migrate"]).assert().success();
    app.command().args(["migrate"]).assert().success();
    app.command()
        .args(["status"])
        .assert()
        .success()
        .stdout(predicate::str::contains("aachen-forms").and(predicate::str::contains("unchanged")));
    let key = "soest-forms/S05000142@1.0";
    let out = app.command().args(["log", "--item", key, "--json"]).assert().success().get_output().stdout.clone();
    let events: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["item_key"] == key && e["stage"] == "deliver"));
    app.command()
        .args(["show", key])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("target form-platform: unchanged")
                .and(predicate::str::contains("target portal-xml")),
        )
        .stdout(predicate::str::contains("soest-forms%2FS05000142@1.0.json"));
    app.command().args(["show", "soest-forms/nope"]).assert().code(2).stderr(predicate::str::contains("no item"));
    app.command().args(["log", "--level", "error"]).assert().success();
    app.command().args(["log", "--level", "loud"]).assert().code(2);
}

#[tokio::test]
async fn check_prints_the_next_fire_times() {
    let app = TestApp::demo().await;
    let out = app.command().arg("check").assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    let line = text.lines().find(|l| l.contains("schedule `0 */2 * * *`")).expect(&text);
    assert_eq!(line.matches("CE").count(), 3, "three fire times in Europe/Berlin: {line}");
}

#[tokio::test]
async fn check_names_each_broken_codelist_file_with_its_reason_and_migrate_goes_on() {
    let app = TestApp::demo().await;
    let codelists = app.path("demo/codelists");
    std::fs::copy(repo().join("tests/bad-input/codelists/broken-codelist.xml"), codelists.join("kaputt.xml")).unwrap();
    // 1 GiB, sparse: over limits.max_codelist_bytes, and never read.
    std::fs::File::create(codelists.join("riesig.xml")).unwrap().set_len(1 << 30).unwrap();
    let out = app.command().arg("check").assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    let line =
        |name: &str| text.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {text}")).to_owned();
    let kaputt = line("kaputt.xml");
    assert!(kaputt.starts_with("warning: codelist file "), "{kaputt}");
    assert!(
        kaputt.contains("kaputt.xml cannot be used: line 13: syntax error")
            && kaputt.contains("(it declares urn:de:nrw:modellregion:codeliste:kaputt_2024-03-01)"),
        "{kaputt}"
    );
    let riesig = line("riesig.xml");
    assert!(
        riesig.contains("larger than the limit of 16777216 bytes (1073741824 bytes) (limits.max_codelist_bytes)"),
        "{riesig}"
    );
    // The demo needs neither: every item goes through.
    app.command().args(["migrate"]).assert().success();
}

#[test]
fn every_command_has_help() {
    for command in ["migrate", "status", "log", "show", "check", "test-mappings", "map"] {
        assert_cmd::Command::cargo_bin("portal-bridge")
            .unwrap()
            .args([command, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage"));
    }
}

#[test]
fn config_problems_come_back_together_with_file_and_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(
        dir.path().join("mappings/broken.toml"),
        "name = \"broken\"\nprogram = \"\"\"\n.a |\n  nosuchfn(1)\n\"\"\"\n[input]\nformat = \"json\"\n[output]\ntarget = \"t\"\nformat = \"json\"\n",
    )
    .unwrap();
    let config = r#"[[target]]
id = "t"

[[source]]
id = "one"
region = "x"
kind = "directory"
path = "does-not-exist"
mappings = ["broken"]
schedule = "61 * * * *"
"#;
    std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
    let assert = assert_cmd::Command::cargo_bin("portal-bridge")
        .unwrap()
        .arg("--config")
        .arg(dir.path().join("bridge.toml"))
        .arg("migrate")
        .assert()
        .code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("bridge.toml:8:") && stderr.contains("does-not-exist"), "{stderr}");
    assert!(stderr.contains("bridge.toml:10:") && stderr.contains("schedule"), "{stderr}");
    assert!(stderr.contains("broken.toml:4:") && stderr.contains("nosuchfn"), "{stderr}");
    assert!(!dir.path().join("var").exists(), "nothing runs on a config error");

    std::fs::write(dir.path().join("bridge.toml"), "[[target]]\nid = \"t\"\ncolour = \"blue\"\n").unwrap();
    assert_cmd::Command::cargo_bin("portal-bridge")
        .unwrap()
        .env("PORTAL_BRIDGE_CONFIG", dir.path().join("bridge.toml"))
        .arg("check")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bridge.toml:3:").and(predicate::str::contains("colour")));
}

#[tokio::test]
async fn the_database_url_comes_from_the_environment_when_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(dir.path().join("bridge.toml"), "[paths]\nmappings = \"mappings\"\n").unwrap();
    let db = dir.path().join("elsewhere.db");
    let postgres = match postgres_server() {
        Some(server) => Some(PgDatabase::create(&server).await),
        None => None,
    };
    let url = match &postgres {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}", db.display()),
    };
    assert_cmd::Command::cargo_bin("portal-bridge")
        .unwrap()
        .arg("--config")
        .arg(dir.path().join("bridge.toml"))
        .env("PORTAL_BRIDGE_DATABASE_URL", &url)
        .args(["adopt", "list"])
        .assert()
        .success();
    if postgres.is_some() {
        // The command created the schema in the database the variable names.
        let store = portal_bridge::store::Store::open(&url).await.unwrap();
        assert!(matches!(store, portal_bridge::store::Store::Postgres(_)));
        assert!(store.runs(1).await.unwrap().is_empty());
        store.close().await;
    } else {
        assert!(db.exists());
    }
    assert!(!dir.path().join("var/bridge.db").exists());
    let _ = repo();
}

#[tokio::test]
async fn removing_a_third_of_a_regions_forms_holds_the_withdrawals_until_confirmed() {
    let app = TestApp::demo().await;
    app.command().args(["migrate"]).assert().success();
    let gone = "demo/aachen/forms/S05000102_hundesteuer-anmeldung.xml";
    std::fs::remove_file(app.path(gone)).unwrap();
    let outbox_file = app.path("var/outbox/form-platform/aachen-forms%2FS05000102@1.1.json");
    assert!(outbox_file.exists());

    let out = app.command().args(["migrate", "--json"]).assert().code(3).get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["withdrawn"], 0);
    assert!(outbox_file.exists(), "held by the guard");
    app.command()
        .args(["log", "--level", "error"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--allow-withdrawals"));

    let out = app
        .command()
        .args(["migrate", "--source", "aachen-forms", "--allow-withdrawals", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["withdrawn"], 2, "the form at both targets");
    assert!(!outbox_file.exists());
    app.command()
        .args(["show", "aachen-forms/S05000102@1.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("withdrawn"));
}

#[tokio::test]
async fn status_shows_which_instance_holds_which_lease_and_shared_batch() {
    let app = TestApp::demo().await;
    let store = &app.deps.store;
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(store.take_lease("source:aachen-forms", "host-a:41:beef", hour).await.unwrap(), Ok(()));
    store.add_batches(1, "koeln-services", &[(25, "[]".into()), (25, "[]".into())]).await.unwrap();
    let claimed = store.claim_batch("koeln-services", None, "host-b:42:cafe", hour, None);
    assert!(claimed.await.unwrap().is_some());
    let out = app.command().arg("status").assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    let line =
        |needle: &str| text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in:\n{text}"));
    assert!(line("source:aachen-forms").contains("host-a:41:beef"), "{text}");
    assert!(line("host-b:42:cafe").contains("koeln-services"), "{text}");
    let out = app.command().args(["status", "--json"]).assert().success().get_output().stdout.clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["leases"][0]["holder"], "host-a:41:beef");
    assert_eq!(
        json["shared_batches"][0],
        serde_json::json!({"holder": "host-b:42:cafe", "source_id": "koeln-services", "batches": 1})
    );
}

/// A run of named sources compiles only their mappings' schemas, and still checks every document
/// against them: an output the official XSD refuses is quarantined with the XSD's reason.
#[tokio::test]
async fn a_run_of_named_sources_validates_with_their_schemas() {
    let app = TestApp::demo().await;
    let file = app.path("demo/owl/forms/S05000131_fundsache-melden.xml");
    let text = std::fs::read_to_string(&file).unwrap();
    // The schema's own version (the first) becomes one that XDatenfelder 3.0.0 does not allow.
    std::fs::write(&file, text.replacen("<xdf:version>1.0</xdf:version>", "<xdf:version>1.x</xdf:version>", 1))
        .unwrap();
    let out =
        app.command().args(["migrate", "--source", "owl-forms", "--json"]).assert().code(3).get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(report["quarantined"].as_i64().unwrap() >= 1, "{report}");
    let log =
        app.command().args(["log", "--item", "owl-forms/S05000131@1.x"]).assert().success().get_output().stdout.clone();
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("xdatenfelder.xsd does not accept the document"), "{log}");
    assert!(!log.contains("schema not loaded"), "{log}");
}
