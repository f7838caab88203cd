//! Shared work: a large run's deliveries as batches that any instance on the database claims,
//! with `FOR UPDATE SKIP LOCKED` on PostgreSQL so that concurrent claimants never wait for or
//! take the same batch.

use std::time::Duration;

use serde::Serialize;

use super::{BeginWrite, Store, StoreError, on_pool};

/// A batch as one claimant got it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedBatch {
    pub id: i64,
    pub run_id: i64,
    pub source_id: String,
    /// What to do, as written by the coordinating instance (JSON).
    pub work: String,
}

/// A batch of a run as the coordinating instance watches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BatchState {
    pub id: i64,
    pub pairs: i64,
    pub holder: Option<String>,
    pub done_at: Option<String>,
    /// The claimant's result once done (JSON).
    pub result: Option<String>,
}

/// Claimed batches per holder and source, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BatchClaims {
    pub holder: String,
    pub source_id: String,
    pub batches: i64,
}

impl Store {
    /// Adds a run's batches (pairs of work, work as JSON) in one transaction.
    pub async fn add_batches(&self, run_id: i64, source_id: &str, batches: &[(i64, String)]) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO work_batches (run_id, source_id, pairs, work, created_at) VALUES ($1, $2, $3, $4, {})",
            self.now_sql()
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (pairs, work) in batches {
                sqlx::query(&sql).bind(run_id).bind(source_id).bind(pairs).bind(work).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Claims the oldest claimable batch of `source_id` (of `run_id` only, if given) for `holder`
    /// for `claim` (on the database's clock): one nobody holds or whose claim expired. Batches of
    /// runs whose holder starts with `not_of` are left alone (an instance's helper leaves its own
    /// runs' batches to them). `None` if there is none. On PostgreSQL `FOR UPDATE SKIP LOCKED`
    /// keeps concurrent claimants apart; SQLite has one writer at a time, which makes the single
    /// UPDATE atomic by itself.
    pub async fn claim_batch(
        &self,
        source_id: &str,
        run_id: Option<i64>,
        holder: &str,
        claim: Duration,
        not_of: Option<&str>,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        let lock = match self {
            Store::Sqlite(_) => "",
            Store::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE work_batches SET holder = $1, claimed_until = {later} WHERE id = \
             (SELECT b.id FROM work_batches b WHERE b.source_id = $3 AND b.done_at IS NULL \
              AND (b.holder IS NULL OR b.claimed_until < {now}) AND ($4 = 0 OR b.run_id = $4) \
              AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = b.run_id AND r.holder LIKE $5) \
              ORDER BY b.id LIMIT 1 {lock}) \
             RETURNING id, run_id, source_id, work",
            later = self.later_sql("$2"),
            now = self.now_sql()
        );
        let run = run_id.unwrap_or(0);
        // A pattern no holder matches when there is nobody to leave out.
        let not_of = not_of.map_or(String::new(), |prefix| format!("{prefix}%"));
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(holder)
            .bind(millis(claim))
            .bind(source_id)
            .bind(run)
            .bind(&not_of)
            .fetch_optional(pool)
            .await?))
    }

    /// Extends `holder`'s claim on a batch by `claim` from the database's now; false if the claim
    /// was lost (taken over after it expired) or the batch is done.
    pub async fn renew_batch(&self, id: i64, holder: &str, claim: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE work_batches SET claimed_until = {} WHERE id = $1 AND holder = $2 AND done_at IS NULL",
            self.later_sql("$3")
        );
        let affected = on_pool!(self, pool => sqlx::query(&sql).bind(id).bind(holder).bind(millis(claim)).execute(pool).await?.rows_affected());
        Ok(affected == 1)
    }

    /// Marks a batch done with its result; false if `holder` no longer held it (the result of
    /// whoever finished it first stands).
    pub async fn finish_batch(&self, id: i64, holder: &str, result: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE work_batches SET done_at = {}, result = $3 WHERE id = $1 AND holder = $2 AND done_at IS NULL",
            self.now_sql()
        );
        let affected = on_pool!(self, pool => sqlx::query(&sql).bind(id).bind(holder).bind(result).execute(pool).await?.rows_affected());
        Ok(affected == 1)
    }

    /// Every batch of a run's source, oldest first.
    pub async fn batches_of_run(&self, run_id: i64, source_id: &str) -> Result<Vec<BatchState>, StoreError> {
        let sql = "SELECT id, pairs, holder, done_at, result FROM work_batches \
                   WHERE run_id = $1 AND source_id = $2 ORDER BY id";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(run_id).bind(source_id).fetch_all(pool).await?))
    }

    /// Sources with batches that someone could claim now.
    pub async fn sources_with_open_batches(&self) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT source_id FROM work_batches \
             WHERE done_at IS NULL AND (holder IS NULL OR claimed_until < {}) ORDER BY source_id",
            self.now_sql()
        );
        Ok(on_pool!(self, pool => sqlx::query_scalar(&sql).fetch_all(pool).await?))
    }

    /// Removes a source's batches except those someone is still working on (claimed, not
    /// expired, not done) and returns how many of those remain. Called by the run that starts on the
    /// source next: the batches of an interrupted run are redone by its scan.
    pub async fn clear_batches(&self, source_id: &str) -> Result<i64, StoreError> {
        let delete = format!(
            "DELETE FROM work_batches WHERE source_id = $1 \
             AND (done_at IS NOT NULL OR holder IS NULL OR claimed_until < {})",
            self.now_sql()
        );
        let active = "SELECT COUNT(*) FROM work_batches WHERE source_id = $1";
        Ok(on_pool!(self, pool => {
            sqlx::query(&delete).bind(source_id).execute(pool).await?;
            sqlx::query_scalar(active).bind(source_id).fetch_one(pool).await?
        }))
    }

    /// Batches currently claimed and not done, per holder and source.
    pub async fn batch_claims(&self) -> Result<Vec<BatchClaims>, StoreError> {
        let sql = "SELECT holder, source_id, COUNT(*) AS batches FROM work_batches \
                   WHERE holder IS NOT NULL AND done_at IS NULL GROUP BY holder, source_id ORDER BY holder, source_id";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }
}

