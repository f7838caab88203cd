//! The speed-of-light reference of `mappings/xdatenfelder2-to-xdf3`: the same conversion written by hand in plain Rust (never shipped).
//!
//! It starts from the tree `codec::decode` gives with no forced arrays (`Decoded::tree`, the tree
//! `Mapping::read` starts from, before it becomes a jaq value) and writes the delivered document in
//! one pass into a `String`: the bytes `Mapping::apply` produces (program, String.Latin
//! normalisation, `codec::xml::encode`) and the same warnings (the program's `#warnings`, then one
//! per String.Latin change). A record the mapping refuses with an error is refused here too (the
//! message may differ). The benchmark checks the bytes and warnings against the jq mapping on every
//! input it times (`benches/support/stages.rs`).
//!
//! What it knows of the mapping is written out as code: the lookup tables of
//! `xdatenfelder2-to-xdf3.toml`, its `string_latin` list and the element order of the program.
//! Known limits (none occurs in the real exports, the demo forms or the corpus): a praezisierung
//! JSON value that is neither a string nor null is printed by serde_json, not by jaq's `tojson`
//! (numbers such as `1.50` or `1e3`, and unusual string escapes, may print differently); and the
//! String.Latin warning of an element whose 3.0.0 id equals the converted id of another element
//! (an id already written as `S000…` beside its 2.0 form) names the element's own id.

use std::borrow::Cow;

use portal_bridge::mapping::latin;
use serde_json::{Map, Value};

/// What the reference produces for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub warnings: Vec<String>,
}

type R<T> = Result<T, String>;

static NULL: Value = Value::Null;

const NS: &str = "urn:xoev-de:fim:standard:xdatenfelder_3.0.0";
const GROUP_ROOT: &str = "xdatenfelder.datenfeldgruppe.0103";
const SCHEMA_ROOT: &str = "xdatenfelder.stammdatenschema.0102";

/// The conversion (it holds nothing: the mapping's tables are code).
#[derive(Debug, Default)]
pub struct Reference;

impl Reference {
    pub fn new() -> Self {
        Self
    }

    /// Converts one decoded XDatenfelder 2.0 record. `codelists` is `Codelists::table`, `source` the
    /// source's context (`Source::context`, for `on_missing_codelist`).
    pub fn convert(&self, tree: &Value, codelists: &Value, source: &Value) -> R<Output> {
        let empty = Map::new();
        let mut w = Writer {
            out: String::with_capacity(64 * 1024),
            latin: Vec::new(),
            refs: Vec::new(),
            stubs: Vec::new(),
            codelists: codelists.as_object().unwrap_or(&empty),
            forbidden: false,
        };
        let is_group = tree.as_object().is_some_and(|o| o.contains_key(GROUP_ROOT));
        let root = if is_group { GROUP_ROOT } else { SCHEMA_ROOT };
        let msg = get(tree, root)?;
        let header = get(msg, "header")?;
        let stand = trimmed(get(header, "erstellungszeitpunkt")?)?
            .ok_or("the 2.0 header has no erstellungszeitpunkt (needed for header and letzteAenderung)")?;
        let body = get(msg, if is_group { "datenfeldgruppe" } else { "stammdatenschema" })?;
        if !body.is_object() {
            return Err("the message has no schema or group".into());
        }
        w.out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xdf:");
        w.out.push_str(root);
        w.out.push_str(" xmlns:xdf=\"");
        w.out.push_str(NS);
        w.out.push_str("\">\n");
        w.open(1, "header");
        w.leaf(2, "nachrichtID", text(get(header, "nachrichtID")?)?.trim(), "");
        w.leaf(2, "erstellungszeitpunkt", stand, "");
        if let Some(reference) = trimmed(get(header, "referenzID")?)? {
            w.leaf(2, "referenzID", reference, "");
        }
        w.close(1, "header");
        if is_group {
            w.group(1, body, stand)?;
        } else {
            w.schema(body, stand)?;
        }
        w.out.push_str("</xdf:");
        w.out.push_str(root);
        w.out.push_str(">\n");

        if w.forbidden {
            return Err("cannot write XML: a character XML does not allow".into());
        }
        let missing = missing_codelists(&w.refs);
        if !missing.is_empty() && source.get("on_missing_codelist").and_then(Value::as_str) == Some("quarantine") {
            return Err(format!("missing codelists ({}): on_missing_codelist = quarantine", missing.len()));
        }
        let mut warnings = form_warnings(&mut w.stubs, &w.refs, &missing);
        warnings.append(&mut w.latin);
        Ok(Output { bytes: w.out.into_bytes(), warnings })
    }
}

