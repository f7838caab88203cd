//! Retention of the audit chain: pruning its oldest links behind a checkpoint link that states what
//! was removed (`audit prune`), and where [`Store::verify_chain`] starts after a prune.
//!
//! A prune removes links 1 (or the first remaining one) to N, N being the last link before the date
//! (never the head), and the events from before the chain older than the date; in the same
//! transaction it appends a checkpoint link whose message states through which seq and hash it
//! pruned, and a row of `audit_checkpoints` with the same facts. The hash of link N commits to
//! every pruned link, so the first remaining link still verifies against it (docs/audit.md).

use serde::Serialize;

use super::audit::{BreakKind, ChainBreak, ChainEntry, ChainHead, Chained, Entry};
use super::{BeginWrite, Store, StoreError, on_pool, text};
use crate::domain::{Level, Stage};

/// What was pruned, as `audit verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub through_seq: i64,
    pub through_hash: String,
    pub count: i64,
    /// When the prune was made.
    pub at: String,
    pub actor: String,
}

/// A row of `audit_checkpoints`: one prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Checkpoint {
    /// The last link pruned.
    pub through_seq: i64,
    /// Its hash: the `prev` of the first remaining link.
    pub through_hash: String,
    /// Links pruned.
    pub pruned_count: i64,
    /// `at` of the first and of the last link pruned.
    pub first_at: String,
    pub last_at: String,
    /// The checkpoint link's seq.
    pub checkpoint_seq: i64,
    /// The hex SHA-256 of the archive written before the prune, if one was.
    pub archive_sha256: Option<String>,
    pub at: String,
    pub actor: String,
    pub reason: String,
}

impl Checkpoint {
    /// The words of a checkpoint link's message that commit it to its row: verify looks for them.
    pub fn states(through_seq: i64, through_hash: &str) -> String {
        format!("through seq {through_seq} (hash {through_hash})")
    }
}

/// What a prune before a date removes (read before it, checked again in its transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneRange {
    /// The stored form of the date: links and events with `at` before it.
    pub before: String,
    /// The first link there is now and the last link to prune (its event id and hash).
    pub first_seq: i64,
    pub through_seq: i64,
    pub through_id: i64,
    pub through_hash: String,
    /// Links pruned, and events from before the chain pruned with them.
    pub count: i64,
    pub before_chain: i64,
    pub first_at: String,
    pub last_at: String,
    /// The chain's head when the range was read.
    pub head: ChainHead,
}

/// Who prunes, when and why, and the archive's SHA-256 if one was written.
#[derive(Debug, Clone, Copy)]
pub struct SignOff<'a> {
    pub at: &'a str,
    pub actor: &'a str,
    pub reason: &'a str,
    pub archive_sha256: Option<&'a str>,
}

const CHECKPOINT_COLUMNS: &str =
    "through_seq, through_hash, pruned_count, first_at, last_at, checkpoint_seq, archive_sha256, at, actor, reason";

/// The checkpoint link's message: what was pruned, stated so that verify finds [`Checkpoint::states`].
fn checkpoint_message(range: &PruneRange, sign: &SignOff<'_>) -> String {
    let before_chain = match range.before_chain {
        0 => String::new(),
        n => format!(" and {n} events from before the chain"),
    };
    format!(
        "audit chain pruned by {} {}: {} entries from {} to {}{before_chain}; archive sha256 {}",
        sign.actor,
        Checkpoint::states(range.through_seq, &range.through_hash),
        range.count,
        range.first_at,
        range.last_at,
        sign.archive_sha256.unwrap_or("none (no archive)"),
    )
}

