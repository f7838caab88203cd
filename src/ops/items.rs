//! The actions on items: retry (a run of the named items, or of all in a status), skip (leave an
//! item alone until its content changes), resolve (overwrite the portal's copy of a conflict).

use std::collections::BTreeSet;

use super::{Actor, Ctx, Holding, OpsError, Overwrite, Prelude, Runner, event, said, why};
use crate::config::Target;
use crate::domain::{ItemKey, ItemStatus};
use crate::pipeline::hold::{Hold, HoldError};
use crate::pipeline::{ANY_TARGET, Deps, Job};
use crate::store::lease::{Fence, lease_name};
use crate::store::operator::OperatorEvent;
use crate::store::timestamp;

/// "no item `x` in the ledger (did you mean `y`?)", the suggestion from the keys of the same source.
pub async fn unknown_item(store: &crate::store::Store, key: &str) -> Result<String, crate::store::StoreError> {
    let source = key.split_once('/').map_or(key, |(source, _)| source);
    let keys: Vec<String> = store.items(None, Some(source), i64::MAX).await?.into_iter().map(|r| r.item_key).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let hint = crate::config::closest_of(key, &keys).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
    Ok(format!("no item `{key}` in the ledger{hint}"))
}

/// Which items a retry migrates again.
#[derive(Debug, Clone)]
pub enum RetryWhat {
    /// These item keys (each must be in the ledger).
    Items(Vec<String>),
    /// Every item in this status (failed, quarantined or conflict), of one source or all.
    Status { status: ItemStatus, source: Option<String> },
}

/// Migrates items again now: starts a run of them and logs `retry requested by …` per item with
/// the run's id. `None` (no run, nothing logged) when the status names no item.
pub async fn retry<R: Runner>(
    ctx: &Ctx<'_>,
    runner: &R,
    actor: &Actor,
    what: RetryWhat,
    reason: Option<&str>,
) -> Result<Option<R::Run>, OpsError> {
    let keys: Vec<ItemKey> = match what {
        RetryWhat::Items(texts) => {
            if texts.is_empty() {
                return Err(OpsError::Usage("name the items to retry, or a status".into()));
            }
            let mut keys = Vec::with_capacity(texts.len());
            for text in &texts {
                keys.push(ctx.item_key(text)?);
            }
            // An item the ledger lacks is refused, unless a run of its source is going on: that run
            // may be recording it right now, and the retry's run follows it.
            let (leases, now) = (ctx.store.leases().await?, ctx.store.now().await?);
            let running = |source: &str| leases.iter().any(|l| l.name == lease_name(source) && l.expires_at > now);
            for key in &keys {
                if !running(key.source()) && ctx.store.item(key.as_str()).await?.is_empty() {
                    return Err(OpsError::NotFound(format!("no item `{key}` in the ledger")));
                }
            }
            keys
        }
        RetryWhat::Status { status, source } => {
            if !matches!(status, ItemStatus::Failed | ItemStatus::Quarantined | ItemStatus::Conflict) {
                return Err(OpsError::Usage(format!(
                    "retry by status takes failed, quarantined or conflict, not {status}"
                )));
            }
            if let Some(source) = &source {
                ctx.check_source(source)?;
            }
            let rows = ctx.store.items(Some(status.as_str()), source.as_deref(), i64::MAX).await?;
            let keys: BTreeSet<String> =
                rows.into_iter().filter(|r| r.target != ANY_TARGET).map(|r| r.item_key).collect();
            keys.iter().filter_map(|k| ItemKey::parse(k)).collect()
        }
    };
    if keys.is_empty() {
        return Ok(None);
    }
    let message = said("retry requested", actor, reason);
    let events = keys.iter().map(|k| event(actor, reason, Some(k.as_str()), None, message.clone())).collect();
    let job = Job { items: keys, author: Some(actor.name.clone()), ..Job::all(runner.trigger()) };
    runner.start(job, Prelude { events, ..Prelude::default() }).await.map(Some)
}

/// Leaves an item alone until its content changes (e.g. a form migrated by hand): under its
/// source's lease, the skip and its event `skipped by …: reason` in one transaction.
pub async fn skip(ctx: &Ctx<'_>, holding: &Holding, actor: &Actor, key: &str, reason: &str) -> Result<(), OpsError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(OpsError::Usage("a skip needs a reason (it goes into the migration log)".into()));
    }
    let key = ctx.item_key(key)?;
    if ctx.store.item(key.as_str()).await?.is_empty() {
        return Err(OpsError::NotFound(format!("no item `{key}` in the ledger")));
    }
    let sources = [key.source().to_owned()];
    let hold = Hold::take(ctx.store, &holding.holder, &sources, holding.ttl, holding.wait, &holding.stop)
        .await
        .map_err(|e| match e {
            HoldError::Busy(busy) => OpsError::Busy(busy),
            HoldError::Stopped(why) => OpsError::Stopped(format!("{why}; nothing was skipped")),
            HoldError::Store(e) => OpsError::Store(e),
        })?;
    let event = OperatorEvent {
        at: ctx.now(),
        ..event(actor, Some(reason), Some(key.as_str()), None, said("skipped", actor, Some(reason)))
    };
    let note = format!("{reason} (by {actor})");
    let skipped = ctx.store.skip_item_logged(key.as_str(), &note, &hold.fence(key.source()), &event).await;
    hold.release().await;
    if !skipped? {
        return Err(OpsError::NotFound(format!("no item `{key}` in the ledger")));
    }
    Ok(())
}

