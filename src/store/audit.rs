//! The audit chain: every event of the migration log is appended as a link of one SHA-256 hash chain
//! (through [`Chained::append_chained`] only), and [`Store::verify_chain`] recomputes it.
//!
//! A link's hash is the hex SHA-256 of its canonical serialisation: compact JSON (no spaces, UTF-8,
//! serde_json's escaping, which Python's `json.dumps(…, ensure_ascii=False, separators=(",", ":"))`
//! matches) of an object with exactly these keys in this order:
//! `seq, prev, at, run_id, item_key, target, stage, level, message, actor, reason`, where `prev` is
//! the previous link's hash (`null` for seq 1) and absent values are `null`. docs/audit.md has the
//! procedure an auditor follows.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Store, StoreError, on_pool};

/// The key of PostgreSQL's transaction-level advisory lock that serialises appends to the chain
/// ("pbaudit" in ASCII): held from reading the head until the appending transaction ends.
const CHAIN_LOCK: i64 = 0x0070_6261_7564_6974;

/// An event as it is stored and hashed (free text already as [`super::text`] stores it).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub at: &'a str,
    pub run_id: Option<i64>,
    pub item_key: Option<&'a str>,
    pub target: Option<&'a str>,
    pub stage: &'a str,
    pub level: &'a str,
    pub message: &'a str,
    pub actor: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// The canonical serialisation of a link (field order is part of the format).
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    prev: Option<&'a str>,
    at: &'a str,
    run_id: Option<i64>,
    item_key: Option<&'a str>,
    target: Option<&'a str>,
    stage: &'a str,
    level: &'a str,
    message: &'a str,
    actor: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> Canonical<'a> {
    /// Link `seq` holding `entry` after the link whose hash is `prev`.
    fn of(seq: i64, prev: Option<&'a str>, entry: &Entry<'a>) -> Self {
        Self {
            seq,
            prev,
            at: entry.at,
            run_id: entry.run_id,
            item_key: entry.item_key,
            target: entry.target,
            stage: entry.stage,
            level: entry.level,
            message: entry.message,
            actor: entry.actor,
            reason: entry.reason,
        }
    }
}

/// Writes the canonical serialisation of link `seq` holding `entry` after the link whose hash is
/// `prev` into `out` (cleared first, so one buffer serves many links).
pub fn canonical_into(out: &mut Vec<u8>, seq: i64, prev: Option<&str>, entry: &Entry<'_>) {
    out.clear();
    serde_json::to_writer(&mut *out, &Canonical::of(seq, prev, entry)).expect("plain strings and numbers serialise");
}

/// The hex SHA-256 of link `seq` holding `entry` after the link whose hash is `prev`.
pub fn link_hash(seq: i64, prev: Option<&str>, entry: &Entry<'_>) -> String {
    let mut bytes = Vec::with_capacity(256);
    canonical_into(&mut bytes, seq, prev, entry);
    hex::encode(Sha256::digest(&bytes))
}

/// True if `stored` (hex, as the events table holds it) is [`link_hash`] of link `seq` holding
/// `entry` after `prev`, serialising into `buf` and comparing without allocating a string.
pub fn link_matches(buf: &mut Vec<u8>, seq: i64, prev: Option<&str>, entry: &Entry<'_>, stored: &str) -> bool {
    canonical_into(buf, seq, prev, entry);
    let mut hex = [0_u8; 64];
    hex::encode_to_slice(Sha256::digest(buf.as_slice()), &mut hex).expect("a SHA-256 is 64 hex digits");
    stored.as_bytes() == hex
}

const HEAD: &str = "SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1";

