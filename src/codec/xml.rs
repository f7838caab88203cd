//! XML ⇄ tree: a streaming quick-xml reader that builds the tree, and a writer that turns a tree back into XML.
//!
//! The reader is safe on hostile input: it processes no DTD (a DOCTYPE is an error), expands no
//! entity but the five predefined ones and character references, never opens a file or a URL, and
//! enforces [`Limits`] while it reads (depth, elements, attributes, text length).

use quick_xml::Reader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::{BytesStart, Event};
use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{Decoded, LimitExceeded, Limits, line_of, utf8_text};

/// The namespace the `xml` prefix is bound to by definition.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations, which no prefix may be bound to.
const XMLNS_NAMESPACE: &str = "http://www.w3.org/2000/xmlns/";

/// Why a document could not be read as XML.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("not valid UTF-8 at byte {0} (an XML document without encoding declaration or byte order mark is UTF-8)")]
    Encoding(usize),
    #[error("not valid {0} (as its byte order mark or XML declaration says)")]
    Malformed(&'static str),
    #[error(
        "declares encoding `{0}`, which the bridge cannot read (UTF-8, UTF-16 with byte order mark, ISO-8859-x and windows-125x can be read)"
    )]
    UnknownEncoding(String),
    #[error("line {line}: {}", control_message(*.code))]
    ControlCharacter { line: usize, code: u32 },
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("line {line}: DOCTYPE declarations are not accepted (no DTDs, no custom entities)")]
    Doctype { line: usize },
    #[error("line {line}: unknown entity `&{name};` (only the five predefined XML entities are allowed)")]
    Entity { line: usize, name: String },
    #[error("line {line}: nesting deeper than {limit} levels (limits.max_depth)")]
    TooDeep { line: usize, limit: usize },
    #[error("line {line}: {limit}")]
    Limit { line: usize, limit: LimitExceeded },
    #[error("document ends inside element <{open}> (truncated?)")]
    Truncated { open: String },
    #[error("no root element")]
    Empty,
    #[error("content after the root element at line {line}")]
    TrailingContent { line: usize },
}

fn control_message(code: u32) -> String {
    let hint = if code == 0 { " (a UTF-16 file without byte order mark? the bridge reads UTF-8 XML only)" } else { "" };
    format!("control character U+{code:04X} is not allowed in XML{hint}")
}

/// Whether XML 1.0 forbids `c` in a document, even as a character reference.
fn forbidden_char(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// An element being read: its tree so far and its text.
struct Open {
    name: String,
    map: Map<String, Value>,
    /// Text kept so far. Beside child elements a run of text between two of them is kept only
    /// if it is not blank (indentation is not content); `run` is where the current run starts.
    text: String,
    run: usize,
    has_children: bool,
}

impl Open {
    /// Ends the current run of text because a child element starts (or the element ends).
    fn end_run(&mut self) {
        if self.text[self.run..].trim().is_empty() {
            self.text.truncate(self.run);
        }
        self.run = self.text.len();
    }
}

/// The tree under construction and the counts the limits apply to.
struct Builder<'a> {
    arrays: &'a [String],
    limits: Limits,
    stack: Vec<Open>,
    root: Option<(String, Value)>,
    namespace: Option<String>,
    elements: usize,
    attributes: usize,
}

