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
