//! Codelists in a run: the directory's lists joined by the database cache, and, between pass 1 and
//! pass 2 of a source, fetching from XRepository the lists its records refer to that nobody has.
//!
//! Without `[codelists.xrepository]` nothing here changes a run: no cache is read, nothing fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;

use super::{Deps, SourceFailure, SourceRun};
use crate::config::{Config, SourceKind};
use crate::domain::{Level, Stage};
use crate::mapping::references::{Reference, references};
use crate::source::{self, Inputs};
use crate::store::codelist_cache::CachedCodelist;
use crate::store::{Store, StoreError, timestamp};

/// Lists fetched at once.
const FETCHES_IN_FLIGHT: usize = 4;

/// Identity of a referenced list: canonical URI, version, canonicalVersionUri.
type Identity = (Option<String>, Option<String>, Option<String>);

/// The codelists of one run, carried from source to source.
#[derive(Debug, Clone)]
pub(super) struct RunCodelists {
    /// The configuration as resolved (the directory's codelists only).
    base: Arc<Config>,
    /// Bodies of the lists fetched so far (the database cache and this run's fetches).
    fetched: Vec<Vec<u8>>,
    /// References that could not be fetched in this run: not asked for again.
    failed: BTreeSet<Identity>,
}

/// The run's dependencies with the directory's codelists joined by the database cache (where
/// XRepository is configured), and the state to fetch more during the run.
pub(super) async fn for_run(deps: &Deps) -> Result<(Deps, Option<RunCodelists>), StoreError> {
    if deps.config.xrepository.is_none() {
        return Ok((deps.clone(), None));
    }
    let state = RunCodelists::cached(&deps.config, &deps.store).await?;
    let deps = Deps { config: state.config(), ..deps.clone() };
    Ok((deps, Some(state)))
}

/// The configuration as a run maps with it: the directory's codelists joined by those cached from
/// XRepository (the configuration as it is where XRepository is not configured). For `map`.
pub async fn with_cached(config: &Arc<Config>, store: &Store) -> Result<Arc<Config>, StoreError> {
    if config.xrepository.is_none() {
        return Ok(config.clone());
    }
    Ok(RunCodelists::cached(config, store).await?.config())
}

impl RunCodelists {
    /// The state at the start of a run: the lists of the database cache.
    async fn cached(config: &Arc<Config>, store: &Store) -> Result<Self, StoreError> {
        let cached: Vec<Vec<u8>> = store.cached_codelists().await?.into_iter().map(|c| c.body).collect();
        Ok(Self { base: config.clone(), fetched: cached, failed: BTreeSet::new() })
    }

    /// The base configuration with every fetched list joined.
    fn config(&self) -> Arc<Config> {
        if self.fetched.is_empty() {
            return self.base.clone();
        }
        let (lists, problems) = self.base.codelists.with_fetched(&self.fetched, self.base.limits);
        for problem in problems {
            tracing::warn!("a cached codelist cannot be used: {problem}");
        }
        Arc::new(self.base.with_codelists(lists))
    }
}

