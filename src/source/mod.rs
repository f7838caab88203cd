//! Sources: where records come from, and how a file is split into records with a key and a content hash.

pub mod directory;
pub mod http;

use serde_json::Value;

use crate::codec::{self, Decoded, Format, Limits};
use crate::config::{Source, SourceKind, Split};
use crate::domain::{ContentHash, ItemKey};
use std::collections::HashMap;

use jaq_json::Val;

use crate::mapping::engine::{Program, to_val};
use crate::store::adoptions::Adoption;

/// Why a source could not be listed at all (as opposed to one bad record).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot list {path}: {message}")]
    List { path: String, message: String },
    #[error("fetch failed: {0}")]
    Fetch(#[from] http::FetchError),
}

/// One unit a source delivers: a file (named by its path relative to the config root) or a
/// fetched page (named by its URL, with its body in memory).
#[derive(Debug, Clone)]
pub struct Entry {
    pub origin: String,
    pub path: std::path::PathBuf,
    pub format: Option<Format>,
    /// The body, for entries that are not files.
    pub content: Option<bytes::Bytes>,
}

impl Entry {
    /// The entry's bytes, refusing more than `max_bytes`.
    pub fn bytes(&self, max_bytes: u64) -> Result<bytes::Bytes, String> {
        match &self.content {
            Some(content) if content.len() as u64 > max_bytes => {
                Err(format!("larger than the limit of {max_bytes} bytes (limits.max_record_bytes)"))
            }
            Some(content) => Ok(content.clone()),
            None => directory::read_limited(&self.path, max_bytes).map(bytes::Bytes::from),
        }
    }
}

/// Where a listing may cache what it fetched, and whether it may write that cache.
pub struct ListContext<'a> {
    pub root: &'a std::path::Path,
    pub store: &'a crate::store::Store,
    pub now: String,
    pub record_cache: bool,
    /// Where each request to an upstream is timed (the daemon's metrics).
    pub metrics: Option<&'a crate::metrics::Metrics>,
}

/// Lists (for HTTP: fetches) the entries of a source, in a stable order.
pub async fn list(source: &Source, context: &ListContext<'_>) -> Result<Vec<Entry>, SourceError> {
    match &source.kind {
        SourceKind::Directory { path, include, .. } => directory::list(path, include, context.root, source.format),
        SourceKind::Http(settings) => {
            let pages = http::fetch(&source.id, settings, context).await?;
            Ok(pages
                .into_iter()
                .map(|page| Entry {
                    origin: page.url,
                    path: std::path::PathBuf::new(),
                    format: Some(source.format.unwrap_or(Format::Json)),
                    content: Some(page.body),
                })
                .collect())
        }
    }
}

/// A record split out of an entry, decoded, with its key, its other inputs and its content hash.
#[derive(Debug, Clone)]
pub struct Record {
    /// `origin` of the entry, plus `#index` for records of a feed.
    pub origin: String,
    pub key: ItemKey,
    /// Hash over the tree and the record's other inputs (its adoptions).
    pub hash: ContentHash,
    pub format: Format,
    pub decoded: Decoded,
    /// The adoptions of the record's service (sources with `leika_key`), sorted by ARS.
    pub adoptions: Vec<Adoption>,
    /// The LeiKa key of the record's service (sources with `leika_key`).
    pub leika: Option<String>,
    /// The item key of the form the record's online service uses (sources with `form_link`).
    pub form: Option<ItemKey>,
    /// The tree as a jq value, made once for the key expressions and the mappings of a file's single
    /// record, on demand for a feed's records (see [`Record::val`]).
    val: std::sync::OnceLock<Val>,
}

impl Record {
    /// The decoded tree as a jq value, converted on first use.
    pub fn val(&self) -> &Val {
        self.val.get_or_init(|| to_val(&self.decoded.tree))
    }

    /// What a mapping reads as `$source` and `$item` for this record of `source` (the same for
    /// `migrate` and `map --source`).
    pub fn context(&self, source: &Source) -> crate::mapping::RecordContext {
        crate::mapping::RecordContext {
            source: source.context(),
            item: serde_json::json!({
                "key": self.key.as_str(),
                "id": self.key.external_id(),
                "origin": self.origin,
                "content_hash": self.hash.as_str(),
                "adoptions": self.adoptions.iter()
                    .map(|a| serde_json::json!({ "ars": a.ars, "name": a.name }))
                    .collect::<Vec<_>>(),
                "form": self.form.as_ref().map(ItemKey::as_str),
            }),
        }
    }
}

/// What records draw on besides their own bytes.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Adoptions by LeiKa key.
    pub adoptions: HashMap<String, Vec<Adoption>>,
}

/// Why an entry or one of its records could not become a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{origin}: {message}")]
    Read { origin: String, message: String },
    #[error("{origin}: {message}")]
    Key { origin: String, message: String },
}

impl RecordError {
    pub fn origin(&self) -> &str {
        match self {
            RecordError::Read { origin, .. } | RecordError::Key { origin, .. } => origin,
        }
    }

    /// What is wrong, without the origin.
    pub fn message(&self) -> &str {
        match self {
            RecordError::Read { message, .. } | RecordError::Key { message, .. } => message,
        }
    }
}