/// Reads a whole XML document into a tree `{ "<root local name>": … }`.
pub fn decode(bytes: &[u8], arrays: &[String], limits: Limits) -> Result<Decoded, XmlError> {
    let utf8 = to_utf8(bytes)?;
    let bytes = check_characters(&utf8)?;
    // A plain reader, not quick-xml's NsReader: only the root's namespace is needed, and the
    // resolver's linear lookups would make many namespace declarations a quadratic cost.
    let mut reader = Reader::from_reader(bytes);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut builder =
        Builder { arrays, limits, stack: Vec::new(), root: None, namespace: None, elements: 0, attributes: 0 };

    loop {
        // Errors about an event name the line where it starts (a DOCTYPE or a start tag can span lines).
        let event_start = reader.buffer_position() as usize;
        let line = || line_of(bytes, event_start);
        let syntax = |message: String| XmlError::Syntax { line: line(), message };
        let event = reader.read_event().map_err(|e| XmlError::Syntax {
            line: line_of(bytes, reader.error_position() as usize),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(_) | Event::Empty(_) if builder.root.is_some() => {
                return Err(XmlError::TrailingContent { line: line() });
            }
            Event::Start(start) => {
                builder.open(&start).map_err(|e| e.at(line()))?;
            }
            Event::Empty(start) => {
                builder.open(&start).map_err(|e| e.at(line()))?;
                builder.close();
            }
            Event::End(_) => {
                if builder.stack.is_empty() {
                    return Err(syntax("unexpected end tag".into()));
                }
                builder.close();
            }
            Event::Text(text) => {
                // XML 1.0 line ends only: xml_content() would also turn U+0085 and U+2028 into line feeds (XML 1.1).
                let text = text.xml10_content().map_err(|e| syntax(e.to_string()))?;
                builder.text(&text).map_err(|e| e.at(line()))?;
            }
            Event::CData(data) => {
                let text = std::str::from_utf8(&data).map_err(|e| syntax(e.to_string()))?;
                builder.text(text).map_err(|e| e.at(line()))?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) if forbidden_char(c) => {
                        return Err(XmlError::ControlCharacter { line: line(), code: c as u32 });
                    }
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = reference.decode().map_err(|e| syntax(e.to_string()))?;
                        match resolve_predefined_entity(&name) {
                            Some(resolved) => resolved.to_owned(),
                            None => return Err(XmlError::Entity { line: line(), name: name.into_owned() }),
                        }
                    }
                    Err(e) => return Err(syntax(e.to_string())),
                };
                builder.text(&resolved).map_err(|e| e.at(line()))?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype { line: line() }),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = builder.stack.last() {
        return Err(XmlError::Truncated { open: open.name.clone() });
    }
    let (name, value) = builder.root.ok_or(XmlError::Empty)?;
    let mut tree = Map::new();
    tree.insert(name.clone(), value);
    Ok(Decoded { tree: Value::Object(tree), root: Some(name), namespace: builder.namespace })
}

