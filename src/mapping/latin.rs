//! XÖV `String.Latin` (DIN SPEC 91379): normalises text written into String.Latin elements to what the type allows, reporting every change.
//!
//! The allowed characters are those of the `String.Latin` pattern in the official `latinchars.xsd`
//! 1.1.1 (shipped in `schemas/xdatenfelder-3.0.0/`): single characters plus nine base letters with a
//! combining circumflex or caron. Real FIM exports break the rule (typographic quotes, `≤`, no-break
//! spaces …); a writer must not copy the violation, so text is first composed (Unicode NFC), then each
//! character outside the set is replaced by the equivalent in [`EQUIVALENTS`], and one with no
//! equivalent by `?`. Every change is reported (element, characters, replacement): nothing is dropped
//! silently. docs/xdf2-to-xdf3.md has the table for operators.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use std::borrow::Cow;

use crate::codec::xml::{Node, XmlTree};
use unicode_normalization::UnicodeNormalization;

/// What replaces a character that has no equivalent: visible, and itself String.Latin.
pub const UNKNOWN: &str = "?";

/// Characters outside String.Latin and what they become. An empty replacement removes a character
/// that is invisible by nature (zero-width space, soft hyphen, byte order mark).
pub const EQUIVALENTS: &[(char, &str)] = &[
    // Spaces: no-break, typographic and ideographic spaces become a plain space.
    ('\u{00A0}', " "),
    ('\u{1680}', " "),
    ('\u{2000}', " "),
    ('\u{2001}', " "),
    ('\u{2002}', " "),
    ('\u{2003}', " "),
    ('\u{2004}', " "),
    ('\u{2005}', " "),
    ('\u{2006}', " "),
    ('\u{2007}', " "),
    ('\u{2008}', " "),
    ('\u{2009}', " "),
    ('\u{200A}', " "),
    ('\u{202F}', " "),
    ('\u{205F}', " "),
    ('\u{3000}', " "),
    // Invisible: zero-width characters, word joiner, soft hyphen, byte order mark.
    ('\u{00AD}', ""),
    ('\u{200B}', ""),
    ('\u{200C}', ""),
    ('\u{200D}', ""),
    ('\u{2060}', ""),
    ('\u{FEFF}', ""),
    // Line and paragraph separators, next line: a line break.
    ('\u{0085}', "\n"),
    ('\u{2028}', "\n"),
    ('\u{2029}', "\n"),
    // Hyphens, dashes and the minus sign.
    ('\u{2010}', "-"),
    ('\u{2011}', "-"),
    ('\u{2012}', "-"),
    ('\u{2013}', "-"),
    ('\u{2014}', "-"),
    ('\u{2015}', "-"),
    ('\u{2212}', "-"),
    // Double quotes and the double prime.
    ('\u{201C}', "\""),
    ('\u{201D}', "\""),
    ('\u{201E}', "\""),
    ('\u{201F}', "\""),
    ('\u{2033}', "\""),
    // Single quotes, single guillemets and the prime.
    ('\u{2018}', "'"),
    ('\u{2019}', "'"),
    ('\u{201A}', "'"),
    ('\u{201B}', "'"),
    ('\u{2032}', "'"),
    ('\u{2039}', "'"),
    ('\u{203A}', "'"),
    // Ellipsis, bullets.
    ('\u{2026}', "..."),
    ('\u{2022}', "-"),
    ('\u{2023}', "-"),
    ('\u{2043}', "-"),
    ('\u{25AA}', "-"),
    ('\u{25CF}', "-"),
    ('\u{25E6}', "-"),
    // Comparisons and arrows.
    ('\u{2264}', "<="),
    ('\u{2265}', ">="),
    ('\u{2260}', "!="),
    ('\u{2248}', "~"),
    ('\u{2192}', "->"),
    ('\u{2190}', "<-"),
    ('\u{21D2}', "=>"),
    ('\u{2194}', "<->"),
    // Signs and letters with a Latin equivalent.
    ('\u{2122}', "(TM)"),
    ('\u{2030}', " Promille"),
    ('\u{2044}', "/"),
    ('\u{2215}', "/"),
    ('\u{03BC}', "\u{00B5}"),
    ('\u{FB00}', "ff"),
    ('\u{FB01}', "fi"),
    ('\u{FB02}', "fl"),
    ('\u{FB03}', "ffi"),
    ('\u{FB04}', "ffl"),
];