/// Appending an event to the chain inside the caller's write transaction: the one way an event is
/// written. The caller's transaction must be a write transaction (SQLite: `BEGIN IMMEDIATE`, which
/// excludes every other writer); on PostgreSQL the chain's advisory lock is taken here and held
/// until the transaction ends, so callers append their events last (nothing that waits for another
/// lock may follow, or two transactions could wait for each other).
pub(crate) trait Chained {
    /// Reads the head, hashes `entries` as the next links in order and inserts them (one INSERT
    /// per [`ROWS_PER_INSERT`] rows, so a batch holds PostgreSQL's lock for a few round trips, not
    /// two per event); returns the new head (none for no entries).
    async fn append_all(&mut self, entries: &[Entry<'_>]) -> Result<Option<ChainHead>, sqlx::Error>;

    /// [`Chained::append_all`] of one entry.
    async fn append_chained(&mut self, entry: &Entry<'_>) -> Result<ChainHead, sqlx::Error> {
        Ok(self.append_all(std::slice::from_ref(entry)).await?.expect("one link was appended"))
    }
}

/// Rows per INSERT of a batch of links (11 binds each: under SQLite's 32,766 and PostgreSQL's
/// 65,535 bind parameters).
const ROWS_PER_INSERT: usize = 1000;

/// Head, hashes and multi-row inserts on a connection of either backend.
macro_rules! append_links {
    ($conn:expr, $entries:expr, $db:ty) => {{
        if $entries.is_empty() {
            return Ok(None);
        }
        let head: Option<(i64, String)> = sqlx::query_as(HEAD).fetch_optional(&mut *$conn).await?;
        let (mut seq, mut prev) = head.map_or((0, None), |(seq, hash)| (seq, Some(hash)));
        let mut links = Vec::with_capacity($entries.len());
        for entry in $entries {
            seq += 1;
            let hash = link_hash(seq, prev.as_deref(), entry);
            links.push((entry, seq, hash.clone()));
            prev = Some(hash);
        }
        for chunk in links.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO events (at, run_id, item_key, target, stage, level, message, actor, reason, seq, hash) ",
            );
            insert.push_values(chunk, |mut row, (entry, seq, hash)| {
                row.push_bind(entry.at)
                    .push_bind(entry.run_id)
                    .push_bind(entry.item_key)
                    .push_bind(entry.target)
                    .push_bind(entry.stage)
                    .push_bind(entry.level)
                    .push_bind(entry.message)
                    .push_bind(entry.actor)
                    .push_bind(entry.reason)
                    .push_bind(*seq)
                    .push_bind(hash.as_str());
            });
            insert.build().execute(&mut *$conn).await?;
        }
        Ok(prev.map(|hash| ChainHead { seq, hash }))
    }};
}

impl Chained for sqlx::SqliteConnection {
    async fn append_all(&mut self, entries: &[Entry<'_>]) -> Result<Option<ChainHead>, sqlx::Error> {
        append_links!(self, entries, sqlx::Sqlite)
    }
}

impl Chained for sqlx::PgConnection {
    async fn append_all(&mut self, entries: &[Entry<'_>]) -> Result<Option<ChainHead>, sqlx::Error> {
        if entries.is_empty() {
            return Ok(None);
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *self).await?;
        append_links!(self, entries, sqlx::Postgres)
    }
}

/// The last link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// How the chain was found broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The entry's content (or its hash) is not what was appended.
    Changed,
    /// Links are missing: the entry follows a gap in seq.
    Removed,
    /// The entry was never appended through the chain (no seq, or a position another entry holds).
    Inserted,
    /// The entry stands before a link that should precede it.
    Reordered,
}

impl BreakKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Changed => "changed",
            BreakKind::Removed => "removed",
            BreakKind::Inserted => "inserted",
            BreakKind::Reordered => "reordered",
        }
    }
}

/// The first place where the chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub kind: BreakKind,
    /// The event id (as `log` shows it) of the entry named.
    pub id: i64,
    /// Its seq as stored (none for an entry without one).
    pub seq: Option<i64>,
    /// What was found, in words.
    pub detail: String,
}

