//! Held withdrawals: the sources whose withdrawals a run held back (more vanished than the guard
//! allows), and the admin API call that confirms them.

use serde_json::{Value, json};

use super::html::Html;
use crate::store::log::EventRow;

/// The sources of a run (its comma-separated `sources`) whose withdrawals its error `events` say
/// were held.
pub(super) fn held_sources(sources: &str, events: &[EventRow]) -> Vec<String> {
    sources
        .split(',')
        .filter(|id| !id.is_empty())
        .filter(|id| {
            let vanished = format!("vanished from source {id},");
            events.iter().any(|e| {
                e.item_key.is_none() && e.message.contains(&vanished) && e.message.contains("withdrawals are held")
            })
        })
        .map(str::to_owned)
        .collect()
}

/// The body of `POST /api/runs` that runs `source` again and sends its held withdrawals.
pub(super) fn confirm_body(source: &str) -> Value {
    json!({ "sources": [source], "allow_withdrawals": true })
}

/// For `GET /api/runs/{id}`: per source with held withdrawals, the call that confirms them.
pub(super) fn confirmations(sources: &[String]) -> Value {
    sources
        .iter()
        .map(|source| {
            json!({
                "source": source,
                "confirm": { "method": "POST", "path": "/api/runs", "body": confirm_body(source) },
            })
        })
        .collect()
}

/// For the run page: how to confirm each source's held withdrawals (API or command line).
pub(super) fn explain(h: &mut Html, sources: &[String]) {
    if sources.is_empty() {
        return;
    }
    h.raw("<h2>Zurückgehaltene Rückzüge (Held withdrawals)</h2>");
    h.raw(
        "<p class=\"hint\">Aus diesen Quellen verschwand mehr, als die Schutzschwelle <code>max_withdrawal_share</code> \
         erlaubt; die Rückzüge wurden nicht gesendet. Ist das gewollt, bestätigt ein neuer Lauf sie. (More of these \
         sources vanished than their guard allows, so their withdrawals were not sent. If that is intended, a new \
         run confirms them.)</p><ul>",
    );
    for source in sources {
        h.raw("<li><strong>").text(source).raw("</strong>: <code>POST /api/runs</code> ");
        h.raw("<code>").text(&confirm_body(source).to_string()).raw("</code>");
        h.raw(" (Bearer-Token, admin token) oder (or) <code>portal-bridge migrate --source ");
        h.text(source).raw(" --allow-withdrawals</code></li>");
    }
    h.raw("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(item_key: Option<&str>, message: &str) -> EventRow {
        EventRow {
            id: 1,
            at: String::new(),
            run_id: Some(1),
            item_key: item_key.map(str::to_owned),
            target: None,
            stage: "fetch".into(),
            level: "error".into(),
            message: message.into(),
            actor: None,
            reason: None,
        }
    }

    #[test]
    fn the_guards_message_names_the_held_source() {
        let run = "owl-forms,owl-services";
        let held = "3 of 5 items (60 %) vanished from source owl-forms, more than the guard allows (10 %); \
                    their withdrawals are held. If this is intended: migrate --source owl-forms --allow-withdrawals";
        assert_eq!(held_sources(run, &[event(None, held)]), ["owl-forms"]);
        assert!(held_sources(run, &[event(Some("owl-forms/x"), held)]).is_empty(), "an item's event is not it");
        assert!(held_sources(run, &[event(None, "source owl-forms: cannot read")]).is_empty());
        assert_eq!(
            confirmations(&["owl-forms".into()]),
            json!([{"source": "owl-forms", "confirm": {"method": "POST", "path": "/api/runs",
                    "body": {"sources": ["owl-forms"], "allow_withdrawals": true}}}])
        );
    }
}