/// Inclusive ranges of single characters the `String.Latin` pattern of latinchars.xsd 1.1.1 allows.
const ALLOWED: &[(u32, u32)] = &[
    (0x9, 0xA),
    (0xD, 0xD),
    (0x20, 0x7E),
    (0xA1, 0xAC),
    (0xAE, 0x107),
    (0x10A, 0x11B),
    (0x11E, 0x123),
    (0x126, 0x131),
    (0x134, 0x15B),
    (0x15E, 0x16B),
    (0x16E, 0x17E),
    (0x18F, 0x18F),
    (0x1A0, 0x1A1),
    (0x1AF, 0x1B0),
    (0x1B7, 0x1B7),
    (0x1CD, 0x1D4),
    (0x1DE, 0x1DF),
    (0x1E4, 0x1F0),
    (0x1F4, 0x1F5),
    (0x1FA, 0x1FF),
    (0x218, 0x21B),
    (0x21E, 0x21F),
    (0x22A, 0x22B),
    (0x22E, 0x233),
    (0x259, 0x259),
    (0x292, 0x292),
    (0x1E02, 0x1E03),
    (0x1E0A, 0x1E0B),
    (0x1E10, 0x1E11),
    (0x1E1E, 0x1E21),
    (0x1E24, 0x1E27),
    (0x1E30, 0x1E31),
    (0x1E40, 0x1E41),
    (0x1E44, 0x1E45),
    (0x1E56, 0x1E57),
    (0x1E60, 0x1E63),
    (0x1E6A, 0x1E6B),
    (0x1E80, 0x1E85),
    (0x1E8C, 0x1E93),
    (0x1E9E, 0x1E9E),
    (0x1EA0, 0x1EA7),
    (0x1EAA, 0x1EAC),
    (0x1EAE, 0x1EC1),
    (0x1EC4, 0x1ED3),
    (0x1ED6, 0x1EDD),
    (0x1EE4, 0x1EF9),
    (0x20AC, 0x20AC),
];

/// Base letter + combining mark pairs the pattern allows (letters with no precomposed form).
const SEQUENCES: &[(char, char)] = &[
    ('M', '\u{302}'),
    ('N', '\u{302}'),
    ('m', '\u{302}'),
    ('n', '\u{302}'),
    ('D', '\u{302}'),
    ('d', '\u{302}'),
    ('J', '\u{30C}'),
    ('L', '\u{302}'),
    ('l', '\u{302}'),
];

/// True if `c` on its own is a String.Latin character.
pub fn allowed(c: char) -> bool {
    let c = c as u32;
    ALLOWED
        .binary_search_by(|&(low, high)| {
            if high < c {
                std::cmp::Ordering::Less
            } else if low > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// True if the whole text is String.Latin as it stands.
pub fn is_latin(text: &str) -> bool {
    // Most texts are printable ASCII, tabs and line breaks, all allowed (and no sequence starts
    // with a combining mark, which is not ASCII).
    if text.bytes().all(|b| matches!(b, 0x20..=0x7E | b'\t' | b'\n' | b'\r')) {
        return true;
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if allowed(c) {
            // (Only a combining mark can follow a base letter in a sequence.)
            if let Some(&next) = chars.peek()
                && !next.is_ascii()
                && SEQUENCES.contains(&(c, next))
            {
                chars.next();
            }
            continue;
        }
        return false;
    }
    true
}

/// One kind of change made to a text: a character, how often it occurred, and what replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: char,
    pub count: usize,
    pub to: &'static str,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.from.is_whitespace() || self.from.is_control() || self.to.is_empty() {
            String::new()
        } else {
            format!("{} ", self.from)
        };
        let to = match self.to {
            "" => "removed".to_owned(),
            " " => "space".to_owned(),
            "\n" => "line break".to_owned(),
            to => format!("{to:?}"),
        };
        let times = if self.count > 1 { format!("{}× ", self.count) } else { String::new() };
        write!(f, "{times}{shown}(U+{:04X}) → {to}", self.from as u32)
    }
}

