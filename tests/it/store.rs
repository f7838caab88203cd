//! The store on its own: the same answers from SQLite and PostgreSQL (run with
//! `PORTAL_BRIDGE_TEST_DATABASE_URL` for the latter) where the two engines differ by default:
//! text order, prefix filters, NUL in text, binary bodies, NULL parameters, the append-only log,
//! and the database's clock behind leases, fences, row revisions and the end of dead runs.

use portal_bridge::domain::{Level, Stage, Trigger};
use portal_bridge::store::Store;
use portal_bridge::store::http_cache::CachedPage;
use portal_bridge::store::intents::Intent;
use portal_bridge::store::ledger::{Batch, LedgerRow, UnchangedMark};
use portal_bridge::store::log::{EventFilter, NewEvent};

use crate::support::{TestApp, postgres_server};

/// An app on an empty store (no sources).
async fn empty_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mappings")).unwrap();
    TestApp::with_config(dir, "[paths]\nmappings = \"mappings\"\n").await
}

fn row(item_key: &str, status: &str) -> LedgerRow {
    LedgerRow {
        item_key: item_key.into(),
        target: "t".into(),
        source_id: item_key.split('/').next().unwrap().into(),
        origin: "records.json#0".into(),
        content_hash: Some("c1".into()),
        mapping: None,
        mapping_version: None,
        output_hash: None,
        output_path: None,
        status: status.into(),
        attempts: 0,
        last_error: None,
        first_seen_at: "2024-01-01T00:00:00.000Z".into(),
        updated_at: "2024-01-01T00:00:00.000Z".into(),
        delivered_at: None,
        last_run_id: None,
        adoptions: None,
        target_version: None,
        skip_reason: None,
        skip_hash: None,
        settings_hash: None,
        status_since: None,
        leika_key: None,
        revision: 0,
    }
}

fn event(run_id: Option<i64>, item_key: Option<&str>, level: Level, message: &str) -> NewEvent {
    NewEvent {
        at: "2024-01-01T00:00:00.000Z".into(),
        run_id,
        item_key: item_key.map(Into::into),
        target: None,
        stage: Stage::Deliver,
        level,
        message: message.into(),
    }
}

#[tokio::test]
async fn the_test_database_is_the_one_the_environment_names() {
    let app = empty_app().await;
    match (&app.deps.store, postgres_server()) {
        (Store::Postgres(_), Some(_)) => {
            let database = app.database.as_ref().expect("a database of its own");
            assert!(database.url.contains("/bridge_test_"), "{}", database.url);
        }
        (Store::Sqlite(_), None) => assert!(app.path("var/bridge.db").exists()),
        (store, server) => panic!("{store:?} with PORTAL_BRIDGE_TEST_DATABASE_URL = {server:?}"),
    }
    assert!(app.deps.store.ping().await);
}

#[tokio::test]
async fn text_sorts_bytewise_and_a_source_filter_is_an_exact_prefix() {
    let app = empty_app().await;
    let store = &app.deps.store;
    // In a German or English locale these would sort a-b, a/b, A/c, a0, aa, ab, B, Z.
    let keys = ["feed/a-b", "feed/B", "feed/a/b", "feed/aa", "feed/Z", "feed/a0", "feed/A/c", "feed/ab"];
    let others = ["Feed/x", "feed-x/y", "feedx/z", "fe_d/w", "fe%d/v"];
    let mut batch = Batch::default();
    for (i, key) in keys.iter().chain(&others).enumerate() {
        batch.rows.push(row(key, if i % 2 == 0 { "delivered" } else { "failed" }));
        batch.events.push(event(None, Some(key), Level::Info, key));
    }
    store.write_batch(&batch).await.unwrap();

    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort(); // bytewise, as SQLite's BINARY collation
    let listed: Vec<String> =
        store.items(None, Some("feed"), 100).await.unwrap().into_iter().map(|r| r.item_key).collect();
    assert_eq!(listed, sorted);
    let failed = store.items(Some("failed"), None, 100).await.unwrap();
    assert_eq!(failed.len(), (keys.len() + others.len()) / 2);
    assert!(failed.iter().all(|r| r.status == "failed"));
    assert_eq!(store.items(None, None, 3).await.unwrap().len(), 3);
    assert!(store.items(Some("new"), Some("feed"), 100).await.unwrap().is_empty());

    let of_source = |source: &str| EventFilter { source: Some(source.into()), ..Default::default() };
    let messages = |events: Vec<portal_bridge::store::log::EventRow>| -> Vec<String> {
        let mut m: Vec<String> = events.into_iter().map(|e| e.message).collect();
        m.sort();
        m
    };
    assert_eq!(messages(store.events(&of_source("feed")).await.unwrap()), sorted, "not Feed/, feed-x/, feedx/");
    assert_eq!(messages(store.events(&of_source("Feed")).await.unwrap()), ["Feed/x"], "case-sensitive");
    assert_eq!(messages(store.events(&of_source("fe_d")).await.unwrap()), ["fe_d/w"], "_ is no wildcard");
    assert_eq!(messages(store.events(&of_source("fe%d")).await.unwrap()), ["fe%d/v"], "% is no wildcard");
    assert!(store.events(&of_source("fee")).await.unwrap().is_empty());

    let counts = store.status_counts().await.unwrap();
    let order: Vec<(&str, &str)> = counts.iter().map(|c| (c.source_id.as_str(), c.status.as_str())).collect();
    let mut expected = order.clone();
    expected.sort();
    assert_eq!(order, expected);
    assert_eq!(order.first(), Some(&("Feed", "delivered")));
}

