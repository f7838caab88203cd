//! The ledger: the current state of every item at every target, written in batches with its log events.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::audit::Chained;
use super::documents::{INSERT, LATEST, PRUNE};
use super::documents::{KEPT_VERSIONS, NewDocument, keep_document};
use super::lease::{Fence, check_fence};
use super::log::NewEvent;
use super::{BeginWrite, Store, StoreError, on_pool, opt_text, text};

/// One ledger row: an item at a target.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LedgerRow {
    pub item_key: String,
    pub target: String,
    pub source_id: String,
    /// The file (and position in a feed) the record was read from.
    pub origin: String,
    pub content_hash: Option<String>,
    pub mapping: Option<String>,
    pub mapping_version: Option<String>,
    /// Hash of the document the target holds from us (the last delivered one).
    pub output_hash: Option<String>,
    pub output_path: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub first_seen_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
    pub last_run_id: Option<i64>,
    /// The adoptions (comma-separated ARS) the current document was mapped with, if the source has adoptions.
    pub adoptions: Option<String>,
    /// The target's version (ETag) of what we last delivered, sent as `If-Match`.
    pub target_version: Option<String>,
    /// An operator's reason to leave the item alone while its content hash stays `skip_hash`.
    pub skip_reason: Option<String>,
    pub skip_hash: Option<String>,
    /// Hash of the source's settings (`$source` and its form link) the item was last mapped with.
    pub settings_hash: Option<String>,
    /// When the row's status last changed (the first run that quarantined it, say); set by the
    /// store on every write, whatever a row brings.
    pub status_since: Option<String>,
    /// The LeiKa key the source gave the item's record when it was last recorded (sources with
    /// `leika_key`): what `adopt add` checks a key against. A write without one keeps the stored one.
    pub leika_key: Option<String>,
    /// The row's revision as read (0: no row yet). [`Store::write_batch`] writes a row only if it is
    /// still at this revision, and raises it.
    pub revision: i64,
}

/// The columns a batch writes, in the order of its binds.
const WRITE_COLUMNS: &str = "item_key, target, source_id, origin, content_hash, mapping, mapping_version, \
     output_hash, output_path, status, attempts, last_error, first_seen_at, updated_at, delivered_at, last_run_id, adoptions, \
     target_version, skip_reason, skip_hash, settings_hash, revision";

const LEDGER_COLUMNS: &str = "item_key, target, source_id, origin, content_hash, mapping, mapping_version, \
     output_hash, output_path, status, attempts, last_error, first_seen_at, updated_at, delivered_at, last_run_id, adoptions, \
     target_version, skip_reason, skip_hash, settings_hash, status_since, leika_key, revision";

/// An item's status as shown (and filtered on): `skipped` while an operator's skip holds (the
/// content is what it was when skipped), else the ledger's status. See [`LedgerRow::shown_status`].
const SHOWN_STATUS: &str =
    "(CASE WHEN skip_reason IS NOT NULL AND skip_hash = content_hash THEN 'skipped' ELSE status END)";

impl LedgerRow {
    /// The status shown for this row: `skipped` while an operator's skip holds, else its status.
    pub fn shown_status(&self) -> &str {
        if self.skip_reason.is_some() && self.skip_hash.is_some() && self.skip_hash == self.content_hash {
            "skipped"
        } else {
            &self.status
        }
    }
}

/// Count of items of one source in one status.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StatusCount {
    pub source_id: String,
    pub status: String,
    pub count: i64,
}

/// A write to the ledger together with the events that explain it; applied in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub rows: Vec<LedgerRow>,
    pub events: Vec<NewEvent>,
    /// Intents whose outcome the rows record: removed in the same transaction.
    pub settled_intents: Vec<(String, String)>,
    /// Delivered documents to keep for the diff (the last two per item and target).
    pub documents: Vec<NewDocument>,
    /// Rows the run found unchanged: written many to a statement (a re-run marks nearly every row).
    pub unchanged: Vec<UnchangedMark>,
}

/// A ledger row a run found unchanged: its status becomes `unchanged` (`status_since` kept if it
/// was already), `updated_at` and `last_run_id` move on, and it learns its LeiKa key if one is
/// given; every other column stays as the run read it. It is what upserting the row as read with
/// those four values changed would write, in a fraction of the statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnchangedMark {
    pub item_key: String,
    pub target: String,
    /// The revision the run read: the row is not written if it moved on since ([`StoreError::Stale`]).
    pub revision: i64,
    /// The record's LeiKa key; `None` keeps the stored one.
    pub leika_key: Option<String>,
    pub updated_at: String,
    pub last_run_id: Option<i64>,
}

