//! Leases and schedule slots: how several daemons on one database share the work without a
//! coordination service — a source's lease names the one instance that runs it, and a scheduled
//! fire time is claimed by exactly one instance.

use serde::Serialize;

use super::{Store, StoreError, on_pool};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub expires_at: String,
}

impl Store {
    /// Takes or renews the lease `name` for `holder` until `expires_at`; succeeds if nobody else
    /// holds it or their lease expired before `now`. Timestamps are RFC 3339 UTC text, which
    /// compares in time order.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        expires_at: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                   WHERE leases.holder = excluded.holder OR leases.expires_at < $4";
        let affected = on_pool!(self, pool => sqlx::query(sql).bind(name).bind(holder).bind(expires_at).bind(now).execute(pool).await?.rows_affected());
        Ok(affected == 1)
    }

    /// Gives a lease back (only if `holder` still holds it).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM leases WHERE name = $1 AND holder = $2";
        on_pool!(self, pool => { sqlx::query(sql).bind(name).bind(holder).execute(pool).await?; });
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
