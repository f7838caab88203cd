//! Configuration: `RawConfig` as written in TOML, resolved up front by `Config::resolve` into live
//! sources, mappings, targets and schedules, with every problem reported at once by file and line.
//!
//! Here the resolved configuration as the rest of the bridge sees it; the steps live beside it:
//! `raw` (the file as written), `unknown` (keys no setting reads), `resolve` (the one pass that
//! checks and builds everything), `sources`, `http` (the HTTP clients), `secret`, `fingerprint`
//! (a source's scan fingerprint) and `error` (problems with file and line).

use std::path::PathBuf;
use std::sync::Arc;

use chrono_tz::Tz;
use globset::GlobSet;
use jaq_json::Val;

use crate::codec::{Format, Limits};
use crate::mapping::engine::{Program, to_val};
use crate::mapping::{Codelists, Mapping};
use crate::scheduler::Schedule;

mod error;
mod fingerprint;
mod http;
mod raw;
mod resolve;
mod secret;
mod sources;
mod unknown;

pub use error::{ConfigError, ConfigErrors};
pub use raw::*;
pub use unknown::{closest_of, with_suggestion};

/// `unknown {what} `{given}``, with the closest of `known` as a suggestion and the list of them:
/// "unknown mapping `zufi-to-xzuf` (did you mean `zufi-to-xzufi`?); there are: a, b".
pub fn unknown_name(what: &str, given: &str, known: &[&str]) -> String {
    let hint = closest_of(given, known).map(|name| format!(" (did you mean `{name}`?)")).unwrap_or_default();
    let list =
        if known.is_empty() { "none is configured".to_owned() } else { format!("there are: {}", known.join(", ")) };
    format!("unknown {what} `{given}`{hint}; {list}")
}

/// The address to listen on: `127.0.0.1:8080`, `[::1]:8080`, or a host name with a port
/// (`localhost:8085`, resolved now; its first address is taken).
pub fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let refused = |why: String| {
        format!(
            "`{text}` is neither an address with a port (127.0.0.1:8080, [::1]:8080) nor a host name with one (localhost:8080): {why}"
        )
    };
    match text.to_socket_addrs() {
        Ok(mut addresses) => addresses.next().ok_or_else(|| refused("the name has no address".into())),
        Err(e) => Err(refused(e.to_string())),
    }
}

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PORTAL_BRIDGE_CONFIG";
/// Environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "PORTAL_BRIDGE_DATABASE_URL";
/// The config file used when neither `--config` nor the environment names one (a checkout's).
pub const DEFAULT_CONFIG: &str = "config/bridge.toml";
/// The installed package's config file, used when neither `--config`, the environment nor
/// [`DEFAULT_CONFIG`] (relative to the working directory) names an existing one.
pub const SYSTEM_CONFIG: &str = "/etc/portal-bridge/bridge.toml";

/// The config file to read when none is named: [`DEFAULT_CONFIG`] if it exists here, else the
/// installed [`SYSTEM_CONFIG`] if that exists, else [`DEFAULT_CONFIG`] (whose absence is then reported).
pub fn default_config_path() -> std::path::PathBuf {
    let here = std::path::Path::new(DEFAULT_CONFIG);
    let system = std::path::Path::new(SYSTEM_CONFIG);
    if !here.exists() && system.exists() { system.to_path_buf() } else { here.to_path_buf() }
}

/// The resolved configuration: everything checked, compiled and ready to run.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub root: PathBuf,
    pub database_url: String,
    pub timezone: Tz,
    pub limits: Limits,
    pub max_record_bytes: u64,
    /// What one run of a mapping on one record may spend (`limits.max_mapping_seconds`, `max_mapping_bytes`).
    pub budget: crate::mapping::Budget,
    pub codelists: Arc<Codelists>,
    /// The codelists table as a jq value, shared by every mapping run.
    pub codelists_val: Val,
    /// Where codelists missing from the directory are fetched (`[codelists.xrepository]`), if anywhere.
    pub xrepository: Option<crate::xrepository::XRepository>,
    pub mappings: Vec<Arc<Mapping>>,
    pub targets: Vec<Target>,
    pub sources: Vec<Arc<Source>>,
    pub admin: Admin,
    pub shutdown_grace: std::time::Duration,
    pub lease: std::time::Duration,
    /// Pairs per shared batch (`[daemon] share_batch`); 0 means runs are not shared.
    pub share_batch: usize,
    /// Which plans need approval (`[approval]` and each source's and target's `approval`).
    pub policy: crate::policy::Policy,
    /// How long a plan may wait to be applied (`approval.plans_expire_after_hours`).
    pub plan_lifetime: std::time::Duration,
}

