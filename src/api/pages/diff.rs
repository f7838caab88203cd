//! An item's diff page (`/items/{key}/diff`): per target, what changed between the last two delivered documents.

use std::time::Duration;

use axum::http::StatusCode;
use similar::{ChangeTag, TextDiff};

use super::{PageResult, failed, item_href, not_found_page};
use crate::api::html::{Html, Nav, page};
use crate::api::{ApiState, when};
use crate::pipeline::ANY_TARGET;
use crate::store::documents::KEPT_VERSIONS;

/// `/items/{key}/diff`: per target, what changed between the last two delivered documents.
pub(super) async fn diff(state: &ApiState, key: &str) -> PageResult {
    let rows = state.store.item(key).await.map_err(failed)?;
    if rows.is_empty() {
        return Err(not_found_page(&format!("Das Element {key} ist nicht bekannt (no such item).")));
    }
    let tz = state.timezone();
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
                    .text(&when(&only.delivered_at, tz))
                    .raw(" (only one delivered version is stored, nothing to compare yet).</p>");
            }
            [newer, older, ..] => {
                h.raw("<table>").head(&["Fassung (version)", "Dokument (output hash)", "Geliefert (delivered)"]);
                h.raw("<tbody><tr><td>").raw("ältere (older, −)").raw("</td>").cell(|h| {
                    h.hash(Some(&older.output_hash));
                });
                h.td(&when(&older.delivered_at, tz)).raw("</tr><tr><td>neuere (newer, +)</td>").cell(|h| {
                    h.hash(Some(&newer.output_hash));
                });
                h.td(&when(&newer.delivered_at, tz)).raw("</tr></tbody></table>");
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