/// Undoes a skip: under the item's source's lease, the skip is removed and `unskipped by …` logged;
/// the next run migrates the item as any other. An item that is not skipped is refused.
pub async fn unskip(
    ctx: &Ctx<'_>,
    holding: &Holding,
    actor: &Actor,
    key: &str,
    reason: Option<&str>,
) -> Result<(), OpsError> {
    let key = ctx.item_key(key)?;
    let rows = ctx.store.item(key.as_str()).await?;
    if rows.is_empty() {
        return Err(OpsError::NotFound(format!("no item `{key}` in the ledger")));
    }
    if rows.iter().all(|r| r.skip_reason.is_none()) {
        return Err(OpsError::Usage(format!("`{key}` is not skipped")));
    }
    let sources = [key.source().to_owned()];
    let hold = Hold::take(ctx.store, &holding.holder, &sources, holding.ttl, holding.wait, &holding.stop)
        .await
        .map_err(|e| match e {
            HoldError::Busy(busy) => OpsError::Busy(busy),
            HoldError::Stopped(why) => OpsError::Stopped(format!("{why}; nothing was unskipped")),
            HoldError::Store(e) => OpsError::Store(e),
        })?;
    let event = OperatorEvent {
        at: ctx.now(),
        ..event(actor, reason, Some(key.as_str()), None, said("unskipped", actor, reason))
    };
    let unskipped = ctx.store.unskip_item_logged(key.as_str(), &hold.fence(key.source()), &event).await;
    hold.release().await;
    if !unskipped? {
        return Err(OpsError::Usage(format!("`{key}` is not skipped")));
    }
    Ok(())
}

/// Settles a conflict by overwriting the portal's copy with ours: a forced run of the item that,
/// once it holds the item's source, takes over the portal's current version of each target in
/// conflict (logged as `conflict resolved by …`), so that its delivery replaces exactly that version.
pub async fn resolve<R: Runner>(
    ctx: &Ctx<'_>,
    runner: &R,
    actor: &Actor,
    key: &str,
    reason: Option<&str>,
) -> Result<R::Run, OpsError> {
    let key = ctx.item_key(key)?;
    let rows = ctx.store.item(key.as_str()).await?;
    if rows.is_empty() {
        return Err(OpsError::NotFound(format!("no item `{key}` in the ledger")));
    }
    if !rows.iter().any(|r| r.status == ItemStatus::Conflict.as_str()) {
        return Err(OpsError::Usage(format!("`{key}` has no conflict to resolve")));
    }
    let overwrite = Overwrite { key: key.clone(), actor: actor.clone(), reason: reason.map(str::to_owned) };
    let job = Job { items: vec![key], force: true, author: Some(actor.name.clone()), ..Job::all(runner.trigger()) };
    runner.start(job, Prelude { overwrite: vec![overwrite], ..Prelude::default() }).await
}

/// Part of [`super::prelude`]: takes over the portal's version of each target where the item is
/// in conflict (still, now that the run holds its source), with its event.
pub(super) async fn take_over(
    deps: &Deps,
    run_id: Option<i64>,
    fence: &Fence,
    overwrite: &Overwrite,
) -> Result<(), OpsError> {
    let Overwrite { key, actor, reason } = overwrite;
    let rows = deps.store.item(key.as_str()).await?;
    for row in rows.iter().filter(|r| r.status == ItemStatus::Conflict.as_str()) {
        let Some(target) = deps.config.target(&row.target) else { continue };
        let version = portal_version(target, key).await?;
        let from = version.as_deref().map(|v| format!(" (portal version {v})")).unwrap_or_default();
        let message =
            format!("conflict resolved by {actor}: overwrite the portal's copy{from}{}", why(reason.as_deref()));
        let event = OperatorEvent {
            at: timestamp(deps.clock.now()),
            run_id,
            ..event(actor, reason.as_deref(), Some(key.as_str()), Some(&row.target), message)
        };
        deps.store.take_over_version_logged(key.as_str(), &row.target, version.as_deref(), fence, &event).await?;
    }
    Ok(())
}

/// The version of the portal's copy of `key` at `target`, asked through the target itself
/// (`None` for an outbox, which has no versions, or when the portal has no copy).
async fn portal_version(target: &Target, key: &ItemKey) -> Result<Option<String>, OpsError> {
    target
        .delivery
        .current_version(key)
        .await
        .map_err(|e| OpsError::Portal(format!("reading the current version of {key} at {}: {e}", target.id)))
}
