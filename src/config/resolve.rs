//! `Config::resolve`: reads the config file and turns it into the live configuration, in one pass
//! that reports every problem at once (root, time zone, database, codelists, mappings and their
//! validation, targets, limits, sources, admin, approval policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use toml::Spanned;

use super::error::Report;
use super::http::{resolve_target_http, resolve_xrepository};
use super::secret::read_secret;
use super::sources::{Resolved, resolve_sources};
use super::{
    Admin, Config, ConfigError, ConfigErrors, Overrides, RawConfig, RawValidation, Target, default_plan_hours,
    is_identifier, unknown,
};
use crate::codec::Format;
use crate::mapping::engine::to_val;
use crate::mapping::{self, Codelists, Mapping};

impl Config {
    /// Reads, checks and compiles the configuration at `file`. Nothing is started: on any
    /// problem all problems are returned together.
    pub fn resolve(file: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigErrors(vec![ConfigError { file: file.into(), line: None, message: format!("cannot read: {e}") }])
        })?;
        let (raw, unknown_keys) = unknown::parse(&text);
        let mut report = Report::new(file, &text);
        for path in &unknown_keys {
            report.file(file, unknown::line(&text, path), unknown::message(path));
        }
        let raw = raw.map_err(|e| {
            let line = e.span().map(|s| crate::codec::line_of(text.as_bytes(), s.start));
            report.file(file, line, unknown::with_suggestion(e.message().trim()));
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
        let mappings = load_mappings(&raw, &root, &mappings_dir, &codelists, &mut report);
        let mappings_loaded = report.errors.iter().all(|e| !e.file.starts_with(&mappings_dir));

        let outbox = resolve(raw.paths.outbox.get_ref());
        let targets = resolve_targets(&raw, &root, &outbox, &mut report);
        for mapping in &mappings {
            if !targets.iter().any(|t| t.id == mapping.output.target) {
                report.file(
                    &mapping.file,
                    None,
                    format!("output target `{}` is not a [[target]] in {}", mapping.output.target, file.display()),
                );
            }
        }

        let budget = resolve_budget(&raw, &mut report);

        let resolved = Resolved {
            root: &root,
            timezone,
            mappings: &mappings,
            mappings_dir: &mappings_dir,
            mappings_loaded,
            budget,
        };
        let sources = resolve_sources(&raw, &resolved, &mut report);

        let admin = resolve_admin(&raw, &root, &mut report);

        let xrepository = resolve_xrepository(&raw, &mut report);

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
            admin,
            shutdown_grace: std::time::Duration::from_secs(raw.daemon.shutdown_grace_secs),
            lease: std::time::Duration::from_secs(raw.daemon.lease_secs.max(1)),
            share_batch: raw.daemon.share_batch,
            policy,
            plan_lifetime: std::time::Duration::from_secs(
                3600 * raw.approval.as_ref().map_or_else(default_plan_hours, |a| a.get_ref().plans_expire_after_hours),
            ),
        })
    }
}

/// The mappings of the mapping directory, with `[validation]` applied; none (reported) when the
/// directory is missing or a mapping file has a problem.
fn load_mappings(
    raw: &RawConfig,
    root: &Path,
    mappings_dir: &Path,
    codelists: &Codelists,
    report: &mut Report<'_>,
) -> Vec<Arc<Mapping>> {
    if !mappings_dir.is_dir() {
        report.at(&raw.paths.mappings, format!("mapping directory {} does not exist", mappings_dir.display()));
        Vec::new()
    } else {
        match mapping::load_dir(mappings_dir, codelists) {
            Ok(mut mappings) => {
                apply_validation(&raw.validation, root, &mut mappings, report);
                let memo = raw.limits.memo();
                mappings.into_iter().map(|mapping| Arc::new(mapping.with_memo(memo))).collect()
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
    }
}

/// The `[[target]]`s, in order; a target whose delivery cannot be built is reported and left out.
fn resolve_targets(raw: &RawConfig, root: &Path, outbox: &Path, report: &mut Report<'_>) -> Vec<Target> {
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
            "http" => match resolve_target_http(id, target, root, report) {
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
    targets
}

/// What one run of a mapping may spend (`limits.max_mapping_seconds`, `limits.max_mapping_bytes`).
fn resolve_budget(raw: &RawConfig, report: &mut Report<'_>) -> crate::mapping::Budget {
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
    crate::mapping::Budget {
        time: std::time::Duration::try_from_secs_f64(*seconds.get_ref())
            .unwrap_or(std::time::Duration::from_secs(crate::mapping::Budget::DEFAULT_SECONDS)),
        bytes: *raw.limits.max_mapping_bytes.get_ref(),
    }
}

/// The `[admin]` settings: where the admin API listens and which tokens it takes.
fn resolve_admin(raw: &RawConfig, root: &Path, report: &mut Report<'_>) -> Admin {
    let admin_listen = super::listen_address(raw.admin.listen.get_ref()).unwrap_or_else(|e| {
        report.at(&raw.admin.listen, format!("admin.listen: {e}"));
        ([127, 0, 0, 1], 8080).into()
    });
    let admin_token = match (&raw.admin.token_env, &raw.admin.token_file) {
        (None, None) => None,
        (env, file) => match read_secret(env, file, root, "admin token") {
            Ok(token) => Some(token),
            Err(e) => {
                report.at(&raw.admin.listen, format!("admin: {e}"));
                None
            }
        },
    };

    let tokens_file = raw.admin.tokens_file.as_ref().map(|path| root.join(path));
    Admin { listen: admin_listen, token: admin_token, tokens_file, read_needs_token: raw.admin.read_needs_token }
}

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
