//! The runs page (`/` and `/runs`: sources, recent runs, items per status) and a run's page (`/runs/{id}`).

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono_tz::Tz;

use super::{
    DEFAULT_EVENTS, DEFAULT_RUNS, PROBLEMS, PageQuery, PageResult, bad_query, clamp, duration, event_table, failed,
    key_cell, not_found_page, quarantine_href, run_href, target_label,
};
use crate::api::auth::ViewerPage;
use crate::api::held;
use crate::api::html::{Html, Kind, Nav, page};
use crate::api::{ApiState, when};
use crate::domain::{ItemStatus, Level};
use crate::pipeline::Warned;
use crate::store::log::EventFilter;
use crate::store::runs::RunRow;

/// `/` and `/runs`: the sources (as the daemon sees them), the recent runs, and the items per status.
pub(crate) async fn runs(
    _: ViewerPage,
    State(state): State<ApiState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    let runs = state.store.runs(clamp(query.limit, DEFAULT_RUNS)).await.map_err(failed)?;
    let counts = state.store.status_counts().await.map_err(failed)?;
    let sources = state.sources_now().await.map_err(failed)?;
    let tz = state.timezone();

    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Jeder Lauf liest die Datensätze seiner Quellen, bildet sie auf die Importformate ab, \
         prüft sie und liefert sie aus. Ein Lauf mit Status <em>partial</em> hat einzelne Elemente nicht \
         durchgebracht: die Laufnummer führt zu den Gründen. (Each run reads, maps, validates and delivers the \
         records of its sources; a <em>partial</em> run left some items behind — open it to see why.)</p>",
    );
    zone_hint(&mut h, tz);

    if !sources.is_empty() {
        h.raw("<h2>Quellen (Sources)</h2><table>").head(&[
            "Quelle (source)",
            "Zustand (state)",
            "Nächster Lauf (next run)",
            "Letzter Lauf (last run, this source's result)",
            "Letzter Erfolg (last success)",
            "Fehler (error)",
        ]);
        h.raw("<tbody>");
        for (id, s) in &sources {
            h.raw("<tr>").cell(|h| {
                h.link(&quarantine_href(id), id);
            });
            h.cell(|h| {
                if s.running {
                    h.status(Kind::Run, "running");
                } else {
                    h.raw("<span class=\"none\">bereit (idle)</span>");
                }
            });
            h.cell(|h| {
                h.maybe(s.next_run_at.as_deref().map(|t| when(t, tz)).as_deref());
            });
            h.cell(|h| {
                if let Some(id) = s.last_run_id {
                    h.link(&run_href(id), &format!("#{id}")).raw(" ");
                }
                if let Some(status) = &s.last_status {
                    h.status(Kind::Run, status);
                }
            });
            h.cell(|h| {
                h.maybe(s.last_success_at.as_deref().map(|t| when(t, tz)).as_deref());
            });
            h.raw("<td class=\"reason\">").maybe(s.last_error.as_deref()).raw("</td></tr>");
        }
        h.raw("</tbody></table>");
    }

    h.raw("<h2>Letzte Läufe (Recent runs)</h2>");
    if runs.is_empty() {
        h.raw("<p class=\"empty\">Noch keine Läufe (no runs yet).</p>");
    } else {
        h.raw(
            "<p class=\"hint\">Zahlen je Element und Ziel, wie bei <code>migrate --json</code>; eine Meldung des Laufs \
             steht in der Zeile darunter. (Counts per item and target; a run's message is shown below it.)</p>",
        );
        h.raw("<table class=\"wide runs\">").head(&[
            "Lauf (run)",
            "Status",
            "Auslöser (trigger)",
            "Quellen (sources)",
            "Beginn (started)",
            "Dauer (duration)",
            "new",
            "updated",
            "unchanged",
            "failed",
            "quarantined",
            "withdrawn",
            "Warnungen (warned)",
        ]);
        h.raw("<tbody>");
        for run in &runs {
            run_row(&mut h, run, tz);
        }
        h.raw("</tbody></table>");
    }
    h.raw("<h2>Bestand (Items per target)</h2>");
    h.raw(
        "<p class=\"hint\">Elemente je Quelle und Status, je Ziel gezählt. Zahlen bei <em>failed</em>, \
         <em>quarantined</em> und <em>conflict</em> führen zur Quarantäneliste der Quelle. (Items per source \
         and status, counted per target.)</p>",
    );
    if counts.is_empty() {
        h.raw("<p class=\"empty\">Noch keine Elemente im Ledger (no items yet): nach dem ersten Lauf erscheinen sie hier.</p>");
    } else {
        let mut by_source: BTreeMap<&str, HashMap<&str, i64>> = BTreeMap::new();
        for c in &counts {
            *by_source.entry(&c.source_id).or_default().entry(&c.status).or_default() += c.count;
        }
        h.raw("<table>").head(&[
            "Quelle (source)",
            "new",
            "delivered",
            "unchanged",
            "failed",
            "quarantined",
            "conflict",
            "withdrawn",
        ]);
        h.raw("<tbody>");
        for (source, statuses) in &by_source {
            h.raw("<tr>").td(source);
            for status in ItemStatus::ALL {
                let n = statuses.get(status.as_str()).copied().unwrap_or(0);
                if n > 0 && PROBLEMS.contains(status) {
                    h.raw("<td class=\"num\">").link(&quarantine_href(source), &n.to_string()).raw("</td>");
                } else {
                    h.td_num(n);
                }
            }
            h.raw("</tr>");
        }
        h.raw("</tbody></table>");
    }

    Ok(page(StatusCode::OK, "Läufe (Runs)", Nav::Runs, h))
}