// ------------------------------------------------------------------ reading the 2.0 tree

/// jq's `.key`: null on null or a missing key, an error on anything but an object.
fn get<'a>(value: &'a Value, key: &str) -> R<&'a Value> {
    match value {
        Value::Object(map) => Ok(map.get(key).unwrap_or(&NULL)),
        Value::Null => Ok(&NULL),
        other => Err(format!("cannot index {} with {key}", kind(other))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The mapping's `text`: a string as is, an element's `#text`, "" if absent; a repeated element is an error.
fn text(value: &Value) -> R<Cow<'_, str>> {
    Ok(match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Object(map) => match map.get("#text") {
            None | Some(Value::Null | Value::Bool(false)) => Cow::Borrowed(""),
            Some(Value::String(s)) => Cow::Borrowed(s),
            Some(other) => Cow::Owned(other.to_string()),
        },
        Value::Array(items) => {
            return Err(format!("an element that XDatenfelder 2.0 allows once occurs {} times", items.len()));
        }
        other => Cow::Owned(other.to_string()),
    })
}

/// The text, or None if it is blank (not trimmed).
fn nonblank(value: &Value) -> R<Option<Cow<'_, str>>> {
    let t = text(value)?;
    Ok(if t.trim().is_empty() { None } else { Some(t) })
}

/// The trimmed text, or None if it is blank.
fn trimmed(value: &Value) -> R<Option<&str>> {
    // (a text that is not borrowed from the tree is never produced by the decoder)
    match text(value)? {
        Cow::Borrowed(t) => Ok(Some(t.trim()).filter(|t| !t.is_empty())),
        Cow::Owned(_) => Err("unexpected non-string text".into()),
    }
}

/// The code of a code-typed element.
fn code(value: &Value) -> R<String> {
    Ok(match value {
        Value::Object(map) => match map.get("code") {
            None | Some(Value::Null | Value::Bool(false)) => String::new(),
            Some(inner) => text(inner)?.trim().to_owned(),
        },
        other => text(other)?.trim().to_owned(),
    })
}

/// A value as a list (`as_array`).
fn items(value: &Value) -> &[Value] {
    match value {
        Value::Null => &[],
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    }
}

fn is_ascii_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// S00000121 → S00000000121 (letter + 8 digits); other ids as they are (trimmed).
fn xdf3_id(id: &str) -> Cow<'_, str> {
    let id = id.trim();
    let b = id.as_bytes();
    if b.len() == 9 && b[0].is_ascii_uppercase() && is_ascii_digits(&id[1..]) {
        Cow::Owned(format!("{}000{}", &id[..3], &id[3..]))
    } else {
        Cow::Borrowed(id)
    }
}

/// 1.0 → 1.0.0.
fn xdf3_version(version: &str) -> Cow<'_, str> {
    let v = version.trim();
    match v.split_once('.') {
        Some((major, minor)) if is_ascii_digits(major) && is_ascii_digits(minor) => Cow::Owned(format!("{v}.0")),
        _ => Cow::Borrowed(v),
    }
}

/// F00001028 → F00000001028 in prose (ASCII word boundaries, as the engine's regexes have them).
fn xdf3_ids_in_text(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let word = |i: usize| b[i].is_ascii_alphanumeric() || b[i] == b'_';
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i + 9 <= b.len() {
        if matches!(b[i], b'F' | b'G')
            && b[i + 1..i + 9].iter().all(u8::is_ascii_digit)
            && (i == 0 || !word(i - 1))
            && (i + 9 == b.len() || !word(i + 9))
        {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 12));
            o.push_str(&text[copied..i + 3]);
            o.push_str("000");
            o.push_str(&text[i + 3..i + 9]);
            copied = i + 9;
            i += 9;
        } else {
            i += 1;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

fn freigabestatus_code(status: &str, state: &str) -> Option<&'static str> {
    Some(match (status, state) {
        ("aktiv", "freigegeben") => "6",
        ("aktiv" | "inVorbereitung", _) => "2",
        ("inaktiv", _) => "7",
        _ => return None,
    })
}

/// The lookup tables feldart, datentyp and schemaelementart map each code to itself.
fn checked(value: &Value, table: &str, allowed: &[&str]) -> R<String> {
    let c = code(value)?;
    if allowed.contains(&c.as_str()) { Ok(c) } else { Err(format!("{table} `{c}` is not an XDatenfelder 2.0 code")) }
}

