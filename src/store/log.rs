//! The migration log: append-only events (time, run, item, stage, level, message; who and why for an
//! operator's action) and their queries.

use serde::Serialize;

use super::audit::{Chained, Entry};
use super::{BeginWrite, Store, StoreError, on_pool, text};
use crate::domain::{Level, Stage};

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: String,
    pub run_id: Option<i64>,
    pub item_key: Option<String>,
    pub target: Option<String>,
    pub stage: Stage,
    pub level: Level,
    pub message: String,
}

/// An event as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub at: String,
    pub run_id: Option<i64>,
    pub item_key: Option<String>,
    pub target: Option<String>,
    pub stage: String,
    pub level: String,
    pub message: String,
    /// Who did it, for an operator's action (the admin token's name, or the command line's OS user).
    pub actor: Option<String>,
    /// Why, as the operator said.
    pub reason: Option<String>,
}

/// Which events to list; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub run_id: Option<i64>,
    pub item_key: Option<String>,
    pub source: Option<String>,
    /// At least this severity.
    pub level: Option<Level>,
    /// Only the actions of this operator.
    pub actor: Option<String>,
    /// Only events older than this one (by id), to page back through the log.
    pub before: Option<i64>,
    pub limit: i64,
}

impl NewEvent {
    /// The event as the chain stores it (`message` as [`text`] gives it).
    pub(crate) fn entry<'a>(&'a self, message: &'a str) -> Entry<'a> {
        Entry {
            at: &self.at,
            run_id: self.run_id,
            item_key: self.item_key.as_deref(),
            target: self.target.as_deref(),
            stage: self.stage.as_str(),
            level: self.level.as_str(),
            message,
            actor: None,
            reason: None,
        }
    }
}

impl Store {
    /// Appends one event (a link of the audit chain, in a transaction of its own).
    pub async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let message = text(&event.message);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            tx.append_chained(&event.entry(&message)).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Events in the order they happened (the most recent `limit` of those that match).
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, StoreError> {
        let levels: Vec<&str> = Level::ALL
            .iter()
            .filter(|l| filter.level.is_none_or(|min| l.rank() >= min.rank()))
            .map(|l| l.as_str())
            .collect();
        // A source's events are those whose item key starts with `source/`: the keys from `source/`
        // up to (not including) `source0` ('0' follows '/'), compared bytewise on both backends
        // (SQLite's BINARY collation, the columns' "C" collation on PostgreSQL). Unlike LIKE, this
        // is case-sensitive on both and needs no escaping.
        let sql = "SELECT id, at, run_id, item_key, target, stage, level, message, actor, reason FROM ( \
                     SELECT * FROM events \
                     WHERE ($1 IS NULL OR run_id = $1) \
                       AND ($2 IS NULL OR item_key = $2) \
                       AND ($3 IS NULL OR (item_key >= $3 AND item_key < $4)) \
                       AND level IN ($5, $6, $7, $8) \
                       AND ($10 IS NULL OR actor = $10) \
                       AND ($11 IS NULL OR id < $11) \
                     ORDER BY id DESC LIMIT $9) AS recent \
                   ORDER BY id";
        let source_from = filter.source.as_ref().map(|s| format!("{s}/"));
        let source_until = filter.source.as_ref().map(|s| format!("{s}0"));
        let level = |i: usize| levels.get(i).copied().unwrap_or("");
        let limit = if filter.limit > 0 { filter.limit } else { i64::MAX };
        Ok(on_pool!(self, pool => sqlx::query_as(sql)
            .bind(filter.run_id)
            .bind(&filter.item_key)
            .bind(source_from)
            .bind(source_until)
            .bind(level(0))
            .bind(level(1))
            .bind(level(2))
            .bind(level(3))
            .bind(limit)
            .bind(&filter.actor)
            .bind(filter.before)
            .fetch_all(pool)
            .await?))
    }
}
