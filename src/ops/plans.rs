//! Plans: what a run would change, made as a dry run, stored with its diffs and judged by the approval policy.

use std::sync::Arc;

use super::{Actor, Ctx, OpsError, Prelude, RunRequest, Runner, event, said};
use crate::pipeline::plan::{Flags, Origin, Step, store_plan};
use crate::pipeline::{self, Applying, Deps, Job, PlanCollector, RunReport};
use crate::plan_view;
use crate::policy::{self, Decide, Verdict};
use crate::store::plans::{Decision, PlanRow, PlanStatus};

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
    let items = request.checked_items(ctx).await?;
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
    let origin = Origin {
        author: &actor.name,
        sources: &request.sources,
        items: &request.items,
        flags: Flags { force: request.force, allow_withdrawals: request.allow_withdrawals },
        run_id: None,
        reuse_open: false,
    };
    let stored = store_plan(deps, &origin, steps).await?;
    Ok(Made { id: stored.id, summary: stored.summary, verdict: stored.verdict, report })
}

/// The plan `id`, or why not: [`OpsError::NotFound`].
async fn stored(ctx: &Ctx<'_>, id: i64) -> Result<PlanRow, OpsError> {
    ctx.store.plan(id).await?.ok_or_else(|| OpsError::NotFound(format!("no plan {id} (see `plan list`)")))
}

/// Approves or rejects plan `id` as `actor`, with a reason (required): refused for the plan's
/// author approving their own plan, for a plan that is not open or has expired. Any rejection
/// rejects the plan; it is approved once as many people other than its author approved as the
/// policy asked. The decision, the plan's new status and the event `plan N approved by …: reason`
/// are one transaction. Returns the plan's status after the decision.
pub async fn decide_plan(
    ctx: &Ctx<'_>,
    actor: &Actor,
    id: i64,
    decision: Decide,
    reason: &str,
) -> Result<PlanStatus, OpsError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(OpsError::Usage(format!("say why you {} the plan (--reason)", decision.as_str())));
    }
    let plan = stored(ctx, id).await?;
    let now = ctx.now();
    let decisions = ctx.store.decisions(id).await?;
    let approvals: Vec<&str> =
        decisions.iter().filter(|d| d.decision == Decide::Approve.as_str()).map(|d| d.who.as_str()).collect();
    let state = policy::PlanState {
        status: &plan.status,
        author: &plan.author,
        expires_at: &plan.expires_at,
        needed: plan.approvals_needed,
        approvals: &approvals,
    };
    if let Err(refused) = policy::decide(&state, &now, &actor.name, decision) {
        if matches!(refused, policy::Refused::Expired(_)) {
            ctx.store.expire_plans(&now).await?;
        }
        return Err(OpsError::Refused(refused.to_string()));
    }
    let (author, needed) = (plan.author.clone(), plan.approvals_needed);
    let then = move |all: &[Decision]| -> PlanStatus {
        if all.iter().any(|d| d.decision == Decide::Reject.as_str()) {
            return PlanStatus::Rejected;
        }
        let approvers = all.iter().filter(|d| d.decision == Decide::Approve.as_str() && d.who != author).count();
        if approvers as i64 >= needed { PlanStatus::Approved } else { PlanStatus::Open }
    };
    let what = match decision {
        Decide::Approve => format!("plan {id} approved"),
        Decide::Reject => format!("plan {id} rejected"),
    };
    let record = Decision {
        who: actor.name.clone(),
        decision: decision.as_str().into(),
        reason: reason.into(),
        at: now.clone(),
    };
    let logged =
        super::OperatorEvent { at: now, ..event(actor, Some(reason), None, None, said(&what, actor, Some(reason))) };
    match ctx.store.decide_plan_logged(id, &record, &then, &logged).await? {
        Some(status) => Ok(status),
        None => {
            let now = stored(ctx, id).await?;
            Err(OpsError::Refused(format!(
                "the plan is {} now: only an open plan can be approved or rejected",
                now.status
            )))
        }
    }
}