const FELDART: &[&str] = &["input", "select", "label"];
const DATENTYP: &[&str] = &["text", "date", "bool", "num", "num_int", "num_currency", "file", "obj"];
const SCHEMAELEMENTART: &[&str] = &["ABS", "HAR", "RNG"];

/// The mapping's `carried`: 2.0 values without a 3.0.0 element, as one line.
fn carried(pairs: &[(&str, Option<Cow<'_, str>>)]) -> Option<String> {
    let mut line = String::new();
    for (name, value) in pairs {
        if let Some(value) = value {
            line.push_str(if line.is_empty() {
                "Aus XDatenfelder 2.0 übernommen (in 3.0.0 ohne eigenes Element): "
            } else {
                "; "
            });
            line.push_str(name);
            line.push_str(": ");
            line.push_str(value);
        }
    }
    (!line.is_empty()).then_some(line)
}

/// The genericode identification of a codelist reference and the list it resolves to.
#[derive(Debug, Clone)]
struct CodelistRef<'a> {
    canonical: Option<&'a str>,
    version: Option<&'a str>,
    uri: Option<&'a str>,
    list: Option<&'a Value>,
}

/// A field (or any element) with a codelist reference, for the form's warnings.
struct Ref<'a> {
    id: String,
    r: CodelistRef<'a>,
}

// ------------------------------------------------------------------ writing the 3.0.0 document

/// The output buffer and what the whole form's warnings need.
struct Writer<'a> {
    out: String,
    /// String.Latin warnings in document order.
    latin: Vec<String>,
    refs: Vec<Ref<'a>>,
    /// Ids of rules whose script is an empty stub.
    stubs: Vec<String>,
    codelists: &'a Map<String, Value>,
    /// A character XML does not allow was to be written (the encoder refuses the document).
    forbidden: bool,
}

/// Output elements whose text is String.Latin (the mapping file's `output.string_latin`).
fn is_latin_element(name: &str) -> bool {
    matches!(
        name,
        "name"
            | "beschreibung"
            | "definition"
            | "bezug"
            | "statusGesetztDurch"
            | "versionshinweis"
            | "bezeichnung"
            | "hilfetext"
            | "bezeichnungEingabe"
            | "bezeichnungAusgabe"
            | "hilfetextEingabe"
            | "hilfetextAusgabe"
            | "inhalt"
            | "praezisierung"
            | "freitextRegel"
            | "fachlicherErsteller"
            | "produktbezeichnung"
            | "produkthersteller"
            | "produktversion"
    )
}