impl SourceRun {
    /// Fetches the lists that the records in scope refer to but neither the directory nor the
    /// cache holds, stores them (not in a dry run) and switches the rest of the run to the joined
    /// codelists, so that pass 2 maps with them. A list that cannot be fetched is a warning of
    /// the run naming its URN and why; the items that need it fare as with any missing list.
    pub(super) async fn fetch_codelists(&mut self, records: &mut [super::plan::Scanned]) -> Result<(), SourceFailure> {
        let (Some(mut state), Some(xrepository)) = (self.codelists.take(), self.deps.config.xrepository.clone()) else {
            return Ok(());
        };
        let mut wanted: BTreeMap<Identity, (Reference, BTreeSet<String>)> = BTreeMap::new();
        for record in records.iter().filter(|r| self.items.is_empty() || self.items.contains(&r.key)) {
            for reference in &record.codelists {
                if self.deps.config.codelists.resolves(reference) || state.failed.contains(&reference.identity()) {
                    continue;
                }
                let (_, items) =
                    wanted.entry(reference.identity()).or_insert_with(|| (reference.clone(), BTreeSet::new()));
                items.insert(record.key.to_string());
            }
        }
        let asks: Vec<Reference> = wanted.values().map(|(reference, _)| reference.clone()).collect();
        let results: Vec<_> = futures::stream::iter(asks.into_iter().map(|reference| {
            let xrepository = xrepository.clone();
            async move { xrepository.fetch(&reference).await }
        }))
        .buffered(FETCHES_IN_FLIGHT)
        .collect()
        .await;
        let mut fetched_any = false;
        for ((identity, (reference, items)), result) in wanted.iter().zip(results) {
            let (urn, version) = (reference.urn(), reference.version_text());
            match result {
                Ok(fetched) => {
                    if !self.dry_run {
                        let at = timestamp(self.deps.clock.now());
                        let list = CachedCodelist {
                            canonical_version_uri: fetched.canonical_version_uri.clone(),
                            body: fetched.body.clone(),
                            fetched_at: at,
                        };
                        self.deps.store.cache_codelist(&list).await?;
                    }
                    let message = format!(
                        "codelist {urn} ({version}) fetched from XRepository as {}; needed by {}",
                        fetched.canonical_version_uri,
                        listed(items)
                    );
                    self.event(None, None, Stage::Fetch, Level::Info, message);
                    state.fetched.push(fetched.body);
                    fetched_any = true;
                }
                Err(e) => {
                    state.failed.insert(identity.clone());
                    let message = format!(
                        "codelist {urn} ({version}) could not be fetched from XRepository: {e}; items that need it: {}",
                        listed(items)
                    );
                    tracing::warn!(source = %self.source.id, "{message}");
                    self.event(None, None, Stage::Fetch, Level::Warn, message.clone());
                    self.warnings.push(message);
                }
            }
        }
        if fetched_any {
            let config = state.config();
            let source = config.source(&self.source.id).expect("the same sources").clone();
            for record in records.iter_mut() {
                record.mappings = record
                    .mappings
                    .iter()
                    .filter_map(|m| source.mappings.iter().find(|n| n.name == m.name).cloned())
                    .collect();
            }
            self.deps = Deps { config, ..self.deps.clone() };
            self.source = source.clone();
            let work = Arc::get_mut(&mut self.work).expect("pass 1 is over and pass 2 has not started");
            work.deps = self.deps.clone();
            work.source = source;
        }
        self.codelists = Some(state);
        Ok(())
    }
}

/// Up to ten item keys, and how many more.
fn listed(items: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = items.iter().take(10).map(String::as_str).collect();
    match items.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// A codelist reference of the directory sources that no list at hand resolves.
#[derive(Debug, Clone)]
pub struct MissingCodelist {
    pub reference: Reference,
    /// `item key: field ids` of every record that needs it.
    pub needed_by: Vec<String>,
    /// XRepository is configured and the database cache holds the list.
    pub cached: bool,
}

/// Every codelist reference of the directory sources' records that the codelist directory does
/// not resolve (for `check`). With XRepository configured and a store given, each says whether
/// the database cache holds the list. Files that cannot be read are skipped (a run reports them).
pub async fn missing(config: &Config, store: Option<&Store>) -> Result<Vec<MissingCodelist>, StoreError> {
    let mut found: BTreeMap<Identity, MissingCodelist> = BTreeMap::new();
    for source in &config.sources {
        let SourceKind::Directory { path, include, .. } = &source.kind else { continue };
        let Ok(entries) = source::directory::list(path, include, &config.root, source.format) else { continue };
        for entry in entries {
            let inputs = Inputs::default();
            let Ok(records) = source::read_entry(source, &entry, &inputs, config.limits, config.max_record_bytes)
            else {
                continue;
            };
            for record in records.into_iter().flatten() {
                for reference in references(&record.decoded.tree) {
                    if config.codelists.resolves(&reference) {
                        continue;
                    }
                    let needed = format!("{}: {}", record.key, reference.fields.join(", "));
                    let missing = found.entry(reference.identity()).or_insert_with(|| MissingCodelist {
                        reference: Reference { fields: Vec::new(), ..reference.clone() },
                        needed_by: Vec::new(),
                        cached: false,
                    });
                    missing.needed_by.push(needed);
                }
            }
        }
    }
    if let (Some(store), Some(_)) = (store, &config.xrepository) {
        let bodies: Vec<Vec<u8>> = store.cached_codelists().await?.into_iter().map(|c| c.body).collect();
        let (cached, _) = config.codelists.with_fetched(&bodies, config.limits);
        for missing in found.values_mut() {
            missing.cached = cached.resolves(&missing.reference);
        }
    }
    Ok(found.into_values().collect())
}
