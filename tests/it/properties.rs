//! Property tests: the XML tree conventions round-trip, a mapping's `arrays` shape a tree as decoding
//! with them would, outbox file names are safe and injective,
//! and the content hash ignores whitespace between elements and nothing else.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use portal_bridge::codec::{Limits, tree_hash, xml};
use portal_bridge::delivery::outbox::safe_stem;
use portal_bridge::domain::ItemKey;
use portal_bridge::mapping::engine::{to_json, to_val_with_arrays};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// An element in the conventions' canonical form (what the reader produces): text only, or
/// attributes with text, or attributes and/or child elements. Mixed content is not generated: its
/// blank runs between children are indentation by definition.
#[derive(Debug, Clone)]
enum El {
    /// `<a>text</a>` → `"text"` (also `<a/>` → `""`).
    Text(String),
    /// `<a k="v">text</a>` → `{"@k": "v", "#text": "text"}`; at least one attribute.
    AttrText(BTreeMap<String, String>, String),
    /// `<a k="v"><b/>…</a>` → `{"@k": "v", "b": …}`; a name with several elements is an array.
    Node(BTreeMap<String, String>, BTreeMap<String, Vec<El>>),
}

/// Characters XML can carry, biased towards the ones that need escaping or normalising.
fn xml_text() -> impl Strategy<Value = String> {
    let tricky = prop_oneof![
        Just('<'),
        Just('>'),
        Just('&'),
        Just('"'),
        Just('\''),
        Just('\r'),
        Just('\n'),
        Just('\t'),
        Just(' '),
        Just(']'),
        Just('\u{85}'),
        Just('\u{2028}'),
        Just('ß'),
        Just('😀'),
        any::<char>(),
        proptest::char::range('a', 'z'),
    ];
    prop::collection::vec(tricky, 0..10).prop_map(|chars| {
        chars
            .into_iter()
            .filter(|&c| (c >= ' ' || matches!(c, '\t' | '\n' | '\r')) && c != '\u{FFFE}' && c != '\u{FFFF}')
            .collect()
    })
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,4}".prop_filter("xml… names are reserved", |n| !n.starts_with("xml"))
}

fn attributes(min: usize) -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(name(), xml_text(), min..4)
}

fn element() -> impl Strategy<Value = El> {
    let leaf = prop_oneof![
        xml_text().prop_map(El::Text),
        (attributes(1), xml_text().prop_filter("non-empty", |t| !t.is_empty())).prop_map(|(a, t)| El::AttrText(a, t)),
        attributes(1).prop_map(|a| El::Node(a, BTreeMap::new())),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        (attributes(0), prop::collection::btree_map(name(), prop::collection::vec(inner, 1..4), 1..4))
            .prop_map(|(a, children)| El::Node(a, children))
    })
}

/// The tree the reader makes of an element.
fn value(el: &El) -> Value {
    match el {
        El::Text(text) => Value::String(text.clone()),
        El::AttrText(attrs, text) => {
            let mut map = attribute_map(attrs);
            map.insert("#text".into(), Value::String(text.clone()));
            Value::Object(map)
        }
        El::Node(attrs, children) => {
            let mut map = attribute_map(attrs);
            for (name, items) in children {
                let v = match items.as_slice() {
                    [one] => value(one),
                    many => Value::Array(many.iter().map(value).collect()),
                };
                map.insert(name.clone(), v);
            }
            Value::Object(map)
        }
    }
}

fn attribute_map(attrs: &BTreeMap<String, String>) -> Map<String, Value> {
    attrs.iter().map(|(k, v)| (format!("@{k}"), Value::String(v.clone()))).collect()
}

fn tree(root: &str, el: &El) -> Value {
    let mut map = Map::new();
    map.insert(root.to_owned(), value(el));
    Value::Object(map)
}

/// Writes XML with chosen whitespace between tags where it is insignificant (around the root and
/// between the children of an element that has children): `ws` yields the whitespace to put there.
fn write(out: &mut String, name: &str, el: &El, ws: &mut impl FnMut() -> String) {
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\r', "&#13;")
            .replace('\n', "&#10;")
            .replace('\t', "&#9;")
    };
    // Element text keeps its line feeds and tabs raw; only a carriage return needs a reference.
    let text = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\r', "&#13;");
    let open = |out: &mut String, attrs: &BTreeMap<String, String>| {
        out.push('<');
        out.push_str(name);
        for (k, v) in attrs {
            out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
    };
    match el {
        El::Text(t) if t.is_empty() => out.push_str(&format!("<{name}/>")),
        El::Text(t) => out.push_str(&format!("<{name}>{}</{name}>", text(t))),
        El::AttrText(attrs, t) => {
            open(out, attrs);
            out.push_str(&format!(">{}</{name}>", text(t)));
        }
        El::Node(attrs, children) if children.is_empty() => {
            open(out, attrs);
            out.push_str("/>");
        }
        El::Node(attrs, children) => {
            open(out, attrs);
            out.push('>');
            for (child, items) in children {
                for item in items {
                    out.push_str(&ws());
                    write(out, child, item, ws);
                }
            }
            out.push_str(&ws());
            out.push_str(&format!("</{name}>"));
        }
    }
}