impl<'a> Writer<'a> {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    /// `<xdf:name>` on its own line.
    fn open(&mut self, depth: usize, name: &str) {
        self.indent(depth);
        self.out.push_str("<xdf:");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn close(&mut self, depth: usize, name: &str) {
        self.indent(depth);
        self.out.push_str("</xdf:");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// Escaped text or attribute value, as `codec::xml` writes it.
    fn escaped(&mut self, text: &str, attribute: bool) {
        let mut start = 0;
        for (i, b) in text.bytes().enumerate() {
            let with = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'\'' => "&apos;",
                b'"' => "&quot;",
                b'\r' => "&#13;",
                b'\n' if attribute => "&#10;",
                b'\t' if attribute => "&#9;",
                b'\t' | b'\n' => continue,
                0..0x20 => {
                    self.forbidden = true;
                    continue;
                }
                0xEF if text[i..].starts_with(['\u{FFFE}', '\u{FFFF}']) => {
                    self.forbidden = true;
                    continue;
                }
                _ => continue,
            };
            self.out.push_str(&text[start..i]);
            self.out.push_str(with);
            start = i + 1;
        }
        self.out.push_str(&text[start..]);
    }

    /// A text element `xdf:name` (a String.Latin one is normalised, with a warning naming `context`).
    fn leaf(&mut self, depth: usize, name: &str, text: &str, context: &str) {
        let mut text = Cow::Borrowed(text);
        if is_latin_element(name)
            && let Some((fixed, changes)) = latin::normalise(&text)
        {
            if !changes.is_empty() {
                let changes: Vec<String> = changes.iter().map(latin::Change::to_string).collect();
                let place = if context.is_empty() { name.to_owned() } else { format!("{context} {name}") };
                self.latin.push(format!("String.Latin (DIN SPEC 91379): {place}: {}", changes.join(", ")));
            }
            text = Cow::Owned(fixed);
        }
        self.indent(depth);
        self.out.push_str("<xdf:");
        self.out.push_str(name);
        if text.is_empty() {
            self.out.push_str("/>\n");
            return;
        }
        self.out.push('>');
        self.escaped(&text, false);
        self.out.push_str("</xdf:");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn leaf_opt(&mut self, depth: usize, name: &str, text: Option<&str>, context: &str) {
        if let Some(text) = text {
            self.leaf(depth, name, text, context);
        }
    }

    /// A code-typed element: `<xdf:name listURI=… listVersionID=…><code>…</code></xdf:name>`.
    fn coded(&mut self, depth: usize, name: &str, list: &str, version: &str, code: &str) {
        self.indent(depth);
        self.out.push_str("<xdf:");
        self.out.push_str(name);
        self.out.push_str(" listURI=\"");
        self.out.push_str(list);
        self.out.push_str("\" listVersionID=\"");
        self.out.push_str(version);
        self.out.push_str("\">\n");
        self.indent(depth + 1);
        if code.is_empty() {
            self.out.push_str("<code/>\n");
        } else {
            self.out.push_str("<code>");
            self.escaped(code, false);
            self.out.push_str("</code>\n");
        }
        self.close(depth, name);
    }

    fn identifikation(&mut self, depth: usize, element: &Value) -> R<()> {
        let ident = get(element, "identifikation")?;
        let id = text(get(ident, "id")?)?;
        let version = trimmed(get(ident, "version")?)?;
        self.open(depth, "identifikation");
        self.leaf(depth + 1, "id", &xdf3_id(&id), "");
        if let Some(version) = version {
            self.leaf(depth + 1, "version", &xdf3_version(version), "");
        }
        self.close(depth, "identifikation");
        Ok(())
    }

    /// The bezug list: one element per non-blank 2.0 bezug, trimmed.
    fn bezuege(&mut self, depth: usize, element: &Value, context: &str) -> R<()> {
        for bezug in items(get(element, "bezug")?) {
            if let Some(t) = trimmed(bezug)? {
                self.leaf(depth, "bezug", t, context);
            }
        }
        Ok(())
    }

    /// AllgemeineAngaben (`allgemein($stand; $notes)`).
    fn allgemein(&mut self, depth: usize, e: &Value, stand: &str, notes: Option<&str>, context: &str) -> R<()> {
        self.identifikation(depth, e)?;
        self.leaf(depth, "name", &text(get(e, "name")?)?, context);
        let beschreibung = nonblank(get(e, "beschreibung")?)?;
        match (beschreibung, notes) {
            (Some(b), Some(n)) => self.leaf(depth, "beschreibung", &format!("{b}\n\n{n}"), context),
            (Some(b), None) => self.leaf(depth, "beschreibung", &b, context),
            (None, Some(n)) => self.leaf(depth, "beschreibung", n, context),
            (None, None) => {}
        }
        self.leaf_opt(depth, "definition", nonblank(get(e, "definition")?)?.as_deref(), context);
        self.bezuege(depth, e, context)?;
        // freigabestatus
        let status = code(get(e, "status")?)?;
        let state = if nonblank(get(get(e, "identifikation")?, "version")?)?.is_none() {
            "arbeitskopie"
        } else if nonblank(get(e, "freigabedatum")?)?.is_none() {
            "version"
        } else {
            "freigegeben"
        };
        let code = freigabestatus_code(&status, state)
            .ok_or_else(|| format!("XDatenfelder 2.0 status `{status}` has no freigabestatus"))?;
        self.coded(depth, "freigabestatus", "urn:xoev-de:xprozess:codeliste:status", "2020-03-19", code);
        self.leaf_opt(depth, "statusGesetztAm", trimmed(get(e, "freigabedatum")?)?, context);
        self.leaf_opt(depth, "statusGesetztDurch", nonblank(get(e, "fachlicherErsteller")?)?.as_deref(), context);
        self.leaf_opt(depth, "gueltigAb", trimmed(get(e, "gueltigAb")?)?, context);
        self.leaf_opt(depth, "gueltigBis", trimmed(get(e, "gueltigBis")?)?, context);
        self.leaf_opt(depth, "versionshinweis", nonblank(get(e, "versionshinweis")?)?.as_deref(), context);
        self.leaf_opt(depth, "veroeffentlichungsdatum", trimmed(get(e, "veroeffentlichungsdatum")?)?, context);
        self.leaf(depth, "letzteAenderung", stand, context);
        Ok(())
    }

    /// Schemaelementangaben.
    fn schemaelement(&mut self, depth: usize, e: &Value, context: &str) -> R<()> {
        self.leaf(depth, "bezeichnungEingabe", &text(get(e, "bezeichnungEingabe")?)?, context);
        self.leaf_opt(depth, "bezeichnungAusgabe", nonblank(get(e, "bezeichnungAusgabe")?)?.as_deref(), context);
        let art = checked(get(e, "schemaelementart")?, "schemaelementart", SCHEMAELEMENTART)?;
        self.coded(depth, "schemaelementart", "urn:xoev-de:fim:codeliste:xdatenfelder.schemaelementart", "1.0", &art);
        self.leaf_opt(depth, "hilfetextEingabe", nonblank(get(e, "hilfetextEingabe")?)?.as_deref(), context);
        self.leaf_opt(depth, "hilfetextAusgabe", nonblank(get(e, "hilfetextAusgabe")?)?.as_deref(), context);
        Ok(())
    }

    /// The mapping's `stub_script`: blank, or `function script() {}` (the regex
    /// `^\s*function\s+script\s*\(\s*\)\s*\{\s*\}\s*;?\s*$` with the engine's ASCII `\s`).
    fn is_stub(&self, script: &str) -> bool {
        fn ws(s: &str) -> &str {
            s.trim_start_matches(['\t', '\n', '\u{b}', '\u{c}', '\r', ' '])
        }
        fn token<'t>(s: &'t str, t: &str) -> Option<&'t str> {
            s.strip_prefix(t)
        }
        if script.trim().is_empty() {
            return true;
        }
        let stub = || -> Option<()> {
            let s = token(ws(script), "function")?;
            let after = ws(s);
            if after.len() == s.len() {
                return None; // `\s+`
            }
            let s = token(ws(token(ws(token(ws(token(ws(token(after, "script")?), "(")?), ")")?), "{")?), "}")?;
            let s = ws(s);
            let s = ws(s.strip_prefix(';').unwrap_or(s));
            s.is_empty().then_some(())
        };
        stub().is_some()
    }

