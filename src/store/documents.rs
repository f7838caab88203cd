//! Delivered documents: the last two versions per item and target, kept so that a person can see what changed.

use serde::Serialize;

use super::{BeginWrite, Store, StoreError, on_pool};

/// How many delivered versions are kept per item and target.
pub const KEPT_VERSIONS: i64 = 2;

/// A delivered document to keep.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub item_key: String,
    pub target: String,
    pub output_hash: String,
    pub body: bytes::Bytes,
    pub delivered_at: String,
}

pub(crate) const LATEST: &str =
    "SELECT output_hash FROM documents WHERE item_key = $1 AND target = $2 ORDER BY id DESC LIMIT 1";
pub(crate) const INSERT: &str =
    "INSERT INTO documents (item_key, target, output_hash, body, delivered_at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const PRUNE: &str = "DELETE FROM documents WHERE item_key = $1 AND target = $2 AND id NOT IN \
                     (SELECT id FROM documents WHERE item_key = $1 AND target = $2 ORDER BY id DESC LIMIT $3)";

/// Keeps `doc` inside the transaction `tx`: see [`Store::record_document`].
macro_rules! keep_document {
    ($tx:expr, $doc:expr) => {{
        let doc = $doc;
        let newest: Option<String> =
            sqlx::query_scalar(LATEST).bind(&doc.item_key).bind(&doc.target).fetch_optional(&mut *$tx).await?;
        if newest.as_deref() != Some(doc.output_hash.as_str()) {
            sqlx::query(INSERT)
                .bind(&doc.item_key)
                .bind(&doc.target)
                .bind(&doc.output_hash)
                .bind(&doc.body[..])
                .bind(&doc.delivered_at)
                .execute(&mut *$tx)
                .await?;
            sqlx::query(PRUNE).bind(&doc.item_key).bind(&doc.target).bind(KEPT_VERSIONS).execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use keep_document;

/// One delivered document as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DocumentRow {
    pub item_key: String,
    pub target: String,
    pub output_hash: String,
    /// The bytes delivered (JSON or XML text).
    pub body: Vec<u8>,
    pub delivered_at: String,
}

impl Store {
    /// Keeps a delivered document; older versions beyond [`KEPT_VERSIONS`] of the same item and
    /// target are removed in the same transaction. Delivering the newest version again (same
    /// output hash, e.g. `migrate --force`) changes nothing, so the previous version stays for the diff.
    /// Runs hand the documents they delivered to [`Store::write_batch`] instead, which keeps
    /// them in the batch's transaction.
    pub async fn record_document(
        &self,
        item_key: &str,
        target: &str,
        output_hash: &str,
        body: &[u8],
        delivered_at: &str,
    ) -> Result<(), StoreError> {
        let doc = &NewDocument {
            item_key: item_key.into(),
            target: target.into(),
            output_hash: output_hash.into(),
            body: bytes::Bytes::copy_from_slice(body),
            delivered_at: delivered_at.into(),
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            keep_document!(tx, doc);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The last `n` delivered documents of an item at a target, newest first.
    pub async fn last_documents(&self, item_key: &str, target: &str, n: i64) -> Result<Vec<DocumentRow>, StoreError> {
        let sql = "SELECT item_key, target, output_hash, body, delivered_at FROM documents \
                   WHERE item_key = $1 AND target = $2 ORDER BY id DESC LIMIT $3";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(item_key).bind(target).bind(n).fetch_all(pool).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_two_versions_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let key = "aachen-forms/S05000101@1.0";
        for (i, hash) in ["h1", "h2", "h2", "h3"].iter().enumerate() {
            let body = format!("version {hash}");
            store
                .record_document(key, "form-platform", hash, body.as_bytes(), &format!("2024-01-0{}T00:00:00Z", i + 1))
                .await
                .unwrap();
        }
        store.record_document(key, "portal-xml", "x1", b"<x/>", "2024-01-01T00:00:00Z").await.unwrap();
        let docs = store.last_documents(key, "form-platform", 10).await.unwrap();
        let hashes: Vec<&str> = docs.iter().map(|d| d.output_hash.as_str()).collect();
        assert_eq!(hashes, ["h3", "h2"], "newest first, two kept, a repeated delivery is not a version");
        assert_eq!(docs[1].body, b"version h2");
        assert_eq!(docs[1].delivered_at, "2024-01-02T00:00:00Z");
        assert_eq!(store.last_documents(key, "portal-xml", 2).await.unwrap().len(), 1);
        assert!(store.last_documents("other/x", "portal-xml", 2).await.unwrap().is_empty());
    }
}
