//! Configuration: `RawConfig` as written in TOML, resolved up front by `Config::resolve` into live
//! sources, mappings, targets and schedules, with every problem reported at once by file and line.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use globset::{Glob, GlobSet, GlobSetBuilder};
use jaq_json::Val;
use toml::Spanned;

use crate::codec::{Format, Limits};
use crate::mapping::engine::{Program, to_val};
use crate::mapping::{self, Codelists, Mapping};
use crate::scheduler::Schedule;

mod raw;
mod unknown;

pub use raw::*;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PORTAL_BRIDGE_CONFIG";
/// Environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "PORTAL_BRIDGE_DATABASE_URL";
/// The config file used when neither `--config` nor the environment names one.
pub const DEFAULT_CONFIG: &str = "config/bridge.toml";

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

/// One problem in the configuration, with the file and (where known) the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found while resolving a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Report<'_> {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        let span = spanned.span();
        let line = (span.end > 0).then(|| crate::codec::line_of(self.text.as_bytes(), span.start));
        self.errors.push(ConfigError { file: self.file.into(), line, message: message.into() });
    }

    fn file(&mut self, file: &Path, line: Option<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError { file: file.into(), line, message: message.into() });
    }
}

impl Config {
    /// Reads, checks and compiles the configuration at `file`. Nothing is started: on any
    /// problem all problems are returned together.
    pub fn resolve(file: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigErrors(vec![ConfigError { file: file.into(), line: None, message: format!("cannot read: {e}") }])
        })?;
        let (raw, unknown_keys) = unknown::parse(&text);
        let mut report = Report { file, text: &text, errors: Vec::new() };
        for path in &unknown_keys {
            report.file(file, unknown::line(&text, path), unknown::message(path));
        }
        let raw = raw.map_err(|e| {
            let line = e.span().map(|s| crate::codec::line_of(text.as_bytes(), s.start));
            report.file(file, line, e.message().trim());
            ConfigErrors(std::mem::take(&mut report.errors))
        })?;
        let config_dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let root = config_dir.join(raw.root.get_ref());
        let root = match root.canonicalize() {
            Ok(root) if root.is_dir() => root,
            _ => {
                report.at(&raw.root, format!("root directory {} does not exist", root.display()));
                root
            }
        };
        let resolve = |p: &str| -> PathBuf { root.join(p) };

        let timezone = raw.timezone.get_ref().parse::<Tz>().unwrap_or_else(|_| {
            report.at(&raw.timezone, format!("unknown time zone `{}`", raw.timezone.get_ref()));
            chrono_tz::Europe::Berlin
        });

        let database_url = overrides.database_url.clone().unwrap_or_else(|| raw.database.url.clone());
        let database_url = match database_url.strip_prefix("sqlite://") {
            Some(path) if !path.starts_with('/') && !path.starts_with(":memory:") => {
                format!("sqlite://{}", resolve(path).display())
            }
            _ => database_url,
        };

        let codelists = match &raw.paths.codelists {
            None => Codelists::empty(),
            Some(dir) => {
                match Codelists::load(&resolve(dir.get_ref()), raw.limits.max_codelist_bytes, raw.limits.codec()) {
                    Ok(lists) => lists,
                    Err(e) => {
                        report.at(dir, format!("codelist directory {}: {e}", resolve(dir.get_ref()).display()));
                        Codelists::empty()
                    }
                }
            }
        };

        let mappings_dir = resolve(raw.paths.mappings.get_ref());
        let mappings: Vec<Arc<Mapping>> = if !mappings_dir.is_dir() {
            report.at(&raw.paths.mappings, format!("mapping directory {} does not exist", mappings_dir.display()));
            Vec::new()
        } else {
            match mapping::load_dir(&mappings_dir, &codelists) {
                Ok(mut mappings) => {
                    apply_validation(&raw.validation, &root, &mut mappings, &mut report);
                    mappings.into_iter().map(Arc::new).collect()
                }
                Err(errors) => {
                    for e in errors {
                        let (file, line, message) = match e {
                            mapping::LoadError::Io { file, message } => (file, None, message),
                            mapping::LoadError::Toml { file, line, message } => (file, Some(line), message),
                            mapping::LoadError::Program { file, error } => {
                                (file, Some(error.line), format!("jq, column {}: {}", error.column, error.message))
                            }
                            mapping::LoadError::Invalid { file, message } => (file, None, message),
                        };
                        report.file(&file, line, message);
                    }
                    Vec::new()
                }
            }
        };
        let mappings_loaded = report.errors.iter().all(|e| !e.file.starts_with(&mappings_dir));

        let outbox = resolve(raw.paths.outbox.get_ref());
        let mut targets = Vec::new();
        for target in &raw.targets {
            let id = target.id.get_ref();
            if !is_identifier(id) {
                report.at(&target.id, format!("target id `{id}` must be lower-case letters, digits and `-`"));
            }
            if targets.iter().any(|t: &Target| &t.id == id) {
                report.at(&target.id, format!("target `{id}` is defined twice"));
            }
            let delivery: Arc<dyn crate::delivery::Target> = match target.delivery.get_ref().as_str() {
                "outbox" => Arc::new(crate::delivery::outbox::Outbox::new(outbox.join(id))),
                "http" => match resolve_target_http(id, target, &root, &mut report) {
                    Some(http) => Arc::new(http),
                    None => continue,
                },
                other => {
                    report.at(
                        &target.delivery,
                        format!("target `{id}`: unknown delivery `{other}` (expected outbox or http)"),
                    );
                    continue;
                }
            };
            targets.push(Target { id: id.clone(), delivery });
        }
        for mapping in &mappings {
            if !targets.iter().any(|t| t.id == mapping.output.target) {
                report.file(
                    &mapping.file,
                    None,
                    format!("output target `{}` is not a [[target]] in {}", mapping.output.target, file.display()),
                );
            }
        }

        let seconds = &raw.limits.max_mapping_seconds;
        if !(seconds.get_ref().is_finite() && *seconds.get_ref() > 0.0 && *seconds.get_ref() <= 86_400.0) {
            report.at(
                seconds,
                format!("limits.max_mapping_seconds = {}: must be more than 0 and at most 86400", seconds.get_ref()),
            );
        }
        if *raw.limits.max_mapping_bytes.get_ref() == 0 {
            report.at(&raw.limits.max_mapping_bytes, "limits.max_mapping_bytes must be more than 0");
        }
        let budget = crate::mapping::Budget {
            time: std::time::Duration::try_from_secs_f64(*seconds.get_ref())
                .unwrap_or(std::time::Duration::from_secs(crate::mapping::Budget::DEFAULT_SECONDS)),
            bytes: *raw.limits.max_mapping_bytes.get_ref(),
        };

        let mut sources: Vec<Arc<Source>> = Vec::new();
        let mut ids = BTreeSet::new();
        for raw_source in &raw.sources {
            let id = raw_source.id.get_ref();
            if !is_identifier(id) {
                report.at(&raw_source.id, format!("source id `{id}` must be lower-case letters, digits and `-`"));
            }
            if !ids.insert(id.clone()) {
                report.at(&raw_source.id, format!("source `{id}` is defined twice"));
            }
            let kind = match raw_source.kind.get_ref().as_str() {
                "directory" => {
                    let Some(raw_path) = &raw_source.path else {
                        report.at(&raw_source.kind, format!("source `{id}`: kind = \"directory\" needs a `path`"));
                        continue;
                    };
                    let path = resolve(raw_path.get_ref());
                    if !path.is_dir() {
                        report.at(raw_path, format!("source `{id}`: directory {} does not exist", path.display()));
                    }
                    let patterns: Vec<Spanned<String>> = if raw_source.include.is_empty() {
                        vec![Spanned::new(0..0, "*.xml".into()), Spanned::new(0..0, "*.json".into())]
                    } else {
                        raw_source.include.clone()
                    };
                    let mut builder = GlobSetBuilder::new();
                    for pattern in &patterns {
                        match Glob::new(pattern.get_ref()) {
                            Ok(glob) => {
                                builder.add(glob);
                            }
                            Err(e) => report.at(pattern, format!("source `{id}`: include pattern: {e}")),
                        }
                    }
                    let include = builder.build().unwrap_or_else(|_| GlobSet::empty());
                    SourceKind::Directory {
                        path,
                        include,
                        patterns: patterns.into_iter().map(Spanned::into_inner).collect(),
                    }
                }
                "http" => match resolve_http(id, raw_source, &root, &mut report) {
                    Some(http) => SourceKind::Http(http),
                    None => continue,
                },
                other => {
                    report.at(
                        &raw_source.kind,
                        format!("source `{id}`: unknown kind `{other}` (expected `directory` or `http`)"),
                    );
                    continue;
                }
            };
            let key = raw_source.key.as_ref().and_then(|key| match Program::compile(key.get_ref()) {
                Ok(program) => Some(Arc::new(program)),
                Err(errors) => {
                    for e in errors {
                        report.at(key, format!("source `{id}`: key expression: {e}"));
                    }
                    None
                }
            });
            let mut compile = |what: &str, spanned: &Spanned<String>| match Program::compile(spanned.get_ref()) {
                Ok(program) => Some(Arc::new(program)),
                Err(errors) => {
                    for e in errors {
                        report.at(spanned, format!("source `{id}`: {what}: {e}"));
                    }
                    None
                }
            };
            let leika_key = raw_source.leika_key.as_ref().and_then(|k| compile("leika_key expression", k));
            let form_link = raw_source.form_link.as_ref().and_then(|link| {
                let program = compile("form_link.id expression", &link.id)?;
                Some(FormLink { source: link.source.get_ref().clone(), id: program })
            });
            if let Some(link) = &raw_source.form_link
                && !raw.sources.iter().any(|s| s.id.get_ref() == link.source.get_ref())
            {
                report.at(
                    &link.source,
                    format!("source `{id}`: form_link.source `{}` is not a configured source", link.source.get_ref()),
                );
            }
            if raw_source.split == Split::Array && raw_source.key.is_none() {
                report.at(&raw_source.id, format!("source `{id}`: split = \"array\" needs a `key` expression"));
            }
            let mut source_mappings = Vec::new();
            for name in raw_source.mappings.get_ref() {
                match mappings.iter().find(|m| &m.name == name) {
                    Some(mapping) => {
                        if let Some(format) = raw_source.format
                            && format != mapping.input.format
                        {
                            report.at(
                                &raw_source.mappings,
                                format!(
                                    "source `{id}` reads {format:?} but mapping `{name}` takes {:?}",
                                    mapping.input.format
                                ),
                            );
                        }
                        source_mappings.push(mapping.clone());
                    }
                    None if mappings_loaded => report.at(
                        &raw_source.mappings,
                        format!("source `{id}`: no mapping named `{name}` in {}", mappings_dir.display()),
                    ),
                    None => {}
                }
            }
            for (a, b) in same_place_pairs(&source_mappings) {
                let message = if a.name == b.name {
                    format!("source `{id}`: mapping `{}` is listed twice", a.name)
                } else {
                    format!(
                        "source `{id}`: mappings `{}` and `{}` both write to target `{}` and can take the same \
                         records, so an item would get two documents there; give the source one mapping per \
                         target, or mappings whose `[input]` root or namespace differ",
                        a.name, b.name, a.output.target
                    )
                };
                report.at(&raw_source.mappings, message);
            }
            if raw_source.mappings.get_ref().is_empty() {
                report.at(&raw_source.mappings, format!("source `{id}` lists no mappings"));
            }
            let schedule = raw_source.schedule.as_ref().and_then(|s| match Schedule::parse(s.get_ref(), timezone) {
                Ok(schedule) => Some(schedule),
                Err(e) => {
                    report.at(s, format!("source `{id}`: schedule `{}`: {e}", s.get_ref()));
                    None
                }
            });
            let params = serde_json::to_value(&raw_source.params).expect("TOML is JSON");
            let scan_fingerprint = {
                let mappings: Vec<String> =
                    source_mappings.iter().map(|m| format!("{}={}", m.name, m.version)).collect();
                let parts = [
                    env!("CARGO_PKG_VERSION").to_owned(),
                    id.clone(),
                    raw_source.region.clone(),
                    format!("{:?} {:?} {:?}", raw_source.format, raw_source.split, raw_source.records),
                    raw_source.key.as_ref().map(|k| k.get_ref().clone()).unwrap_or_default(),
                    params.to_string(),
                    mappings.join(","),
                ];
                crate::domain::ContentHash::of_parts(parts.iter().map(|p| p.as_bytes()))
            };
            sources.push(Arc::new(Source {
                id: id.clone(),
                region: raw_source.region.clone(),
                kind,
                format: raw_source.format,
                split: raw_source.split,
                key,
                records: raw_source.records.clone(),
                leika_key,
                form_link,
                max_withdrawal_share: raw_source.max_withdrawal_share,
                overlap: raw_source.overlap,
                missed: raw_source.missed,
                jitter: std::time::Duration::from_secs(raw_source.jitter_secs),
                mappings: source_mappings,
                schedule,
                on_missing_codelist: raw_source.on_missing_codelist,
                params,
                scan_fingerprint,
                max_id_chars: raw.limits.max_id_chars,
                budget,
            }));
        }

        let admin_listen = raw.admin.listen.get_ref().parse::<std::net::SocketAddr>().unwrap_or_else(|e| {
            report.at(&raw.admin.listen, format!("admin.listen `{}`: {e}", raw.admin.listen.get_ref()));
            ([127, 0, 0, 1], 8080).into()
        });
        let admin_token = match (&raw.admin.token_env, &raw.admin.token_file) {
            (None, None) => None,
            (env, file) => match read_secret(env, file, &root, "admin token") {
                Ok(token) => Some(token),
                Err(e) => {
                    report.at(&raw.admin.listen, format!("admin: {e}"));
                    None
                }
            },
        };

        let tokens_file = raw.admin.tokens_file.as_ref().map(|path| root.join(path));

        let xrepository = raw.codelists.xrepository.as_ref().and_then(|spanned| {
            let xr = spanned.get_ref();
            let url = match reqwest::Url::parse(&xr.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => url,
                _ => {
                    report.at(spanned, format!("codelists.xrepository: url `{}` is not an http(s) URL", xr.url));
                    return None;
                }
            };
            if xr.timeout_secs == 0 {
                report.at(spanned, "codelists.xrepository: timeout_secs must be at least 1");
                return None;
            }
            let settings = crate::xrepository::Settings {
                url,
                timeout: std::time::Duration::from_secs(xr.timeout_secs),
                retry: crate::retry::RetryPolicy {
                    max_retries: xr.retries,
                    base_delay: std::time::Duration::from_millis(xr.retry_base_ms),
                    max_delay: std::time::Duration::from_millis(xr.retry_max_ms),
                },
                max_bytes: raw.limits.max_codelist_bytes,
                limits: raw.limits.codec(),
            };
            crate::xrepository::XRepository::new(settings)
                .map_err(|e| report.at(spanned, format!("codelists.xrepository: {e}")))
                .ok()
        });

        let policy = resolve_policy(&raw, &mut report);

        if !report.errors.is_empty() {
            return Err(ConfigErrors(report.errors));
        }
        let codelists_val = to_val(&codelists.table);
        Ok(Config {
            file: file.into(),
            root,
            database_url,
            timezone,
            limits: raw.limits.codec(),
            max_record_bytes: raw.limits.max_record_bytes,
            budget,
            codelists: Arc::new(codelists),
            codelists_val,
            xrepository,
            mappings,
            targets,
            sources,
            admin: Admin {
                listen: admin_listen,
                token: admin_token,
                tokens_file,
                read_needs_token: raw.admin.read_needs_token,
            },
            shutdown_grace: std::time::Duration::from_secs(raw.daemon.shutdown_grace_secs),
            lease: std::time::Duration::from_secs(raw.daemon.lease_secs.max(1)),
            share_batch: raw.daemon.share_batch,
            policy,
            plan_lifetime: std::time::Duration::from_secs(
                3600 * raw.approval.as_ref().map_or_else(default_plan_hours, |a| a.get_ref().plans_expire_after_hours),
            ),
        })
    }

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
                let versions: Vec<String> = own.iter().map(|m| format!("{}={}", m.name, m.version)).collect();
                let scan_fingerprint = crate::domain::ContentHash::of_parts([
                    source.scan_fingerprint.as_str().as_bytes(),
                    versions.join(",").as_bytes(),
                ]);
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

