//! The audit trail at the command line: `audit verify`, `audit export` and `audit prune`.

use anyhow::Result;

use super::{
    AuditExportArgs, AuditFormat, AuditPruneArgs, AuditVerifyArgs, EventBound, Exit, open_store, open_store_read,
};
use crate::config::Config;
use crate::ops::{self, Archive, PruneOutcome};
use crate::store::Store;

/// The event id a `--since` names: the id itself, or the first link at or after the time (none:
/// past every event).
async fn since_id(store: &Store, since: Option<EventBound>) -> Result<Option<i64>> {
    Ok(match since {
        None => None,
        Some(EventBound::Id(id)) => Some(id),
        Some(EventBound::At(when)) => Some(store.first_link_from(&when.stored()).await?.unwrap_or(i64::MAX)),
    })
}

/// The event id an `--until` names: the id itself, or the last link at or before the time (a date:
/// within that day); none before it: before every event.
async fn until_id(store: &Store, until: Option<EventBound>) -> Result<Option<i64>> {
    Ok(match until {
        None => None,
        Some(EventBound::Id(id)) => Some(id),
        Some(EventBound::At(when)) => {
            let (bound, inclusive) = when.upper();
            Some(store.last_link_until(&bound, inclusive).await?.unwrap_or(i64::MIN))
        }
    })
}

/// Recomputes the chain: exit 0 "chain verifies, N entries, head H", or 3 naming the first entry
/// that was changed, removed, inserted or reordered.
pub(super) async fn verify(config: &Config, args: AuditVerifyArgs) -> Result<Exit> {
    let store = open_store_read(config).await?;
    let since = since_id(&store, args.since).await?;
    let report = store.verify_chain(since).await?;
    let exit = if report.broken.is_some() { Exit::Partial } else { Exit::Ok };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
        return Ok(exit);
    }
    match &report.broken {
        None => {
            let head = report.head.as_ref().map_or_else(|| "none (no entries yet)".to_owned(), |h| h.hash.clone());
            outln!("chain verifies, {} entries, head {head}", report.entries);
        }
        Some(broken) => {
            outln!(
                "chain broken: entry {} was {}: {} ({} entries verified before it)",
                broken.id,
                broken.kind.as_str(),
                broken.detail,
                report.entries
            );
        }
    }
    if let Some(pruned) = &report.pruned {
        outln!(
            "pruned before it: {} entries through seq {} (hash {}), by {} at {}",
            pruned.count,
            pruned.through_seq,
            pruned.through_hash,
            pruned.actor,
            pruned.at
        );
    }
    if report.before_chain > 0 {
        eprintln!("{} events from before the audit chain are not covered by it", report.before_chain);
    }
    Ok(exit)
}

/// Writes the chain's entries from `--since` to `--until` as JSON lines: a header with the hash of
/// the link before the first entry (after a prune: the checkpoint's), one line per entry, and the
/// chain's head (docs/audit.md).
pub(super) async fn export(config: &Config, args: AuditExportArgs) -> Result<Exit> {
    let AuditFormat::Jsonl = args.format;
    let store = open_store_read(config).await?;
    let head = store.chain_head().await?;
    let since = since_id(&store, args.since).await?;
    let until = until_id(&store, args.until).await?;
    let mut after = since.map_or(i64::MIN, |s| s.saturating_sub(1));
    let mut started = false;
    loop {
        let page = store.chain_page(after, until, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for entry in &page {
            if !started {
                // Events from before the chain (no seq) are outside it.
                let Some(seq) = entry.seq else { continue };
                let prev = store.prev_of(seq).await?;
                let header = serde_json::json!({"audit_export": 1, "first_seq": seq, "prev": prev});
                outln!("{header}");
                started = true;
            }
            outln!("{}", serde_json::to_string(entry)?);
        }
    }
    if !started {
        outln!("{}", serde_json::json!({"audit_export": 1, "first_seq": null, "prev": null}));
    }
    outln!("{}", serde_json::json!({ "chain_head": head }));
    Ok(Exit::Ok)
}

/// Prunes the chain before `--before` behind a checkpoint link (docs/audit.md): exit 0 (also when
/// there is nothing to prune), 2 for a refused argument, 6 when the chain does not verify.
pub(super) async fn prune(config: &Config, args: AuditPruneArgs) -> Result<Exit> {
    let store = open_store(config).await?;
    let archive = match args.archive {
        Some(path) => Archive::File(path),
        None => Archive::Skip,
    };
    let actor = args.operator.actor();
    let ctx = super::actions::ctx(config, &store);
    let outcome = match ops::prune_audit(&ctx, &actor, &args.before, &args.reason, &archive).await {
        Ok(outcome) => outcome,
        Err(e) => return super::actions::refused(e),
    };
    match outcome {
        PruneOutcome::Nothing => {
            if args.json {
                outln!("{}", serde_json::json!({ "pruned": null }));
            } else {
                outln!("nothing to prune: no entry before {} but the head", args.before.trim());
            }
        }
        PruneOutcome::Pruned(pruning) => {
            let ops::Pruning { range, checkpoint, archive } = *pruning;
            if args.json {
                let value = serde_json::json!({
                    "pruned": checkpoint,
                    "before_chain": range.before_chain,
                    "archive": archive.as_ref().map(|p| p.display().to_string()),
                });
                outln!("{value}");
            } else {
                outln!(
                    "pruned {} entries (seq {} to {}, {} to {}) through hash {}; checkpoint link seq {}",
                    checkpoint.pruned_count,
                    range.first_seq,
                    checkpoint.through_seq,
                    checkpoint.first_at,
                    checkpoint.last_at,
                    checkpoint.through_hash,
                    checkpoint.checkpoint_seq
                );
                if range.before_chain > 0 {
                    outln!("and {} events from before the chain", range.before_chain);
                }
                if let (Some(path), Some(sha)) = (&archive, &checkpoint.archive_sha256) {
                    outln!("archive {} sha256 {sha}", path.display());
                }
            }
        }
    }
    Ok(Exit::Ok)
}
