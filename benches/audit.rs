//! The audit chain's cost (issue 18), a bench target without libtest's harness.
//!
//! On SQLite, and on PostgreSQL when `PORTAL_BRIDGE_BENCH_DATABASE_URL` names a server (the bench
//! creates and drops databases `bridge_bench_<random>` on it):
//!
//! - a chain of N entries written directly with their correct hashes ([`audit::link_hash`], batched
//!   INSERTs of 2,000 rows);
//! - where `verify_chain`'s time goes, in one pass over the chain: reading the pages through sqlx
//!   (5,000 and 20,000 rows a page; not decoded; decoded by column index), building the canonical
//!   JSON (a new buffer per link, as before, and one reused buffer), SHA-256, hex (a new string per
//!   link, and compared in place), and the hash check of a page on 1 and on all threads
//!   ([`audit::first_unverified`]);
//! - `Store::verify_chain` against the loop it replaced (read a page, then `link_hash` each row in
//!   turn, one thread, kept here as the reference), alternating, three rounds each, wall and CPU
//!   seconds; on SQLite also through pools with sqlx's row channel at 50 (its default) and 5,000;
//! - appends per second: plain INSERTs against appends through the chain (`Store::append_event`:
//!   head, hash, insert; on PostgreSQL under the chain's advisory lock), one event a transaction with
//!   one appender and with two stores (two pools, as two daemons) appending at once; on PostgreSQL
//!   and 50 events a transaction (`Store::write_batch`, as the pipeline's ledger batches, against one
//!   plain multi-row INSERT).
//!
//! ```text
//! cargo bench --bench audit                  N = 1,000,000 entries, 5,000 events per appender
//! cargo bench --bench audit -- N EVENTS      other sizes
//! PORTAL_BRIDGE_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:55441/postgres cargo bench --bench audit
//! ```
//!
//! Prints one line per measurement; docs/performance.md ("The audit chain") has the numbers.

use std::time::{Duration, Instant};

use portal_bridge::domain::{Level, Stage};
use portal_bridge::store::Store;
use portal_bridge::store::audit::{self, ChainEntry, Entry};
use portal_bridge::store::ledger::Batch;
use portal_bridge::store::log::NewEvent;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor};

/// The allocator of the `portal-bridge` binary (src/main.rs), so that the timings are the product's.
#[global_allocator]
static GLOBAL: portal_bridge::alloc::Counting<mimalloc::MiMalloc> = portal_bridge::alloc::Counting(mimalloc::MiMalloc);

/// Rows per INSERT while the chain is written (11 binds each, under SQLite's 32,766).
const BATCH: usize = 2_000;

/// The page `verify_chain` reads (src/store/audit.rs), for the reference loop and the split.
const PAGE: i64 = 5_000;

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

fn entry(e: &NewEvent) -> Entry<'_> {
    Entry {
        at: &e.at,
        run_id: e.run_id,
        item_key: e.item_key.as_deref(),
        target: e.target.as_deref(),
        stage: e.stage.as_str(),
        level: e.level.as_str(),
        message: &e.message,
        actor: None,
        reason: None,
    }
}

/// A PostgreSQL server on which the bench makes its own databases.
struct PgServer {
    url: String,
}

impl PgServer {
    fn database_url(&self, name: &str) -> String {
        let mut url = url::Url::parse(&self.url).expect("PORTAL_BRIDGE_BENCH_DATABASE_URL is a URL");
        url.set_path(name);
        url.to_string()
    }

    async fn create(&self) -> (String, String) {
        let name = format!("bridge_bench_{:016x}", fastrand::u64(..));
        let mut connection = sqlx::PgConnection::connect(&self.url).await.expect("connect to the bench server");
        connection.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("CREATE DATABASE");
        let _ = connection.close().await;
        (self.database_url(&name), name)
    }

    async fn drop_database(&self, name: &str) {
        let mut connection = sqlx::PgConnection::connect(&self.url).await.expect("connect to the bench server");
        connection
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await
            .expect("DROP DATABASE");
        let _ = connection.close().await;
    }
}

/// Where a measurement runs: a fresh SQLite file or a fresh PostgreSQL database each time.
enum Backend<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a PgServer),
}

