//! A small HTML writer for the review pages: markup only from `&'static str`, every value escaped.
//!
//! Dynamic text can only enter a page through [`Html::text`] (or helpers built on it), which
//! escapes it; [`Html::raw`] takes string literals only. So no value from the database, a source
//! or a request can add markup.

use std::fmt::Display;

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML fragment under construction.
#[derive(Debug, Default)]
pub struct Html {
    buf: String,
}

impl Html {
    pub fn new() -> Self {
        Self::default()
    }

    /// Markup, from string literals only.
    pub fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.buf.push_str(markup);
        self
    }

    /// Text, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.buf.push_str(&escape(text));
        self
    }

    /// Anything printable, escaped.
    pub fn show(&mut self, value: impl Display) -> &mut Self {
        self.text(&value.to_string())
    }

    /// `<a href="…">text</a>`, both escaped. `href` must come from the URL helpers (path segments
    /// percent-encoded).
    pub fn link(&mut self, href: &str, text: &str) -> &mut Self {
        self.raw("<a href=\"").text(href).raw("\">").text(text).raw("</a>")
    }

    /// An element with a fixed tag and class and escaped text: `tag("code", "", text)`.
    pub fn tag(&mut self, open: &'static str, close: &'static str, text: &str) -> &mut Self {
        self.raw(open).text(text).raw(close)
    }

    /// A status word in its colour.
    pub fn status(&mut self, kind: Kind, word: &str) -> &mut Self {
        self.raw("<span class=\"status ").raw(kind.class(word)).raw("\">").text(word).raw("</span>")
    }

    /// A long hash shortened to 12 digits, the whole hash as tooltip.
    pub fn hash(&mut self, hash: Option<&str>) -> &mut Self {
        match hash {
            Some(h) => self
                .raw("<code title=\"")
                .text(h)
                .raw("\">")
                .text(&h.chars().take(12).collect::<String>())
                .raw("</code>"),
            None => self.raw("<span class=\"none\">–</span>"),
        }
    }

    /// Text, or a dash for nothing.
    pub fn maybe(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(t) if !t.is_empty() => self.text(t),
            _ => self.raw("<span class=\"none\">–</span>"),
        }
    }

    /// A header row: `<tr><th scope="col">…</th>…</tr>` inside `<thead>`.
    pub fn head(&mut self, columns: &[&'static str]) -> &mut Self {
        self.raw("<thead><tr>");
        for column in columns {
            self.raw("<th scope=\"col\">");
            self.label(column);
            self.raw("</th>");
        }
        self.raw("</tr></thead>")
    }

    /// A row header (`<th scope="row">`), the English gloss on its own line like [`Html::head`].
    pub fn row_head(&mut self, label: &'static str) -> &mut Self {
        self.raw("<th scope=\"row\">");
        self.label(label);
        self.raw("</th>")
    }

    fn label(&mut self, label: &'static str) {
        // "Versuche (attempts)": the English gloss goes on its own line, keeping columns narrow.
        match label.split_once(" (") {
            Some((german, english)) => self.raw(german).raw(" <span class=\"en\">(").raw(english).raw("</span>"),
            None => self.raw(label),
        };
    }

    /// Text in `<code>`, or a dash for nothing.
    pub fn maybe_code(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(t) if !t.is_empty() => self.tag("<code>", "</code>", t),
            _ => self.raw("<span class=\"none\">–</span>"),
        }
    }

    /// A cell holding escaped text.
    pub fn td(&mut self, text: &str) -> &mut Self {
        self.tag("<td>", "</td>", text)
    }

    /// A right-aligned number cell.
    pub fn td_num(&mut self, n: i64) -> &mut Self {
        self.raw("<td class=\"num\">").show(n).raw("</td>")
    }

    /// A cell whose content the closure writes.
    pub fn cell(&mut self, content: impl FnOnce(&mut Self)) -> &mut Self {
        self.raw("<td>");
        content(self);
        self.raw("</td>")
    }

    #[cfg(test)]
    pub fn into_string(self) -> String {
        self.buf
    }
}

/// Which vocabulary a status word comes from (the same word can mean different things).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Item,
    Run,
    Level,
}

impl Kind {
    fn class(self, word: &str) -> &'static str {
        match (self, word) {
            (Kind::Item, "delivered" | "unchanged") | (Kind::Run, "ok") => "good",
            (Kind::Item, "new") | (Kind::Run, "running") | (Kind::Level, "info") => "info",
            (Kind::Item, "failed") | (Kind::Run, "partial" | "interrupted") | (Kind::Level, "warn") => "warn",
            (Kind::Item, "quarantined" | "conflict") | (Kind::Run, "failed" | "aborted") | (Kind::Level, "error") => {
                "bad"
            }
            _ => "muted",
        }
    }
}

/// Navigation entries; the current one is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Runs,
    Plans,
    Quarantine,
    Quality,
    None,
}

