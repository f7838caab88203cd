//! What the command line shows of the store: status, the migration log, one item, the quality report.

use anyhow::Result;

use super::{Exit, ItemsArgs, JsonFlag, LogArgs, QualityArgs, ReportFormat, ShowArgs, open_store_read, table};
use crate::config::Config;
use crate::domain::local_time;
use crate::store::log::EventFilter;

pub(super) async fn status(config: &Config, args: JsonFlag) -> Result<Exit> {
    let store = open_store_read(config).await?;
    let counts = store.status_counts().await?;
    let runs = store.runs(1).await?;
    let leases = store.leases().await?;
    let claims = store.batch_claims().await?;
    let waiting = store.plans(Some(crate::store::plans::PlanStatus::Open), i64::MAX).await?;
    if args.json {
        let awaiting: Vec<_> = waiting
            .iter()
            .map(|p| serde_json::json!({"id": p.id, "author": p.author, "created_at": p.created_at}))
            .collect();
        let status = serde_json::json!({
            "items": counts,
            "last_run": runs.first(),
            "leases": leases,
            "shared_batches": claims,
            "plans_awaiting_approval": awaiting,
        });
        outln!("{status}");
        return Ok(Exit::Ok);
    }
    let mut out = table(&["source", "status", "items × targets"]);
    for row in &counts {
        out.add_row(vec![row.source_id.clone(), row.status.clone(), row.count.to_string()]);
    }
    outln!("{out}");
    if !leases.is_empty() {
        let mut out = table(&["lease", "held by (instance#run)", "until (database time)"]);
        for lease in &leases {
            out.add_row(vec![lease.name.clone(), lease.holder.clone(), lease.expires_at.clone()]);
        }
        outln!("{out}");
    }
    if !claims.is_empty() {
        let mut out = table(&["shared batches of source", "worked on by instance", "batches"]);
        for claim in &claims {
            out.add_row(vec![claim.source_id.clone(), claim.holder.clone(), claim.batches.to_string()]);
        }
        outln!("{out}");
    }
    if let Some(oldest) = waiting.last() {
        outln!(
            "{} plan(s) await approval, the oldest ({}) since {}; see `portal-bridge plan list`",
            waiting.len(),
            oldest.id,
            local_time(&oldest.created_at, config.timezone)
        );
    }
    if let Some(run) = runs.first() {
        outln!(
            "last run {}: {} ({}), started {}, {} new, {} updated, {} unchanged, {} failed, {} quarantined, \
             {} with warnings",
            run.id,
            run.status,
            run.trigger,
            local_time(&run.started_at, config.timezone),
            run.new_count,
            run.updated_count,
            run.unchanged_count,
            run.failed_count,
            run.quarantined_count,
            run.warned_count
        );
    } else {
        outln!("no runs yet");
    }
    Ok(Exit::Ok)
}

pub(super) async fn log(config: &Config, args: LogArgs) -> Result<Exit> {
    let store = open_store_read(config).await?;
    let filter = EventFilter {
        run_id: args.run_id,
        item_key: args.item,
        source: args.source,
        level: args.level,
        actor: args.actor,
        before: args.before,
        // One more than asked for, to know whether the page cut the log.
        limit: if args.all { 0 } else { args.limit.max(1).saturating_add(1) },
    };
    let mut events = store.events(&filter).await?;
    let cut = !args.all && events.len() as i64 > args.limit.max(1);
    if cut {
        events.remove(0);
        let first = events.first().map_or(0, |e| e.id);
        eprintln!(
            "showing the last {} matching events; older ones: --before {first} (or --all, or a larger --limit)",
            events.len()
        );
    }
    if args.json {
        for event in &events {
            outln!("{}", serde_json::to_string(event)?);
        }
        return Ok(Exit::Ok);
    }
    let mut out = table(&["id", "time", "run", "item", "target", "stage", "level", "message"]);
    for e in &events {
        out.add_row(vec![
            e.id.to_string(),
            local_time(&e.at, config.timezone),
            e.run_id.map(|r| r.to_string()).unwrap_or_default(),
            e.item_key.clone().unwrap_or_default(),
            e.target.clone().unwrap_or_default(),
            e.stage.clone(),
            e.level.clone(),
            e.message.clone(),
        ]);
    }
    outln!("{out}");
    Ok(Exit::Ok)
}

