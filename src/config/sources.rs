//! The sources of the configuration (`[[source]]`): each one's kind, expressions, mappings and
//! schedule checked against what was resolved before it, every problem reported.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono_tz::Tz;
use globset::{Glob, GlobSet, GlobSetBuilder};
use toml::Spanned;

use super::error::Report;
use super::fingerprint::scan_fingerprint;
use super::http::resolve_http;
use super::{FormLink, RawConfig, RawSource, Source, SourceKind, Split, is_identifier};
use crate::mapping::engine::Program;
use crate::mapping::{Budget, Mapping};
use crate::scheduler::Schedule;

/// What the sources are resolved against: the settings and mappings resolved before them.
pub(super) struct Resolved<'a> {
    pub(super) root: &'a Path,
    pub(super) timezone: Tz,
    /// Every mapping loaded from `mappings_dir`.
    pub(super) mappings: &'a [Arc<Mapping>],
    pub(super) mappings_dir: &'a Path,
    /// No mapping file had a problem, so a name that is not among `mappings` is an error.
    pub(super) mappings_loaded: bool,
    pub(super) budget: Budget,
}

/// Resolves every `[[source]]`, in order; a source with a problem is reported and left out.
pub(super) fn resolve_sources(raw: &RawConfig, resolved: &Resolved<'_>, report: &mut Report<'_>) -> Vec<Arc<Source>> {
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
        if let Some(source) = resolve_source(raw, raw_source, resolved, report) {
            sources.push(Arc::new(source));
        }
    }
    sources
}

/// One source; `None` (reported) when its kind cannot be resolved.
fn resolve_source(
    raw: &RawConfig,
    raw_source: &RawSource,
    resolved: &Resolved<'_>,
    report: &mut Report<'_>,
) -> Option<Source> {
    let Resolved { root, timezone, mappings, mappings_dir, mappings_loaded, budget } = *resolved;
    let id = raw_source.id.get_ref();
    let kind = resolve_kind(id, raw_source, root, report)?;
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
                        format!("source `{id}` reads {format:?} but mapping `{name}` takes {:?}", mapping.input.format),
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
    let scan_fingerprint = scan_fingerprint(id, raw_source, &params, &source_mappings);
    Some(Source {
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
    })
}

/// Where source `id` reads from (`kind`, with `path` and `include` or `url` and `[source.http]`).
fn resolve_kind(id: &str, raw_source: &RawSource, root: &Path, report: &mut Report<'_>) -> Option<SourceKind> {
    let kind = match raw_source.kind.get_ref().as_str() {
        "directory" => {
            let Some(raw_path) = &raw_source.path else {
                report.at(&raw_source.kind, format!("source `{id}`: kind = \"directory\" needs a `path`"));
                return None;
            };
            let path = root.join(raw_path.get_ref());
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
            SourceKind::Directory { path, include, patterns: patterns.into_iter().map(Spanned::into_inner).collect() }
        }
        "http" => match resolve_http(id, raw_source, root, report) {
            Some(http) => SourceKind::Http(http),
            None => return None,
        },
        other => {
            report.at(
                &raw_source.kind,
                format!("source `{id}`: unknown kind `{other}` (expected `directory` or `http`)"),
            );
            return None;
        }
    };
    Some(kind)
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
