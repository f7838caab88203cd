//! The pipeline end to end on the demo data: first run, no-change run, one change, broken input, dry run, one item.

use portal_bridge::domain::{ItemKey, ItemStatus, RunStatus, Trigger};
use portal_bridge::pipeline::Job;
use portal_bridge::store::Store;
use portal_bridge::store::log::EventFilter;

use crate::support::{TestApp, demo_counts};

const FORM: &str = "demo/aachen/forms/S05000101_bewohnerparkausweis.xml";
const FORM_KEY: &str = "aachen-forms/S05000101@1.0";

#[tokio::test]
async fn first_run_delivers_one_document_per_item_and_target() {
    let app = TestApp::demo().await;
    let (forms, services) = demo_counts();
    assert!(forms >= 15 && services >= 10, "demo data: {forms} forms, {services} services");
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    let expected = (forms * 2 + services) as i64; // forms → form-platform + portal-xml, services → portal-xml
    assert_eq!(report.counts.new, expected);
    let files = app.outbox_files();
    assert_eq!(files.len() as i64, expected, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("form-platform/") && f.ends_with(".json")).count(), forms);
    assert_eq!(files.iter().filter(|f| f.starts_with("portal-xml/") && f.ends_with(".xml")).count(), forms + services);
    assert!(files.contains(&"form-platform/aachen-forms%2FS05000101@1.0.json".to_string()), "{files:?}");

    let rows = app.deps.store.item(FORM_KEY).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.status, "delivered");
        assert!(row.output_hash.is_some() && row.content_hash.is_some() && row.mapping_version.is_some());
        assert!(std::path::Path::new(row.output_path.as_deref().unwrap()).is_file());
    }
}

#[tokio::test]
async fn a_second_run_finds_everything_unchanged_and_writes_nothing() {
    let app = TestApp::demo().await;
    let first = app.migrate().await;
    // Every file's modification time, set into the past: a write would move it.
    let past = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let files = app.outbox_files();
    for file in &files {
        let path = app.path("var/outbox").join(file);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(past).unwrap();
    }
    let second = app.migrate().await;
    assert_eq!(second.status, RunStatus::Ok);
    assert_eq!(second.counts.unchanged, first.counts.new);
    assert_eq!((second.counts.new, second.counts.updated), (0, 0));
    assert_eq!(app.outbox_files(), files);
    for file in &files {
        let modified = std::fs::metadata(app.path("var/outbox").join(file)).unwrap().modified().unwrap();
        assert_eq!(modified, past, "an unchanged run must not write {file}");
    }
    let counts = app.deps.store.status_counts().await.unwrap();
    assert!(counts.iter().all(|c| c.status == "unchanged"), "{counts:?}");
}

#[tokio::test]
async fn changing_one_label_updates_exactly_that_item() {
    let app = TestApp::demo().await;
    app.migrate().await;
    let path = app.path(FORM);
    let text = std::fs::read_to_string(&path).unwrap();
    let label = "<xdf:name>Antrag auf Bewohnerparkausweis Aachen</xdf:name>";
    assert!(text.contains(label), "the demo form's name changed; adjust the test");
    std::fs::write(
        &path,
        text.replacen(label, "<xdf:name>Antrag auf Bewohnerparkausweis der Stadt Aachen</xdf:name>", 1),
    )
    .unwrap();

    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok);
    assert!(report.counts.updated >= 1, "{:?}", report.counts);
    assert_eq!(report.counts.new, 0);
    let updated = app
        .deps
        .store
        .events(&EventFilter { run_id: report.run_id, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.message.starts_with("updated"))
        .map(|e| e.item_key.unwrap())
        .collect::<Vec<_>>();
    assert_eq!(updated.len() as i64, report.counts.updated);
    assert!(updated.iter().all(|k| k == FORM_KEY), "{updated:?}");
    let document =
        std::fs::read_to_string(app.path("var/outbox/form-platform/aachen-forms%2FS05000101@1.0.json")).unwrap();
    assert!(document.contains("der Stadt Aachen"));
}