impl Backend<'_> {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// A fresh database and its URL (and the PostgreSQL database's name, to drop it afterwards).
    async fn fresh(&self) -> (String, Option<String>) {
        match self {
            Backend::Sqlite(dir) => {
                let file = dir.join(format!("bench-{:016x}.db", fastrand::u64(..)));
                (format!("sqlite://{}", file.display()), None)
            }
            Backend::Postgres(server) => {
                let (url, name) = server.create().await;
                (url, Some(name))
            }
        }
    }

    async fn done(&self, stores: &[&Store], name: Option<String>) {
        for store in stores {
            store.close().await;
        }
        if let (Backend::Postgres(server), Some(name)) = (self, name) {
            server.drop_database(&name).await;
        }
    }
}

/// Builds one multi-row INSERT of links on either backend.
macro_rules! insert_links {
    ($db:ty, $pool:expr, $rows:expr) => {{
        let mut insert = sqlx::QueryBuilder::<$db>::new(
            "INSERT INTO events (at, run_id, item_key, target, stage, level, message, actor, reason, seq, hash) ",
        );
        insert.push_values($rows, |mut b, (seq, e, hash): &(i64, NewEvent, String)| {
            b.push_bind(e.at.clone())
                .push_bind(e.run_id)
                .push_bind(e.item_key.clone())
                .push_bind(e.target.clone())
                .push_bind(e.stage.as_str())
                .push_bind(e.level.as_str())
                .push_bind(e.message.clone())
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind(*seq)
                .push_bind(hash.clone());
        });
        insert.build().execute($pool).await.expect("a batch of links");
    }};
}

/// Writes links 1..=n with their correct hashes, as the append path would have.
async fn write_chain(store: &Store, n: usize) {
    let mut prev: Option<String> = None;
    let mut seq = 0_i64;
    while (seq as usize) < n {
        let rows: Vec<(i64, NewEvent, String)> = (0..BATCH.min(n - seq as usize))
            .map(|_| {
                seq += 1;
                let e = event(seq as usize);
                let hash = audit::link_hash(seq, prev.as_deref(), &entry(&e));
                prev = Some(hash.clone());
                (seq, e, hash)
            })
            .collect();
        match store {
            Store::Sqlite(pool) => insert_links!(sqlx::Sqlite, pool, &rows),
            Store::Postgres(pool) => insert_links!(sqlx::Postgres, pool, &rows),
        }
    }
}

/// The loop `verify_chain` had before (issue 18's first version): read a page, then hash each row in
/// turn with `link_hash` (a new buffer and a new hex string per link) on the calling thread.
async fn verify_reference(store: &Store) -> u64 {
    let (mut after, mut prev, mut entries) = (i64::MIN, None::<String>, 0_u64);
    loop {
        let page = store.chain_page(after, None, PAGE).await.expect("a page");
        for row in &page {
            let seq = row.seq.expect("a chained row");
            let hash = audit::link_hash(seq, prev.as_deref(), &row.entry());
            assert_eq!(row.hash.as_deref(), Some(hash.as_str()), "the reference verifies seq {seq}");
            prev = row.hash.clone();
            entries += 1;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.id,
            _ => return entries,
        }
    }
}

/// Time spent per part of the verification, summed over the pages.
#[derive(Default)]
struct Split {
    fetch: Duration,
    json_new: Duration,
    json_reused: Duration,
    sha: Duration,
    hex_new: Duration,
    hex_in_place: Duration,
    check_one: Duration,
    check_all: Duration,
    bytes: usize,
}