fn document(root: &str, el: &El, ws: &mut impl FnMut() -> String) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    out.push_str(&ws());
    write(&mut out, root, el, ws);
    out.push_str(&ws());
    out
}

fn decode(xml: &str) -> Value {
    xml::decode(xml.as_bytes(), &[], Limits::default()).unwrap_or_else(|e| panic!("{e}\n{xml}")).tree
}

/// One change that makes a different tree: to a text, an attribute or an element.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Inserts a space at the start of the n-th text: whitespace inside text is content.
    Text,
    /// Appends to the n-th attribute value.
    AttributeValue,
    /// Adds an attribute to the n-th element.
    AddAttribute,
    /// Renames the n-th child element.
    Rename,
    /// Removes the n-th child element.
    Remove,
    /// Adds an empty child element to the n-th element.
    AddElement,
}

/// Applies `change` at the `n`-th place it fits (counted in document order, cyclically);
/// false if it fits nowhere.
fn apply(root: &mut El, change: Change, n: usize) -> bool {
    fn places(el: &El, change: Change) -> usize {
        let own = match (change, el) {
            (Change::Text, El::Text(_) | El::AttrText(..)) => 1,
            (Change::AttributeValue, El::AttrText(a, _) | El::Node(a, _)) => a.len(),
            (Change::AddAttribute | Change::AddElement, _) => 1,
            (Change::Rename | Change::Remove, El::Node(_, c)) => c.values().map(Vec::len).sum(),
            _ => 0,
        };
        let below = match el {
            El::Node(_, c) => c.values().flatten().map(|e| places(e, change)).sum(),
            _ => 0,
        };
        own + below
    }
    fn at(el: &mut El, change: Change, n: &mut usize) -> bool {
        let own = match (change, &*el) {
            (Change::Text, El::Text(_) | El::AttrText(..)) => 1,
            (Change::AttributeValue, El::AttrText(a, _) | El::Node(a, _)) => a.len(),
            (Change::AddAttribute | Change::AddElement, _) => 1,
            (Change::Rename | Change::Remove, El::Node(_, c)) => c.values().map(Vec::len).sum(),
            _ => 0,
        };
        if *n < own {
            let index = *n;
            match (change, el) {
                (Change::Text, El::Text(t) | El::AttrText(_, t)) => t.insert(0, ' '),
                (Change::AttributeValue, El::AttrText(a, _) | El::Node(a, _)) => {
                    a.values_mut().nth(index).unwrap().push('x');
                }
                (Change::AddAttribute, el) => {
                    let attribute = BTreeMap::from([("new-attribute".to_owned(), String::new())]);
                    match el {
                        El::Text(t) if t.is_empty() => *el = El::Node(attribute, BTreeMap::new()),
                        El::Text(t) => *el = El::AttrText(attribute, std::mem::take(t)),
                        El::AttrText(a, _) | El::Node(a, _) => a.extend(attribute),
                    }
                }
                (Change::AddElement, el) => match el {
                    El::Node(_, c) => c.entry("new-element".into()).or_default().push(El::Text(String::new())),
                    El::Text(t) if t.is_empty() => {
                        let mut c = BTreeMap::new();
                        c.insert("new-element".to_owned(), vec![El::Text(String::new())]);
                        *el = El::Node(BTreeMap::new(), c);
                    }
                    // Text and child elements together are mixed content; change the text instead.
                    El::Text(t) | El::AttrText(_, t) => t.push('y'),
                },
                (Change::Rename | Change::Remove, El::Node(_, c)) => {
                    let mut left = index;
                    let name = c
                        .iter()
                        .find_map(|(name, items)| {
                            if left < items.len() {
                                Some(name.clone())
                            } else {
                                left -= items.len();
                                None
                            }
                        })
                        .unwrap();
                    let items = c.get_mut(&name).unwrap();
                    let item = items.remove(left);
                    if items.is_empty() {
                        c.remove(&name);
                    }
                    if let Change::Rename = change {
                        c.entry(format!("{name}-renamed")).or_default().push(item);
                    }
                }
                _ => unreachable!(),
            }
            return true;
        }
        *n -= own;
        match el {
            El::Node(_, c) => c.values_mut().flatten().any(|e| at(e, change, n)),
            _ => false,
        }
    }
    let total = places(root, change);
    if total == 0 {
        return false;
    }
    at(root, change, &mut (n % total))
}

/// A removed element can leave a `Node` without children and attributes, which the reader makes `""`.
fn normalise(el: El) -> El {
    match el {
        El::Node(a, c) if a.is_empty() && c.is_empty() => El::Text(String::new()),
        El::Node(a, c) => {
            El::Node(a, c.into_iter().map(|(k, v)| (k, v.into_iter().map(normalise).collect())).collect())
        }
        other => other,
    }
}

