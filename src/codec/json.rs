//! JSON → tree: parses a record or a feed, refusing duplicate keys, numbers outside f64 and
//! anything over the [`Limits`] (depth, values, string length), checked while parsing.

use std::cell::{Cell, RefCell};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Decoded, LimitExceeded, Limits, line_of};

/// Why a document could not be read as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0} (the bridge reads UTF-8 JSON only)")]
    Encoding(String),
    #[error("nesting deeper than {0} levels (limits.max_depth)")]
    TooDeep(usize),
    #[error("line {line}: {limit}")]
    Limit { line: usize, limit: LimitExceeded },
}

/// Parses a JSON document into a tree. Duplicate object keys are an error (a later key would
/// silently win otherwise); so is going over one of the limits.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, JsonError> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(JsonError::Encoding("starts with a UTF-16 byte order mark".into()));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(JsonError::Encoding(format!(
            "NUL byte at line {} (a UTF-16 file without byte order mark?)",
            line_of(bytes, at)
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Our own depth limit replaces serde_json's fixed one, so that it is configurable.
    de.disable_recursion_limit();
    let state = State { limits, values: Cell::new(0), exceeded: RefCell::new(None) };
    let tree = Strict { depth: 0, state: &state }
        .deserialize(&mut de)
        .and_then(|tree| de.end().map(|()| tree))
        .map_err(|e| match state.exceeded.take() {
            Some(Exceeded::Depth) => JsonError::TooDeep(limits.max_depth),
            Some(Exceeded::Limit(limit)) => JsonError::Limit { line: e.line(), limit },
            None => JsonError::Syntax(e.to_string()),
        })?;
    Ok(Decoded { tree, root: None, namespace: None })
}

/// Which limit stopped the parser (serde's error type carries only a message).
enum Exceeded {
    Depth,
    Limit(LimitExceeded),
}

/// What all values of one document share: the limits and the count of values so far.
struct State {
    limits: Limits,
    values: Cell<usize>,
    exceeded: RefCell<Option<Exceeded>>,
}

impl State {
    fn fail<E: de::Error>(&self, exceeded: Exceeded) -> E {
        let message = match &exceeded {
            Exceeded::Depth => format!("nesting deeper than {} levels", self.limits.max_depth),
            Exceeded::Limit(limit) => limit.to_string(),
        };
        *self.exceeded.borrow_mut() = Some(exceeded);
        E::custom(message)
    }

    fn check_text<E: de::Error>(&self, text: &str, what: &str) -> Result<(), E> {
        let limit = self.limits.max_text_bytes;
        if text.len() > limit {
            return Err(self.fail(Exceeded::Limit(LimitExceeded {
                key: "max_text_bytes",
                limit,
                what: format!("{what} longer than {limit} bytes"),
            })));
        }
        Ok(())
    }
}

struct Strict<'s> {
    depth: usize,
    state: &'s State,
}

impl<'s> Strict<'s> {
    fn nested<E: de::Error>(&self) -> Result<Strict<'s>, E> {
        if self.depth >= self.state.limits.max_depth {
            Err(self.state.fail(Exceeded::Depth))
        } else {
            Ok(Strict { depth: self.depth + 1, state: self.state })
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        // Counted before the value is read, so that a huge array stops at the limit.
        let count = self.state.values.get() + 1;
        self.state.values.set(count);
        let limit = self.state.limits.max_elements;
        if count > limit {
            return Err(self.state.fail(Exceeded::Limit(LimitExceeded {
                key: "max_elements",
                limit,
                what: format!("more than {limit} values in the record"),
            })));
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("number {v} is outside the range of a 64-bit float")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.state.check_text(v, "string")?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.state.check_text(&v, "string")?;
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.nested()?)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(Key(self.state))? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = access.next_value_seed(self.nested()?)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// An object key, held to the text limit.
struct Key<'s>(&'s State);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.check_text(v, "object key")?;
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.check_text(&v, "object key")?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_in_document_order() {
        let tree = decode(br#"{"b": 1, "a": [true, null, "x"]}"#, Limits::default()).unwrap().tree;
        assert_eq!(serde_json::to_string(&tree).unwrap(), r#"{"b":1,"a":[true,null,"x"]}"#);
        assert_eq!(tree, json!({"a": [true, null, "x"], "b": 1}));
    }

    #[test]
    fn duplicate_keys_huge_numbers_and_depth_are_errors() {
        let err = decode(br#"{"a": 1, "a": 2}"#, Limits::default()).unwrap_err();
        assert!(err.to_string().contains("duplicate key `a`"), "{err}");
        let err = decode(b"[1e400]", Limits::default()).unwrap_err();
        assert!(err.to_string().contains("1e400") || err.to_string().contains("range"), "{err}");
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(matches!(decode(deep.as_bytes(), Limits::default()), Err(JsonError::TooDeep(128))));
    }

    #[test]
    fn values_and_strings_are_limited_while_parsing() {
        let limits = Limits { max_elements: 4, max_text_bytes: 3, ..Limits::default() };
        assert!(decode(br#"{"abc": ["xyz", 1]}"#, limits).is_ok());
        let err = decode(b"{\"a\": [1, 2, 3, 4]}", limits).unwrap_err();
        assert!(matches!(&err, JsonError::Limit { limit, .. } if limit.key == "max_elements"), "{err:?}");
        assert!(err.to_string().contains("limits.max_elements"), "{err}");
        let err = decode(b"[\n\"abcd\"]", limits).unwrap_err();
        assert!(matches!(&err, JsonError::Limit { line: 2, limit } if limit.key == "max_text_bytes"), "{err:?}");
        assert!(err.to_string().contains("string longer than 3 bytes (limits.max_text_bytes)"), "{err}");
        let err = decode(br#"{"abcd": 1}"#, limits).unwrap_err();
        assert!(err.to_string().contains("object key longer than 3 bytes"), "{err}");
        let err = decode(b"[[[[1]]]]", Limits { max_depth: 3, ..Limits::default() }).unwrap_err();
        assert!(err.to_string().contains("limits.max_depth"), "{err}");
    }

    #[test]
    fn utf16_and_nul_bytes_are_named() {
        let err = decode(b"\xFF\xFE[\x001\x00]\x00", Limits::default()).unwrap_err();
        assert!(err.to_string().contains("UTF-16 byte order mark"), "{err}");
        let err = decode(b"[\x001\x00]\x00", Limits::default()).unwrap_err();
        assert!(err.to_string().contains("NUL byte at line 1"), "{err}");
    }

    #[test]
    fn truncated_json_reports_line_and_column() {
        let err = decode(b"{\n  \"a\": [1,\n", Limits::default()).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
