//! Decoding records into trees and encoding trees into documents, with the conventions of DESIGN.md.
//!
//! A *tree* is a `serde_json::Value`. XML elements become keys by local name, attributes `@name`,
//! text beside child elements `#text`; repeated elements become arrays, elements listed in `arrays`
//! are always arrays. JSON records are trees as they are.

pub mod json;
pub mod xml;

use std::borrow::Cow;

use serde_json::Value;

use crate::domain::ContentHash;

/// Limits enforced while decoding, so that a hostile record costs one error, not the process.
///
/// Every limit is checked while the record is read (the reader stops at the first element,
/// attribute, value or text that goes over it), not on the finished tree. The config keys are the
/// field names under `[limits]`; see docs/robustness.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest element/array/object nesting accepted (`limits.max_depth`).
    pub max_depth: usize,
    /// Most XML elements, or JSON values (objects, arrays and scalars), in one record file
    /// (`limits.max_elements`).
    pub max_elements: usize,
    /// Most XML attributes in one record file, over all its elements, namespace declarations
    /// included (`limits.max_attributes`). JSON has no attributes.
    pub max_attributes: usize,
    /// Longest text in bytes (UTF-8): the text of one XML element (text, CDATA and references
    /// together), one attribute value, one JSON string or object key (`limits.max_text_bytes`).
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_depth: 128, max_elements: 500_000, max_attributes: 500_000, max_text_bytes: 1_048_576 }
    }
}

/// A record went over one of the [`Limits`]; names the limit by its config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (limits.{key})")]
pub struct LimitExceeded {
    /// The config key under `[limits]`, e.g. `max_elements`.
    pub key: &'static str,
    pub limit: usize,
    /// What went over it, with the limit's value, e.g. `more than 500000 elements in the record`.
    pub what: String,
}

/// A decoded record: its tree, and for XML the root element's local name and namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tree: Value,
    pub root: Option<String>,
    pub namespace: Option<String>,
}

/// Hash of a tree's canonical form (compact JSON in document order). Whitespace between XML
/// elements never reaches the tree, so it does not change the hash; everything else does.
pub fn tree_hash(tree: &Value) -> ContentHash {
    ContentHash::of(&serde_json::to_vec(tree).expect("a serde_json::Value always serialises"))
}

/// `bytes` as text: borrowed when they are UTF-8 (nearly always: records are checked to be), else
/// with U+FFFD for what is not; what `String::from_utf8_lossy` gives, but through the standard
/// library's faster check first (the lossy scan was ≈ 2 % of a `map` profile).
pub fn utf8_text(bytes: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
}

/// 1-based line number of a byte offset in `text`.
pub fn line_of(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text[..end].iter().filter(|&&b| b == b'\n').count()
}

/// Wire format of a record or a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    /// File extension used in the outbox and for fixtures.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Xml => "xml",
            Format::Json => "json",
        }
    }

    /// Guesses the format from a file name's extension.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "xml" => Some(Format::Xml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("XML: {0}")]
    Xml(#[from] xml::XmlError),
    #[error("JSON: {0}")]
    Json(#[from] json::JsonError),
}

/// Decodes bytes of the given format into a tree.
pub fn decode(format: Format, bytes: &[u8], arrays: &[String], limits: Limits) -> Result<Decoded, DecodeError> {
    Ok(match format {
        Format::Xml => xml::decode(bytes, arrays, limits)?,
        Format::Json => json::decode(bytes, limits)?,
    })
}
