//! The directory source: the matching files of one directory, each a record or a feed of records.

use std::io::Read;
use std::path::{Path, PathBuf};

use globset::GlobSet;

use super::{Entry, SourceError};
use crate::codec::Format;

/// Lists the files in `dir` whose names match `include`, sorted by name (not recursive).
pub fn list(dir: &Path, include: &GlobSet, root: &Path, format: Option<Format>) -> Result<Vec<Entry>, SourceError> {
    let error = |e: std::io::Error| SourceError::List { path: dir.display().to_string(), message: e.to_string() };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(error)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| include.is_match(name)))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| {
            let origin = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            Entry { origin, format: format.or_else(|| Format::from_path(&path)), path, content: None }
        })
        .collect())
}

/// Reads a file, refusing (while reading, not after) anything longer than `max_bytes`.
pub fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("larger than the limit of {max_bytes} bytes (limits.max_record_bytes)"));
    }
    Ok(bytes)
}
