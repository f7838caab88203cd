//! The quality review page: per form, what the bridge found wrong upstream in its last migration, for the regions to fix.

use std::collections::BTreeSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::auth::ViewerPage;
use super::html::{Html, Kind, Nav, page};
use super::pages::{PageResult, bad_query, error_page, failed, item_href, not_found_page, target_label};
use super::{ApiState, query_value};
use crate::report::{self, ItemFindings, QualityReport};

#[derive(Debug, Deserialize)]
pub(crate) struct QualityQuery {
    source: Option<String>,
}

fn quality_href(source: &str) -> String {
    format!("/quality?source={}", query_value(source))
}

/// `/quality?source=`: the summary per category, then per source and item its findings.
pub(crate) async fn quality(
    _: ViewerPage,
    State(state): State<ApiState>,
    query: Result<Query<QualityQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    let source = query.source.filter(|s| !s.is_empty());
    // The sources the ledger holds and those the daemon runs (a new one may have no items yet).
    let mut known: BTreeSet<String> = state.source_states().into_keys().collect();
    known.extend(state.store.status_counts().await.map_err(failed)?.into_iter().map(|c| c.source_id));
    if let Some(id) = &source
        && !known.contains(id)
    {
        return Err(not_found_page(&format!("Die Quelle {id} ist nicht bekannt (no such source).")));
    }
    let covered = match &source {
        Some(id) => vec![id.clone()],
        None => known.iter().cloned().collect(),
    };
    let report = report::quality(&state.store, covered, source.as_deref()).await.map_err(|e| match e {
        report::ReportError::Store(e) => failed(e),
        other => error_page(StatusCode::INTERNAL_SERVER_ERROR, "Fehler (Error)", &other.to_string()),
    })?;

    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Qualitätssicherung der Lösungen der Modellregionen: je Formular, was die Bridge bei \
         seiner letzten Migration in den Quelldaten beanstandet hat – Abweichungen vom XSD des Standards, Zeichen \
         außerhalb String.Latin, fehlende oder versionslose Codelisten, leere Regelskripte, nicht unterstützte oder \
         nur als Hinweis übernommene Elemente und Quarantänen. Die Region behebt sie am besten im eigenen Export. \
         (Quality assurance of the regions' solutions: per form, what the bridge found wrong upstream in its last \
         migration, so a region can fix its export. The same as <code>portal-bridge report quality</code>.)</p>",
    );
    h.raw("<nav class=\"filter\">Quelle (source): ");
    if source.is_none() {
        h.raw("<strong>alle (all)</strong> ");
    } else {
        h.link("/quality", "alle (all)").raw(" ");
    }
    for id in &known {
        if source.as_deref() == Some(id.as_str()) {
            h.raw("<strong>").text(id).raw("</strong> ");
        } else {
            h.link(&quality_href(id), id).raw(" ");
        }
    }
    h.raw("</nav>");
    summary(&mut h, &report);
    for id in report.shown_sources() {
        source_section(&mut h, &report, id);
    }
    Ok(page(StatusCode::OK, "Qualität (Quality)", Nav::Quality, h))
}

fn summary(h: &mut Html, report: &QualityReport) {
    h.raw("<h2>Zusammenfassung (Summary)</h2>");
    h.raw("<table>").head(&["Kategorie (category)", "Kennung (id)", "Befunde (findings)", "Elemente (items)"]);
    h.raw("<tbody>");
    for count in &report.summary.0 {
        h.raw("<tr>").td(count.category.label());
        h.raw("<td><code>").text(count.category.id()).raw("</code></td>");
        h.td_num(count.findings as i64).td_num(count.items as i64).raw("</tr>");
    }
    h.raw("</tbody></table>");
}

fn source_section(h: &mut Html, report: &QualityReport, id: &str) {
    let items: Vec<&ItemFindings> = report.items_of(id).collect();
    let (with, clean): (Vec<&ItemFindings>, Vec<&ItemFindings>) = items.iter().partition(|i| !i.findings.is_empty());
    h.raw("<h2>Quelle (source) ").text(id).raw("</h2>");
    h.raw("<p class=\"hint\">Elemente (items): ").show(items.len());
    h.raw(", mit Befunden (with findings): ").show(with.len()).raw("</p>");
    if items.is_empty() {
        h.raw("<p class=\"empty\">Noch keine Elemente dieser Quelle im Ledger (no items of this source yet).</p>");
        return;
    }
    for item in with {
        item_section(h, item);
    }
    if !clean.is_empty() {
        h.raw("<p class=\"hint\">Ohne Befund (no findings): ");
        for (i, item) in clean.iter().enumerate() {
            if i > 0 {
                h.raw(", ");
            }
            h.link(&item_href(&item.item), &item.item);
        }
        h.raw("</p>");
    }
}

fn item_section(h: &mut Html, item: &ItemFindings) {
    h.raw("<h3>").link(&item_href(&item.item), &item.item).raw("<span class=\"statuses\">");
    for (target, status) in &item.statuses {
        h.text(target_label(target)).raw(": ").status(Kind::Item, status).raw(" ");
    }
    h.raw("</span></h3>");
    h.raw("<table class=\"wide\">").head(&[
        "Kategorie (category)",
        "Ziele (targets)",
        "Anzahl (count)",
        "Meldung (message)",
    ]);
    h.raw("<tbody>");
    for finding in &item.findings {
        h.raw("<tr><td>").text(finding.category.label());
        if let Some(cause) = finding.cause {
            h.raw("<br><span class=\"none\">Grund (reason): ").text(cause.label()).raw("</span>");
        }
        h.raw("</td>");
        let targets: Vec<&str> = finding.targets.iter().map(|t| target_label(t)).collect();
        h.td(&targets.join(", "));
        h.td_num(finding.occurrences as i64);
        h.raw("<td class=\"reason\">").text(&finding.message).raw("</td></tr>");
    }
    h.raw("</tbody></table>");
}
