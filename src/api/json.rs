//! The JSON endpoints that read: readiness, runs, items (the actions are in `actions`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Viewer;
use super::{ApiState, SourceState, database_answers, store_failure};
use crate::domain::{ItemStatus, Level};
use crate::store::StoreError;
use crate::store::log::EventFilter;

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, store_failure(&e))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type Answer = Result<Response, ApiError>;

/// Default and largest `limit` of the list endpoints.
const DEFAULT_RUNS: i64 = 50;
const DEFAULT_ITEMS: i64 = 1000;
const DEFAULT_EVENTS: i64 = 1000;
const MAX_LIMIT: i64 = 100_000;

fn limit(given: Option<i64>, default: i64) -> Result<i64, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, not {n}"))),
    }
}

/// `GET /readyz`: 200 when the database answers, else 503; always with the sources' states (from the
/// store when it answers).
pub(crate) async fn ready(State(state): State<ApiState>) -> Response {
    let up = database_answers(&state.store).await;
    let sources: BTreeMap<String, SourceState> = match up {
        true => state.sources_now().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "readiness: cannot read the sources' results");
            state.source_states()
        }),
        false => state.source_states(),
    };
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let database = if up { "ok" } else { "unreachable" };
    (status, Json(json!({ "database": database, "sources": sources }))).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LimitQuery {
    limit: Option<i64>,
}

/// `GET /api/runs?limit=`: recent runs, newest first.
pub(crate) async fn runs(
    _: Viewer,
    State(state): State<ApiState>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    let runs = state.store.runs(limit(query.limit, DEFAULT_RUNS)?).await?;
    Ok(Json(json!({ "runs": runs })).into_response())
}

/// `GET /api/audit/head`: the audit chain's head, `{"head": {"seq", "hash"}}` (`null` before the
/// first event), to be kept elsewhere as an anchor (docs/audit.md).
pub(crate) async fn audit_head(_: Viewer, State(state): State<ApiState>) -> Answer {
    let head = state.store.chain_head().await?;
    Ok(Json(json!({ "head": head })).into_response())
}

/// `GET /api/runs/{id}`: the run and its events (oldest first, the last `limit`).
pub(crate) async fn run(
    _: Viewer,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    let id: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("run id `{id}` is not a number")))?;
    let Some(run) = state.store.run(id).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")));
    };
    let filter = EventFilter { run_id: Some(id), limit: limit(query.limit, DEFAULT_EVENTS)?, ..Default::default() };
    let events = state.store.events(&filter).await?;
    let errors = EventFilter { run_id: Some(id), level: Some(Level::Error), limit: 0, ..Default::default() };
    let held = super::held::held_sources(&run.sources, &state.store.events(&errors).await?);
    let held_withdrawals = super::held::confirmations(&held);
    let warned = super::warned(&state.store, id).await?;
    Ok(Json(json!({ "run": run, "events": events, "held_withdrawals": held_withdrawals, "warned": warned }))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemsQuery {
    status: Option<String>,
    source: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/items?status=&source=&limit=`: ledger rows, by item key and target.
pub(crate) async fn items(
    _: Viewer,
    State(state): State<ApiState>,
    query: Result<Query<ItemsQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    let status = query.status.filter(|s| !s.is_empty());
    if let Some(status) = &status {
        status.parse::<ItemStatus>().map_err(ApiError::bad_request)?;
    }
    let source = query.source.filter(|s| !s.is_empty());
    let rows = state.store.items(status.as_deref(), source.as_deref(), limit(query.limit, DEFAULT_ITEMS)?).await?;
    Ok(Json(json!({ "items": rows })).into_response())
}

/// `GET /api/items/{key}`: the item's rows per target and its migration log.
pub(crate) async fn item(
    _: Viewer,
    State(state): State<ApiState>,
    Path(key): Path<String>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    let targets = state.store.item(&key).await?;
    let filter =
        EventFilter { item_key: Some(key.clone()), limit: limit(query.limit, DEFAULT_EVENTS)?, ..Default::default() };
    let events = state.store.events(&filter).await?;
    if targets.is_empty() && events.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no item `{key}`")));
    }
    Ok(Json(json!({ "key": key, "targets": targets, "events": events })).into_response())
}