/// Reads a secret from exactly one of an environment variable or a file (relative to `root`).
fn read_secret(
    env: &Option<String>,
    file: &Option<String>,
    root: &Path,
    what: &str,
) -> Result<secrecy::SecretString, String> {
    match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Ok(secrecy::SecretString::from(value)),
            _ => Err(format!("the environment variable {var} ({what}) is not set")),
        },
        (None, Some(path)) => std::fs::read_to_string(root.join(path))
            .map(|value| secrecy::SecretString::from(value.trim().to_owned()))
            .map_err(|e| format!("cannot read the {what} file {path}: {e}")),
        _ => Err(format!("give the {what} as exactly one of *_env or *_file")),
    }
}

/// Builds an HTTP target from `[target.http]`, reporting every problem.
/// The approval policy of `[approval]` and of each source's and target's `approval`, each level
/// checked (a share is at most 100 %, a plan expires after at least an hour).
fn resolve_policy(raw: &RawConfig, report: &mut Report<'_>) -> crate::policy::Policy {
    fn check<T>(report: &mut Report<'_>, at: &Spanned<T>, name: &str, rules: &crate::policy::ApprovalRules) {
        if let Some(p) = rules.max_changed_percent.filter(|p| *p > 100) {
            report.at(at, format!("{name}.max_changed_percent = {p}: a share in percent is at most 100"));
        }
        if rules.approvers == Some(0) {
            report.at(at, format!("{name}.approvers = 0: at least 1 (leave a rule unset or false to need nobody)"));
        }
    }
    let mut policy = crate::policy::Policy::default();
    if let Some(approval) = &raw.approval {
        policy.global = approval.get_ref().rules();
        check(report, approval, "approval", &policy.global);
        if approval.get_ref().plans_expire_after_hours == 0 {
            report.at(approval, "approval.plans_expire_after_hours = 0: at least 1");
        }
    }
    for source in &raw.sources {
        if let Some(rules) = &source.approval {
            check(report, rules, &format!("source {} approval", source.id.get_ref()), rules.get_ref());
            policy.sources.insert(source.id.get_ref().clone(), rules.get_ref().clone());
        }
    }
    for target in &raw.targets {
        if let Some(rules) = &target.approval {
            check(report, rules, &format!("target {} approval", target.id.get_ref()), rules.get_ref());
            policy.targets.insert(target.id.get_ref().clone(), rules.get_ref().clone());
        }
    }
    policy.enabled = raw.approval.is_some() || !policy.sources.is_empty() || !policy.targets.is_empty();
    policy
}

