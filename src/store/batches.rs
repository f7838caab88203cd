//! Shared work: a large run's deliveries as batches that any instance on the database claims,
//! with `FOR UPDATE SKIP LOCKED` on PostgreSQL so that concurrent claimants never wait for or
//! take the same batch.

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

/// Selects the oldest open batch of a source that nobody holds (or whose claim expired at `$4`),
/// optionally of one run only (`$5`, 0 for any). `{lock}` is `FOR UPDATE SKIP LOCKED` on
/// PostgreSQL; SQLite has one writer at a time, which makes the single UPDATE atomic by itself.
const CLAIM: &str = "UPDATE work_batches SET holder = $1, claimed_until = $2 WHERE id = \
     (SELECT id FROM work_batches WHERE source_id = $3 AND done_at IS NULL \
      AND (holder IS NULL OR claimed_until < $4) AND ($5 = 0 OR run_id = $5) ORDER BY id LIMIT 1 {lock}) \
     RETURNING id, run_id, source_id, work";

impl Store {
    /// Adds a run's batches (pairs of work, work as JSON) in one transaction.
    pub async fn add_batches(
        &self,
        run_id: i64,
        source_id: &str,
        batches: &[(i64, String)],
        now: &str,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO work_batches (run_id, source_id, pairs, work, created_at) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (pairs, work) in batches {
                sqlx::query(sql).bind(run_id).bind(source_id).bind(pairs).bind(work).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Claims the oldest claimable batch of `source_id` (of `run_id` only, if given) for `holder`
    /// until `until`; `None` if there is none.
    pub async fn claim_batch(
        &self,
        source_id: &str,
        run_id: Option<i64>,
        holder: &str,
        until: &str,
        now: &str,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        let lock = match self {
            Store::Sqlite(_) => "",
            Store::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let sql = CLAIM.replace("{lock}", lock);
        let run = run_id.unwrap_or(0);
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(holder)
            .bind(until)
            .bind(source_id)
            .bind(now)
            .bind(run)
            .fetch_optional(pool)
            .await?))
    }

    /// Extends `holder`'s claim on a batch; false if the claim was lost (taken over after it
    /// expired) or the batch is done.
    pub async fn renew_batch(&self, id: i64, holder: &str, until: &str) -> Result<bool, StoreError> {
        let sql = "UPDATE work_batches SET claimed_until = $3 WHERE id = $1 AND holder = $2 AND done_at IS NULL";
        let affected = on_pool!(self, pool => sqlx::query(sql).bind(id).bind(holder).bind(until).execute(pool).await?.rows_affected());
        Ok(affected == 1)
    }

    /// Marks a batch done with its result; false if `holder` no longer held it (the result of
    /// whoever finished it first stands).
    pub async fn finish_batch(&self, id: i64, holder: &str, result: &str, now: &str) -> Result<bool, StoreError> {
        let sql = "UPDATE work_batches SET done_at = $3, result = $4 WHERE id = $1 AND holder = $2 AND done_at IS NULL";
        let affected = on_pool!(self, pool => sqlx::query(sql).bind(id).bind(holder).bind(now).bind(result).execute(pool).await?.rows_affected());
        Ok(affected == 1)
    }

    /// Every batch of a run's source, oldest first.
    pub async fn batches_of_run(&self, run_id: i64, source_id: &str) -> Result<Vec<BatchState>, StoreError> {
        let sql = "SELECT id, pairs, holder, done_at, result FROM work_batches \
                   WHERE run_id = $1 AND source_id = $2 ORDER BY id";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(run_id).bind(source_id).fetch_all(pool).await?))
    }

    /// Sources with batches that someone could claim at `now`.
    pub async fn sources_with_open_batches(&self, now: &str) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT source_id FROM work_batches \
                   WHERE done_at IS NULL AND (holder IS NULL OR claimed_until < $1) ORDER BY source_id";
        Ok(on_pool!(self, pool => sqlx::query_scalar(sql).bind(now).fetch_all(pool).await?))
    }

    /// Removes a source's batches except those someone is still working on (claimed, not
    /// expired at `now`, not done) and returns how many of those remain. Called by the instance
    /// that starts the source's next run: the batches of an interrupted run are redone by its scan.
    pub async fn clear_batches(&self, source_id: &str, now: &str) -> Result<i64, StoreError> {
        let delete = "DELETE FROM work_batches WHERE source_id = $1 \
                      AND (done_at IS NOT NULL OR holder IS NULL OR claimed_until < $2)";
        let active = "SELECT COUNT(*) FROM work_batches WHERE source_id = $1";
        Ok(on_pool!(self, pool => {
            sqlx::query(delete).bind(source_id).bind(now).execute(pool).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_batch_goes_to_one_claimant_until_its_claim_expires() {
        let (_dir, store) = store().await;
        store.add_batches(7, "feed", &[(2, "a".into()), (3, "b".into())], "t0").await.unwrap();
        let first = store.claim_batch("feed", None, "x", "t5", "t1").await.unwrap().unwrap();
        let second = store.claim_batch("feed", Some(7), "y", "t5", "t1").await.unwrap().unwrap();
        assert_eq!((first.work.as_str(), second.work.as_str()), ("a", "b"), "oldest first, each once");
        assert_eq!(store.claim_batch("feed", None, "z", "t5", "t1").await.unwrap(), None, "nothing left to claim");
        assert_eq!(store.claim_batch("feed", Some(8), "z", "t9", "t6").await.unwrap(), None, "other runs only");
        assert!(store.renew_batch(first.id, "x", "t8").await.unwrap());
        // y's claim expired at t6: z takes the batch over; y can neither renew nor finish it.
        let taken = store.claim_batch("feed", None, "z", "t9", "t6").await.unwrap().unwrap();
        assert_eq!(taken.id, second.id);
        assert!(!store.renew_batch(second.id, "y", "t9").await.unwrap());
        assert!(!store.finish_batch(second.id, "y", "{}", "t6").await.unwrap());
        assert!(store.finish_batch(second.id, "z", "{\"z\":1}", "t7").await.unwrap());
        assert!(!store.renew_batch(second.id, "z", "t9").await.unwrap(), "done is done");
        let states = store.batches_of_run(7, "feed").await.unwrap();
        assert_eq!(states[1].result.as_deref(), Some("{\"z\":1}"));
        assert_eq!(states.iter().map(|b| b.pairs).sum::<i64>(), 5);
        let claims = store.batch_claims().await.unwrap();
        assert_eq!(claims, [BatchClaims { holder: "x".into(), source_id: "feed".into(), batches: 1 }]);
        assert_eq!(store.sources_with_open_batches("t7").await.unwrap(), Vec::<String>::new());
        assert_eq!(store.sources_with_open_batches("t9").await.unwrap(), ["feed"], "x's claim lapses at t8");
        // A new run clears what is done or abandoned and waits for what is still being worked on.
        assert_eq!(store.clear_batches("feed", "t7").await.unwrap(), 1);
        assert_eq!(store.clear_batches("feed", "t9").await.unwrap(), 0);
    }
}
