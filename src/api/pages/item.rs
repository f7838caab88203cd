//! An item's page (`/items/{key}`): per target what the target holds from us, then the item's migration log.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::diff::diff;
use super::{
    DEFAULT_EVENTS, PageQuery, PageResult, bad_query, clamp, diff_href, event_table, failed, not_found_page,
    quarantine_href, run_href, target_label,
};
use crate::api::auth::ViewerPage;
use crate::api::html::{Html, Kind, Nav, page};
use crate::api::{ApiState, key_segment, when};
use chrono_tz::Tz;

use crate::domain::ItemKey;
use crate::store::ledger::LedgerRow;
use crate::store::log::EventFilter;

/// `/items/{key}` and `/items/{key}/diff`; the key may come percent-encoded or with its `/`.
/// An item whose own key ends in `/diff` wins over the diff of its prefix.
pub(crate) async fn item_or_diff(
    _: ViewerPage,
    State(state): State<ApiState>,
    Path(path): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    if let Some(key) = path.strip_suffix("/diff")
        && ItemKey::parse(key).is_some()
        && state.store.item(&path).await.map_err(failed)?.is_empty()
    {
        return diff(&state, key).await;
    }
    item(&state, &path, clamp(query.limit, DEFAULT_EVENTS)).await
}

async fn item(state: &ApiState, key: &str, limit: i64) -> PageResult {
    let rows = state.store.item(key).await.map_err(failed)?;
    let events = state
        .store
        .events(&EventFilter { item_key: Some(key.to_owned()), limit, ..Default::default() })
        .await
        .map_err(failed)?;
    if rows.is_empty() && events.is_empty() {
        return Err(not_found_page(&format!("Das Element {key} ist nicht bekannt (no such item).")));
    }
    let tz = state.timezone();
    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Ein Element ist ein Datensatz einer Quelle. Je Ziel zeigt die Tabelle, was das Ziel \
         von uns hält (Hashes, Pfad, Status) und den letzten Fehler; darunter steht das Migrationsprotokoll des \
         Elements. (One record of a source: per target what the target holds from us and the last error, then the \
         item's migration log.)</p>",
    );
    if let Some(first) = rows.first() {
        h.raw("<dl class=\"facts\"><dt>Quelle (source)</dt><dd>")
            .link(&quarantine_href(&first.source_id), &first.source_id);
        h.raw("</dd><dt>Herkunft (origin)</dt><dd><code>").text(&first.origin).raw("</code></dd>");
        h.raw("<dt>Zuerst gesehen (first seen)</dt><dd>").text(&when(&first.first_seen_at, tz)).raw("</dd></dl>");
    }
    h.raw("<h2>Ziele (Targets)</h2>");
    if rows.is_empty() {
        h.raw("<p class=\"empty\">Keine Zeile im Ledger (not in the ledger), nur Protokolleinträge.</p>");
    } else {
        targets_table(&mut h, &rows, tz);
        for row in rows.iter().filter(|r| r.skip_reason.is_some()) {
            h.raw("<p class=\"hint\"><strong>Übersprungen (skipped)</strong> bei ").text(&row.target).raw(": ");
            h.maybe(row.skip_reason.as_deref()).raw(" – bis sich der Inhalt ändert (until its content changes).</p>");
        }
        h.raw("<p>")
            .link(&diff_href(key), "Änderungen der letzten zwei Lieferungen ansehen (diff of the last two deliveries)");
        h.raw("</p><p class=\"hint\">Erneut versuchen (retry): <code>portal-bridge retry ").text(key);
        h.raw("</code> oder <code>POST /api/items/").text(&key_segment(key)).raw("/retry</code>.");
        if rows.iter().any(|r| r.status == "conflict") {
            h.raw(" Konflikt lösen (settle the conflict): <code>portal-bridge resolve ")
                .text(key)
                .raw(" --overwrite</code>.");
        }
        h.raw("</p>");
    }
    h.raw("<h2>Migrationsprotokoll (Migration log)</h2>");
    if events.len() as i64 >= limit {
        h.raw("<p class=\"hint\">Die letzten ").show(limit).raw(
            " Ereignisse; mehr mit <code>?limit=</code> (the last events only; add <code>?limit=</code> for more).</p>",
        );
    }
    event_table(&mut h, &events, true, tz);
    Ok(page(StatusCode::OK, &format!("Element (Item) {key}"), Nav::None, h))
}

/// The item's ledger rows side by side: one column per target, one row per field.
fn targets_table(h: &mut Html, rows: &[LedgerRow], tz: Tz) {
    type Field = fn(&mut Html, &LedgerRow, Tz);
    let fields: [(&'static str, Field); 13] = [
        ("Status", |h, r, _| {
            h.status(Kind::Item, &r.status);
        }),
        ("Letzter Fehler (last error)", |h, r, _| {
            h.maybe(r.last_error.as_deref());
        }),
        ("Versuche (attempts)", |h, r, _| {
            h.show(r.attempts);
        }),
        ("Inhalt (content hash)", |h, r, _| {
            h.maybe_code(r.content_hash.as_deref());
        }),
        ("Mapping", |h, r, _| {
            h.maybe(r.mapping.as_deref());
        }),
        ("Mapping-Version (mapping version)", |h, r, _| {
            h.maybe_code(r.mapping_version.as_deref());
        }),
        ("Dokument (output hash)", |h, r, _| {
            h.maybe_code(r.output_hash.as_deref());
        }),
        ("Ausgabepfad (output path)", |h, r, _| {
            h.maybe_code(r.output_path.as_deref());
        }),
        ("Version beim Ziel (target version)", |h, r, _| {
            h.maybe_code(r.target_version.as_deref());
        }),
        ("Geliefert (delivered)", |h, r, tz| {
            h.maybe(r.delivered_at.as_deref().map(|t| when(t, tz)).as_deref());
        }),
        ("Aktualisiert (updated)", |h, r, tz| {
            h.text(&when(&r.updated_at, tz));
        }),
        ("Letzter Lauf (last run)", |h, r, _| match r.last_run_id {
            Some(id) => {
                h.link(&run_href(id), &format!("#{id}"));
            }
            None => {
                h.raw("<span class=\"none\">–</span>");
            }
        }),
        ("Nachnutzungen (adoptions, ARS)", |h, r, _| {
            h.maybe(r.adoptions.as_deref());
        }),
    ];
    h.raw("<table class=\"wide fields\"><thead><tr><th scope=\"col\">Ziel <span class=\"en\">(target)</span></th>");
    for row in rows {
        h.raw("<th scope=\"col\">").text(target_label(&row.target)).raw("</th>");
    }
    h.raw("</tr></thead><tbody>");
    for (label, field) in fields {
        h.raw("<tr>").row_head(label);
        for row in rows {
            h.raw("<td class=\"reason\">");
            field(h, row, tz);
            h.raw("</td>");
        }
        h.raw("</tr>");
    }
    h.raw("</tbody></table>");
}
