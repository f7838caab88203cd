//! Runs: one row per pipeline execution with its trigger, status and counts.

use serde::Serialize;

use super::{Store, StoreError, on_pool, opt_text};
use crate::domain::{RunStatus, Trigger};

/// Counts per item and target, as reported by `migrate --json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub new: i64,
    pub updated: i64,
    pub unchanged: i64,
    pub failed: i64,
    pub quarantined: i64,
    pub withdrawn: i64,
    /// Items the portal changed since our last write (HTTP 412); left for an operator.
    pub conflict: i64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.new += other.new;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.failed += other.failed;
        self.quarantined += other.quarantined;
        self.withdrawn += other.withdrawn;
        self.conflict += other.conflict;
    }

    /// Items that did not go through.
    pub fn problems(&self) -> i64 {
        self.failed + self.quarantined + self.conflict
    }
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub trigger: String,
    pub sources: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub new_count: i64,
    pub updated_count: i64,
    pub unchanged_count: i64,
    pub failed_count: i64,
    pub quarantined_count: i64,
    pub withdrawn_count: i64,
    pub message: Option<String>,
}

const RUN_COLUMNS: &str = "id, trigger, sources, status, started_at, finished_at, new_count, updated_count, \
     unchanged_count, failed_count, quarantined_count, withdrawn_count, message";

impl Store {
    /// Records the start of a run and returns its id.
    pub async fn start_run(&self, trigger: Trigger, sources: &[String], at: &str) -> Result<i64, StoreError> {
        let sql = "INSERT INTO runs (trigger, sources, status, started_at) VALUES ($1, $2, $3, $4) RETURNING id";
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(trigger.as_str())
            .bind(sources.join(","))
            .bind(RunStatus::Running.as_str())
            .bind(at)
            .fetch_one(pool)
            .await?);
        Ok(id)
    }

    /// Records the end of a run.
    pub async fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        counts: Counts,
        message: Option<&str>,
        at: &str,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE runs SET status = $1, finished_at = $2, new_count = $3, updated_count = $4, \
                   unchanged_count = $5, failed_count = $6, quarantined_count = $7, withdrawn_count = $8, \
                   message = $9 WHERE id = $10";
        on_pool!(self, pool => { sqlx::query(sql)
            .bind(status.as_str())
            .bind(at)
            .bind(counts.new)
            .bind(counts.updated)
            .bind(counts.unchanged)
            .bind(counts.failed)
            .bind(counts.quarantined)
            .bind(counts.withdrawn)
            .bind(opt_text(message))
            .bind(id)
            .execute(pool)
            .await?; });
        Ok(())
    }

    /// The most recent runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(limit).fetch_all(pool).await?))
    }

    pub async fn run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }
}
