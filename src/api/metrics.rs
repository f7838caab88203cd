//! The `/metrics` route: reads the store and the scheduler's source states into a snapshot and encodes the registry.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::auth::Viewer;
use super::json::ApiError;
use super::{ApiState, database_answers, unix_seconds};
use crate::metrics::{Snapshot, SourceGauges, label};
use crate::store::plans::PlanStatus;

/// `GET /metrics`.
pub(crate) async fn scrape(_: Viewer, State(state): State<ApiState>) -> Response {
    let mut now = Snapshot { database_up: database_answers(&state.store).await, ..Snapshot::default() };
    if now.database_up {
        // Target-level counts: every ledger row (the store has counts per source and status only).
        match state.store.items(None, None, i64::MAX).await {
            Ok(rows) => {
                for row in rows {
                    *now.items.entry((label(&row.source_id), label(&row.target), label(&row.status))).or_default() += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the ledger"),
        }
        match state.store.runs(i64::MAX).await {
            Ok(runs) => {
                for run in runs {
                    *now.runs.entry((label(&run.trigger), label(&run.status))).or_default() += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the runs"),
        }
        match state.store.plans(Some(PlanStatus::Open), i64::MAX).await {
            Ok(plans) => {
                now.plans_awaiting = plans.len() as i64;
                let at = state.deps.borrow().clock.now().timestamp();
                now.oldest_plan_age =
                    plans.iter().filter_map(|p| unix_seconds(&p.created_at)).min().map(|created| (at - created).max(0));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count the plans"),
        }
        match state.store.chain_head().await {
            Ok(head) => now.audit_head = head.map(|h| (h.seq, h.hash)),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the audit chain's head"),
        }
    }
    let sources = match now.database_up {
        true => state.sources_now().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot read the sources' results");
            state.source_states()
        }),
        false => state.source_states(),
    };
    now.sources = sources
        .into_iter()
        .map(|(id, s)| {
            let gauges = SourceGauges {
                last_success: s.last_success_at.as_deref().and_then(unix_seconds),
                next_run: s.next_run_at.as_deref().and_then(unix_seconds),
                running: s.running,
            };
            (id, gauges)
        })
        .collect();
    match state.metrics.encode(now) {
        Ok(text) => {
            ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
        }
        Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics").into_response(),
    }
}
