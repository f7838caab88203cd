//! The codelist cache: genericode lists fetched from XRepository, kept so that later runs need no network.

use super::{Store, StoreError, on_pool};

/// One fetched list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CachedCodelist {
    pub canonical_version_uri: String,
    /// The genericode bytes as fetched.
    pub body: Vec<u8>,
    pub fetched_at: String,
}

impl Store {
    /// Every cached list, by `canonicalVersionUri`.
    pub async fn cached_codelists(&self) -> Result<Vec<CachedCodelist>, StoreError> {
        let sql = "SELECT canonical_version_uri, body, fetched_at FROM codelist_cache ORDER BY canonical_version_uri";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Stores (or replaces) a fetched list.
    pub async fn cache_codelist(&self, list: &CachedCodelist) -> Result<(), StoreError> {
        let sql = "INSERT INTO codelist_cache (canonical_version_uri, body, fetched_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (canonical_version_uri) DO UPDATE SET body = excluded.body, fetched_at = excluded.fetched_at";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&list.canonical_version_uri)
                .bind(&list.body)
                .bind(&list.fetched_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
