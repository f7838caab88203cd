//! The approval policy: which planned changes need how many approvers other than the plan's author (Vier-Augen-Prinzip).
//!
//! A policy is set for the whole configuration (`[approval]`) and may be tightened for a source
//! or a target (`approval = { … }` in its table). Without any of these the bridge asks nobody (as
//! before plans existed; the withdrawal guard still holds back mass withdrawals); with one, the
//! defaults below apply to every source and target. A plan needs approval when any of its sources or
//! targets says so; it then needs the largest number of approvers any of them asks for. Every rule
//! that applied is named, so the plan says why it waits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One level of the policy, as written in the configuration. Unset fields fall back to the level
/// above (target or source → `[approval]` → the defaults below).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApprovalRules {
    /// Approvers other than the author a plan needs when a rule applies (default 1).
    pub approvers: Option<u32>,
    /// Every withdrawal needs approval (default true).
    pub withdrawals: Option<bool>,
    /// A plan that creates, updates or withdraws more items of a source than this needs approval.
    pub max_changes: Option<u64>,
    /// … or more than this share of a source's items, in percent (0–100).
    pub max_changed_percent: Option<u8>,
    /// Every change needs approval (e.g. for a production target).
    pub always: Option<bool>,
}

impl ApprovalRules {
    /// `self` where set, otherwise `fallback`.
    pub fn or(&self, fallback: &ApprovalRules) -> ApprovalRules {
        ApprovalRules {
            approvers: self.approvers.or(fallback.approvers),
            withdrawals: self.withdrawals.or(fallback.withdrawals),
            max_changes: self.max_changes.or(fallback.max_changes),
            max_changed_percent: self.max_changed_percent.or(fallback.max_changed_percent),
            always: self.always.or(fallback.always),
        }
    }

    fn approvers_or_default(&self) -> u32 {
        self.approvers.unwrap_or(1)
    }
}

/// The resolved policy: the global level and each source's and target's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Whether the configuration sets a policy at all; without one, nothing needs approval.
    pub enabled: bool,
    pub global: ApprovalRules,
    pub sources: BTreeMap<String, ApprovalRules>,
    pub targets: BTreeMap<String, ApprovalRules>,
}

/// What a plan changes, as the policy looks at it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Per source: items it has in the ledger (before the plan), items the plan changes (create,
    /// update or withdraw at any target), and items it withdraws.
    pub sources: BTreeMap<String, SourceChanges>,
    /// Per target: (item, target) pairs the plan changes there.
    pub targets: BTreeMap<String, u64>,
}

/// What a plan changes of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceChanges {
    pub known: u64,
    pub changed: u64,
    pub withdrawn: u64,
}

/// The policy's verdict on a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Approvers other than the author; 0 means the plan may be applied at once.
    pub approvers: u32,
    /// Why, one line per rule that applied.
    pub reasons: Vec<String>,
}

impl Policy {
    /// Which approvals a plan with these changes needs.
    pub fn judge(&self, changes: &ChangeSummary) -> Verdict {
        let mut verdict = Verdict::default();
        if !self.enabled {
            return verdict;
        }
        let mut demand = |rules: &ApprovalRules, reason: String| {
            verdict.approvers = verdict.approvers.max(rules.approvers_or_default());
            verdict.reasons.push(reason);
        };
        for (id, c) in &changes.sources {
            if c.changed == 0 {
                continue;
            }
            let rules = self.sources.get(id).map_or_else(|| self.global.clone(), |r| r.or(&self.global));
            if rules.always.unwrap_or(false) {
                demand(&rules, format!("source {id}: every change needs approval"));
            }
            if c.withdrawn > 0 && rules.withdrawals.unwrap_or(true) {
                demand(&rules, format!("source {id}: {} withdrawal(s) need approval", c.withdrawn));
            }
            if let Some(max) = rules.max_changes.filter(|max| c.changed > *max) {
                demand(&rules, format!("source {id}: {} items change, more than {max}", c.changed));
            }
            if let Some(percent) = rules.max_changed_percent {
                // Measured against the larger of what the source had and what the plan touches, so
                // a first run (nothing known yet) is judged as 100 % of itself.
                let base = c.known.max(c.changed);
                if c.changed * 100 > u64::from(percent) * base {
                    demand(&rules, format!("source {id}: {} of {base} items change, more than {percent} %", c.changed));
                }
            }
        }
        for (id, changed) in &changes.targets {
            let rules = self.targets.get(id).map_or_else(|| self.global.clone(), |r| r.or(&self.global));
            if *changed > 0 && rules.always.unwrap_or(false) {
                demand(&rules, format!("target {id}: every change needs approval"));
            }
        }
        verdict
    }
}

/// A decision someone wants to record on a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decide {
    Approve,
    Reject,
}

impl Decide {
    pub fn as_str(self) -> &'static str {
        match self {
            Decide::Approve => "approve",
            Decide::Reject => "reject",
        }
    }
}

/// Why a decision is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} made this plan and cannot approve it: the policy asks for someone else")]
    OwnPlan(String),
    #[error("the plan is {0}: only an open plan can be approved or rejected")]
    NotOpen(String),
    #[error("the plan expired at {0}")]
    Expired(String),
}

/// What [`decide`] looks at of a plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanState<'a> {
    pub status: &'a str,
    pub author: &'a str,
    pub expires_at: &'a str,
    /// Approvers other than the author the policy asked for.
    pub needed: i64,
    /// Who approved so far.
    pub approvals: &'a [&'a str],
}

