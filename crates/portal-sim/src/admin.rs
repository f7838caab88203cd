//! The admin endpoints (`/_sim/...`, no authentication): the counters, the fault settings, and an
//! editor changing or deleting a document in the portal.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::FaultPatch;
use crate::response::{Answer, error, store_failure};
use crate::state::SimState;

pub(crate) async fn stats(State(state): State<SimState>) -> Response {
    axum::Json(state.stats().await).into_response()
}

pub(crate) async fn get_config(State(state): State<SimState>) -> Response {
    axum::Json(state.faults().await).into_response()
}

pub(crate) async fn patch_config(State(state): State<SimState>, body: Bytes) -> Response {
    let patch: FaultPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("fault patch: {e}")),
    };
    match state.patch_faults(patch).await {
        Ok(faults) => {
            tracing::info!(?faults, "fault settings changed");
            axum::Json(faults).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub(crate) async fn reset_faults(State(state): State<SimState>) -> Response {
    let faults = state.reset_faults().await;
    tracing::info!("faults switched off");
    axum::Json(faults).into_response()
}

/// An editor changes the document in the portal: a new version, not counted as an effect.
pub(crate) async fn edit_item(
    State(state): State<SimState>,
    Path((target, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut data = state.shared.data.lock().await;
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    let id = (target, key);
    match data.store(state.shared.store_dir.as_deref(), &id, body, content_type).await {
        Ok((status, version, sha256)) => {
            data.stats.edits += 1;
            tracing::info!(target = %id.0, key = %id.1, %version, "edited in the portal");
            Answer { status, body: Some(json!({ "version": version, "sha256": sha256 })), version: Some(version) }
                .render(false)
        }
        Err(e) => store_failure(e),
    }
}

/// An editor deletes the document in the portal (not counted as an effect).
pub(crate) async fn edit_delete(
    State(state): State<SimState>,
    Path((target, key)): Path<(String, String)>,
) -> Response {
    let mut data = state.shared.data.lock().await;
    let id = (target, key);
    if !data.items.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "the portal holds nothing for this item");
    }
    match data.remove(state.shared.store_dir.as_deref(), &id).await {
        Ok(()) => {
            data.stats.edits += 1;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_failure(e),
    }
}
