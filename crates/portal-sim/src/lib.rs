//! portal-sim: a loopback implementation of the portal import API (docs/portal-api.md) with fault injection, for tests and trials.
//!
//! The simulator holds the documents in memory (and, with `store_dir`, mirrors them as files),
//! remembers every idempotency key it answered with a success, counts effects per
//! (target, key, sha256 of the body) and injects faults on request:
//!
//! * `fail_rate`: that share of API requests is answered `503` before anything else happens;
//! * `throttle_every`: every Nth API request is answered `429` with `Retry-After`;
//! * `reset_rate`: that share of applied PUT/DELETE effects is followed by a dropped connection
//!   instead of a response (the effect happened, the client never hears about it);
//! * `conflict_keys` / `reject_keys`: writes to these item keys answer `412` / `400`.
//!
//! Order of checks for a write: fault injection (503/429), bearer token (401), `Idempotency-Key`
//! (400 if missing), idempotent replay (the first answer again, or 422 if the key was used for a
//! different request), precondition headers (428/400), `conflict_keys` (412), `reject_keys` (400,
//! PUT only), existence (404, DELETE only), precondition evaluation (412), effect, reset fault.
//! Only successful answers (2xx) are remembered: a request that failed can be sent again with the
//! same key once the cause is gone.
//!
//! Admin endpoints (no authentication; the simulator is a loopback tool):
//! `GET /_sim/stats`, `GET|POST /_sim/config` (JSON patch of the fault settings),
//! `POST /_sim/reset-faults`, `PUT|DELETE /_sim/edit/targets/{target}/items/{key}` (an editor
//! changes the document in the portal: a new version, not counted as an effect).
//!
//! Here the router; the parts beside it: `config` (start settings and fault settings), `state`
//! (what the portal holds), `request` (admission, precondition, idempotency key), `api` (the
//! import API), `admin` (the `/_sim` endpoints), `response`, `stats` and `paths`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

mod admin;
mod api;
mod config;
mod paths;
mod request;
mod response;
mod state;
mod stats;

pub use config::{FaultPatch, FaultSettings, SimConfig, SimError};
pub use paths::encode_segment;
pub use state::SimState;
pub use stats::{EffectCount, FaultCounts, SimStats, WITHDRAWN};

use admin::{edit_delete, edit_item, get_config, patch_config, reset_faults, stats};
use api::{delete_item, get_item, not_found, put_item};

/// Largest request body the simulator accepts (larger ones are answered `413`).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The simulator's HTTP interface: the import API and the admin endpoints.
pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/targets/{target}/items/{key}", get(get_item).put(put_item).delete(delete_item))
        .route("/_sim/stats", get(stats))
        .route("/_sim/config", get(get_config).post(patch_config))
        .route("/_sim/reset-faults", post(reset_faults))
        .route("/_sim/edit/targets/{target}/items/{key}", put(edit_item).delete(edit_delete))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the simulator on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, state: SimState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
