//! Plans as stored: the plan, its entries (one per item and target), their content-addressed documents and the decisions on it.

use serde::Serialize;

use super::{Store, StoreError, on_pool, opt_text, text};

/// A plan's life: made `open`; `approved` once enough people other than the author approved (or
/// at once when the policy asks for nobody); `rejected` by any one rejection; `applying` while a
/// run delivers it; `applied` when that run ended; `expired` when nobody applied it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Open,
    Approved,
    Rejected,
    Applying,
    Applied,
    Expired,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Open => "open",
            PlanStatus::Approved => "approved",
            PlanStatus::Rejected => "rejected",
            PlanStatus::Applying => "applying",
            PlanStatus::Applied => "applied",
            PlanStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "open" => PlanStatus::Open,
            "approved" => PlanStatus::Approved,
            "rejected" => PlanStatus::Rejected,
            "applying" => PlanStatus::Applying,
            "applied" => PlanStatus::Applied,
            "expired" => PlanStatus::Expired,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PlanStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan as stored (without its entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PlanRow {
    pub id: i64,
    pub author: String,
    pub created_at: String,
    pub expires_at: String,
    pub status: String,
    /// The job it was made from, JSON.
    pub job: String,
    /// Counts per action, JSON.
    pub summary: String,
    pub approvals_needed: i64,
    /// Why the policy asks for approval, a JSON list.
    pub policy_reasons: String,
    pub run_id: Option<i64>,
    pub applied_run_id: Option<i64>,
    pub updated_at: String,
}

/// What a new plan carries besides its entries.
#[derive(Debug, Clone)]
pub struct NewPlan<'a> {
    pub author: &'a str,
    pub created_at: &'a str,
    pub expires_at: &'a str,
    pub status: PlanStatus,
    pub job: &'a str,
    pub summary: &'a str,
    pub approvals_needed: i64,
    pub policy_reasons: &'a str,
    pub run_id: Option<i64>,
}

/// One item and target of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PlanEntry {
    pub item_key: String,
    pub target: String,
    pub source_id: String,
    pub origin: String,
    /// `create`, `update` or `withdraw`.
    pub action: String,
    /// SHA-256 (hex) of the planned document; `None` for a withdrawal.
    pub document_hash: Option<String>,
    /// `json` or `xml`.
    pub format: String,
    /// The target's version of what was last delivered, which the change builds on.
    pub base_version: Option<String>,
    /// Our output hash of what was last delivered.
    pub base_hash: Option<String>,
    /// Unified diff against what was last delivered.
    pub diff: String,
    /// JSON list of the mapping's warnings.
    pub warnings: String,
    /// JSON object: content hash, mapping and its version, settings hash, adoptions.
    pub inputs: String,
    /// `planned`, `applied`, `conflict` or `failed`.
    pub state: String,
    pub message: Option<String>,
}

/// A decision on a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Decision {
    pub who: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub reason: String,
    pub at: String,
}

const PLAN_COLUMNS: &str = "id, author, created_at, expires_at, status, job, summary, approvals_needed, \
     policy_reasons, run_id, applied_run_id, updated_at";
const ENTRY_COLUMNS: &str = "item_key, target, source_id, origin, action, document_hash, format, base_version, \
     base_hash, diff, warnings, inputs, state, message";