/// One pass over the chain, timing each part on each page.
async fn split(store: &Store, n: usize, threads: usize) -> Split {
    let mut s = Split::default();
    let (mut after, mut prev) = (i64::MIN, None::<String>);
    let mut buf = Vec::with_capacity(512);
    loop {
        let started = Instant::now();
        let page: Vec<ChainEntry> = store.chain_page(after, None, PAGE).await.expect("a page");
        s.fetch += started.elapsed();
        let prevs: Vec<Option<&str>> = std::iter::once(prev.as_deref())
            .chain(page.iter().map(|row| row.hash.as_deref()))
            .take(page.len())
            .collect();
        let link = |i: usize, row: &ChainEntry, buf: &mut Vec<u8>| {
            audit::canonical_into(buf, row.seq.expect("a chained row"), prevs[i], &row.entry());
        };

        let started = Instant::now();
        for (i, row) in page.iter().enumerate() {
            let mut fresh = Vec::new();
            link(i, row, &mut fresh);
            std::hint::black_box(&fresh);
        }
        s.json_new += started.elapsed();

        let started = Instant::now();
        for (i, row) in page.iter().enumerate() {
            link(i, row, &mut buf);
            std::hint::black_box(&buf);
        }
        s.json_reused += started.elapsed();
        // The links' bytes one after the other, for the SHA-256 alone.
        let mut all = Vec::with_capacity(page.len() * 400);
        let mut ends = Vec::with_capacity(page.len());
        for (i, row) in page.iter().enumerate() {
            link(i, row, &mut buf);
            all.extend_from_slice(&buf);
            ends.push(all.len());
        }
        s.bytes += all.len();

        let started = Instant::now();
        let digests: Vec<[u8; 32]> = std::iter::once(0)
            .chain(ends.iter().copied())
            .zip(ends.iter().copied())
            .map(|(from, to)| Sha256::digest(&all[from..to]).into())
            .collect();
        s.sha += started.elapsed();

        let started = Instant::now();
        let same =
            digests.iter().zip(&page).filter(|(d, row)| row.hash.as_deref() == Some(hex::encode(d).as_str())).count();
        s.hex_new += started.elapsed();
        let started = Instant::now();
        let same_in_place = digests
            .iter()
            .zip(&page)
            .filter(|(d, row)| {
                let mut hex = [0_u8; 64];
                hex::encode_to_slice(d, &mut hex).expect("64 digits");
                row.hash.as_deref().map(str::as_bytes) == Some(&hex[..])
            })
            .count();
        s.hex_in_place += started.elapsed();
        assert_eq!((same, same_in_place), (page.len(), page.len()));

        let started = Instant::now();
        assert_eq!(audit::first_unverified(&page, prev.as_deref(), 1), None);
        s.check_one += started.elapsed();
        let started = Instant::now();
        assert_eq!(audit::first_unverified(&page, prev.as_deref(), threads), None);
        s.check_all += started.elapsed();

        prev = page.last().and_then(|row| row.hash.clone());
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => after = last.id,
            _ => break,
        }
    }
    let secs = |d: Duration| d.as_secs_f64();
    println!("  read the rows (sqlx, pages of {PAGE}): {:.2} s", secs(s.fetch));
    println!(
        "  canonical JSON ({} bytes a link): new buffer per link {:.2} s, one reused buffer {:.2} s",
        s.bytes / n.max(1),
        secs(s.json_new),
        secs(s.json_reused)
    );
    println!("  SHA-256: {:.2} s", secs(s.sha));
    println!("  hex: new string per link {:.2} s, compared in place {:.2} s", secs(s.hex_new), secs(s.hex_in_place));
    println!(
        "  hash check of the pages (first_unverified: JSON + SHA-256 + compare): 1 thread {:.2} s, {threads} threads {:.2} s",
        secs(s.check_one),
        secs(s.check_all)
    );
    for page in [PAGE, 4 * PAGE] {
        let cpu = cpu_seconds();
        let wall = secs(read_all(store, page).await);
        println!("  read the rows alone (sqlx, pages of {page}): {wall:.2} s (CPU {:.2} s)", cpu_seconds() - cpu);
    }
    println!(
        "  read the rows, not decoded (sqlx::query, pages of {PAGE}): {:.2} s",
        secs(read_raw(store, false).await)
    );
    println!("  read the rows, decoded by index (pages of {PAGE}): {:.2} s", secs(read_raw(store, true).await));
    s
}

