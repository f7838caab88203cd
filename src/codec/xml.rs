//! XML ⇄ tree: a streaming quick-xml reader that builds the tree, and a writer that turns a tree back into XML.

use quick_xml::NsReader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value};

use super::{Decoded, Limits, line_of};

/// Why a document could not be read as XML.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("not valid UTF-8 at byte {0} (the bridge reads UTF-8 XML only)")]
    Encoding(usize),
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("line {line}: DOCTYPE declarations are not accepted (no DTDs, no custom entities)")]
    Doctype { line: usize },
    #[error("line {line}: unknown entity `&{name};` (only the five predefined XML entities are allowed)")]
    Entity { line: usize, name: String },
    #[error("line {line}: nesting deeper than {limit} levels")]
    TooDeep { line: usize, limit: usize },
    #[error("document ends inside element <{open}> (truncated?)")]
    Truncated { open: String },
    #[error("no root element")]
    Empty,
    #[error("content after the root element at line {line}")]
    TrailingContent { line: usize },
}

struct Open {
    name: String,
    map: Map<String, Value>,
    text: Vec<String>,
    has_children: bool,
}

/// Reads a whole XML document into a tree `{ "<root local name>": … }`.
pub fn decode(bytes: &[u8], arrays: &[String], limits: Limits) -> Result<Decoded, XmlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(XmlError::Encoding(e.valid_up_to()));
    }
    let mut reader = NsReader::from_reader(bytes);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut namespace = None;
    let syntax = |reader: &NsReader<&[u8]>, message: String| XmlError::Syntax {
        line: line_of(bytes, reader.buffer_position() as usize),
        message,
    };

    loop {
        let event = reader
            .read_resolved_event()
            .map(|(ns, ev)| {
                let ns = match ns {
                    ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.0).into_owned()),
                    _ => None,
                };
                (ns, ev)
            })
            .map_err(|e| syntax(&reader, e.to_string()))?;
        let line = || line_of(bytes, reader.buffer_position() as usize);
        match event {
            (ns, Event::Start(start)) | (ns, Event::Empty(start)) if root.is_some() => {
                let _ = (ns, start);
                return Err(XmlError::TrailingContent { line: line() });
            }
            (ns, Event::Start(start)) => {
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep { line: line(), limit: limits.max_depth });
                }
                if stack.is_empty() {
                    namespace = ns;
                }
                stack.push(open_element(&start).map_err(|m| syntax(&reader, m))?);
            }
            (ns, Event::Empty(start)) => {
                if stack.is_empty() {
                    namespace = ns;
                }
                let element = open_element(&start).map_err(|m| syntax(&reader, m))?;
                close(element, &mut stack, &mut root, arrays);
            }
            (_, Event::End(_)) => {
                let element = stack.pop().ok_or_else(|| syntax(&reader, "unexpected end tag".into()))?;
                close(element, &mut stack, &mut root, arrays);
            }
            (_, Event::Text(text)) => {
                let text = text.xml_content().map_err(|e| syntax(&reader, e.to_string()))?;
                push_text(&mut stack, &root, &text, line)?;
            }
            (_, Event::CData(data)) => {
                let text = String::from_utf8_lossy(&data).into_owned();
                push_text(&mut stack, &root, &text, line)?;
            }
            (_, Event::GeneralRef(reference)) => {
                let text = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = reference.decode().map_err(|e| syntax(&reader, e.to_string()))?;
                        match resolve_predefined_entity(&name) {
                            Some(resolved) => resolved.to_owned(),
                            None => {
                                return Err(XmlError::Entity { line: line(), name: name.into_owned() });
                            }
                        }
                    }
                    Err(e) => return Err(syntax(&reader, e.to_string())),
                };
                push_text(&mut stack, &root, &text, line)?;
            }
            (_, Event::DocType(_)) => return Err(XmlError::Doctype { line: line() }),
            (_, Event::Decl(_) | Event::PI(_) | Event::Comment(_)) => {}
            (_, Event::Eof) => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError::Truncated { open: open.name.clone() });
    }
    let (name, value) = root.ok_or(XmlError::Empty)?;
    let mut tree = Map::new();
    tree.insert(name.clone(), value);
    Ok(Decoded { tree: Value::Object(tree), root: Some(name), namespace })
}

fn open_element(start: &BytesStart<'_>) -> Result<Open, String> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut map = Map::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = format!("@{}", String::from_utf8_lossy(attr.key.as_ref()));
        let value = attr.unescape_value().map_err(|e| format!("attribute {key} of <{name}>: {e}"))?;
        if map.insert(key.clone(), Value::String(value.into_owned())).is_some() {
            return Err(format!("duplicate attribute {key} on <{name}>"));
        }
    }
    Ok(Open { name, map, text: Vec::new(), has_children: false })
}

fn push_text(
    stack: &mut [Open],
    root: &Option<(String, Value)>,
    text: &str,
    line: impl Fn() -> usize,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push(text.to_owned());
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if root.is_some() => Err(XmlError::TrailingContent { line: line() }),
        None => Err(XmlError::Syntax { line: line(), message: "text before the root element".into() }),
    }
}

