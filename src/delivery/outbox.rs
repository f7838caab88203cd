//! Outbox delivery: one file per item in `<outbox>/<target>/`, named safely from the item key and written atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{Action, DeliverError, Delivered, Rebased, Reconcile, Target};
use crate::domain::ItemKey;
use crate::store::intents::Intent;

/// A write to an outbox takes milliseconds: a temporary file this old belongs to a killed process.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// An outbox target: documents as files in one directory. It has no versions, and an intent keeps
/// no body: the file itself says whether a write happened.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Runs `work` on a blocking thread with the directory, the key and the action.
    async fn blocking<T: Send + 'static>(
        &self,
        key: &ItemKey,
        action: &Action,
        what: &str,
        work: impl FnOnce(&Path, &ItemKey, Action) -> Result<T, DeliverError> + Send + 'static,
    ) -> Result<T, DeliverError> {
        let (dir, key, action) = (self.dir.clone(), key.clone(), action.clone());
        tokio::task::spawn_blocking(move || work(&dir, &key, action))
            .await
            .map_err(|e| DeliverError::Transient(format!("the {what} thread failed: {e}")))?
    }
}

impl Target for Outbox {
    fn kind(&self) -> &'static str {
        "outbox"
    }

    fn fingerprint(&self) -> String {
        format!("outbox:{}", self.dir.display())
    }

    fn intent_body(&self, _action: &Action) -> Vec<u8> {
        Vec::new()
    }

    fn deliver<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
        _known_version: Option<&'a str>,
        _idempotency: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, DeliverError>> {
        Box::pin(self.blocking(key, action, "writer", |dir, key, action| match action {
            Action::Put { body, format, .. } => write(dir, key, format.extension(), &body),
            Action::Delete => remove(dir, key),
        }))
    }

    fn probe<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
    ) -> BoxFuture<'a, Result<Option<Delivered>, DeliverError>> {
        Box::pin(self.blocking(key, action, "reader", |dir, key, action| holds(dir, key, &action)))
    }

    fn rebase<'a>(
        &'a self,
        _key: &'a ItemKey,
        _action: &'a Action,
        known_version: Option<String>,
        _delivered: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Rebased, DeliverError>> {
        // An outbox has no versions: nothing to ask.
        Box::pin(async move { Ok(Rebased::Base(known_version)) })
    }

    fn current_version<'a>(&'a self, _key: &'a ItemKey) -> BoxFuture<'a, Result<Option<String>, DeliverError>> {
        Box::pin(async { Ok(None) })
    }

    fn reconcile<'a>(&'a self, key: &'a ItemKey, intent: &'a Intent) -> BoxFuture<'a, Reconcile> {
        Box::pin(async move {
            let action = Action::of_intent(intent);
            // The intent keeps no body: if the file is not there, the write never happened and this
            // run's scan maps and delivers the item again.
            if matches!(action, Action::Put { .. }) && matches!(self.probe(key, &action).await, Ok(None)) {
                return Reconcile::Drop(
                    "an interrupted run did not write this document; it is mapped and delivered again".into(),
                );
            }
            Reconcile::Resume(action)
        })
    }

    fn lost(&self, location: Option<&str>) -> Option<String> {
        let path = location?;
        (!Path::new(path).exists())
            .then(|| format!("the delivered file {path} is gone from the outbox; it is delivered again"))
    }

    fn tidy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let dir = self.dir.clone();
            let cleaned = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || remove_stale_temporaries(&dir, STALE_TEMPORARY)
            })
            .await;
            match cleaned {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(dir = %dir.display(), removed = n, "removed temporary files of interrupted writes")
                }
                Ok(Err(e)) => tracing::warn!(dir = %dir.display(), "cannot clean up temporary files: {e}"),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot clean up temporary files: {e}"),
            }
        })
    }
}

/// Longest file name stem we produce; below the 255-byte limit of common file systems, with room for extensions.
const MAX_STEM: usize = 180;

/// Turns an item key into a file name stem that cannot leave its directory and never collides
/// with another key's: bytes outside `[A-Za-z0-9@._-]` (and a leading `.`) are percent-encoded,
/// and a stem longer than `MAX_STEM` is cut and suffixed with a hash of the whole key.
pub fn safe_stem(key: &ItemKey) -> String {
    let mut stem = String::with_capacity(key.as_str().len());
    for (i, byte) in key.as_str().bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || matches!(byte, b'@' | b'_' | b'-') || (byte == b'.' && i > 0);
        if plain {
            stem.push(byte as char);
        } else {
            stem.push_str(&format!("%{byte:02X}"));
        }
    }
    if stem.len() > MAX_STEM {
        let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        // Cut on a char boundary that does not split a %XX escape.
        let mut cut = MAX_STEM - 18;
        while stem.as_bytes()[cut - 1] == b'%' || stem.as_bytes()[cut.saturating_sub(2)] == b'%' {
            cut -= 1;
        }
        stem.truncate(cut);
        stem.push('~');
        stem.push_str(&digest[..16]);
    }
    stem
}

