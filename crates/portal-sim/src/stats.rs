//! What the simulator counts (`GET /_sim/stats`): requests, effects per (target, key, sha256),
//! replays, injected faults and refusals.

use serde::{Deserialize, Serialize};

/// The `sha256` under which withdrawals (DELETE) are counted as effects.
pub const WITHDRAWN: &str = "withdrawn";
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