pub(super) async fn items(config: &Config, args: ItemsArgs) -> Result<Exit> {
    const STATUSES: [&str; 8] =
        ["new", "delivered", "unchanged", "failed", "quarantined", "conflict", "withdrawn", "skipped"];
    if let Some(status) = &args.status
        && !STATUSES.contains(&status.as_str())
    {
        eprintln!("{}", crate::config::unknown_name("status", status, &STATUSES));
        return Ok(Exit::Usage);
    }
    if let Some(id) = &args.source
        && config.source(id).is_none()
    {
        let known: Vec<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
        eprintln!("{}", crate::config::unknown_name("source", id, &known));
        return Ok(Exit::Usage);
    }
    let store = open_store_read(config).await?;
    let rows = store.items(args.status.as_deref(), args.source.as_deref(), i64::MAX).await?;
    store.close().await;
    if args.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "item_key": row.item_key,
                    "source": row.source_id,
                    "target": row.target,
                    "status": row.shown_status(),
                    "updated_at": row.updated_at,
                    "delivered_at": row.delivered_at,
                    "attempts": row.attempts,
                    "last_error": row.last_error,
                    "skip_reason": row.skip_reason,
                    "origin": row.origin,
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(items));
        return Ok(Exit::Ok);
    }
    let mut out = table(&["item", "target", "status", "updated", "last error / skip reason"]);
    for row in &rows {
        let why = match row.shown_status() {
            "skipped" => row.skip_reason.clone().unwrap_or_default(),
            _ => row.last_error.clone().unwrap_or_default(),
        };
        let why: String =
            if why.chars().count() > 120 { format!("{}…", why.chars().take(119).collect::<String>()) } else { why };
        out.add_row(vec![
            row.item_key.clone(),
            row.target.clone(),
            row.shown_status().to_owned(),
            local_time(&row.updated_at, config.timezone),
            why,
        ]);
    }
    outln!("{out}");
    outln!("{} row(s) (item × target)", rows.len());
    Ok(Exit::Ok)
}

pub(super) async fn quality_report(config: &Config, args: QualityArgs) -> Result<Exit> {
    use crate::report::{self, render};
    let sources: Vec<String> = match &args.source {
        Some(id) if config.source(id).is_none() => {
            let known: Vec<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
            eprintln!("{}", crate::config::unknown_name("source", id, &known));
            return Ok(Exit::Usage);
        }
        Some(id) => vec![id.clone()],
        None => config.sources.iter().map(|s| s.id.clone()).collect(),
    };
    let store = open_store_read(config).await?;
    let report = report::quality(&store, sources, args.source.as_deref()).await?;
    store.close().await;
    match args.format {
        ReportFormat::Text => out!("{}", render::text(&report)),
        ReportFormat::Csv => out!("{}", render::csv(&report)?),
        ReportFormat::Json => outln!("{}", serde_json::to_string(&report)?),
    }
    Ok(Exit::Ok)
}

pub(super) async fn show(config: &Config, args: ShowArgs) -> Result<Exit> {
    let store = open_store_read(config).await?;
    let rows = store.item(&args.key).await?;
    if rows.is_empty() {
        eprintln!("{} (see `portal-bridge items`)", crate::ops::unknown_item(&store, &args.key).await?);
        return Ok(Exit::Usage);
    }
    let events =
        store.events(&EventFilter { item_key: Some(args.key.clone()), limit: 20, ..Default::default() }).await?;
    if args.json {
        outln!("{}", serde_json::json!({ "item_key": args.key, "targets": rows, "events": events }));
        return Ok(Exit::Ok);
    }
    outln!("item {}", args.key);
    for row in &rows {
        match row.shown_status() {
            "skipped" => outln!(
                "  target {}: skipped ({}: {}; until its content changes, `portal-bridge unskip` undoes it)",
                row.target,
                row.status,
                row.skip_reason.as_deref().unwrap_or_default()
            ),
            status => outln!("  target {}: {status}", row.target),
        }
        outln!("    source        {} ({})", row.source_id, row.origin);
        outln!("    content hash  {}", row.content_hash.as_deref().unwrap_or("-"));
        outln!(
            "    mapping       {} (version {})",
            row.mapping.as_deref().unwrap_or("-"),
            row.mapping_version.as_deref().map_or("-", |v| &v[..12.min(v.len())])
        );
        outln!("    output hash   {}", row.output_hash.as_deref().unwrap_or("- (never delivered)"));
        outln!("    output        {}", row.output_path.as_deref().unwrap_or("-"));
        outln!(
            "    delivered at  {}",
            row.delivered_at.as_deref().map_or("-".into(), |at| local_time(at, config.timezone))
        );
        outln!(
            "    first seen    {}, updated {}, attempts {}",
            local_time(&row.first_seen_at, config.timezone),
            local_time(&row.updated_at, config.timezone),
            row.attempts
        );
        if let Some(error) = &row.last_error {
            outln!("    last error    {error}");
        }
    }
    outln!("  recent events:");
    for e in &events {
        outln!(
            "    {} run {} {} {} {}: {}",
            local_time(&e.at, config.timezone),
            e.run_id.map(|r| r.to_string()).unwrap_or("-".into()),
            e.target.as_deref().unwrap_or(""),
            e.stage,
            e.level,
            e.message
        );
    }
    Ok(Exit::Ok)
}