/// SHA-256 of a planned document, hex: its key in `plan_documents`.
pub fn document_hash(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

impl Store {
    /// Stores a plan with its entries and documents in one transaction and returns its id. A
    /// document already stored (by this plan or another) is stored once. `entries` pairs each
    /// entry with its document's body; the entry's `document_hash` is set from the body.
    pub async fn create_plan(
        &self,
        plan: &NewPlan<'_>,
        entries: &[(PlanEntry, Option<Vec<u8>>)],
    ) -> Result<i64, StoreError> {
        let insert_plan = "INSERT INTO plans (author, created_at, expires_at, status, job, summary, approvals_needed, \
             policy_reasons, run_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $2) RETURNING id";
        let insert_document = "INSERT INTO plan_documents (hash, body) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING";
        let insert_entry = format!(
            "INSERT INTO plan_entries (plan_id, {ENTRY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        on_pool!(self, pool => {
            use super::BeginWrite;
            let mut tx = pool.begin_write().await?;
            let (id,): (i64,) = sqlx::query_as(insert_plan)
                .bind(text(plan.author))
                .bind(plan.created_at)
                .bind(plan.expires_at)
                .bind(plan.status.as_str())
                .bind(plan.job)
                .bind(plan.summary)
                .bind(plan.approvals_needed)
                .bind(plan.policy_reasons)
                .bind(plan.run_id)
                .fetch_one(&mut *tx)
                .await?;
            for (entry, body) in entries {
                let hash = body.as_deref().map(document_hash);
                if let (Some(hash), Some(body)) = (&hash, body) {
                    sqlx::query(insert_document).bind(hash).bind(body).execute(&mut *tx).await?;
                }
                sqlx::query(&insert_entry)
                    .bind(id)
                    .bind(&entry.item_key)
                    .bind(&entry.target)
                    .bind(&entry.source_id)
                    .bind(&entry.origin)
                    .bind(&entry.action)
                    .bind(&hash)
                    .bind(&entry.format)
                    .bind(&entry.base_version)
                    .bind(&entry.base_hash)
                    .bind(text(&entry.diff))
                    .bind(text(&entry.warnings))
                    .bind(&entry.inputs)
                    .bind(&entry.state)
                    .bind(opt_text(entry.message.as_deref()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(id)
        })
    }

    /// One plan, if it exists.
    pub async fn plan(&self, id: i64) -> Result<Option<PlanRow>, StoreError> {
        let sql = format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    /// The newest plans first, at most `limit`, only those of `status` if given.
    pub async fn plans(&self, status: Option<PlanStatus>, limit: i64) -> Result<Vec<PlanRow>, StoreError> {
        let sql =
            format!("SELECT {PLAN_COLUMNS} FROM plans WHERE ($1 IS NULL OR status = $1) ORDER BY id DESC LIMIT $2");
        let status = status.map(PlanStatus::as_str);
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(status).bind(limit).fetch_all(pool).await?))
    }

    /// A plan's entries in item and target order.
    pub async fn plan_entries(&self, id: i64) -> Result<Vec<PlanEntry>, StoreError> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM plan_entries WHERE plan_id = $1 ORDER BY item_key, target");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_all(pool).await?))
    }

    /// A planned document by its hash.
    pub async fn plan_document(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = "SELECT body FROM plan_documents WHERE hash = $1";
        let row: Option<(Vec<u8>,)> =
            on_pool!(self, pool => sqlx::query_as(sql).bind(hash).fetch_optional(pool).await?);
        Ok(row.map(|(body,)| body))
    }

    /// Moves a plan from `from` to `to` if it is still in `from`; false if someone else moved it
    /// first (the caller reads it again and says why).
    pub async fn set_plan_status(
        &self,
        id: i64,
        from: PlanStatus,
        to: PlanStatus,
        at: &str,
        applied_run_id: Option<i64>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE plans SET status = $1, updated_at = $2, applied_run_id = COALESCE($3, applied_run_id) \
                   WHERE id = $4 AND status = $5";
        let done = on_pool!(self, pool => sqlx::query(sql)
            .bind(to.as_str())
            .bind(at)
            .bind(applied_run_id)
            .bind(id)
            .bind(from.as_str())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Records how an entry was applied.
    pub async fn set_entry_state(
        &self,
        id: i64,
        item_key: &str,
        target: &str,
        state: &str,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql =
            "UPDATE plan_entries SET state = $1, message = $2 WHERE plan_id = $3 AND item_key = $4 AND target = $5";
        on_pool!(self, pool => {
            sqlx::query(sql).bind(state).bind(opt_text(message)).bind(id).bind(item_key).bind(target).execute(pool).await?;
        });
        Ok(())
    }

    /// Every decision on a plan, oldest first.
    pub async fn decisions(&self, id: i64) -> Result<Vec<Decision>, StoreError> {
        let sql = "SELECT who, decision, reason, at FROM plan_decisions WHERE plan_id = $1 ORDER BY at, who";
        Ok(on_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_all(pool).await?))
    }

    /// Marks every `open` or `approved` plan that expired before `now` as `expired`; returns how many.
    pub async fn expire_plans(&self, now: &str) -> Result<u64, StoreError> {
        let sql = "UPDATE plans SET status = 'expired', updated_at = $1 \
                   WHERE status IN ('open', 'approved') AND expires_at < $1";
        Ok(on_pool!(self, pool => sqlx::query(sql).bind(now).execute(pool).await?.rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, action: &str) -> PlanEntry {
        PlanEntry {
            item_key: key.into(),
            target: "portal-xml".into(),
            source_id: "aachen-forms".into(),
            origin: "a.xml".into(),
            action: action.into(),
            document_hash: None,
            format: "xml".into(),
            base_version: None,
            base_hash: None,
            diff: String::new(),
            warnings: "[]".into(),
            inputs: "{}".into(),
            state: "planned".into(),
            message: None,
        }
    }

    fn new_plan<'a>(author: &'a str) -> NewPlan<'a> {
        NewPlan {
            author,
            created_at: "2026-12-07T10:00:00Z",
            expires_at: "2026-12-08T10:00:00Z",
            status: PlanStatus::Open,
            job: "{}",
            summary: "{}",
            approvals_needed: 1,
            policy_reasons: "[]",
            run_id: None,
        }
    }

    #[tokio::test]
    async fn a_plan_keeps_its_entries_and_stores_a_shared_document_once() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let body = b"<a/>".to_vec();
        let entries = vec![
            (entry("aachen-forms/b", "update"), Some(body.clone())),
            (entry("aachen-forms/a", "create"), Some(body.clone())),
            (entry("aachen-forms/c", "withdraw"), None),
        ];
        let id = store.create_plan(&new_plan("alice"), &entries).await.unwrap();
        let second = store.create_plan(&new_plan("bob"), &entries[..1]).await.unwrap();
        assert_ne!(id, second);

        let stored = store.plan_entries(id).await.unwrap();
        let keys: Vec<_> = stored.iter().map(|e| (e.item_key.as_str(), e.action.as_str())).collect();
        assert_eq!(keys, [("aachen-forms/a", "create"), ("aachen-forms/b", "update"), ("aachen-forms/c", "withdraw")]);
        let hash = stored[0].document_hash.clone().unwrap();
        assert_eq!(hash, document_hash(&body));
        assert_eq!(stored[2].document_hash, None);
        assert_eq!(store.plan_document(&hash).await.unwrap(), Some(body));
        let count: (i64,) = on_pool!(&store, pool => sqlx::query_as("SELECT COUNT(*) FROM plan_documents").fetch_one(pool).await.unwrap());
        assert_eq!(count.0, 1, "one body, stored once");

        let listed: Vec<_> = store.plans(Some(PlanStatus::Open), 10).await.unwrap().iter().map(|p| p.id).collect();
        assert_eq!(listed, [second, id], "newest first");
    }

    #[tokio::test]
    async fn a_status_moves_only_from_where_the_caller_saw_it() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let id = store.create_plan(&new_plan("alice"), &[]).await.unwrap();
        let at = "2026-12-07T11:00:00Z";
        assert!(store.set_plan_status(id, PlanStatus::Open, PlanStatus::Approved, at, None).await.unwrap());
        assert!(!store.set_plan_status(id, PlanStatus::Open, PlanStatus::Rejected, at, None).await.unwrap());
        assert!(store.set_plan_status(id, PlanStatus::Approved, PlanStatus::Applying, at, Some(7)).await.unwrap());
        let plan = store.plan(id).await.unwrap().unwrap();
        assert_eq!((plan.status.as_str(), plan.applied_run_id, plan.updated_at.as_str()), ("applying", Some(7), at));
    }

    #[tokio::test]
    async fn decisions_are_one_per_person_and_plans_expire() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let id = store.create_plan(&new_plan("alice"), &[]).await.unwrap();
        let decide = |who: &str, decision: &str, at: &str| Decision {
            who: who.into(),
            decision: decision.into(),
            reason: format!("{who} says {decision}"),
            at: at.into(),
        };
        let event = crate::store::operator::OperatorEvent {
            at: "2026-12-07T10:01:00Z".into(),
            run_id: None,
            item_key: None,
            target: None,
            actor: "bob".into(),
            reason: None,
            message: "decided".into(),
        };
        let stays_open = |_: &[Decision]| PlanStatus::Open;
        let first = decide("bob", "reject", "2026-12-07T10:01:00Z");
        store.decide_plan_logged(id, &first, &stays_open, &event).await.unwrap();
        let second = decide("bob", "approve", "2026-12-07T10:02:00Z");
        let seen = std::sync::Mutex::new(Vec::new());
        let approve = |all: &[Decision]| {
            seen.lock().unwrap().extend_from_slice(all);
            PlanStatus::Approved
        };
        let status = store.decide_plan_logged(id, &second, &approve, &event).await.unwrap();
        assert_eq!(status, Some(PlanStatus::Approved));
        let all = seen.lock().unwrap().clone();
        assert_eq!(all.len(), 1, "one decision per person: {all:?}");
        assert_eq!(all[0].decision, "approve");
        assert_eq!(store.decisions(id).await.unwrap(), all);
        // A plan that is not open any more takes no decision.
        let late = decide("carol", "approve", "2026-12-07T10:03:00Z");
        assert_eq!(store.decide_plan_logged(id, &late, &approve, &event).await.unwrap(), None);
        assert_eq!(store.decisions(id).await.unwrap().len(), 1);
        store.set_plan_status(id, PlanStatus::Approved, PlanStatus::Open, "2026-12-07T10:04:00Z", None).await.unwrap();

        assert_eq!(store.expire_plans("2026-12-08T09:00:00Z").await.unwrap(), 0);
        assert_eq!(store.expire_plans("2026-12-08T11:00:00Z").await.unwrap(), 1);
        assert_eq!(store.plan(id).await.unwrap().unwrap().status, "expired");
    }
}