fn whitespace(choices: Vec<u8>) -> impl FnMut() -> String {
    let mut i = 0;
    move || {
        let pieces = ["", " ", "\n", "\t", "\r\n", "\n    ", "  \n\t"];
        let choice = choices.get(i % choices.len().max(1)).copied().unwrap_or(0);
        i += 1;
        pieces[choice as usize % pieces.len()].to_owned()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn trees_round_trip_through_xml(root in name(), el in element()) {
        let tree = tree(&root, &el);
        let xml = xml::encode(&tree).unwrap();
        let back = decode(&xml);
        prop_assert_eq!(&back, &tree, "{}", xml);
        // The same order too, so the same content hash.
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&tree).unwrap());
    }

    #[test]
    fn a_tree_shaped_by_arrays_is_the_tree_decoded_with_them(
        root in name(),
        el in element(),
        arrays in prop::collection::vec(name(), 0..6),
    ) {
        // Every mapping reads a record with its own `arrays`; the pipeline decodes once without any
        // and shapes the tree per mapping, which must give exactly what decoding with them gives.
        let xml = xml::encode(&tree(&root, &el)).unwrap();
        let mut arrays = arrays;
        arrays.push(root.clone()); // the root element is never an array
        let direct = xml::decode(xml.as_bytes(), &arrays, Limits::default()).unwrap().tree;
        let shaped = to_json(&to_val_with_arrays(&decode(&xml), &arrays)).unwrap();
        prop_assert_eq!(serde_json::to_string(&shaped).unwrap(), serde_json::to_string(&direct).unwrap(), "{}", xml);
    }

    #[test]
    fn the_hash_ignores_whitespace_between_elements(
        root in name(),
        el in element(),
        choices in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let tree = tree(&root, &el);
        let compact = decode(&document(&root, &el, &mut || String::new()));
        let spaced_xml = document(&root, &el, &mut whitespace(choices));
        let spaced = decode(&spaced_xml);
        prop_assert_eq!(tree_hash(&compact), tree_hash(&tree));
        prop_assert_eq!(tree_hash(&spaced), tree_hash(&tree), "{}", spaced_xml);
        let encoded = decode(&xml::encode(&tree).unwrap());
        prop_assert_eq!(tree_hash(&encoded), tree_hash(&tree));
    }

    #[test]
    fn the_hash_changes_with_any_text_attribute_or_element(
        root in name(),
        el in element(),
        change in prop_oneof![
            Just(Change::Text), Just(Change::AttributeValue), Just(Change::AddAttribute),
            Just(Change::Rename), Just(Change::Remove), Just(Change::AddElement),
        ],
        n in 0usize..1000,
        choices in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let mut changed = el.clone();
        prop_assume!(apply(&mut changed, change, n));
        let changed = normalise(changed);
        let before = decode(&document(&root, &el, &mut whitespace(choices.clone())));
        let after_xml = document(&root, &changed, &mut whitespace(choices));
        let after = decode(&after_xml);
        prop_assert_ne!(tree_hash(&before), tree_hash(&after), "{:?} at {}: {}", change, n, after_xml);
    }

    #[test]
    fn outbox_file_names_are_safe(source in "[a-z][a-z0-9-]{0,20}", id in any_id()) {
        let key = ItemKey::new(&source, &id);
        let stem = safe_stem(&key);
        for extension in ["json", "xml"] {
            let name = format!("{stem}.{extension}");
            prop_assert!(name.len() <= 255, "{} bytes", name.len());
            prop_assert!(!name.contains('/') && !name.contains('\\') && !name.contains('\0'), "{:?}", name);
            let dir = Path::new("/outbox/form-platform");
            let path = dir.join(&name);
            prop_assert_eq!(path.parent(), Some(dir));
            prop_assert!(path.strip_prefix(dir).unwrap().components().all(|c| matches!(c, Component::Normal(_))));
        }
        prop_assert!(stem != "." && stem != ".." && !stem.is_empty() && !stem.starts_with('.'), "{:?}", stem);
        prop_assert!(stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-%~".contains(&b)), "{:?}", stem);
    }

    #[test]
    fn outbox_file_names_are_injective(ids in prop::collection::vec(any_id(), 2..12)) {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for id in ids {
            let stem = safe_stem(&ItemKey::new("src", &id));
            if let Some(other) = seen.insert(stem.clone(), id.clone()) {
                prop_assert_eq!(&other, &id, "two ids share the file name {}", stem);
            }
        }
    }
}

/// Ids made of the characters that matter to file names, short and beyond the length cut, and
/// often sharing long prefixes (so that cut names differ only in their hash).
fn any_id() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        Just('/'),
        Just('.'),
        Just('%'),
        Just('2'),
        Just('F'),
        Just('~'),
        Just('\0'),
        Just('\\'),
        Just(' '),
        Just('é'),
        Just('a'),
        any::<char>(),
    ];
    let short = prop::collection::vec(chars.clone(), 0..12).prop_map(|c| c.into_iter().collect::<String>());
    let long = (0usize..3, prop::collection::vec(chars, 0..8)).prop_map(|(prefix, tail)| {
        let prefix = ["a".repeat(170), "%2F".repeat(60), "é".repeat(100)][prefix].clone();
        prefix + &tail.into_iter().collect::<String>()
    });
    prop_oneof![short, long]
}