fn close(element: Open, stack: &mut [Open], root: &mut Option<(String, Value)>, arrays: &[String]) {
    let Open { name, mut map, text, has_children } = element;
    let value = if map.is_empty() && !has_children {
        Value::String(text.concat())
    } else {
        // Beside child elements only non-blank text is content; indentation is not.
        let text: String = if has_children {
            text.iter().filter(|t| !t.trim().is_empty()).map(String::as_str).collect()
        } else {
            text.concat()
        };
        if !text.is_empty() {
            map.insert("#text".into(), Value::String(text));
        }
        Value::Object(map)
    };
    match stack.last_mut() {
        Some(parent) => {
            parent.has_children = true;
            insert_child(&mut parent.map, name, value, arrays);
        }
        None => *root = Some((name, value)),
    }
}

fn insert_child(map: &mut Map<String, Value>, name: String, value: Value, arrays: &[String]) {
    // Element values are strings or objects, so an array here is always one we made for repeats.
    match map.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None if arrays.contains(&name) => {
            map.insert(name, Value::Array(vec![value]));
        }
        None => {
            map.insert(name, value);
        }
    }
}

/// Why a tree cannot be written as XML.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("the document must be an object with exactly one key (the root element), got {0}")]
    Root(String),
    #[error("`{0}` is not a valid XML name")]
    Name(String),
    #[error("attribute `{0}` must be a string, number or boolean")]
    Attribute(String),
    #[error("element `{0}` holds a nested array; an element repeats, it cannot contain a bare list")]
    NestedArray(String),
}

