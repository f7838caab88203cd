//! How a plan reads: its diffs made when it is planned, its summary, and `plan show` as text (coloured on a terminal) or JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{ChangeSummary, SourceChanges};
use crate::store::plans::{Decision, PlanEntry, PlanRow};

/// Lines of context around each change in a diff.
const CONTEXT: usize = 3;

/// The unified diff from what was last delivered (`old`, none for a first delivery) to what the
/// plan would deliver (`new`, none for a withdrawal). Bodies that are not UTF-8 are compared by
/// size only, since a line diff of them would say nothing.
pub fn diff(old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    fn text(body: Option<&[u8]>) -> Option<Result<&str, usize>> {
        body.map(|b| std::str::from_utf8(b).map_err(|_| b.len()))
    }
    match (text(old), text(new)) {
        (Some(Err(a)), Some(Err(b))) => format!("binary document: {a} bytes → {b} bytes\n"),
        (Some(Err(a)), _) | (_, Some(Err(a))) => format!("binary document ({a} bytes)\n"),
        (old, new) => {
            let (old, new) = (old.and_then(Result::ok).unwrap_or(""), new.and_then(Result::ok).unwrap_or(""));
            similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .context_radius(CONTEXT)
                .header("delivered", "planned")
                .to_string()
        }
    }
}

/// Counts of a plan's entries by action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub create: u64,
    pub update: u64,
    pub withdraw: u64,
    /// Items whose entries were refused when the plan was applied (their base moved on).
    pub conflict: u64,
}

impl Summary {
    pub fn of(entries: &[PlanEntry]) -> Self {
        let mut summary = Summary::default();
        for entry in entries {
            match entry.action.as_str() {
                "create" => summary.create += 1,
                "update" => summary.update += 1,
                "withdraw" => summary.withdraw += 1,
                _ => {}
            }
            if entry.state == "conflict" {
                summary.conflict += 1;
            }
        }
        summary
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to create, {} to update, {} to withdraw", self.create, self.update, self.withdraw)?;
        if self.conflict > 0 {
            write!(f, ", {} refused (conflict)", self.conflict)?;
        }
        Ok(())
    }
}

/// What the policy needs to know of a plan's entries: per source the items it changes and
/// withdraws (an item counts once however many targets it changes at), per target the pairs;
/// `known` is each source's items in the ledger before the plan.
pub fn changes(entries: &[PlanEntry], known: &BTreeMap<String, u64>) -> ChangeSummary {
    let mut items: BTreeMap<&str, (std::collections::BTreeSet<&str>, std::collections::BTreeSet<&str>)> =
        BTreeMap::new();
    let mut targets: BTreeMap<String, u64> = BTreeMap::new();
    for entry in entries {
        let (changed, withdrawn) = items.entry(&entry.source_id).or_default();
        changed.insert(&entry.item_key);
        if entry.action == "withdraw" {
            withdrawn.insert(&entry.item_key);
        }
        *targets.entry(entry.target.clone()).or_default() += 1;
    }
    let sources = items
        .into_iter()
        .map(|(id, (changed, withdrawn))| {
            let known = known.get(id).copied().unwrap_or(0);
            (id.to_owned(), SourceChanges { known, changed: changed.len() as u64, withdrawn: withdrawn.len() as u64 })
        })
        .collect();
    ChangeSummary { sources, targets }
}

/// `plan show --json`: the plan, its decisions and its entries (diffs included, documents by hash).
#[derive(Debug, Serialize)]
pub struct PlanJson<'a> {
    pub plan: &'a PlanRow,
    pub summary: Summary,
    pub decisions: &'a [Decision],
    pub entries: &'a [PlanEntry],
}

/// `plan show`: the summary, who decided what, then each entry with its diff; `colour` marks
/// added lines green and removed lines red (for a terminal).
pub fn text(plan: &PlanRow, decisions: &[Decision], entries: &[PlanEntry], colour: bool, tz: chrono_tz::Tz) -> String {
    use crate::domain::local_time;
    use std::fmt::Write;
    let mut out = String::new();
    let _ =
        writeln!(out, "plan {} ({}) by {} at {}", plan.id, plan.status, plan.author, local_time(&plan.created_at, tz));
    let _ = writeln!(out, "  {}", Summary::of(entries));
    let _ = writeln!(out, "  expires at {}", local_time(&plan.expires_at, tz));
    let reasons: Vec<String> = serde_json::from_str(&plan.policy_reasons).unwrap_or_default();
    if plan.approvals_needed > 0 {
        let approvals = decisions.iter().filter(|d| d.decision == "approve").count();
        let _ = writeln!(out, "  needs {} approval(s), has {approvals}:", plan.approvals_needed);
        for reason in &reasons {
            let _ = writeln!(out, "    - {reason}");
        }
    }
    for d in decisions {
        let _ = writeln!(out, "  {} by {} at {}: {}", d.decision, d.who, local_time(&d.at, tz), d.reason);
    }
    for entry in entries {
        let _ = writeln!(out);
        let state = if entry.state == "planned" { String::new() } else { format!(" [{}]", entry.state) };
        let _ = writeln!(out, "{} {} → {}{state}", entry.action, entry.item_key, entry.target);
        if let Some(message) = &entry.message {
            let _ = writeln!(out, "  {message}");
        }
        let warnings: Vec<String> = serde_json::from_str(&entry.warnings).unwrap_or_default();
        for warning in warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        for line in entry.diff.lines() {
            let _ = writeln!(out, "{}", paint(line, colour));
        }
    }
    out
}

