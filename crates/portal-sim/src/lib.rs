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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Largest request body the simulator accepts (larger ones are answered `413`).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The `sha256` under which withdrawals (DELETE) are counted as effects.
pub const WITHDRAWN: &str = "withdrawn";

/// How the simulator starts: authentication, where documents are mirrored and the initial faults.
///
/// Also the command line of the `portal-sim` binary (flattened into its clap parser).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SimConfig {
    /// Directory where stored documents are also written as files, one per target and item key
    /// (`DIR/<target>/<key>`, both percent-encoded); without it documents are kept in memory only.
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,

    /// Bearer token every API request must carry (`Authorization: Bearer <token>`).
    #[arg(long, value_name = "TOKEN", env = "PORTAL_SIM_TOKEN", hide_env_values = true, default_value = "sim-token")]
    pub token: String,

    /// Share of API requests (0.0–1.0) answered `503` before anything else happens.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,

    /// Answer every Nth API request with `429` and `Retry-After`; 0 = never.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub throttle_every: u32,

    /// Seconds sent in the `Retry-After` header of injected `429` answers.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub retry_after_secs: u64,

    /// Milliseconds of latency added to every API request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Share (0.0–1.0) of applied PUT/DELETE effects after which the connection is dropped without
    /// a response: the change is stored, the client sees a connection error and no status.
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,

    /// Item key for which every write answers `412`, as if an editor had changed it in the
    /// portal (repeatable).
    #[arg(long = "conflict-key", value_name = "KEY")]
    pub conflict_keys: Vec<String>,

    /// Item key whose PUT answers `400` with a JSON error (repeatable).
    #[arg(long = "reject-key", value_name = "KEY")]
    pub reject_keys: Vec<String>,

    /// Seed of the random generator, so fault patterns are reproducible.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            store_dir: None,
            token: "sim-token".to_owned(),
            fail_rate: 0.0,
            throttle_every: 0,
            retry_after_secs: 1,
            latency_ms: 0,
            reset_rate: 0.0,
            conflict_keys: Vec::new(),
            reject_keys: Vec::new(),
            seed: 0,
        }
    }
}

/// What can go wrong inside the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A rate outside 0.0–1.0.
    #[error("{name} must be between 0.0 and 1.0, not {value}")]
    Rate { name: &'static str, value: f64 },
    /// The mirror file of a document could not be written or removed.
    #[error("cannot update {path}: {source}")]
    Store { path: PathBuf, source: std::io::Error },
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    check_rate("rate", value).map_err(|e| e.to_string())?;
    Ok(value)
}

fn check_rate(name: &'static str, value: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(SimError::Rate { name, value }) }
}

/// The fault settings that can be changed at runtime (`GET|POST /_sim/config`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FaultSettings {
    pub fail_rate: f64,
    pub throttle_every: u32,
    pub retry_after_secs: u64,
    pub latency_ms: u64,
    pub reset_rate: f64,
    pub conflict_keys: Vec<String>,
    pub reject_keys: Vec<String>,
}

/// A partial update of [`FaultSettings`]; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_every: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict_keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_keys: Option<Vec<String>>,
}

/// Counters of `GET /_sim/stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests received (admin endpoints not included), faulted ones included.
    pub requests: u64,
    /// Applied changes per (target, key, sha256 of the stored body or `"withdrawn"`).
    pub effects: Vec<EffectCount>,
    /// Requests answered as idempotent replays.
    pub replays: u64,
    /// Injected faults by kind.
    pub faults: FaultCounts,
    /// `412` answers (failed preconditions and `conflict_keys`).
    pub conflicts: u64,
    /// `400` answers because of `reject_keys`.
    pub rejections: u64,
    /// `401` answers.
    pub unauthorized: u64,
    /// Other client errors: missing idempotency key or preconditions, reused idempotency key (422).
    pub client_errors: u64,
    /// Changes made through `/_sim/edit` (not effects).
    pub edits: u64,
    /// Documents the portal holds now.
    pub stored: u64,
}

