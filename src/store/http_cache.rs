//! The HTTP cache: validators (ETag, Last-Modified) and the last body per source URL, for conditional GET.

use super::{Store, StoreError, on_pool};

/// What was stored for a URL after its last successful fetch.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CachedPage {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub body: Vec<u8>,
}

impl Store {
    pub async fn cached_page(&self, source_id: &str, url: &str) -> Result<Option<CachedPage>, StoreError> {
        let sql = "SELECT etag, last_modified, body FROM http_cache WHERE source_id = $1 AND url = $2";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(source_id).bind(url).fetch_optional(pool).await?))
    }

    pub async fn store_page(&self, source_id: &str, url: &str, page: &CachedPage, at: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO http_cache (source_id, url, etag, last_modified, body, fetched_at) VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT (source_id, url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified, \
                   body = excluded.body, fetched_at = excluded.fetched_at";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(source_id)
                .bind(url)
                .bind(&page.etag)
                .bind(&page.last_modified)
                .bind(&page.body)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
