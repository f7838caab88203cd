//! The operator's actions over HTTP: each handler reads its request, names the caller (the token's
//! identity) and calls [`crate::ops`]; the daemon is the runner that starts their runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;

use super::auth::{Operator, Viewer};
use super::json::ApiError;
use super::{ApiState, Queued, RunAnswer};
use crate::domain::{ItemStatus, SystemClock, Trigger};
use crate::ops::{self, Actor, Ctx, Holding, OpsError, Prelude, RetryWhat, RunRequest, Runner};
use crate::pipeline::Job;

type Answer = Result<Response, ApiError>;

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        let status = match &e {
            OpsError::Usage(_) => StatusCode::BAD_REQUEST,
            OpsError::NotFound(_) => StatusCode::NOT_FOUND,
            OpsError::Refused(_) => StatusCode::CONFLICT,
            OpsError::Busy(_) => StatusCode::CONFLICT,
            OpsError::Stopped(_) | OpsError::Unavailable(_) | OpsError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpsError::Portal(_) => StatusCode::BAD_GATEWAY,
            OpsError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match e {
            OpsError::Store(e) => ApiError::from(e),
            e => ApiError::new(status, e.to_string()),
        }
    }
}

/// An action's failure as an answer: a busy source is 409 with its holder, the rest `{"error"}`.
pub(super) fn failure(e: OpsError) -> Response {
    match e {
        OpsError::Busy(busy) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("{busy}; try again when it is done"),
                "source": busy.source_id,
                "holder": busy.holder,
                "until": busy.until,
            })),
        )
            .into_response(),
        e => ApiError::from(e).into_response(),
    }
}

pub(super) fn answer(result: Result<Response, OpsError>) -> Response {
    result.unwrap_or_else(failure)
}

/// What the actions of this API check against: the store and the daemon's sources.
pub(super) fn ctx(state: &ApiState) -> Ctx<'_> {
    let known: Vec<String> = state.source_states().into_keys().collect();
    // While the daemon has not listed its sources (an API on its own, in tests), the run refuses
    // unknown ones.
    Ctx { store: &state.store, sources: (!known.is_empty()).then_some(known), clock: &SystemClock }
}

/// The body as `T`; an empty body is `{}` when `empty_ok`.
pub(super) fn body<T: DeserializeOwned>(bytes: &Bytes, shape: &str, empty_ok: bool) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok { b"{}" } else { bytes };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body must be a JSON object {shape}: {e}")))
}

/// The daemon, as the runner of the API's actions: a job goes on its queue, and the answer is the
/// run's id once the run holds its sources (and its prelude is done).
pub(super) struct Daemon<'a>(pub(super) &'a ApiState);

/// How long the API waits for the daemon to start a queued run (a run that replaces another one
/// waits for that one to stop first).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Runner for Daemon<'_> {
    type Run = i64;

    fn trigger(&self) -> Trigger {
        Trigger::Api
    }

    async fn start(&self, job: Job, prelude: Prelude) -> Result<i64, OpsError> {
        tracing::info!(
            sources = ?job.sources,
            items = ?job.items,
            force = job.force,
            allow_withdrawals = job.allow_withdrawals,
            "admin API queued a run"
        );
        let (answer, started) = tokio::sync::oneshot::channel();
        match self.0.trigger.try_send(Queued { job, prelude, answer }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(OpsError::Unavailable(
                    "the run queue is full; try again when the current runs are done".into(),
                ));
            }
            Err(TrySendError::Closed(_)) => return Err(stopping()),
        }
        match tokio::time::timeout(ANSWER_WAIT, started).await {
            Ok(Ok(RunAnswer::Started { run_id })) => Ok(run_id),
            Ok(Ok(RunAnswer::Busy(busy))) => Err(OpsError::Busy(busy)),
            Ok(Ok(RunAnswer::Refused(why))) => Err(OpsError::Failed(why)),
            Ok(Err(_)) => Err(OpsError::Unavailable(
                "the daemon did not start the run: it is shutting down, or the run's task failed (see its log)".into(),
            )),
            Err(_) => Err(OpsError::Unavailable(format!(
                "the daemon did not start the run within {} s (a run it replaces is still stopping); \
                 it was not started — try again",
                ANSWER_WAIT.as_secs()
            ))),
        }
    }
}

fn stopping() -> OpsError {
    OpsError::Unavailable("the daemon does not take runs any more (shutting down)".into())
}