/// Milliseconds of a claim's length, as bound to the queries.
fn millis(claim: Duration) -> i64 {
    i64::try_from(claim.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_batch_goes_to_one_claimant_until_its_claim_expires_on_the_database_clock() {
        let (_dir, store) = store().await;
        let (long, gone) = (Duration::from_secs(3600), Duration::ZERO);
        store.add_batches(7, "feed", &[(2, "a".into()), (3, "b".into())]).await.unwrap();
        let first = store.claim_batch("feed", None, "x", long, None).await.unwrap().unwrap();
        let second = store.claim_batch("feed", Some(7), "y", gone, None).await.unwrap().unwrap();
        assert_eq!((first.work.as_str(), second.work.as_str()), ("a", "b"), "oldest first, each once");
        assert_eq!(store.claim_batch("feed", Some(8), "z", long, None).await.unwrap(), None, "other runs only");
        assert!(store.renew_batch(first.id, "x", long).await.unwrap());
        // y's claim has expired: z takes the batch over; y can neither renew nor finish it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.sources_with_open_batches().await.unwrap(), ["feed"], "y's claim lapsed");
        let taken = store.claim_batch("feed", None, "z", long, None).await.unwrap().unwrap();
        assert_eq!(taken.id, second.id);
        assert_eq!(store.claim_batch("feed", None, "w", long, None).await.unwrap(), None, "nothing left to claim");
        assert!(!store.renew_batch(second.id, "y", long).await.unwrap());
        assert!(!store.finish_batch(second.id, "y", "{}").await.unwrap());
        assert!(store.finish_batch(second.id, "z", "{\"z\":1}").await.unwrap());
        assert!(!store.renew_batch(second.id, "z", long).await.unwrap(), "done is done");
        let states = store.batches_of_run(7, "feed").await.unwrap();
        assert_eq!(states[1].result.as_deref(), Some("{\"z\":1}"));
        assert_eq!(states.iter().map(|b| b.pairs).sum::<i64>(), 5);
        let claims = store.batch_claims().await.unwrap();
        assert_eq!(claims, [BatchClaims { holder: "x".into(), source_id: "feed".into(), batches: 1 }]);
        assert_eq!(store.sources_with_open_batches().await.unwrap(), Vec::<String>::new());
        // A new run clears what is done or abandoned and waits for what is still being worked on.
        assert_eq!(store.clear_batches("feed").await.unwrap(), 1);
        assert!(store.renew_batch(first.id, "x", gone).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.clear_batches("feed").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_helper_leaves_the_batches_of_its_own_instances_runs_alone() {
        let (_dir, store) = store().await;
        let run = store.start_held_run(crate::domain::Trigger::Api, &["feed".into()], Some("host:1:aa#3"), "t").await;
        let run = run.unwrap();
        store.add_batches(run, "feed", &[(2, "a".into())]).await.unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(store.claim_batch("feed", None, "host:1:aa", hour, Some("host:1:aa#")).await.unwrap(), None);
        let other = store.claim_batch("feed", None, "host:2:bb", hour, Some("host:2:bb#")).await.unwrap();
        assert_eq!(other.map(|b| b.run_id), Some(run));
    }
}
