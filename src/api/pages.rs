//! The review pages: runs, one run, one item, the quarantine list and an item's diff, as server-rendered HTML without scripts.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use similar::{ChangeTag, TextDiff};

use super::auth::ViewerPage;
use super::html::{Html, Kind, Nav, page};
use super::{ApiState, key_segment, query_value, store_failure, when};
use crate::domain::{ItemKey, ItemStatus, Level};
use crate::pipeline::ANY_TARGET;
use crate::store::StoreError;
use crate::store::documents::KEPT_VERSIONS;
use crate::store::ledger::LedgerRow;
use crate::store::log::{EventFilter, EventRow};
use crate::store::runs::RunRow;

pub(super) type PageResult = Result<Response, Response>;

/// Statuses that need a person's attention, in the order the quarantine page lists them.
const PROBLEMS: [ItemStatus; 3] = [ItemStatus::Quarantined, ItemStatus::Conflict, ItemStatus::Failed];

const DEFAULT_RUNS: i64 = 50;
const DEFAULT_EVENTS: i64 = 500;
const MAX_ROWS: i64 = 10_000;

/// A page that says what went wrong.
pub(crate) fn error_page(status: StatusCode, title: &str, text: &str) -> Response {
    let mut h = Html::new();
    h.raw("<p class=\"intro\">").text(text).raw("</p>");
    h.raw("<p class=\"hint\"><a href=\"/runs\">Zur Übersicht der Läufe (back to the runs)</a></p>");
    page(status, title, Nav::None, h)
}

pub(crate) fn not_found_page(text: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, "Nicht gefunden (Not found)", text)
}

pub(super) fn failed(e: StoreError) -> Response {
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "Datenbankfehler (Database error)", &store_failure(&e))
}

pub(super) fn bad_query(e: QueryRejection) -> Response {
    error_page(StatusCode::BAD_REQUEST, "Ungültige Anfrage (Bad request)", &e.body_text())
}

pub(super) fn item_href(key: &str) -> String {
    format!("/items/{}", key_segment(key))
}

fn diff_href(key: &str) -> String {
    format!("/items/{}/diff", key_segment(key))
}

fn run_href(id: i64) -> String {
    format!("/runs/{id}")
}

fn quarantine_href(source: &str) -> String {
    format!("/quarantine?source={}", query_value(source))
}

/// The ledger's target `*` (a file that yielded no record) in words.
pub(super) fn target_label(target: &str) -> &str {
    if target == ANY_TARGET { "* (Datei, file)" } else { target }
}

/// A cell linking an item key (long keys wrap), or `none` markup.
fn key_cell(h: &mut Html, key: Option<&str>, none: &'static str) {
    h.raw("<td class=\"key\">");
    match key {
        Some(key) => h.link(&item_href(key), key),
        None => h.raw(none),
    };
    h.raw("</td>");
}

fn clamp(limit: Option<i64>, default: i64) -> i64 {
    limit.unwrap_or(default).clamp(1, MAX_ROWS)
}