/// A document in another encoding than UTF-8, as XML lets a document say so, as UTF-8: UTF-16 with a
/// byte order mark, or the `encoding` of the XML declaration (ISO-8859-1, windows-1252 …, any label
/// encoding_rs knows for an ASCII-compatible encoding). Without either the document must be UTF-8
/// (checked by [`check_characters`]); UTF-16 without byte order mark is refused there.
fn to_utf8(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, XmlError> {
    use encoding_rs::{Encoding, UTF_8};
    use std::borrow::Cow;
    let (encoding, skip) = match Encoding::for_bom(bytes) {
        Some((encoding, _)) if encoding == UTF_8 => return Ok(Cow::Borrowed(bytes)),
        Some((encoding, bom)) => (encoding, bom),
        None => match declared_encoding(bytes) {
            None => return Ok(Cow::Borrowed(bytes)),
            Some(label) => match Encoding::for_label(label.as_bytes()) {
                Some(encoding) if encoding == UTF_8 => return Ok(Cow::Borrowed(bytes)),
                Some(encoding) if encoding.is_ascii_compatible() => (encoding, 0),
                _ => return Err(XmlError::UnknownEncoding(label)),
            },
        },
    };
    let (text, malformed) = encoding.decode_without_bom_handling(&bytes[skip..]);
    if malformed {
        return Err(XmlError::Malformed(encoding.name()));
    }
    Ok(Cow::Owned(text.into_owned().into_bytes()))
}

/// The `encoding` of an XML declaration at the very start of the document, if there is one.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = bytes.strip_prefix(b"<?xml")?;
    let end = head.iter().take(256).position(|&b| b == b'>')?;
    let declaration = std::str::from_utf8(&head[..end]).ok()?;
    let rest = declaration[declaration.find("encoding")? + "encoding".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    let value = &rest[1..];
    Some(value[..value.find(quote)?].to_owned())
}

/// Strips a UTF-8 byte order mark and refuses anything that is not UTF-8 or holds characters
/// XML forbids (a NUL byte is the mark of UTF-16 without a byte order mark).
fn check_characters(bytes: &[u8]) -> Result<&[u8], XmlError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| XmlError::Encoding(e.valid_up_to()))?;
    let control = |b: u8| b < b' ' && !matches!(b, b'\t' | b'\n' | b'\r');
    // Block by block without stopping early inside a block, so that the compiler checks many
    // bytes at once; the first bad byte is then looked for in its block only.
    const BLOCK: usize = 64;
    let block = bytes.chunks(BLOCK).position(|block| block.iter().fold(false, |bad, &b| bad | control(b)));
    if let Some(block) = block {
        let at = block * BLOCK + bytes[block * BLOCK..].iter().position(|&b| control(b)).unwrap_or(0);
        return Err(XmlError::ControlCharacter { line: line_of(bytes, at), code: u32::from(bytes[at]) });
    }
    // U+FFFE and U+FFFF are EF BF BE and EF BF BF in UTF-8 (the bytes are UTF-8 by now); EF is rare.
    let noncharacter =
        memchr::memchr_iter(0xEF, bytes).find(|&at| matches!(bytes.get(at + 1..at + 3), Some([0xBF, 0xBE | 0xBF])));
    if let Some(at) = noncharacter {
        let code = if bytes[at + 2] == 0xBE { 0xFFFE } else { 0xFFFF };
        return Err(XmlError::ControlCharacter { line: line_of(bytes, at), code });
    }
    Ok(bytes)
}

/// An error found while building, before its line is known.
enum BuildError {
    Syntax(String),
    TooDeep(usize),
    Limit(LimitExceeded),
}

impl BuildError {
    fn at(self, line: usize) -> XmlError {
        match self {
            BuildError::Syntax(message) => XmlError::Syntax { line, message },
            BuildError::TooDeep(limit) => XmlError::TooDeep { line, limit },
            BuildError::Limit(limit) => XmlError::Limit { line, limit },
        }
    }
}

