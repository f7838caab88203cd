//! Issue 15, delivery: nothing is withdrawn without evidence, job flags travel with shared work, a
//! forced or withdrawing delivery asks the portal first, a lost answer is reconciled instead of
//! becoming a conflict, a changed source or target re-maps, and an outbox that lost a file gets it again.

use std::sync::Arc;
use std::time::Duration;

use portal_bridge::config::Config;
use portal_bridge::domain::{RunStatus, Trigger};
use portal_bridge::pipeline::{self, Deps, Job, Share};
use portal_sim::{self, FaultPatch, SimConfig};

use crate::delivery::{bridge, sim, write_records};
use crate::support::{TestApp, copy_dir, repo};

/// The demo configuration with `extra` added to the `aachen-forms` source, and a job for the two
/// Aachen sources.
async fn aachen(extra: &str) -> (TestApp, Job) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("demo"), &dir.path().join("demo"));
    let text = std::fs::read_to_string(repo().join("config/bridge.toml"))
        .unwrap()
        .replace("mappings = \"mappings\"", &format!("mappings = {:?}", repo().join("mappings").display().to_string()))
        .replace("root = \"..\"", "root = \".\"")
        .replace("id = \"aachen-forms\"\n", &format!("id = \"aachen-forms\"\n{extra}\n"));
    let app = TestApp::with_config(dir, &text).await;
    let job = Job { sources: vec!["aachen-forms".into(), "aachen-services".into()], ..Job::all(Trigger::Cli) };
    (app, job)
}

/// The app's configuration file, read again (after a test changed it), with the app's store.
fn reloaded(app: &TestApp) -> Deps {
    let config = Config::resolve(&app.config_path, &app.overrides()).unwrap_or_else(|e| panic!("{e}"));
    Deps { config: Arc::new(config), ..app.deps.clone() }
}

