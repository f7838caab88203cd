//! The JSON endpoints: readiness, runs, items, and the two triggers (start a run, retry an item).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;

use super::auth::{Read, Write};
use super::{ApiState, Queued, RunAnswer, SourceState, database_answers, store_failure};
use crate::domain::{ItemKey, ItemStatus, Level, Stage, Trigger};
use crate::pipeline::Job;
use crate::store::log::{EventFilter, NewEvent};
use crate::store::{StoreError, timestamp};

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

/// `GET /readyz`: 200 when the database answers, else 503; always with the sources' states.
pub(crate) async fn ready(State(state): State<ApiState>) -> Response {
    let up = database_answers(&state.store).await;
    let sources: BTreeMap<String, SourceState> = state.source_states();
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
    _: Read,
    State(state): State<ApiState>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query?;
    let runs = state.store.runs(limit(query.limit, DEFAULT_RUNS)?).await?;
    Ok(Json(json!({ "runs": runs })).into_response())
}

/// `GET /api/runs/{id}`: the run and its events (oldest first, the last `limit`).
pub(crate) async fn run(
    _: Read,
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
    Ok(Json(json!({ "run": run, "events": events, "held_withdrawals": held_withdrawals })).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ItemsQuery {
    status: Option<String>,
    source: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/items?status=&source=&limit=`: ledger rows, by item key and target.
pub(crate) async fn items(
    _: Read,
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
    _: Read,
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

/// The body of `POST /api/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    items: Vec<String>,
    #[serde(default)]
    force: bool,
    /// Send the withdrawals even where more of a source vanished than its guard allows (confirms
    /// withdrawals an earlier run held back).
    #[serde(default)]
    allow_withdrawals: bool,
}

/// `POST /api/runs`: queues a run of some sources or items (all sources if both lists are empty).
pub(crate) async fn start_run(_: Write, State(state): State<ApiState>, body: Bytes) -> Answer {
    let request: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a JSON object {{\"sources\": [ids], \"items\": [keys], \"force\": bool, \
             \"allow_withdrawals\": bool}}: {e}"
        ))
    })?;
    let mut items = Vec::with_capacity(request.items.len());
    for text in &request.items {
        let key = ItemKey::parse(text)
            .ok_or_else(|| ApiError::bad_request(format!("item key `{text}` must look like source/external-id")))?;
        items.push(key);
    }
    let known = state.source_states();
    let named = request.sources.iter().map(String::as_str).chain(items.iter().map(ItemKey::source));
    for source in named {
        if source.is_empty() {
            return Err(ApiError::bad_request("a source id is empty"));
        }
        if !known.is_empty() && !known.contains_key(source) {
            let ids: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(format!("unknown source `{source}` (known: {})", ids.join(", "))));
        }
    }
    let job = Job {
        sources: request.sources,
        items,
        force: request.force,
        allow_withdrawals: request.allow_withdrawals,
        ..Job::all(Trigger::Api)
    };
    queue(&state, job).await
}

/// `POST /api/items/{key}/retry`: queues a run of the item and, once it started, logs the request.
pub(crate) async fn retry(_: Write, State(state): State<ApiState>, Path(path): Path<String>) -> Answer {
    let Some(key) = path.strip_suffix("/retry") else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint POST /api/items/{path}; use …/retry")));
    };
    let key = ItemKey::parse(key)
        .ok_or_else(|| ApiError::bad_request(format!("item key `{key}` must look like source/external-id")))?;
    if state.store.item(key.as_str()).await?.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no item `{key}` in the ledger")));
    }
    let event = NewEvent {
        at: timestamp(chrono::Utc::now()),
        run_id: None,
        item_key: Some(key.to_string()),
        target: None,
        stage: Stage::Operator,
        level: Level::Info,
        message: "retry requested via the admin API".into(),
    };
    let answer = queue(&state, Job { items: vec![key], ..Job::all(Trigger::Api) }).await?;
    // A retry that found the item's source busy did not happen: only one that started is logged.
    if answer.status() == StatusCode::ACCEPTED {
        state.store.append_event(&event).await?;
    }
    Ok(answer)
}

/// How long the API waits for the daemon to start a queued run (a run that replaces another one
/// waits for that one to stop first).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands a job to the daemon and answers with the run it started (202 `{"queued": true, "run_id":
/// N}`), or why there is none: 409 with the holder of a busy source, 503 when the queue is full or
/// the daemon stops. A job whose caller stopped waiting is not started.
async fn queue(state: &ApiState, job: Job) -> Answer {
    tracing::info!(
        sources = ?job.sources,
        items = ?job.items,
        force = job.force,
        allow_withdrawals = job.allow_withdrawals,
        "admin API queued a run"
    );
    let (answer, started) = tokio::sync::oneshot::channel();
    match state.trigger.try_send(Queued { job, answer }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the run queue is full; try again when the current runs are done",
            ));
        }
        Err(TrySendError::Closed(_)) => return Err(stopping()),
    }
    match tokio::time::timeout(ANSWER_WAIT, started).await {
        Ok(Ok(RunAnswer::Started { run_id })) => {
            Ok((StatusCode::ACCEPTED, Json(json!({ "queued": true, "run_id": run_id }))).into_response())
        }
        Ok(Ok(RunAnswer::Busy(busy))) => Ok((
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("{busy}; try again when it is done"),
                "source": busy.source_id,
                "holder": busy.holder,
                "until": busy.until,
            })),
        )
            .into_response()),
        Ok(Ok(RunAnswer::Refused(why))) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not start the run: it is shutting down, or the run's task failed (see its log)",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the daemon did not start the run within {} s (a run it replaces is still stopping); \
                 it was not started — try again",
                ANSWER_WAIT.as_secs()
            ),
        )),
    }
}

fn stopping() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon does not take runs any more (shutting down)")
}