#[tokio::test]
async fn a_truncated_form_is_quarantined_and_the_others_go_through() {
    let app = TestApp::demo().await;
    let path = app.path(FORM);
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.find("<xdf:struktur>").unwrap() + 20; // in the middle of an element
    std::fs::write(&path, &text[..cut]).unwrap();

    let report = app.migrate().await;
    let (forms, services) = demo_counts();
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.counts.quarantined, 1);
    assert_eq!(report.counts.failed, 1, "the service that links to the form is held back");
    assert_eq!(report.counts.new as usize, (forms - 1) * 2 + services - 1);
    let problem = report.problems.iter().find(|p| p.status == ItemStatus::Quarantined).unwrap();
    assert_eq!(problem.status, ItemStatus::Quarantined);
    assert!(problem.message.contains("S05000101_bewohnerparkausweis.xml"), "{}", problem.message);
    assert!(problem.message.contains("XML") && problem.message.contains("truncated"), "{}", problem.message);
    let rows = app.deps.store.item(&problem.item_key).await.unwrap();
    assert_eq!(rows[0].status, "quarantined");
    assert_eq!(rows[0].last_error.as_deref(), Some(problem.message.as_str()));

    // Repaired, the file's record is delivered under its own key and the placeholder retires.
    std::fs::write(&path, &text).unwrap();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert_eq!(report.counts.new, 3, "the form at both targets, then its service");
    assert_eq!(app.deps.store.item(&problem.item_key).await.unwrap()[0].status, "withdrawn");
}