/// 202 `{"queued": true, "run_id": N}`.
pub(super) fn queued(run_id: i64) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "queued": true, "run_id": run_id }))).into_response()
}

/// The body of `POST /api/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
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
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/runs`: starts a run of some sources or items (all sources if both lists are empty).
pub(crate) async fn start_run(Operator(caller): Operator, State(state): State<ApiState>, bytes: Bytes) -> Answer {
    const SHAPE: &str = "{\"sources\": [ids], \"items\": [keys], \"force\": bool, \"allow_withdrawals\": bool, \
                         \"reason\": text}";
    let body: RunBody = body(&bytes, SHAPE, false)?;
    let request = RunRequest {
        sources: body.sources,
        items: body.items,
        force: body.force,
        allow_withdrawals: body.allow_withdrawals,
        dry_run: false,
    };
    let actor = Actor::new(caller.name);
    let started = ops::start_run(&ctx(&state), &Daemon(&state), &actor, request, body.reason.as_deref()).await;
    Ok(answer(started.map(queued)))
}

/// The body of `POST /api/retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    items: Vec<String>,
    status: Option<String>,
    source: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/retry`: migrates the named items again, or every item in a status (of one source).
pub(crate) async fn retry_many(Operator(caller): Operator, State(state): State<ApiState>, bytes: Bytes) -> Answer {
    const SHAPE: &str = "{\"items\": [keys]} or {\"status\": \"failed\"|\"quarantined\"|\"conflict\", \"source\": id}, \
                         and \"reason\": text";
    let body: RetryBody = body(&bytes, SHAPE, false)?;
    let what = match (body.status, body.items.is_empty()) {
        (Some(status), true) => RetryWhat::Status {
            status: status.parse::<ItemStatus>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?,
            source: body.source,
        },
        (None, false) if body.source.is_none() => RetryWhat::Items(body.items),
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("the body must be {SHAPE}"))),
    };
    let actor = Actor::new(caller.name);
    let retried = ops::retry(&ctx(&state), &Daemon(&state), &actor, what, body.reason.as_deref()).await;
    Ok(answer(retried.map(|run| match run {
        Some(run_id) => queued(run_id),
        None => (StatusCode::OK, Json(json!({ "queued": false, "message": "nothing to retry" }))).into_response(),
    })))
}

/// The body of the item actions: the reason, and for `resolve` the way to settle.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    overwrite: bool,
}

/// `POST /api/items/{key}/retry`, `…/skip`, `…/unskip`, `…/resolve`: the item actions; the key percent-encoded
/// or with its `/`.
pub(crate) async fn item_action(
    Operator(caller): Operator,
    State(state): State<ApiState>,
    Path(path): Path<String>,
    bytes: Bytes,
) -> Answer {
    let Some((key, action)) =
        path.rsplit_once('/').filter(|(_, a)| matches!(*a, "retry" | "skip" | "unskip" | "resolve"))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint POST /api/items/{path}; use …/retry, …/skip, …/unskip or …/resolve"),
        ));
    };
    let body: ItemBody = body(&bytes, "{\"reason\": text} (resolve: and \"overwrite\": true)", true)?;
    let actor = Actor::new(caller.name);
    let reason = body.reason.as_deref();
    let ctx = ctx(&state);
    let done = match action {
        "retry" => {
            let what = RetryWhat::Items(vec![key.to_owned()]);
            ops::retry(&ctx, &Daemon(&state), &actor, what, reason).await.map(|run| match run {
                Some(run_id) => queued(run_id),
                None => StatusCode::OK.into_response(),
            })
        }
        "skip" | "unskip" => {
            let holding = Holding {
                holder: format!("{}#api", state.instance),
                ttl: state.lease,
                wait: std::time::Duration::ZERO,
                stop: Default::default(),
            };
            if action == "skip" {
                ops::skip(&ctx, &holding, &actor, key, reason.unwrap_or_default())
                    .await
                    .map(|()| Json(json!({ "skipped": key })).into_response())
            } else {
                ops::unskip(&ctx, &holding, &actor, key, reason)
                    .await
                    .map(|()| Json(json!({ "unskipped": key })).into_response())
            }
        }
        _ => {
            if !body.overwrite {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "resolve needs {\"overwrite\": true}: the portal's copy is replaced by ours",
                ));
            }
            ops::resolve(&ctx, &Daemon(&state), &actor, key, reason).await.map(queued)
        }
    };
    Ok(answer(done))
}

/// `GET /api/adoptions`: every adoption, by service then ARS.
pub(crate) async fn adoptions(_: Viewer, State(state): State<ApiState>) -> Answer {
    Ok(Json(json!({ "adoptions": state.store.adoptions().await? })).into_response())
}

/// The body of `POST /api/adoptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptBody {
    ars: String,
    service: String,
    name: Option<String>,
    #[serde(default)]
    force: bool,
    reason: Option<String>,
}