impl Builder<'_> {
    /// Starts an element: counts it and its attributes against the limits and reads them.
    fn open(&mut self, start: &BytesStart<'_>) -> Result<(), BuildError> {
        let limits = self.limits;
        if self.stack.len() >= limits.max_depth {
            return Err(BuildError::TooDeep(limits.max_depth));
        }
        self.elements += 1;
        if self.elements > limits.max_elements {
            return Err(BuildError::Limit(LimitExceeded {
                key: "max_elements",
                limit: limits.max_elements,
                what: format!("more than {} elements in the record", limits.max_elements),
            }));
        }
        let name = utf8_text(start.local_name().as_ref()).into_owned();
        let mut map = Map::new();
        // quick-xml's own duplicate check compares every attribute with every earlier one; the
        // map below finds duplicates in constant time.
        for attr in start.attributes().with_checks(false) {
            let attr = attr.map_err(|e| BuildError::Syntax(e.to_string()))?;
            self.attributes += 1;
            if self.attributes > limits.max_attributes {
                return Err(BuildError::Limit(LimitExceeded {
                    key: "max_attributes",
                    limit: limits.max_attributes,
                    what: format!("more than {} attributes in the record", limits.max_attributes),
                }));
            }
            let key = format!("@{}", utf8_text(attr.key.as_ref()));
            let value =
                attr.unescape_value().map_err(|e| BuildError::Syntax(format!("attribute {key} of <{name}>: {e}")))?;
            if value.len() > limits.max_text_bytes {
                return Err(attribute_too_long(&key, &name, limits));
            }
            if let Some(c) = value.chars().find(|&c| forbidden_char(c)) {
                return Err(BuildError::Syntax(format!("attribute {key} of <{name}>: {}", control_message(c as u32))));
            }
            check_namespace_declaration(&key, &value).map_err(BuildError::Syntax)?;
            if map.insert(key.clone(), Value::String(value.into_owned())).is_some() {
                return Err(BuildError::Syntax(format!("duplicate attribute {key} on <{name}>")));
            }
        }
        match self.stack.last_mut() {
            Some(parent) => {
                parent.end_run();
                parent.has_children = true;
            }
            None => self.namespace = root_namespace(start, &map),
        }
        self.stack.push(Open { name, map, text: String::new(), run: 0, has_children: false });
        Ok(())
    }

    /// Adds text to the open element (outside the root only blank text is allowed).
    fn text(&mut self, text: &str) -> Result<(), BuildError> {
        let limit = self.limits.max_text_bytes;
        match self.stack.last_mut() {
            Some(open) => {
                if open.text.len() + text.len() > limit {
                    return Err(BuildError::Limit(LimitExceeded {
                        key: "max_text_bytes",
                        limit,
                        what: format!("text of <{}> longer than {limit} bytes", open.name),
                    }));
                }
                open.text.push_str(text);
                Ok(())
            }
            None if text.trim().is_empty() => Ok(()),
            None if self.root.is_some() => Err(BuildError::Syntax("content after the root element".into())),
            None => Err(BuildError::Syntax("text before the root element".into())),
        }
    }

    /// Ends the innermost open element and puts its value into its parent (or makes it the root).
    fn close(&mut self) {
        let Some(mut element) = self.stack.pop() else { return };
        if element.has_children {
            element.end_run();
        }
        let Open { name, mut map, text, has_children, .. } = element;
        let value = if map.is_empty() && !has_children {
            Value::String(text)
        } else {
            if !text.is_empty() {
                map.insert("#text".into(), Value::String(text));
            }
            Value::Object(map)
        };
        match self.stack.last_mut() {
            Some(parent) => insert_child(&mut parent.map, name, value, self.arrays),
            None => self.root = Some((name, value)),
        }
    }
}

fn attribute_too_long(key: &str, element: &str, limits: Limits) -> BuildError {
    BuildError::Limit(LimitExceeded {
        key: "max_text_bytes",
        limit: limits.max_text_bytes,
        what: format!("attribute {key} of <{element}> longer than {} bytes", limits.max_text_bytes),
    })
}

/// Refuses bindings that the XML namespaces recommendation forbids (as quick-xml's resolver does).
fn check_namespace_declaration(key: &str, value: &str) -> Result<(), String> {
    let prefix = match key.strip_prefix("@xmlns") {
        Some("") => None,
        Some(rest) => match rest.strip_prefix(':') {
            Some(prefix) => Some(prefix),
            None => return Ok(()),
        },
        None => return Ok(()),
    };
    let wrong = match prefix {
        Some("xml") => value != XML_NAMESPACE,
        Some("xmlns") => true,
        _ => value == XML_NAMESPACE || value == XMLNS_NAMESPACE,
    };
    if wrong { Err(format!("forbidden namespace declaration {}=\"{value}\"", &key[1..])) } else { Ok(()) }
}

/// The namespace of the root element: its prefix (or the default namespace) must be declared on
/// the root itself, as nothing encloses it.
fn root_namespace(start: &BytesStart<'_>, attributes: &Map<String, Value>) -> Option<String> {
    let name = start.name();
    let declaration = match name.prefix() {
        Some(prefix) if prefix.as_ref() == b"xml" => return Some(XML_NAMESPACE.into()),
        Some(prefix) => format!("@xmlns:{}", String::from_utf8_lossy(prefix.as_ref())),
        None => "@xmlns".to_owned(),
    };
    attributes.get(&declaration).and_then(Value::as_str).filter(|ns| !ns.is_empty()).map(str::to_owned)
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
    #[error("`{0}` holds U+{1:04X}, a character XML does not allow")]
    Character(String, u32),
}

