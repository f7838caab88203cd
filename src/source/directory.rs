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

/// Reads a file, refusing (while reading, not after) anything longer than `max_bytes`: a file
/// whose size says it is too long is not read at all, and any other is read at most up to one
/// byte past the limit (a file can grow while it is read, and a FIFO has no size).
pub fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    read_limited_by(path, max_bytes, "max_record_bytes")
}

/// [`read_limited`] for a limit of another name under `[limits]` (`key`, e.g. `max_codelist_bytes`),
/// which the error names.
pub fn read_limited_by(path: &Path, max_bytes: u64, key: &str) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    if let Some(size) = size.filter(|&size| size > max_bytes) {
        return Err(too_large(max_bytes, Some(size), key));
    }
    read_bounded_by(file, max_bytes, size.unwrap_or(0), key)
}

/// Reads `reader` to its end, stopping with an error as soon as it yields more than `max_bytes`.
pub fn read_bounded(reader: impl Read, max_bytes: u64, size_hint: u64) -> Result<Vec<u8>, String> {
    read_bounded_by(reader, max_bytes, size_hint, "max_record_bytes")
}

fn read_bounded_by(reader: impl Read, max_bytes: u64, size_hint: u64, key: &str) -> Result<Vec<u8>, String> {
    let capacity = usize::try_from(size_hint.min(max_bytes).saturating_add(1)).unwrap_or(usize::MAX);
    let mut bytes = Vec::with_capacity(capacity.min(64 * 1024 * 1024));
    reader.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(max_bytes, None, key));
    }
    Ok(bytes)
}

fn too_large(max_bytes: u64, size: Option<u64>, key: &str) -> String {
    let size = size.map_or(String::new(), |size| format!(" ({size} bytes)"));
    format!("larger than the limit of {max_bytes} bytes{size} (limits.{key})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_stream_is_refused_after_the_limit() {
        let err = read_bounded(std::io::repeat(b'a'), 1000, 0).unwrap_err();
        assert!(err.contains("limits.max_record_bytes"), "{err}");
        assert_eq!(read_bounded(&b"12345"[..], 5, 5).unwrap(), b"12345");
        assert!(read_bounded(&b"123456"[..], 5, 6).is_err());
    }

    #[test]
    fn a_file_larger_than_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.xml");
        // Sparse: 1 TB that takes no disk space and would take hours to read.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 40).unwrap();
        let started = std::time::Instant::now();
        let err = read_limited(&path, 1024).unwrap_err();
        assert!(err.contains("1099511627776 bytes") && err.contains("limits.max_record_bytes"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        std::fs::write(&path, b"<r/>").unwrap();
        assert_eq!(read_limited(&path, 4).unwrap(), b"<r/>");
    }
}
