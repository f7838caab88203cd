//! The scan cache: per entry of a source, what pass 1 made of its bytes last time, so that an
//! unchanged entry is hashed, not decoded.

use std::collections::HashMap;

use super::{BeginWrite, Store, StoreError, on_pool};

/// One entry's cached scan.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CachedScan {
    pub origin: String,
    /// SHA-256 of the entry's bytes.
    pub raw_hash: String,
    /// The source's scan fingerprint at the time.
    pub fingerprint: String,
    /// The records as the scan found them (JSON, the pipeline's format).
    pub records: String,
}

/// Rows written per transaction.
const CHUNK: usize = 500;

impl Store {
    /// Every cached scan of a source, by origin.
    pub async fn scan_cache(&self, source_id: &str) -> Result<HashMap<String, CachedScan>, StoreError> {
        let sql = "SELECT origin, raw_hash, fingerprint, records FROM scan_cache WHERE source_id = $1";
        let rows: Vec<CachedScan> = on_pool!(self, pool => sqlx::query_as(sql).bind(source_id).fetch_all(pool).await?);
        Ok(rows.into_iter().map(|row| (row.origin.clone(), row)).collect())
    }

    /// Stores the scans of `fresh` entries and forgets `gone` ones, a few hundred per transaction.
    pub async fn update_scan_cache(
        &self,
        source_id: &str,
        fresh: &[CachedScan],
        gone: &[String],
    ) -> Result<(), StoreError> {
        let upsert = "INSERT INTO scan_cache (source_id, origin, raw_hash, fingerprint, records) \
                      VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source_id, origin) DO UPDATE SET \
                      raw_hash = excluded.raw_hash, fingerprint = excluded.fingerprint, records = excluded.records";
        let delete = "DELETE FROM scan_cache WHERE source_id = $1 AND origin = $2";
        for chunk in fresh.chunks(CHUNK) {
            on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                for row in chunk {
                    sqlx::query(upsert)
                        .bind(source_id)
                        .bind(&row.origin)
                        .bind(&row.raw_hash)
                        .bind(&row.fingerprint)
                        .bind(&row.records)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
        }
        for chunk in gone.chunks(CHUNK) {
            on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                for origin in chunk {
                    sqlx::query(delete).bind(source_id).bind(origin).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }
}