/// The text normalised to String.Latin and the changes made, or `None` if it already is.
pub fn normalise(text: &str) -> Option<(String, Vec<Change>)> {
    if is_latin(text) {
        return None;
    }
    // Composition first: `a` + combining diaeresis is `ä`, which is allowed.
    let composed: String = text.nfc().collect();
    let mut out = String::with_capacity(composed.len());
    let mut changes: BTreeMap<char, Change> = BTreeMap::new();
    let mut chars = composed.chars().peekable();
    while let Some(c) = chars.next() {
        if allowed(c) {
            out.push(c);
            if let Some(&next) = chars.peek()
                && SEQUENCES.contains(&(c, next))
            {
                out.push(next);
                chars.next();
            }
            continue;
        }
        let to = EQUIVALENTS.iter().find(|(from, _)| *from == c).map_or(UNKNOWN, |(_, to)| *to);
        out.push_str(to);
        changes.entry(c).or_insert(Change { from: c, count: 0, to }).count += 1;
    }
    // `composed` may differ from `text` only by composition: that alone is no change worth a warning.
    if changes.is_empty() {
        return Some((out, Vec::new()));
    }
    Some((out, changes.into_values().collect()))
}

/// Normalises the text of every element named (by local name, prefix ignored) in `elements`, in a
/// tree written with the XML conventions (DESIGN.md); attributes are left as they are. Returns one
/// warning per changed element, naming the nearest enclosing FIM id (`identifikation/id`), the
/// element and the characters. `source_ids` maps an id of the output to the id the source record
/// has (the program's `"#ids"`), so that a warning names what the region can find in its export.
pub fn normalise_tree(tree: &mut Value, elements: &[String], source_ids: &Map<String, Value>) -> Vec<String> {
    let warnings = warnings(tree, elements, source_ids);
    fix_tree(tree, elements, false);
    warnings
}

/// The warnings of [`normalise_tree`], without changing the tree: the XML writer fixes the texts
/// as it writes them ([`fix`]).
pub fn warnings<T: XmlTree>(tree: &T, elements: &[String], source_ids: &Map<String, Value>) -> Vec<String> {
    let mut warnings = Vec::new();
    walk(tree, &Names { elements, source_ids }, "", None, &mut warnings);
    warnings
}

/// The text element `name` (as written, with prefix) is to hold: normalised if the element is one
/// of `elements` and the text is not String.Latin, else `None` (see [`crate::codec::xml::encode_tree`]).
pub fn fix(elements: &[String], name: &str, text: &str) -> Option<String> {
    latin_element(elements, name).and_then(|_| normalise(text)).map(|(fixed, _)| fixed)
}

/// What [`walk`] looks names up in.
struct Names<'a> {
    elements: &'a [String],
    source_ids: &'a Map<String, Value>,
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}

/// The local name of element `name` if it is one of `elements` (a String.Latin element).
fn latin_element<'n>(elements: &[String], name: &'n str) -> Option<&'n str> {
    let local = local(name);
    elements.iter().any(|e| e == local).then_some(local)
}

/// The `identifikation/id` text of an element, if it has one.
fn own_id<T: XmlTree>(element: &T) -> Option<String> {
    let (_, identification) = element.entries().find(|(k, _)| local(k) == "identifikation")?;
    let (_, id) = identification.entries().find(|(k, _)| local(k) == "id")?;
    id.string().map(Cow::into_owned)
}

