//! The review pages of plans: the plans waiting for a decision or an apply, and one plan with its reasons, decisions, coloured diffs and outcomes (the decision form: [`super::plan_form`]).
//!
//! ```text
//! GET  /plans               waiting plans (open, then approved), then the recent others (viewer)
//! GET  /plans/{id}          one plan; for an approver signed in, the form to approve or reject it (viewer)
//! GET  /plans/{id}?sign_in  asks the browser to sign in (HTTP Basic) unless an approver is signed in
//! POST /plans/{id}/decide   the form (super::plan_form): csrf, decision (approve|reject), reason → 303
//!                           to the plan page, or a page naming the refusal
//! ```

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_SECURITY_POLICY;
use axum::http::{HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::actions::ctx;
use super::auth::{SignedIn, ViewerPage};
use super::html::{Html, Nav, page};
use super::pages::{PageResult, bad_query, failed, item_href, not_found_page};
use super::plan_form::{decide_section, sign_in_page};
use super::tokens::Role;
use super::{ApiState, when};
use crate::plan_view::Summary;
use crate::policy::Decide;
use crate::store::plans::{Decision, PlanEntry, PlanRow, PlanStatus};
use crate::store::timestamp;

/// Plans that wait for a person: a decision (open) or an apply (approved).
const WAITING: [PlanStatus; 2] = [PlanStatus::Open, PlanStatus::Approved];
const MAX_WAITING: i64 = 500;
/// How many of the other plans the list shows.
const RECENT: i64 = 50;
/// Up to this many entries, each entry's diff is shown open; beyond, folded.
const OPEN_ENTRIES: usize = 30;
/// Lines of one entry's diff shown on the page (`plan show ID` prints all).
const MAX_DIFF_LINES: usize = 2_000;

pub(super) fn plan_href(id: i64) -> String {
    format!("/plans/{id}")
}

/// The status a person should read: a waiting plan past its expiry is expired, even before the
/// next action marks it so in the store.
fn shown_status<'a>(plan: &'a PlanRow, now: &str) -> &'a str {
    let waiting = WAITING.iter().any(|s| s.as_str() == plan.status);
    if waiting && plan.expires_at.as_str() < now { "expired" } else { &plan.status }
}

/// A plan's or an entry's state word in its colour.
pub(super) fn badge(h: &mut Html, word: &str) {
    let class = match word {
        "open" | "failed" => "warn",
        "approved" | "applying" => "info",
        "applied" => "good",
        "rejected" | "conflict" => "bad",
        _ => "muted",
    };
    h.raw("<span class=\"status ").raw(class).raw("\">").text(word).raw("</span>");
}

/// `5 min`, `3 h 10 min`, `2 d 4 h` since `created`.
fn age(created: &str, now: DateTime<Utc>) -> String {
    let Ok(created) = DateTime::parse_from_rfc3339(created) else { return created.to_owned() };
    let minutes = (now - created.with_timezone(&Utc)).num_minutes().max(0);
    match minutes {
        0..60 => format!("{minutes} min"),
        60..1440 => format!("{} h {} min", minutes / 60, minutes % 60),
        _ => format!("{} d {} h", minutes / 1440, minutes / 60 % 24),
    }
}

fn summary(plan: &PlanRow) -> String {
    serde_json::from_str::<Summary>(&plan.summary).map(|s| s.to_string()).unwrap_or_else(|_| plan.summary.clone())
}

fn reasons(plan: &PlanRow) -> Vec<String> {
    serde_json::from_str(&plan.policy_reasons).unwrap_or_default()
}

/// Who approved, other than the author.
fn approvers<'a>(plan: &PlanRow, decisions: &'a [Decision]) -> Vec<&'a str> {
    decisions
        .iter()
        .filter(|d| d.decision == Decide::Approve.as_str() && d.who != plan.author)
        .map(|d| d.who.as_str())
        .collect()
}