/// What a plan's status becomes when `who` decides `decision` on it, given the decisions so far
/// (`approvals` by other people than the author). Any rejection rejects it; it is approved once
/// approvals by people other than its author reach what the policy asked for. Nobody approves
/// their own plan; an author may reject (withdraw) it.
pub fn decide(plan: &PlanState<'_>, now: &str, who: &str, decision: Decide) -> Result<&'static str, Refused> {
    let PlanState { status, author, expires_at, needed, approvals } = *plan;
    if status != "open" {
        return Err(Refused::NotOpen(status.to_owned()));
    }
    if expires_at < now {
        return Err(Refused::Expired(expires_at.to_owned()));
    }
    match decision {
        Decide::Reject => Ok("rejected"),
        Decide::Approve if who == author => Err(Refused::OwnPlan(who.to_owned())),
        Decide::Approve => {
            let mut people: Vec<&str> = approvals.iter().copied().filter(|a| *a != author).collect();
            people.push(who);
            people.sort_unstable();
            people.dedup();
            Ok(if people.len() as i64 >= needed { "approved" } else { "open" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(source: (&str, u64, u64, u64), target: (&str, u64)) -> ChangeSummary {
        let (id, known, changed, withdrawn) = source;
        ChangeSummary {
            sources: [(id.to_owned(), SourceChanges { known, changed, withdrawn })].into(),
            targets: [(target.0.to_owned(), target.1)].into(),
        }
    }

    #[test]
    fn by_default_withdrawals_need_one_approver_and_nothing_else_does() {
        let policy = Policy { enabled: true, ..Policy::default() };
        assert_eq!(policy.judge(&changes(("a", 10, 10, 0), ("portal-xml", 10))), Verdict::default());
        let verdict = policy.judge(&changes(("a", 10, 2, 1), ("portal-xml", 2)));
        assert_eq!(verdict.approvers, 1);
        assert_eq!(verdict.reasons, ["source a: 1 withdrawal(s) need approval"]);
    }

    #[test]
    fn a_source_or_target_tightens_the_global_rules_and_the_largest_demand_wins() {
        let policy = Policy {
            enabled: true,
            global: ApprovalRules { withdrawals: Some(false), max_changes: Some(5), ..Default::default() },
            sources: [("a".to_owned(), ApprovalRules { max_changed_percent: Some(20), ..Default::default() })].into(),
            targets: [(
                "portal-xml".to_owned(),
                ApprovalRules { always: Some(true), approvers: Some(2), ..Default::default() },
            )]
            .into(),
        };
        let verdict = policy.judge(&changes(("a", 100, 30, 3), ("form-platform", 30)));
        assert_eq!(verdict.approvers, 1);
        assert_eq!(
            verdict.reasons,
            ["source a: 30 items change, more than 5", "source a: 30 of 100 items change, more than 20 %"]
        );
        let verdict = policy.judge(&changes(("a", 100, 3, 0), ("portal-xml", 3)));
        assert_eq!(verdict.approvers, 2);
        assert_eq!(verdict.reasons, ["target portal-xml: every change needs approval"]);
    }

    #[test]
    fn without_a_policy_in_the_configuration_nothing_needs_approval() {
        let policy = Policy::default();
        assert_eq!(policy.judge(&changes(("a", 10, 10, 10), ("portal-xml", 10))), Verdict::default());
    }

    #[test]
    fn a_plan_that_changes_nothing_needs_nobody() {
        let policy = Policy {
            enabled: true,
            global: ApprovalRules { always: Some(true), max_changed_percent: Some(0), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(policy.judge(&changes(("a", 10, 0, 0), ("portal-xml", 0))), Verdict::default());
    }

    #[test]
    fn nobody_approves_their_own_plan_and_approvals_add_up_per_person() {
        let now = "2026-12-07T00:00:00Z";
        fn plan<'a>(status: &'a str, expires_at: &'a str, needed: i64, approvals: &'a [&'a str]) -> PlanState<'a> {
            PlanState { status, author: "alice", expires_at, needed, approvals }
        }
        let d = |approvals: &[&str], who: &str, decision| {
            decide(&plan("open", "2026-12-10T00:00:00Z", 2, approvals), now, who, decision)
        };
        assert_eq!(d(&[], "alice", Decide::Approve), Err(Refused::OwnPlan("alice".into())));
        assert_eq!(d(&[], "bob", Decide::Approve), Ok("open"));
        assert_eq!(d(&["bob"], "bob", Decide::Approve), Ok("open"), "one person counts once");
        assert_eq!(d(&["bob"], "carol", Decide::Approve), Ok("approved"));
        assert_eq!(d(&["bob"], "alice", Decide::Reject), Ok("rejected"), "the author may withdraw it");
        let late = decide(&plan("open", "2026-12-01T00:00:00Z", 1, &[]), now, "bob", Decide::Approve);
        assert_eq!(late, Err(Refused::Expired("2026-12-01T00:00:00Z".into())));
        let applied = decide(&plan("applied", "2026-12-10T00:00:00Z", 1, &[]), now, "bob", Decide::Reject);
        assert_eq!(applied, Err(Refused::NotOpen("applied".into())));
    }

    #[test]
    fn a_first_run_counts_as_all_of_the_source() {
        let policy = Policy {
            enabled: true,
            global: ApprovalRules { max_changed_percent: Some(50), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(
            policy.judge(&changes(("a", 0, 4, 0), ("x", 4))).reasons,
            ["source a: 4 of 4 items change, more than 50 %"]
        );
    }
}