/// What [`Store::verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Links verified (up to the break, if any).
    pub entries: u64,
    /// Events from before the chain (no seq, before its first link): not covered.
    pub before_chain: u64,
    /// The last verified link.
    pub head: Option<ChainHead>,
    pub broken: Option<ChainBreak>,
    /// What was pruned before the first remaining link (the checkpoint the chain starts from).
    pub pruned: Option<super::retention::Pruned>,
}

/// An event as the chain holds it (the form of an export's lines, docs/audit.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ChainEntry {
    pub id: i64,
    pub seq: Option<i64>,
    pub hash: Option<String>,
    pub at: String,
    pub run_id: Option<i64>,
    pub item_key: Option<String>,
    pub target: Option<String>,
    pub stage: String,
    pub level: String,
    pub message: String,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

impl ChainEntry {
    /// The entry as it is hashed.
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            at: &self.at,
            run_id: self.run_id,
            item_key: self.item_key.as_deref(),
            target: self.target.as_deref(),
            stage: &self.stage,
            level: &self.level,
            message: &self.message,
            actor: self.actor.as_deref(),
            reason: self.reason.as_deref(),
        }
    }

    /// True if the row holds link `seq` after `prev` as appended.
    fn verifies(&self, seq: i64, prev: Option<&str>) -> bool {
        self.seq == Some(seq) && self.hash.as_deref() == Some(link_hash(seq, prev, &self.entry()).as_str())
    }
}

/// Rows read per query while verifying.
const PAGE: i64 = 5000;

/// The position of the first row in `rows` that is not the link its stored seq names after the
/// stored hash of the row before it (`prev` for the first row): no seq or hash, or a hash that is not
/// the hash of its content. Each link needs only the stored hash before it, so the rows are checked
/// in `threads` chunks at once; of several bad rows the lowest position is returned. The caller
/// still checks the order of seqs (and that the prev it expects is the one assumed here).
pub fn first_unverified(rows: &[ChainEntry], prev: Option<&str>, threads: usize) -> Option<usize> {
    let threads = threads.clamp(1, rows.len().max(1));
    let chunk = rows.len().div_ceil(threads).max(1);
    let check = |start: usize| -> Option<usize> {
        let mut buf = Vec::with_capacity(512);
        let mut prev = if start == 0 { prev } else { rows[start - 1].hash.as_deref() };
        for (i, row) in rows.iter().enumerate().skip(start).take(chunk) {
            let (Some(seq), Some(hash)) = (row.seq, row.hash.as_deref()) else { return Some(i) };
            if !link_matches(&mut buf, seq, prev, &row.entry(), hash) {
                return Some(i);
            }
            prev = Some(hash);
        }
        None
    };
    if threads == 1 {
        return check(0);
    }
    std::thread::scope(|scope| {
        let checks: Vec<_> = (1..threads).map(|t| scope.spawn(move || check(t * chunk))).collect();
        // The first chunk on this thread; then the others in order, so the lowest bad row wins.
        check(0).or_else(|| {
            checks.into_iter().map(|c| c.join().expect("the hash check does not panic")).find_map(|bad| bad)
        })
    })
}

impl Store {
    /// The chain's head (none before the first chained event).
    pub async fn chain_head(&self) -> Result<Option<ChainHead>, StoreError> {
        let head: Option<(i64, String)> = on_pool!(self, pool => sqlx::query_as(HEAD).fetch_optional(pool).await?);
        Ok(head.map(|(seq, hash)| ChainHead { seq, hash }))
    }