/// A tree with the XML conventions (DESIGN.md) as the writer reads it: serde_json's `Value` here,
/// and the jq engine's value (`mapping::engine`), so that a mapping's result is written as it comes
/// from the program, without being copied into a `Value` first.
pub trait XmlTree: Sized {
    /// What this node is.
    fn node(&self) -> Node<'_, Self>;
    /// The text of a string node (not of a number or boolean).
    fn string(&self) -> Option<Cow<'_, str>>;
    /// The keys (attributes `@name`, text `#text`, child elements) and values of an object, in
    /// order; nothing for any other node.
    fn entries(&self) -> impl Iterator<Item = (Cow<'_, str>, &Self)>;
}

/// One node of an [`XmlTree`].
pub enum Node<'a, T> {
    Null,
    /// A string, number or boolean, as its text.
    Scalar(Cow<'a, str>),
    Array(&'a [T]),
    /// An object: its keys and values are [`XmlTree::entries`].
    Object,
}

impl XmlTree for Value {
    fn node(&self) -> Node<'_, Self> {
        match self {
            Value::Null => Node::Null,
            Value::String(s) => Node::Scalar(Cow::Borrowed(s)),
            Value::Number(n) => Node::Scalar(Cow::Owned(n.to_string())),
            Value::Bool(b) => Node::Scalar(Cow::Borrowed(if *b { "true" } else { "false" })),
            Value::Array(items) => Node::Array(items),
            Value::Object(_) => Node::Object,
        }
    }

    fn string(&self) -> Option<Cow<'_, str>> {
        self.as_str().map(Cow::Borrowed)
    }

    fn entries(&self) -> impl Iterator<Item = (Cow<'_, str>, &Self)> {
        self.as_object().into_iter().flatten().map(|(k, v)| (Cow::Borrowed(k.as_str()), v))
    }
}

/// Writes a tree `{ "<root>": … }` as an indented XML document with an XML declaration.
/// Element names are written as given (prefixes included); `null` values write nothing.
pub fn encode(tree: &Value) -> Result<String, EncodeError> {
    encode_tree(tree, &|_, _| None)
}

/// [`encode`] for any [`XmlTree`], with `fix`: for the text of an element (its name as written and
/// the text), the text to write instead, or `None` to write it as it is. Attribute values are
/// written as they are.
pub fn encode_tree<T: XmlTree>(tree: &T, fix: &dyn Fn(&str, &str) -> Option<String>) -> Result<String, EncodeError> {
    let node = tree.node();
    if !matches!(node, Node::Object) {
        return Err(EncodeError::Root(kind(&node).into()));
    }
    let mut entries = tree.entries();
    let (Some((name, value)), None) = (entries.next(), entries.next()) else {
        return Err(EncodeError::Root(format!("{} keys", tree.entries().count())));
    };
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    Writer { out: &mut out, fix }.element(&name, value, 0)?;
    Ok(out)
}

fn kind<T>(node: &Node<'_, T>) -> &'static str {
    match node {
        Node::Null => "null",
        Node::Scalar(_) => "a string, number or boolean",
        Node::Array(_) => "an array",
        Node::Object => "an object",
    }
}

fn check_name(name: &str) -> Result<(), EncodeError> {
    // Nearly every name is ASCII: letters, digits, `_`, `-`, `.`, `:`, not starting with a digit or punctuation.
    let bytes = name.as_bytes();
    if bytes.first().is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Ok(());
    }
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    let valid_rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if valid_start && valid_rest { Ok(()) } else { Err(EncodeError::Name(name.into())) }
}

