//! Delivery intents: recorded before a delivery is sent, removed together with its outcome, so a
//! crash in between leaves a trace that the next start reconciles.

use serde::Serialize;

use super::lease::{Fence, check_fence};
use super::{BeginWrite, Store, StoreError, on_pool};

/// One delivery that was about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Intent {
    pub item_key: String,
    pub target: String,
    pub source_id: String,
    pub origin: String,
    /// `put` or `delete`.
    pub action: String,
    pub output_hash: String,
    pub idempotency_key: String,
    #[serde(skip)]
    pub body: Vec<u8>,
    /// `json` or `xml`.
    pub format: String,
    pub known_version: Option<String>,
    pub content_hash: Option<String>,
    pub mapping: Option<String>,
    pub mapping_version: Option<String>,
    pub adoptions: Option<String>,
    pub run_id: Option<i64>,
    pub created_at: String,
    /// How the target delivered when the intent was recorded: `outbox` (no body kept) or `http`;
    /// `None` for intents recorded before this was kept.
    pub delivery: Option<String>,
}

const COLUMNS: &str = "item_key, target, source_id, origin, action, output_hash, idempotency_key, body, format, \
     known_version, content_hash, mapping, mapping_version, adoptions, run_id, created_at, delivery";

impl Store {
    /// Records (or replaces) the intent for an item at a target, outside any run.
    pub async fn record_intent(&self, intent: &Intent) -> Result<(), StoreError> {
        self.record_fenced_intent(intent, &Fence::None).await
    }

    /// Records (or replaces) the intent for an item at a target if `fence` still holds; committed
    /// before anything is sent, so a run that lost its lease sends nothing more.
    pub async fn record_fenced_intent(&self, intent: &Intent, fence: &Fence) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO intents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (item_key, target) DO UPDATE SET action = excluded.action, output_hash = excluded.output_hash, \
             idempotency_key = excluded.idempotency_key, body = excluded.body, format = excluded.format, \
             known_version = excluded.known_version, content_hash = excluded.content_hash, mapping = excluded.mapping, \
             mapping_version = excluded.mapping_version, adoptions = excluded.adoptions, run_id = excluded.run_id, \
             created_at = excluded.created_at, origin = excluded.origin, source_id = excluded.source_id, \
             delivery = excluded.delivery"
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(self, tx, fence);
            sqlx::query(&sql)
                .bind(&intent.item_key)
                .bind(&intent.target)
                .bind(&intent.source_id)
                .bind(&intent.origin)
                .bind(&intent.action)
                .bind(&intent.output_hash)
                .bind(&intent.idempotency_key)
                .bind(&intent.body)
                .bind(&intent.format)
                .bind(&intent.known_version)
                .bind(&intent.content_hash)
                .bind(&intent.mapping)
                .bind(&intent.mapping_version)
                .bind(&intent.adoptions)
                .bind(intent.run_id)
                .bind(&intent.created_at)
                .bind(&intent.delivery)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every intent left behind (by a crash, or by a run that is still going), oldest first.
    pub async fn intents(&self) -> Result<Vec<Intent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM intents ORDER BY created_at, item_key, target");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?))
    }
}
