//! The approval policy: which planned changes need how many approvers other than the plan's author (Vier-Augen-Prinzip).
//!
//! A policy is set for the whole configuration (`[approval]`) and may be tightened for a source
//! or a target (`approval = { … }` in its table). A plan needs approval when any of its sources or
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
        let policy = Policy::default();
        assert_eq!(policy.judge(&changes(("a", 10, 10, 0), ("portal-xml", 10))), Verdict::default());
        let verdict = policy.judge(&changes(("a", 10, 2, 1), ("portal-xml", 2)));
        assert_eq!(verdict.approvers, 1);
        assert_eq!(verdict.reasons, ["source a: 1 withdrawal(s) need approval"]);
    }

    #[test]
    fn a_source_or_target_tightens_the_global_rules_and_the_largest_demand_wins() {
        let policy = Policy {
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
    fn a_plan_that_changes_nothing_needs_nobody() {
        let policy = Policy {
            global: ApprovalRules { always: Some(true), max_changed_percent: Some(0), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(policy.judge(&changes(("a", 10, 0, 0), ("portal-xml", 0))), Verdict::default());
    }

    #[test]
    fn a_first_run_counts_as_all_of_the_source() {
        let policy = Policy {
            global: ApprovalRules { max_changed_percent: Some(50), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(
            policy.judge(&changes(("a", 0, 4, 0), ("x", 4))).reasons,
            ["source a: 4 of 4 items change, more than 50 %"]
        );
    }
}
