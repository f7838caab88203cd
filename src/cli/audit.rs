//! The audit trail at the command line: `audit verify` and `audit export`.

use anyhow::Result;

use super::{AuditExportArgs, AuditFormat, AuditVerifyArgs, Exit, open_store_read};
use crate::config::Config;

/// Recomputes the chain: exit 0 "chain verifies, N entries, head H", or 3 naming the first entry
/// that was changed, removed, inserted or reordered.
pub(super) async fn verify(config: &Config, args: AuditVerifyArgs) -> Result<Exit> {
    let store = open_store_read(config).await?;
    let report = store.verify_chain(args.since).await?;
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
    if report.before_chain > 0 {
        eprintln!("{} events from before the audit chain are not covered by it", report.before_chain);
    }
    Ok(exit)
}

/// Writes the chain's entries from `--since` to `--until` as JSON lines: a header with the hash of
/// the link before the first entry, one line per entry, and the chain's head (docs/audit.md).
pub(super) async fn export(config: &Config, args: AuditExportArgs) -> Result<Exit> {
    let AuditFormat::Jsonl = args.format;
    let store = open_store_read(config).await?;
    let head = store.chain_head().await?;
    let mut after = args.since.map_or(i64::MIN, |s| s - 1);
    let mut started = false;
    loop {
        let page = store.chain_page(after, args.until, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for entry in &page {
            if !started {
                // Events from before the chain (no seq) are outside it.
                let Some(seq) = entry.seq else { continue };
                let prev = if seq > 1 { store.hash_at(seq - 1).await? } else { None };
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
