//! Nachnutzung: adoptions drive Zuständigkeit entries, re-deliver exactly the affected service,
//! and a service whose form did not go through is held back.

use portal_bridge::domain::RunStatus;
use portal_bridge::store::log::EventFilter;
use predicates::prelude::*;

use crate::support::{TestApp, xmllint, xmllint_validate};

/// Aachen's Bewohnerparkausweis service; its form is S05000101@1.0.
const SERVICE: &str = "99108001001000";
const SERVICE_KEY: &str = "aachen-services/99108001001000";
const SERVICE_FILE: &str = "var/outbox/portal-xml/aachen-services%2F99108001001000.xml";
const RS: &str = "urn:de:bund:destatis:bevoelkerungsstatistik:schluessel:rs:";

fn gebiet_ids(xml: &str) -> Vec<String> {
    xml.match_indices(RS).map(|(at, _)| xml[at + RS.len()..at + RS.len() + 12].to_owned()).collect()
}

#[tokio::test]
async fn adoptions_become_zustaendigkeiten_and_removing_one_updates_exactly_that_service() {
    let app = TestApp::demo().await;
    // A first run records which services (LeiKa keys) the sources have.
    assert_eq!(app.migrate().await.status, RunStatus::Ok);
    app.command()
        .args(["adopt", "add", "--ars", "053150000000", "--service", SERVICE, "--name", "Stadt Köln"])
        .assert()
        .success();
    app.command().args(["adopt", "add", "--ars", "051110000000", "--service", SERVICE]).assert().success();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    let xml = std::fs::read_to_string(app.path(SERVICE_FILE)).unwrap();
    assert_eq!(gebiet_ids(&xml), vec!["051110000000", "053150000000"]);

    // A service nobody adopted is still delivered, without any Zuständigkeit.
    let other = std::fs::read_to_string(app.path("var/outbox/portal-xml/soest-services%2F99110009104000.xml")).unwrap();
    assert!(other.contains("leistung") && other.contains("onlinedienst") && gebiet_ids(&other).is_empty());

    app.command().args(["adopt", "remove", "--ars", "053150000000", "--service", SERVICE]).assert().success();
    let report = app.migrate().await;
    assert_eq!((report.counts.updated, report.counts.new), (1, 0), "exactly the adopted service");
    let xml = std::fs::read_to_string(app.path(SERVICE_FILE)).unwrap();
    assert_eq!(gebiet_ids(&xml), vec!["051110000000"]);
    let events = app
        .deps
        .store
        .events(&EventFilter { item_key: Some(SERVICE_KEY.into()), run_id: report.run_id, ..Default::default() })
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.message == "adoption removed: 053150000000"), "{events:?}");
    assert!(events.iter().any(|e| e.message.starts_with("updated")));
}

