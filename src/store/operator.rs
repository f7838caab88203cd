//! An operator's writes: each change and its event in the migration log (who, why) in one
//! transaction, so that the log holds exactly what happened; item changes fenced by the source's lease.

use super::audit::{Chained, Entry};
use super::lease::{Fence, check_fence};
use super::plans::{Decision, PlanStatus};
use super::{BeginWrite, Store, StoreError, on_pool, opt_text, text};
use crate::domain::{Level, Stage};

/// An operator's action as the migration log keeps it (stage `operator`, level `info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEvent {
    pub at: String,
    /// The run the action started or changed, if any.
    pub run_id: Option<i64>,
    pub item_key: Option<String>,
    pub target: Option<String>,
    /// Who: the admin token's name, or the OS user of the command line.
    pub actor: String,
    /// Why, as the operator said (some actions need no reason).
    pub reason: Option<String>,
    pub message: String,
}

/// Appends `$event` to the audit chain inside the transaction `$tx`.
macro_rules! insert_event {
    ($tx:expr, $event:expr) => {{
        let message = text(&$event.message);
        let actor = text(&$event.actor);
        let reason = opt_text($event.reason.as_deref());
        let entry = Entry {
            at: &$event.at,
            run_id: $event.run_id,
            item_key: $event.item_key.as_deref(),
            target: $event.target.as_deref(),
            stage: Stage::Operator.as_str(),
            level: Level::Info.as_str(),
            message: &message,
            actor: Some(&actor),
            reason: reason.as_deref(),
        };
        $tx.append_chained(&entry).await?
    }};
}