/// Applies plan `id`: only an approved plan that has not expired. Its entries still to apply are
/// turned back into steps (the stored documents, not mapped again) and handed to `runner` as a
/// run of the plan's sources; the plan is `applying` from here until that run ends (`applied`, or
/// `approved` again if the run stopped early). The event `plan N applied by …` is logged with the
/// run's id once the run holds its sources.
pub async fn apply_plan<R: Runner>(
    ctx: &Ctx<'_>,
    runner: &R,
    actor: &Actor,
    id: i64,
    reason: Option<&str>,
) -> Result<R::Run, OpsError> {
    let plan = stored(ctx, id).await?;
    let now = ctx.now();
    match PlanStatus::parse(&plan.status) {
        Some(PlanStatus::Approved) if plan.expires_at < now => {
            ctx.store.expire_plans(&now).await?;
            return Err(OpsError::Refused(format!("plan {id} expired at {}; make a new plan", plan.expires_at)));
        }
        Some(PlanStatus::Approved) => {}
        // Its run died (or never began): what it delivered is recognised entry by entry, the rest applied now.
        Some(PlanStatus::Applying) if !applying_elsewhere(ctx, &plan).await? => {}
        Some(PlanStatus::Open) => {
            let approvals = ctx.store.decisions(id).await?;
            let by: Vec<&str> = approvals.iter().map(|d| d.who.as_str()).collect();
            return Err(OpsError::Refused(format!(
                "plan {id} is not approved: it needs {} approval(s) by someone other than {}{}",
                plan.approvals_needed,
                plan.author,
                if by.is_empty() { String::new() } else { format!(" (so far: {})", by.join(", ")) }
            )));
        }
        _ => {
            return Err(OpsError::Refused(format!(
                "plan {id} is {}: only an approved plan can be applied",
                plan.status
            )));
        }
    }
    let flags: Flags = serde_json::from_str(&plan.job).unwrap_or_default();
    let mut steps = Vec::new();
    let mut sources = std::collections::BTreeSet::new();
    for entry in ctx.store.plan_entries(id).await?.into_iter().filter(|e| e.state == "planned") {
        if let Some(source) = &ctx.sources {
            if !source.contains(&entry.source_id) {
                return Err(OpsError::Refused(format!(
                    "plan {id} changes items of source `{}`, which is not configured any more",
                    entry.source_id
                )));
            }
        }
        let body = match &entry.document_hash {
            Some(hash) => ctx.store.plan_document(hash).await?,
            None => None,
        };
        let step = Step::from_entry(&entry, body, flags).map_err(|e| OpsError::Failed(e.to_string()))?;
        sources.insert(step.source_id.clone());
        steps.push(step);
    }
    let from = PlanStatus::parse(&plan.status).unwrap_or(PlanStatus::Approved);
    if !ctx.store.set_plan_status(id, from, PlanStatus::Applying, &now, None).await? {
        let again = stored(ctx, id).await?;
        return Err(OpsError::Refused(format!(
            "plan {id} is {} now: only an approved plan can be applied",
            again.status
        )));
    }
    let job = Job {
        sources: sources.into_iter().collect(),
        // The plan's flags: a forced plan is applied (and shared) as forced.
        force: flags.force,
        allow_withdrawals: flags.allow_withdrawals,
        apply: Some(Arc::new(Applying { plan_id: id, steps })),
        ..Job::all(runner.trigger())
    };
    let prelude = Prelude {
        events: vec![event(actor, reason, None, None, said(&format!("plan {id} applied"), actor, reason))],
        applies: Some(id),
        ..Prelude::default()
    };
    match runner.start(job, prelude).await {
        Ok(run) => Ok(run),
        Err(e) => {
            // Not started: the plan can be applied later.
            ctx.store.set_plan_status(id, PlanStatus::Applying, from, &ctx.now(), None).await?;
            Err(e)
        }
    }
}

/// Whether a plan marked `applying` has a run that is still going on (then it is not applied
/// again); false if its run ended without settling it (the process died) or never began.
async fn applying_elsewhere(ctx: &Ctx<'_>, plan: &PlanRow) -> Result<bool, OpsError> {
    let Some(run_id) = plan.applied_run_id else { return Ok(false) };
    ctx.store.close_dead_runs().await?;
    Ok(ctx.store.run(run_id).await?.is_some_and(|run| run.finished_at.is_none()))
}
