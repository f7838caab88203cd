//! A source's scan fingerprint: what, besides an entry's bytes, decides what the scan makes of it
//! (record settings, key expression, parameters, mappings and their versions, the bridge's version).

use std::sync::Arc;

use super::RawSource;
use crate::domain::ContentHash;
use crate::mapping::Mapping;

/// The fingerprint of source `id` as configured in `raw_source`, with its `params` (as JSON) and
/// the mappings it uses.
pub(super) fn scan_fingerprint(
    id: &str,
    raw_source: &RawSource,
    params: &serde_json::Value,
    mappings: &[Arc<Mapping>],
) -> ContentHash {
    let parts = [
        env!("CARGO_PKG_VERSION").to_owned(),
        id.to_owned(),
        raw_source.region.clone(),
        format!("{:?} {:?} {:?}", raw_source.format, raw_source.split, raw_source.records),
        raw_source.key.as_ref().map(|k| k.get_ref().clone()).unwrap_or_default(),
        params.to_string(),
        versions(mappings),
    ];
    ContentHash::of_parts(parts.iter().map(|p| p.as_bytes()))
}

/// `fingerprint` followed by the versions of `mappings` (which change with the codelists they read).
pub(super) fn with_mapping_versions(fingerprint: &ContentHash, mappings: &[Arc<Mapping>]) -> ContentHash {
    ContentHash::of_parts([fingerprint.as_str().as_bytes(), versions(mappings).as_bytes()])
}

/// `name=version` of each mapping, joined by `,`.
fn versions(mappings: &[Arc<Mapping>]) -> String {
    let versions: Vec<String> = mappings.iter().map(|m| format!("{}={}", m.name, m.version)).collect();
    versions.join(",")
}