/// `GET /plans`: the plans that wait (open, then approved), then the recent others.
pub(crate) async fn list(_: ViewerPage, State(state): State<ApiState>) -> PageResult {
    let now_at = ctx(&state).clock.now();
    let tz = state.timezone();
    let now = timestamp(now_at);
    let mut waiting = Vec::new();
    for status in WAITING {
        waiting.extend(state.store.plans(Some(status), MAX_WAITING).await.map_err(failed)?);
    }
    let (lapsed, waiting): (Vec<PlanRow>, Vec<PlanRow>) = waiting.into_iter().partition(|p| p.expires_at < now);
    let mut others: Vec<PlanRow> = state.store.plans(None, RECENT).await.map_err(failed)?;
    others.retain(|p| !WAITING.iter().any(|s| s.as_str() == p.status));
    others.extend(lapsed);
    others.sort_by_key(|p| std::cmp::Reverse(p.id));
    others.truncate(RECENT as usize);

    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Ein Plan hält fest, was eine Migration ändern würde – je Element und Ziel die Aktion und \
         der Unterschied zur letzten Lieferung –, bevor etwas das Portal erreicht. Verlangt die Freigaberegel es, \
         muss jemand anderes als die Autorin oder der Autor ihn freigeben (Vier-Augen-Prinzip); erst dann wird er \
         angewendet. (A plan records what a migration would change before anything reaches the portal; where \
         the approval policy asks for it, someone other than its author approves it before it is applied.)</p>",
    );
    for (title, plans, empty) in [
        (
            "<h2>Wartend (Waiting)</h2><p class=\"hint\">Offene Pläne warten auf eine Entscheidung, freigegebene \
             auf <code>portal-bridge apply ID</code>. (Open plans wait for a decision, approved ones for apply.)</p>",
            &waiting,
            "<p class=\"empty\">Kein Plan wartet (no plan is waiting).</p>",
        ),
        ("<h2>Weitere Pläne (Other recent plans)</h2>", &others, "<p class=\"empty\">Keine (none).</p>"),
    ] {
        h.raw(title);
        if plans.is_empty() {
            h.raw(empty);
            continue;
        }
        h.raw("<table class=\"wide\">").head(&[
            "Plan",
            "Status",
            "Autor (author)",
            "Alter (age)",
            "Änderungen (changes)",
            "Freigaben (approvals)",
            "Gründe (reasons)",
        ]);
        h.raw("<tbody>");
        for plan in plans {
            let decisions = state.store.decisions(plan.id).await.map_err(failed)?;
            h.raw("<tr>").cell(|h| {
                h.link(&plan_href(plan.id), &format!("#{}", plan.id));
            });
            h.cell(|h| badge(h, shown_status(plan, &now)));
            h.td(&plan.author);
            h.tag("<td class=\"when\" title=\"", "", &when(&plan.created_at, tz)).raw("\">");
            h.text(&age(&plan.created_at, now_at)).raw("</td>");
            h.td(&summary(plan));
            h.cell(|h| {
                if plan.approvals_needed > 0 {
                    h.show(approvers(plan, &decisions).len()).raw(" / ").show(plan.approvals_needed);
                } else {
                    h.raw("<span class=\"none\">keine nötig (none needed)</span>");
                }
            });
            h.raw("<td class=\"reason\">").maybe(Some(&reasons(plan).join("; "))).raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    Ok(page(StatusCode::OK, "Pläne (Plans)", Nav::Plans, h))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PlanQuery {
    sign_in: Option<String>,
}

/// `GET /plans/{id}`: the plan, why it needs approval, the decisions, the form for an approver,
/// and each entry with its diff and, once applied, its outcome.
pub(crate) async fn show(
    _: ViewerPage,
    SignedIn(visitor): SignedIn,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    let Some(plan) = (match id.parse::<i64>() {
        Ok(id) => state.store.plan(id).await.map_err(failed)?,
        Err(_) => None,
    }) else {
        return Err(not_found_page(&format!("Es gibt keinen Plan {id} (no such plan).")));
    };
    let approver = visitor.as_ref().filter(|(who, _)| who.role >= Role::Approver);
    if query.sign_in.is_some() && approver.is_none() {
        return Err(sign_in_page(plan.id, visitor.as_ref().map(|(who, _)| who)));
    }
    let decisions = state.store.decisions(plan.id).await.map_err(failed)?;
    let entries = state.store.plan_entries(plan.id).await.map_err(failed)?;
    let now_at = ctx(&state).clock.now();
    let tz = state.timezone();
    let now = timestamp(now_at);
    let status = shown_status(&plan, &now);

    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Was dieser Plan ändern würde, je Element und Ziel mit dem Unterschied zur letzten \
         Lieferung: <span class=\"status bad\">−</span> Zeilen fallen weg, <span class=\"status good\">+</span> \
         kommen hinzu. (What this plan would change, per item and target, with the diff against what was last \
         delivered.)</p>",
    );
    facts(&mut h, &plan, status, &decisions, &entries, now_at, tz);
    h.raw("<h2>Warum eine Freigabe nötig ist (Why approval is needed)</h2>");
    let why = reasons(&plan);
    if why.is_empty() {
        h.raw("<p class=\"empty\">Keine Freigaberegel greift (no rule of the policy applies).</p>");
    } else {
        h.raw("<ul>");
        for reason in &why {
            h.tag("<li>", "</li>", reason);
        }
        h.raw("</ul>");
    }
    h.raw("<h2>Entscheidungen (Decisions)</h2>");
    if decisions.is_empty() {
        h.raw("<p class=\"empty\">Noch keine Entscheidung (no decision yet).</p>");
    } else {
        h.raw("<table>").head(&["Wer (who)", "Entscheidung (decision)", "Wann (when)", "Begründung (reason)"]);
        h.raw("<tbody>");
        for d in &decisions {
            h.raw("<tr>").td(&d.who).cell(|h| badge(h, if d.decision == "approve" { "approved" } else { "rejected" }));
            h.tag("<td class=\"when\">", "</td>", &when(&d.at, tz));
            h.raw("<td class=\"reason\">").text(&d.reason).raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }
    decide_section(&mut h, &plan, status, &decisions, visitor.as_ref(), now_at.timestamp(), tz);
    entries_section(&mut h, &entries);

    let mut response = page(StatusCode::OK, &format!("Plan {}", plan.id), Nav::Plans, h);
    // The one page with a form: it may post to this site, nowhere else.
    response.headers_mut().insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    Ok(response)
}

fn facts(
    h: &mut Html,
    plan: &PlanRow,
    status: &str,
    decisions: &[Decision],
    entries: &[PlanEntry],
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) {
    let job: serde_json::Value = serde_json::from_str(&plan.job).unwrap_or_default();
    let words = |key: &str| -> Vec<String> {
        job[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    h.raw("<dl class=\"facts\"><dt>Status</dt><dd>");
    badge(h, status);
    h.raw("</dd><dt>Autor (author)</dt><dd>").text(&plan.author);
    h.raw("</dd><dt>Erstellt (made)</dt><dd>")
        .text(&when(&plan.created_at, tz))
        .raw(" (")
        .text(&age(&plan.created_at, now));
    h.raw(")</dd><dt>Läuft ab (expires)</dt><dd>").text(&when(&plan.expires_at, tz));
    h.raw("</dd><dt>Änderungen (changes)</dt><dd>").text(&Summary::of(entries).to_string());
    h.raw("</dd><dt>Freigaben (approvals)</dt><dd>");
    let given = approvers(plan, decisions);
    if plan.approvals_needed > 0 {
        h.show(given.len()).raw(" von (of) ").show(plan.approvals_needed).raw(" nötig (needed), nicht von ");
        h.text(&plan.author).raw(" (not by the author)");
        if !given.is_empty() {
            h.raw(": ").text(&given.join(", "));
        }
    } else {
        h.raw("keine nötig (none needed)");
    }
    let (sources, items) = (words("sources"), words("items"));
    h.raw("</dd><dt>Quellen (sources)</dt><dd>");
    h.text(&if sources.is_empty() { "alle (all)".to_owned() } else { sources.join(", ") });
    if !items.is_empty() {
        h.raw("; Elemente (items): ").text(&items.join(", "));
    }
    for (flag, label) in [("force", " · force"), ("allow_withdrawals", " · allow_withdrawals")] {
        if job[flag].as_bool() == Some(true) {
            h.text(label);
        }
    }
    h.raw("</dd>");
    if let Some(run) = plan.run_id {
        h.raw("<dt>Gemacht im Lauf (made by run)</dt><dd>").link(&format!("/runs/{run}"), &format!("#{run}"));
        h.raw("</dd>");
    }
    if let Some(run) = plan.applied_run_id {
        h.raw("<dt>Angewendet im Lauf (applied by run)</dt><dd>").link(&format!("/runs/{run}"), &format!("#{run}"));
        h.raw("</dd>");
    }
    h.raw("</dl>");
}

fn entries_section(h: &mut Html, entries: &[PlanEntry]) {
    h.raw("<h2>Einträge (Entries)</h2>");
    if entries.is_empty() {
        h.raw("<p class=\"empty\">Der Plan ändert nichts (the plan changes nothing).</p>");
        return;
    }
    h.raw(
        "<p class=\"hint\">Je Element und Ziel: die Aktion, nach dem Anwenden ihr Ergebnis (applied, conflict, \
         failed), und der Unterschied zur letzten Lieferung. (Per item and target: the action, its outcome once \
         applied, and the diff.)</p>",
    );
    for entry in entries {
        h.raw(if entries.len() <= OPEN_ENTRIES { "<details open><summary>" } else { "<details><summary>" });
        h.raw("<h3 style=\"display:inline\">")
            .text(&entry.action)
            .raw(" ")
            .link(&item_href(&entry.item_key), &entry.item_key);
        h.raw(" → ").text(&entry.target).raw("<span class=\"statuses\">");
        badge(h, &entry.state);
        h.raw("</span></h3></summary>");
        if let Some(message) = entry.message.as_deref().filter(|m| !m.is_empty()) {
            h.raw("<p class=\"hint\"><strong>Meldung (message):</strong> ").text(message).raw("</p>");
        }
        let warnings: Vec<String> = serde_json::from_str(&entry.warnings).unwrap_or_default();
        if !warnings.is_empty() {
            h.raw("<p class=\"hint\">Warnungen (warnings): ").text(&warnings.join("; ")).raw("</p>");
        }
        if let Some(base) = &entry.base_version {
            h.raw("<p class=\"hint\">Baut auf Version (builds on version) <code>")
                .text(base)
                .raw("</code> beim Ziel.</p>");
        }
        unified_diff(h, &entry.diff);
        h.raw("</details>");
    }
}

/// A stored unified diff as the item pages show a diff: hunk headers, then context, − and +
/// lines with their line numbers.
fn unified_diff(h: &mut Html, diff: &str) {
    if diff.trim().is_empty() {
        h.raw("<p class=\"empty\">Der Text des Dokuments ändert sich nicht (no line differs).</p>");
        return;
    }
    if !diff.starts_with("--- ") {
        h.raw("<p class=\"hint\">").text(diff.trim()).raw("</p>");
        return;
    }
    let (removed, added) = diff.lines().fold((0, 0), |(r, a), line| match line.as_bytes().first() {
        _ if line.starts_with("---") || line.starts_with("+++") => (r, a),
        Some(b'-') => (r + 1, a),
        Some(b'+') => (r, a + 1),
        _ => (r, a),
    });
    h.raw("<p class=\"hint\">Zeilen entfernt (lines removed): ").show(removed);
    h.raw(", hinzugefügt (added): ").show(added).raw("</p>");
    h.raw("<table class=\"diff\">").head(&["alt (old)", "neu (new)", "", "Zeile (line)"]).raw("<tbody>");
    let (mut old, mut new) = (0u64, 0u64);
    let lines: Vec<&str> = diff.lines().filter(|l| !l.starts_with("--- ") && !l.starts_with("+++ ")).collect();
    for line in lines.iter().take(MAX_DIFF_LINES) {
        if let Some(header) = line.strip_prefix("@@") {
            // "@@ -3,7 +3,8 @@": where the hunk starts in each version.
            let start = |sign: char| {
                header
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(sign))
                    .and_then(|w| w.split(',').next()?.parse().ok())
            };
            old = start('-').unwrap_or(1);
            new = start('+').unwrap_or(1);
            h.raw("<tr class=\"hunk\"><td colspan=\"4\">").text(line).raw("</td></tr>");
            continue;
        }
        let (class, sign, numbers) = match line.chars().next() {
            Some('-') => ("<tr class=\"del\">", "−", (Some(old), None)),
            Some('+') => ("<tr class=\"ins\">", "+", (None, Some(new))),
            Some('\\') => {
                h.raw("<tr class=\"hunk\"><td colspan=\"4\">").text(line).raw("</td></tr>");
                continue;
            }
            _ => ("<tr class=\"ctx\">", " ", (Some(old), Some(new))),
        };
        h.raw(class);
        for number in [numbers.0, numbers.1] {
            h.raw("<td class=\"ln\">");
            if let Some(n) = number {
                h.show(n);
            }
            h.raw("</td>");
        }
        h.raw("<td class=\"sign\">").raw(sign).raw("</td><td>").text(line.get(1..).unwrap_or("")).raw("</td></tr>");
        old += u64::from(numbers.0.is_some());
        new += u64::from(numbers.1.is_some());
    }
    h.raw("</tbody></table>");
    if lines.len() > MAX_DIFF_LINES {
        h.raw("<p class=\"hint\">… ").show(lines.len() - MAX_DIFF_LINES);
        h.raw(" Zeilen mehr (more lines): <code>portal-bridge plan show ID</code>.</p>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        let now = DateTime::parse_from_rfc3339("2026-12-09T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(age("2026-12-09T11:55:00Z", now), "5 min");
        assert_eq!(age("2026-12-09T08:50:00Z", now), "3 h 10 min");
        assert_eq!(age("2026-12-07T08:00:00Z", now), "2 d 4 h");
        assert_eq!(age("later", now), "later");
    }

    #[test]
    fn a_stored_diff_is_shown_with_line_numbers_and_escaped() {
        let mut h = Html::new();
        unified_diff(&mut h, "--- delivered\n+++ planned\n@@ -2,3 +2,3 @@\n a\n-<b>1</b>\n+<b>2</b>\n c\n");
        let text = h.into_string();
        assert!(text.contains("Zeilen entfernt (lines removed): 1, hinzugefügt (added): 1"), "{text}");
        assert!(text.contains("<tr class=\"hunk\"><td colspan=\"4\">@@ -2,3 +2,3 @@</td></tr>"), "{text}");
        assert!(text.contains("<tr class=\"ctx\"><td class=\"ln\">2</td><td class=\"ln\">2</td>"), "{text}");
        assert!(
            text.contains("<tr class=\"del\"><td class=\"ln\">3</td><td class=\"ln\"></td><td class=\"sign\">−</td><td>&lt;b&gt;1&lt;/b&gt;</td></tr>"),
            "{text}"
        );
        assert!(text.contains("<tr class=\"ins\"><td class=\"ln\"></td><td class=\"ln\">3</td>"), "{text}");
        assert!(
            text.contains("<td class=\"ln\">4</td><td class=\"ln\">4</td><td class=\"sign\"> </td><td>c</td>"),
            "{text}"
        );
        let mut h = Html::new();
        unified_diff(&mut h, "binary document (2 bytes)\n");
        assert!(h.into_string().contains("binary document (2 bytes)"));
    }
}
