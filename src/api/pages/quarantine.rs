//! The quarantine page (`/quarantine?source=`): every item that needs a person, with the reason.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use super::{
    MAX_ROWS, PROBLEMS, PageQuery, PageResult, bad_query, clamp, failed, key_cell, quarantine_href, run_href,
    target_label,
};
use crate::api::auth::ViewerPage;
use crate::api::html::{Html, Kind, Nav, page};
use crate::api::{ApiState, when};

/// `/quarantine?source=`: everything that needs a person, with the reason.
pub(crate) async fn quarantine(
    _: ViewerPage,
    State(state): State<ApiState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    let source = query.source.filter(|s| !s.is_empty());
    let limit = clamp(query.limit, MAX_ROWS);
    let mut rows = Vec::new();
    for status in PROBLEMS {
        rows.extend(state.store.items(Some(status.as_str()), source.as_deref(), limit).await.map_err(failed)?);
    }
    rows.sort_by(|a, b| (&a.item_key, &a.target).cmp(&(&b.item_key, &b.target)));
    let mut per_source: BTreeMap<String, i64> = BTreeMap::new();
    for c in state.store.status_counts().await.map_err(failed)? {
        if PROBLEMS.iter().any(|p| p.as_str() == c.status) {
            *per_source.entry(c.source_id).or_default() += c.count;
        }
    }

    let tz = state.timezone();
    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Was eine Bearbeiterin oder ein Bearbeiter ansehen sollte. <strong>quarantined</strong>: \
         Eingabe, Mapping oder Schema passen nicht – bleibt liegen, bis Quelldatei oder Mapping korrigiert sind. \
         <strong>failed</strong>: vorübergehender Fehler, der nächste Lauf versucht es erneut. \
         <strong>conflict</strong>: das Portal hat seine Kopie seit unserer letzten Lieferung geändert – wird erst \
         nach <code>portal-bridge resolve KEY --overwrite</code> überschrieben. (Items that need a person: \
         quarantined = bad input, mapping or schema, waits for a fix; failed = transient, retried next run; \
         conflict = the portal's copy changed, not overwritten until resolved.)</p>",
    );
    h.raw("<nav class=\"filter\">Quelle (source): ");
    if source.is_none() {
        h.raw("<strong>alle (all)</strong>");
    } else {
        h.link("/quarantine", "alle (all)");
    }
    for (id, n) in &per_source {
        if source.as_deref() == Some(id.as_str()) {
            h.raw("<strong>").text(id).raw(" (").show(n).raw(")</strong>");
        } else {
            h.link(&quarantine_href(id), &format!("{id} ({n})"));
        }
        h.raw(" ");
    }
    h.raw("</nav>");
    if rows.is_empty() {
        h.raw("<p class=\"empty\">Nichts zu prüfen (nothing to review)");
        if let Some(source) = &source {
            h.raw(" bei ").text(source);
        }
        h.raw(".</p>");
    } else {
        h.raw("<table class=\"wide\">").head(&[
            "Element (item)",
            "Ziel (target)",
            "Status",
            "Grund (reason)",
            "Versuche (attempts)",
            "Seit (since)",
            "Letzter Lauf (last run)",
        ]);
        h.raw("<tbody>");
        for row in &rows {
            h.raw("<tr>");
            key_cell(&mut h, Some(&row.item_key), "");
            h.td(target_label(&row.target));
            h.cell(|h| {
                h.status(Kind::Item, &row.status);
            });
            h.raw("<td class=\"reason\">").maybe(row.last_error.as_deref()).raw("</td>");
            // Since when the item is in this status (not its last update: each run that finds it
            // broken again updates it).
            h.td_num(row.attempts).td(&when(row.status_since.as_deref().unwrap_or(&row.updated_at), tz));
            h.cell(|h| match row.last_run_id {
                Some(id) => {
                    h.link(&run_href(id), &format!("#{id}"));
                }
                None => {
                    h.raw("<span class=\"none\">–</span>");
                }
            });
            h.raw("</tr>");
        }
        h.raw("</tbody></table>");
    }
    Ok(page(StatusCode::OK, "Quarantäne (Quarantine)", Nav::Quarantine, h))
}