/// Reads one entry and splits it into records. A file that cannot be read or decoded is one
/// error; in a feed, a record without a usable key is an error of its own and the others go on.
pub fn read_entry(
    source: &Source,
    entry: &Entry,
    inputs: &Inputs,
    limits: Limits,
    max_bytes: u64,
) -> Result<Vec<Result<Record, RecordError>>, RecordError> {
    let read_error = |message: String| RecordError::Read { origin: entry.origin.clone(), message };
    let format = entry
        .format
        .ok_or_else(|| read_error("cannot tell the format from the file name; set `format` on the source".into()))?;
    let bytes = entry.bytes(max_bytes).map_err(read_error)?;
    // No forced arrays: every mapping shapes the tree by its own `arrays` when it reads the record.
    let decoded = codec::decode(format, &bytes, &[], limits).map_err(|e| read_error(e.to_string()))?;
    let stem = entry.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match source.split {
        Split::None => Ok(vec![make_record(source, inputs, entry.origin.clone(), &stem, format, decoded, true)]),
        Split::Array => {
            let tree = match &source.records {
                None => decoded.tree,
                Some(pointer) => decoded.tree.pointer(pointer).cloned().unwrap_or(Value::Null),
            };
            let Value::Array(items) = tree else {
                let place = source.records.as_deref().map_or(String::new(), |p| format!(" at {p}"));
                return Err(read_error(format!("split = \"array\" but the entry holds no JSON array{place}")));
            };
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, tree)| {
                    let origin = format!("{}#{i}", entry.origin);
                    let decoded = Decoded { tree, root: None, namespace: None };
                    make_record(source, inputs, origin, &stem, format, decoded, false)
                })
                .collect())
        }
    }
}

/// Runs one of the source's jq expressions on a record; it must give a non-empty string (or null
/// where `optional`).
fn evaluate(program: &Program, source: &Source, tree: &Val, optional: bool) -> Result<Option<String>, String> {
    let globals = [Val::Null, Val::Null, to_val(&source.context()), Val::Null];
    match program.run(tree.clone(), globals, source.budget, None) {
        Ok(Value::String(text)) if !text.trim().is_empty() => Ok(Some(text)),
        Ok(Value::Null) if optional => Ok(None),
        Ok(other) => Err(format!("gave {other}, not a non-empty string")),
        Err(e) => Err(format!("failed: {e}")),
    }
}

fn make_record(
    source: &Source,
    inputs: &Inputs,
    origin: String,
    stem: &str,
    format: Format,
    decoded: Decoded,
    keep_val: bool,
) -> Result<Record, RecordError> {
    let key_error = |message: String| RecordError::Key { origin: origin.clone(), message };
    let val = std::sync::OnceLock::new();
    let tree = || val.get_or_init(|| to_val(&decoded.tree));
    let external_id = match &source.key {
        None => stem.to_owned(),
        Some(program) => evaluate(program, source, tree(), false)
            .map_err(|e| key_error(format!("the key expression {e}")))?
            .unwrap_or_default(),
    };
    check_id(&external_id, source.max_id_chars).map_err(key_error)?;
    let mut hash = codec::tree_hash(&decoded.tree);
    let mut adoptions = Vec::new();
    let mut leika_key = None;
    if let Some(program) = &source.leika_key {
        let leika = evaluate(program, source, tree(), false)
            .map_err(|e| key_error(format!("the leika_key expression {e}")))?
            .unwrap_or_default();
        adoptions = inputs.adoptions.get(&leika).cloned().unwrap_or_default();
        let listed: Vec<String> =
            adoptions.iter().map(|a| format!("{}={}", a.ars, a.name.as_deref().unwrap_or(""))).collect();
        hash = ContentHash::of_parts([hash.as_str().as_bytes(), listed.join("\n").as_bytes()]);
        leika_key = Some(leika);
    }
    let form = match &source.form_link {
        None => None,
        Some(link) => evaluate(&link.id, source, tree(), true)
            .map_err(|e| key_error(format!("the form_link.id expression {e}")))?
            .map(|id| ItemKey::new(&link.source, &id)),
    };
    // A file's single record keeps the jq value for its mappings; the records of a feed do not (they all
    // live until the feed is done, and most are unchanged: keeping two trees each would double their memory).
    let val = if keep_val { val } else { std::sync::OnceLock::new() };
    Ok(Record {
        key: ItemKey::new(&source.id, &external_id),
        hash,
        origin,
        format,
        decoded,
        adoptions,
        leika: leika_key,
        form,
        val,
    })
}

/// Refuses ids an operator could not read or a target could not store: control characters, and
/// more than `max_chars` characters (`limits.max_id_chars`). A long id is shown shortened.
fn check_id(id: &str, max_chars: usize) -> Result<(), String> {
    let chars = id.chars().count();
    if chars > max_chars {
        let start: String = id.chars().take(32).collect();
        return Err(format!(
            "the id {start:?}… has {chars} characters, more than the limit of {max_chars} (limits.max_id_chars)"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("the id {id:?} contains control characters"));
    }
    Ok(())
}

/// The key under which a file that yields no record is tracked, so an operator sees it.
pub fn placeholder_key(source: &Source, origin: &str) -> ItemKey {
    ItemKey::new(&source.id, &format!("file:{origin}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_refused_when_too_long_or_with_control_characters() {
        assert_eq!(check_id("S05000101@1.0", 200), Ok(()));
        assert_eq!(check_id(&"ä".repeat(200), 200), Ok(()), "the limit counts characters, not bytes");
        let err = check_id(&"9".repeat(10_000), 200).unwrap_err();
        assert!(err.contains("has 10000 characters, more than the limit of 200 (limits.max_id_chars)"), "{err}");
        assert!(err.len() < 200, "the message shows the id shortened: {err}");
        let err = check_id(&format!("a\n{}", "b".repeat(300)), 200).unwrap_err();
        assert!(err.contains("limits.max_id_chars"), "{err}");
        assert!(check_id("a\tb", 200).unwrap_err().contains("contains control characters"));
    }
}
