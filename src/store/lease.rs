//! Leases, fences and schedule slots: how the runs on one database keep to one writer per source —
//! a source's lease names the one run (its holder) that may write the source's items, judged by the
//! database's clock; every write of a run checks its fence in the same transaction; a scheduled fire
//! time is claimed by exactly one instance.

use std::time::Duration;

use serde::Serialize;

use super::{Store, StoreError, on_pool};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_at: String,
}

/// What a write of a run must still hold, checked inside the write's transaction: a write of a run
/// that lost its lease (or its claim on a shared batch) is refused, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Nothing to check (a store written outside any run, e.g. by tests).
    None,
    /// The lease `name` (`source:<id>`) is held by `holder` and has not expired.
    Lease { name: String, holder: String },
    /// `holder`'s claim on the shared batch `batch` has not expired and the batch is not done.
    Claim { batch: i64, holder: String },
}

impl Fence {
    /// The fence of a run's writes to one source's items.
    pub fn source(source_id: &str, holder: &str) -> Self {
        Fence::Lease { name: lease_name(source_id), holder: holder.to_owned() }
    }

    /// The query that reads the current holder, if the fence is still live.
    pub(crate) fn query(&self, store: &Store) -> Option<String> {
        let (now, lock) = (store.now_sql(), store.share_lock());
        match self {
            Fence::None => None,
            Fence::Lease { .. } => {
                Some(format!("SELECT holder FROM leases WHERE name = $1 AND expires_at > {now} {lock}"))
            }
            Fence::Claim { .. } => Some(format!(
                "SELECT holder FROM work_batches WHERE id = $1 AND done_at IS NULL AND claimed_until > {now} {lock}"
            )),
        }
    }

    /// Ok if `found` (the live holder read by [`Fence::query`]) is ours.
    pub(crate) fn verify(&self, found: Option<String>) -> Result<(), StoreError> {
        let (what, holder) = match self {
            Fence::None => return Ok(()),
            Fence::Lease { name, holder } => (format!("the lease {name}"), holder),
            Fence::Claim { batch, holder } => (format!("the claim on shared batch {batch}"), holder),
        };
        match found {
            Some(found) if &found == holder => Ok(()),
            Some(other) => Err(StoreError::LeaseLost(format!("{what} is held by {other} now, not by {holder}"))),
            None => Err(StoreError::LeaseLost(format!("{what} of {holder} has expired"))),
        }
    }
}

/// Checks `$fence` inside the open transaction `$tx` of `$store` (see [`Fence`]).
macro_rules! check_fence {
    ($store:expr, $tx:expr, $fence:expr) => {
        if let Some(sql) = $fence.query($store) {
            let found: Option<String> = match $fence {
                $crate::store::lease::Fence::Claim { batch, .. } => {
                    sqlx::query_scalar(&sql).bind(*batch).fetch_optional(&mut *$tx).await?
                }
                $crate::store::lease::Fence::Lease { name, .. } => {
                    sqlx::query_scalar(&sql).bind(name).fetch_optional(&mut *$tx).await?
                }
                $crate::store::lease::Fence::None => None,
            };
            $fence.verify(found)?;
        }
    };
}
pub(crate) use check_fence;

/// The name of a source's lease.
pub fn lease_name(source_id: &str) -> String {
    format!("source:{source_id}")
}