async fn status_of(app: &TestApp, key: &str) -> Vec<(String, String, Option<String>)> {
    let rows = app.deps.store.item(key).await.unwrap();
    rows.into_iter().map(|r| (r.target, r.status, r.last_error)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_among_valid_ones_withdraws_nothing() {
    // The guard would hold a third of the source vanishing; this source allows it, so only the
    // evidence rule stands between a half-written file and a withdrawal.
    let (app, job) = aachen("max_withdrawal_share = 0.9").await;
    let first = app.run(job.clone()).await;
    assert_eq!(first.status, RunStatus::Ok, "{:?}", first.problems);
    let delivered = app.outbox_files();
    let file = app.path("demo/aachen/forms/S05000102_hundesteuer-anmeldung.xml");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let report = app.run(job.clone()).await;
    assert_eq!(report.counts.withdrawn, 0, "{report:?}");
    assert_eq!(app.outbox_files(), delivered, "every delivered document stays in the outbox");
    let rows = status_of(&app, "aachen-forms/S05000102@1.1").await;
    assert_eq!(rows.len(), 2, "the form at both targets: {rows:?}");
    for (target, status, _) in rows {
        assert!(matches!(status.as_str(), "delivered" | "unchanged"), "{target}: still delivered, not {status}");
    }
    assert!(
        report.warnings.iter().any(|w| w.contains("could not be read") && w.contains("nothing is withdrawn")),
        "the run says why nothing was withdrawn: {:?}",
        report.warnings
    );
    assert!(report.problems.iter().any(|p| p.message.contains("S05000102")), "the broken file is a problem");

    // The file is complete again: its item is unchanged, the placeholder retired.
    std::fs::write(&file, &bytes).unwrap();
    let healed = app.run(job).await;
    assert_eq!((healed.status, healed.counts.withdrawn), (RunStatus::Ok, 0), "{healed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_service_whose_form_was_withdrawn_is_held_back() {
    let (app, job) = aachen("max_withdrawal_share = 0.9").await;
    app.run(job.clone()).await;
    std::fs::remove_file(app.path("demo/aachen/forms/S05000101_bewohnerparkausweis.xml")).unwrap();
    let report = app.run(job).await;
    assert_eq!(report.counts.withdrawn, 2, "the form at both of its targets: {report:?}");
    let service = status_of(&app, "aachen-services/99108001001000").await;
    assert_eq!(service.len(), 1);
    let (_, status, error) = &service[0];
    assert_eq!(status, "failed", "the service links the withdrawn form: {service:?}");
    let error = error.as_deref().unwrap_or_default();
    assert!(error.contains("held back") && error.contains("S05000101@1.0") && error.contains("withdrawn"), "{error}");
    let other = status_of(&app, "aachen-services/99108012005001").await;
    assert!(other.iter().all(|(_, s, _)| s == "unchanged"), "the other service is untouched: {other:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_run_after_the_portal_lost_its_copies_creates_them_again() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 4, "").await;
    assert_eq!(app.migrate().await.counts.new, 4);
    let client = reqwest::Client::new();
    for i in 0..4 {
        let key = portal_sim::encode_segment(&format!("feed/item-{i:04}"));
        let url = format!("{}/_sim/edit/targets/portal/items/{key}", sim.url);
        assert!(client.delete(&url).send().await.unwrap().status().is_success());
    }
    let report = app.run(Job { force: true, ..Job::all(Trigger::Cli) }).await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert_eq!((report.counts.updated, report.counts.conflict), (4, 0));
    let stats = sim.state.stats().await;
    for row in app.deps.store.items(None, Some("feed"), 100).await.unwrap() {
        assert_eq!(row.status, "delivered");
        let hash = row.output_hash.as_deref().unwrap();
        assert_eq!(stats.effect_count("portal", &row.item_key, hash), 2, "{}: created again", row.item_key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_an_item_that_never_reached_the_portal_sends_nothing() {
    let sim = sim(SimConfig { reject_keys: vec!["feed/item-0003".into()], ..Default::default() }).await;
    let app = bridge(&sim, 12, "").await;
    let first = app.migrate().await;
    assert_eq!(first.counts.quarantined, 1);
    let records: Vec<_> = (0..12)
        .filter(|i| *i != 3)
        .map(|i| serde_json::json!({"id": format!("item-{i:04}"), "name": format!("Leistung {i} (v1)")}))
        .collect();
    std::fs::write(app.path("feed/records.json"), serde_json::to_string(&records).unwrap()).unwrap();
    let requests = sim.state.stats().await.requests;

    let gone = app.migrate().await;
    assert_eq!((gone.status, gone.counts.withdrawn), (RunStatus::Ok, 1), "{gone:?}");
    assert_eq!(sim.state.stats().await.requests, requests, "nothing to take back at the portal");
    assert_eq!(status_of(&app, "feed/item-0003").await[0].1, "withdrawn");
    let again = app.migrate().await;
    assert_eq!((again.status, again.counts.quarantined), (RunStatus::Ok, 0), "not quarantined every run: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_sources_params_re_maps_its_items() {
    let (app, job) = aachen("").await;
    app.run(job.clone()).await;
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("https://formulare.kommunalportal.nrw/aachen/{form}", "https://formulare.example.nrw/aachen/{form}");
    std::fs::write(&app.config_path, text).unwrap();
    let report = pipeline::run(job, &reloaded(&app)).await.unwrap();
    assert_eq!(report.counts.updated, 2, "both services carry the new link: {report:?}");
    let documents: Vec<String> = app
        .outbox_files()
        .into_iter()
        .filter(|f| f.contains("aachen-services"))
        .map(|f| std::fs::read_to_string(app.path("var/outbox").join(f)).unwrap())
        .collect();
    assert_eq!(documents.len(), 2);
    for document in documents {
        assert!(document.contains("formulare.example.nrw") && !document.contains("formulare.kommunalportal.nrw"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_reconciled_next_run_not_a_conflict() {
    // Every PUT is stored and its answer lost; without retries the outcome stays unknown.
    let sim = sim(SimConfig { reset_rate: 1.0, ..Default::default() }).await;
    let app = bridge(&sim, 2, "").await;
    let text = std::fs::read_to_string(&app.config_path).unwrap().replace("max_retries = 8", "max_retries = 0");
    std::fs::write(&app.config_path, text).unwrap();
    let app = TestApp { deps: reloaded(&app), ..app };
    let lost = app.migrate().await;
    assert_eq!(lost.counts.failed, 2, "{lost:?}");
    sim.state.patch_faults(FaultPatch { reset_rate: Some(0.0), ..Default::default() }).await.unwrap();
    write_records(app.dir.path(), 2, "v2");

    let report = app.migrate().await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert_eq!((report.counts.updated, report.counts.conflict), (2, 0), "{report:?}");
    let stats = sim.state.stats().await;
    for row in app.deps.store.items(None, Some("feed"), 100).await.unwrap() {
        assert_eq!(row.status, "delivered");
        assert_eq!(stats.effect_count("portal", &row.item_key, row.output_hash.as_deref().unwrap()), 1);
    }
    assert!(app.deps.store.intents().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_delivery_left_unfinished_is_never_sent_to_a_target_that_became_http() {
    let sim = sim(SimConfig::default()).await;
    let app = bridge(&sim, 3, "").await;
    // The same bridge, first with an outbox target.
    let http = std::fs::read_to_string(&app.config_path).unwrap();
    let start = http.find("delivery = \"http\"").unwrap();
    let end = http.find("[[source]]").unwrap();
    let outbox = format!("{}delivery = \"outbox\"\n\n{}", &http[..start], &http[end..]);
    std::fs::write(&app.config_path, &outbox).unwrap();
    let deps = reloaded(&app);
    let first = pipeline::run(Job::all(Trigger::Cli), &deps).await.unwrap();
    assert_eq!(first.counts.new, 3, "{first:?}");
    // A run of the outbox was killed between recording a changed document's intent and writing it.
    write_records(app.dir.path(), 3, "v2");
    let intent = portal_bridge::store::intents::Intent {
        item_key: "feed/item-0001".into(),
        target: "portal".into(),
        source_id: "feed".into(),
        origin: "feed/records.json#1".into(),
        action: "put".into(),
        output_hash: "0".repeat(64),
        idempotency_key: "k".into(),
        body: Vec::new(),
        format: "json".into(),
        known_version: None,
        content_hash: None,
        mapping: Some("echo".into()),
        mapping_version: None,
        adoptions: None,
        run_id: first.run_id,
        created_at: "2026-01-01T00:00:00Z".into(),
        delivery: None,
    };
    app.deps.store.record_intent(&intent).await.unwrap();

    // The target now delivers to the portal.
    std::fs::write(&app.config_path, &http).unwrap();
    let report = pipeline::run(Job::all(Trigger::Cli), &reloaded(&app)).await.unwrap();
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    let stats = sim.state.stats().await;
    let empty = portal_bridge::domain::ContentHash::of(b"").to_string();
    assert!(stats.effects.iter().all(|e| e.sha256 != empty), "no empty document reached the portal");
    for row in app.deps.store.items(None, Some("feed"), 100).await.unwrap() {
        assert_eq!(row.status, "delivered", "{row:?}");
        let hash = row.output_hash.as_deref().unwrap();
        assert_eq!(stats.effect_count("portal", &row.item_key, hash), 1, "{}: on the portal now", row.item_key);
    }
    assert!(app.deps.store.intents().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_file_that_is_gone_is_delivered_again_and_stale_temporaries_are_removed() {
    let (app, job) = aachen("").await;
    app.run(job.clone()).await;
    let files = app.outbox_files();
    let lost = files.iter().find(|f| f.contains("S05000102")).unwrap().clone();
    let outbox = app.path("var/outbox");
    std::fs::remove_file(outbox.join(&lost)).unwrap();
    let dir = outbox.join(&lost).parent().unwrap().to_owned();
    let stale = dir.join(".aachen-forms%2FS05000103@2.0.json.4242.tmp");
    std::fs::write(&stale, b"{\"half").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(hour_ago).unwrap();

    let report = app.run(job).await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert_eq!(report.counts.updated, 1, "{report:?}");
    assert_eq!(app.outbox_files(), files, "the lost file is back, the temporary file gone");
    let filter = portal_bridge::store::log::EventFilter {
        item_key: Some("aachen-forms/S05000102@1.1".into()),
        level: Some(portal_bridge::domain::Level::Warn),
        limit: 10_000,
        ..Default::default()
    };
    let events = app.deps.store.events(&filter).await.unwrap();
    assert!(events.iter().any(|e| e.message.contains("is gone from the outbox")), "the log says why: {events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_and_allow_withdrawals_hold_for_every_batch_of_a_shared_run() {
    let sim = sim(SimConfig { latency_ms: 40, ..Default::default() }).await;
    let app = bridge(&sim, 12, "").await;
    assert_eq!(app.migrate().await.counts.new, 12);
    let share = |name: &str| Share { instance: name.into(), claim: Duration::from_secs(30), batch_pairs: 2 };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let helper = {
        let (deps, done, share) = (app.deps.clone(), done.clone(), share("helper"));
        tokio::spawn(async move {
            let mut helped = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                match pipeline::help(&deps, &share, &Job::all(Trigger::Schedule)).await.unwrap() {
                    true => helped += 1,
                    false => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            helped
        })
    };
    let job = Job { force: true, share: Some(share("coordinator")), ..Job::all(Trigger::Api) };
    let report = app.run(job).await;
    assert_eq!(report.status, RunStatus::Ok, "{:?}", report.problems);
    assert_eq!(report.counts.updated, 12, "every document re-delivered, whoever worked on it: {:?}", report.counts);
    let stats = sim.state.stats().await;
    for row in app.deps.store.items(None, Some("feed"), 100).await.unwrap() {
        assert_eq!(stats.effect_count("portal", &row.item_key, row.output_hash.as_deref().unwrap()), 2);
    }

    // Half of the source vanishes (more than the guard lets through) while the rest is forced
    // again: with allow_withdrawals the shared run withdraws them, and every remaining document
    // goes out a third time, whoever works on its batch.
    crate::delivery::write_records(app.dir.path(), 6, "v1");
    let job = Job { force: true, allow_withdrawals: true, share: Some(share("coordinator")), ..Job::all(Trigger::Api) };
    let report = app.run(job).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let helped = helper.await.unwrap();
    assert!(helped > 0, "the helper worked on batches of the runs");
    assert_eq!(report.status, RunStatus::Ok, "{:?} {:?}", report.problems, report.errors);
    assert_eq!((report.counts.updated, report.counts.withdrawn), (6, 6), "{:?}", report.counts);
    let stats = sim.state.stats().await;
    for row in app.deps.store.items(None, Some("feed"), 100).await.unwrap() {
        if row.status == "withdrawn" {
            continue;
        }
        assert_eq!(stats.effect_count("portal", &row.item_key, row.output_hash.as_deref().unwrap()), 3);
    }
}