fn paint(line: &str, colour: bool) -> String {
    use anstyle::AnsiColor;
    let style = match line.as_bytes().first() {
        _ if !colour => return line.to_owned(),
        _ if line.starts_with("+++") || line.starts_with("---") => anstyle::Style::new().bold(),
        Some(b'+') => AnsiColor::Green.on_default(),
        Some(b'-') => AnsiColor::Red.on_default(),
        Some(b'@') => AnsiColor::Cyan.on_default(),
        _ => return line.to_owned(),
    };
    format!("{}{line}{}", style.render(), style.render_reset())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, source: &str, target: &str, action: &str, diff: &str) -> PlanEntry {
        PlanEntry {
            item_key: key.into(),
            target: target.into(),
            source_id: source.into(),
            origin: "f".into(),
            action: action.into(),
            document_hash: None,
            format: "xml".into(),
            base_version: None,
            base_hash: None,
            diff: diff.into(),
            warnings: "[\"codelist-newest-version\"]".into(),
            inputs: "{}".into(),
            state: "planned".into(),
            message: None,
        }
    }

    #[test]
    fn a_diff_shows_what_changes_and_a_withdrawal_removes_every_line() {
        let d = diff(Some(b"<a>\n<b>1</b>\n</a>\n"), Some(b"<a>\n<b>2</b>\n</a>\n"));
        assert!(d.contains("--- delivered\n+++ planned\n"), "{d}");
        assert!(d.contains("-<b>1</b>\n+<b>2</b>\n"), "{d}");
        let gone = diff(Some(b"x\ny\n"), None);
        assert!(gone.contains("-x\n-y\n"), "{gone}");
        assert!(!gone.lines().any(|l| l.starts_with('+') && !l.starts_with("+++")), "{gone}");
        assert_eq!(diff(Some(b"same\n"), Some(b"same\n")), "");
        assert_eq!(diff(None, Some(&[0xff, 0xfe])), "binary document (2 bytes)\n");
    }

    #[test]
    fn changes_count_items_once_per_source_and_pairs_per_target() {
        let entries = [
            entry("a/1", "a", "form-platform", "update", ""),
            entry("a/1", "a", "portal-xml", "update", ""),
            entry("a/2", "a", "portal-xml", "withdraw", ""),
            entry("b/1", "b", "portal-xml", "create", ""),
        ];
        let known = BTreeMap::from([("a".to_owned(), 10)]);
        let c = changes(&entries, &known);
        assert_eq!(c.sources["a"], SourceChanges { known: 10, changed: 2, withdrawn: 1 });
        assert_eq!(c.sources["b"], SourceChanges { known: 0, changed: 1, withdrawn: 0 });
        assert_eq!(c.targets["portal-xml"], 3);
        assert_eq!(Summary::of(&entries).to_string(), "1 to create, 2 to update, 1 to withdraw");
    }

    #[test]
    fn plan_show_names_the_reasons_the_decisions_and_colours_only_on_request() {
        let plan = PlanRow {
            id: 4,
            author: "alice".into(),
            created_at: "2026-12-07T10:00:00Z".into(),
            expires_at: "2026-12-10T10:00:00Z".into(),
            status: "open".into(),
            job: "{}".into(),
            summary: "{}".into(),
            approvals_needed: 1,
            policy_reasons: "[\"source a: 1 withdrawal(s) need approval\"]".into(),
            run_id: None,
            applied_run_id: None,
            updated_at: "2026-12-07T10:00:00Z".into(),
        };
        let decisions = [Decision {
            who: "bob".into(),
            decision: "reject".into(),
            reason: "not before Monday".into(),
            at: "2026-12-07T11:00:00Z".into(),
        }];
        let entries = [entry("a/2", "a", "portal-xml", "withdraw", "--- delivered\n+++ planned\n@@ -1 +0,0 @@\n-x\n")];
        let plain = text(&plan, &decisions, &entries, false, chrono_tz::Europe::Berlin);
        for expected in [
            "plan 4 (open) by alice",
            "0 to create, 0 to update, 1 to withdraw",
            "needs 1 approval(s), has 0:",
            "- source a: 1 withdrawal(s) need approval",
            "reject by bob at 2026-12-07 12:00:00 CET: not before Monday",
            "withdraw a/2 → portal-xml",
            "warning: codelist-newest-version",
            "\n-x\n",
        ] {
            assert!(plain.contains(expected), "{expected:?} in:\n{plain}");
        }
        assert!(!plain.contains('\u{1b}'));
        let coloured = text(&plan, &decisions, &entries, true, chrono_tz::Europe::Berlin);
        assert!(coloured.contains("\u{1b}[31m-x"), "{coloured:?}");
    }
}