#[tokio::test]
async fn null_parameters_levels_limits_and_runs_behave_alike() {
    let app = empty_app().await;
    let store = &app.deps.store;
    let run = store.start_run(Trigger::Cli, &["a".into(), "b".into()], "2024-01-01T00:00:00.000Z").await.unwrap();
    let other = store.start_run(Trigger::Api, &[], "2024-01-01T00:00:01.000Z").await.unwrap();
    assert!(other > run);
    let mut batch = Batch::default();
    for (i, level) in [Level::Debug, Level::Info, Level::Warn, Level::Error].into_iter().enumerate() {
        batch.events.push(event(Some(run), Some("a/1"), level, &format!("run {i}")));
        batch.events.push(event(Some(other), None, level, &format!("other {i}")));
    }
    store.write_batch(&batch).await.unwrap();

    assert_eq!(store.events(&EventFilter::default()).await.unwrap().len(), 8);
    let of_run = store.events(&EventFilter { run_id: Some(run), ..Default::default() }).await.unwrap();
    assert_eq!(of_run.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["run 0", "run 1", "run 2", "run 3"]);
    let warn = store
        .events(&EventFilter { level: Some(Level::Warn), item_key: Some("a/1".into()), ..Default::default() })
        .await;
    assert_eq!(warn.unwrap().iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["run 2", "run 3"]);
    let last_two = store.events(&EventFilter { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(last_two.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["run 3", "other 3"], "oldest first");

    store
        .finish_run(
            run,
            portal_bridge::domain::RunStatus::Partial,
            Default::default(),
            Some("x"),
            "2024-01-01T00:00:02.000Z",
        )
        .await
        .unwrap();
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [other, run], "newest first");
    let finished = store.run(run).await.unwrap().unwrap();
    assert_eq!((finished.status.as_str(), finished.sources.as_str()), ("partial", "a,b"));
    assert_eq!(finished.message.as_deref(), Some("x"));
    assert!(store.run(other + 100).await.unwrap().is_none());
}

#[tokio::test]
async fn nul_in_text_and_any_bytes_in_bodies_are_stored_alike() {
    let app = empty_app().await;
    let store = &app.deps.store;
    let mut failed = row("feed/1", "failed");
    failed.last_error = Some("portal said \u{0}bad\u{0}".into());
    let batch = Batch {
        rows: vec![failed],
        events: vec![event(None, Some("feed/1"), Level::Error, "body: \u{0}")],
        settled_intents: vec![],
        documents: vec![portal_bridge::store::documents::NewDocument {
            item_key: "feed/1".into(),
            target: "t".into(),
            output_hash: "h1".into(),
            body: (0..=255u8).collect::<Vec<u8>>().into(),
            delivered_at: "2024-01-01T00:00:00Z".into(),
        }],
        unchanged: vec![],
    };
    store.write_batch(&batch).await.unwrap();
    let kept = store.last_documents("feed/1", "t", 2).await.unwrap();
    assert_eq!(kept[0].body, (0..=255u8).collect::<Vec<u8>>(), "documents of a batch are kept with it, byte for byte");
    let stored = &store.item("feed/1").await.unwrap()[0];
    assert_eq!(stored.last_error.as_deref(), Some("portal said \u{FFFD}bad\u{FFFD}"));
    let events = store.events(&EventFilter::default()).await.unwrap();
    assert_eq!(events[0].message, "body: \u{FFFD}");
    assert!(store.add_adoption("053150000000", "99012001001000", Some("K\u{0}ln"), "2024").await.unwrap());
    assert_eq!(store.adoptions().await.unwrap()[0].name.as_deref(), Some("K\u{FFFD}ln"));
    assert!(!store.add_adoption("053150000000", "99012001001000", None, "2024").await.unwrap());
    assert_eq!(
        store.adoptions().await.unwrap()[0].name.as_deref(),
        Some("K\u{FFFD}ln"),
        "a missing name keeps the old"
    );

    let bytes: Vec<u8> = (0..=255).collect();
    let page = CachedPage { etag: Some("\"e1\"".into()), last_modified: None, body: bytes.clone() };
    store.store_page("src", "http://x/a?b=1", &page, "2024").await.unwrap();
    assert_eq!(store.cached_page("src", "http://x/a?b=1").await.unwrap(), Some(page));
    assert_eq!(store.cached_page("src", "http://x/a?b=2").await.unwrap(), None);

    let intent = Intent {
        item_key: "feed/1".into(),
        target: "t".into(),
        source_id: "feed".into(),
        origin: "records.json#0".into(),
        action: "put".into(),
        output_hash: "o1".into(),
        idempotency_key: "k1".into(),
        body: bytes,
        format: "json".into(),
        known_version: None,
        content_hash: Some("c1".into()),
        mapping: None,
        mapping_version: None,
        adoptions: None,
        run_id: None,
        created_at: "2024-01-01T00:00:00.000Z".into(),
        delivery: None,
    };
    store.record_intent(&intent).await.unwrap();
    store.record_intent(&Intent { idempotency_key: "k2".into(), ..intent.clone() }).await.unwrap();
    assert_eq!(store.intents().await.unwrap(), [Intent { idempotency_key: "k2".into(), ..intent }]);
    let settle = Batch { settled_intents: vec![("feed/1".into(), "t".into())], ..Default::default() };
    store.write_batch(&settle).await.unwrap();
    assert!(store.intents().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_log_cannot_be_changed_or_emptied_on_either_backend() {
    let app = empty_app().await;
    let store = &app.deps.store;
    store.append_event(&event(None, None, Level::Info, "kept")).await.unwrap();
    let attempts = ["UPDATE events SET message = 'x'", "DELETE FROM events"];
    for sql in attempts {
        let result = match store {
            Store::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Store::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        };
        let error = result.expect_err(sql).to_string();
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    if let Store::Postgres(pool) = store {
        // TRUNCATE skips row triggers; a statement trigger refuses it too.
        let error = sqlx::query("TRUNCATE events").execute(pool).await.expect_err("TRUNCATE").to_string();
        assert!(error.contains("append-only"), "{error}");
    }
    let events = store.events(&EventFilter::default()).await.unwrap();
    assert_eq!(events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["kept"]);
}

#[tokio::test]
async fn leases_fences_revisions_and_dead_runs_follow_the_database_on_either_backend() {
    use std::time::Duration;

    use portal_bridge::domain::RunStatus;
    use portal_bridge::store::StoreError;
    use portal_bridge::store::lease::Fence;

    let app = empty_app().await;
    let store = &app.deps.store;
    let (hour, gone) = (Duration::from_secs(3600), Duration::ZERO);
    let now = store.now().await.unwrap();
    let shape = |t: &str| t.len() == 24 && &t[10..11] == "T" && &t[19..20] == "." && t.ends_with('Z');
    assert!(shape(&now), "the database's now is stored as timestamps are: {now}");

    // A lease on the database's clock: busy for others until it expires there.
    assert_eq!(store.take_lease("source:feed", "a#1", hour).await.unwrap(), Ok(()));
    let busy = store.take_lease("source:feed", "b#1", hour).await.unwrap().unwrap_err();
    assert_eq!(busy.holder, "a#1");
    assert!(shape(&busy.expires_at) && busy.expires_at > now, "{busy:?}");
    let mine = Fence::source("feed", "a#1");
    let written = |status: &str, revision: i64| Batch {
        rows: vec![LedgerRow { revision, ..row("feed/1", status) }],
        ..Batch::default()
    };
    store.write_fenced_batch(&written("new", 0), &mine).await.unwrap();
    assert_eq!(store.item("feed/1").await.unwrap()[0].revision, 1);

    // A row written at an old revision is refused whole; at its revision it is written.
    let stale = store.write_fenced_batch(&written("delivered", 0), &mine).await.unwrap_err();
    assert!(matches!(stale, StoreError::Stale { read: 0, now: 1, .. }), "{stale}");
    assert_eq!(store.item("feed/1").await.unwrap()[0].status, "new");
    // The operator's skip does not count as a newer state, and no run's write undoes it.
    store.skip_item("feed/1", "by hand", "2024-01-01T00:00:00.000Z").await.unwrap();
    store.write_fenced_batch(&written("delivered", 1), &mine).await.unwrap();
    let row = store.item("feed/1").await.unwrap().remove(0);
    assert_eq!((row.status.as_str(), row.revision, row.skip_reason.as_deref()), ("delivered", 2, Some("by hand")));

    // The lease lapses and another holder takes it: a's writes are refused, nothing is recorded.
    assert!(store.renew_lease("source:feed", "a#1", gone).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.take_lease("source:feed", "b#1", hour).await.unwrap(), Ok(()));
    let refused = store.write_fenced_batch(&written("failed", 2), &mine).await.unwrap_err();
    assert!(matches!(&refused, StoreError::LeaseLost(m) if m.contains("b#1")), "{refused}");
    let intent = Intent {
        item_key: "feed/1".into(),
        target: "t".into(),
        source_id: "feed".into(),
        origin: "records.json#0".into(),
        action: "put".into(),
        output_hash: "o1".into(),
        idempotency_key: "k1".into(),
        body: Vec::new(),
        format: "json".into(),
        known_version: None,
        content_hash: None,
        mapping: None,
        mapping_version: None,
        adoptions: None,
        run_id: None,
        created_at: "2024-01-01T00:00:00.000Z".into(),
        delivery: None,
    };
    assert!(matches!(store.record_fenced_intent(&intent, &mine).await, Err(StoreError::LeaseLost(_))));
    assert!(store.intents().await.unwrap().is_empty());
    assert_eq!(store.item("feed/1").await.unwrap()[0].status, "delivered");

    // Runs whose holder holds no live lease are dead; the others are left alone.
    let alive = store.start_held_run(Trigger::Api, &["feed".into()], Some("b#1"), &now).await.unwrap();
    let dead = store.start_held_run(Trigger::Cli, &["feed".into()], Some("a#1"), &now).await.unwrap();
    let old = store.start_run(Trigger::Cli, &["feed".into()], &now).await.unwrap();
    assert_eq!(store.close_dead_runs().await.unwrap(), [dead, old]);
    let closed = store.run(dead).await.unwrap().unwrap();
    assert_eq!(closed.status, "aborted");
    assert!(closed.finished_at.as_deref().is_some_and(|at| at >= now.as_str()), "{closed:?}");
    assert_eq!(store.run(alive).await.unwrap().unwrap().status, "running");
    store.abandon_holder("b#1", RunStatus::Aborted, "its task panicked").await.unwrap();
    let abandoned = store.run(alive).await.unwrap().unwrap();
    assert_eq!((abandoned.status.as_str(), abandoned.message.as_deref()), ("aborted", Some("its task panicked")));
    assert!(store.leases().await.unwrap().is_empty(), "the abandoned holder's leases are given back");
}

/// A re-run marks every row it finds unchanged many to a statement (`Batch::unchanged`): each row
/// must come out as upserting it as read, with status, time, run and LeiKa key changed, would
/// write it; a row another writer moved on refuses the whole batch, naming that row.
#[tokio::test]
async fn marking_rows_unchanged_writes_what_upserting_them_would_and_refuses_a_stale_row() {
    use portal_bridge::store::StoreError;

    let app = empty_app().await;
    let store = &app.deps.store;
    // Pairs of twins (upserted "u/…", marked "m/…"), more than one statement of marks holds.
    let n = 120;
    let delivered = |key: String, i: usize| LedgerRow {
        target: "form-platform".into(),
        origin: format!("forms/{i}.xml"),
        output_hash: Some(format!("o{i}")),
        output_path: Some(format!("out/{i}.json")),
        delivered_at: Some("2024-01-01T00:00:00.000Z".into()),
        last_run_id: Some(1),
        settings_hash: Some("s".into()),
        // every third has a LeiKa key already, every other learns one
        leika_key: (i % 3 == 0).then(|| "99000000000000".to_string()),
        ..row(&key, "delivered")
    };
    let twins: Vec<(LedgerRow, LedgerRow)> =
        (0..n).map(|i| (delivered(format!("u/{i}"), i), delivered(format!("m/{i}"), i))).collect();
    let first = Batch { rows: twins.iter().flat_map(|(u, m)| [u.clone(), m.clone()]).collect(), ..Batch::default() };
    store.write_batch(&first).await.unwrap();

    // Two re-runs: the first turns `delivered` into `unchanged`, the second finds it so already.
    for (run, at) in [(2, "2024-02-01T00:00:00.000Z"), (3, "2024-03-01T00:00:00.000Z")] {
        let read = |key: String| async move { store.item(&key).await.unwrap().remove(0) };
        let mut upserts = Vec::new();
        let mut marks = Vec::new();
        for (i, (u, m)) in twins.iter().enumerate() {
            let learned = (i % 2 == 0).then(|| format!("{:014}", i));
            let mut row = read(u.item_key.clone()).await;
            row.status = "unchanged".into();
            row.leika_key = learned.clone().or(row.leika_key);
            row.updated_at = at.into();
            row.last_run_id = Some(run);
            upserts.push(row);
            let now = read(m.item_key.clone()).await;
            marks.push(UnchangedMark {
                item_key: m.item_key.clone(),
                target: m.target.clone(),
                revision: now.revision,
                leika_key: learned,
                updated_at: at.into(),
                last_run_id: Some(run),
            });
        }
        store.write_batch(&Batch { rows: upserts, unchanged: marks, ..Batch::default() }).await.unwrap();
        for (u, m) in &twins {
            let (upserted, marked) = (read(u.item_key.clone()).await, read(m.item_key.clone()).await);
            assert_eq!(
                LedgerRow { item_key: upserted.item_key.replacen("u/", "m/", 1), source_id: "m".into(), ..upserted },
                marked,
                "run {run}"
            );
            assert_eq!((marked.status.as_str(), marked.last_run_id), ("unchanged", Some(run)));
            // the status changed in run 2 only
            assert_eq!(marked.status_since.as_deref(), Some("2024-02-01T00:00:00.000Z"), "run {run}");
        }
    }

    // Another writer moved one row on: the batch is refused whole, naming it, and nothing is written.
    let before: Vec<LedgerRow> = store.items(None, Some("m"), 1000).await.unwrap();
    let mut moved = store.item("m/77").await.unwrap().remove(0);
    let read_at = moved.revision;
    moved.attempts = 5;
    store.write_batch(&Batch { rows: vec![moved], ..Batch::default() }).await.unwrap();
    let marks: Vec<UnchangedMark> = before
        .iter()
        .map(|row| UnchangedMark {
            item_key: row.item_key.clone(),
            target: row.target.clone(),
            revision: row.revision,
            leika_key: Some("11111111111111".into()),
            updated_at: "2024-04-01T00:00:00.000Z".into(),
            last_run_id: Some(4),
        })
        .collect();
    let stale = store.write_batch(&Batch { unchanged: marks, ..Batch::default() }).await.unwrap_err();
    assert!(
        matches!(&stale, StoreError::Stale { item_key, read, now, .. } if item_key == "m/77" && *read == read_at && *now == read_at + 1),
        "{stale}"
    );
    let after: Vec<LedgerRow> = store.items(None, Some("m"), 1000).await.unwrap();
    assert_eq!(after.iter().filter(|r| r.last_run_id == Some(4)).count(), 0, "nothing of the refused batch is written");
    assert_eq!(after.len(), n);
}
