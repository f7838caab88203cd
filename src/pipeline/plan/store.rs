//! Storing a plan: steps that change something become entries with their documents and diffs,
//! judged by the approval policy; an open plan with the very same entries is reused, not repeated.

use std::collections::{BTreeMap, BTreeSet};

use super::{Change, Flags, Step};
use crate::pipeline::Deps;
use crate::plan_view;
use crate::policy::Verdict;
use crate::store::plans::{NewPlan, PlanEntry, PlanStatus};
use crate::store::{StoreError, timestamp};

/// A stored plan: its id, what it changes and what the policy says of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub id: i64,
    pub summary: plan_view::Summary,
    pub verdict: Verdict,
    /// False if an open plan with the same entries was found and is the answer.
    pub new: bool,
}

/// What a plan is made for: who, the job's selection and flags, the run it came from.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub author: &'a str,
    pub sources: &'a [String],
    pub items: &'a [String],
    pub flags: Flags,
    pub run_id: Option<i64>,
    /// Answer with an open plan of the same entries instead of storing another (a run meeting the
    /// changes its earlier plan holds); an operator's own `plan` always stores a new one.
    pub reuse_open: bool,
}

/// Stores `steps` (those that create, update or withdraw) as a plan of `origin.author`, each with
/// its diff against what was last delivered, judged by the configured policy: `approved` if it
/// needs nobody, else `open`. An open plan whose entries are the same (items, targets, actions,
/// documents and bases) is returned instead of a second one if `origin.reuse_open` (a schedule
/// that meets the same change again while its plan waits).
pub async fn store_plan(deps: &Deps, origin: &Origin<'_>, steps: Vec<Step>) -> Result<Stored, StoreError> {
    let store = &deps.store;
    let mut entries = Vec::new();
    for step in steps {
        let last = store.last_documents(step.key.as_str(), &step.target, 1).await?;
        let old = last.first().map(|d| d.body.as_slice());
        let new = match &step.change {
            Change::Create { document } | Change::Update { document } => Some(document.body.to_vec()),
            _ => None,
        };
        if let Some(entry) = step.entry(plan_view::diff(old, new.as_deref())) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| (&a.0.item_key, &a.0.target).cmp(&(&b.0.item_key, &b.0.target)));
    let plain: Vec<PlanEntry> = entries.iter().map(|(e, _)| e.clone()).collect();
    let verdict = judge(deps, &plain).await?;
    let summary = plan_view::Summary::of(&plain);

    if origin.reuse_open {
        if let Some(id) = same_open_plan(deps, &plain).await? {
            return Ok(Stored { id, summary, verdict, new: false });
        }
    }
    let now = deps.clock.now();
    let lifetime = chrono::Duration::from_std(deps.config.plan_lifetime).unwrap_or(chrono::Duration::hours(72));
    let job = serde_json::json!({
        "sources": origin.sources,
        "items": origin.items,
        "force": origin.flags.force,
        "allow_withdrawals": origin.flags.allow_withdrawals,
    })
    .to_string();
    let plan = NewPlan {
        author: origin.author,
        created_at: &timestamp(now),
        expires_at: &timestamp(now + lifetime),
        status: if verdict.approvers == 0 { PlanStatus::Approved } else { PlanStatus::Open },
        job: &job,
        summary: &serde_json::to_string(&summary).expect("counts serialise"),
        approvals_needed: i64::from(verdict.approvers),
        policy_reasons: &serde_json::to_string(&verdict.reasons).expect("strings serialise"),
        run_id: origin.run_id,
    };
    let id = store.create_plan(&plan, &entries).await?;
    Ok(Stored { id, summary, verdict, new: true })
}

/// The policy's verdict on these entries, each source measured against what its ledger knows.
pub async fn judge(deps: &Deps, entries: &[PlanEntry]) -> Result<Verdict, StoreError> {
    let mut known: BTreeMap<String, u64> = BTreeMap::new();
    for entry in entries {
        if !known.contains_key(&entry.source_id) {
            let ledger = deps.store.ledger_of_source(&entry.source_id).await?;
            known.insert(entry.source_id.clone(), distinct_items(ledger.keys().map(|(item, _)| item.as_str())));
        }
    }
    Ok(deps.config.policy.judge(&plan_view::changes(entries, &known)))
}

/// How many distinct items these keys name.
pub(in crate::pipeline) fn distinct_items<'a>(keys: impl Iterator<Item = &'a str>) -> u64 {
    keys.collect::<BTreeSet<&str>>().len() as u64
}

/// An open plan with exactly these entries (as far as applying them goes), if there is one.
async fn same_open_plan(deps: &Deps, entries: &[PlanEntry]) -> Result<Option<i64>, StoreError> {
    let fingerprint = |e: &PlanEntry| {
        (
            e.item_key.clone(),
            e.target.clone(),
            e.action.clone(),
            e.document_hash.clone(),
            e.base_version.clone(),
            e.base_hash.clone(),
        )
    };
    let wanted: Vec<_> = entries.iter().map(fingerprint).collect();
    for plan in deps.store.plans(Some(PlanStatus::Open), 50).await? {
        let theirs: Vec<_> = deps.store.plan_entries(plan.id).await?.iter().map(fingerprint).collect();
        if theirs == wanted {
            return Ok(Some(plan.id));
        }
    }
    Ok(None)
}