impl SimStats {
    /// How often (target, key, sha256) was applied; `sha256` = [`WITHDRAWN`] for withdrawals.
    pub fn effect_count(&self, target: &str, key: &str, sha256: &str) -> u64 {
        self.effects.iter().filter(|e| e.target == target && e.key == key && e.sha256 == sha256).map(|e| e.count).sum()
    }

    /// All applied changes together.
    pub fn total_effects(&self) -> u64 {
        self.effects.iter().map(|e| e.count).sum()
    }
}

/// One line of [`SimStats::effects`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectCount {
    pub target: String,
    pub key: String,
    pub sha256: String,
    pub count: u64,
}

/// Injected faults by kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FaultCounts {
    #[serde(rename = "503")]
    pub unavailable: u64,
    #[serde(rename = "429")]
    pub throttled: u64,
    pub reset: u64,
}

/// The simulator's state, shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct SimState {
    shared: Arc<Shared>,
}

struct Shared {
    token: String,
    store_dir: Option<PathBuf>,
    data: Mutex<Data>,
}

type ItemId = (String, String);

struct Data {
    faults: FaultSettings,
    rng: fastrand::Rng,
    items: BTreeMap<ItemId, Stored>,
    /// Last version number handed out per item; survives withdrawals so versions are never reused.
    last_version: HashMap<ItemId, u64>,
    remembered: HashMap<String, Remembered>,
    effects: BTreeMap<(String, String, String), u64>,
    stats: SimStats,
}

struct Stored {
    version: String,
    sha256: String,
    body: Bytes,
    content_type: Option<HeaderValue>,
}

/// What identifies a request behind an idempotency key.
#[derive(PartialEq)]
struct Fingerprint {
    method: Method,
    target: String,
    key: String,
    sha256: String,
}

struct Remembered {
    fingerprint: Fingerprint,
    answer: Answer,
}

/// A (remembered) success: status, ETag and JSON body.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    version: Option<String>,
    body: Option<serde_json::Value>,
}

impl Answer {
    fn render(&self, replayed: bool) -> Response {
        let mut response = match &self.body {
            Some(body) => (self.status, axum::Json(body.clone())).into_response(),
            None => self.status.into_response(),
        };
        if let Some(version) = &self.version {
            response.headers_mut().insert(header::ETAG, etag(version));
        }
        if replayed {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }

    /// The headers of the answer, then a body that fails at once: hyper drops the connection
    /// before anything (not even the status line) has been flushed. A `204` becomes `200` here,
    /// because hyper never polls the body of a `204` (and would send it intact).
    fn broken(&self) -> Response {
        let mut response = self.render(false);
        if response.status() == StatusCode::NO_CONTENT {
            *response.status_mut() = StatusCode::OK;
        }
        *response.body_mut() = Body::from_stream(futures::stream::once(async {
            Err::<Bytes, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "portal-sim: injected connection reset",
            ))
        }));
        response
    }
}

impl SimState {
    /// A fresh portal holding nothing, with the faults of `config`.
    pub fn new(config: SimConfig) -> SimState {
        let faults = FaultSettings {
            fail_rate: config.fail_rate,
            throttle_every: config.throttle_every,
            retry_after_secs: config.retry_after_secs,
            latency_ms: config.latency_ms,
            reset_rate: config.reset_rate,
            conflict_keys: config.conflict_keys,
            reject_keys: config.reject_keys,
        };
        SimState {
            shared: Arc::new(Shared {
                token: config.token,
                store_dir: config.store_dir,
                data: Mutex::new(Data {
                    faults,
                    rng: fastrand::Rng::with_seed(config.seed),
                    items: BTreeMap::new(),
                    last_version: HashMap::new(),
                    remembered: HashMap::new(),
                    effects: BTreeMap::new(),
                    stats: SimStats::default(),
                }),
            }),
        }
    }

    /// The counters, as `GET /_sim/stats` returns them.
    pub async fn stats(&self) -> SimStats {
        let data = self.shared.data.lock().await;
        let mut stats = data.stats.clone();
        stats.effects = data
            .effects
            .iter()
            .map(|((target, key, sha256), count)| EffectCount {
                target: target.clone(),
                key: key.clone(),
                sha256: sha256.clone(),
                count: *count,
            })
            .collect();
        stats.stored = data.items.len() as u64;
        stats
    }