/// `POST /api/adoptions`: municipality `ars` adopts `service`; 201 if new, 200 if it already did.
pub(crate) async fn adopt(Operator(caller): Operator, State(state): State<ApiState>, bytes: Bytes) -> Answer {
    const SHAPE: &str =
        "{\"ars\": 12 digits, \"service\": LeiKa key, \"name\": text, \"force\": bool, \"reason\": text}";
    let body: AdoptBody = body(&bytes, SHAPE, false)?;
    let actor = Actor::new(caller.name);
    let added = ops::adopt_add(
        &ctx(&state),
        &actor,
        &body.ars,
        &body.service,
        body.name.as_deref(),
        body.force,
        body.reason.as_deref(),
    )
    .await;
    Ok(answer(added.map(|added| {
        let status = if added { StatusCode::CREATED } else { StatusCode::OK };
        (status, Json(json!({ "ars": body.ars, "service": body.service, "added": added }))).into_response()
    })))
}

/// The body of `DELETE /api/adoptions/{ars}/{service}` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnadoptBody {
    reason: Option<String>,
}

/// `DELETE /api/adoptions/{ars}/{service}`: the municipality no longer adopts the service.
pub(crate) async fn unadopt(
    Operator(caller): Operator,
    State(state): State<ApiState>,
    Path((ars, service)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let body: UnadoptBody = body(&bytes, "{\"reason\": text}", true)?;
    let actor = Actor::new(caller.name);
    let removed = ops::adopt_remove(&ctx(&state), &actor, &ars, &service, body.reason.as_deref()).await;
    Ok(answer(removed.map(|()| Json(json!({ "ars": ars, "service": service, "removed": true })).into_response())))
}

/// `POST /api/adoptions/import?force=true&reason=…`: `adopt import` with the CSV file as the body
/// (header row `ars,service[,name]`); 200 `{"rows": N, "added": M}`, 400 naming every bad row (then
/// nothing is imported).
pub(crate) async fn import_adoptions(
    Operator(caller): Operator,
    State(state): State<ApiState>,
    axum::extract::Query(query): axum::extract::Query<ImportQuery>,
    bytes: Bytes,
) -> Answer {
    let actor = Actor::new(caller.name);
    let imported =
        ops::import_adoptions(&ctx(&state), &actor, &bytes, "the request body", query.force, query.reason.as_deref())
            .await;
    Ok(answer(imported.map(|imported| Json(imported).into_response())))
}

/// The query of `POST /api/adoptions/import`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// The body of `POST /api/audit/prune`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    before: String,
    #[serde(default)]
    reason: String,
    /// Must be true: the API writes no archive (the command line's `--archive` does).
    #[serde(default)]
    no_archive: bool,
}

/// `POST /api/audit/prune` (an approver's token, `{"before": DATE, "reason": text, "no_archive":
/// true}`): prunes the audit chain before the date behind a checkpoint link signed off by the
/// token's name; 200 `{"pruned": checkpoint}` (`null`: nothing to prune). The API writes no
/// archive: without `"no_archive": true` it refuses (400), as the command line does without
/// `--archive` or `--no-archive`.
pub(super) async fn audit_prune(
    super::auth::Approver(who): super::auth::Approver,
    State(state): State<ApiState>,
    bytes: Bytes,
) -> Answer {
    let shape = "{\"before\": \"YYYY-MM-DD\" or RFC 3339, \"reason\": text, \"no_archive\": true}";
    let body: PruneBody = body(&bytes, shape, false)?;
    if !body.no_archive {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the API writes no archive: send \"no_archive\": true to prune without one, or prune with the command \
             line's `audit prune --archive FILE`"
                .to_owned(),
        ));
    }
    let outcome =
        ops::prune_audit(&ctx(&state), &Actor::new(who.name), &body.before, &body.reason, &ops::Archive::Skip).await;
    Ok(answer(outcome.map(|outcome| {
        let pruned = match outcome {
            ops::PruneOutcome::Nothing => None,
            ops::PruneOutcome::Pruned(pruning) => Some(pruning.checkpoint),
        };
        Json(json!({ "pruned": pruned })).into_response()
    })))
}
