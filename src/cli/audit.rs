//! The audit trail at the command line: `audit verify`.

use anyhow::Result;

use super::{AuditVerifyArgs, Exit, open_store_read};
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