#[tokio::test]
async fn a_dry_run_maps_and_validates_but_delivers_and_records_nothing() {
    let app = TestApp::demo().await;
    let report = app.run(Job { dry_run: true, ..Job::all(Trigger::Cli) }).await;
    assert_eq!(report.run_id, None);
    assert_eq!(report.status, RunStatus::Ok);
    assert!(report.counts.new > 0);
    assert!(app.outbox_files().is_empty());
    assert!(app.deps.store.status_counts().await.unwrap().is_empty());
    assert!(app.deps.store.runs(10).await.unwrap().is_empty());
    assert!(app.deps.store.events(&EventFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn one_item_can_be_migrated_alone_and_forced() {
    let app = TestApp::demo().await;
    let key = ItemKey::parse(FORM_KEY).unwrap();
    let job = Job { items: vec![key.clone()], ..Job::all(Trigger::Cli) };
    let report = app.run(job.clone()).await;
    assert_eq!(report.counts.new, 2);
    assert_eq!(app.outbox_files().len(), 2);
    let again = app.run(job.clone()).await;
    assert_eq!(again.counts.unchanged, 2);
    // --force re-delivers even when the target holds the same document (e.g. after the portal was reset).
    std::fs::remove_dir_all(app.path("var/outbox")).unwrap();
    let forced = app.run(Job { force: true, ..job }).await;
    assert_eq!((forced.counts.updated, forced.counts.unchanged), (2, 0));
    assert_eq!(app.outbox_files().len(), 2);
    let missing = app
        .run(Job { items: vec![ItemKey::parse("aachen-forms/S09999999@9.9").unwrap()], ..Job::all(Trigger::Cli) })
        .await;
    assert_eq!(missing.status, RunStatus::Partial);
    assert!(missing.errors[0].contains("not found"), "{:?}", missing.errors);
}

#[tokio::test]
async fn the_item_story_is_in_the_log_in_order() {
    let app = TestApp::demo().await;
    app.migrate().await;
    app.migrate().await;
    let events =
        app.deps.store.events(&EventFilter { item_key: Some(FORM_KEY.into()), ..Default::default() }).await.unwrap();
    assert_eq!(events.len(), 2, "two deliveries (one per target); unchanged runs log per source: {events:?}");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert!(events.iter().all(|e| e.stage == "deliver" && e.message.starts_with("new")));
    let summary = app
        .deps
        .store
        .events(&EventFilter { source: None, item_key: None, run_id: Some(2), ..Default::default() })
        .await
        .unwrap();
    assert!(
        summary.iter().any(|e| e.message.contains("aachen-forms") && e.message.contains("unchanged")),
        "{summary:?}"
    );
}

#[tokio::test]
async fn the_migration_log_is_append_only() {
    let app = TestApp::demo().await;
    app.migrate().await;
    let (update, delete) = match &app.deps.store {
        Store::Sqlite(pool) => (
            sqlx::query("UPDATE events SET message = 'x'").execute(pool).await.map(|_| ()),
            sqlx::query("DELETE FROM events").execute(pool).await.map(|_| ()),
        ),
        Store::Postgres(pool) => (
            sqlx::query("UPDATE events SET message = 'x'").execute(pool).await.map(|_| ()),
            sqlx::query("DELETE FROM events").execute(pool).await.map(|_| ()),
        ),
    };
    assert!(update.unwrap_err().to_string().contains("append-only"));
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert!(!app.deps.store.events(&EventFilter::default()).await.unwrap().is_empty(), "the log is still there");
}

#[tokio::test]
async fn hostile_ids_stay_inside_the_outbox_and_bad_ones_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    // As long as limits.max_id_chars allows (600 bytes, far over a file name's 255), and one over.
    let long = "€".repeat(200);
    let too_long = "x".repeat(201);
    let records = serde_json::json!([
        {"id": "../../etc/passwd"}, {"id": "a/b"}, {"id": long}, {"id": "..\\windows"},
        {"id": "nul\u{0}byte"}, {"id": ""}, {"id": "dup"}, {"id": "dup"}, {"id": "fine"}, {"id": too_long}
    ]);
    std::fs::write(dir.path().join("feed/records.json"), records.to_string()).unwrap();
    let app = echo_feed(dir, "{id: .id, key: $item.key}", "split = \"array\"").await;
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Partial);
    assert_eq!(report.counts.new, 5, "{:?}", report.problems);
    assert_eq!(report.counts.quarantined, 5, "NUL, empty, too long and the two duplicates: {:?}", report.problems);
    let outbox = app.path("var/outbox/form-platform");
    for entry in std::fs::read_dir(&outbox).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(path.parent().unwrap(), outbox);
        assert!(path.file_name().unwrap().len() < 255);
    }
    assert!(!app.path("etc").exists() && !app.path("var/etc").exists());
    assert!(report.problems.iter().any(|p| p.message.contains("occurs in 2 records")), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.message.contains("control characters")), "{:?}", report.problems);
    assert!(
        report.problems.iter().any(|p| p.message.starts_with("feed/records.json#9: the id ")
            && p.message.ends_with("has 201 characters, more than the limit of 200 (limits.max_id_chars)")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn every_shipped_mapping_passes_its_fixtures() {
    let app = TestApp::demo().await;
    let config = &app.deps.config;
    let results = portal_bridge::mapping::fixtures::run_all(
        &crate::support::repo().join("mappings/tests"),
        &config.mappings,
        &config.codelists_val,
    );
    for mapping in &config.mappings {
        assert!(
            results.iter().any(|r| r.mapping == mapping.name),
            "mapping {} has no fixtures in mappings/tests/{0}/",
            mapping.name
        );
    }
    let failures: Vec<String> =
        results.iter().filter_map(|r| r.failure.as_ref().map(|f| format!("{} / {}: {f}", r.mapping, r.case))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// An app with one directory source `feed` (keyed by `.id`, plus `source_extra` lines) whose
/// records the jq `program` maps to the outbox target `form-platform`.
async fn echo_feed(dir: tempfile::TempDir, program: &str, source_extra: &str) -> TestApp {
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    let mapping = format!(
        "name = \"echo\"\nprogram = {program:?}\n[input]\nformat = \"json\"\n[output]\ntarget = \"form-platform\"\nformat = \"json\"\n"
    );
    std::fs::write(dir.path().join("mappings/echo.toml"), mapping).unwrap();
    let config = format!(
        "[[target]]\nid = \"form-platform\"\n[[source]]\nid = \"feed\"\nregion = \"test\"\nkind = \"directory\"\npath = \"feed\"\nkey = \".id\"\nmappings = [\"echo\"]\n{source_extra}\n"
    );
    TestApp::with_config(dir, &config).await
}

/// The summary line of the last run for `source`, from the migration log.
async fn summary(app: &TestApp, run_id: i64, source: &str) -> String {
    let filter = EventFilter { run_id: Some(run_id), limit: 1000, ..Default::default() };
    let events = app.deps.store.events(&filter).await.unwrap();
    let prefix = format!("source {source}: ");
    events.into_iter().find(|e| e.message.starts_with(&prefix)).map(|e| e.message).expect("a summary line")
}

#[tokio::test]
async fn unchanged_files_are_not_decoded_again_until_their_bytes_or_the_source_settings_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("feed")).unwrap();
    for (id, name) in [("a", "x"), ("b", "y"), ("c", "z")] {
        std::fs::write(dir.path().join(format!("feed/{id}.json")), format!(r#"{{"id": "{id}", "name": "{name}"}}"#))
            .unwrap();
    }
    let app = echo_feed(dir, "{id: .id, name: .name}", "").await;
    let run = |args: &'static [&'static str]| {
        let out = app.command().args(["migrate", "--json"]).args(args).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["run_id"].as_i64().unwrap()
    };
    let first = run(&[]);
    assert!(summary(&app, first, "feed").await.ends_with(
        "3 new, 0 updated, 0 unchanged, 0 failed, 0 quarantined; 0 of 3 entries unchanged since the last scan"
    ));
    let second = run(&[]);
    assert!(summary(&app, second, "feed").await.ends_with(
        "0 new, 0 updated, 3 unchanged, 0 failed, 0 quarantined; 3 of 3 entries unchanged since the last scan"
    ));
    // New bytes: that file is read again (and its item updated); the others come from the cache.
    std::fs::write(app.path("feed/b.json"), r#"{"id": "b", "name": "changed"}"#).unwrap();
    let third = run(&[]);
    assert!(summary(&app, third, "feed").await.ends_with(
        "0 new, 1 updated, 2 unchanged, 0 failed, 0 quarantined; 2 of 3 entries unchanged since the last scan"
    ));
    // New settings: a different key expression must see every file again, so the keys follow it.
    let text =
        std::fs::read_to_string(&app.config_path).unwrap().replace("key = \".id\"", "key = \"\\\"k-\\\" + .id\"");
    std::fs::write(&app.config_path, text).unwrap();
    let fourth = run(&["--allow-withdrawals"]);
    assert!(summary(&app, fourth, "feed").await.contains(
        "3 new, 0 updated, 0 unchanged, 0 failed, 0 quarantined; 0 of 3 entries unchanged since the last scan"
    ));
    let keys: Vec<String> = app
        .deps
        .store
        .items(None, Some("feed"), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status == "delivered")
        .map(|r| r.item_key)
        .collect();
    assert_eq!(keys, ["feed/k-a", "feed/k-b", "feed/k-c"]);
}

#[tokio::test]
async fn an_interrupted_outbox_write_is_reconciled_without_writing_twice() {
    let app = TestApp::demo().await;
    app.migrate().await;
    let store = &app.deps.store;
    let row = store.item(FORM_KEY).await.unwrap().into_iter().find(|r| r.target == "form-platform").unwrap();
    let file = app.path("var/outbox/form-platform/aachen-forms%2FS05000101@1.0.json");
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    let intent = |output_hash: &str| portal_bridge::store::intents::Intent {
        item_key: FORM_KEY.into(),
        target: "form-platform".into(),
        source_id: "aachen-forms".into(),
        origin: row.origin.clone(),
        action: "put".into(),
        output_hash: output_hash.into(),
        idempotency_key: "k".into(),
        body: Vec::new(), // what the pipeline records for an outbox
        format: "json".into(),
        known_version: None,
        content_hash: row.content_hash.clone(),
        mapping: row.mapping.clone(),
        mapping_version: row.mapping_version.clone(),
        adoptions: None,
        run_id: None,
        created_at: "2024-01-01T00:00:00Z".into(),
        delivery: None,
    };

    // Interrupted after the file reached the outbox: recorded as delivered, not written again.
    store.record_intent(&intent(row.output_hash.as_deref().unwrap())).await.unwrap();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert!(store.intents().await.unwrap().is_empty());
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), written, "the file was not written again");

    // Interrupted before the write: the intent is dropped and the run maps and delivers the item.
    store.record_intent(&intent(&"0".repeat(64))).await.unwrap();
    let text = std::fs::read_to_string(app.path(FORM)).unwrap();
    let label = "<xdf:name>Antrag auf Bewohnerparkausweis Aachen</xdf:name>";
    std::fs::write(app.path(FORM), text.replacen(label, "<xdf:name>Bewohnerparkausweis, neu</xdf:name>", 1)).unwrap();
    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert!(store.intents().await.unwrap().is_empty());
    assert!(std::fs::read_to_string(&file).unwrap().contains("Bewohnerparkausweis, neu"));
    let events = store.events(&EventFilter { run_id: report.run_id, ..Default::default() }).await.unwrap();
    assert!(events.iter().any(|e| e.message.starts_with("an interrupted run did not write this document")));
}
