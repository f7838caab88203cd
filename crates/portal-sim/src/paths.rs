//! How an item is named: the path-segment encoding that docs/portal-api.md prescribes, and the
//! mirror file of each stored document (`DIR/<target>/<key>`).

use std::path::{Path as FsPath, PathBuf};

use crate::config::SimError;

/// An item in the portal: (target, key).
pub(crate) type ItemId = (String, String);

/// Percent-encodes `text` as one path segment the way docs/portal-api.md prescribes: every byte
/// outside `A-Z a-z 0-9 - . _ ~ @` becomes `%XX`.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
/// `DIR/<target>/<key>`, both percent-encoded; a leading dot is encoded too (no `.`/`..` names).
fn mirror_path(dir: &FsPath, (target, key): &ItemId) -> PathBuf {
    let name = |text: &str| {
        let encoded = encode_segment(text);
        match encoded.strip_prefix('.') {
            Some(rest) => format!("%2E{rest}"),
            None => encoded,
        }
    };
    dir.join(name(target)).join(name(key))
}

pub(crate) async fn write_mirror(dir: &FsPath, id: &ItemId, body: &[u8]) -> Result<(), SimError> {
    let path = mirror_path(dir, id);
    let parent = path.parent().expect("the mirror path has a target directory");
    let file_name = path.file_name().expect("the mirror path has a file name");
    // Encoded names never start with a dot, so the temporary file cannot hit another document.
    let temporary = parent.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let result = async {
        tokio::fs::create_dir_all(parent).await?;
        tokio::fs::write(&temporary, body).await?;
        tokio::fs::rename(&temporary, &path).await
    }
    .await;
    result.map_err(|source| SimError::Store { path, source })
}

pub(crate) async fn remove_mirror(dir: &FsPath, id: &ItemId) -> Result<(), SimError> {
    let path = mirror_path(dir, id);
    match tokio::fs::remove_file(&path).await {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(SimError::Store { path, source }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_as_the_contract_says() {
        assert_eq!(encode_segment("aachen-forms/S05000101@1.0"), "aachen-forms%2FS05000101@1.0");
        assert_eq!(encode_segment("a b~ä"), "a%20b~%C3%A4");
        let path = mirror_path(FsPath::new("/d"), &("t".to_owned(), "..".to_owned()));
        assert_eq!(path, FsPath::new("/d/t/%2E."));
    }
}