fn walk<T: XmlTree>(value: &T, names: &Names<'_>, context: &str, element: Option<&str>, warnings: &mut Vec<String>) {
    match value.node() {
        Node::Scalar(text) => {
            if let Some(element) = element
                && value.string().is_some()
                && let Some((_, changes)) = normalise(&text)
                && !changes.is_empty()
            {
                let changes: Vec<String> = changes.iter().map(Change::to_string).collect();
                let place = if context.is_empty() { element.to_owned() } else { format!("{context} {element}") };
                warnings.push(format!("String.Latin (DIN SPEC 91379): {place}: {}", changes.join(", ")));
            }
        }
        Node::Array(items) => {
            for item in items {
                walk(item, names, context, element, warnings);
            }
        }
        Node::Object => {
            let id = own_id(value).map(|id| match names.source_ids.get(&id).and_then(Value::as_str) {
                Some(source_id) => source_id.to_owned(),
                None => id,
            });
            let context = id.as_deref().unwrap_or(context);
            for (key, child) in value.entries() {
                if key.starts_with('@') {
                    continue;
                }
                if key == "#text" {
                    walk(child, names, context, element, warnings);
                    continue;
                }
                walk(child, names, context, latin_element(names.elements, &key), warnings);
            }
        }
        Node::Null => {}
    }
}

