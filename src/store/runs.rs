//! Runs: one row per pipeline execution with its trigger, status and counts.

use serde::Serialize;

use super::{Store, StoreError, on_pool, opt_text, text};
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
    /// Documents that went through (new, updated or unchanged after re-mapping) with warnings:
    /// counted besides their outcome, not in [`Counts::total`].
    #[serde(default)]
    pub warned: i64,
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
        self.warned += other.warned;
    }

    /// Items that did not go through.
    pub fn problems(&self) -> i64 {
        self.failed + self.quarantined + self.conflict
    }

    /// Adds `by` (±1) to the count of `kind`.
    pub fn bump(&mut self, kind: Counted, by: i64) {
        let count = match kind {
            Counted::New => &mut self.new,
            Counted::Updated => &mut self.updated,
            Counted::Unchanged => &mut self.unchanged,
            Counted::Failed => &mut self.failed,
            Counted::Quarantined => &mut self.quarantined,
            Counted::Withdrawn => &mut self.withdrawn,
            Counted::Conflict => &mut self.conflict,
        };
        *count += by;
    }

    /// Every pair counted (each once, by its outcome; `warned` is not an outcome).
    pub fn total(&self) -> i64 {
        self.new + self.updated + self.unchanged + self.failed + self.quarantined + self.withdrawn + self.conflict
    }
}

/// What one (item, target) pair counts as in a run's summary: each pair counts once, as its last
/// outcome in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counted {
    New,
    Updated,
    Unchanged,
    Failed,
    Quarantined,
    Withdrawn,
    Conflict,
}

/// How one source of a run went, by itself: `ok` when none of its items had a problem and it was
/// read; `partial` with problems; `failed` when it could not be read; `interrupted`/`aborted` when the
/// run stopped before the source was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceResult {
    pub source: String,
    pub status: RunStatus,
    /// Why it failed or stopped (a fetch error, the run's stop), if it did.
    pub error: Option<String>,
}

/// A source's last run as stored, with its last success.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SourceResultRow {
    pub source_id: String,
    pub run_id: i64,
    pub status: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// End of the last run in which the source went through without problems of its own.
    pub last_success_at: Option<String>,
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
    /// Documents of the run that went through with warnings.
    pub warned_count: i64,
    /// Who carries the run out: the holder of its sources' leases (`None` for runs from before
    /// holders were recorded).
    pub holder: Option<String>,
}

const RUN_COLUMNS: &str = "id, trigger, sources, status, started_at, finished_at, new_count, updated_count, \
     unchanged_count, failed_count, quarantined_count, withdrawn_count, message, warned_count, holder";

/// Why a dead run was closed, as its message says.
pub const DEAD_RUN: &str = "aborted: the process carrying it out ended without closing it (killed, crashed or \
     stopped) and its lease expired; deliveries it left unfinished are reconciled by the next run of its sources";

impl Store {
    /// Records the start of a run and returns its id.
    pub async fn start_run(&self, trigger: Trigger, sources: &[String], at: &str) -> Result<i64, StoreError> {
        self.start_held_run(trigger, sources, None, at).await
    }