    /// Recomputes the chain in the order the events were stored (by id) from event `since` (the
    /// whole chain without it; the link before `since` is then taken as it is stored) and reports
    /// the first entry that was changed, removed, inserted or reordered.
    pub async fn verify_chain(&self, since: Option<i64>) -> Result<ChainReport, StoreError> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut report = ChainReport { entries: 0, before_chain: 0, head: None, broken: None, pruned: None };
        let mut page = self.link_page(since.map_or(i64::MIN, |s| s - 1)).await?;
        // The stored hash of the row before `page` (what the hash check assumes as its prev).
        let mut carried: Option<String> = None;
        // The next seq expected and the hash it links to; None until the chain's first link.
        let mut expected: Option<(i64, Option<String>)> = None;
        while !page.is_empty() {
            // Hash this page on other threads while the next one is read.
            let exhausted = (page.len() as i64) < PAGE;
            let after = page.last().map_or(i64::MAX, |row| row.id);
            let check = tokio::task::spawn_blocking(move || {
                let bad = first_unverified(&page, carried.as_deref(), threads);
                (page, carried, bad)
            });
            let (next, checked) =
                tokio::join!(async { if exhausted { Ok(Vec::new()) } else { self.link_page(after).await } }, check);
            let (page_now, carried_now, first_bad) = checked.expect("the hash check does not panic");
            let next = next?;
            // Index in `page_now` of the last verified link (its hash is the next one's prev).
            let mut last: Option<usize> = None;
            // The prev of the chain's first link, if it starts in this page (with `since`: as stored).
            let mut start_prev: Option<String>;
            for (i, row) in page_now.iter().enumerate() {
                let (seq, prev) = match (&expected, row.seq) {
                    (None, None) => {
                        report.before_chain += 1;
                        continue;
                    }
                    (None, Some(first)) => {
                        // The chain's start: seq 1, or with `since` the stored link before it, or
                        // after a prune the checkpoint's hash (src/store/retention.rs).
                        start_prev = None;
                        if first > 1 {
                            match self.chain_start(row, first, since.is_some()).await? {
                                Ok((hash, pruned)) => (start_prev, report.pruned) = (hash, pruned),
                                Err(broken) => {
                                    report.broken = Some(broken);
                                    break;
                                }
                            }
                        }
                        (first, start_prev.as_deref())
                    }
                    (Some(_), None) => {
                        report.broken = Some(ChainBreak {
                            kind: BreakKind::Inserted,
                            id: row.id,
                            seq: None,
                            detail: format!("event {} has no place in the chain (no seq, no hash)", row.id),
                        });
                        break;
                    }
                    (Some((want, prev)), Some(_)) => {
                        (*want, last.map_or(prev.as_deref(), |j| page_now[j].hash.as_deref()))
                    }
                };
                let stored = row.seq.expect("rows without seq are handled above");
                if stored > seq {
                    report.broken = Some(self.gap(row, seq).await?);
                    break;
                }
                if stored < seq {
                    report.broken = Some(ChainBreak {
                        kind: BreakKind::Inserted,
                        id: row.id,
                        seq: Some(stored),
                        detail: format!("event {} claims seq {stored}, which an earlier entry holds", row.id),
                    });
                    break;
                }
                // The parallel check's answer holds where it assumed the prev expected here.
                let assumed = if i == 0 { carried_now.as_deref() } else { page_now[i - 1].hash.as_deref() };
                let known = match first_bad {
                    _ if assumed != prev => None,
                    Some(bad) if i > bad => None,
                    bad => Some(bad != Some(i)),
                };
                if !known.unwrap_or_else(|| row.verifies(seq, prev)) {
                    // A foreign row given the next position: the genuine link follows it.
                    let following = page_now.get(i + 1).or(next.first());
                    let inserted = following.is_some_and(|next| next.verifies(seq, prev));
                    report.broken = Some(if inserted {
                        ChainBreak {
                            kind: BreakKind::Inserted,
                            id: row.id,
                            seq: Some(stored),
                            detail: format!(
                                "event {} claims seq {seq}, which event {} holds",
                                row.id,
                                following.map_or(0, |next| next.id)
                            ),
                        }
                    } else {
                        ChainBreak {
                            kind: BreakKind::Changed,
                            id: row.id,
                            seq: Some(stored),
                            detail: format!(
                                "event {} (seq {seq}) does not hash to its stored hash: it was changed after it was appended",
                                row.id
                            ),
                        }
                    });
                    break;
                }
                report.entries += 1;
                last = Some(i);
                expected = Some((seq + 1, None));
            }
            // The last verified link is the head (also when the chain broke after it in this page).
            if let Some(i) = last {
                let row = &page_now[i];
                let hash = row.hash.clone().expect("a verified row has its hash");
                let seq = row.seq.expect("a verified row has its seq");
                report.head = Some(ChainHead { seq, hash: hash.clone() });
                expected = Some((seq + 1, Some(hash)));
            }
            if report.broken.is_some() {
                break;
            }
            carried = page_now.last().and_then(|row| row.hash.clone());
            page = next;
        }
        Ok(report)
    }

    /// Why link `want` is not where `row` stands: removed (no event holds it) or reordered.
    pub(super) async fn gap(&self, row: &ChainEntry, want: i64) -> Result<ChainBreak, StoreError> {
        let stored = row.seq.unwrap_or_default();
        let elsewhere: Option<i64> = on_pool!(self, pool => sqlx::query_scalar("SELECT id FROM events WHERE seq = $1")
            .bind(want)
            .fetch_optional(pool)
            .await?);
        Ok(match elsewhere {
            Some(other) => ChainBreak {
                kind: BreakKind::Reordered,
                id: row.id,
                seq: Some(stored),
                detail: format!("event {} (seq {stored}) stands before event {other} (seq {want})", row.id),
            },
            None => ChainBreak {
                kind: BreakKind::Removed,
                id: row.id,
                seq: Some(stored),
                detail: if stored - want == 1 {
                    format!("seq {want} is missing before event {} (seq {stored}): it was removed", row.id)
                } else {
                    format!(
                        "seq {want} to {} are missing before event {} (seq {stored}): they were removed",
                        stored - 1,
                        row.id
                    )
                },
            },
        })
    }

    /// The stored hash of link `seq`.
    pub async fn hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_scalar("SELECT hash FROM events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(pool)
            .await?)
        .flatten())
    }

    async fn link_page(&self, after: i64) -> Result<Vec<ChainEntry>, StoreError> {
        self.chain_page(after, None, PAGE).await
    }

    /// Up to `limit` events after event id `after` (up to `until`, inclusive), in the order stored.
    pub async fn chain_page(&self, after: i64, until: Option<i64>, limit: i64) -> Result<Vec<ChainEntry>, StoreError> {
        let sql = "SELECT id, seq, hash, at, run_id, item_key, target, stage, level, message, actor, reason \
                   FROM events WHERE id > $1 AND ($2 IS NULL OR id <= $2) ORDER BY id LIMIT $3";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(after).bind(until).bind(limit).fetch_all(pool).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_is_compact_json_in_fixed_order() {
        let entry = Entry {
            at: "2026-12-07T14:00:00.000Z",
            run_id: Some(7),
            item_key: Some("aachen/ä\"1"),
            target: None,
            stage: "operator",
            level: "info",
            message: "line\nnext",
            actor: Some("anna"),
            reason: None,
        };
        let canonical = Canonical::of(2, Some("ab"), &entry);
        assert_eq!(
            serde_json::to_string(&canonical).unwrap(),
            r#"{"seq":2,"prev":"ab","at":"2026-12-07T14:00:00.000Z","run_id":7,"item_key":"aachen/ä\"1","target":null,"stage":"operator","level":"info","message":"line\nnext","actor":"anna","reason":null}"#
        );
        let hash = link_hash(2, Some("ab"), &entry);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, link_hash(2, Some("ac"), &entry), "the previous link's hash is part of the hash");
        assert_ne!(hash, link_hash(3, Some("ab"), &entry), "the position is part of the hash");
    }

    /// Links 1..=n as they are stored, each with its correct hash.
    fn chain(n: i64) -> Vec<ChainEntry> {
        let mut prev: Option<String> = None;
        (1..=n)
            .map(|seq| {
                let mut row = ChainEntry {
                    id: seq + 100,
                    seq: Some(seq),
                    hash: None,
                    at: format!("2026-12-07T10:00:{:02}.000Z", seq % 60),
                    run_id: Some(seq / 10),
                    item_key: Some(format!("aachen/S{seq:08}@1.0")),
                    target: (seq % 2 == 0).then(|| "form-platform".to_string()),
                    stage: "deliver".into(),
                    level: "info".into(),
                    message: format!("delivered ä \"{seq}\"\n"),
                    actor: None,
                    reason: None,
                };
                row.hash = Some(link_hash(seq, prev.as_deref(), &row.entry()));
                prev = row.hash.clone();
                row
            })
            .collect()
    }

    #[test]
    fn link_matches_agrees_with_link_hash() {
        let rows = chain(3);
        let mut buf = Vec::new();
        let (seq, prev) = (3, rows[1].hash.as_deref());
        assert!(link_matches(&mut buf, seq, prev, &rows[2].entry(), rows[2].hash.as_deref().unwrap()));
        assert!(!link_matches(
            &mut buf,
            seq,
            rows[0].hash.as_deref(),
            &rows[2].entry(),
            rows[2].hash.as_deref().unwrap()
        ));
        assert!(!link_matches(&mut buf, seq, prev, &rows[2].entry(), &rows[2].hash.as_deref().unwrap().to_uppercase()));
    }

    #[test]
    fn the_parallel_check_finds_the_lowest_bad_link_in_any_chunk() {
        let rows = chain(40);
        for threads in [1, 2, 3, 4, 64] {
            assert_eq!(first_unverified(&rows, None, threads), None, "{threads} threads");
        }
        // A changed message in the middle (of the page, and of the second of two chunks: 20..40).
        let mut changed = rows.clone();
        changed[27].message.push('!');
        for threads in [1, 2, 3, 4] {
            assert_eq!(first_unverified(&changed, None, threads), Some(27), "{threads} threads");
        }
        // At the boundary between two chunks, and a later one in another chunk: the lowest wins.
        let mut two = rows.clone();
        two[20].level = "warn".into();
        two[33].hash = Some("0".repeat(64));
        for threads in [1, 2, 3, 4, 40] {
            assert_eq!(first_unverified(&two, None, threads), Some(20), "{threads} threads");
        }
        // A row without a hash in the first chunk and a wrong seq in a later one: the lower wins.
        let mut both = rows.clone();
        both[5].hash = None;
        both[30].seq = Some(99);
        for threads in [1, 2, 4] {
            assert_eq!(first_unverified(&both, None, threads), Some(5), "{threads} threads");
        }
        // A row whose hash was recomputed after an edit: its own hash matches, the next row's prev does not.
        let mut rehashed = rows.clone();
        rehashed[19].message = "edited".into();
        rehashed[19].hash = Some(link_hash(20, rows[18].hash.as_deref(), &rehashed[19].entry()));
        for threads in [1, 2, 3] {
            assert_eq!(first_unverified(&rehashed, None, threads), Some(20), "{threads} threads");
        }
    }

    #[test]
    fn the_parallel_check_links_a_page_to_the_stored_hash_before_it() {
        let rows = chain(30);
        let (first, second) = rows.split_at(15);
        let carried = first.last().and_then(|row| row.hash.as_deref());
        assert_eq!(first_unverified(second, carried, 2), None);
        // The first row of a page checked against another prev (the page before it ends differently).
        assert_eq!(first_unverified(second, first[13].hash.as_deref(), 2), Some(0));
        // A bad row at the page's start, and one at its end.
        let mut start = second.to_vec();
        start[0].actor = Some("mallory".into());
        start[14].actor = Some("mallory".into());
        for threads in [1, 2, 3] {
            assert_eq!(first_unverified(&start, carried, threads), Some(0), "{threads} threads");
        }
        let mut end = second.to_vec();
        end[14].reason = Some("why".into());
        assert_eq!(first_unverified(&end, carried, 2), Some(14));
        assert_eq!(first_unverified(&[], carried, 2), None);
    }
}