/// The resolved `[admin]` settings.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: std::net::SocketAddr,
    /// The single token of `token_env`/`token_file` (the identity `admin`, role approver).
    pub token: Option<secrecy::SecretString>,
    /// The file of named tokens (`tokens_file`), resolved against the root; the admin API reads
    /// it (`api::Access::load`) at start and on every reload.
    pub tokens_file: Option<PathBuf>,
    pub read_needs_token: bool,
}

/// A resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    /// How documents get there: an outbox directory or the portal's HTTP import API.
    pub delivery: Arc<dyn crate::delivery::Target>,
}

/// A resolved source.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub region: String,
    pub kind: SourceKind,
    pub format: Option<Format>,
    pub split: Split,
    pub key: Option<Arc<Program>>,
    pub records: Option<String>,
    pub leika_key: Option<Arc<Program>>,
    pub form_link: Option<FormLink>,
    pub max_withdrawal_share: f64,
    pub overlap: crate::scheduler::Overlap,
    pub missed: crate::scheduler::Missed,
    pub jitter: std::time::Duration,
    pub mappings: Vec<Arc<Mapping>>,
    pub schedule: Option<Schedule>,
    pub on_missing_codelist: OnMissingCodelist,
    pub params: serde_json::Value,
    /// What, besides an entry's bytes, decides what the scan makes of it (record settings, key
    /// expression, parameters, mappings, the bridge's version). The scan's result for an entry is
    /// reused while its bytes and this fingerprint stay the same.
    pub scan_fingerprint: crate::domain::ContentHash,
    /// Longest external id accepted (`limits.max_id_chars`).
    pub max_id_chars: usize,
    /// What one run of the key, leika_key or form_link expression may spend (the mappings' budget).
    pub budget: crate::mapping::Budget,
}

/// A resolved form link.
#[derive(Debug, Clone)]
pub struct FormLink {
    pub source: String,
    pub id: Arc<Program>,
}

/// Where a source reads from.
#[derive(Debug, Clone)]
pub enum SourceKind {
    Http(crate::source::http::HttpSource),
    Directory { path: PathBuf, include: GlobSet, patterns: Vec<String> },
}

impl Source {
    /// The facts a mapping may read as `$source`.
    pub fn context(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "region": self.region,
            "on_missing_codelist": self.on_missing_codelist,
            "params": self.params,
        })
    }
}

/// Values from outside the file that take precedence (environment, flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
}

impl Overrides {
    /// Reads the overrides from the process environment.
    pub fn from_env() -> Self {
        Self { database_url: std::env::var(DATABASE_URL_ENV).ok().filter(|v| !v.is_empty()) }
    }
}

impl Config {
    /// This configuration with other codelists (the directory's joined by fetched ones): every
    /// mapping's version, and so every source's scan fingerprint, follows their fingerprint.
    pub fn with_codelists(&self, codelists: Codelists) -> Config {
        let mappings: Vec<Arc<Mapping>> =
            self.mappings.iter().map(|m| Arc::new(m.with_codelists(&codelists))).collect();
        let sources = self
            .sources
            .iter()
            .map(|source| {
                let own: Vec<Arc<Mapping>> = source
                    .mappings
                    .iter()
                    .filter_map(|m| mappings.iter().find(|n| n.name == m.name).cloned())
                    .collect();
                let scan_fingerprint = fingerprint::with_mapping_versions(&source.scan_fingerprint, &own);
                Arc::new(Source { mappings: own, scan_fingerprint, ..(**source).clone() })
            })
            .collect();
        Config {
            file: self.file.clone(),
            root: self.root.clone(),
            database_url: self.database_url.clone(),
            timezone: self.timezone,
            limits: self.limits,
            max_record_bytes: self.max_record_bytes,
            budget: self.budget,
            codelists_val: to_val(&codelists.table),
            codelists: Arc::new(codelists),
            xrepository: self.xrepository.clone(),
            mappings,
            targets: self.targets.clone(),
            sources,
            admin: self.admin.clone(),
            shutdown_grace: self.shutdown_grace,
            lease: self.lease,
            share_batch: self.share_batch,
            policy: self.policy.clone(),
            plan_lifetime: self.plan_lifetime,
        }
    }

    pub fn source(&self, id: &str) -> Option<&Arc<Source>> {
        self.sources.iter().find(|s| s.id == id)
    }

    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.id == id)
    }
}

/// Whether `id` is a valid source or target id: 1 to 64 lower-case letters, digits and `-`, not
/// starting with `-`.
fn is_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
}
