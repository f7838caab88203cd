//! Sources: where records come from, and how a file is split into records with a key and a content hash.

pub mod directory;

use serde_json::Value;

use crate::codec::{self, Decoded, Format, Limits};
use crate::config::{Source, SourceKind, Split};
use crate::domain::{ContentHash, ItemKey};
use crate::mapping::engine::to_val;

/// Why a source could not be listed at all (as opposed to one bad record).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot list {path}: {message}")]
    List { path: String, message: String },
}

/// One unit a source delivers: a file, named by its origin (path relative to the config root).
#[derive(Debug, Clone)]
pub struct Entry {
    pub origin: String,
    pub path: std::path::PathBuf,
    pub format: Option<Format>,
}

/// Lists the entries of a source, in a stable order.
pub fn list(source: &Source, root: &std::path::Path) -> Result<Vec<Entry>, SourceError> {
    match &source.kind {
        SourceKind::Directory { path, include, .. } => {
            directory::list(path, include, root, source.format)
        }
    }
}

/// A record split out of an entry, decoded, with its key and content hash.
#[derive(Debug, Clone)]
pub struct Record {
    /// `origin` of the entry, plus `#index` for records of a feed.
    pub origin: String,
    pub key: ItemKey,
    pub hash: ContentHash,
    pub format: Format,
    pub decoded: Decoded,
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
}

/// Reads one entry and splits it into records. A file that cannot be read or decoded is one
/// error; in a feed, a record without a usable key is an error of its own and the others go on.
pub fn read_entry(
    source: &Source,
    entry: &Entry,
    arrays: &[String],
    limits: Limits,
    max_bytes: u64,
) -> Result<Vec<Result<Record, RecordError>>, RecordError> {
    let read_error = |message: String| RecordError::Read {
        origin: entry.origin.clone(),
        message,
    };
    let format = entry.format.ok_or_else(|| {
        read_error("cannot tell the format from the file name; set `format` on the source".into())
    })?;
    let bytes = directory::read_limited(&entry.path, max_bytes).map_err(read_error)?;
    let decoded =
        codec::decode(format, &bytes, arrays, limits).map_err(|e| read_error(e.to_string()))?;
    let stem = entry
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match source.split {
        Split::None => Ok(vec![make_record(
            source,
            entry.origin.clone(),
            &stem,
            format,
            decoded,
        )]),
        Split::Array => {
            let Value::Array(items) = decoded.tree else {
                return Err(read_error(
                    "split = \"array\" but the file does not hold a JSON array".into(),
                ));
            };
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, tree)| {
                    let origin = format!("{}#{i}", entry.origin);
                    let decoded = Decoded {
                        tree,
                        root: None,
                        namespace: None,
                    };
                    make_record(source, origin, &stem, format, decoded)
                })
                .collect())
        }
    }
}

fn make_record(
    source: &Source,
    origin: String,
    stem: &str,
    format: Format,
    decoded: Decoded,
) -> Result<Record, RecordError> {
    let key_error = |message: String| RecordError::Key {
        origin: origin.clone(),
        message,
    };
    let external_id = match &source.key {
        None => stem.to_owned(),
        Some(program) => {
            let globals = [
                to_val(&Value::Null),
                to_val(&Value::Null),
                to_val(&source.context()),
                to_val(&Value::Null),
            ];
            match program.run(to_val(&decoded.tree), globals) {
                Ok(Value::String(id)) if !id.trim().is_empty() => id,
                Ok(other) => {
                    return Err(key_error(format!(
                        "the key expression gave {other}, not a non-empty string"
                    )));
                }
                Err(e) => return Err(key_error(format!("the key expression failed: {e}"))),
            }
        }
    };
    if external_id.chars().any(char::is_control) {
        return Err(key_error(format!(
            "the id {external_id:?} contains control characters"
        )));
    }
    Ok(Record {
        key: ItemKey::new(&source.id, &external_id),
        hash: codec::tree_hash(&decoded.tree),
        origin,
        format,
        decoded,
    })
}

/// The key under which a file that yields no record is tracked, so an operator sees it.
pub fn placeholder_key(source: &Source, origin: &str) -> ItemKey {
    ItemKey::new(&source.id, &format!("file:{origin}"))
}