#[tokio::test]
async fn every_service_document_validates_against_the_profile_xsd() {
    let app = TestApp::demo().await;
    assert_eq!(app.migrate().await.status, RunStatus::Ok);
    app.command().args(["adopt", "add", "--ars", "059740000000", "--service", SERVICE]).assert().success();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok);
    let Some(xmllint) = xmllint() else { return };
    let xsd = crate::support::repo().join("schemas/xzufi-import-profile.xsd");
    let services: Vec<_> = app.outbox_files().into_iter().filter(|f| f.contains("-services%2F")).collect();
    assert_eq!(services.len(), 10, "two services in each of five regions");
    for file in services {
        xmllint_validate(xmllint, &xsd, &app.path("var/outbox").join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[tokio::test]
async fn adoption_keys_are_checked_and_a_bad_import_changes_nothing() {
    let app = TestApp::demo().await;
    assert_eq!(app.migrate().await.status, RunStatus::Ok);
    app.command()
        .args(["adopt", "add", "--ars", "05315", "--service", SERVICE])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("12 digits"));
    app.command()
        .args(["adopt", "add", "--ars", "053150000000", "--service", "123"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("14 digits"));
    app.command()
        .args(["adopt", "add", "--ars", "091620000000", "--service", SERVICE])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("outside NRW"));
    app.command().args(["adopt", "add", "--ars", "091620000000", "--service", SERVICE, "--force"]).assert().success();

    std::fs::write(
        app.path("bad.csv"),
        "ars,service,name\n053150000000,99108001001000,Köln\n0531,99108001001000,kaputt\n",
    )
    .unwrap();
    app.command()
        .arg("adopt")
        .arg("import")
        .arg(app.path("bad.csv"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.csv:3"));
    let out = app.command().args(["adopt", "list", "--json"]).assert().success().get_output().stdout.clone();
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(listed.len(), 1, "only the forced one: {listed:?}");

    std::fs::write(
        app.path("good.csv"),
        "ars,service,name\n053150000000,99108001001000,Stadt Köln\n051110000000,99108001001000,\n",
    )
    .unwrap();
    app.command()
        .arg("adopt")
        .arg("import")
        .arg(app.path("good.csv"))
        .assert()
        .success()
        .stdout(predicate::str::contains("2 new"));
    let out = app
        .command()
        .args(["adopt", "list", "--json", "--service", SERVICE])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().any(|a| a["name"] == "Stadt Köln"));
}

#[tokio::test]
async fn a_service_whose_form_is_quarantined_is_held_back() {
    let app = TestApp::demo().await;
    let form = app.path("demo/aachen/forms/S05000101_bewohnerparkausweis.xml");
    let text = std::fs::read_to_string(&form).unwrap();
    // Well-formed and keyed, but it refers to a codelist nobody has: the form is quarantined.
    let anrede = "urn:de:nrw:modellregion:codeliste:anrede";
    assert!(text.contains(anrede));
    std::fs::write(&form, text.replace(anrede, "urn:de:nrw:modellregion:codeliste:gibt-es-nicht")).unwrap();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Partial);
    let held: Vec<_> = report.problems.iter().filter(|p| p.item_key == SERVICE_KEY).collect();
    assert_eq!(held.len(), 1, "{:?}", report.problems);
    assert_eq!(held[0].status.as_str(), "failed");
    assert!(held[0].message.contains("aachen-forms/S05000101@1.0 is quarantined"), "{}", held[0].message);
    assert!(held[0].message.contains("gibt-es-nicht"), "the form's own reason is shown: {}", held[0].message);
    assert!(!app.path(SERVICE_FILE).exists(), "not delivered");

    std::fs::write(&form, &text).unwrap();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert!(app.path(SERVICE_FILE).exists());
}

/// Issue 17: a LeiKa key no source delivers is refused (exit 2, nothing stored or logged) with the
/// closest known key, unless forced; before any run has seen a service, the hint says to run one.
#[tokio::test]
async fn a_leika_key_no_source_has_is_refused_with_the_closest_known_one() {
    let app = TestApp::demo().await;
    let typo = "99108001001100";
    app.command()
        .args(["adopt", "add", "--ars", "053150000000", "--service", SERVICE])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run has recorded").and(predicate::str::contains("--force")));
    assert!(app.deps.store.adoptions().await.unwrap().is_empty(), "nothing stored before a run");

    // The first run records every service's LeiKa key (nobody adopted anything yet).
    assert_eq!(app.migrate().await.status, RunStatus::Ok);
    let events_before = app.deps.store.events(&EventFilter::default()).await.unwrap().len();
    app.command().args(["adopt", "add", "--ars", "053150000000", "--service", typo]).assert().code(2).stderr(
        predicate::str::contains(format!("LeiKa key `{typo}`"))
            .and(predicate::str::contains(format!("did you mean `{SERVICE}`")))
            .and(predicate::str::contains("--force")),
    );
    assert!(app.deps.store.adoptions().await.unwrap().is_empty(), "nothing stored");
    assert_eq!(app.deps.store.events(&EventFilter::default()).await.unwrap().len(), events_before, "nothing logged");

    app.command().args(["adopt", "add", "--ars", "053150000000", "--service", SERVICE]).assert().success();
    app.command().args(["adopt", "add", "--ars", "053150000000", "--service", typo, "--force"]).assert().success();
    let services: Vec<String> = app.deps.store.adoptions().await.unwrap().into_iter().map(|a| a.service).collect();
    assert_eq!(services, vec![SERVICE.to_owned(), typo.to_owned()]);

    // An import with an unknown key imports nothing and names the line.
    std::fs::write(app.path("typo.csv"), format!("ars,service\n051110000000,{SERVICE}\n051110000000,{typo}\n"))
        .unwrap();
    app.command().arg("adopt").arg("import").arg(app.path("typo.csv")).assert().code(2).stderr(
        predicate::str::contains("typo.csv:3").and(predicate::str::contains(format!("did you mean `{SERVICE}`"))),
    );
    assert_eq!(app.deps.store.adoptions().await.unwrap().len(), 2, "nothing imported");
    app.command().arg("adopt").arg("import").arg(app.path("typo.csv")).arg("--force").assert().success();
    assert_eq!(app.deps.store.adoptions().await.unwrap().len(), 4);
}

/// The same over the admin API: 400 with the suggestion, nothing stored; `"force": true` adopts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_leika_key_no_source_has_unless_forced() {
    use crate::operators::{OPERATOR, post, tokens_file};
    use reqwest::StatusCode;
    let app = TestApp::demo().await;
    assert_eq!(app.migrate().await.status, RunStatus::Ok);
    let mut config = std::fs::read_to_string(&app.config_path).unwrap();
    config.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"tokens.toml\"\n");
    std::fs::write(&app.config_path, config).unwrap();
    std::fs::write(app.path("tokens.toml"), tokens_file(&[])).unwrap();
    let daemon = app.start_daemon().await;
    let typo = "99108001001100";

    let body = serde_json::json!({"ars": "053150000000", "service": typo});
    let (status, answer) = post(&daemon, "/api/adoptions", OPERATOR, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains(&format!("did you mean `{SERVICE}`")), "{answer}");
    assert!(app.deps.store.adoptions().await.unwrap().is_empty(), "nothing stored");

    let body = serde_json::json!({"ars": "053150000000", "service": SERVICE});
    let (status, answer) = post(&daemon, "/api/adoptions", OPERATOR, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let body = serde_json::json!({"ars": "053150000000", "service": typo, "force": true});
    let (status, answer) = post(&daemon, "/api/adoptions", OPERATOR, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(app.deps.store.adoptions().await.unwrap().len(), 2);
    daemon.shutdown.cancel();
    daemon.task.await.unwrap().unwrap();
}

/// Rows recorded before the ledger kept LeiKa keys (migration 0016) learn theirs at their source's
/// next run, even when nothing changed; a withdrawn service's key no longer counts.
#[tokio::test]
async fn unchanged_services_from_before_learn_their_leika_key_and_withdrawn_ones_lose_it() {
    let app = TestApp::demo().await;
    assert_eq!(app.migrate().await.status, RunStatus::Ok);
    crate::runs::execute(&app.deps.store, "UPDATE items SET leika_key = NULL", &[]).await;
    app.command()
        .args(["adopt", "add", "--ars", "053150000000", "--service", SERVICE])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no run has recorded"));

    let report = app.migrate().await;
    assert_eq!((report.status, report.counts.new, report.counts.updated), (RunStatus::Ok, 0, 0), "nothing changed");
    app.command().args(["adopt", "add", "--ars", "053150000000", "--service", SERVICE]).assert().success();

    // Soest's second service leaves its feed: withdrawn, and no longer adoptable.
    let feed = app.path("demo/soest/services.json");
    let mut records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&feed).unwrap()).unwrap();
    let gone = records.pop().unwrap()["leistung"]["schluessel"].as_str().unwrap().to_owned();
    std::fs::write(&feed, serde_json::to_vec(&records).unwrap()).unwrap();
    // Half of the feed gone: the withdrawal waits for a confirmation.
    app.command().args(["migrate", "--allow-withdrawals", "--reason", "retired upstream"]).assert().success();
    assert_eq!(app.deps.store.item(&format!("soest-services/{gone}")).await.unwrap()[0].status, "withdrawn");
    app.command()
        .args(["adopt", "add", "--ars", "059740000000", "--service", &gone])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is delivered by no configured source"));
}