fn resolve_target_http(
    id: &str,
    raw: &RawTarget,
    root: &Path,
    report: &mut Report<'_>,
) -> Option<crate::delivery::http::HttpTarget> {
    use crate::delivery::http::{HttpTarget, HttpTargetSettings};
    use std::time::Duration;
    let Some(spanned) = &raw.http else {
        report.at(&raw.delivery, format!("target `{id}`: delivery = \"http\" needs a [target.http] table with a url"));
        return None;
    };
    let http = spanned.get_ref();
    let base = match reqwest::Url::parse(&http.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            report.at(spanned, format!("target `{id}`: url `{}` is not an http(s) URL", http.url));
            return None;
        }
    };
    let token = match read_secret(&http.token_env, &http.token_file, root, "token") {
        Ok(token) => token,
        Err(e) => {
            report.at(spanned, format!("target `{id}`: {e}"));
            return None;
        }
    };
    let settings = HttpTargetSettings {
        id: id.to_owned(),
        base,
        token,
        retry: crate::retry::RetryPolicy {
            max_retries: http.max_retries,
            base_delay: Duration::from_millis(http.retry_base_ms),
            max_delay: Duration::from_millis(http.retry_max_ms),
        },
        concurrency: http.concurrency,
        requests_per_second: http.requests_per_second,
        connect_timeout: Duration::from_secs(http.connect_timeout_secs),
        request_timeout: Duration::from_secs(http.request_timeout_secs),
    };
    HttpTarget::new(settings).map_err(|e| report.at(spanned, format!("target `{id}`: {e}"))).ok()
}

