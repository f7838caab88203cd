//! The import API of docs/portal-api.md: GET, PUT and DELETE of `/targets/{target}/items/{key}`,
//! and the answer to any other path.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::request::{Precondition, admit, idempotency_key};
use crate::response::{Answer, error, etag, store_failure};
use crate::state::{Fingerprint, SimState, sha256_hex};
use crate::stats::WITHDRAWN;

pub(crate) async fn get_item(
    State(state): State<SimState>,
    Path((target, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = admit(&state, &headers).await {
        return response;
    }
    let data = state.shared.data.lock().await;
    match data.items.get(&(target, key)) {
        None => error(StatusCode::NOT_FOUND, "the portal holds nothing for this item"),
        Some(stored) => {
            let mut response = stored.body.clone().into_response();
            let h = response.headers_mut();
            h.insert(header::ETAG, etag(&stored.version));
            h.insert("x-content-sha256", HeaderValue::from_str(&stored.sha256).expect("hex is a valid header value"));
            if let Some(content_type) = &stored.content_type {
                h.insert(header::CONTENT_TYPE, content_type.clone());
            }
            response
        }
    }
}

pub(crate) async fn put_item(
    State(state): State<SimState>,
    Path((target, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = put_item_inner(&state, target.clone(), key.clone(), &headers, body).await;
    tracing::info!(%target, %key, status = response.status().as_u16(), "PUT");
    response
}

async fn put_item_inner(state: &SimState, target: String, key: String, headers: &HeaderMap, body: Bytes) -> Response {
    if let Err(response) = admit(state, headers).await {
        return response;
    }
    let mut data = state.shared.data.lock().await;
    let idempotency = match idempotency_key(headers) {
        Ok(k) => k,
        Err(refusal) => {
            data.stats.client_errors += 1;
            return refusal.into_response();
        }
    };
    let fingerprint =
        Fingerprint { method: Method::PUT, target: target.clone(), key: key.clone(), sha256: sha256_hex(&body) };
    if let Some(response) = data.replay(&idempotency, &fingerprint) {
        return response;
    }
    let precondition = match Precondition::parse(headers, true) {
        Ok(p) => p,
        Err(refusal) => {
            data.stats.client_errors += 1;
            return refusal.into_response();
        }
    };
    if data.faults.conflict_keys.contains(&key) {
        data.stats.conflicts += 1;
        return error(StatusCode::PRECONDITION_FAILED, "portal-sim: the item was changed in the portal (conflict key)");
    }
    if data.faults.reject_keys.contains(&key) {
        data.stats.rejections += 1;
        return error(StatusCode::BAD_REQUEST, "portal-sim: the portal rejects this document (reject key)");
    }
    let id = (target, key);
    if let Err(message) = precondition.check(data.items.get(&id)) {
        data.stats.conflicts += 1;
        return error(StatusCode::PRECONDITION_FAILED, message);
    }
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    let (status, version, sha256) = match data.store(state.shared.store_dir.as_deref(), &id, body, content_type).await {
        Ok(stored) => stored,
        Err(e) => return store_failure(e),
    };
    data.count_effect(&id, &sha256);
    let answer = Answer { status, body: Some(json!({ "version": version, "sha256": sha256 })), version: Some(version) };
    data.finish(idempotency, fingerprint, answer)
}

pub(crate) async fn delete_item(
    State(state): State<SimState>,
    Path((target, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let response = delete_item_inner(&state, target.clone(), key.clone(), &headers).await;
    tracing::info!(%target, %key, status = response.status().as_u16(), "DELETE");
    response
}

async fn delete_item_inner(state: &SimState, target: String, key: String, headers: &HeaderMap) -> Response {
    if let Err(response) = admit(state, headers).await {
        return response;
    }
    let mut data = state.shared.data.lock().await;
    let idempotency = match idempotency_key(headers) {
        Ok(k) => k,
        Err(refusal) => {
            data.stats.client_errors += 1;
            return refusal.into_response();
        }
    };
    let fingerprint =
        Fingerprint { method: Method::DELETE, target: target.clone(), key: key.clone(), sha256: WITHDRAWN.to_owned() };
    if let Some(response) = data.replay(&idempotency, &fingerprint) {
        return response;
    }
    let precondition = match Precondition::parse(headers, false) {
        Ok(p) => p,
        Err(refusal) => {
            data.stats.client_errors += 1;
            return refusal.into_response();
        }
    };
    if data.faults.conflict_keys.contains(&key) {
        data.stats.conflicts += 1;
        return error(StatusCode::PRECONDITION_FAILED, "portal-sim: the item was changed in the portal (conflict key)");
    }
    let id = (target, key);
    let Some(current) = data.items.get(&id) else {
        return error(StatusCode::NOT_FOUND, "the portal holds nothing for this item");
    };
    if let Err(message) = precondition.check(Some(current)) {
        data.stats.conflicts += 1;
        return error(StatusCode::PRECONDITION_FAILED, message);
    }
    if let Err(e) = data.remove(state.shared.store_dir.as_deref(), &id).await {
        return store_failure(e);
    }
    data.count_effect(&id, WITHDRAWN);
    let answer = Answer { status: StatusCode::NO_CONTENT, version: None, body: None };
    data.finish(idempotency, fingerprint, answer)
}

pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource")
}