    /// The current fault settings.
    pub async fn faults(&self) -> FaultSettings {
        self.shared.data.lock().await.faults.clone()
    }

    /// Changes the fault settings; returns the new ones. Nothing changes if a rate is invalid.
    pub async fn patch_faults(&self, patch: FaultPatch) -> Result<FaultSettings, SimError> {
        if let Some(rate) = patch.fail_rate {
            check_rate("fail_rate", rate)?;
        }
        if let Some(rate) = patch.reset_rate {
            check_rate("reset_rate", rate)?;
        }
        let mut data = self.shared.data.lock().await;
        let faults = &mut data.faults;
        if let Some(v) = patch.fail_rate {
            faults.fail_rate = v;
        }
        if let Some(v) = patch.throttle_every {
            faults.throttle_every = v;
        }
        if let Some(v) = patch.retry_after_secs {
            faults.retry_after_secs = v;
        }
        if let Some(v) = patch.latency_ms {
            faults.latency_ms = v;
        }
        if let Some(v) = patch.reset_rate {
            faults.reset_rate = v;
        }
        if let Some(v) = patch.conflict_keys {
            faults.conflict_keys = v;
        }
        if let Some(v) = patch.reject_keys {
            faults.reject_keys = v;
        }
        Ok(faults.clone())
    }

    /// Switches every fault off (keeps `retry_after_secs`); returns the new settings.
    pub async fn reset_faults(&self) -> FaultSettings {
        let mut data = self.shared.data.lock().await;
        data.faults = FaultSettings { retry_after_secs: data.faults.retry_after_secs, ..FaultSettings::default() };
        data.faults.clone()
    }
}

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

/// Percent-encodes `text` as one path segment the way docs/portal-api.md prescribes: every byte
/// outside `A-Z a-z 0-9 - . _ ~ @` becomes `%XX`.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A refused request: the status and the message of its JSON error body.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

fn etag(version: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("versions are plain ASCII")
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such resource")
}

/// Counts the request, injects 429/503, waits the latency and checks the bearer token.
async fn admit(state: &SimState, headers: &HeaderMap) -> Result<(), Response> {
    let (latency, fault) = {
        let mut data = state.shared.data.lock().await;
        data.stats.requests += 1;
        let number = data.stats.requests;
        // One draw per request whatever the settings, so the pattern depends on the seed only.
        let unlucky = data.rng.f64() < data.faults.fail_rate;
        let every = u64::from(data.faults.throttle_every);
        let fault = if every > 0 && number % every == 0 {
            data.stats.faults.throttled += 1;
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "portal-sim: throttled");
            response.headers_mut().insert(header::RETRY_AFTER, data.faults.retry_after_secs.into());
            Some(response)
        } else if unlucky {
            data.stats.faults.unavailable += 1;
            Some(error(StatusCode::SERVICE_UNAVAILABLE, "portal-sim: injected failure"))
        } else {
            None
        };
        (Duration::from_millis(data.faults.latency_ms), fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(response) = fault {
        return Err(response);
    }
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && token.trim() == state.shared.token);
    if !authorized {
        state.shared.data.lock().await.stats.unauthorized += 1;
        return Err(error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token"));
    }
    Ok(())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(|v| Some(v.trim())).map_err(|_| format!("{name} is not visible ASCII")),
    }
}

/// The condition a write carries.
enum Precondition {
    /// `If-None-Match: *`: only if the portal holds nothing.
    Absent,
    /// `If-Match`: only if the portal holds one of these versions (`None` = `*`, any).
    Matches(Option<Vec<String>>),
}

