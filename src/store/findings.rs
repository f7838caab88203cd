//! Findings: each ledger row with the warnings and errors that the last run which processed it logged for it.

use serde::Serialize;

use super::{Store, StoreError, on_pool};
use crate::domain::Level;

/// One ledger row (an item at a target) with one of its findings, or with none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FindingRow {
    pub item_key: String,
    pub source_id: String,
    pub target: String,
    /// The item's status at the target now.
    pub status: String,
    /// The event, or `None` for a row without findings (every row of the ledger is listed once at least).
    pub event_id: Option<i64>,
    pub run_id: Option<i64>,
    pub level: Option<String>,
    pub message: Option<String>,
}

/// The findings of an item at a target are the `warn` and `error` events of that item and target in
/// the last run that processed them: the highest run id of the pair's events at or before
/// `items.last_run_id`. Not simply `last_run_id` itself, since a run that finds an item unchanged
/// marks a `delivered` row `unchanged` (moving `last_run_id`) without mapping it or logging anything,
/// and the findings of its last mapping still hold. Withdrawn rows are gone upstream and left out.
/// Rows come ordered by item, target and event, so a report reads them in the order they happened.
/// `events_by_item_target_run` (migration 0009) serves both the subquery and the join.
const FINDINGS: &str = "SELECT i.item_key, i.source_id, i.target, i.status, \
            e.id AS event_id, e.run_id, e.level, e.message \
     FROM items i \
     LEFT JOIN events e \
       ON e.item_key = i.item_key AND e.target = i.target AND e.level IN ($2, $3) \
      AND e.run_id = (SELECT MAX(p.run_id) FROM events p \
                      WHERE p.item_key = i.item_key AND p.target = i.target AND p.run_id <= i.last_run_id) \
     WHERE ($1 IS NULL OR i.source_id = $1) AND i.status <> $4 \
     ORDER BY i.item_key, i.target, e.id";

impl Store {
    /// Every ledger row (of one source, or of all) with its current findings, see [`FINDINGS`].
    pub async fn findings(&self, source: Option<&str>) -> Result<Vec<FindingRow>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(FINDINGS)
            .bind(source)
            .bind(Level::Warn.as_str())
            .bind(Level::Error.as_str())
            .bind(crate::domain::ItemStatus::Withdrawn.as_str())
            .fetch_all(pool)
            .await?))
    }
}