/// Reads the whole chain in pages as `chain_page` does, the rows left as sqlx returns them or each
/// column decoded by its index.
async fn read_raw(store: &Store, decode: bool) -> Duration {
    use sqlx::Row;
    let sql = "SELECT id, seq, hash, at, run_id, item_key, target, stage, level, message, actor, reason \
               FROM events WHERE id > $1 AND ($2 IS NULL OR id <= $2) ORDER BY id LIMIT $3";
    let started = Instant::now();
    let mut after = i64::MIN;
    macro_rules! pages {
        ($pool:expr) => {
            loop {
                let rows =
                    sqlx::query(sql).bind(after).bind(None::<i64>).bind(PAGE).fetch_all($pool).await.expect("a page");
                if decode {
                    for row in &rows {
                        let entry = (
                            row.get::<i64, _>(0),
                            row.get::<Option<i64>, _>(1),
                            row.get::<Option<String>, _>(2),
                            row.get::<String, _>(3),
                            row.get::<Option<i64>, _>(4),
                            row.get::<Option<String>, _>(5),
                            row.get::<Option<String>, _>(6),
                            row.get::<String, _>(7),
                            row.get::<String, _>(8),
                            row.get::<String, _>(9),
                            row.get::<Option<String>, _>(10),
                            row.get::<Option<String>, _>(11),
                        );
                        std::hint::black_box(entry);
                    }
                }
                match rows.last() {
                    Some(last) if rows.len() as i64 == PAGE => after = last.get::<i64, _>(0),
                    _ => break,
                }
            }
        };
    }
    match store {
        Store::Sqlite(pool) => pages!(pool),
        Store::Postgres(pool) => pages!(pool),
    }
    started.elapsed()
}

/// Reads the whole chain in pages of `page` rows.
async fn read_all(store: &Store, page: i64) -> Duration {
    let started = Instant::now();
    let mut after = i64::MIN;
    loop {
        let rows = store.chain_page(after, None, page).await.expect("a page");
        match rows.last() {
            Some(last) if rows.len() as i64 == page => after = last.id,
            _ => return started.elapsed(),
        }
    }
}

/// CPU seconds this process has used so far, all threads (user + system, `/proc/self/stat`, at the
/// usual 100 clock ticks a second): on a shared machine steadier than wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Verifies the chain of `n` links with `verify_chain` and the reference loop, alternating.
async fn verify(backend: &Backend<'_>, n: usize) {
    let (url, name) = backend.fresh().await;
    let store = Store::open(&url).await.expect("store opens");
    let started = Instant::now();
    write_chain(&store, n).await;
    let label = backend.name();
    println!("{label}: write {n} links directly (hash + batched INSERT): {:.2} s", started.elapsed().as_secs_f64());
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!("{label}: where the time goes, one pass:");
    split(&store, n, threads).await;
    for round in 1..=3 {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        assert_eq!(verify_reference(&store).await, n as u64);
        let (before, before_cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let report = store.verify_chain(None).await.expect("verifies");
        let (after, after_cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        assert!(report.broken.is_none() && report.entries == n as u64, "{report:?}");
        println!(
            "{label}: verify {n} entries, round {round}: reference loop {before:.2} s ({:.0}/s, CPU {before_cpu:.2} s), verify_chain {after:.2} s ({:.0}/s, CPU {after_cpu:.2} s), {:.1}x",
            n as f64 / before,
            n as f64 / after,
            before / after
        );
    }
    if let Backend::Sqlite(_) = backend {
        // sqlx hands SQLite's rows from its worker thread over a channel of 50 rows by default
        // (`SqliteConnectOptions::row_buffer_size`); the same chain through a pool with a larger one.
        for rows in [50, PAGE as usize] {
            let options =
                url.parse::<sqlx::sqlite::SqliteConnectOptions>().expect("a sqlite url").row_buffer_size(rows);
            let pool =
                sqlx::sqlite::SqlitePoolOptions::new().max_connections(4).connect_with(options).await.expect("pool");
            let other = Store::Sqlite(pool);
            let (started, cpu) = (Instant::now(), cpu_seconds());
            let report = other.verify_chain(None).await.expect("verifies");
            assert!(report.broken.is_none() && report.entries == n as u64, "{report:?}");
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{label}: verify_chain through a pool with row_buffer_size {rows}: {secs:.2} s ({:.0}/s, CPU {:.2} s)",
                n as f64 / secs,
                cpu_seconds() - cpu
            );
            other.close().await;
        }
    }
    backend.done(&[&store], name).await;
}

/// Events in one write transaction without the chain, in one multi-row INSERT as the chain's
/// `append_all` writes a batch (so that the two differ only by the chain: head, hashes, lock).
async fn plain_insert(store: &Store, events: &[NewEvent]) {
    macro_rules! insert {
        ($tx:expr, $db:ty) => {{
            let mut tx = $tx;
            let mut insert = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO events (at, run_id, item_key, target, stage, level, message) ",
            );
            insert.push_values(events, |mut row, e| {
                row.push_bind(&e.at)
                    .push_bind(e.run_id)
                    .push_bind(&e.item_key)
                    .push_bind(&e.target)
                    .push_bind(e.stage.as_str())
                    .push_bind(e.level.as_str())
                    .push_bind(&e.message);
            });
            insert.build().execute(&mut *tx).await.expect("insert");
            tx.commit().await.expect("commit");
        }};
    }
    match store {
        Store::Sqlite(pool) => {
            insert!(pool.begin_with("BEGIN IMMEDIATE").await.expect("write transaction"), sqlx::Sqlite)
        }
        Store::Postgres(pool) => insert!(pool.begin().await.expect("transaction"), sqlx::Postgres),
    }
}