    /// The rules of an element (`regeln($stand)`), and the stub scripts among them for the warnings.
    fn regeln(&mut self, depth: usize, e: &Value, stand: &str) -> R<()> {
        for rule in items(get(e, "regel")?) {
            let id = text(get(get(rule, "identifikation")?, "id")?)?;
            let context = id.trim();
            let script = get(rule, "script")?;
            let stub = self.is_stub(&text(script)?);
            if stub && !script.is_null() && nonblank(script)?.is_some() {
                self.stubs.push(context.to_owned());
            }
            self.open(depth, "regel");
            let d = depth + 1;
            self.identifikation(d, rule)?;
            self.leaf(d, "name", &text(get(rule, "name")?)?, context);
            let mut pairs = Vec::with_capacity(8);
            for name in [
                "bezeichnungEingabe",
                "bezeichnungAusgabe",
                "gueltigAb",
                "gueltigBis",
                "versionshinweis",
                "freigabedatum",
                "veroeffentlichungsdatum",
            ] {
                pairs.push((name, nonblank(get(rule, name)?)?));
            }
            let status = code(get(rule, "status")?)?;
            pairs.push(("status", (!status.is_empty() && status != "aktiv").then_some(Cow::Owned(status))));
            let notes = carried(&pairs);
            match (nonblank(get(rule, "beschreibung")?)?, notes) {
                (Some(b), Some(n)) => self.leaf(d, "beschreibung", &format!("{b}\n\n{n}"), context),
                (Some(b), None) => self.leaf(d, "beschreibung", &b, context),
                (None, Some(n)) => self.leaf(d, "beschreibung", &n, context),
                (None, None) => {}
            }
            if let Some(definition) = nonblank(get(rule, "definition")?)? {
                self.leaf(d, "freitextRegel", &xdf3_ids_in_text(&definition), context);
            }
            self.bezuege(d, rule, context)?;
            self.leaf_opt(d, "fachlicherErsteller", nonblank(get(rule, "fachlicherErsteller")?)?.as_deref(), context);
            self.leaf(d, "letzteAenderung", stand, context);
            self.coded(d, "typ", "urn:xoev-de:fim:codeliste:xdatenfelder.regeltyp", "1.0", "K");
            if !stub {
                self.leaf(d, "skript", &text(script)?, context);
            }
            self.close(depth, "regel");
        }
        Ok(())
    }

