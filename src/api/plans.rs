//! Plans over HTTP: make one, list and show them, approve or reject one (an approver's token), apply an approved one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::actions::{Daemon, answer, body, ctx, queued};
use super::auth::{Approver, Operator, Viewer};
use super::json::ApiError;
use crate::ops::{self, Actor, RunRequest};
use crate::plan_view;
use crate::policy::Decide;

type Answer = Result<Response, ApiError>;

/// The body of `POST /api/plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    items: Vec<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    allow_withdrawals: bool,
}

/// `POST /api/plans`: makes a plan (maps and validates, delivers nothing) as the caller; 201 with
/// its id, summary and what the policy asks for.
pub(crate) async fn make(Operator(caller): Operator, State(state): State<ApiState>, bytes: Bytes) -> Answer {
    const SHAPE: &str = "{\"sources\": [ids], \"items\": [keys], \"force\": bool, \"allow_withdrawals\": bool}";
    let body: PlanBody = body(&bytes, SHAPE, true)?;
    let request = RunRequest {
        sources: body.sources,
        items: body.items,
        force: body.force,
        allow_withdrawals: body.allow_withdrawals,
        dry_run: true,
    };
    let deps = state.deps.borrow().clone();
    let made = ops::make_plan(&ctx(&state), &deps, &Actor::new(caller.name), request).await;
    Ok(answer(made.map(|made| {
        let status = if made.verdict.approvers == 0 { "approved" } else { "open" };
        let answer = json!({
            "id": made.id,
            "status": status,
            "summary": made.summary,
            "approvers_needed": made.verdict.approvers,
            "reasons": made.verdict.reasons,
            "problems": made.report.problems,
        });
        (StatusCode::CREATED, Json(answer)).into_response()
    })))
}

/// `GET /api/plans`: the newest plans.
pub(crate) async fn list(_: Viewer, State(state): State<ApiState>) -> Answer {
    Ok(Json(state.store.plans(None, 200).await?).into_response())
}

/// `GET /api/plans/{id}`: a plan with its decisions and entries (with diffs).
pub(crate) async fn show(_: Viewer, State(state): State<ApiState>, Path(id): Path<i64>) -> Answer {
    let Some(plan) = state.store.plan(id).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no plan {id}")));
    };
    let decisions = state.store.decisions(id).await?;
    let entries = state.store.plan_entries(id).await?;
    let json = plan_view::PlanJson {
        plan: &plan,
        summary: plan_view::Summary::of(&entries),
        decisions: &decisions,
        entries: &entries,
    };
    Ok(Json(json).into_response())
}

/// The body of a decision or an apply.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/plans/{id}/approve` (an approver's token, `{"reason": text}`): 200 with the plan's
/// status after the approval.
pub(crate) async fn approve(
    Approver(who): Approver,
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Answer {
    decided(&state, who.name, id, Decide::Approve, &bytes).await
}

/// `POST /api/plans/{id}/reject` (an approver's token, `{"reason": text}`).
pub(crate) async fn reject(
    Approver(who): Approver,
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Answer {
    decided(&state, who.name, id, Decide::Reject, &bytes).await
}

async fn decided(state: &ApiState, who: String, id: i64, decision: Decide, bytes: &Bytes) -> Answer {
    let body: ReasonBody = body(bytes, "{\"reason\": text}", false)?;
    let reason = body.reason.unwrap_or_default();
    let status = ops::decide_plan(&ctx(state), &Actor::new(who), id, decision, &reason).await;
    Ok(answer(status.map(|status| Json(json!({ "id": id, "status": status.as_str() })).into_response())))
}

/// `POST /api/plans/{id}/apply` (an operator's token, `{"reason": text}` optional): 202 with the
/// id of the run that applies the plan.
pub(crate) async fn apply(
    Operator(caller): Operator,
    State(state): State<ApiState>,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Answer {
    let body: ReasonBody = body(&bytes, "{\"reason\": text}", true)?;
    let actor = Actor::new(caller.name);
    let run = ops::apply_plan(&ctx(&state), &Daemon(&state), &actor, id, body.reason.as_deref()).await;
    Ok(answer(run.map(queued)))
}
