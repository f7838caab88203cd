//! The review pages: runs, one run, one item, the quarantine list and an item's diff, as server-rendered HTML without scripts.
//!
//! Here what the pages share (error pages, links, cells, the event table, the query); each page
//! in a file of its own: `runs` (the runs and one run), `item`, `quarantine`, `diff`.

use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::html::{Html, Kind, Nav, page};
use super::{key_segment, query_value, store_failure, when};
use crate::domain::ItemStatus;
use crate::pipeline::ANY_TARGET;
use crate::store::StoreError;
use crate::store::log::EventRow;

mod diff;
mod item;
mod quarantine;
mod runs;

pub(crate) use item::item_or_diff;
pub(crate) use quarantine::quarantine;
pub(crate) use runs::{run, runs};

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

/// The migration log as a table; `with_run` adds the run column (for an item's log).
fn event_table(h: &mut Html, events: &[EventRow], with_run: bool, tz: chrono_tz::Tz) {
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
        h.raw("<tr>").td(&when(&e.at, tz));
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
}
