//! The audit chain verified across pages (`Store::verify_chain` reads 5,000 rows a page and checks a
//! page's hashes on several threads): a link changed at a page's start, in its middle, and one
//! edited with its hash recomputed at a page's end are named as `audit verify` named them before,
//! with the head at the last link before the break (SQLite, or PostgreSQL with
//! `PORTAL_BRIDGE_TEST_DATABASE_URL`).

use portal_bridge::store::Store;
use portal_bridge::store::audit::{self, BreakKind, Entry};

use crate::support::TestApp;

async fn empty_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    TestApp::with_config(dir, "[paths]\nmappings = \"mappings\"\n").await
}

/// SQL run on the app's database as someone with direct access (the append-only triggers dropped).
async fn tamper(store: &Store, statements: &[String]) {
    let unguard = match store {
        Store::Sqlite(_) => {
            ["DROP TRIGGER IF EXISTS events_no_update", "DROP TRIGGER IF EXISTS events_no_delete"].as_slice()
        }
        Store::Postgres(_) => ["DROP TRIGGER IF EXISTS events_no_change ON events"].as_slice(),
    };
    for sql in unguard.iter().map(|s| s.to_string()).chain(statements.iter().cloned()) {
        match store {
            Store::Sqlite(pool) => sqlx::query(&sql).execute(pool).await.map(|_| ()),
            Store::Postgres(pool) => sqlx::query(&sql).execute(pool).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Links 1..=n written with their correct hashes, as the append path would have, in multi-row
/// INSERTs; returns the hashes by seq (index 0 = seq 1).
async fn write_chain(store: &Store, n: i64) -> Vec<String> {
    let mut hashes: Vec<String> = Vec::new();
    for first in (1..=n).step_by(500) {
        let mut values = Vec::new();
        for seq in first..=n.min(first + 499) {
            let message = format!("event {seq}");
            let at = format!("2026-12-07T10:00:{:02}.000Z", seq % 60);
            let entry = Entry {
                at: &at,
                run_id: None,
                item_key: Some("feed/x"),
                target: None,
                stage: "deliver",
                level: "info",
                message: &message,
                actor: None,
                reason: None,
            };
            let hash = audit::link_hash(seq, hashes.last().map(String::as_str), &entry);
            values.push(format!("('{at}', 'feed/x', 'deliver', 'info', '{message}', {seq}, '{hash}')"));
            hashes.push(hash);
        }
        let sql =
            format!("INSERT INTO events (at, item_key, stage, level, message, seq, hash) VALUES {}", values.join(", "));
        tamper(store, &[sql]).await;
    }
    hashes
}

#[tokio::test]
async fn breaks_at_a_page_start_in_its_middle_and_at_its_end_are_named_with_the_head_before_them() {
    let app = empty_app().await;
    let store = &app.deps.store;
    let hashes = write_chain(store, 12_000).await;
    let report = store.verify_chain(None).await.unwrap();
    assert_eq!((report.broken, report.entries), (None, 12_000));
    assert_eq!(report.head.unwrap().hash, hashes[11_999]);

    // The first link of the second page (seq 5001), and a later one in the third page: the first is named.
    tamper(
        store,
        &[
            "UPDATE events SET message = 'edited' WHERE seq = 5001".into(),
            "UPDATE events SET message = 'edited' WHERE seq = 11000".into(),
        ],
    )
    .await;
    let report = store.verify_chain(None).await.unwrap();
    let broken = report.broken.unwrap();
    assert_eq!((broken.kind, broken.seq, report.entries), (BreakKind::Changed, Some(5001), 5000));
    assert_eq!(report.head.as_ref().map(|h| (h.seq, h.hash.as_str())), Some((5000, hashes[4999].as_str())));

    // In the middle of the first page, with the hash recomputed: the following link is named.
    let entry = Entry {
        at: &format!("2026-12-07T10:00:{:02}.000Z", 2500 % 60),
        run_id: None,
        item_key: Some("feed/x"),
        target: None,
        stage: "deliver",
        level: "info",
        message: "rewritten",
        actor: None,
        reason: None,
    };
    let rehashed = audit::link_hash(2500, Some(&hashes[2498]), &entry);
    tamper(store, &[format!("UPDATE events SET message = 'rewritten', hash = '{rehashed}' WHERE seq = 2500")]).await;
    let report = store.verify_chain(None).await.unwrap();
    let broken = report.broken.unwrap();
    assert_eq!((broken.kind, broken.seq, report.entries), (BreakKind::Changed, Some(2501), 2500));
    assert_eq!(report.head.map(|h| (h.seq, h.hash)), Some((2500, rehashed)));
}

#[tokio::test]
async fn a_link_moved_across_a_page_boundary_is_named_as_before() {
    let app = empty_app().await;
    let store = &app.deps.store;
    write_chain(store, 10_002).await;
    // The last link of the first page (seq 5000) moved behind the first link of the second.
    tamper(
        store,
        &[
            "UPDATE events SET seq = -1 WHERE seq = 5000".into(),
            "UPDATE events SET seq = 5000 WHERE seq = 5001".into(),
            "UPDATE events SET seq = 5001 WHERE seq = -1".into(),
        ],
    )
    .await;
    let report = store.verify_chain(None).await.unwrap();
    let broken = report.broken.unwrap();
    assert_eq!((broken.kind, report.entries), (BreakKind::Reordered, 4999));
    assert_eq!(report.head.map(|h| h.seq), Some(4999));
}