/// Builds an HTTP source from `url` and `[source.http]`, reporting every problem.
fn resolve_http(
    id: &str,
    raw: &RawSource,
    root: &Path,
    report: &mut Report<'_>,
) -> Option<crate::source::http::HttpSource> {
    use crate::source::http::{Auth, HttpSettings, HttpSource, Pagination, RetryPolicy};
    use std::time::Duration;

    let Some(url_text) = &raw.url else {
        report.at(&raw.kind, format!("source `{id}`: kind = \"http\" needs a `url`"));
        return None;
    };
    let url = match reqwest::Url::parse(url_text.get_ref()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(_) => {
            report.at(url_text, format!("source `{id}`: url must be http:// or https://"));
            return None;
        }
        Err(e) => {
            report.at(url_text, format!("source `{id}`: url: {e}"));
            return None;
        }
    };
    // Problems of the HTTP settings are reported at `[source.http]`, or at `url` without one.
    let anchor = Spanned::new(raw.http.as_ref().map_or(url_text.span(), |h| h.span()), ());
    let default_http = toml::from_str::<RawHttp>("").expect("every HTTP setting has a default");
    let http = raw.http.as_ref().map_or(&default_http, |h| h.get_ref());
    let at = |report: &mut Report<'_>, message: String| report.at(&anchor, message);
    let pagination = match http.pagination.as_str() {
        "none" => Pagination::None,
        "link" => Pagination::Link,
        "page" => Pagination::Page {
            param: http.page_param.clone(),
            first: http.first_page,
            size: http.page_size_param.clone().zip(http.page_size),
        },
        other => {
            at(report, format!("source `{id}`: pagination `{other}` (expected none, page or link)"));
            return None;
        }
    };
    let secret = |report: &mut Report<'_>, env: &Option<String>, file: &Option<String>, what: &str| {
        read_secret(env, file, root, what).map_err(|e| at(report, format!("source `{id}`: {e}"))).ok()
    };
    let auth = match &http.auth {
        None => None,
        Some(auth) => match auth.kind.as_str() {
            "bearer" => Some(Auth::Bearer(secret(report, &auth.token_env, &auth.token_file, "token")?)),
            "basic" => {
                let Some(username) = auth.username.clone() else {
                    at(report, format!("source `{id}`: basic auth needs a username"));
                    return None;
                };
                Some(Auth::Basic {
                    username,
                    password: secret(report, &auth.password_env, &auth.password_file, "password")?,
                })
            }
            other => {
                at(report, format!("source `{id}`: auth kind `{other}` (expected bearer or basic)"));
                return None;
            }
        },
    };
    let settings = HttpSettings {
        url,
        pagination,
        max_pages: http.max_pages,
        auth,
        retry: RetryPolicy {
            max_retries: http.max_retries,
            base_delay: Duration::from_millis(http.retry_base_ms),
            max_delay: Duration::from_millis(http.retry_max_ms),
        },
        requests_per_second: http.requests_per_second,
        connect_timeout: Duration::from_secs(http.connect_timeout_secs),
        request_timeout: Duration::from_secs(http.request_timeout_secs),
        fetch_timeout: Duration::from_secs(http.fetch_timeout_secs),
        max_body_bytes: http.max_body_bytes,
    };
    match HttpSource::new(settings) {
        Ok(source) => Some(source),
        Err(e) => {
            at(report, format!("source `{id}`: {e}"));
            None
        }
    }
}