/// Says which zone the page's times are in.
fn zone_hint(h: &mut Html, tz: Tz) {
    h.raw("<p class=\"hint\">Zeiten in ").text(tz.name()).raw(" (times in the configured time zone).</p>");
}

fn run_row(h: &mut Html, run: &RunRow, tz: Tz) {
    h.raw("<tr>").cell(|h| {
        h.link(&run_href(run.id), &format!("#{}", run.id));
    });
    h.cell(|h| {
        h.status(Kind::Run, &run.status);
    });
    h.td(&run.trigger);
    // Up to three sources by name; the whole list is the tooltip and on the run's page.
    let sources: Vec<&str> = run.sources.split(',').filter(|s| !s.is_empty()).collect();
    let shown = match sources.len() {
        0..=3 => sources.join(", "),
        n => format!("{}, … (+{})", sources[..2].join(", "), n - 2),
    };
    h.raw("<td class=\"sources\" title=\"").text(&sources.join(", ")).raw("\">").text(&shown).raw("</td>");
    h.tag("<td class=\"when\">", "</td>", &when(&run.started_at, tz));
    h.cell(|h| {
        h.maybe(duration(&run.started_at, run.finished_at.as_deref()).as_deref());
    });
    for n in counts(run) {
        h.td_num(n);
    }
    h.raw("</tr>");
    if let Some(message) = run.message.as_deref().filter(|m| !m.is_empty()) {
        h.raw("<tr class=\"message\"><td></td><td colspan=\"12\" class=\"reason\">Meldung (message): ");
        h.text(message).raw("</td></tr>");
    }
}

