//! `plan`, `plan list`, `plan show` on the command line: a plan made through [`crate::ops`], stored plans shown.

use std::sync::Arc;

use anyhow::Result;

use super::{
    DecideArgs, Exit, JsonFlag, PlanArgs, PlanCommand, PlanNewArgs, PlanShowArgs, load_validators, open_store, table,
};
use crate::config::Config;
use crate::domain::SystemClock;
use crate::ops::{self, Actor, Ctx, OpsError, RunRequest};
use crate::pipeline::Deps;
use crate::plan_view;

pub(super) async fn plan(config: Arc<Config>, args: PlanArgs) -> Result<Exit> {
    match args.command {
        None => make(config, args.new).await,
        Some(PlanCommand::List(args)) => list(&config, args).await,
        Some(PlanCommand::Show(args)) => show(&config, args).await,
    }
}

async fn make(config: Arc<Config>, args: PlanNewArgs) -> Result<Exit> {
    let Some(validators) = load_validators(&config)? else { return Ok(Exit::Usage) };
    let store = open_store(&config).await?;
    let deps = Deps {
        config: config.clone(),
        store: store.clone(),
        validators: Arc::new(validators),
        clock: Arc::new(SystemClock),
    };
    let ctx = Ctx {
        store: &store,
        sources: Some(config.sources.iter().map(|s| s.id.clone()).collect()),
        clock: &SystemClock,
    };
    let request = RunRequest {
        sources: args.sources,
        items: args.items,
        force: args.force,
        allow_withdrawals: args.allow_withdrawals,
        dry_run: true,
    };
    let made = match ops::make_plan(&ctx, &deps, &Actor::os_user(), request).await {
        Ok(made) => made,
        Err(OpsError::Usage(why)) => {
            eprintln!("{why}");
            return Ok(Exit::Usage);
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        let answer = serde_json::json!({
            "id": made.id,
            "summary": made.summary,
            "approvers_needed": made.verdict.approvers,
            "reasons": made.verdict.reasons,
            "problems": made.report.problems.len(),
        });
        outln!("{answer}");
    } else {
        outln!("plan {}: {}", made.id, made.summary);
        if made.verdict.approvers == 0 {
            outln!("no approval needed");
        } else {
            outln!("needs {} approval(s) by someone other than its author:", made.verdict.approvers);
            for reason in &made.verdict.reasons {
                outln!("  - {reason}");
            }
        }
        if !made.report.problems.is_empty() {
            outln!(
                "{} item(s) cannot be planned (see `plan show {}` and the run's problems)",
                made.report.problems.len(),
                made.id
            );
        }
        outln!("see the changes: portal-bridge plan show {}", made.id);
    }
    Ok(Exit::Ok)
}

async fn list(config: &Config, args: JsonFlag) -> Result<Exit> {
    let store = super::open_store_read(config).await?;
    let plans = store.plans(None, 200).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&plans)?);
        return Ok(Exit::Ok);
    }
    let mut t = table(&["id", "status", "author", "created", "changes", "approvals needed"]);
    for p in &plans {
        let summary: plan_view::Summary = serde_json::from_str(&p.summary).unwrap_or_default();
        t.add_row([
            p.id.to_string(),
            p.status.clone(),
            p.author.clone(),
            crate::domain::local_time(&p.created_at, config.timezone),
            summary.to_string(),
            p.approvals_needed.to_string(),
        ]);
    }
    outln!("{t}");
    Ok(Exit::Ok)
}

async fn show(config: &Config, args: PlanShowArgs) -> Result<Exit> {
    let store = super::open_store_read(config).await?;
    let Some(plan) = store.plan(args.id).await? else {
        eprintln!("no plan {} (see `portal-bridge plan list`)", args.id);
        return Ok(Exit::Usage);
    };
    let decisions = store.decisions(args.id).await?;
    let entries = store.plan_entries(args.id).await?;
    if args.json {
        let json = plan_view::PlanJson {
            plan: &plan,
            summary: plan_view::Summary::of(&entries),
            decisions: &decisions,
            entries: &entries,
        };
        outln!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none();
        out!("{}", plan_view::text(&plan, &decisions, &entries, colour, config.timezone));
    }
    Ok(Exit::Ok)
}

pub(super) async fn decide(config: &Config, args: DecideArgs, decision: crate::policy::Decide) -> Result<Exit> {
    let store = open_store(config).await?;
    let ctx = Ctx {
        store: &store,
        sources: Some(config.sources.iter().map(|s| s.id.clone()).collect()),
        clock: &SystemClock,
    };
    let actor = Actor::os_user();
    match ops::decide_plan(&ctx, &actor, args.id, decision, &args.reason).await {
        Ok(status) => {
            outln!("plan {} {}d by {actor}; it is {} now", args.id, decision.as_str(), status.as_str());
            if status == crate::store::plans::PlanStatus::Approved {
                outln!("apply it: portal-bridge apply {}", args.id);
            }
            Ok(Exit::Ok)
        }
        Err(e) => super::actions::refused(e),
    }
}
