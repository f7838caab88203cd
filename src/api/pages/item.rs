//! An item's page (`/items/{key}`): per target what the target holds from us, then the item's trail (its
//! migration log with who and why) and whether the audit chain verifies.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::diff::diff;
use super::{
    DEFAULT_EVENTS, PageQuery, PageResult, bad_query, clamp, diff_href, failed, not_found_page, quarantine_href,
    run_href, target_label,
};
use crate::api::auth::ViewerPage;
use crate::api::html::{Html, Kind, Nav, page};
use crate::api::{ApiState, key_segment, when};
use chrono_tz::Tz;

use crate::domain::{ItemKey, Stage};
use crate::store::audit::ChainReport;
use crate::store::ledger::LedgerRow;
use crate::store::log::{EventFilter, EventRow};

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
    let chain = state.chain.report(&state.store).await.map_err(failed)?;
    chain_line(&mut h, &chain);
    if events.len() as i64 >= limit {
        h.raw("<p class=\"hint\">Die letzten ").show(limit).raw(
            " Ereignisse; mehr mit <code>?limit=</code> (the last events only; add <code>?limit=</code> for more).</p>",
        );
    }
    trail_table(&mut h, &events, tz);
    Ok(page(StatusCode::OK, &format!("Element (Item) {key}"), Nav::None, h))
}

/// Whether the audit chain verifies (the whole chain, as [`crate::api::ChainCache`] last found it):
/// its length and head, or the first break.
fn chain_line(h: &mut Html, report: &ChainReport) {
    match (&report.broken, &report.head) {
        (Some(broken), _) => {
            h.raw(
                "<p class=\"chain bad\"><strong>Prüfkette gebrochen / chain broken</strong> bei Ereignis (at event) ",
            )
            .show(broken.id)
            .raw(" (")
            .text(broken.kind.as_str())
            .raw("): ")
            .text(&broken.detail)
            .raw(". Nach ")
            .show(report.entries)
            .raw(" intakten Einträgen (after ")
            .show(report.entries)
            .raw(" entries that verify); <code>portal-bridge audit verify</code> prüft erneut (verifies again).</p>");
        }
        (None, Some(head)) => {
            h.raw("<p class=\"chain good\">Prüfkette intakt / chain verifies (")
                .show(report.entries)
                .raw(" entries, head #")
                .show(head.seq)
                .raw(" <code>")
                .text(&head.hash)
                .raw("</code>)");
            if report.before_chain > 0 {
                h.raw("; ")
                    .show(report.before_chain)
                    .raw(" ältere Einträge ohne Kette (older entries outside the chain)");
            }
            h.raw(".</p>");
        }
        (None, None) => {
            h.raw("<p class=\"chain\">Noch keine Prüfkette (no audit chain yet).</p>");
        }
    }
}

/// The item's events with who (actor) and why (reason); an operator's actions are marked.
fn trail_table(h: &mut Html, events: &[EventRow], tz: Tz) {
    if events.is_empty() {
        h.raw("<p class=\"empty\">Keine Ereignisse (no events).</p>");
        return;
    }
    h.raw("<table class=\"wide\">");
    h.head(&[
        "Zeit (time)",
        "Stufe (level)",
        "Phase (stage)",
        "Lauf (run)",
        "Ziel (target)",
        "Meldung (message)",
        "Wer (who)",
        "Warum (why)",
    ]);
    h.raw("<tbody>");
    for e in events {
        let operator = e.stage == Stage::Operator.as_str();
        h.raw(if operator { "<tr class=\"operator\">" } else { "<tr>" }).td(&when(&e.at, tz));
        h.cell(|h| {
            h.status(Kind::Level, &e.level);
        });
        h.cell(|h| {
            h.text(&e.stage);
            if operator {
                h.raw(" <strong>Bedienaktion (operator action)</strong>");
            }
        });
        h.cell(|h| match e.run_id {
            Some(id) => {
                h.link(&run_href(id), &format!("#{id}"));
            }
            None => {
                h.raw("<span class=\"none\">–</span>");
            }
        });
        h.cell(|h| {
            h.maybe(e.target.as_deref().map(target_label));
        });
        h.raw("<td class=\"reason\">").text(&e.message).raw("</td>");
        h.cell(|h| {
            h.maybe(e.actor.as_deref());
        });
        h.raw("<td class=\"reason\">");
        h.maybe(e.reason.as_deref()).raw("</td></tr>");
    }
    h.raw("</tbody></table>");
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
