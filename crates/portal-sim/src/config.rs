//! How the simulator starts (`SimConfig`, also the binary's command line) and the fault settings
//! that can be changed while it runs (`FaultSettings`, `FaultPatch`), with the rates checked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

pub(crate) fn check_rate(name: &'static str, value: f64) -> Result<(), SimError> {
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
}
