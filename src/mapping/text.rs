//! Natives for the text of a decoded XML element (`xml_text`, `xml_trim`, `xml_nonblank`, `xml_trimmed`): what every mapping of XML asks at nearly every step, in one step each.
//!
//! A decoded element (codec::xml) is a string, an object with `#text` (when it has attributes), null
//! when absent, or an array when it repeats. Each native takes a filter `f` that it runs on an
//! array (a repeated element): mappings decide there whether that is an error or the texts joined.
//! The results are those of the jq definitions they replace (`text_natives_agree_with_the_jq_definitions_they_replace`).

use bstr::ByteSlice;
use jaq_core::box_iter::box_once;
use jaq_core::native::{Fun, run};
use jaq_core::{Bind, Cv, ValXs};
use jaq_json::Val;
use jaq_std::ValT as _;

use super::engine::Data;
use super::regex::static_str;

/// The natives of this module, for the engine.
pub(crate) fn funs() -> impl Iterator<Item = Fun<Data>> {
    let natives: [jaq_core::native::Filter<jaq_core::RunPtr<Data>>; 4] = [
        // `xml_text(f)`: "" for null, a string as it is, an object's `#text` (tostring unless a
        // string; "" when absent), tostring of a number or boolean; `f` on an array.
        ("xml_text", [Bind::Fun(())].into(), |cv| with_text(cv, Some)),
        // `xml_trim(f)`: `xml_text(f) | trim` (`f`'s outputs trimmed too).
        ("xml_trim", [Bind::Fun(())].into(), |cv| with_text(cv, |text| Some(trim(&text)))),
        // `xml_nonblank(f)`: null for null; else `xml_text(f)`, or null when that is blank.
        ("xml_nonblank", [Bind::Fun(())].into(), |cv| {
            with_text(cv, |text| if blank(&text) { None } else { Some(text) })
        }),
        // `xml_trimmed(f)`: null for null; else `xml_text(f) | trim`, or null when that is "".
        ("xml_trimmed", [Bind::Fun(())].into(), |cv| {
            with_text(cv, |text| if blank(&text) { None } else { Some(trim(&text)) })
        }),
    ];
    natives.into_iter().map(run::<Data>)
}

/// The text of a single element (`None` for an array); null and absent are "".
fn element_text(value: &Val) -> Option<Val> {
    Some(match value {
        Val::Null => static_str(""),
        Val::TStr(_) => value.clone(),
        Val::Obj(map) => match map.get(&static_str("#text")) {
            None | Some(Val::Null | Val::Bool(false)) => static_str(""),
            Some(text @ Val::TStr(_)) => text.clone(),
            Some(other) => Val::from(other.to_string()),
        },
        Val::Arr(_) => return None,
        other => Val::from(other.to_string()),
    })
}

/// Runs `shape` on the element's text (its `None` is null); an array goes to the native's filter,
/// whose outputs `shape` gets too.
fn with_text<'a>(mut cv: Cv<'a, Data>, shape: fn(Val) -> Option<Val>) -> ValXs<'a, Val> {
    let (f, f_ctx) = cv.0.pop_fun();
    let input = cv.1;
    match element_text(&input) {
        Some(text) => box_once(Ok(shape(text).unwrap_or(Val::Null))),
        None => Box::new(f.run((f_ctx, input)).map(move |output| output.map(|text| shape(text).unwrap_or(Val::Null)))),
    }
}

/// jaq's `trim` (bstr's Unicode whitespace), sharing the bytes of `text`.
fn trim(text: &Val) -> Val {
    match text {
        Val::TStr(bytes) => text.as_sub_str(bytes.trim()),
        other => other.clone(),
    }
}

fn blank(text: &Val) -> bool {
    match text {
        Val::TStr(bytes) => bytes.trim().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::mapping::Budget;
    use crate::mapping::engine::{Program, to_val};

    fn run(code: &str, input: &Value) -> Value {
        let globals = [to_val(&json!({})), to_val(&json!({})), to_val(&json!({})), to_val(&json!({}))];
        let wrapped = format!("try [{code}] catch \"error: \\(.)\"");
        Program::compile(&wrapped).expect("compiles").run(to_val(input), globals, Budget::default(), None).unwrap()
    }

    /// The jq definitions the mappings had before the natives: xdatenfelder2-to-xdf3's (which
    /// stop at a repeated element) and the form mappings' `txt`/`opt` (which join its texts).
    const JQ: &str = r##"
        def repeated: error("occurs \(length) times (\(map(tostring | .[0:40]) | join(" | ")))");
        def jq_text:
          if type == "string" then .
          elif type == "object" then (."#text" // "" | if type == "string" then . else tostring end)
          elif . == null then ""
          elif type == "array" then repeated
          else tostring end;
        def jq_nonblank: if . == null then null else jq_text | if trim == "" then null else . end end;
        def jq_trimmed: if . == null then null else jq_text | trim | if . == "" then null else . end end;
        def jq_txt:
          if type == "string" then trim
          elif type == "object" then (.["#text"] // "" | jq_txt)
          elif type == "array" then map(jq_txt) | map(select(. != "")) | join("\n")
          elif type == "number" or type == "boolean" then tostring
          else "" end;
        def jq_opt: jq_txt | if . == "" then null else . end;
        def txt: xml_trim(map(txt) | map(select(. != "")) | join("\n"));
    "##;

    #[test]
    fn text_natives_agree_with_the_jq_definitions_they_replace() {
        let inputs = [
            json!(null),
            json!(""),
            json!("  Straße\u{a0} "),
            json!(" \n\t "),
            json!("x"),
            json!({"#text": " a b ", "@listURI": "u"}),
            json!({"@listURI": "u"}),
            json!({"#text": null}),
            json!({"#text": false}),
            json!({"#text": true}),
            json!({"#text": 12.5}),
            json!({"code": " 1 "}),
            json!(7),
            json!(true),
            json!(false),
            json!(["a", " b ", "", {"#text": "c"}, null]),
            json!(["a", ["b", " "]]),
            json!([]),
        ];
        let pairs = [
            ("xml_text(repeated)", "jq_text"),
            ("xml_trim(repeated)", "jq_text | trim"),
            ("xml_nonblank(repeated)", "jq_nonblank"),
            ("xml_trimmed(repeated)", "jq_trimmed"),
            ("txt", "jq_txt"),
            ("xml_trimmed(map(txt) | map(select(. != \"\")) | join(\"\\n\"))", "jq_opt"),
        ];
        for (native, jq) in pairs {
            for input in &inputs {
                let ours = run(&format!("{JQ} {native}"), input);
                let theirs = run(&format!("{JQ} {jq}"), input);
                assert_eq!(ours, theirs, "{native} against {jq} on {input}");
            }
        }
        // The filter runs on a repeated element only, and its outputs are shaped as the text is.
        assert_eq!(run("xml_trim(.[0], .[1])", &json!([" a ", "b "])), json!(["a", "b"]));
        assert_eq!(run("xml_nonblank(\"  \")", &json!([1, 2])), json!([null]));
        assert_eq!(run("xml_text(error(\"never\"))", &json!({"#text": "t"})), json!(["t"]));
    }
}