/// The prune's transaction on a connection of either backend: checks that the range is still as
/// read, lifts the append-only guard (`$lift`), deletes, restores it (`$restore`), appends the
/// checkpoint link and its row. `None` (nothing changed) if the chain changed since.
macro_rules! prune_in {
    ($tx:expr, $range:expr, $sign:expr, $lift:expr, $restore:expr) => {{
        let range: &PruneRange = $range;
        let sign: &SignOff<'_> = $sign;
        let hash: Option<Option<String>> = sqlx::query_scalar("SELECT hash FROM events WHERE seq = $1")
            .bind(range.through_seq)
            .fetch_optional(&mut *$tx)
            .await?;
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events").fetch_one(&mut *$tx).await?;
        if hash.flatten().as_deref() != Some(range.through_hash.as_str()) || first != Some(range.first_seq) {
            return Ok(None);
        }
        for sql in $lift {
            sqlx::query(sql).execute(&mut *$tx).await?;
        }
        let deleted = sqlx::query("DELETE FROM events WHERE id <= $1 AND (seq IS NOT NULL OR at < $2)")
            .bind(range.through_id)
            .bind(&range.before)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
        if deleted != (range.count + range.before_chain) as u64 {
            // Rows came or went since the range was read: leave it all as it was.
            return Ok(None);
        }
        for sql in $restore {
            sqlx::query(sql).execute(&mut *$tx).await?;
        }
        let message = checkpoint_message(range, sign);
        let (actor, reason) = (text(sign.actor), text(sign.reason));
        let entry = Entry {
            at: sign.at,
            run_id: None,
            item_key: None,
            target: None,
            stage: Stage::Operator.as_str(),
            level: Level::Info.as_str(),
            message: &text(&message),
            actor: Some(&actor),
            reason: Some(&reason),
        };
        let head = $tx.append_chained(&entry).await?;
        let checkpoint = Checkpoint {
            through_seq: range.through_seq,
            through_hash: range.through_hash.clone(),
            pruned_count: range.count,
            first_at: range.first_at.clone(),
            last_at: range.last_at.clone(),
            checkpoint_seq: head.seq,
            archive_sha256: sign.archive_sha256.map(str::to_owned),
            at: sign.at.to_owned(),
            actor: actor.into_owned(),
            reason: reason.into_owned(),
        };
        sqlx::query(&format!(
            "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(checkpoint.through_seq)
        .bind(&checkpoint.through_hash)
        .bind(checkpoint.pruned_count)
        .bind(&checkpoint.first_at)
        .bind(&checkpoint.last_at)
        .bind(checkpoint.checkpoint_seq)
        .bind(&checkpoint.archive_sha256)
        .bind(&checkpoint.at)
        .bind(&checkpoint.actor)
        .bind(&checkpoint.reason)
        .execute(&mut *$tx)
        .await?;
        $tx.commit().await?;
        checkpoint
    }};
}

/// SQLite's guard against deletes, dropped and re-created inside the prune's transaction.
const SQLITE_LIFT: [&str; 1] = ["DROP TRIGGER IF EXISTS events_no_delete"];
const SQLITE_RESTORE: [&str; 1] = ["CREATE TRIGGER events_no_delete BEFORE DELETE ON events \
                                    BEGIN SELECT RAISE(ABORT, 'the migration log is append-only'); END"];
/// PostgreSQL's guard lets a delete pass while this transaction-local setting is on (migration 0017).
const PG_LIFT: [&str; 1] = ["SELECT set_config('portal_bridge.audit_prune', 'on', true)"];
const PG_RESTORE: [&str; 1] = ["SELECT set_config('portal_bridge.audit_prune', 'off', true)"];

impl Store {
    /// The checkpoint of the prune through link `through_seq`.
    pub async fn checkpoint(&self, through_seq: i64) -> Result<Option<Checkpoint>, StoreError> {
        let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE through_seq = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(through_seq).fetch_optional(pool).await?))
    }

    /// The latest checkpoint through a link before `seq`.
    async fn checkpoint_before(&self, seq: i64) -> Result<Option<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE through_seq < $1 ORDER BY through_seq DESC LIMIT 1"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(seq).fetch_optional(pool).await?))
    }

    /// The hash link `seq` follows: the stored link before it, or after a prune the checkpoint's
    /// `through_hash` (none for seq 1, or when neither is there).
    pub async fn prev_of(&self, seq: i64) -> Result<Option<String>, StoreError> {
        if seq <= 1 {
            return Ok(None);
        }
        if let Some(hash) = self.hash_at(seq - 1).await? {
            return Ok(Some(hash));
        }
        Ok(self.checkpoint(seq - 1).await?.map(|c| c.through_hash))
    }

    /// The event id of the first link (by seq) with `at` at or after `at`.
    pub async fn first_link_from(&self, at: &str) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT id FROM events WHERE seq IS NOT NULL AND at >= $1 ORDER BY seq LIMIT 1";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).bind(at).fetch_optional(pool).await?))
    }

    /// The event id of the last link (by seq) with `at` before `at` (or at it, when `inclusive`).
    pub async fn last_link_until(&self, at: &str, inclusive: bool) -> Result<Option<i64>, StoreError> {
        let sql = if inclusive {
            "SELECT id FROM events WHERE seq IS NOT NULL AND at <= $1 ORDER BY seq DESC LIMIT 1"
        } else {
            "SELECT id FROM events WHERE seq IS NOT NULL AND at < $1 ORDER BY seq DESC LIMIT 1"
        };
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).bind(at).fetch_optional(pool).await?))
    }

    /// What a prune of everything before `before` (a stored timestamp) removes: the links from the
    /// first to the last one before the first link at or after `before` (never the head), and the
    /// events from before the chain older than it. `None`: nothing to prune.
    pub async fn prune_range(&self, before: &str) -> Result<Option<PruneRange>, StoreError> {
        let Some(head) = self.chain_head().await? else { return Ok(None) };
        let first: (i64, String) = on_pool!(self, pool => sqlx::query_as(
            "SELECT seq, at FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT 1")
            .fetch_one(pool)
            .await?);
        let stop: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(seq) FROM events WHERE seq IS NOT NULL AND at >= $1")
            .bind(before)
            .fetch_one(pool)
            .await?);
        let through_seq = stop.unwrap_or(head.seq + 1).min(head.seq) - 1;
        if through_seq < first.0 {
            return Ok(None);
        }
        let (through_id, through_hash, last_at): (i64, String, String) = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, hash, at FROM events WHERE seq = $1")
            .bind(through_seq)
            .fetch_one(pool)
            .await?);
        let before_chain: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE seq IS NULL AND id < $1 AND at < $2")
            .bind(through_id)
            .bind(before)
            .fetch_one(pool)
            .await?);
        Ok(Some(PruneRange {
            before: before.to_owned(),
            first_seq: first.0,
            through_seq,
            through_id,
            through_hash,
            count: through_seq - first.0 + 1,
            before_chain,
            first_at: first.1,
            last_at,
            head,
        }))
    }

    /// Up to `limit` events of `range` after event id `after`, in the order stored: the pruned
    /// events from before the chain and the pruned links (what an archive holds).
    pub async fn prune_page(&self, range: &PruneRange, after: i64, limit: i64) -> Result<Vec<ChainEntry>, StoreError> {
        let sql = "SELECT id, seq, hash, at, run_id, item_key, target, stage, level, message, actor, reason \
                   FROM events WHERE id > $1 AND id <= $2 AND (seq IS NOT NULL OR at < $3) ORDER BY id LIMIT $4";
        Ok(on_pool!(self, pool => sqlx::query_as(sql)
            .bind(after)
            .bind(range.through_id)
            .bind(&range.before)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Prunes `range` and appends its checkpoint link and row, in one transaction; the log's
    /// append-only guard is lifted only inside it. `None` (nothing changed) if the chain is not as
    /// `range` was read any more (another prune, or a change made directly in the database).
    pub async fn prune(&self, range: &PruneRange, sign: &SignOff<'_>) -> Result<Option<Checkpoint>, StoreError> {
        let checkpoint = match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                prune_in!(tx, range, sign, SQLITE_LIFT, SQLITE_RESTORE)
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                prune_in!(tx, range, sign, PG_LIFT, PG_RESTORE)
            }
        };
        Ok(Some(checkpoint))
    }

    /// Where the chain's first link found (`row`, seq `first` > 1) links to, for
    /// [`Store::verify_chain`]: with `since`, the stored link before it; else (or when that was
    /// pruned) the checkpoint through `first - 1`, cross-checked against its checkpoint link. The
    /// break instead when neither is there (`removed`) or the checkpoint row and link disagree
    /// (`changed`).
    pub(super) async fn chain_start(
        &self,
        row: &ChainEntry,
        first: i64,
        since: bool,
    ) -> Result<Result<(Option<String>, Option<Pruned>), ChainBreak>, StoreError> {
        if since && let Some(hash) = self.hash_at(first - 1).await? {
            return Ok(Ok((Some(hash), None)));
        }
        let checkpoint = if since { self.checkpoint(first - 1).await? } else { self.checkpoint_before(first).await? };
        let Some(checkpoint) = checkpoint else {
            let want = if since { first - 1 } else { 1 };
            return Ok(Err(self.gap(row, want).await?));
        };
        let link: Option<(i64, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, message FROM events WHERE seq = $1")
            .bind(checkpoint.checkpoint_seq)
            .fetch_optional(pool)
            .await?);
        let states = Checkpoint::states(checkpoint.through_seq, &checkpoint.through_hash);
        match link {
            Some((_, message)) if message.contains(&states) => {}
            Some((id, _)) => {
                return Ok(Err(ChainBreak {
                    kind: BreakKind::Changed,
                    id,
                    seq: Some(checkpoint.checkpoint_seq),
                    detail: format!(
                        "the checkpoint row of audit_checkpoints through seq {} (hash {}) does not agree with its \
                         checkpoint link, event {id} (seq {}), which does not state it: the row or the link was changed",
                        checkpoint.through_seq, checkpoint.through_hash, checkpoint.checkpoint_seq
                    ),
                }));
            }
            None => {
                return Ok(Err(ChainBreak {
                    kind: BreakKind::Changed,
                    id: row.id,
                    seq: row.seq,
                    detail: format!(
                        "the checkpoint row of audit_checkpoints through seq {} names its checkpoint link seq {}, \
                         which no event holds: the row was changed or the link removed",
                        checkpoint.through_seq, checkpoint.checkpoint_seq
                    ),
                }));
            }
        }
        if checkpoint.through_seq != first - 1 {
            // Links missing after what the checkpoint pruned.
            return Ok(Err(self.gap(row, checkpoint.through_seq + 1).await?));
        }
        let pruned = Pruned {
            through_seq: checkpoint.through_seq,
            through_hash: checkpoint.through_hash.clone(),
            count: checkpoint.pruned_count,
            at: checkpoint.at,
            actor: checkpoint.actor,
        };
        Ok(Ok((Some(checkpoint.through_hash), Some(pruned))))
    }
}
