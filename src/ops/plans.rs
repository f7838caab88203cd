//! Plans: what a run would change, made as a dry run, stored with its diffs and judged by the approval policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Actor, Ctx, OpsError, RunRequest};
use crate::pipeline::{self, Deps, Job, PlanCollector, RunReport};
use crate::plan_view;
use crate::policy::Verdict;
use crate::store::plans::{NewPlan, PlanStatus};
use crate::store::timestamp;

/// A plan as made: its id, what the policy says of it, and the dry run it came from.
#[derive(Debug)]
pub struct Made {
    pub id: i64,
    pub summary: plan_view::Summary,
    pub verdict: Verdict,
    pub report: RunReport,
}

/// Makes a plan: maps and validates what changed (a dry run: nothing delivered, no state changed),
/// stores each create, update and withdrawal with its document and its diff against what was last
/// delivered, and judges the plan by the configured policy. A plan that needs nobody's approval
/// is stored `approved`.
pub async fn make_plan(ctx: &Ctx<'_>, deps: &Deps, actor: &Actor, request: RunRequest) -> Result<Made, OpsError> {
    let items = request.checked_items(ctx)?;
    let collect: PlanCollector = Arc::default();
    let job = Job {
        sources: request.sources.clone(),
        items,
        force: request.force,
        allow_withdrawals: request.allow_withdrawals,
        dry_run: true,
        collect: Some(collect.clone()),
        ..Job::all(crate::domain::Trigger::Cli)
    };
    let report = pipeline::run(job, deps).await.map_err(|e| match e {
        pipeline::PipelineError::UnknownSource(id) => OpsError::Usage(format!("unknown source `{id}`")),
        pipeline::PipelineError::Store(e) => OpsError::Store(e),
        e => OpsError::Failed(e.to_string()),
    })?;
    let steps = std::mem::take(&mut *collect.lock().unwrap_or_else(std::sync::PoisonError::into_inner));

    let mut entries = Vec::new();
    for step in steps {
        let last = ctx.store.last_documents(step.key.as_str(), &step.target, 1).await?;
        let old = last.first().map(|d| d.body.as_slice());
        let new = match &step.change {
            pipeline::plan::Change::Create { document } | pipeline::plan::Change::Update { document } => {
                Some(document.body.to_vec())
            }
            _ => None,
        };
        if let Some(entry) = step.entry(plan_view::diff(old, new.as_deref())) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| (&a.0.item_key, &a.0.target).cmp(&(&b.0.item_key, &b.0.target)));

    let mut known: BTreeMap<String, u64> = BTreeMap::new();
    for entry in &entries {
        if !known.contains_key(&entry.0.source_id) {
            let count = ctx.store.ledger_of_source(&entry.0.source_id).await?;
            let items: std::collections::BTreeSet<&str> = count.keys().map(|(item, _)| item.as_str()).collect();
            known.insert(entry.0.source_id.clone(), items.len() as u64);
        }
    }
    let plain: Vec<_> = entries.iter().map(|(e, _)| e.clone()).collect();
    let verdict = deps.config.policy.judge(&plan_view::changes(&plain, &known));
    let summary = plan_view::Summary::of(&plain);

    let now = ctx.clock.now();
    let lifetime = chrono::Duration::from_std(deps.config.plan_lifetime).unwrap_or(chrono::Duration::hours(72));
    let job_json = serde_json::json!({
        "sources": request.sources,
        "items": request.items,
        "force": request.force,
        "allow_withdrawals": request.allow_withdrawals,
    })
    .to_string();
    let plan = NewPlan {
        author: &actor.name,
        created_at: &timestamp(now),
        expires_at: &timestamp(now + lifetime),
        status: if verdict.approvers == 0 { PlanStatus::Approved } else { PlanStatus::Open },
        job: &job_json,
        summary: &serde_json::to_string(&summary).expect("counts serialise"),
        approvals_needed: i64::from(verdict.approvers),
        policy_reasons: &serde_json::to_string(&verdict.reasons).expect("strings serialise"),
        run_id: None,
    };
    let id = ctx.store.create_plan(&plan, &entries).await?;
    Ok(Made { id, summary, verdict, report })
}