/// Milliseconds of a lease length, as bound to the queries.
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Takes or renews the lease `name` for `holder`, for `ttl` from the database's now. Succeeds if
    /// nobody holds it, `holder` does, or the other holder's lease has expired on the database's
    /// clock; otherwise returns the lease as the other holder has it.
    pub async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Result<(), Lease>, StoreError> {
        let sql = format!(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, {later}) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < {now}",
            later = self.later_sql("$3"),
            now = self.now_sql()
        );
        let taken = on_pool!(self, pool => sqlx::query(&sql).bind(name).bind(holder).bind(millis(ttl)).execute(pool).await?.rows_affected());
        if taken == 1 {
            return Ok(Ok(()));
        }
        let current = "SELECT name, holder, expires_at FROM leases WHERE name = $1";
        let lease: Option<Lease> =
            on_pool!(self, pool => sqlx::query_as(current).bind(name).fetch_optional(pool).await?);
        // Given back in between: the next attempt takes it.
        Ok(Err(lease.unwrap_or(Lease { name: name.into(), holder: String::new(), expires_at: String::new() })))
    }

    /// Extends `holder`'s lease `name` by `ttl` from the database's now; false if the lease is no
    /// longer `holder`'s (taken over after it expired, or removed).
    pub async fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let sql = format!("UPDATE leases SET expires_at = {} WHERE name = $1 AND holder = $2", self.later_sql("$3"));
        let renewed = on_pool!(self, pool => sqlx::query(&sql).bind(name).bind(holder).bind(millis(ttl)).execute(pool).await?.rows_affected());
        Ok(renewed == 1)
    }

    /// Gives a lease back (only if `holder` still holds it).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM leases WHERE name = $1 AND holder = $2";
        on_pool!(self, pool => { sqlx::query(sql).bind(name).bind(holder).execute(pool).await?; });
        Ok(())
    }

    /// Gives back every lease of `holder` (a run that was stopped from outside).
    pub async fn release_leases_of(&self, holder: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM leases WHERE holder = $1";
        on_pool!(self, pool => { sqlx::query(sql).bind(holder).execute(pool).await?; });
        Ok(())
    }

    /// Every lease, for `status`.
    pub async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let sql = "SELECT name, holder, expires_at FROM leases ORDER BY name";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Claims a scheduled fire time of a source; true for exactly one claimant.
    pub async fn claim_slot(&self, source_id: &str, slot: &str, holder: &str) -> Result<bool, StoreError> {
        let sql = "INSERT INTO schedule_slots (source_id, slot, holder) VALUES ($1, $2, $3) ON CONFLICT (source_id, slot) DO NOTHING";
        let affected = on_pool!(self, pool => sqlx::query(sql).bind(source_id).bind(slot).bind(holder).execute(pool).await?.rows_affected());
        Ok(affected == 1)
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
    async fn a_lease_goes_to_one_holder_until_it_expires_on_the_database_clock() {
        let (_dir, store) = store().await;
        let hour = Duration::from_secs(3600);
        assert_eq!(store.take_lease("source:a", "x#1", hour).await.unwrap(), Ok(()));
        assert_eq!(store.take_lease("source:a", "x#1", hour).await.unwrap(), Ok(()), "renewed by its holder");
        let busy = store.take_lease("source:a", "y#1", hour).await.unwrap().unwrap_err();
        assert_eq!(busy.holder, "x#1");
        assert!(busy.expires_at > store.now().await.unwrap(), "{busy:?}");
        assert!(store.renew_lease("source:a", "x#1", Duration::ZERO).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.take_lease("source:a", "y#1", hour).await.unwrap(), Ok(()), "expired: taken over");
        assert!(!store.renew_lease("source:a", "x#1", hour).await.unwrap(), "x lost it");
        store.release_lease("source:a", "x#1").await.unwrap();
        assert_eq!(store.leases().await.unwrap()[0].holder, "y#1", "only the holder gives a lease back");
        store.release_leases_of("y#1").await.unwrap();
        assert!(store.leases().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_fence_holds_while_its_lease_does() {
        let (_dir, store) = store().await;
        let fence = Fence::source("a", "x#1");
        let check = |store: &Store| {
            let (store, fence) = (store.clone(), fence.clone());
            async move {
                on_pool!(&store, pool => {
                    let mut tx = pool.begin().await?;
                    check_fence!(&store, tx, &fence);
                    tx.commit().await?;
                });
                Ok::<(), StoreError>(())
            }
        };
        assert!(matches!(check(&store).await, Err(StoreError::LeaseLost(m)) if m.contains("expired")));
        store.take_lease("source:a", "x#1", Duration::from_secs(60)).await.unwrap().unwrap();
        check(&store).await.unwrap();
        store.renew_lease("source:a", "x#1", Duration::ZERO).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        store.take_lease("source:a", "y#1", Duration::from_secs(60)).await.unwrap().unwrap();
        assert!(matches!(check(&store).await, Err(StoreError::LeaseLost(m)) if m.contains("held by y#1")));
        assert_eq!(Fence::None.query(&store), None, "nothing to check");
    }
}