    /// Resolves the codelist reference of an element (`codelist_ref`) and keeps it for the warnings.
    fn codelist_ref(&mut self, e: &'a Value) -> R<Option<CodelistRef<'a>>> {
        let reference = get(e, "codelisteReferenz")?;
        if reference.is_null() {
            return Ok(None);
        }
        let g = match get(reference, "genericodeIdentification")? {
            Value::Null | Value::Bool(false) => &NULL,
            g => g,
        };
        let canonical = trimmed(get(g, "canonicalIdentification")?)?;
        let version = trimmed(get(g, "version")?)?;
        let mut uri = trimmed(get(g, "canonicalVersionUri")?)?;
        if let (None, Some(c), Some(u)) = (version, canonical, uri)
            && u.len() == c.len() + 1
            && u.starts_with(c)
            && u.ends_with('_')
        {
            uri = None; // a versionless reference as real exports write it: `<canonical>_`
        }
        let codelists: &'a Map<String, Value> = self.codelists;
        let found = |key: &str| codelists.get(key).filter(|l| !matches!(l, Value::Null | Value::Bool(false)));
        let list = uri.and_then(found).or_else(|| match (canonical, version, uri) {
            (Some(c), Some(v), _) => found(&format!("{c}|{v}")),
            (Some(c), None, None) => found(&format!("{c}|")),
            _ => None,
        });
        let r = CodelistRef { canonical, version, uri, list };
        let id = text(get(get(e, "identifikation")?, "id")?)?.trim().to_owned();
        self.refs.push(Ref { id, r: r.clone() });
        Ok(Some(r))
    }

    /// A Datenfeld.
    fn datenfeld(&mut self, depth: usize, f: &'a Value, stand: &str) -> R<()> {
        let id = text(get(get(f, "identifikation")?, "id")?)?;
        let context = id.trim();
        let (attrs, notes) = praezisierung(get(f, "praezisierung")?)?;
        let reference = self.codelist_ref(f)?;
        self.open(depth, "datenfeld");
        let d = depth + 1;
        self.allgemein(d, f, stand, notes.as_deref(), context)?;
        self.schemaelement(d, f, context)?;
        let feldart = checked(get(f, "feldart")?, "feldart", FELDART)?;
        self.coded(d, "feldart", "urn:xoev-de:fim:codeliste:xdatenfelder.feldart", "2.0", &feldart);
        let datentyp = checked(get(f, "datentyp")?, "datentyp", DATENTYP)?;
        self.coded(d, "datentyp", "urn:xoev-de:fim:codeliste:xdatenfelder.datentyp", "2.0", &datentyp);
        if let Some(attrs) = attrs {
            self.indent(d);
            self.out.push_str("<xdf:praezisierung");
            for (name, value) in [
                ("minLength", &attrs.min_length),
                ("maxLength", &attrs.max_length),
                ("minValue", &attrs.min_value),
                ("maxValue", &attrs.max_value),
                ("pattern", &attrs.pattern),
            ] {
                if let Some(value) = value {
                    self.out.push(' ');
                    self.out.push_str(name);
                    self.out.push_str("=\"");
                    self.escaped(value, true);
                    self.out.push('"');
                }
            }
            self.out.push_str("/>\n");
        }
        self.leaf_opt(d, "inhalt", nonblank(get(f, "inhalt")?)?.as_deref(), context);
        self.coded(d, "vorbefuellung", "urn:xoev-de:fim:codeliste:xdatenfelder.vorbefuellung", "1.0", "keine");
        if let Some(r) = reference {
            if r.canonical.is_none() && r.version.is_none() && r.uri.is_none() {
                self.indent(d);
                self.out.push_str("<xdf:codelisteReferenz/>\n");
            } else {
                self.open(d, "codelisteReferenz");
                self.leaf_opt(d + 1, "canonicalIdentification", r.canonical, context);
                self.leaf_opt(d + 1, "version", r.version, context);
                self.leaf_opt(d + 1, "canonicalVersionUri", r.uri, context);
                self.close(d, "codelisteReferenz");
            }
            if let Some(list) = r.list {
                let key = get(list, "key")?;
                self.scalar(d, "codeKey", key)?;
                let columns = match get(list, "columns")? {
                    Value::Array(columns) => columns,
                    other => return Err(format!("cannot iterate over {}", kind(other))),
                };
                if let Some(name) = columns.iter().find(|c| *c != key) {
                    self.scalar(d, "nameKey", name)?;
                }
            }
        }
        self.regeln(d, f, stand)?;
        self.close(depth, "datenfeld");
        Ok(())
    }

    /// A value from a codelist as element text (null writes nothing).
    fn scalar(&mut self, depth: usize, name: &str, value: &Value) -> R<()> {
        match value {
            Value::Null => {}
            Value::String(s) => self.leaf(depth, name, s, ""),
            Value::Number(_) | Value::Bool(_) => self.leaf(depth, name, &value.to_string(), ""),
            _ => return Err(format!("{name}: not text")),
        }
        Ok(())
    }

    /// A Datenfeldgruppe.
    fn group(&mut self, depth: usize, g: &'a Value, stand: &str) -> R<()> {
        let id = text(get(get(g, "identifikation")?, "id")?)?;
        let context = id.trim();
        self.codelist_ref(g)?;
        self.open(depth, "datenfeldgruppe");
        let d = depth + 1;
        self.allgemein(d, g, stand, None, context)?;
        self.schemaelement(d, g, context)?;
        self.regeln(d, g, stand)?;
        self.strukturen(d, g, stand, context)?;
        self.close(depth, "datenfeldgruppe");
        Ok(())
    }

    fn strukturen(&mut self, depth: usize, owner: &'a Value, stand: &str, context: &str) -> R<()> {
        let strukturen = items(get(owner, "struktur")?);
        if strukturen.is_empty() {
            return Err(format!(
                "{context}: no struktur; XDatenfelder 3.0.0 requires at least one in a schema or group"
            ));
        }
        for s in strukturen {
            let anzahl = text(get(s, "anzahl")?)?;
            let enthaelt = get(s, "enthaelt")?;
            let felder = get(enthaelt, "datenfeld")?;
            let gruppen = get(enthaelt, "datenfeldgruppe")?;
            self.open(depth, "struktur");
            let d = depth + 1;
            self.leaf(d, "anzahl", anzahl.trim(), context);
            self.bezuege(d, s, context)?;
            if felder.is_null() && gruppen.is_null() {
                self.indent(d);
                self.out.push_str("<xdf:enthaelt/>\n");
            } else {
                self.open(d, "enthaelt");
                for f in items(felder) {
                    self.datenfeld(d + 1, f, stand)?;
                }
                for g in items(gruppen) {
                    self.group(d + 1, g, stand)?;
                }
                self.close(d, "enthaelt");
            }
            self.close(depth, "struktur");
        }
        Ok(())
    }

    /// The Stammdatenschema.
    fn schema(&mut self, s: &'a Value, stand: &str) -> R<()> {
        let id = text(get(get(s, "identifikation")?, "id")?)?;
        let context = id.trim();
        let id3 = xdf3_id(&id).into_owned();
        self.codelist_ref(s)?;
        self.open(1, "stammdatenschema");
        let notes = carried(&[("bezeichnungAusgabe", nonblank(get(s, "bezeichnungAusgabe")?)?)]);
        self.allgemein(2, s, stand, notes.as_deref(), context)?;
        self.leaf(2, "bezeichnung", &text(get(s, "bezeichnungEingabe")?)?, context);
        self.leaf_opt(2, "hilfetext", nonblank(get(s, "hilfetext")?)?.as_deref(), context);
        let structure = code(get(s, "ableitungsmodifikationenStruktur")?)?;
        self.coded(
            2,
            "ableitungsmodifikationenStruktur",
            "urn:xoev-de:fim:codeliste:xdatenfelder.ableitungsmodifikationenStruktur",
            "1.0",
            &structure,
        );
        let representation = code(get(s, "ableitungsmodifikationenRepraesentation")?)?;
        self.coded(
            2,
            "ableitungsmodifikationenRepraesentation",
            "urn:xoev-de:fim:codeliste:xdatenfelder.ableitungsmodifikationenRepraesentation",
            "1.0",
            &representation,
        );
        self.open(2, "dokumentsteckbrief");
        let rest: String = id3.chars().skip(1).collect();
        self.leaf(3, "id", &format!("D{rest}"), context);
        self.close(2, "dokumentsteckbrief");
        self.regeln(2, s, stand)?;
        self.strukturen(2, s, stand, context)?;
        self.close(1, "stammdatenschema");
        Ok(())
    }
}

/// The attributes of a 3.0.0 praezisierung.
#[derive(Default)]
struct Attrs {
    min_length: Option<String>,
    max_length: Option<String>,
    min_value: Option<String>,
    max_value: Option<String>,
    pattern: Option<String>,
}

/// 2.0 praezisierung (JSON text) → the 3.0.0 attributes and a note for what they cannot hold.
fn praezisierung(value: &Value) -> R<(Option<Attrs>, Option<String>)> {
    if value.is_null() {
        return Ok((None, None));
    }
    let raw = text(value)?;
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok((None, None));
    }
    const NOTE: &str = "Präzisierung aus XDatenfelder 2.0, in 3.0.0 nicht als Attribut darstellbar: ";
    let Ok(Value::Object(json)) = serde_json::from_str::<Value>(raw) else {
        return Ok((None, Some(format!("{NOTE}{raw}"))));
    };
    let mut a = Attrs::default();
    let mut any = false;
    let mut notes = String::new();
    for (key, v) in &json {
        let v: Cow<'_, str> = match v {
            Value::String(s) => Cow::Borrowed(s.trim()),
            Value::Null => Cow::Borrowed(""),
            other => Cow::Owned(other.to_string()),
        };
        if v.is_empty() {
            continue;
        }
        let digits = is_ascii_digits(&v);
        let slot = match key.as_str() {
            "minLength" if digits => &mut a.min_length,
            "maxLength" if digits && v.bytes().any(|b| b != b'0') => &mut a.max_length,
            "minValue" => &mut a.min_value,
            "maxValue" => &mut a.max_value,
            "pattern" if v.contains(['[', ']', '(', ')', '{', '}', '*', '+', '?', '|', '\\', '^', '$']) => {
                &mut a.pattern
            }
            _ => {
                notes.push_str(if notes.is_empty() { NOTE } else { "; " });
                notes.push_str(key);
                notes.push_str(": ");
                notes.push_str(&v);
                continue;
            }
        };
        *slot = Some(v.into_owned());
        any = true;
    }
    Ok((any.then_some(a), (!notes.is_empty()).then_some(notes)))
}