/// Replaces the strings [`walk`] warns about by their normalised text (`latin`: inside an element
/// of the list).
fn fix_tree(value: &mut Value, elements: &[String], latin: bool) {
    match value {
        Value::String(text) => {
            if latin && let Some((fixed, _)) = normalise(text) {
                *text = fixed;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| fix_tree(item, elements, latin)),
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key.starts_with('@') {
                    continue;
                }
                let latin = if key == "#text" { latin } else { latin_element(elements, key).is_some() };
                fix_tree(child, elements, latin);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Code point ranges and two-character sequences (base, combining mark) of a pattern.
    type Pattern = (Vec<(u32, u32)>, Vec<(char, char)>);

    /// The ranges and sequences of the official pattern, read from the shipped latinchars.xsd.
    fn official_pattern() -> Pattern {
        let xsd =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/xdatenfelder-3.0.0/latinchars.xsd"))
                .expect("the official latinchars.xsd is shipped in schemas/");
        let start = xsd.find("<xs:pattern value=\"").expect("a pattern") + 19;
        let pattern = &xsd[start..start + xsd[start..].find('"').unwrap()];
        let char_of = |hex: &str| u32::from_str_radix(hex.trim_start_matches("&#x").trim_end_matches(';'), 16).unwrap();
        let class = &pattern[pattern.find('[').unwrap() + 1..pattern.find(']').unwrap()];
        let refs: Vec<&str> = class.split_inclusive(';').collect();
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < refs.len() {
            let low = char_of(refs[i]);
            if let Some(high) = refs.get(i + 1).and_then(|r| r.strip_prefix('-')) {
                ranges.push((low, char_of(high)));
                i += 2;
            } else {
                ranges.push((low, low));
                i += 1;
            }
        }
        let tail = &pattern[pattern.find("])|(").unwrap() + 4..];
        let sequences = tail
            .trim_end_matches("))*")
            .split('|')
            .map(|pair| {
                let chars: Vec<u32> = pair.split_inclusive(';').map(char_of).collect();
                (char::from_u32(chars[0]).unwrap(), char::from_u32(chars[1]).unwrap())
            })
            .collect();
        (ranges, sequences)
    }

    #[test]
    fn the_allowed_set_is_the_official_pattern() {
        let (ranges, sequences) = official_pattern();
        assert_eq!(ALLOWED, ranges.as_slice());
        assert_eq!(SEQUENCES, sequences.as_slice());
        for c in (0..0x3_0000).filter_map(char::from_u32) {
            let official = ranges.iter().any(|&(low, high)| (low..=high).contains(&(c as u32)));
            assert_eq!(allowed(c), official, "U+{:04X}", c as u32);
        }
        // is_latin's shortcut for ASCII text agrees with the set.
        for c in (0..0x80).filter_map(char::from_u32) {
            assert_eq!(is_latin(&format!("a{c}b")), allowed(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn every_equivalent_is_outside_the_set_and_itself_latin() {
        for (from, to) in EQUIVALENTS {
            assert!(!allowed(*from), "U+{:04X} is allowed already", *from as u32);
            assert!(is_latin(to), "the equivalent of U+{:04X} is not String.Latin", *from as u32);
        }
        let mut seen = std::collections::HashSet::new();
        assert!(EQUIVALENTS.iter().all(|(from, _)| seen.insert(*from)), "a character is listed twice");
        assert!(is_latin(UNKNOWN));
    }

    #[test]
    fn typographic_characters_become_their_equivalents_and_the_rest_is_reported() {
        let (text, changes) = normalise("„Größe“ ≤ 5\u{a0}m – ok… 😀 \u{200b}").unwrap();
        assert_eq!(text, "\"Größe\" <= 5 m - ok... ? ");
        assert!(is_latin(&text));
        let shown: Vec<String> = changes.iter().map(Change::to_string).collect();
        assert_eq!(
            shown,
            [
                "(U+00A0) → space",
                "(U+200B) → removed",
                "– (U+2013) → \"-\"",
                "“ (U+201C) → \"\\\"\"",
                "„ (U+201E) → \"\\\"\"",
                "… (U+2026) → \"...\"",
                "≤ (U+2264) → \"<=\"",
                "😀 (U+1F600) → \"?\"",
            ]
        );
        assert_eq!(normalise("Straße, Größe, Ş, M\u{302}, €"), None, "String.Latin text is left alone");
        // Decomposed text is composed: `a` + U+0308 is `ä`, no warning needed.
        assert_eq!(normalise("a\u{308}"), Some(("ä".to_owned(), Vec::new())));
        let (_, changes) = normalise("„a“ „b“").unwrap();
        assert_eq!(changes[1].count, 2, "{changes:?}");
    }

    #[test]
    fn only_the_named_elements_change_and_each_change_is_a_warning_with_its_place() {
        let mut tree = json!({"xdf:msg": {
            "xdf:name": "„Form“",
            "xdf:skript": "if (a ≤ b) {}",
            "xdf:struktur": [{"xdf:enthaelt": {"xdf:datenfeld": {
                "xdf:identifikation": {"xdf:id": "F60000000001"},
                "xdf:bezug": [{"@link": "https://example.org/„x“", "#text": "§ 1 – 3"}, "ok"],
                "xdf:beschreibung": "Höhe\u{a0}in\u{a0}m"
            }}}]
        }});
        let names = ["name", "bezug", "beschreibung"].map(String::from);
        let ids: Map<String, Value> = serde_json::from_value(json!({"F60000000001": "F60000001"})).unwrap();
        let warnings = normalise_tree(&mut tree, &names, &ids);
        assert_eq!(tree["xdf:msg"]["xdf:name"], "\"Form\"");
        assert_eq!(tree["xdf:msg"]["xdf:skript"], "if (a ≤ b) {}", "not a String.Latin element");
        let field = &tree["xdf:msg"]["xdf:struktur"][0]["xdf:enthaelt"]["xdf:datenfeld"];
        assert_eq!(field["xdf:bezug"][0]["#text"], "§ 1 - 3");
        assert_eq!(field["xdf:bezug"][0]["@link"], "https://example.org/„x“", "attributes are not text");
        assert_eq!(field["xdf:beschreibung"], "Höhe in m");
        assert_eq!(
            warnings,
            [
                "String.Latin (DIN SPEC 91379): name: “ (U+201C) → \"\\\"\", „ (U+201E) → \"\\\"\"",
                "String.Latin (DIN SPEC 91379): F60000001 bezug: – (U+2013) → \"-\"",
                "String.Latin (DIN SPEC 91379): F60000001 beschreibung: 2× (U+00A0) → space",
            ]
        );
    }
}