/// `/runs/{id}`: a run's problems with their reasons, and its event log.
pub(crate) async fn run(
    _: ViewerPage,
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    let Some(run) = (match id.parse::<i64>() {
        Ok(id) => state.store.run(id).await.map_err(failed)?,
        Err(_) => None,
    }) else {
        return Err(not_found_page(&format!("Es gibt keinen Lauf {id} (no such run).")));
    };
    let errors = state
        .store
        .events(&EventFilter { run_id: Some(run.id), level: Some(Level::Error), limit: 0, ..Default::default() })
        .await
        .map_err(failed)?;
    let limit = clamp(query.limit, DEFAULT_EVENTS);
    let events =
        state.store.events(&EventFilter { run_id: Some(run.id), limit, ..Default::default() }).await.map_err(failed)?;
    // What the problem items' status is now (they may have gone through since).
    let mut open: HashMap<(String, String), String> = HashMap::new();
    if !errors.is_empty() {
        for status in PROBLEMS {
            for row in state.store.items(Some(status.as_str()), None, i64::MAX).await.map_err(failed)? {
                open.insert((row.item_key, row.target), row.status);
            }
        }
    }

    let warned = crate::api::warned(&state.store, run.id).await.map_err(failed)?;
    let tz = state.timezone();
    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Ein Lauf der Pipeline: oben was nicht durchging und warum, darunter sein \
         vollständiges Protokoll. (One pipeline run: first what did not go through and why, then its log.)</p>",
    );
    h.raw("<dl class=\"facts\"><dt>Status</dt><dd>").status(Kind::Run, &run.status);
    h.raw("</dd><dt>Auslöser (trigger)</dt><dd>").text(&run.trigger);
    h.raw("</dd><dt>Quellen (sources)</dt><dd>").text(&run.sources.replace(',', ", "));
    h.raw("</dd><dt>Beginn (started)</dt><dd>").text(&when(&run.started_at, tz));
    h.raw("</dd><dt>Ende (finished)</dt><dd>").maybe(run.finished_at.as_deref().map(|t| when(t, tz)).as_deref());
    h.raw("</dd><dt>Dauer (duration)</dt><dd>").maybe(duration(&run.started_at, run.finished_at.as_deref()).as_deref());
    h.raw("</dd><dt>Meldung (message)</dt><dd>").maybe(run.message.as_deref()).raw("</dd></dl>");

    h.raw("<table>").head(&[
        "neu (new)",
        "aktualisiert (updated)",
        "unverändert (unchanged)",
        "fehlgeschlagen (failed)",
        "Quarantäne (quarantined)",
        "zurückgezogen (withdrawn)",
        "mit Warnungen (warned)",
    ]);
    h.raw("<tbody><tr>");
    for n in counts(&run) {
        h.td_num(n);
    }
    h.raw("</tr></tbody></table>");

    h.raw("<h2>Probleme (Problems)</h2>");
    if errors.is_empty() {
        h.raw("<p class=\"empty\">Keine Fehler in diesem Lauf (no errors in this run).</p>");
    } else {
        h.raw(
            "<p class=\"hint\">Elemente, die in diesem Lauf fehlschlugen, in Quarantäne gingen oder einen Konflikt \
             hatten, mit dem Grund aus dem Protokoll. <em>Status jetzt</em> zeigt, ob das Problem noch offen ist. \
             (Items that failed, were quarantined or hit a conflict in this run, with the reason; <em>now</em> \
             tells whether the problem is still open.)</p>",
        );
        h.raw("<table class=\"wide\">").head(&[
            "Element (item)",
            "Ziel (target)",
            "Phase (stage)",
            "Grund (reason)",
            "Status jetzt (now)",
        ]);
        h.raw("<tbody>");
        for e in &errors {
            h.raw("<tr>");
            key_cell(&mut h, e.item_key.as_deref(), "<span class=\"none\">ganze Quelle (whole source)</span>");
            h.cell(|h| {
                h.maybe(e.target.as_deref().map(target_label));
            });
            h.td(&e.stage);
            h.raw("<td class=\"reason\">").text(&e.message).raw("</td>");
            h.cell(|h| {
                let now =
                    e.item_key.as_ref().zip(e.target.as_ref()).and_then(|(k, t)| open.get(&(k.clone(), t.clone())));
                match (now, &e.item_key) {
                    (Some(status), _) => {
                        h.status(Kind::Item, status);
                    }
                    (None, Some(_)) => {
                        h.raw("<span class=\"none\">erledigt (no longer open)</span>");
                    }
                    (None, None) => {
                        h.raw("<span class=\"none\">–</span>");
                    }
                }
            });
            h.raw("</tr>");
        }
        h.raw("</tbody></table>");
    }

    warned_table(&mut h, &warned);

    held::explain(&mut h, &held::held_sources(&run.sources, &errors));

    h.raw("<h2>Protokoll (Event log)</h2>");
    if events.len() as i64 >= limit {
        h.raw("<p class=\"hint\">Die letzten ").show(limit).raw(
            " Ereignisse; mehr mit <code>?limit=</code> (the last events only; add <code>?limit=</code> for more).</p>",
        );
    }
    zone_hint(&mut h, tz);
    event_table(&mut h, &events, false, tz);
    Ok(page(StatusCode::OK, &format!("Lauf {} (Run {})", run.id, run.id), Nav::Runs, h))
}

/// The run's documents that went through with warnings, each with its warnings (part of the run's
/// problems: they reached the target, but not as the source meant them).
fn warned_table(h: &mut Html, warned: &[Warned]) {
    if warned.is_empty() {
        return;
    }
    h.raw("<h3>Mit Warnungen geliefert (delivered with warnings)</h3>");
    h.raw(
        "<p class=\"hint\">Diese Dokumente sind beim Ziel angekommen, aber nicht ganz so, wie die Quelle sie \
         meint: etwa ein nicht unterstütztes Element als Hinweis-Element. (These documents reached their target, \
         but something could not be mapped as the source meant it.)</p>",
    );
    h.raw("<table class=\"wide\">").head(&["Element (item)", "Ziel (target)", "Warnungen (warnings)"]);
    h.raw("<tbody>");
    for w in warned {
        h.raw("<tr>");
        key_cell(h, Some(&w.item_key), "");
        h.td(target_label(&w.target));
        h.raw("<td class=\"reason\"><ul>");
        for warning in &w.warnings {
            h.tag("<li>", "</li>", warning);
        }
        h.raw("</ul></td></tr>");
    }
    h.raw("</tbody></table>");
}

/// A run's counts in the order of the tables' columns: new, updated, unchanged, failed,
/// quarantined, withdrawn, with warnings.
fn counts(run: &crate::store::runs::RunRow) -> [i64; 7] {
    [
        run.new_count,
        run.updated_count,
        run.unchanged_count,
        run.failed_count,
        run.quarantined_count,
        run.withdrawn_count,
        run.warned_count,
    ]
}