/// Marks per statement (6 parameters each). sqlx's SQLite driver looks every parameter up by name
/// among all of a statement's (`sqlite3_bind_parameter_name`), quadratic in their number: at 500
/// marks that lookup was a fifth of a re-run's time; at 50 it does not show.
const MARKS_PER_STATEMENT: usize = 50;

/// The statement that writes `n` [`UnchangedMark`]s, returning the pairs it wrote.
fn unchanged_sql(n: usize) -> String {
    let values: Vec<String> = (0..n)
        .map(|i| {
            let p = 6 * i;
            format!("(${}, ${}, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6)
        })
        .collect();
    format!(
        "WITH marks (item_key, target, revision, leika_key, updated_at, last_run_id) AS (VALUES {}) \
         UPDATE items SET status = '{unchanged}', updated_at = marks.updated_at, last_run_id = marks.last_run_id, \
         leika_key = COALESCE(marks.leika_key, items.leika_key), \
         status_since = CASE WHEN items.status = '{unchanged}' THEN COALESCE(items.status_since, items.updated_at) \
         ELSE marks.updated_at END, \
         revision = items.revision + 1 \
         FROM marks WHERE items.item_key = marks.item_key AND items.target = marks.target \
         AND items.revision = marks.revision \
         RETURNING items.item_key, items.target",
        values.join(", "),
        unchanged = crate::domain::ItemStatus::Unchanged.as_str(),
    )
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.events.is_empty()
            && self.settled_intents.is_empty()
            && self.documents.is_empty()
            && self.unchanged.is_empty()
    }

    /// Bytes of the documents the batch holds.
    pub fn document_bytes(&self) -> usize {
        self.documents.iter().map(|d| d.body.len()).sum()
    }
}

impl Store {
    /// Every ledger row of one source, keyed by (item key, target).
    pub async fn ledger_of_source(&self, source_id: &str) -> Result<HashMap<(String, String), LedgerRow>, StoreError> {
        let sql = format!("SELECT {LEDGER_COLUMNS} FROM items WHERE source_id = $1");
        let rows: Vec<LedgerRow> = on_pool!(self, pool => sqlx::query_as(&sql).bind(source_id).fetch_all(pool).await?);
        Ok(rows.into_iter().map(|r| ((r.item_key.clone(), r.target.clone()), r)).collect())
    }