/// Applies `[validation]`: schema overrides and input schemas, each checked to exist.
fn apply_validation(validation: &RawValidation, root: &Path, mappings: &mut [Mapping], report: &mut Report<'_>) {
    let xsd_dir = match &validation.xsd_dir {
        None => root.to_path_buf(),
        Some(dir) => {
            let path = root.join(dir.get_ref());
            if !path.is_dir() {
                report.at(dir, format!("validation.xsd_dir {} does not exist", path.display()));
            }
            path
        }
    };
    for (table, entries) in [("output", &validation.output), ("input", &validation.input)] {
        for (name, schema) in entries {
            let path = xsd_dir.join(schema.get_ref());
            let Some(mapping) = mappings.iter_mut().find(|m| &m.name == name) else {
                report.at(schema, format!("validation.{table}: there is no mapping named `{name}`"));
                continue;
            };
            if !path.is_file() {
                report.at(schema, format!("validation.{table}.{name}: schema {} does not exist", path.display()));
                continue;
            }
            if table == "output" {
                mapping.output.schema = Some(path);
            } else if mapping.input.format != Format::Xml {
                report.at(schema, format!("validation.input.{name}: input schemas apply to XML records only"));
            } else {
                mapping.input_schema = Some(path);
            }
        }
    }
}

/// Pairs of a source's mappings that write to the same target and could both take one record
/// (same format; root element and namespace not told apart): each would write the same item's
/// document at the same place.
fn same_place_pairs(mappings: &[Arc<Mapping>]) -> Vec<(&Mapping, &Mapping)> {
    let mut pairs = Vec::new();
    for (i, a) in mappings.iter().enumerate() {
        for b in &mappings[i + 1..] {
            if a.output.target == b.output.target && may_take_the_same_records(a, b) {
                pairs.push((a.as_ref(), b.as_ref()));
            }
        }
    }
    pairs
}

/// False only when the `[input]` of the two mappings rules out a record that both take.
fn may_take_the_same_records(a: &Mapping, b: &Mapping) -> bool {
    let (a, b) = (&a.input, &b.input);
    let roots_meet = a.root.is_empty() || b.root.is_empty() || a.root.iter().any(|r| b.root.contains(r));
    let namespaces_meet = match (&a.namespace, &b.namespace) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    a.format == b.format && roots_meet && namespaces_meet
}

fn is_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
}