/// `1.2 s`, `42 s`, `3 min 5 s`, `2 h 10 min`.
fn duration(start: &str, end: Option<&str>) -> Option<String> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end?).ok()?;
    let ms = (end - start).num_milliseconds().max(0);
    Some(match ms {
        0..1_000 => format!("{:.1} s", ms as f64 / 1000.0),
        1_000..60_000 => format!("{} s", ms / 1000),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {} min", ms / 3_600_000, ms / 60_000 % 60),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    limit: Option<i64>,
    source: Option<String>,
}

/// `/` and `/runs`: the sources (as the daemon sees them), the recent runs, and the items per status.
pub(crate) async fn runs(
    _: ViewerPage,
    State(state): State<ApiState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(query) = query.map_err(bad_query)?;
    let runs = state.store.runs(clamp(query.limit, DEFAULT_RUNS)).await.map_err(failed)?;
    let counts = state.store.status_counts().await.map_err(failed)?;
    let sources = state.source_states();

    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Jeder Lauf liest die Datensätze seiner Quellen, bildet sie auf die Importformate ab, \
         prüft sie und liefert sie aus. Ein Lauf mit Status <em>partial</em> hat einzelne Elemente nicht \
         durchgebracht: die Laufnummer führt zu den Gründen. (Each run reads, maps, validates and delivers the \
         records of its sources; a <em>partial</em> run left some items behind — open it to see why.)</p>",
    );

    if !sources.is_empty() {
        h.raw("<h2>Quellen (Sources)</h2><table>").head(&[
            "Quelle (source)",
            "Zustand (state)",
            "Nächster Lauf (next run)",
            "Letzter Lauf (last run)",
            "Letzter Erfolg (last success)",
            "Fehler beim Lesen (fetch error)",
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
                h.maybe(s.next_run_at.as_deref().map(when).as_deref());
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
                h.maybe(s.last_success_at.as_deref().map(when).as_deref());
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
        ]);
        h.raw("<tbody>");
        for run in &runs {
            run_row(&mut h, run);
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

fn run_row(h: &mut Html, run: &RunRow) {
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
    h.tag("<td class=\"when\">", "</td>", &when(&run.started_at));
    h.cell(|h| {
        h.maybe(duration(&run.started_at, run.finished_at.as_deref()).as_deref());
    });
    for n in [
        run.new_count,
        run.updated_count,
        run.unchanged_count,
        run.failed_count,
        run.quarantined_count,
        run.withdrawn_count,
    ] {
        h.td_num(n);
    }
    h.raw("</tr>");
    if let Some(message) = run.message.as_deref().filter(|m| !m.is_empty()) {
        h.raw("<tr class=\"message\"><td></td><td colspan=\"11\" class=\"reason\">Meldung (message): ");
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

    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Ein Lauf der Pipeline: oben was nicht durchging und warum, darunter sein \
         vollständiges Protokoll. (One pipeline run: first what did not go through and why, then its log.)</p>",
    );
    h.raw("<dl class=\"facts\"><dt>Status</dt><dd>").status(Kind::Run, &run.status);
    h.raw("</dd><dt>Auslöser (trigger)</dt><dd>").text(&run.trigger);
    h.raw("</dd><dt>Quellen (sources)</dt><dd>").text(&run.sources.replace(',', ", "));
    h.raw("</dd><dt>Beginn (started)</dt><dd>").text(&when(&run.started_at));
    h.raw("</dd><dt>Ende (finished)</dt><dd>").maybe(run.finished_at.as_deref().map(when).as_deref());
    h.raw("</dd><dt>Dauer (duration)</dt><dd>").maybe(duration(&run.started_at, run.finished_at.as_deref()).as_deref());
    h.raw("</dd><dt>Meldung (message)</dt><dd>").maybe(run.message.as_deref()).raw("</dd></dl>");

    h.raw("<table>").head(&[
        "neu (new)",
        "aktualisiert (updated)",
        "unverändert (unchanged)",
        "fehlgeschlagen (failed)",
        "Quarantäne (quarantined)",
        "zurückgezogen (withdrawn)",
    ]);
    h.raw("<tbody><tr>");
    for n in [
        run.new_count,
        run.updated_count,
        run.unchanged_count,
        run.failed_count,
        run.quarantined_count,
        run.withdrawn_count,
    ] {
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

    super::held::explain(&mut h, &super::held::held_sources(&run.sources, &errors));

    h.raw("<h2>Protokoll (Event log)</h2>");
    if events.len() as i64 >= limit {
        h.raw("<p class=\"hint\">Die letzten ").show(limit).raw(
            " Ereignisse; mehr mit <code>?limit=</code> (the last events only; add <code>?limit=</code> for more).</p>",
        );
    }
    event_table(&mut h, &events, false);
    Ok(page(StatusCode::OK, &format!("Lauf {} (Run {})", run.id, run.id), Nav::Runs, h))
}

/// The migration log as a table; `with_run` adds the run column (for an item's log).
fn event_table(h: &mut Html, events: &[EventRow], with_run: bool) {
    if events.is_empty() {
        h.raw("<p class=\"empty\">Keine Ereignisse (no events).</p>");
        return;
    }
    h.raw("<table class=\"wide\">");
    if with_run {
        h.head(&["Zeit (time)", "Stufe (level)", "Phase (stage)", "Lauf (run)", "Ziel (target)", "Meldung (message)"]);
    } else {
        h.head(&[
            "Zeit (time)",
            "Stufe (level)",
            "Phase (stage)",
            "Element (item)",
            "Ziel (target)",
            "Meldung (message)",
        ]);
    }
    h.raw("<tbody>");
    for e in events {
        h.raw("<tr>").td(&when(&e.at));
        h.cell(|h| {
            h.status(Kind::Level, &e.level);
        });
        h.td(&e.stage);
        if with_run {
            h.cell(|h| match e.run_id {
                Some(id) => {
                    h.link(&run_href(id), &format!("#{id}"));
                }
                None => {
                    h.raw("<span class=\"none\">–</span>");
                }
            });
        } else {
            key_cell(h, e.item_key.as_deref(), "<span class=\"none\">–</span>");
        }
        h.cell(|h| {
            h.maybe(e.target.as_deref().map(target_label));
        });
        h.raw("<td class=\"reason\">").text(&e.message).raw("</td></tr>");
    }
    h.raw("</tbody></table>");
}

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
        h.raw("<dt>Zuerst gesehen (first seen)</dt><dd>").text(&when(&first.first_seen_at)).raw("</dd></dl>");
    }
    h.raw("<h2>Ziele (Targets)</h2>");
    if rows.is_empty() {
        h.raw("<p class=\"empty\">Keine Zeile im Ledger (not in the ledger), nur Protokolleinträge.</p>");
    } else {
        targets_table(&mut h, &rows);
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
    event_table(&mut h, &events, true);
    Ok(page(StatusCode::OK, &format!("Element (Item) {key}"), Nav::None, h))
}

/// The item's ledger rows side by side: one column per target, one row per field.
fn targets_table(h: &mut Html, rows: &[LedgerRow]) {
    type Field = fn(&mut Html, &LedgerRow);
    let fields: [(&'static str, Field); 13] = [
        ("Status", |h, r| {
            h.status(Kind::Item, &r.status);
        }),
        ("Letzter Fehler (last error)", |h, r| {
            h.maybe(r.last_error.as_deref());
        }),
        ("Versuche (attempts)", |h, r| {
            h.show(r.attempts);
        }),
        ("Inhalt (content hash)", |h, r| {
            h.maybe_code(r.content_hash.as_deref());
        }),
        ("Mapping", |h, r| {
            h.maybe(r.mapping.as_deref());
        }),
        ("Mapping-Version (mapping version)", |h, r| {
            h.maybe_code(r.mapping_version.as_deref());
        }),
        ("Dokument (output hash)", |h, r| {
            h.maybe_code(r.output_hash.as_deref());
        }),
        ("Ausgabepfad (output path)", |h, r| {
            h.maybe_code(r.output_path.as_deref());
        }),
        ("Version beim Ziel (target version)", |h, r| {
            h.maybe_code(r.target_version.as_deref());
        }),
        ("Geliefert (delivered)", |h, r| {
            h.maybe(r.delivered_at.as_deref().map(when).as_deref());
        }),
        ("Aktualisiert (updated)", |h, r| {
            h.text(&when(&r.updated_at));
        }),
        ("Letzter Lauf (last run)", |h, r| match r.last_run_id {
            Some(id) => {
                h.link(&run_href(id), &format!("#{id}"));
            }
            None => {
                h.raw("<span class=\"none\">–</span>");
            }
        }),
        ("Nachnutzungen (adoptions, ARS)", |h, r| {
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
            field(h, row);
            h.raw("</td>");
        }
        h.raw("</tr>");
    }
    h.raw("</tbody></table>");
}

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
            h.td_num(row.attempts).td(&when(&row.updated_at));
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

/// `/items/{key}/diff`: per target, what changed between the last two delivered documents.
async fn diff(state: &ApiState, key: &str) -> PageResult {
    let rows = state.store.item(key).await.map_err(failed)?;
    if rows.is_empty() {
        return Err(not_found_page(&format!("Das Element {key} ist nicht bekannt (no such item).")));
    }
    let mut h = Html::new();
    h.raw(
        "<p class=\"intro\">Je Ziel der Unterschied zwischen den zwei zuletzt gelieferten Fassungen des Dokuments: \
         <span class=\"status bad\">−</span> Zeilen der älteren Fassung, <span class=\"status good\">+</span> Zeilen \
         der neueren, dazu drei Zeilen Umgebung. (Per target, what changed between the last two delivered \
         versions: − old lines, + new lines, with three lines of context.)</p>",
    );
    h.raw("<p>").link(&item_href(key), "Zurück zum Element (back to the item)").raw("</p>");
    for row in rows.iter().filter(|r| r.target != ANY_TARGET) {
        h.raw("<h2>").text(&row.target).raw("</h2>");
        let docs = state.store.last_documents(key, &row.target, KEPT_VERSIONS).await.map_err(failed)?;
        match docs.as_slice() {
            [] => {
                h.raw("<p class=\"empty\">Keine gelieferte Fassung gespeichert (no delivered version stored yet).</p>");
            }
            [only] => {
                h.raw("<p class=\"empty\">Erst eine Fassung gespeichert, geliefert ")
                    .text(&when(&only.delivered_at))
                    .raw(" (only one delivered version is stored, nothing to compare yet).</p>");
            }
            [newer, older, ..] => {
                h.raw("<table>").head(&["Fassung (version)", "Dokument (output hash)", "Geliefert (delivered)"]);
                h.raw("<tbody><tr><td>").raw("ältere (older, −)").raw("</td>").cell(|h| {
                    h.hash(Some(&older.output_hash));
                });
                h.td(&when(&older.delivered_at)).raw("</tr><tr><td>neuere (newer, +)</td>").cell(|h| {
                    h.hash(Some(&newer.output_hash));
                });
                h.td(&when(&newer.delivered_at)).raw("</tr></tbody></table>");
                render_diff(&mut h, &String::from_utf8_lossy(&older.body), &String::from_utf8_lossy(&newer.body));
            }
        }
    }
    Ok(page(StatusCode::OK, &format!("Änderungen (Changes) {key}"), Nav::None, h))
}

/// A unified, line-based diff as a table: hunk headers, then context, − and + lines with line numbers.
fn render_diff(h: &mut Html, old: &str, new: &str) {
    let diff = TextDiff::configure().timeout(Duration::from_secs(2)).diff_lines(old, new);
    let groups = diff.grouped_ops(3);
    if groups.is_empty() {
        h.raw("<p class=\"empty\">Die beiden Fassungen unterscheiden sich nicht zeilenweise (no line differs).</p>");
        return;
    }
    let (mut removed, mut added) = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Delete => removed += 1,
            ChangeTag::Insert => added += 1,
            ChangeTag::Equal => {}
        }
    }
    h.raw("<p class=\"hint\">Zeilen entfernt (lines removed): ").show(removed);
    h.raw(", hinzugefügt (added): ").show(added).raw("</p>");
    h.raw("<table class=\"diff\">").head(&["alt (old)", "neu (new)", "", "Zeile (line)"]).raw("<tbody>");
    for group in &groups {
        h.raw("<tr class=\"hunk\"><td colspan=\"4\">")
            .show(similar::udiff::UnifiedHunkHeader::new(group))
            .raw("</td></tr>");
        for op in group {
            for change in diff.iter_changes(op) {
                let (class, sign) = match change.tag() {
                    ChangeTag::Delete => ("<tr class=\"del\">", "−"),
                    ChangeTag::Insert => ("<tr class=\"ins\">", "+"),
                    ChangeTag::Equal => ("<tr class=\"ctx\">", " "),
                };
                h.raw(class);
                for index in [change.old_index(), change.new_index()] {
                    h.raw("<td class=\"ln\">");
                    if let Some(i) = index {
                        h.show(i + 1);
                    }
                    h.raw("</td>");
                }
                h.raw("<td class=\"sign\">").raw(sign).raw("</td><td>");
                h.text(change.value().trim_end_matches(['\n', '\r'])).raw("</td></tr>");
            }
        }
    }
    h.raw("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        let at = |s: &str| format!("2024-05-01T12:{s}Z");
        assert_eq!(duration(&at("00:00.000"), Some(&at("00:00.400"))).unwrap(), "0.4 s");
        assert_eq!(duration(&at("00:00"), Some(&at("00:42"))).unwrap(), "42 s");
        assert_eq!(duration(&at("00:00"), Some(&at("03:05"))).unwrap(), "3 min 5 s");
        assert_eq!(duration(&at("00:00"), None), None);
    }

    #[test]
    fn a_diff_marks_removed_and_added_lines_and_escapes_them() {
        let mut h = Html::new();
        render_diff(&mut h, "a\n<b>\nc\n", "a\n<B>\nc\nd\n");
        let text = h.into_string();
        assert!(text.contains("@@ -1,3 +1,4 @@"), "{text}");
        assert!(text.contains("<tr class=\"del\"><td class=\"ln\">2</td><td class=\"ln\"></td><td class=\"sign\">−</td><td>&lt;b&gt;</td></tr>"), "{text}");
        assert!(text.contains("<tr class=\"ins\"><td class=\"ln\"></td><td class=\"ln\">4</td><td class=\"sign\">+</td><td>d</td></tr>"), "{text}");
        assert!(text.contains("Zeilen entfernt (lines removed): 1, hinzugefügt (added): 2"), "{text}");
    }
}