    /// The rows of some items of one source (every target of each), as they are now.
    pub async fn ledger_rows(&self, source_id: &str, keys: &[String]) -> Result<Vec<LedgerRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(500) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT {LEDGER_COLUMNS} FROM items WHERE source_id = $1 AND item_key IN ({})",
                list.join(", ")
            );
            on_pool!(self, pool => {
                let mut query = sqlx::query_as(&sql).bind(source_id);
                for key in chunk {
                    query = query.bind(key);
                }
                rows.extend(query.fetch_all(pool).await?);
            });
        }
        Ok(rows)
    }

    /// The rows of one item, one per target.
    pub async fn item(&self, item_key: &str) -> Result<Vec<LedgerRow>, StoreError> {
        let sql = format!("SELECT {LEDGER_COLUMNS} FROM items WHERE item_key = $1 ORDER BY target");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(item_key).fetch_all(pool).await?))
    }

    /// Items in a status (all statuses if `None`), optionally of one source.
    pub async fn items(
        &self,
        status: Option<&str>,
        source: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM items WHERE ($1 IS NULL OR {SHOWN_STATUS} = $1) AND ($2 IS NULL OR source_id = $2) \
             ORDER BY item_key, target LIMIT $3"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(status).bind(source).bind(limit).fetch_all(pool).await?))
    }

    /// Number of items per source and status.
    pub async fn status_counts(&self) -> Result<Vec<StatusCount>, StoreError> {
        let sql = format!(
            "SELECT source_id, {SHOWN_STATUS} AS status, COUNT(*) AS count FROM items \
             GROUP BY source_id, {SHOWN_STATUS} ORDER BY source_id, status"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
    }

    /// An operator's skip: the item is left alone while its content stays as it is now.
    pub async fn skip_item(&self, item_key: &str, reason: &str, at: &str) -> Result<u64, StoreError> {
        let sql = "UPDATE items SET skip_reason = $1, skip_hash = content_hash, updated_at = $2 WHERE item_key = $3";
        Ok(
            on_pool!(self, pool => sqlx::query(sql).bind(text(reason)).bind(at).bind(item_key).execute(pool).await?.rows_affected()),
        )
    }

    /// Upserts the rows and appends the events of a batch in one transaction, outside any run.
    pub async fn write_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write_fenced_batch(batch, &Fence::None).await
    }

    /// Upserts the rows and appends the events of a batch in one transaction, if `fence` still holds
    /// and every row is still at the revision it was read at ([`StoreError::Stale`] otherwise:
    /// nothing is written, the batch's intents stay for the next run to reconcile). The operator's
    /// skip (`skip_reason`, `skip_hash`) is only written with a new row: runs never change it.
    pub async fn write_fenced_batch(&self, batch: &Batch, fence: &Fence) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let upsert = format!(
            "INSERT INTO items ({WRITE_COLUMNS}, status_since, leika_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22 + 1, $14, $23) \
             ON CONFLICT (item_key, target) DO UPDATE SET source_id = excluded.source_id, origin = excluded.origin, \
             content_hash = excluded.content_hash, mapping = excluded.mapping, mapping_version = excluded.mapping_version, \
             output_hash = excluded.output_hash, output_path = excluded.output_path, status = excluded.status, \
             attempts = excluded.attempts, last_error = excluded.last_error, updated_at = excluded.updated_at, \
             delivered_at = excluded.delivered_at, last_run_id = excluded.last_run_id, adoptions = excluded.adoptions, \
             target_version = excluded.target_version, settings_hash = excluded.settings_hash, \
             leika_key = COALESCE(excluded.leika_key, items.leika_key), \
             status_since = CASE WHEN items.status = excluded.status THEN COALESCE(items.status_since, items.updated_at) \
             ELSE excluded.updated_at END, \
             revision = items.revision + 1 WHERE items.revision = $22"
        );
        let current = "SELECT revision FROM items WHERE item_key = $1 AND target = $2";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(self, tx, fence);
            for row in &batch.rows {
                let written = sqlx::query(&upsert)
                    .bind(&row.item_key)
                    .bind(&row.target)
                    .bind(&row.source_id)
                    .bind(&row.origin)
                    .bind(&row.content_hash)
                    .bind(&row.mapping)
                    .bind(&row.mapping_version)
                    .bind(&row.output_hash)
                    .bind(&row.output_path)
                    .bind(&row.status)
                    .bind(row.attempts)
                    .bind(opt_text(row.last_error.as_deref()))
                    .bind(&row.first_seen_at)
                    .bind(&row.updated_at)
                    .bind(&row.delivered_at)
                    .bind(row.last_run_id)
                    .bind(&row.adoptions)
                    .bind(&row.target_version)
                    .bind(opt_text(row.skip_reason.as_deref()))
                    .bind(&row.skip_hash)
                    .bind(&row.settings_hash)
                    .bind(row.revision)
                    .bind(&row.leika_key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if written != 1 {
                    let now: i64 = sqlx::query_scalar(current).bind(&row.item_key).bind(&row.target).fetch_one(&mut *tx).await?;
                    return Err(StoreError::Stale { item_key: row.item_key.clone(), target: row.target.clone(), read: row.revision, now });
                }
            }
            for marks in batch.unchanged.chunks(MARKS_PER_STATEMENT) {
                let sql = unchanged_sql(marks.len());
                let mut query = sqlx::query_as::<_, (String, String)>(&sql);
                for mark in marks {
                    query = query
                        .bind(&mark.item_key)
                        .bind(&mark.target)
                        .bind(mark.revision)
                        .bind(&mark.leika_key)
                        .bind(&mark.updated_at)
                        .bind(mark.last_run_id);
                }
                let written: HashSet<(String, String)> = query.fetch_all(&mut *tx).await?.into_iter().collect();
                // (the pairs of a batch are distinct: all were written if as many came back)
                if written.len() < marks.len()
                    && let Some(mark) = marks.iter().find(|m| !written.contains(&(m.item_key.clone(), m.target.clone())))
                {
                    // (a row removed since reads as revision 0)
                    let now: Option<i64> = sqlx::query_scalar(current).bind(&mark.item_key).bind(&mark.target).fetch_optional(&mut *tx).await?;
                    return Err(StoreError::Stale { item_key: mark.item_key.clone(), target: mark.target.clone(), read: mark.revision, now: now.unwrap_or(0) });
                }
            }
            for doc in &batch.documents {
                keep_document!(tx, doc);
            }
            for (item_key, target) in &batch.settled_intents {
                sqlx::query("DELETE FROM intents WHERE item_key = $1 AND target = $2")
                    .bind(item_key)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
            }
            // Last: on PostgreSQL the chain's lock is then held only until the commit that follows.
            let messages: Vec<_> = batch.events.iter().map(|event| text(&event.message)).collect();
            let entries: Vec<_> = batch.events.iter().zip(&messages).map(|(event, message)| event.entry(message)).collect();
            tx.append_all(&entries).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