const STYLE: &str = r#"
:root { --good:#17663a; --good-bg:#e3f4e8; --bad:#b3261e; --bad-bg:#fce8e6; --warn:#8a4b00; --warn-bg:#fff1d6;
        --info:#0b57d0; --info-bg:#e4edfc; --muted:#5f6368; --muted-bg:#eeeeee; --line:#d7dce2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f1f1f; background: #f6f7f9; }
header { background: #12355b; color: #fff; padding: .7rem 1.5rem; display: flex; gap: 2rem; align-items: baseline; flex-wrap: wrap; }
header .brand { font-weight: 700; font-size: 1.1rem; }
header a { color: #fff; text-decoration: none; padding: .15rem .4rem; border-radius: 3px; }
header a:hover, header a[aria-current] { background: rgba(255,255,255,.18); }
main { padding: 1rem 1.5rem 3rem; max-width: 1500px; }
h1 { font-size: 1.55rem; margin: .6rem 0 .3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 1.6rem 0 .3rem; }
h3 { font-size: 1.02rem; margin: 1.2rem 0 .2rem; overflow-wrap: anywhere; }
h3 .statuses { font-weight: 400; font-size: .9em; margin-left: .6rem; }
p.intro { max-width: 62rem; margin: .3rem 0 1rem; color: #333; }
p.hint { max-width: 62rem; color: #444; font-size: .92rem; }
table { border-collapse: collapse; background: #fff; margin: .4rem 0 1.2rem; }
th, td { border: 1px solid var(--line); padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #e9eef5; font-weight: 600; }
th .en { display: block; font-weight: 400; font-size: .85em; color: #4a5565; white-space: nowrap; }
table.wide { width: 100%; }
td.key { max-width: 24rem; overflow-wrap: anywhere; }
td.sources { max-width: 14rem; font-size: .88em; }
td.when { white-space: nowrap; }
table.fields th[scope=row] { width: 14rem; }
table.fields td { width: 40%; }
table.runs { font-size: .93em; }
tr.message td { border-top: none; font-size: .9em; color: #41536b; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.reason { min-width: 16rem; max-width: 46rem; overflow-wrap: anywhere; }
tbody tr:nth-child(even) { background: #fafbfc; }
.status { display: inline-block; font-weight: 600; padding: 0 .4rem; border-radius: 3px; white-space: nowrap; }
.good { color: var(--good); background: var(--good-bg); }
.bad { color: var(--bad); background: var(--bad-bg); }
.warn { color: var(--warn); background: var(--warn-bg); }
.info { color: var(--info); background: var(--info-bg); }
.muted { color: var(--muted); background: var(--muted-bg); }
.none { color: var(--muted); }
code { font: .88em ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
a { color: #0b57d0; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; margin: .5rem 0 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav.filter a, nav.filter strong { margin-right: .8rem; white-space: nowrap; }
.empty { padding: .6rem .8rem; background: #fff; border: 1px dashed var(--line); max-width: 62rem; }
table.diff { width: 100%; font: .85em/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
table.diff td { border: none; padding: 0 .5rem; white-space: pre-wrap; overflow-wrap: anywhere; }
table.diff td.ln { color: var(--muted); text-align: right; width: 3.5rem; user-select: none; }
table.diff td.sign { width: 1.5rem; font-weight: 700; user-select: none; }
table.diff tr.del td { background: #fde3e1; } table.diff tr.del td.sign { color: var(--bad); }
table.diff tr.ins td { background: #dcf3e3; } table.diff tr.ins td.sign { color: var(--good); }
table.diff tr.hunk td { background: #e9eef5; color: #41536b; padding: .15rem .5rem; }
footer { color: var(--muted); font-size: .85rem; padding: 0 1.5rem 1.5rem; }
"#;

/// A whole page: title, navigation, the fragment, and the headers that forbid scripts.
pub fn page(status: StatusCode, title: &str, nav: Nav, body: Html) -> Response {
    let mut h = Html::new();
    h.raw("<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .text(title)
        .raw(" – portal-bridge</title><style>")
        .raw(STYLE)
        .raw("</style></head><body><header><span class=\"brand\">portal-bridge</span><nav>");
    for (entry, href, label) in [
        (Nav::Runs, "/runs", "Läufe (Runs)"),
        (Nav::Plans, "/plans", "Pläne (Plans)"),
        (Nav::Quarantine, "/quarantine", "Quarantäne (Quarantine)"),
        (Nav::Quality, "/quality", "Qualität (Quality)"),
    ] {
        h.raw("<a href=\"").raw(href).raw("\"");
        if entry == nav {
            h.raw(" aria-current=\"page\"");
        }
        h.raw(">").raw(label).raw("</a> ");
    }
    h.raw("</nav></header><main><h1>").text(title).raw("</h1>");
    h.buf.push_str(&body.buf);
    h.raw("</main><footer>portal-bridge – Überführung der Online-Dienste der Modellregionen in Kommunalportal.NRW</footer>")
        .raw("</body></html>\n");
    let mut response = (status, h.buf).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_markup_is_literal() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        let mut h = Html::new();
        h.link("/items/a%2F%3Cb%3E", "a/<b>").status(Kind::Item, "quarantined").status(Kind::Item, "<x>");
        assert_eq!(
            h.into_string(),
            "<a href=\"/items/a%2F%3Cb%3E\">a/&lt;b&gt;</a><span class=\"status bad\">quarantined</span>\
             <span class=\"status muted\">&lt;x&gt;</span>"
        );
    }

    #[test]
    fn status_words_get_their_colour_by_vocabulary() {
        assert_eq!(Kind::Item.class("failed"), "warn");
        assert_eq!(Kind::Run.class("failed"), "bad");
        assert_eq!(Kind::Run.class("ok"), "good");
        assert_eq!(Kind::Level.class("error"), "bad");
    }
}