/// `count` events from each of `appenders` stores at once, `batch` events a transaction (plain, or
/// through the chain: `append_event`, or `write_batch` as the pipeline's ledger batches); the events
/// per second of each appender.
async fn appends(backend: &Backend<'_>, appenders: usize, count: usize, batch: usize, chained: bool) -> Vec<f64> {
    let (url, name) = backend.fresh().await;
    let mut stores = Vec::new();
    for _ in 0..appenders {
        stores.push(Store::open(&url).await.expect("store opens"));
    }
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .enumerate()
        .map(|(a, store)| {
            tokio::spawn(async move {
                let started = Instant::now();
                for first in (1..=count).step_by(batch) {
                    let events: Vec<NewEvent> =
                        (first..=count.min(first + batch - 1)).map(|k| event(a * 10_000_000 + k)).collect();
                    match (chained, events.as_slice()) {
                        (false, _) => plain_insert(&store, &events).await,
                        (true, [one]) => store.append_event(one).await.expect("append"),
                        (true, _) => store.write_batch(&Batch { events, ..Batch::default() }).await.expect("append"),
                    }
                }
                count as f64 / started.elapsed().as_secs_f64()
            })
        })
        .collect();
    let mut rates = Vec::new();
    for task in tasks {
        rates.push(task.await.expect("appender"));
    }
    if chained {
        let report = stores[0].verify_chain(None).await.expect("verifies");
        assert!(report.broken.is_none() && report.entries == (appenders * count) as u64, "{report:?}");
    }
    backend.done(&stores.iter().collect::<Vec<_>>(), name).await;
    rates
}

async fn append_rates(backend: &Backend<'_>, count: usize, runs: &[(usize, usize)]) {
    let label = backend.name();
    for &(appenders, batch) in runs {
        let plain = appends(backend, appenders, count, batch, false).await;
        let chained = appends(backend, appenders, count, batch, true).await;
        let total = |rates: &[f64]| rates.iter().sum::<f64>();
        let each = |rates: &[f64]| rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" + ");
        println!(
            "{label}: appends, {batch} event(s) a transaction, {appenders} appender(s) x {count} events: plain INSERT {} = {:.0}/s, through the chain {} = {:.0}/s (chained/plain {:.2})",
            each(&plain),
            total(&plain),
            each(&chained),
            total(&chained),
            total(&chained) / total(&plain)
        );
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let count = args.get(1).copied().unwrap_or(5_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = std::env::var("PORTAL_BRIDGE_BENCH_DATABASE_URL").ok().map(|url| PgServer { url });
    runtime.block_on(async {
        let sqlite = Backend::Sqlite(dir.path());
        verify(&sqlite, n).await;
        if let Some(server) = &pg {
            verify(&Backend::Postgres(server), n).await;
        }
        append_rates(&sqlite, count, &[(1, 1), (2, 1), (1, 50), (2, 50)]).await;
        if let Some(server) = &pg {
            append_rates(&Backend::Postgres(server), count, &[(1, 1), (2, 1), (1, 50), (2, 50)]).await;
        }
    });
}
