//! The simulator's state: the documents the portal holds, versions, remembered answers of
//! idempotency keys, counters and fault settings, behind one lock.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::{FaultPatch, FaultSettings, SimConfig, SimError, check_rate};
use crate::paths::{ItemId, remove_mirror, write_mirror};
use crate::response::{Answer, error};
use crate::stats::{EffectCount, SimStats};

/// The simulator's state, shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct SimState {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) token: String,
    pub(crate) store_dir: Option<PathBuf>,
    pub(crate) data: Mutex<Data>,
}

pub(crate) struct Data {
    pub(crate) faults: FaultSettings,
    pub(crate) rng: fastrand::Rng,
    pub(crate) items: BTreeMap<ItemId, Stored>,
    /// Last version number handed out per item; survives withdrawals so versions are never reused.
    last_version: HashMap<ItemId, u64>,
    remembered: HashMap<String, Remembered>,
    effects: BTreeMap<(String, String, String), u64>,
    pub(crate) stats: SimStats,
}

pub(crate) struct Stored {
    pub(crate) version: String,
    pub(crate) sha256: String,
    pub(crate) body: Bytes,
    pub(crate) content_type: Option<HeaderValue>,
}

/// What identifies a request behind an idempotency key.
#[derive(PartialEq)]
pub(crate) struct Fingerprint {
    pub(crate) method: Method,
    pub(crate) target: String,
    pub(crate) key: String,
    pub(crate) sha256: String,
}

struct Remembered {
    fingerprint: Fingerprint,
    answer: Answer,
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

impl Data {
    /// The remembered answer for `key`: replayed if the request is the same, 422 if it is not.
    pub(crate) fn replay(&mut self, key: &str, fingerprint: &Fingerprint) -> Option<Response> {
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
    pub(crate) async fn store(
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

    pub(crate) async fn remove(&mut self, store_dir: Option<&FsPath>, id: &ItemId) -> Result<(), SimError> {
        if let Some(dir) = store_dir {
            remove_mirror(dir, id).await?;
        }
        self.items.remove(id);
        Ok(())
    }

    pub(crate) fn count_effect(&mut self, id: &ItemId, sha256: &str) {
        *self.effects.entry((id.0.clone(), id.1.clone(), sha256.to_owned())).or_insert(0) += 1;
    }

    /// Remembers a success and decides whether its connection is dropped.
    pub(crate) fn finish(&mut self, key: String, fingerprint: Fingerprint, answer: Answer) -> Response {
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

pub(crate) fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}