// ------------------------------------------------------------------ the form's warnings

/// A missing codelist: its URN, version text and the fields that need it.
struct Missing {
    urn: String,
    version: Option<String>,
    fields: Vec<String>,
}

/// The references whose list is not at hand, grouped by list (`missing_codelists`).
fn missing_codelists(refs: &[Ref<'_>]) -> Vec<Missing> {
    let key = |r: &CodelistRef<'_>| r.uri.or(r.canonical).unwrap_or("").to_owned();
    let mut missing: Vec<&Ref<'_>> = refs.iter().filter(|r| r.r.list.is_none()).collect();
    missing.sort_by_key(|r| key(&r.r)); // stable, as jq's group_by
    let mut out: Vec<Missing> = Vec::new();
    let mut last: Option<String> = None;
    for m in missing {
        let k = key(&m.r);
        if last.as_ref() != Some(&k) {
            let r = &m.r;
            out.push(Missing {
                urn: r.uri.or(r.canonical).unwrap_or("(no identification)").to_owned(),
                version: if r.uri.is_some() || r.canonical.is_none() {
                    None
                } else {
                    Some(r.version.unwrap_or("").to_owned())
                },
                fields: Vec::new(),
            });
            last = Some(k);
        }
        out.last_mut().expect("pushed").fields.push(m.id.clone());
    }
    for m in &mut out {
        m.fields.sort();
        m.fields.dedup();
    }
    out
}

fn missing_text(m: &Missing) -> String {
    let version = match m.version.as_deref() {
        None => String::new(),
        Some("") => ", no version".into(),
        Some(v) => format!(" version {v}"),
    };
    let s = if m.fields.len() > 1 { "s" } else { "" };
    format!("{}{version} (field{s} {})", m.urn, m.fields.join(", "))
}

/// A value as jq's string interpolation shows it.
fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The program's `#warnings` (`form_warnings`).
fn form_warnings(stubs: &mut Vec<String>, refs: &[Ref<'_>], missing: &[Missing]) -> Vec<String> {
    stubs.sort();
    stubs.dedup();
    let mut out: Vec<String> = stubs
        .iter()
        .map(|id| format!("rule {id}: its script is an empty stub (function script() {{}}); no skript is written"))
        .collect();
    let mut newest: Vec<&Ref<'_>> =
        refs.iter().filter(|r| r.r.list.is_some() && r.r.version.is_none() && r.r.uri.is_none()).collect();
    newest.sort_by_key(|r| r.r.canonical);
    for group in newest.chunk_by(|a, b| a.r.canonical == b.r.canonical) {
        let first = &group[0].r;
        let mut ids: Vec<&str> = group.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        out.push(format!(
            "codelist {} has no version in the form (field{} {}); used the newest at hand, {}",
            first.canonical.unwrap_or("null"),
            if group.len() > 1 { "s" } else { "" },
            ids.join(", "),
            shown(first.list.and_then(|l| l.get("version"))),
        ));
    }
    for m in missing {
        out.push(format!("missing codelist {}: the reference is written without codeKey and nameKey", missing_text(m)));
    }
    out
}
