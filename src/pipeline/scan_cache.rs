//! Pass 1 without decoding: an entry whose bytes (SHA-256) and whose source's settings (the scan
//! fingerprint) are what they were at the last scan yields the records that scan found.
//!
//! Only sources whose records depend on nothing but their bytes use it: records of sources with
//! adoptions (`leika_key`) or form links also depend on the database, so they are always decoded.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Work;
use super::plan::{EntryScan, Scanned, read_records};
use crate::config::Config;
use crate::domain::{ContentHash, ItemKey};
use crate::mapping::references::{Reference, references};
use crate::source::Entry;
use crate::store::scan_cache::CachedScan;

/// A record as the cache keeps it.
#[derive(Serialize, Deserialize)]
struct CachedRecord {
    origin: String,
    key: ItemKey,
    hash: ContentHash,
    /// Names of the mappings that accept the record.
    mappings: Vec<String>,
    /// Why the source's mappings refuse the record, when none takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refusals: Option<String>,
    /// The codelists the record refers to, so that a list still missing is fetched even while
    /// the entry is not decoded again.
    #[serde(default)]
    codelists: Vec<Reference>,
}

/// Bumped when what the cache keeps of a record, or how a record is read, changes: older rows are
/// then not used (3: trees decoded without forced arrays, refusal reasons, codelist references).
const RECORDS_FORMAT: &str = "scan-records/3";

/// The scan cache of one source, as loaded at the start of its run.
#[derive(Debug, Clone, Default)]
pub(super) struct ScanCache {
    /// `None`: the source does not use the cache.
    pub(super) fingerprint: Option<String>,
    pub(super) entries: HashMap<String, CachedScan>,
}

impl ScanCache {
    /// The cache for a source, empty (and unused) where its records depend on more than bytes.
    pub(super) async fn load(
        config: &Config,
        source: &crate::config::Source,
        store: &crate::store::Store,
    ) -> Result<Self, crate::store::StoreError> {
        if source.leika_key.is_some() || source.form_link.is_some() {
            return Ok(Self::default());
        }
        // The limits decide what is readable at all, so they are part of the fingerprint.
        let limits = format!("{:?} {} {}", config.limits, config.max_record_bytes, source.max_id_chars);
        let fingerprint = ContentHash::of_parts([
            source.scan_fingerprint.as_str().as_bytes(),
            limits.as_bytes(),
            RECORDS_FORMAT.as_bytes(),
        ]);
        Ok(Self { fingerprint: Some(fingerprint.to_string()), entries: store.scan_cache(&source.id).await? })
    }
}

/// What pass 1 learned about one entry.
pub(super) struct EntryScanned {
    pub(super) scan: EntryScan,
    /// The cache row to store, when the entry was decoded afresh.
    pub(super) fresh: Option<CachedScan>,
    /// The records came from the cache.
    pub(super) cached: bool,
}

/// Pass 1 for one entry: its records' keys and content hashes, from the cache when nothing changed.
pub(super) fn scan_entry(work: &Work, entry: Entry) -> EntryScanned {
    let decoded = |scan| EntryScanned { scan, fresh: None, cached: false };
    let Some(fingerprint) = &work.scan_cache.fingerprint else { return decoded(decode(work, &entry)) };
    // An unreadable entry is decoded the usual way, which reports why.
    let Ok(bytes) = entry.bytes(work.deps.config.max_record_bytes) else { return decoded(decode(work, &entry)) };
    let raw_hash = ContentHash::of(&bytes).to_string();
    let cached = work.scan_cache.entries.get(&entry.origin);
    if let Some(cached) = cached.filter(|c| c.raw_hash == raw_hash && &c.fingerprint == fingerprint)
        && let Some(records) = from_cache(work, &cached.records)
    {
        return EntryScanned { scan: Ok(records.into_iter().map(Ok).collect()), fresh: None, cached: true };
    }
    let origin = entry.origin.clone();
    let entry = Entry { content: Some(bytes), ..entry };
    let scan = decode(work, &entry);
    // Entries with a bad record are read again next time, so that their errors are reported again.
    let fresh = match &scan {
        Ok(records) if records.iter().all(Result::is_ok) => {
            let records: Vec<CachedRecord> = records
                .iter()
                .flatten()
                .map(|r| CachedRecord {
                    origin: r.origin.clone(),
                    key: r.key.clone(),
                    hash: r.hash.clone(),
                    mappings: r.mappings.iter().map(|m| m.name.clone()).collect(),
                    refusals: r.refusals.clone(),
                    codelists: r.codelists.clone(),
                })
                .collect();
            let records = serde_json::to_string(&records).expect("records serialise");
            Some(CachedScan { origin, raw_hash, fingerprint: fingerprint.clone(), records })
        }
        _ => None,
    };
    EntryScanned { scan, fresh, cached: false }
}

/// The cached records, or `None` if they cannot be used (unreadable, or a mapping is gone).
fn from_cache(work: &Work, text: &str) -> Option<Vec<Scanned>> {
    let records: Vec<CachedRecord> = serde_json::from_str(text).ok()?;
    records
        .into_iter()
        .map(|r| {
            let mappings = r
                .mappings
                .iter()
                .map(|name| work.source.mappings.iter().find(|m| &m.name == name).cloned())
                .collect::<Option<Vec<_>>>()?;
            Some(Scanned {
                origin: r.origin,
                key: r.key,
                hash: r.hash,
                mappings,
                form: None,
                leika: None,
                refusals: r.refusals,
                codelists: r.codelists,
            })
        })
        .collect()
}

/// Reads and decodes an entry into what pass 1 keeps of its records; the records themselves are
/// kept for pass 2 if the budget allows ([`super::kept`]) and every record of the entry is good.
fn decode(work: &Work, entry: &Entry) -> EntryScan {
    let source = &work.source;
    let records = read_records(work, entry)?;
    let mut good = Vec::with_capacity(records.len());
    let scans = records
        .into_iter()
        .map(|record| {
            record.map(|r| {
                let mappings: Vec<_> =
                    source.mappings.iter().filter(|m| m.accepts(r.format, &r.decoded)).cloned().collect();
                let refusals = mappings.is_empty().then(|| {
                    let reasons = source.mappings.iter().filter_map(|m| {
                        m.refusal(r.format, &r.decoded).map(|reason| format!("mapping {}: {reason}", m.name))
                    });
                    reasons.collect::<Vec<_>>().join("; ")
                });
                let codelists = references(&r.decoded.tree);
                let scanned = Scanned {
                    mappings,
                    origin: r.origin.clone(),
                    key: r.key.clone(),
                    hash: r.hash.clone(),
                    form: r.form.clone(),
                    leika: r.leika.clone(),
                    refusals,
                    codelists,
                };
                good.push(r);
                scanned
            })
        })
        .collect::<Vec<_>>();
    if good.len() == scans.len() {
        let size = match &entry.content {
            Some(content) => Some(content.len()),
            None => std::fs::metadata(&entry.path).ok().map(|m| m.len() as usize),
        };
        if let Some(size) = size {
            // Records that do not fit are dropped here; pass 2 decodes their entry again.
            let _ = work.kept.offer(&entry.origin, size, good);
        }
    }
    Ok(scans)
}
