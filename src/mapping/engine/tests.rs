//! Tests of `engine`.

use serde_json::json;

use super::*;

fn globals() -> [Val; 4] {
    [
        to_val(&json!({"datentyp": {"text": "input_text"}})),
        to_val(&json!({"urn:a_1": {"codes": [{"code": "1", "name": "eins"}]}, "urn:a|1": {"codes": []}})),
        to_val(&json!({"id": "s"})),
        to_val(&json!({"key": "s/x"})),
    ]
}

fn run(code: &str, input: Value) -> Result<Value, String> {
    // `bridge_jaq_test`: jaq-std's own definition of `test`, to compare the engine's with.
    let code = format!(
        "def bridge_jaq_test(re; flags): matches(re; flags) | any; \
             def bridge_jaq_test(re): bridge_jaq_test(re; \"\"); {code}"
    );
    Program::compile(&code).expect("compiles").run(to_val(&input), globals(), Budget::default(), None)
}

#[test]
fn runs_programs_with_the_prelude() {
    assert_eq!(run(r#".t | lookup("datentyp")"#, json!({"t": "text"})), Ok(json!("input_text")));
    assert_eq!(run(r#".t | lookup("datentyp"; "x")"#, json!({"t": "zzz"})), Ok(json!("x")));
    assert_eq!(run(r#"codelist("urn:a_1").codes[0].name"#, json!(null)), Ok(json!("eins")));
    assert_eq!(run(r#"codelist("urn:a"; "1").codes"#, json!(null)), Ok(json!([])));
    assert_eq!(run(r#".a | as_array | length"#, json!({"a": {"x": 1}})), Ok(json!(1)));
    assert_eq!(run(r#""Straße für Größe" | slug"#, json!(null)), Ok(json!("strasse-fuer-groesse")));
    assert_eq!(run(r#"{s: $source.id, k: $item.key}"#, json!(null)), Ok(json!({"s": "s", "k": "s/x"})));
}

#[test]
fn type_is_native_and_agrees_with_jaqs_definition() {
    // jaq's own definition, as in jaq-std's defs.jq.
    let jaq_type = r#"def jaq_type:
            if . == null then "null" elif (. == true or . == false) then "boolean"
            elif . < "" then "number" elif . < [] then "string" elif . < {} then "array" else "object" end;"#;
    let values = json!([null, true, false, 0, -1.5, 1e300, "", "ü", [], [1], {}, {"a": null}]);
    let native = run("[.[] | type]", values.clone()).unwrap();
    let defined = run(&format!("{jaq_type} [.[] | jaq_type]"), values).unwrap();
    assert_eq!(native, defined);
    assert_eq!(native[0], json!("null"));
    assert_eq!(native[11], json!("object"));
    assert_eq!(run("nan | type", json!(null)), Ok(json!("number")));
}

/// `code` run by stock jaq (its own definitions and natives, no prelude): what the engine's
/// replacements must agree with.
fn stock_jaq(code: &str, input: Value) -> Result<Value, String> {
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs).load(&arena, File { code, path: () }).expect("parses");
    let filter = Compiler::default().with_funs(funs).compile(modules).expect("compiles");
    let ctx = Ctx::<jaq_core::data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let outputs: Result<Vec<Val>, String> =
        filter.id.run((ctx, to_val(&input))).map(|r| r.map_err(describe_exception)).collect();
    let values = outputs?.iter().map(to_json).collect::<Result<Vec<_>, _>>();
    values.map(Value::Array).map_err(|e| format!("the program produced a value that is not JSON: {e}"))
}

#[test]
fn replaced_definitions_and_regex_natives_agree_with_stock_jaq() {
    // Each program over each input, wrapped in `[…]` so that streams and `empty` compare too.
    let inputs = [
        json!(null),
        json!("Straße 12; Weg 3\nÄrger  über ÜBER; ;x"),
        json!("F00001028 und G01000123, S00000009; F0000102"),
        json!(""),
        json!(["a", 1, null, true, 2.5, {"k": "v"}, ["x"]]),
        json!({"minLength": "1", "maxLength": 50, "pattern": null}),
        json!([]),
        json!({}),
        json!(7),
    ];
    let programs = [
        "null, true, false, (null | not), (false | not), (0 | not), (\"\" | not), ([] | not)",
        "[.[]? | not]",
        "join(\", \")",
        "join(\"\")",
        "join(null), join(1)",
        "to_entries",
        "with_entries(.value |= tostring)",
        "if . == null then 1 elif . == true then 2 else 3 end",
        "[match(\"(?<d>[0-9]+)|(?<w>[A-Za-zÄÖÜäöüß]+)\"; \"g\")]",
        "[match(\"\"; \"g\")]",
        "[match(\"x*\"; \"gn\")]",
        "[capture(\"(?<id>[FGS])(?<n>[0-9]{2})\"; \"g\")]",
        "[scan(\"[0-9]+\")], [scan(\"([a-z])([a-z])\"; \"i\")]",
        "split(\"[;,]\\\\s*\"; null), [splits(\"[;\\r\\n]+\")]",
        "sub(\"ü\"; \"ue\"), gsub(\"ü\"; \"ue\"; \"i\"), gsub(\"\\\\s+\"; \" \")",
        "gsub(\"\\\\b(?<k>[FG][0-9]{2})(?<n>[0-9]{6})\\\\b\"; \"\\(.k)000\\(.n)\")",
        "gsub(\"(?<a>.)\"; \"\\(.a)\\(.a)\"), gsub(\"\"; \"-\")",
        "test(\"über\"; \"i\"), test(\"^$\"), test(\"a\"; \"q\")",
        "match(\"(\")",
        "ascii_downcase | gsub(\"[^a-z0-9]+\"; \"-\")",
        "fromjson",
        r#""[1, {\"a\": [2, \"]\\\"[\"]}] 3 \"x\"" | fromjson"#,
        r#""[[[1]]] {" | fromjson"#,
    ];
    for program in programs {
        for input in &inputs {
            let wrapped = format!("[{program}]");
            let ours = run(&format!("try {wrapped} catch \"error: \\(.)\""), input.clone());
            let stock = stock_jaq(&format!("try {wrapped} catch \"error: \\(.)\""), input.clone());
            assert_eq!(ours.map(|v| json!([v])), stock, "{program} on {input}");
        }
    }
}

#[test]
fn objects_nested_to_the_left_give_the_same_outputs() {
    let input = json!({"a": 1, "b": [2, 3], "c": {"d": "x"}, "k": ["p", "q"]});
    let programs = [
        r#"{a: .a, b: .b, c: .c}"#,
        r#"{a, b, c, "d": 4, "e\(.a)": 5, (.k[]): .b[]}"#,
        r#"{x: (1, 2), y: (3, 4), z: (5, 6)}"#,
        r#"{a: 1, b: 2, a: 3}"#,
        r#"{a: 1, b: error("boom"), c: 3}"#,
        r#"{a: 1, b: empty, c: 3}"#,
        r#".a as $x | {$x, y: {p: 1, q: {r: 2, s: 3}}, z: [{u: 1, v: 2}]}"#,
        r#"def f($v): {one: $v, two: ($v + 1), three: {four: $v}}; [f(.a), f(10)]"#,
        r#". as {a: $a, c: {d: $d}} | {$a, $d, both: "\($a)\($d)"}"#,
        r#"reduce (.b[]) as $i ({n: 0, seen: []}; {n: (.n + $i), seen: (.seen + [$i])})"#,
        r#"[foreach (1, 2) as $i ({s: 0, t: 0}; {s: (.s + $i), t: .s}; {s, t, u: 1})]"#,
        r#"{a: 1, b: 2} as {a: $x, b: $y} | {x: $x, y: $y} | .x += 1 | .y |= . * 2"#,
        r#"[{a: 1, b: 2}, {c: 3, d: 4}][{i: 0, j: 1}.j] | {k: (to_entries | map(.key)), l: (try {a: 1, b: (null | error)} catch "caught")}"#,
        r#"if {a: 1, b: 2}.b == 2 then {yes: true, no: false} else {} end"#,
        r#"try path({a: 1, b: 2}) catch "not a path: \(.)""#,
    ];
    for program in programs {
        let ours = run(&format!("[{program}]"), input.clone());
        let stock = stock_jaq(&format!("[{program}]"), input.clone());
        assert_eq!(ours.map(|v| json!([v])), stock, "{program}");
    }
    // A program may define `bridge_main` itself (it then runs as written).
    assert_eq!(run("def bridge_main: 1; bridge_main + 1", json!(null)), Ok(json!(2)));
    // Errors in the program still point at the place in the text.
    let errors = Program::compile("{a: 1,\n b: undefined_filter}").unwrap_err();
    assert_eq!((errors[0].line, errors[0].column), (2, 5), "{errors:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// The native `sub`/`gsub` (sub.rs) against jaq-std's definitions run by stock jaq: the same
    /// outputs in the same order, the same errors, for replacements with no, one and several
    /// outputs and errors, regexes and flags with several outputs, and empty matches.
    #[test]
    fn sub_and_gsub_agree_with_jaq_std(
        text in "[abF0-9 äx]{0,10}",
        re in proptest::sample::select(vec![
            r#""a""#, r#""b+""#, r#""""#, r#""a*""#, r#""ä""#, r#""(?<x>a)|(?<y>b)""#,
            r#""(?<d>[0-9])(?<e>[0-9])?""#, r#""\\b""#, r#""(""#, r#""a", "b""#, "empty", r#"1"#,
        ]),
        f in proptest::sample::select(vec![
            r#""X""#, r#""<\(.x)|\(.y)|\(.d)>""#, r#"("1", "2")"#, "empty", r#"error("e")"#, "null",
            "1", r#"(.x // "-")"#, r#"("p", error("q"), "r")"#, "tojson", r#"if .d then (.d, .d) else "n" end"#,
        ]),
        flags in proptest::sample::select(vec![r#""""#, r#""g""#, r#""gi""#, r#""n""#, r#""gn""#, r#""x""#, r#""q""#, r#""", "g""#]),
        global in proptest::bool::ANY,
    ) {
        let call = if global { "gsub" } else { "sub" };
        let program = format!(r#"try [{call}({re}; {f}; {flags})] catch "error: \(.)""#);
        let ours = run(&program, json!(text));
        let stock = stock_jaq(&program, json!(text));
        proptest::prop_assert_eq!(ours.map(|v| json!([v])), stock, "{}", program);
    }
}

#[test]
fn fromjson_refuses_text_nested_deeper_than_its_parser_can_go() {
    // 1,000,000 `[` overflowed the stack of any thread and killed the process.
    let refused =
        run(r#"try ("[" * 1000000 | fromjson) catch endswith("nested deeper than 10000 levels")"#, json!(null));
    assert_eq!(refused, Ok(json!(true)));
    let deepest = r#"[try (("[" * 10000) + ("]" * 10000) | fromjson | length) catch ., try (("[" * 10001) + ("]" * 10001) | fromjson) catch (. | endswith("nested deeper than 10000 levels"))]"#;
    assert_eq!(run(deepest, json!(null)), Ok(json!([1, true])));
    // brackets in strings do not count
    assert_eq!(run(r#"("\"" + "[" * 20000 + "\"") | fromjson | length"#, json!(null)), Ok(json!(20000)));
}

#[test]
fn sub_is_linear_in_the_number_of_matches() {
    // 100,000 matches: jaq-std's reduction copied the text for each (tens of GB, the process
    // was killed); here the text is built once. (The corpus test bounds the whole run's memory,
    // with the counting allocator that these unit tests do not have.)
    let text = "F05000110 ".repeat(100_000);
    let program = r#"gsub("\\b(?<k>[FG][0-9]{2})(?<n>[0-9]{6})\\b"; "\(.k)000\(.n)") | length"#;
    assert_eq!(run(program, json!(text)), Ok(json!(1_300_000)));
}

#[test]
fn test_is_cached_and_agrees_with_jaqs_definition() {
    // jaq-std defines `test(re; flags)` as `matches(re; flags) | any`; `matches` is still there.
    let cases = json!([
        ["abc", "b", ""],
        ["abc", "^b", ""],
        ["ABC", "b", "i"],
        ["a\nb", "^b$", ""],
        ["a\nb", "^b$", "m"],
        ["a\nb", "a.b", "s"],
        ["a\nb", "a.b", "p"],
        ["", "x*", ""],
        ["", "x*", "n"],
        ["yy", "x*", "gn"],
        ["Straße 1", "[0-9]+", "g"],
        ["ä", "^.$", ""],
        ["a b", "a b", "x"],
        ["ab", "a+?", "l"]
    ]);
    let program = Program::compile(
        r#"[.[] | . as [$s, $re, $flags] | ($s | test($re; $flags)) == ($s | matches($re; $flags) | any)] | all"#,
    )
    .unwrap();
    assert_eq!(program.run(to_val(&cases), globals(), Budget::default(), None), Ok(json!(true)));
    assert_eq!(run(r#"[.[] | test("^[0-9]+$")]"#, json!(["12", "1a", ""])), Ok(json!([true, false, false])));

    // Same errors as jaq's: bad flag, bad regex, non-string input.
    for (code, error) in [
        (r#""a" | test("a"; "q")"#, "invalid regex flag: q"),
        (r#""a" | test("(")"#, "invalid regex"),
        (r#"1 | test("a")"#, "cannot use 1 as string"),
    ] {
        let ours = run(code, json!(null)).unwrap_err();
        let jaqs = run(&code.replace("test(", "bridge_jaq_test("), json!(null));
        assert!(ours.contains(error), "{code}: {ours}");
        assert_eq!(Err(ours), jaqs, "{code}");
    }

    // One compiled regex per (regex, flags) and program, however many calls; bounded for data patterns.
    let program = Program::compile(r#"[.[] | test("^[a-z]+$"), test("x"; "i")]"#).unwrap();
    for _ in 0..3 {
        program.run(to_val(&json!(["ab", "X1", "c"])), globals(), Budget::default(), None).unwrap();
    }
    assert_eq!(program.regexes.len(), 2);
    // Patterns from the data are cached too, within the cache's bytes (see regex.rs).
    let patterns: Vec<String> = (0..300).map(|i| format!("^{i}$")).collect();
    let program = Program::compile(r#"[.[] as $re | "7" | test($re)] | map(select(.)) | length"#).unwrap();
    assert_eq!(program.run(to_val(&json!(patterns)), globals(), Budget::default(), None), Ok(json!(1)));
    assert_eq!(program.regexes.len(), 300);
    assert!(program.regexes.bytes() <= RegexCache::MAX_BYTES);
}

#[test]
fn count_elements_counts_every_use_of_a_name_anywhere() {
    let tree = json!({
        "s": {"datenfeld": [{"id": 1}, {"id": 2}],
              "struktur": [{"enthaelt": {"datenfeld": {"id": 3}}},
                           {"enthaelt": {"datenfeldgruppe": {"struktur": {"enthaelt": {"datenfeld": null}}}}}]},
        "a": [[{"datenfeld": "x"}]]
    });
    let walk = r#"[.. | objects | select(has($n)) | .[$n] | as_array | length] | add // 0"#;
    for name in ["datenfeld", "datenfeldgruppe", "struktur", "nothing"] {
        let native = run(&format!(r#"count_elements("{name}")"#), tree.clone()).unwrap();
        let jq = run(&format!(r#""{name}" as $n | {walk}"#), tree.clone()).unwrap();
        assert_eq!(native, jq, "{name}");
    }
    assert_eq!(run(r#"count_elements("datenfeld")"#, tree.clone()), Ok(json!(4)));
    assert_eq!(run(r#"count_elements("datenfeld")"#, json!("text")), Ok(json!(0)));
    assert!(run("count_elements(1)", tree).unwrap_err().contains("string name"));
}

#[test]
fn requires_exactly_one_json_output() {
    assert!(run("empty", json!(1)).unwrap_err().contains("no document"));
    assert!(run("1, 2", json!(1)).unwrap_err().contains("more than one"));
    assert!(run("nan", json!(1)).unwrap_err().contains("not JSON"));
    assert!(run(r#"error("boom")"#, json!(1)).unwrap_err().contains("boom"));
    assert!(run("halt", json!(1)).unwrap_err().contains("halt"));
}

#[test]
fn impure_builtins_are_not_available() {
    for code in ["now", "env", "input", "localtime"] {
        let errors = Program::compile(code).unwrap_err();
        assert!(errors[0].message.contains("undefined"), "{code}: {errors:?}");
    }
}

#[test]
fn compile_errors_carry_line_and_column() {
    let errors = Program::compile(".a |\n  foo(1)").unwrap_err();
    assert_eq!((errors[0].line, errors[0].column), (2, 3), "{errors:?}");
    assert!(errors[0].message.contains("foo"));
    let errors = Program::compile("{a: (1 +}").unwrap_err();
    assert_eq!(errors[0].line, 1);
}

#[test]
fn numbers_and_strings_survive_the_round_trip() {
    let value = json!({"i": 3, "f": 2.5, "s": "ü", "a": [null, true], "big": 12345678901234_i64});
    assert_eq!(to_json(&to_val(&value)).unwrap(), value);
}

#[test]
fn the_engines_value_is_written_as_xml_as_its_json_tree_is() {
    use crate::codec::xml;
    use crate::mapping::latin;
    let value = json!({"xdf:root": {
        "@xmlns:xdf": "urn:x", "@n": 1.5, "@i": 7, "@skip": null, "#text": "t",
        "xdf:name": "Größe “x”\u{a0}m",
        "xdf:list": ["a", 2, true, null, {"@a": "b", "#text": "c\r\n<&>"}],
        "xdf:none": null, "xdf:empty": "", "xdf:leer": {},
        "xdf:gruppe": {"xdf:identifikation": {"xdf:id": "F00000000001"}, "xdf:name": {"#text": "≤ 5", "@k": "≤"}},
    }});
    let val = to_val(&value);
    let latin = vec!["name".to_owned()];
    let ids = serde_json::Map::from_iter([("F00000000001".to_owned(), json!("F00000001"))]);
    let mut tree = to_json(&val).unwrap();
    let warnings_of_tree = latin::normalise_tree(&mut tree, &latin, &ids);
    let written = xml::encode_tree(&val, &|name, text| latin::fix(&latin, name, text)).unwrap();
    assert_eq!(written, xml::encode(&tree).unwrap());
    assert_eq!(latin::warnings(&val, &latin, &ids), warnings_of_tree);
    assert_eq!(warnings_of_tree.len(), 2, "{warnings_of_tree:?}");
    assert!(warnings_of_tree[1].contains("F00000001 name"), "{warnings_of_tree:?}");
    assert!(written.contains("<xdf:name k=\"≤\">&lt;= 5</xdf:name>"), "{written}");
}

#[test]
fn a_value_that_is_not_json_is_refused_with_the_same_reason_either_way() {
    let program = Program::compile("[1, {a: nan}]").unwrap();
    let as_val = program.run_val(Val::Null, globals(), Budget::default(), None).unwrap_err();
    let as_json = program.run(Val::Null, globals(), Budget::default(), None).unwrap_err();
    assert_eq!(as_val, as_json);
    assert!(as_val.starts_with("the program produced a value that is not JSON: number"), "{as_val}");
    assert_eq!(json_problem(&to_val(&json!({"a": [1, "x", null, true, 2.5]}))), None);
}

#[test]
fn as_array_is_native_and_agrees_with_its_jq_definition() {
    let definition = "def jq_as_array: if . == null then [] elif type == \"array\" then . else [.] end;";
    for input in [json!(null), json!([]), json!([1, [2]]), json!(0), json!(false), json!(""), json!({"a": 1})] {
        let ours = run("as_array", input.clone());
        let theirs = run(&format!("{definition} jq_as_array"), input.clone());
        assert_eq!(ours, theirs, "{input}");
    }
}