/// Refuses text that no XML parser would read back (control characters other than tab and line breaks).
fn check_text(name: &str, text: &str) -> Result<(), EncodeError> {
    match text.chars().find(|&c| forbidden_char(c)) {
        Some(c) => Err(EncodeError::Character(name.into(), c as u32)),
        None => Ok(()),
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// The document being written and the text fix of [`encode_tree`].
struct Writer<'w> {
    out: &'w mut String,
    fix: &'w dyn Fn(&str, &str) -> Option<String>,
}

impl Writer<'_> {
    /// The text of element `name`, fixed and checked.
    fn text<'t>(&self, name: &str, text: Cow<'t, str>) -> Result<Cow<'t, str>, EncodeError> {
        let text = match (self.fix)(name, &text) {
            Some(fixed) => Cow::Owned(fixed),
            None => text,
        };
        check_text(name, &text)?;
        Ok(text)
    }

    fn element<T: XmlTree>(&mut self, name: &str, value: &T, depth: usize) -> Result<(), EncodeError> {
        match value.node() {
            Node::Null => Ok(()),
            Node::Array(items) => {
                for item in items {
                    if matches!(item.node(), Node::Array(_)) {
                        return Err(EncodeError::NestedArray(name.into()));
                    }
                    self.element(name, item, depth)?;
                }
                Ok(())
            }
            Node::Object => {
                check_name(name)?;
                indent(self.out, depth);
                self.out.push('<');
                self.out.push_str(name);
                // Attributes and the text first; the child elements in a second pass.
                let mut text = None;
                let mut has_children = false;
                for (key, value) in value.entries() {
                    if let Some(attribute) = key.strip_prefix('@') {
                        let attr = match value.node() {
                            Node::Null => continue,
                            Node::Scalar(text) => text,
                            _ => return Err(EncodeError::Attribute(key.into_owned())),
                        };
                        check_name(attribute)?;
                        check_text(&key, &attr)?;
                        self.out.push(' ');
                        self.out.push_str(attribute);
                        self.out.push_str("=\"");
                        self.out.push_str(&escape_attribute(&attr));
                        self.out.push('"');
                    } else if key == "#text" {
                        if let Node::Scalar(scalar) = value.node() {
                            text = Some(scalar);
                        }
                    } else if is_child(&key, value) {
                        has_children = true;
                    }
                }
                match (text, has_children) {
                    (None, false) => self.out.push_str("/>\n"),
                    (Some(text), false) => {
                        let text = self.text(name, text)?;
                        self.out.push('>');
                        self.out.push_str(&escape_text(&text));
                        close_tag(self.out, name);
                    }
                    (text, true) => {
                        self.out.push_str(">\n");
                        if let Some(text) = text {
                            let text = self.text(name, text)?;
                            indent(self.out, depth + 1);
                            self.out.push_str(&escape_text(&text));
                            self.out.push('\n');
                        }
                        for (child, value) in value.entries() {
                            if is_child(&child, value) {
                                self.element(&child, value, depth + 1)?;
                            }
                        }
                        indent(self.out, depth);
                        close_tag(self.out, name);
                    }
                }
                Ok(())
            }
            Node::Scalar(text) => {
                check_name(name)?;
                indent(self.out, depth);
                let text = self.text(name, text)?;
                if text.is_empty() {
                    self.out.push('<');
                    self.out.push_str(name);
                    self.out.push_str("/>\n");
                } else {
                    self.out.push('<');
                    self.out.push_str(name);
                    self.out.push('>');
                    self.out.push_str(&escape_text(&text));
                    close_tag(self.out, name);
                }
                Ok(())
            }
        }
    }
}

/// True if the entry `key` of an object is a child element that writes something (not an
/// attribute, not the text, not null).
fn is_child<T: XmlTree>(key: &str, value: &T) -> bool {
    !key.starts_with('@') && key != "#text" && !matches!(value.node(), Node::Null)
}

/// Escapes element text; a carriage return is written as a reference so that it survives parsing.
fn escape_text(text: &str) -> Cow<'_, str> {
    let escaped = escape(text);
    if escaped.contains('\r') { Cow::Owned(escaped.replace('\r', "&#13;")) } else { escaped }
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
mod tests;