impl Precondition {
    fn parse(headers: &HeaderMap, allow_create: bool) -> Result<Precondition, Refusal> {
        let bad = |m: String| Refusal::new(StatusCode::BAD_REQUEST, m);
        let if_match = header_str(headers, "if-match").map_err(bad)?;
        let if_none_match = header_str(headers, "if-none-match").map_err(bad)?;
        match (if_match, if_none_match) {
            (Some(_), Some(_)) => Err(bad("send exactly one of If-Match and If-None-Match".to_owned())),
            (None, None) => Err(Refusal::new(
                StatusCode::PRECONDITION_REQUIRED,
                if allow_create {
                    "PUT needs If-None-Match: * or If-Match: \"<version>\""
                } else {
                    "DELETE needs If-Match: \"<version>\""
                },
            )),
            (None, Some(value)) if allow_create && value == "*" => Ok(Precondition::Absent),
            (None, Some(_)) => Err(bad(if allow_create {
                "If-None-Match must be *".to_owned()
            } else {
                "DELETE takes If-Match, not If-None-Match".to_owned()
            })),
            (Some("*"), None) => Ok(Precondition::Matches(None)),
            (Some(value), None) => {
                let tags = value
                    .split(',')
                    .map(|tag| {
                        let tag = tag.trim();
                        let tag = tag.strip_prefix("W/").unwrap_or(tag);
                        tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).map(str::to_owned)
                    })
                    .collect::<Option<Vec<_>>>();
                match tags {
                    Some(tags) => Ok(Precondition::Matches(Some(tags))),
                    None => Err(bad(format!("If-Match must hold quoted versions, not {value}"))),
                }
            }
        }
    }

    /// `Err(message)` if the precondition fails for what the portal holds now.
    fn check(&self, current: Option<&Stored>) -> Result<(), String> {
        match (self, current) {
            (Precondition::Absent, None) => Ok(()),
            (Precondition::Absent, Some(stored)) => Err(format!("the portal already holds version {}", stored.version)),
            (Precondition::Matches(_), None) => Err("the portal holds nothing".to_owned()),
            (Precondition::Matches(None), Some(_)) => Ok(()),
            (Precondition::Matches(Some(tags)), Some(stored)) => {
                if tags.contains(&stored.version) {
                    Ok(())
                } else {
                    Err(format!("the portal holds version {}, not {}", stored.version, tags.join(", ")))
                }
            }
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Refusal> {
    match header_str(headers, "idempotency-key") {
        Ok(Some(key)) if !key.is_empty() => Ok(key.to_owned()),
        Ok(_) => Err(Refusal::new(StatusCode::BAD_REQUEST, "Idempotency-Key is required on PUT and DELETE")),
        Err(message) => Err(Refusal::new(StatusCode::BAD_REQUEST, message)),
    }
}

impl Data {
    /// The remembered answer for `key`: replayed if the request is the same, 422 if it is not.
    fn replay(&mut self, key: &str, fingerprint: &Fingerprint) -> Option<Response> {
        let remembered = self.remembered.get(key)?;
        if remembered.fingerprint == *fingerprint {
            let response = remembered.answer.render(true);
            self.stats.replays += 1;
            Some(response)
        } else {
            self.stats.client_errors += 1;
            Some(error(StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key was already used for a different request"))
        }
    }

    fn next_version(&mut self, id: &ItemId) -> String {
        let last = self.last_version.entry(id.clone()).or_insert(0);
        *last += 1;
        format!("v{last}")
    }

    /// Stores `body` as the new version of `id`; `Ok((status, version, sha256))`.
    async fn store(
        &mut self,
        store_dir: Option<&FsPath>,
        id: &ItemId,
        body: Bytes,
        content_type: Option<HeaderValue>,
    ) -> Result<(StatusCode, String, String), SimError> {
        if let Some(dir) = store_dir {
            write_mirror(dir, id, &body).await?;
        }
        let sha256 = sha256_hex(&body);
        let version = self.next_version(id);
        let content_type = content_type.or_else(|| self.items.get(id).and_then(|stored| stored.content_type.clone()));
        let previous = self
            .items
            .insert(id.clone(), Stored { version: version.clone(), sha256: sha256.clone(), body, content_type });
        let status = if previous.is_some() { StatusCode::OK } else { StatusCode::CREATED };
        Ok((status, version, sha256))
    }

    async fn remove(&mut self, store_dir: Option<&FsPath>, id: &ItemId) -> Result<(), SimError> {
        if let Some(dir) = store_dir {
            remove_mirror(dir, id).await?;
        }
        self.items.remove(id);
        Ok(())
    }

    fn count_effect(&mut self, id: &ItemId, sha256: &str) {
        *self.effects.entry((id.0.clone(), id.1.clone(), sha256.to_owned())).or_insert(0) += 1;
    }

    /// Remembers a success and decides whether its connection is dropped.
    fn finish(&mut self, key: String, fingerprint: Fingerprint, answer: Answer) -> Response {
        let reset = self.rng.f64() < self.faults.reset_rate;
        let response = if reset {
            self.stats.faults.reset += 1;
            tracing::info!(
                target = %fingerprint.target,
                key = %fingerprint.key,
                status = answer.status.as_u16(),
                "effect applied, dropping the connection (injected reset)"
            );
            answer.broken()
        } else {
            answer.render(false)
        };
        self.remembered.insert(key, Remembered { fingerprint, answer });
        response
    }
}

/// `DIR/<target>/<key>`, both percent-encoded; a leading dot is encoded too (no `.`/`..` names).
fn mirror_path(dir: &FsPath, (target, key): &ItemId) -> PathBuf {
    let name = |text: &str| {
        let encoded = encode_segment(text);
        match encoded.strip_prefix('.') {
            Some(rest) => format!("%2E{rest}"),
            None => encoded,
        }
    };
    dir.join(name(target)).join(name(key))
}

async fn write_mirror(dir: &FsPath, id: &ItemId, body: &[u8]) -> Result<(), SimError> {
    let path = mirror_path(dir, id);
    let parent = path.parent().expect("the mirror path has a target directory");
    let file_name = path.file_name().expect("the mirror path has a file name");
    // Encoded names never start with a dot, so the temporary file cannot hit another document.
    let temporary = parent.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let result = async {
        tokio::fs::create_dir_all(parent).await?;
        tokio::fs::write(&temporary, body).await?;
        tokio::fs::rename(&temporary, &path).await
    }
    .await;
    result.map_err(|source| SimError::Store { path, source })
}

async fn remove_mirror(dir: &FsPath, id: &ItemId) -> Result<(), SimError> {
    let path = mirror_path(dir, id);
    match tokio::fs::remove_file(&path).await {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(SimError::Store { path, source }),
        _ => Ok(()),
    }
}

fn store_failure(e: SimError) -> Response {
    tracing::error!(error = %e, "portal-sim: mirror file");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn get_item(
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

async fn put_item(
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

async fn delete_item(
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

async fn stats(State(state): State<SimState>) -> Response {
    axum::Json(state.stats().await).into_response()
}

async fn get_config(State(state): State<SimState>) -> Response {
    axum::Json(state.faults().await).into_response()
}

async fn patch_config(State(state): State<SimState>, body: Bytes) -> Response {
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

async fn reset_faults(State(state): State<SimState>) -> Response {
    let faults = state.reset_faults().await;
    tracing::info!("faults switched off");
    axum::Json(faults).into_response()
}

/// An editor changes the document in the portal: a new version, not counted as an effect.
async fn edit_item(
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
async fn edit_delete(State(state): State<SimState>, Path((target, key)): Path<(String, String)>) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: SimConfig,
    }

    #[test]
    fn default_config_matches_the_command_line_defaults() {
        let parsed = Cli::try_parse_from(["portal-sim"]).unwrap().config;
        let default = SimConfig::default();
        assert_eq!(SimConfig { token: String::new(), ..parsed }, SimConfig { token: String::new(), ..default });
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert!(Cli::try_parse_from(["portal-sim", "--fail-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["portal-sim", "--reset-rate", "-0.1"]).is_err());
        let cli =
            Cli::try_parse_from(["portal-sim", "--fail-rate", "0.25", "--conflict-key", "a/b", "--conflict-key", "c"])
                .unwrap();
        assert_eq!(cli.config.fail_rate, 0.25);
        assert_eq!(cli.config.conflict_keys, ["a/b", "c"]);
    }

    #[test]
    fn segments_are_encoded_as_the_contract_says() {
        assert_eq!(encode_segment("aachen-forms/S05000101@1.0"), "aachen-forms%2FS05000101@1.0");
        assert_eq!(encode_segment("a b~ä"), "a%20b~%C3%A4");
        let path = mirror_path(FsPath::new("/d"), &("t".to_owned(), "..".to_owned()));
        assert_eq!(path, FsPath::new("/d/t/%2E."));
    }
}
