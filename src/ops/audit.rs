//! Retention of the audit trail: `audit prune` (command line and admin API) removes the chain's
//! oldest links behind a signed-off checkpoint link, after writing them to an archive if asked.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use super::{Actor, Ctx, OpsError};
use crate::store::retention::{Checkpoint, PruneRange, SignOff};
use crate::store::timestamp;

/// A point in time given as a date `YYYY-MM-DD` (its start, 00:00 UTC) or an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    pub at: DateTime<Utc>,
    /// True if it was given as a date (a day, not an instant).
    pub day: bool,
}

impl When {
    /// Parses `YYYY-MM-DD` (UTC) or RFC 3339 (`2026-12-07T10:00:00Z`, `…+01:00`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            let at = date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
            return Ok(Self { at, day: true });
        }
        DateTime::parse_from_rfc3339(text).map(|at| Self { at: at.with_timezone(&Utc), day: false }).map_err(|_| {
            format!("`{text}` is neither a date (YYYY-MM-DD, UTC) nor an RFC 3339 time (e.g. 2026-12-07T10:00:00Z)")
        })
    }

    /// The stored form (the events' `at` compares with it as text).
    pub fn stored(&self) -> String {
        timestamp(self.at)
    }

    /// For an upper bound: the stored form of the first instant after it (the next day's start for a
    /// date, so that the whole day is included) and whether the bound itself is included.
    pub fn upper(&self) -> (String, bool) {
        if self.day { (timestamp(self.at + chrono::Duration::days(1)), false) } else { (self.stored(), true) }
    }
}

/// Where a prune's archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archive {
    /// Write the pruned range to this new file first (refused if it exists).
    File(PathBuf),
    /// No archive: the operator said so (`--no-archive`, `"no_archive": true`).
    Skip,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneOutcome {
    /// No link is older than the date (or only the head is): nothing changed, nothing logged.
    Nothing,
    Pruned(Box<Pruning>),
}

/// A prune made: what it removed, its checkpoint, and the archive written, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruning {
    pub range: PruneRange,
    pub checkpoint: Checkpoint,
    pub archive: Option<PathBuf>,
}

/// Prunes the audit chain's links before `before` (and the older events from before the chain),
/// signed off by `actor` with `reason`: refuses a missing reason, a bad date, an existing archive
/// and a chain that does not verify before anything is changed or logged; writes the archive
/// (fsynced) first, then deletes and appends the checkpoint link in one transaction.
pub async fn prune(
    ctx: &Ctx<'_>,
    actor: &Actor,
    before: &str,
    reason: &str,
    archive: &Archive,
) -> Result<PruneOutcome, OpsError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(OpsError::Usage("a prune needs a reason (--reason, the API's `reason`)".into()));
    }
    let before = When::parse(before).map_err(|why| OpsError::Usage(format!("--before: {why}")))?;
    if let Archive::File(path) = archive
        && path.exists()
    {
        return Err(OpsError::Usage(format!(
            "the archive {} exists already; prune does not overwrite it (name a new file)",
            path.display()
        )));
    }
    let Some(range) = ctx.store.prune_range(&before.stored()).await? else { return Ok(PruneOutcome::Nothing) };
    let report = ctx.store.verify_chain(None).await?;
    if let Some(broken) = report.broken {
        return Err(OpsError::Refused(format!(
            "the audit chain does not verify (entry {} was {}: {}); a prune would sign off what cannot be \
             trusted, so nothing was pruned (see `audit verify`)",
            broken.id,
            broken.kind.as_str(),
            broken.detail
        )));
    }
    let (path, sha256) = match archive {
        Archive::File(path) => {
            let sha = write_archive(ctx, &range, path).await?;
            (Some(path.clone()), Some(sha))
        }
        Archive::Skip => (None, None),
    };
    let at = ctx.now();
    let sign = SignOff { at: &at, actor: &actor.name, reason, archive_sha256: sha256.as_deref() };
    match ctx.store.prune(&range, &sign).await? {
        Some(checkpoint) => Ok(PruneOutcome::Pruned(Box::new(Pruning { range, checkpoint, archive: path }))),
        None => {
            if let Some(path) = &path {
                let _ = std::fs::remove_file(path);
            }
            Err(OpsError::Refused(
                "the audit chain changed while pruning (another prune?); nothing was pruned, try again".into(),
            ))
        }
    }
}

/// Writes `range` in the format of `audit export` (header, the pruned events from before the chain,
/// the pruned links, the chain head) to a new file at `path`, fsynced; returns its hex SHA-256.
async fn write_archive(ctx: &Ctx<'_>, range: &PruneRange, path: &Path) -> Result<String, OpsError> {
    let failed = |e: std::io::Error| OpsError::Failed(format!("writing the archive {}: {e}", path.display()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OpsError::Usage(format!("the archive {} exists already; prune does not overwrite it", path.display()))
        } else {
            failed(e)
        }
    })?;
    let mut out = std::io::BufWriter::new(file);
    let mut sha = Sha256::new();
    let mut line = |out: &mut std::io::BufWriter<std::fs::File>, value: String| -> std::io::Result<()> {
        sha.update(value.as_bytes());
        sha.update(b"\n");
        out.write_all(value.as_bytes())?;
        out.write_all(b"\n")
    };
    let prev = ctx.store.prev_of(range.first_seq).await?;
    let header = serde_json::json!({"audit_export": 1, "first_seq": range.first_seq, "prev": prev});
    line(&mut out, header.to_string()).map_err(failed)?;
    let mut after = i64::MIN;
    loop {
        let page = ctx.store.prune_page(range, after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for entry in &page {
            let text = serde_json::to_string(entry).expect("an entry serialises");
            line(&mut out, text).map_err(failed)?;
        }
    }
    line(&mut out, serde_json::json!({ "chain_head": range.head }).to_string()).map_err(failed)?;
    let file = out.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The file's name in its directory, durable too.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(hex::encode(sha.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days_and_times_rfc3339() {
        let day = When::parse("2026-12-07").unwrap();
        assert_eq!((day.stored(), day.day), ("2026-12-07T00:00:00.000Z".to_owned(), true));
        assert_eq!(day.upper(), ("2026-12-08T00:00:00.000Z".to_owned(), false));
        let time = When::parse("2026-12-07T11:30:00+01:00").unwrap();
        assert_eq!(time.stored(), "2026-12-07T10:30:00.000Z");
        assert_eq!(time.upper(), ("2026-12-07T10:30:00.000Z".to_owned(), true));
        assert!(When::parse("yesterday").unwrap_err().contains("`yesterday`"));
        assert!(When::parse("2026-13-01").is_err());
    }
}