    /// Records the start of a run carried out by `holder` (the holder of its sources' leases).
    pub async fn start_held_run(
        &self,
        trigger: Trigger,
        sources: &[String],
        holder: Option<&str>,
        at: &str,
    ) -> Result<i64, StoreError> {
        let sql =
            "INSERT INTO runs (trigger, sources, status, started_at, holder) VALUES ($1, $2, $3, $4, $5) RETURNING id";
        let id: i64 = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(trigger.as_str())
            .bind(sources.join(","))
            .bind(RunStatus::Running.as_str())
            .bind(at)
            .bind(holder)
            .fetch_one(pool)
            .await?);
        let each = "INSERT INTO run_sources (run_id, source_id, status) VALUES ($1, $2, $3)";
        for source in sources {
            on_pool!(self, pool => {
                sqlx::query(each).bind(id).bind(source).bind(RunStatus::Running.as_str()).execute(pool).await?;
            });
        }
        Ok(id)
    }

    /// Closes every run left `running` whose holder holds no live lease any more (judged by the
    /// database's clock) as `aborted`, and returns their ids.
    pub async fn close_dead_runs(&self) -> Result<Vec<i64>, StoreError> {
        let now = self.now_sql();
        let dead = format!(
            "SELECT id FROM runs WHERE status = $1 AND (holder IS NULL OR NOT EXISTS \
             (SELECT 1 FROM leases WHERE leases.holder = runs.holder AND leases.expires_at > {now})) ORDER BY id"
        );
        let close =
            format!("UPDATE runs SET status = $1, finished_at = {now}, message = $2 WHERE id = $3 AND status = $4");
        let running = RunStatus::Running.as_str();
        let ids: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar(&dead).bind(running).fetch_all(pool).await?);
        let close_sources = format!(
            "UPDATE run_sources SET status = $1, finished_at = {now}, error = $2 WHERE run_id = $3 AND status = $4"
        );
        for id in &ids {
            on_pool!(self, pool => {
                sqlx::query(&close).bind(RunStatus::Aborted.as_str()).bind(DEAD_RUN).bind(id).bind(running).execute(pool).await?;
                sqlx::query(&close_sources).bind(RunStatus::Aborted.as_str()).bind(DEAD_RUN).bind(id).bind(running).execute(pool).await?;
            });
        }
        Ok(ids)
    }

    /// Closes the runs of `holder` still `running` with `status` and `message` (a run stopped from
    /// outside, e.g. a task that panicked) and gives back its leases.
    pub async fn abandon_holder(&self, holder: &str, status: RunStatus, message: &str) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE runs SET status = $1, finished_at = {}, message = $2 WHERE holder = $3 AND status = $4",
            self.now_sql()
        );
        let sources = format!(
            "UPDATE run_sources SET status = $1, finished_at = {}, error = $2 WHERE status = $4 AND run_id IN \
             (SELECT id FROM runs WHERE holder = $3)",
            self.now_sql()
        );
        on_pool!(self, pool => {
            sqlx::query(&sql).bind(status.as_str()).bind(text(message)).bind(holder).bind(RunStatus::Running.as_str()).execute(pool).await?;
            sqlx::query(&sources).bind(status.as_str()).bind(text(message)).bind(holder).bind(RunStatus::Running.as_str()).execute(pool).await?;
        });
        self.release_leases_of(holder).await
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
                   message = $9, warned_count = $11 WHERE id = $10";
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
            .bind(counts.warned)
            .execute(pool)
            .await?; });
        Ok(())
    }

    /// Records how each source of run `id` went (its own status, and the error that stopped it).
    pub async fn finish_run_sources(&self, id: i64, results: &[SourceResult], at: &str) -> Result<(), StoreError> {
        // An upsert: a run whose start rows are missing (their insert failed) still gets its results.
        let sql = "INSERT INTO run_sources (status, finished_at, error, run_id, source_id) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (run_id, source_id) DO UPDATE SET status = excluded.status, \
                   finished_at = excluded.finished_at, error = excluded.error";
        for result in results {
            on_pool!(self, pool => { sqlx::query(sql)
                .bind(result.status.as_str())
                .bind(at)
                .bind(opt_text(result.error.as_deref()))
                .bind(id)
                .bind(&result.source)
                .execute(pool)
                .await?; });
        }
        Ok(())
    }

    /// Per source that was ever run: its last run's own result, and when it last went through
    /// without problems of its own (whatever started the run).
    pub async fn source_results(&self) -> Result<Vec<SourceResultRow>, StoreError> {
        let sql = "SELECT s.source_id, s.run_id, s.status, s.finished_at, s.error, \
                   (SELECT MAX(o.finished_at) FROM run_sources o WHERE o.source_id = s.source_id AND o.status = $1) \
                   AS last_success_at \
                   FROM run_sources s WHERE s.run_id = \
                   (SELECT MAX(l.run_id) FROM run_sources l WHERE l.source_id = s.source_id) ORDER BY s.source_id";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(RunStatus::Ok.as_str()).fetch_all(pool).await?))
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