/// Writes a tree `{ "<root>": … }` as an indented XML document with an XML declaration.
/// Element names are written as given (prefixes included); `null` values write nothing.
pub fn encode(tree: &Value) -> Result<String, EncodeError> {
    let Value::Object(map) = tree else {
        return Err(EncodeError::Root(kind(tree).into()));
    };
    if map.len() != 1 {
        return Err(EncodeError::Root(format!("{} keys", map.len())));
    }
    let (name, value) = map.iter().next().expect("one key");
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_element(&mut out, name, value, 0)?;
    Ok(out)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_name(name: &str) -> Result<(), EncodeError> {
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    let valid_rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid_start && valid_rest { Ok(()) } else { Err(EncodeError::Name(name.into())) }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_element(out: &mut String, name: &str, value: &Value, depth: usize) -> Result<(), EncodeError> {
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => {
            for item in items {
                if item.is_array() {
                    return Err(EncodeError::NestedArray(name.into()));
                }
                write_element(out, name, item, depth)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            check_name(name)?;
            indent(out, depth);
            out.push('<');
            out.push_str(name);
            for (key, attr) in map.iter().filter(|(k, _)| k.starts_with('@')) {
                if attr.is_null() {
                    continue;
                }
                let text = scalar_text(attr).ok_or_else(|| EncodeError::Attribute(key.clone()))?;
                check_name(&key[1..])?;
                out.push(' ');
                out.push_str(&key[1..]);
                out.push_str("=\"");
                out.push_str(&escape_attribute(&text));
                out.push('"');
            }
            let text = map.get("#text").and_then(scalar_text);
            let children: Vec<_> =
                map.iter().filter(|(k, v)| !k.starts_with('@') && *k != "#text" && !v.is_null()).collect();
            match (text, children.is_empty()) {
                (None, true) => out.push_str("/>\n"),
                (Some(text), true) => {
                    out.push('>');
                    out.push_str(&escape_text(&text));
                    close_tag(out, name);
                }
                (text, false) => {
                    out.push_str(">\n");
                    if let Some(text) = text {
                        indent(out, depth + 1);
                        out.push_str(&escape_text(&text));
                        out.push('\n');
                    }
                    for (child, value) in children {
                        write_element(out, child, value, depth + 1)?;
                    }
                    indent(out, depth);
                    close_tag(out, name);
                }
            }
            Ok(())
        }
        scalar => {
            check_name(name)?;
            indent(out, depth);
            let text = scalar_text(scalar).expect("scalar");
            if text.is_empty() {
                out.push('<');
                out.push_str(name);
                out.push_str("/>\n");
            } else {
                out.push('<');
                out.push_str(name);
                out.push('>');
                out.push_str(&escape_text(&text));
                close_tag(out, name);
            }
            Ok(())
        }
    }
}

/// Escapes element text; a carriage return is written as a reference so that it survives parsing.
fn escape_text(text: &str) -> String {
    escape(text).replace('\r', "&#13;")
}

/// Escapes an attribute value; tabs and line breaks are written as references because a parser
/// would otherwise normalise them to spaces.
fn escape_attribute(text: &str) -> String {
    escape(text).replace('\r', "&#13;").replace('\n', "&#10;").replace('\t', "&#9;")
}

fn close_tag(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tree(xml: &str, arrays: &[&str]) -> Value {
        let arrays: Vec<String> = arrays.iter().map(|s| s.to_string()).collect();
        decode(xml.as_bytes(), &arrays, Limits::default()).unwrap().tree
    }

    #[test]
    fn repeated_elements_become_arrays_and_single_ones_do_not() {
        let t = tree("<r><a>1</a><b>x</b><a>2</a><a>3</a></r>", &[]);
        assert_eq!(t, json!({"r": {"a": ["1", "2", "3"], "b": "x"}}));
    }

    #[test]
    fn elements_listed_in_arrays_are_always_arrays() {
        let t = tree("<r><struktur><x/></struktur></r>", &["struktur"]);
        assert_eq!(t, json!({"r": {"struktur": [{"x": ""}]}}));
        let t = tree("<r><struktur>a</struktur><struktur>b</struktur><struktur>c</struktur></r>", &["struktur"]);
        assert_eq!(t["r"]["struktur"], json!(["a", "b", "c"]));
    }

    #[test]
    fn attributes_text_and_namespaces_are_kept() {
        let xml = r#"<x:r xmlns:x="urn:x" a="1"><x:c listURI="urn:l">v</x:c><code>plain &amp; &#x263A;</code></x:r>"#;
        let decoded = decode(xml.as_bytes(), &[], Limits::default()).unwrap();
        assert_eq!(decoded.root.as_deref(), Some("r"));
        assert_eq!(decoded.namespace.as_deref(), Some("urn:x"));
        assert_eq!(
            decoded.tree,
            json!({"r": {"@xmlns:x": "urn:x", "@a": "1", "c": {"@listURI": "urn:l", "#text": "v"}, "code": "plain & ☺"}})
        );
    }

    #[test]
    fn mixed_text_is_kept_and_indentation_is_not() {
        let t = tree("<r>\n  Hallo <b>Welt</b> und\n  <i/>\n</r>", &[]);
        assert_eq!(t, json!({"r": {"b": "Welt", "i": "", "#text": "\n  Hallo  und\n  "}}));
        let t = tree("<r>\n  <a>1</a>\n</r>", &[]);
        assert_eq!(t, json!({"r": {"a": "1"}}));
    }

    #[test]
    fn empty_elements_are_empty_strings_or_attribute_objects() {
        let t = tree(r#"<r><a/><b></b><c k="v"/></r>"#, &[]);
        assert_eq!(t, json!({"r": {"a": "", "b": "", "c": {"@k": "v"}}}));
    }

    #[test]
    fn truncated_documents_name_the_open_element() {
        let err = decode(b"<r><a>text</a><b>cut", &[], Limits::default()).unwrap_err();
        assert_eq!(err, XmlError::Truncated { open: "b".into() });
        let err = decode(b"<r>\n<a>text</a>\n<b att", &[], Limits::default()).unwrap_err();
        assert!(matches!(err, XmlError::Syntax { line: 3, .. }), "{err:?}");
    }

    #[test]
    fn doctype_unknown_entities_and_bad_utf8_are_rejected() {
        let dtd = b"<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY a \"b\">]><r>&a;</r>";
        assert!(matches!(decode(dtd, &[], Limits::default()), Err(XmlError::Doctype { line: 2 })));
        assert!(matches!(decode(b"<r>&a;</r>", &[], Limits::default()), Err(XmlError::Entity { .. })));
        assert_eq!(decode(b"<r>\xff</r>", &[], Limits::default()), Err(XmlError::Encoding(3)));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
        assert!(matches!(decode(deep.as_bytes(), &[], Limits::default()), Err(XmlError::TooDeep { .. })));
    }

    #[test]
    fn trees_round_trip_through_xml() {
        let original = json!({"p:r": {"@xmlns:p": "urn:p", "@a": "1 < 2", "p:x": ["a", "b"], "p:y": {"@k": "v", "#text": "t"}, "p:z": ""}});
        let xml = encode(&original).unwrap();
        let back = decode(xml.as_bytes(), &[], Limits::default()).unwrap();
        assert_eq!(back.namespace.as_deref(), Some("urn:p"));
        assert_eq!(
            back.tree,
            json!({"r": {"@xmlns:p": "urn:p", "@a": "1 < 2", "x": ["a", "b"], "y": {"@k": "v", "#text": "t"}, "z": ""}})
        );
    }

    #[test]
    fn line_breaks_and_tabs_survive_the_round_trip() {
        let original = json!({"r": {"@a": "x\ty\r\nz", "b": "one\r\ntwo"}});
        let xml = encode(&original).unwrap();
        assert_eq!(decode(xml.as_bytes(), &[], Limits::default()).unwrap().tree, original);
    }

    #[test]
    fn encode_skips_nulls_and_rejects_bad_names() {
        let xml = encode(&json!({"r": {"a": null, "b": 1, "c": true}})).unwrap();
        assert!(xml.contains("<b>1</b>") && xml.contains("<c>true</c>") && !xml.contains("<a"));
        assert_eq!(encode(&json!({"r": {"1x": "v"}})), Err(EncodeError::Name("1x".into())));
        assert!(matches!(encode(&json!({"a": 1, "b": 2})), Err(EncodeError::Root(_))));
    }
}
