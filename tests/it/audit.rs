//! The audit chain (issue 18): every append path links its events into one hash chain, and
//! `audit verify` names the first entry that was changed, removed, inserted or reordered directly in
//! the database (SQLite, or PostgreSQL with `PORTAL_BRIDGE_TEST_DATABASE_URL`).

use portal_bridge::domain::{Level, Stage};
use portal_bridge::store::Store;
use portal_bridge::store::ledger::Batch;
use portal_bridge::store::log::NewEvent;
use portal_bridge::store::operator::OperatorEvent;

use crate::support::TestApp;

async fn empty_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    TestApp::with_config(dir, "[paths]\nmappings = \"mappings\"\n").await
}

fn event(n: usize) -> NewEvent {
    NewEvent {
        at: format!("2026-12-07T10:00:{:02}.000Z", n % 60),
        run_id: Some(1),
        item_key: Some(format!("feed/{n}")),
        target: Some("t".into()),
        stage: Stage::Deliver,
        level: Level::Info,
        message: format!("event {n}"),
    }
}

fn operator_event(n: usize) -> OperatorEvent {
    OperatorEvent {
        at: "2026-12-07T11:00:00.000Z".into(),
        run_id: None,
        item_key: Some(format!("feed/{n}")),
        target: None,
        actor: "anna".into(),
        reason: Some(format!("why {n}")),
        message: format!("operator {n}"),
    }
}