/// Suffix of the temporary files a write goes through (`.<name>.<pid>.tmp`).
const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `<dir>/<safe stem>.<extension>` via a temporary file and a rename, so a reader
/// never sees a half-written document, and makes it durable: the file's data and the directory entry
/// of the rename are synced before this returns, so a ledger that says `delivered` afterwards is not
/// ahead of the disk after a power loss.
pub fn write(dir: &Path, key: &ItemKey, extension: &str, bytes: &[u8]) -> Result<Delivered, DeliverError> {
    let io = |path: &Path, source| DeliverError::Io { path: path.into(), source };
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let name = format!("{}.{extension}", safe_stem(key));
    let path = dir.join(&name);
    let temp = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(io(&path, e));
    }
    sync_dir(dir).map_err(|e| io(dir, e))?;
    Ok(Delivered { location: path.display().to_string(), version: None })
}

/// Syncs a directory, so that renames and removals in it survive a power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes the temporary files of writes that never finished (a killed process leaves them), if
/// they are older than `age` (a write in progress takes far less). Returns how many were removed.
pub fn remove_stale_temporaries(dir: &Path, age: std::time::Duration) -> std::io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if modified.elapsed().is_ok_and(|elapsed| elapsed >= age) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Withdraws an item: removes its file (whatever its format); nothing to remove is fine.
pub fn remove(dir: &Path, key: &ItemKey) -> Result<Delivered, DeliverError> {
    let stem = safe_stem(key);
    for extension in ["json", "xml"] {
        let path = dir.join(format!("{stem}.{extension}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DeliverError::Io { path, source }),
        }
    }
    sync_dir(dir)
        .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        .map_err(|source| DeliverError::Io { path: dir.into(), source })?;
    Ok(Delivered { location: dir.join(&stem).display().to_string(), version: None })
}

/// Whether the outbox already holds exactly the result of `action` (for reconciliation after a crash).
pub fn holds(dir: &Path, key: &ItemKey, action: &Action) -> Result<Option<Delivered>, DeliverError> {
    let stem = safe_stem(key);
    match action {
        Action::Put { format, output_hash, .. } => {
            let path = dir.join(format!("{stem}.{}", format.extension()));
            Ok(match fs::read(&path) {
                Ok(bytes) if crate::domain::ContentHash::of(&bytes).as_str() == output_hash => {
                    Some(Delivered { location: path.display().to_string(), version: None })
                }
                _ => None,
            })
        }
        Action::Delete => {
            let gone = ["json", "xml"].iter().all(|e| !dir.join(format!("{stem}.{e}")).exists());
            Ok(gone.then(|| Delivered { location: dir.join(&stem).display().to_string(), version: None }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ItemKey {
        ItemKey::new("src", id)
    }

    #[test]
    fn ordinary_keys_stay_readable() {
        assert_eq!(safe_stem(&key("S05000101@1.0")), "src%2FS05000101@1.0");
    }

    #[test]
    fn hostile_keys_cannot_escape_or_break_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        for id in ["../../etc/passwd", "a/b", "nul\0byte", "..", ".hidden", "\\windows\\path", "ümlaut ß"] {
            let delivered = write(&outbox, &key(id), "json", b"{}").unwrap();
            let path = Path::new(&delivered.location);
            assert_eq!(path.parent().unwrap(), outbox, "{id:?} → {path:?}");
            assert!(path.is_file());
        }
        assert_eq!(fs::read_dir(&outbox).unwrap().count(), 7, "seven keys, seven files, no temp files left");
    }

    #[test]
    fn long_keys_are_cut_with_a_hash_and_stay_distinct() {
        let a = safe_stem(&key(&"x".repeat(300)));
        let b = safe_stem(&key(&format!("{}y", "x".repeat(299))));
        assert!(a.len() <= MAX_STEM && b.len() <= MAX_STEM);
        assert_ne!(a, b);
        let escaped = safe_stem(&key(&"/".repeat(300)));
        assert!(escaped.len() <= MAX_STEM);
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &key(&"ä".repeat(300)), "xml", b"<a/>").unwrap();
    }

    #[test]
    fn encoding_is_injective_on_tricky_pairs() {
        let pairs = [("a/b", "a%2Fb"), ("a.b", "a%2Eb"), ("%", "%25")];
        for (x, y) in pairs {
            assert_ne!(safe_stem(&key(x)), safe_stem(&key(y)), "{x} vs {y}");
        }
    }

    #[test]
    fn stale_temporaries_are_removed_and_fresh_ones_and_documents_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &key("k"), "json", b"1").unwrap();
        let stale = dir.path().join(".src%2Fold.json.4242.tmp");
        let fresh = dir.path().join(".src%2Fnew.json.4243.tmp");
        fs::write(&stale, b"half").unwrap();
        fs::write(&fresh, b"half").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options().write(true).open(&stale).unwrap().set_modified(hour_ago).unwrap();
        let removed = remove_stale_temporaries(dir.path(), std::time::Duration::from_secs(600)).unwrap();
        assert_eq!(removed, 1);
        assert!(!stale.exists() && fresh.exists());
        assert!(dir.path().join("src%2Fk.json").exists());
        assert_eq!(remove_stale_temporaries(&dir.path().join("absent"), Default::default()).unwrap(), 0);
    }

    #[test]
    fn rewriting_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &key("k"), "json", b"1").unwrap();
        let delivered = write(dir.path(), &key("k"), "json", b"2").unwrap();
        assert_eq!(fs::read(&delivered.location).unwrap(), b"2");
    }
}