impl Store {
    /// Appends operator events, all or none.
    pub async fn append_operator_events(&self, events: &[OperatorEvent]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for event in events {
                insert_event!(tx, event);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// An operator's skip with its event, while `fence` holds: the item is left alone while its
    /// content stays as it is now. False (and nothing logged) if the ledger has no such item.
    pub async fn skip_item_logged(
        &self,
        item_key: &str,
        note: &str,
        fence: &Fence,
        event: &OperatorEvent,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE items SET skip_reason = $1, skip_hash = content_hash, updated_at = $2 WHERE item_key = $3";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(self, tx, fence);
            let changed =
                sqlx::query(sql).bind(text(note)).bind(&event.at).bind(item_key).execute(&mut *tx).await?.rows_affected();
            if changed == 0 {
                return Ok(false);
            }
            insert_event!(tx, event);
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Undoes an operator's skip with its event, while `fence` holds: the next run treats the item
    /// as any other. False (and nothing logged) if no row of the item is skipped.
    pub async fn unskip_item_logged(
        &self,
        item_key: &str,
        fence: &Fence,
        event: &OperatorEvent,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE items SET skip_reason = NULL, skip_hash = NULL, updated_at = $1 \
                   WHERE item_key = $2 AND skip_reason IS NOT NULL";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(self, tx, fence);
            let changed = sqlx::query(sql).bind(&event.at).bind(item_key).execute(&mut *tx).await?.rows_affected();
            if changed == 0 {
                return Ok(false);
            }
            insert_event!(tx, event);
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Prepares a conflict for overwriting, with its event: the portal's current version becomes
    /// the one we replace (`If-Match`), and the item is due again. `fence` is the source's lease,
    /// held by the operator's run that follows.
    pub async fn take_over_version_logged(
        &self,
        item_key: &str,
        target: &str,
        version: Option<&str>,
        fence: &Fence,
        event: &OperatorEvent,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE items SET target_version = $1, status = 'failed', updated_at = $2, revision = revision + 1, \
                   status_since = CASE WHEN status = 'failed' THEN status_since ELSE $2 END \
                   WHERE item_key = $3 AND target = $4";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            check_fence!(self, tx, fence);
            sqlx::query(sql).bind(version).bind(&event.at).bind(item_key).bind(target).execute(&mut *tx).await?;
            insert_event!(tx, event);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Adds an adoption and logs it; false (nothing logged, the name updated if given) if it existed.
    pub async fn add_adoption_logged(
        &self,
        ars: &str,
        service: &str,
        name: Option<&str>,
        event: &OperatorEvent,
    ) -> Result<bool, StoreError> {
        let exists = "SELECT COUNT(*) FROM adoptions WHERE ars = $1 AND service = $2";
        let upsert = "INSERT INTO adoptions (ars, service, name, created_at) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (ars, service) DO UPDATE SET name = COALESCE(excluded.name, adoptions.name)";
        let added = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let count: i64 = sqlx::query_scalar(exists).bind(ars).bind(service).fetch_one(&mut *tx).await?;
            sqlx::query(upsert).bind(ars).bind(service).bind(opt_text(name)).bind(&event.at).execute(&mut *tx).await?;
            if count == 0 {
                insert_event!(tx, event);
            }
            tx.commit().await?;
            count == 0
        });
        Ok(added)
    }

    /// Removes an adoption and logs it; false (nothing logged) if there was none.
    pub async fn remove_adoption_logged(
        &self,
        ars: &str,
        service: &str,
        event: &OperatorEvent,
    ) -> Result<bool, StoreError> {
        let sql = "DELETE FROM adoptions WHERE ars = $1 AND service = $2";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if sqlx::query(sql).bind(ars).bind(service).execute(&mut *tx).await?.rows_affected() == 0 {
                return Ok(false);
            }
            insert_event!(tx, event);
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Records `decision` on plan `id` with its event, if the plan is still open: the plan's row is
    /// locked first (decisions on one plan are taken one at a time), then the decision is stored
    /// (replacing the person's earlier one), and the plan's status becomes `then(every decision)`.
    /// `None` (nothing recorded) if the plan is not open any more.
    pub async fn decide_plan_logged(
        &self,
        id: i64,
        decision: &Decision,
        then: &(dyn Fn(&[Decision]) -> PlanStatus + Sync),
        event: &OperatorEvent,
    ) -> Result<Option<PlanStatus>, StoreError> {
        let lock = "UPDATE plans SET updated_at = $1 WHERE id = $2 AND status = 'open'";
        let upsert = "INSERT INTO plan_decisions (plan_id, who, decision, reason, at) VALUES ($1, $2, $3, $4, $5) \
                      ON CONFLICT (plan_id, who) DO UPDATE SET decision = excluded.decision, \
                      reason = excluded.reason, at = excluded.at";
        let all = "SELECT who, decision, reason, at FROM plan_decisions WHERE plan_id = $1 ORDER BY at, who";
        let status = "UPDATE plans SET status = $1 WHERE id = $2";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if sqlx::query(lock).bind(&decision.at).bind(id).execute(&mut *tx).await?.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query(upsert)
                .bind(id)
                .bind(text(&decision.who))
                .bind(&decision.decision)
                .bind(text(&decision.reason))
                .bind(&decision.at)
                .execute(&mut *tx)
                .await?;
            let decisions: Vec<Decision> = sqlx::query_as(all).bind(id).fetch_all(&mut *tx).await?;
            let next = then(&decisions);
            if next != PlanStatus::Open {
                sqlx::query(status).bind(next.as_str()).bind(id).execute(&mut *tx).await?;
            }
            insert_event!(tx, event);
            tx.commit().await?;
            Ok(Some(next))
        })
    }

    /// Moves plan `id` from `from` to `to` with its event, if it is still in `from` (false:
    /// nothing changed or logged).
    pub async fn move_plan_logged(
        &self,
        id: i64,
        from: PlanStatus,
        to: PlanStatus,
        event: &OperatorEvent,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE plans SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4";
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let moved =
                sqlx::query(sql).bind(to.as_str()).bind(&event.at).bind(id).bind(from.as_str()).execute(&mut *tx).await?;
            if moved.rows_affected() == 0 {
                return Ok(false);
            }
            insert_event!(tx, event);
            tx.commit().await?;
        });
        Ok(true)
    }
}