/// Runs statements on the app's database as someone with direct access would (the log's
/// append-only triggers dropped first).
async fn tamper(store: &Store, statements: &[&str]) {
    let unguard: &[&str] = match store {
        Store::Sqlite(_) => &["DROP TRIGGER IF EXISTS events_no_update", "DROP TRIGGER IF EXISTS events_no_delete"],
        Store::Postgres(_) => &["DROP TRIGGER IF EXISTS events_no_change ON events"],
    };
    for sql in unguard.iter().chain(statements) {
        match store {
            Store::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Store::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The event ids by seq (index 0 = seq 1).
async fn ids_by_seq(store: &Store) -> Vec<i64> {
    let sql = "SELECT id FROM events WHERE seq IS NOT NULL ORDER BY seq";
    match store {
        Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
    }
}

/// The whole chain verifies: what daemons and runs that were killed, shared work or appended at
/// once leave behind is one chain (the acceptance of #18: two daemons appending concurrently).
pub async fn assert_chain_verifies(store: &Store) {
    let report = store.verify_chain(None).await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    assert!(report.entries > 0, "the run's events are in the chain: {report:?}");
}

/// An app whose log holds 8 events, appended through each path: single events, a ledger batch and
/// operator actions.
async fn chained_app() -> TestApp {
    let app = empty_app().await;
    let store = &app.deps.store;
    for n in 1..=3 {
        store.append_event(&event(n)).await.unwrap();
    }
    store.write_batch(&Batch { events: vec![event(4), event(5)], ..Batch::default() }).await.unwrap();
    store.append_operator_events(&[operator_event(6), operator_event(7)]).await.unwrap();
    store.append_event(&event(8)).await.unwrap();
    app
}

/// `audit verify --json` (with `args`): its exit code and report.
fn verify(app: &TestApp, args: &[&str]) -> (i32, serde_json::Value) {
    let out = app.command().args(["audit", "verify", "--json"]).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} / {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

/// The entry the report names as broken: (kind, id).
fn broken(report: &serde_json::Value) -> (String, i64) {
    let broken = &report["broken"];
    (
        broken["kind"].as_str().unwrap_or_else(|| panic!("not broken: {report}")).to_owned(),
        broken["id"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn every_append_path_links_one_chain_that_verifies() {
    let app = chained_app().await;
    let head = app.deps.store.chain_head().await.unwrap().expect("a head");
    assert_eq!(head.seq, 8);
    let ids = ids_by_seq(&app.deps.store).await;
    assert_eq!(ids.len(), 8, "every event is a link");
    let out = app.command().args(["audit", "verify"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(stdout.trim(), format!("chain verifies, 8 entries, head {}", head.hash));
}

#[tokio::test]
async fn verify_names_a_changed_entry() {
    let app = chained_app().await;
    let ids = ids_by_seq(&app.deps.store).await;
    tamper(&app.deps.store, &[&format!("UPDATE events SET message = 'nothing happened' WHERE id = {}", ids[3])]).await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    assert_eq!(broken(&report), ("changed".into(), ids[3]), "{report}");
    assert_eq!(report["entries"], 3);
    // The text names the entry too.
    let out = app.command().args(["audit", "verify"]).assert().code(3);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.starts_with(&format!("chain broken: entry {} was changed", ids[3])), "{stdout}");
    // An operator's reason is covered as well.
    let app = chained_app().await;
    let ids = ids_by_seq(&app.deps.store).await;
    tamper(&app.deps.store, &[&format!("UPDATE events SET reason = 'approved' WHERE id = {}", ids[6])]).await;
    assert_eq!(broken(&verify(&app, &[]).1), ("changed".into(), ids[6]));
    // From an event after the change on, the rest verifies.
    let (code, report) = verify(&app, &["--since", &ids[7].to_string()]);
    assert_eq!((code, &report["entries"]), (0, &serde_json::json!(1)), "{report}");
}

#[tokio::test]
async fn verify_names_the_entry_after_removed_ones() {
    let app = chained_app().await;
    let ids = ids_by_seq(&app.deps.store).await;
    tamper(&app.deps.store, &[&format!("DELETE FROM events WHERE id = {}", ids[4])]).await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    assert_eq!(broken(&report), ("removed".into(), ids[5]), "{report}");
    // The chain's first links.
    let app = chained_app().await;
    let ids = ids_by_seq(&app.deps.store).await;
    tamper(&app.deps.store, &[&format!("DELETE FROM events WHERE id IN ({}, {})", ids[0], ids[1])]).await;
    assert_eq!(broken(&verify(&app, &[]).1), ("removed".into(), ids[2]));
}

#[tokio::test]
async fn verify_names_an_inserted_entry() {
    let app = chained_app().await;
    let ids = ids_by_seq(&app.deps.store).await;
    let at = ids[2];
    // Room for a row between the second and third link, then the row, as a bare INSERT writes it.
    tamper(
        &app.deps.store,
        &[
            &format!("UPDATE events SET id = id + 1000 WHERE id >= {at}"),
            &format!("UPDATE events SET id = id - 999 WHERE id >= {}", at + 1000),
            &format!(
                "INSERT INTO events (id, at, stage, level, message) VALUES ({at}, '2026-12-07T10:00:02.500Z', 'operator', 'info', 'approved by nobody')"
            ),
        ],
    )
    .await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    assert_eq!(broken(&report), ("inserted".into(), at), "{report}");
    assert_eq!(report["entries"], 2);
}

#[tokio::test]
async fn verify_names_a_reordered_entry() {
    let app = chained_app().await;
    let ids = ids_by_seq(&app.deps.store).await;
    let (a, b) = (ids[2], ids[3]);
    tamper(
        &app.deps.store,
        &[
            &format!("UPDATE events SET id = -1 WHERE id = {a}"),
            &format!("UPDATE events SET id = {a} WHERE id = {b}"),
            &format!("UPDATE events SET id = {b} WHERE id = -1"),
        ],
    )
    .await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    // Event `a` now holds seq 4, which stands before seq 3.
    assert_eq!(broken(&report), ("reordered".into(), a), "{report}");
    assert_eq!(report["broken"]["seq"], 4);
}

#[tokio::test]
async fn events_from_before_the_chain_are_counted_apart() {
    let app = empty_app().await;
    tamper(
        &app.deps.store,
        &["INSERT INTO events (at, stage, level, message) VALUES ('2020-01-01T00:00:00.000Z', 'deliver', 'info', 'old')"],
    )
    .await;
    app.deps.store.append_event(&event(1)).await.unwrap();
    let (code, report) = verify(&app, &[]);
    assert_eq!((code, &report["entries"], &report["before_chain"]), (0, &serde_json::json!(1), &serde_json::json!(1)));
}

/// Two stores on one database (as two daemons) and several tasks each, appending at once.
#[tokio::test]
async fn concurrent_appends_from_two_stores_form_one_chain() {
    let app = empty_app().await;
    let other = Store::open(&app.deps.config.database_url).await.unwrap();
    let mut tasks = Vec::new();
    for (t, store) in
        [app.deps.store.clone(), other.clone(), app.deps.store.clone(), other.clone()].into_iter().enumerate()
    {
        tasks.push(tokio::spawn(async move {
            for n in 0..15 {
                let k = t * 100 + n;
                match n % 3 {
                    0 => store.append_event(&event(k)).await.unwrap(),
                    1 => store
                        .write_batch(&Batch { events: vec![event(k), event(k + 50)], ..Batch::default() })
                        .await
                        .unwrap(),
                    _ => store.append_operator_events(&[operator_event(k)]).await.unwrap(),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    other.close().await;
    let report = app.deps.store.verify_chain(None).await.unwrap();
    assert_eq!(report.broken, None);
    assert_eq!(report.entries, 4 * (5 + 10 + 5));
    assert_eq!(report.head.unwrap().seq, 80);
}

/// `audit export` (the whole chain, and a range) re-verifies with scripts/verify-audit-export alone;
/// an edited line does not.
#[tokio::test]
async fn an_export_verifies_with_the_script_alone_and_an_edited_line_does_not() {
    let app = chained_app().await;
    let mut odd = event(9);
    odd.message = "Größe \"quoted\" \\ tab\t bell\u{7} line\nend €".into();
    app.deps.store.append_event(&odd).await.unwrap();
    app.deps.store.append_event(&event(10)).await.unwrap();
    let head = app.deps.store.chain_head().await.unwrap().unwrap();
    let ids = ids_by_seq(&app.deps.store).await;
    let script = crate::support::repo().join("scripts/verify-audit-export");
    let check = |export: &str, extra: &[&str]| {
        let path = app.path("export.jsonl");
        std::fs::write(&path, export).unwrap();
        let out = std::process::Command::new(&script).arg(&path).args(extra).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let export = |args: &[&str]| {
        let out = app.command().args(["audit", "export", "--format", "jsonl"]).args(args).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    };

    let whole = export(&[]);
    assert_eq!(whole.lines().count(), 1 + 10 + 1, "header, entries, head");
    let (code, stdout) = check(&whole, &["--head", &head.hash]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with(&format!("export verifies, 10 entries, last hash {}", head.hash)), "{stdout}");

    // A range from the middle links to the hash in its header.
    let range = export(&["--since", &ids[3].to_string(), "--until", &ids[8].to_string()]);
    let (code, stdout) = check(&range, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("export verifies, 6 entries"), "{stdout}");

    // An edited line (the odd event's message, seq 9) is named.
    let edited = whole.replace("Größe", "Grösse");
    assert_ne!(edited, whole);
    let (code, stdout) = check(&edited, &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains(&format!("line 10 (event {}, seq 9): its hash does not match", ids[8])), "{stdout}");
    // A removed line (seq 4): the line that follows it now is named.
    let removed: Vec<&str> = whole.lines().enumerate().filter(|(n, _)| *n != 4).map(|(_, l)| l).collect();
    let (code, stdout) = check(&(removed.join("\n") + "\n"), &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains(&format!("line 5 (event {}, seq 5): expected seq 4", ids[4])), "{stdout}");
}

/// The head is published: in the log line at a run's end, at `GET /api/audit/head` and as the info
/// metric `portal_bridge_audit_head_info{hash,seq} 1`.
#[tokio::test]
async fn the_head_is_logged_at_a_run_end_and_served_by_the_api_and_the_metrics() {
    let app = TestApp::demo().await;
    let out = app.std_command().args(["--log-format", "json", "migrate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let head = app.deps.store.chain_head().await.unwrap().expect("the run's events are chained");
    let logged: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "audit chain head")
        .collect();
    assert_eq!(logged.len(), 1, "one line at the run's end");
    assert_eq!(
        (&logged[0]["audit_head"], &logged[0]["audit_seq"]),
        (&serde_json::json!(head.hash), &serde_json::json!(head.seq))
    );

    let daemon = app.start_daemon().await;
    let api: serde_json::Value =
        reqwest::get(format!("{}/api/audit/head", daemon.base)).await.unwrap().json().await.unwrap();
    let metrics = reqwest::get(format!("{}/metrics", daemon.base)).await.unwrap().text().await.unwrap();
    daemon.shutdown.cancel();
    let _ = daemon.task.await;
    let head = app.deps.store.chain_head().await.unwrap().unwrap();
    assert_eq!(api, serde_json::json!({"head": {"seq": head.seq, "hash": head.hash}}));
    let series = format!("portal_bridge_audit_head_info{{hash=\"{}\",seq=\"{}\"}} 1", head.hash, head.seq);
    assert!(metrics.lines().any(|l| l == series), "{series} in\n{metrics}");
}

/// The item page (`/items/{key}`, served on a real socket) shows the item's trail with who and why,
/// an operator's action marked, and whether the chain verifies; after an event row is edited in the
/// database, it names the break (a fresh state: a daemon's pages reuse a verification for a minute).
#[tokio::test]
async fn the_item_page_shows_the_trail_with_who_and_why_and_whether_the_chain_verifies() {
    use crate::api::{CHANGED, Review, Server, raw_state_for};
    use portal_bridge::api::{key_segment, router};
    use portal_bridge::store::lease::Fence;

    let review = Review::new().await;
    let store = &review.app.deps.store;
    let skip = OperatorEvent {
        at: "2026-12-07T11:00:00.000Z".into(),
        run_id: None,
        item_key: Some(CHANGED.into()),
        target: None,
        actor: "anna.admin".into(),
        reason: Some("migrated by hand".into()),
        message: "skipped until its content changes".into(),
    };
    assert!(store.skip_item_logged(CHANGED, "migrated by hand (by anna.admin)", &Fence::None, &skip).await.unwrap());
    let head = store.chain_head().await.unwrap().expect("a head");
    let page = |review: &Review| {
        let (state, _rx) = raw_state_for(&review.app, None, false, 4);
        let uri = format!("/items/{}", key_segment(CHANGED));
        async move {
            let server = Server::start(router(state)).await;
            let answer = reqwest::get(server.url(&uri)).await.unwrap();
            assert_eq!(answer.status(), reqwest::StatusCode::OK);
            let body = answer.text().await.unwrap();
            server.stop().await;
            body
        }
    };

    let item = page(&review).await;
    let row = item.split("<tr class=\"operator\">").nth(1).expect("the skip is marked as an operator's action");
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("Bedienaktion (operator action)"), "{row}");
    assert!(row.contains("skipped until its content changes"), "{row}");
    assert!(row.contains("<td>anna.admin</td>"), "who: {row}");
    assert!(row.contains("migrated by hand"), "why: {row}");
    assert!(item.contains("<th scope=\"col\">Wer <span class=\"en\">(who)</span></th>"), "{item}");
    let verifies = format!(
        "Prüfkette intakt / chain verifies ({} entries, head #{} <code>{}</code>)",
        head.seq, head.seq, head.hash
    );
    assert!(item.contains(&verifies), "{item}");

    let id: i64 = match store {
        Store::Sqlite(pool) => {
            sqlx::query_scalar("SELECT id FROM events WHERE actor = 'anna.admin'").fetch_one(pool).await
        }
        Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT id FROM events WHERE actor = 'anna.admin'").fetch_one(pool).await
        }
    }
    .unwrap();
    tamper(store, &[&format!("UPDATE events SET reason = 'approved by the mayor' WHERE id = {id}")]).await;
    let item = page(&review).await;
    assert!(!item.contains("Prüfkette intakt"), "{item}");
    let names = format!("Prüfkette gebrochen / chain broken</strong> bei Ereignis (at event) {id} (changed)");
    assert!(item.contains(&names), "{item}");
    assert!(item.contains("approved by the mayor"), "the trail shows what the row holds now");
}

/// An event on day `day` of November 2026 (12:00 UTC).
fn dated(day: u32) -> NewEvent {
    NewEvent { at: format!("2026-11-{day:02}T12:00:00.000Z"), ..event(day as usize) }
}

/// An app whose chain holds one event per day, November 1st to 6th (seq 1 to 6).
async fn dated_app() -> TestApp {
    let app = empty_app().await;
    for day in 1..=6 {
        app.deps.store.append_event(&dated(day)).await.unwrap();
    }
    app
}

/// Runs `scripts/verify-audit-export` on `files`: exit code and stdout.
fn verify_export(files: &[&std::path::Path]) -> (i32, String) {
    let script = crate::support::repo().join("scripts/verify-audit-export");
    let out = std::process::Command::new(script).args(files).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `audit export` with `args`, written to `name` in the app's directory.
fn export_to(app: &TestApp, name: &str, args: &[&str]) -> (std::path::PathBuf, String) {
    let out = app.command().args(["audit", "export"]).args(args).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let path = app.path(name);
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

/// The number of rows of `events`.
async fn event_count(store: &Store) -> i64 {
    let sql = "SELECT COUNT(*) FROM events";
    match store {
        Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// `audit prune --before 2026-11-04` (links of November 1st to 3rd) with an archive, by `anna`.
fn prune_to_archive(app: &TestApp) -> std::path::PathBuf {
    let archive = app.path("archive.jsonl");
    let out = app
        .command()
        .args(["audit", "prune", "--before", "2026-11-04", "--reason", "retention: 3 days", "--by", "anna"])
        .arg("--archive")
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("pruned 3 entries (seq 1 to 3"), "{stdout}");
    archive
}

/// A prune with an archive: the chain still verifies and says what was pruned; the archive
/// verifies on its own and ends with the hash the checkpoint carries; a later export verifies, alone
/// and after the archive; appends continue the chain.
#[tokio::test]
async fn a_prune_behind_a_checkpoint_keeps_the_chain_verifiable_and_archives_what_it_removes() {
    use sha2::Digest;
    let app = dated_app().await;
    let store = &app.deps.store;
    let through_hash = store.hash_at(3).await.unwrap().expect("link 3");
    let archive = prune_to_archive(&app);

    // The checkpoint row and its link (the new head, seq 7).
    let checkpoint = store.checkpoint(3).await.unwrap().expect("a checkpoint through seq 3");
    assert_eq!(
        (checkpoint.through_hash.as_str(), checkpoint.pruned_count, checkpoint.checkpoint_seq),
        (through_hash.as_str(), 3, 7)
    );
    assert_eq!((checkpoint.actor.as_str(), checkpoint.reason.as_str()), ("anna", "retention: 3 days"));
    assert_eq!(
        (checkpoint.first_at.as_str(), checkpoint.last_at.as_str()),
        ("2026-11-01T12:00:00.000Z", "2026-11-03T12:00:00.000Z")
    );
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(checkpoint.archive_sha256.as_deref(), Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str()));
    let ids = ids_by_seq(store).await;
    assert_eq!(ids.len(), 4, "links 4 to 6 and the checkpoint link");
    let head = store.chain_head().await.unwrap().unwrap();
    assert_eq!(head.seq, 7);
    let page = store.chain_page(ids[3] - 1, None, 1).await.unwrap();
    let link = &page[0];
    assert_eq!((link.actor.as_deref(), link.reason.as_deref()), (Some("anna"), Some("retention: 3 days")));
    assert!(link.message.contains(&format!("through seq 3 (hash {through_hash})")), "{}", link.message);
    assert!(link.message.contains(checkpoint.archive_sha256.as_deref().unwrap()), "{}", link.message);

    // verify: 0, the pruned range reported.
    let (code, report) = verify(&app, &[]);
    assert_eq!((code, &report["entries"], &report["broken"]), (0, &serde_json::json!(4), &serde_json::Value::Null));
    assert_eq!(
        report["pruned"],
        serde_json::json!({"through_seq": 3, "through_hash": through_hash, "count": 3, "at": checkpoint.at, "actor": "anna"})
    );
    let out = app.command().args(["audit", "verify"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        stdout.contains(&format!("pruned before it: 3 entries through seq 3 (hash {through_hash}), by anna")),
        "{stdout}"
    );

    // The archive: header, links 1 to 3, the head at the time; it verifies alone.
    let archived: Vec<serde_json::Value> =
        String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(archived.len(), 5);
    assert_eq!(archived[0], serde_json::json!({"audit_export": 1, "first_seq": 1, "prev": null}));
    assert_eq!(archived[3]["hash"], serde_json::json!(through_hash), "the last entry is the checkpoint's hash");
    assert_eq!(archived[4]["chain_head"]["seq"], 6);
    let (code, stdout) = verify_export(&[&archive]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with(&format!("export verifies, 3 entries, last hash {through_hash}")), "{stdout}");

    // A later export starts from the checkpoint's hash and verifies, alone and after the archive.
    let (export, text) = export_to(&app, "export.jsonl", &[]);
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"audit_export": 1, "first_seq": 4, "prev": through_hash}));
    assert_eq!(verify_export(&[&export]).0, 0);
    let (code, stdout) = verify_export(&[&archive, &export]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with(&format!("export verifies, 7 entries, last hash {}", head.hash)), "{stdout}");
    // Out of order, the files do not continue one another.
    assert_eq!(verify_export(&[&export, &archive]).0, 3);

    // Appends continue the chain.
    store.append_event(&dated(7)).await.unwrap();
    let (code, report) = verify(&app, &[]);
    assert_eq!((code, &report["entries"], &report["head"]["seq"]), (0, &serde_json::json!(5), &serde_json::json!(8)));
}

/// After a prune, links removed without a checkpoint are still `removed`; an edited checkpoint row
/// or checkpoint link is `changed`, naming the checkpoint link.
#[tokio::test]
async fn after_a_prune_removed_links_and_an_edited_checkpoint_are_named() {
    // Links removed after the pruned ones.
    let app = dated_app().await;
    prune_to_archive(&app);
    let ids = ids_by_seq(&app.deps.store).await;
    tamper(&app.deps.store, &[&format!("DELETE FROM events WHERE id = {}", ids[0])]).await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    assert_eq!(broken(&report), ("removed".into(), ids[1]), "{report}");
    assert!(report["broken"]["detail"].as_str().unwrap().contains("seq 4 is missing"), "{report}");

    // The checkpoint row edited (another hash, as if other links had been pruned).
    let app = dated_app().await;
    prune_to_archive(&app);
    let ids = ids_by_seq(&app.deps.store).await;
    let forged = "0".repeat(64);
    tamper(
        &app.deps.store,
        &[&format!("UPDATE audit_checkpoints SET through_hash = '{forged}' WHERE through_seq = 3")],
    )
    .await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    assert_eq!(broken(&report), ("changed".into(), ids[3]), "the checkpoint link is named: {report}");
    let detail = report["broken"]["detail"].as_str().unwrap();
    assert!(detail.contains("checkpoint row of audit_checkpoints through seq 3"), "{detail}");
    let out = app.command().args(["audit", "verify"]).assert().code(3);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.starts_with(&format!("chain broken: entry {} was changed: the checkpoint row", ids[3])), "{stdout}");

    // The checkpoint link edited.
    let app = dated_app().await;
    prune_to_archive(&app);
    let ids = ids_by_seq(&app.deps.store).await;
    tamper(&app.deps.store, &[&format!("UPDATE events SET reason = 'nobody asked' WHERE id = {}", ids[3])]).await;
    let (code, report) = verify(&app, &[]);
    assert_eq!(code, 3);
    assert_eq!(broken(&report), ("changed".into(), ids[3]), "{report}");
    assert_eq!(report["entries"], 3);
}

/// A refused prune (no reason, a bad date, no archive named, an existing archive, a chain that does
/// not verify) and one with nothing to prune change nothing and append nothing.
#[tokio::test]
async fn refused_prunes_leave_no_trace() {
    let app = dated_app().await;
    let store = &app.deps.store;
    let head = store.chain_head().await.unwrap().unwrap();
    let existing = app.path("exists.jsonl");
    std::fs::write(&existing, "keep me\n").unwrap();
    let exists = existing.to_str().unwrap();
    let unchanged = |what: &str, head_now: Option<portal_bridge::store::audit::ChainHead>, rows: i64| {
        assert_eq!(head_now.as_ref(), Some(&head), "{what}: the head is unchanged");
        assert_eq!(rows, 6, "{what}: no row removed or added");
    };
    for (what, args, code, says) in [
        ("no reason", vec!["--before", "2026-11-04", "--no-archive"], 2, "--reason"),
        ("an empty reason", vec!["--before", "2026-11-04", "--reason", " ", "--no-archive"], 2, "reason"),
        ("a bad date", vec!["--before", "last week", "--reason", "r", "--no-archive"], 2, "--before: `last week`"),
        ("no archive named", vec!["--before", "2026-11-04", "--reason", "r"], 2, "--no-archive"),
        (
            "an existing archive",
            vec!["--before", "2026-11-04", "--reason", "r", "--archive", exists],
            2,
            "exists already",
        ),
        ("nothing to prune", vec!["--before", "2026-11-01", "--reason", "r", "--no-archive"], 0, ""),
    ] {
        let out = app.command().args(["audit", "prune"]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        unchanged(what, store.chain_head().await.unwrap(), event_count(store).await);
    }
    let out = app
        .command()
        .args(["audit", "prune", "--before", "2026-11-01", "--reason", "r", "--no-archive"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nothing to prune"));
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");
    assert!(store.checkpoint(3).await.unwrap().is_none());

    // A chain that does not verify is not signed off (exit 6).
    let ids = ids_by_seq(store).await;
    tamper(store, &[&format!("UPDATE events SET message = 'nothing' WHERE id = {}", ids[1])]).await;
    let out = app
        .command()
        .args(["audit", "prune", "--before", "2026-11-04", "--reason", "r", "--no-archive"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));
    unchanged("a broken chain", store.chain_head().await.unwrap(), event_count(store).await);
}

/// `--since`/`--until` take a date (UTC day) or an RFC 3339 time as well as an event id.
#[tokio::test]
async fn since_and_until_take_dates() {
    let app = dated_app().await;
    let seqs = |text: &str| -> Vec<i64> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|v| v["seq"].as_i64())
            .collect()
    };
    let (path, text) = export_to(&app, "days.jsonl", &["--since", "2026-11-02", "--until", "2026-11-04"]);
    assert_eq!(seqs(&text), vec![2, 3, 4], "the whole of the 4th is included");
    assert_eq!(verify_export(&[&path]).0, 0);
    let (_, text) = export_to(
        &app,
        "times.jsonl",
        &["--since", "2026-11-02T12:00:00.001Z", "--until", "2026-11-05T13:00:00+01:00"],
    );
    assert_eq!(seqs(&text), vec![3, 4, 5], "times: at or after, at or before");
    let (_, text) = export_to(&app, "none.jsonl", &["--since", "2026-12-01"]);
    assert_eq!(seqs(&text), Vec::<i64>::new());

    let (code, report) = verify(&app, &["--since", "2026-11-03"]);
    assert_eq!((code, &report["entries"]), (0, &serde_json::json!(4)), "{report}");

    for flag in ["--since", "--until"] {
        let out = app.command().args(["audit", "export", flag, "last week"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag) && stderr.contains("last week"), "{stderr}");
    }
    let out = app.command().args(["audit", "verify", "--since", "2026-02-30"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `POST /api/audit/prune`: the role approver only (a viewer and an operator 403), the token's name
/// recorded as the actor; without `"no_archive": true` refused.
#[tokio::test]
async fn the_api_prunes_for_an_approver_and_records_its_name() {
    use crate::operators::{APPROVER, OPERATOR, VIEWER, tokens_file};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    std::fs::write(dir.path().join("tokens.toml"), tokens_file(&[])).unwrap();
    let config = "[paths]\nmappings = \"mappings\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntokens_file = \"tokens.toml\"\n";
    let app = TestApp::with_config(dir, config).await;
    for day in 1..=6 {
        app.deps.store.append_event(&dated(day)).await.unwrap();
    }
    let head = app.deps.store.chain_head().await.unwrap().unwrap();
    let daemon = app.start_daemon().await;
    let body = serde_json::json!({"before": "2026-11-04", "reason": "retention", "no_archive": true});
    let prune = |token: &'static str, body: serde_json::Value| {
        let url = format!("{}/api/audit/prune", daemon.base);
        async move {
            let answer = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (answer.status(), answer.json::<serde_json::Value>().await.unwrap())
        }
    };
    for token in [VIEWER, OPERATOR] {
        let (status, answer) = prune(token, body.clone()).await;
        assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{answer}");
    }
    let (status, answer) = prune(APPROVER, serde_json::json!({"before": "2026-11-04", "reason": "retention"})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("no_archive"), "{answer}");
    let (status, answer) =
        prune(APPROVER, serde_json::json!({"before": "soon", "reason": "r", "no_archive": true})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(app.deps.store.chain_head().await.unwrap(), Some(head), "refusals append nothing");

    let (status, answer) = prune(APPROVER, body).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert_eq!(
        (&answer["pruned"]["through_seq"], &answer["pruned"]["actor"]),
        (&serde_json::json!(3), &serde_json::json!("a.approver"))
    );
    daemon.shutdown.cancel();
    let _ = daemon.task.await;
    let (code, report) = verify(&app, &[]);
    assert_eq!((code, &report["pruned"]["actor"]), (0, &serde_json::json!("a.approver")), "{report}");
}

/// A prune lifts the log's append-only guard only inside its own transaction: afterwards a DELETE
/// or UPDATE of an event is refused as before. Events from before the chain older than the date are
/// pruned with the links and come first in the archive (not covered by the chain, counted apart).
#[tokio::test]
async fn the_log_stays_append_only_after_a_prune_and_old_events_from_before_the_chain_are_archived() {
    let app = empty_app().await;
    let store = &app.deps.store;
    // Two events from before the chain (one older than the date, one not), then the chain. The
    // guard is put back as the migration made it.
    let restore: &[&str] = match store {
        Store::Sqlite(_) => &[
            "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'the migration log is append-only'); END",
            "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'the migration log is append-only'); END",
        ],
        Store::Postgres(_) => &[
            "CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION events_append_only()",
        ],
    };
    let mut statements = vec![
        "INSERT INTO events (at, stage, level, message) VALUES ('2020-01-01T00:00:00.000Z', 'deliver', 'info', 'old')",
        "INSERT INTO events (at, stage, level, message) VALUES ('2030-01-01T00:00:00.000Z', 'deliver', 'info', 'skewed')",
    ];
    statements.extend_from_slice(restore);
    tamper(store, &statements).await;
    for day in 1..=6 {
        store.append_event(&dated(day)).await.unwrap();
    }
    let archive = prune_to_archive(&app);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&archive).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6, "header, the old event, links 1 to 3, head");
    assert_eq!((&lines[1]["message"], &lines[1]["seq"]), (&serde_json::json!("old"), &serde_json::Value::Null));
    let (code, stdout) = verify_export(&[&archive]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("1 events from before the chain (not covered by it)"), "{stdout}");
    assert_eq!(event_count(store).await, 1 + 3 + 1, "the newer event from before the chain stays");
    let (code, report) = verify(&app, &[]);
    assert_eq!((code, &report["before_chain"], &report["entries"]), (0, &serde_json::json!(1), &serde_json::json!(4)));

    for sql in ["DELETE FROM events", "UPDATE events SET message = 'x'"] {
        let refused = match store {
            Store::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Store::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        };
        let error = refused.expect_err(sql).to_string();
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
}

/// A second prune continues from the first checkpoint: its archive starts with the first one's
/// `through_hash`, both archives and a later export verify together, and verify reports the newest.
#[tokio::test]
async fn a_second_prune_continues_from_the_first_checkpoint() {
    let app = dated_app().await;
    let first = prune_to_archive(&app);
    let second = app.path("second.jsonl");
    let out = app
        .command()
        .args(["audit", "prune", "--before", "2026-11-06", "--reason", "again", "--by", "ben", "--json"])
        .arg("--archive")
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&answer["pruned"]["through_seq"], &answer["pruned"]["pruned_count"]),
        (&serde_json::json!(5), &serde_json::json!(2))
    );
    let (code, report) = verify(&app, &[]);
    assert_eq!(
        (code, &report["pruned"]["through_seq"], &report["pruned"]["actor"]),
        (0, &serde_json::json!(5), &serde_json::json!("ben")),
        "{report}"
    );
    assert_eq!(report["entries"], 3, "link 6 and the two checkpoint links");
    let (export, _) = export_to(&app, "export.jsonl", &[]);
    let (code, stdout) = verify_export(&[&first, &second, &export]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("export verifies, 8 entries"), "{stdout}");
}
