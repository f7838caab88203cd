//! The audit chain's cost (issue 18), a bench target without libtest's harness:
//! `Store::verify_chain` over a chain of N entries on SQLite (written directly with their correct
//! hashes, [`audit::link_hash`], in batches of 2,000 rows), and appends per second through the chain
//! (`Store::append_event`: a write transaction reading the head, hashing and inserting) against plain
//! inserts of the same rows, each in a write transaction of its own, on fresh databases.
//!
//! ```text
//! cargo bench --bench audit                  N = 1,000,000 entries, 5,000 appends each way
//! cargo bench --bench audit -- N APPENDS     other sizes
//! ```
//!
//! Prints one line per measurement; docs/performance.md ("The audit chain") has the numbers.

use std::time::Instant;

use portal_bridge::domain::{Level, Stage};
use portal_bridge::store::Store;
use portal_bridge::store::audit::{self, Entry};
use portal_bridge::store::log::NewEvent;

/// The allocator of the `portal-bridge` binary (src/main.rs), so that the timings are the product's.
#[global_allocator]
static GLOBAL: portal_bridge::alloc::Counting<mimalloc::MiMalloc> = portal_bridge::alloc::Counting(mimalloc::MiMalloc);

/// Rows per INSERT while the chain is written (11 binds each, under SQLite's 32,766).
const BATCH: usize = 2_000;

fn event(n: usize) -> NewEvent {
    NewEvent {
        at: format!("2026-12-07T10:{:02}:{:02}.{:03}Z", (n / 60_000) % 60, (n / 1000) % 60, n % 1000),
        run_id: None,
        item_key: Some(format!("aachen-forms/S{:08}@1.0", n % 50_000)),
        target: Some("form-platform".into()),
        stage: Stage::Deliver,
        level: Level::Info,
        message: format!("updated: delivered to form-platform as version {n}"),
    }
}

async fn fresh(dir: &std::path::Path, name: &str) -> (Store, sqlx::SqlitePool) {
    let store = Store::open(&format!("sqlite://{}", dir.join(name).display())).await.expect("store opens");
    let pool = match &store {
        Store::Sqlite(pool) => pool.clone(),
        Store::Postgres(_) => unreachable!("a sqlite:// url"),
    };
    (store, pool)
}

/// Writes links 1..=n with their correct hashes, as the append path would have.
async fn write_chain(pool: &sqlx::SqlitePool, n: usize) {
    let mut prev: Option<String> = None;
    let mut seq = 0_i64;
    while (seq as usize) < n {
        let rows: Vec<(i64, NewEvent, String)> = (0..BATCH.min(n - seq as usize))
            .map(|_| {
                seq += 1;
                let e = event(seq as usize);
                let entry = Entry {
                    at: &e.at,
                    run_id: e.run_id,
                    item_key: e.item_key.as_deref(),
                    target: e.target.as_deref(),
                    stage: e.stage.as_str(),
                    level: e.level.as_str(),
                    message: &e.message,
                    actor: None,
                    reason: None,
                };
                let hash = audit::link_hash(seq, prev.as_deref(), &entry);
                prev = Some(hash.clone());
                (seq, e, hash)
            })
            .collect();
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (at, run_id, item_key, target, stage, level, message, actor, reason, seq, hash) ",
        );
        insert.push_values(&rows, |mut b, (seq, e, hash)| {
            b.push_bind(&e.at)
                .push_bind(e.run_id)
                .push_bind(&e.item_key)
                .push_bind(&e.target)
                .push_bind(e.stage.as_str())
                .push_bind(e.level.as_str())
                .push_bind(&e.message)
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind(*seq)
                .push_bind(hash);
        });
        insert.build().execute(pool).await.expect("a batch of links");
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let appends = args.get(1).copied().unwrap_or(5_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let (store, pool) = fresh(dir.path(), "chain.db").await;
        let started = Instant::now();
        write_chain(&pool, n).await;
        println!("write {n} links directly (hash + batched INSERT): {:.2} s", started.elapsed().as_secs_f64());
        for round in 1..=3 {
            let started = Instant::now();
            let report = store.verify_chain(None).await.expect("verifies");
            let secs = started.elapsed().as_secs_f64();
            assert!(report.broken.is_none() && report.entries == n as u64, "{report:?}");
            println!(
                "verify_chain over {n} entries, round {round}: {secs:.2} s ({:.0} entries/s)",
                n as f64 / secs
            );
        }

        let (chained, _) = fresh(dir.path(), "chained.db").await;
        let started = Instant::now();
        for k in 1..=appends {
            chained.append_event(&event(k)).await.expect("append");
        }
        let with_chain = appends as f64 / started.elapsed().as_secs_f64();
        let (_, plain) = fresh(dir.path(), "plain.db").await;
        let sql = "INSERT INTO events (at, run_id, item_key, target, stage, level, message) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let started = Instant::now();
        for k in 1..=appends {
            let e = event(k);
            let mut tx = plain.begin_with("BEGIN IMMEDIATE").await.expect("write transaction");
            sqlx::query(sql)
                .bind(&e.at)
                .bind(e.run_id)
                .bind(&e.item_key)
                .bind(&e.target)
                .bind(e.stage.as_str())
                .bind(e.level.as_str())
                .bind(&e.message)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tx.commit().await.expect("commit");
        }
        let without = appends as f64 / started.elapsed().as_secs_f64();
        println!(
            "appends, one transaction each ({appends}): with the chain {with_chain:.0}/s, plain INSERT {without:.0}/s (ratio {:.2})",
            without / with_chain
        );
    });
}
