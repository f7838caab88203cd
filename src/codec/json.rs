//! JSON → tree: parses a record or a feed, refusing duplicate keys and numbers outside f64.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Decoded, Limits};

/// Why a document could not be read as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    Syntax(String),
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
}

/// Parses a JSON document into a tree. Duplicate object keys are an error (a later key would
/// silently win otherwise); so is nesting deeper than the limit.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, JsonError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Our own depth limit replaces serde_json's fixed one, so that it is configurable.
    de.disable_recursion_limit();
    let tree = Strict { depth: 0, limit: limits.max_depth }
        .deserialize(&mut de)
        .and_then(|tree| de.end().map(|()| tree))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_DEEP) {
                JsonError::TooDeep(limits.max_depth)
            } else {
                JsonError::Syntax(e.to_string())
            }
        })?;
    Ok(Decoded { tree, root: None, namespace: None })
}

const TOO_DEEP: &str = "nesting deeper than";

struct Strict {
    depth: usize,
    limit: usize,
}

impl Strict {
    fn nested(&self) -> Result<Strict, String> {
        if self.depth >= self.limit {
            Err(format!("{TOO_DEEP} {} levels", self.limit))
        } else {
            Ok(Strict { depth: self.depth + 1, limit: self.limit })
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
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
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let inner = self.nested().map_err(de::Error::custom)?;
            match seq.next_element_seed(inner)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let value = access.next_value_seed(self.nested().map_err(de::Error::custom)?)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
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
    fn truncated_json_reports_line_and_column() {
        let err = decode(b"{\n  \"a\": [1,\n", Limits::default()).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
