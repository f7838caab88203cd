//! The jq engine: compiles a mapping program once (jaq) and runs it as a pure function of its inputs, within a budget.

use jaq_core::box_iter::box_once;
use jaq_core::load::parse::Def;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Bind, Compiler, Ctx, DataT, Exn, Vars};
use jaq_json::{Num, Val};
use jaq_std::ValT as _;
use serde_json::Value;
use std::borrow::Cow;

use crate::codec::utf8_text;
use crate::codec::xml::{Node, XmlTree};

use super::budget::{Budget, Exceeded, Meter, STACK_BYTES, STACK_MIN};
use super::memo::Memo;
use super::regex::{RegexCache, static_str};
use super::rewrite::{TICK, add_ticks, nest_objects_left, tick_def};

/// jq built-ins that would make a mapping depend on something other than its inputs.
/// (`halt` stays: the engine turns it into an error instead of exiting the process.)
const IMPURE: &[&str] = &["now", "env", "input", "inputs", "localtime", "strflocaltime"];

/// jaq's natives that the engine replaces: the regex natives (by ones that keep the compiled
/// regexes and tick per match), `range` (by one that ticks per value) and `fromjson` (by one that
/// refuses text nested deeper than [`FROMJSON_MAX_DEPTH`]).
const REPLACED_NATIVES: &[&str] = &["matches", "split_matches", "split_", "range", "fromjson"];

/// Deepest nesting `fromjson` parses (jq's own limit). jaq-json's parser recurses per level: the
/// mappings parse praezisierung texts, and one of `[` × 1,000,000 overflowed the stack and killed
/// the process.
const FROMJSON_MAX_DEPTH: usize = 10_000;

/// Whether the JSON text nests arrays and objects deeper than `max` (strings skipped; for text
/// that is not JSON, an estimate, which is enough to refuse it).
fn nests_deeper_than(text: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Definitions the engine adds to every program. `$__lookups` and `$__codelists` are bound per run.
/// Some replace jaq's own definitions of things a mapping does at nearly every step by natives with
/// the same results (`replaced_definitions_and_regex_natives_agree_with_stock_jaq`): `type` (a chain
/// of up to six comparisons in jaq), the constants `null`, `true` and `false` and `not` (filters in
/// jaq: `null` is `[][0]`), `join` on arrays (two path updates and a reduction in jaq) and
/// `to_entries` on objects, and the bridge's own `as_array`
/// (`as_array_is_native_and_agrees_with_its_jq_definition`); `test` is the native `bridge_test`,
/// which keeps the program's compiled regexes instead of compiling one per call (as do the engine's
/// `matches`, `split_matches` and
/// `split_`, on which jaq defines `match`, `capture`, `scan` and `split/2`); `sub` and `gsub` are
/// the native `bridge_sub`, jaq-std's reduction in linear time (see `sub.rs`).
/// A definition only sees the ones before it, so the replacements come first.
const PRELUDE: &str = r#"
def type: bridge_type;
def null: bridge_null;
def true: bridge_true;
def false: bridge_false;
def not: bridge_not;
def join($s): if type == "array" and ($s | type) == "string" then bridge_join($s) else .[] |= tostring | .[:-1][] += $s | reduce .[] as $x (""; . + $x) end;
def to_entries: if type == "object" then bridge_to_entries else [keys_unsorted[] as $key | {$key, value: .[$key]}] end;
def test(re): bridge_test(re; "");
def test(re; flags): bridge_test(re; flags);
def sub(re; f; flags): bridge_sub(re; f; flags);
def sub(re; f): bridge_sub(re; f; "");
def gsub(re; f; flags): bridge_sub(re; f; "g" + flags);
def gsub(re; f): bridge_sub(re; f; "g");
def lookup($table): . as $k | $__lookups[$table][$k | tostring];
def lookup($table; $default): lookup($table) // $default;
def codelist($uri): $__codelists[$uri];
def codelist($canonical; $version): $__codelists[$canonical + "|" + ($version // "")];
def as_array: bridge_as_array;
def slug: ascii_downcase
  | gsub("ä"; "ae") | gsub("ö"; "oe") | gsub("ü"; "ue") | gsub("ß"; "ss")
  | gsub("[^a-z0-9]+"; "-") | ltrimstr("-") | rtrimstr("-");
"#;

/// Names of the variables every program can read, in the order `run` binds them.
pub const GLOBALS: [&str; 4] = ["$__lookups", "$__codelists", "$source", "$item"];

/// What the engine's filters run on: jaq values, and per run the data of [`Run`].
pub(crate) struct Data;

impl DataT for Data {
    type V<'a> = Val;
    type Data<'a> = &'a Run<'a>;
}

/// The data a run gives the native filters: the look-up table of the compiled program, the
/// program's regex cache and the run's budget.
pub(crate) struct Run<'a> {
    lut: &'a jaq_core::Lut<Data>,
    pub(crate) regexes: &'a RegexCache,
    pub(crate) meter: &'a Meter,
    /// The memo of `memo($key; f)` and the number of this run's context in it (none: `f` always runs).
    pub(crate) memo: Option<(&'a Memo, u64)>,
}

impl<'a> jaq_core::data::HasLut<'a, Data> for &'a Run<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Data> {
        self.lut
    }
}

type Filter = jaq_core::Filter<Data>;

/// The exit code of the exception that stops a run over budget. A `halt` passes through `try`,
/// so the program cannot catch it; the run's [`Meter`] says why it was raised.
const BUDGET_HALT: i32 = 124;

/// The exception for a run over budget.
pub(crate) fn over_budget<'a>(_: Exceeded) -> Exn<'a, Val> {
    Exn::halt(BUDGET_HALT)
}

/// Native built-ins of the engine: deterministic helpers jq lacks, faster versions of jaq's own
/// (see [`PRELUDE`] and [`REPLACED_NATIVES`]), and the budget's tick.
fn bridge_funs() -> impl Iterator<Item = jaq_core::native::Fun<Data>> {
    use jaq_core::native::{Filter as Native, bome, run, unary, v};
    // jaq-std's regex natives compile their regex on every call; these replace them (same names, so
    // jaq-std's `match`, `capture`, `scan`, `split/2` and `splits` use them).
    fn parts<const BETWEEN: bool, const MATCHES: bool>(mut cv: jaq_core::Cv<'_, Data>) -> jaq_core::ValXs<'_, Val> {
        let flags = cv.0.pop_var();
        let re = cv.0.pop_var();
        let run = *cv.0.data();
        match run.regexes.parts(&cv.1, &re, &flags, (BETWEEN, MATCHES), run.meter) {
            Ok(parts) => bome(parts),
            Err(exceeded) => box_once(Err(over_budget(exceeded))),
        }
    }
    let natives: [Native<jaq_core::RunPtr<Data>>; 19] = [
        // jaq-json's `fromjson` (same outputs and errors), refusing text nested too deep for its parser.
        ("fromjson", v(0), |cv| {
            let input = cv.1;
            let text = match input.try_as_utf8_bytes_owned() {
                Ok(text) => text,
                Err(e) => return bome(Err(e)),
            };
            if nests_deeper_than(&text, FROMJSON_MAX_DEPTH) {
                let message = format!("cannot parse {input} as JSON: nested deeper than {FROMJSON_MAX_DEPTH} levels");
                return bome(Err(jaq_json::Error::str(message)));
            }
            let fail = move |r: Result<Val, jaq_json::read::Error>| {
                r.map_err(|e| jaq_json::Error::str(format_args!("cannot parse {input} as JSON: {e}")))
            };
            let values = jaq_json::bytes_valrs(text, |s| Box::new(jaq_json::read::parse_many(s).map(fail)));
            Box::new(values.map(|r| r.map_err(Exn::from)))
        }),
        ("matches", v(2), parts::<false, true>),
        ("split_matches", v(2), parts::<true, true>),
        ("split_", v(2), parts::<true, false>),
        // `bridge_sub(re; f; flags)`: jaq-std's `sub` in linear time (the prelude defines `sub` and `gsub` as this).
        ("bridge_sub", [Bind::Fun(()), Bind::Fun(()), Bind::Fun(())].into(), super::sub::run),
        // `memo(f)` and `memo($key; f)`: f's outputs, kept in the run's memo. Natives, not definitions
        // of the prelude: `f` must be the term where `memo` is called (its place is part of the key).
        ("memo", [Bind::Fun(())].into(), super::memo::run::<false>),
        ("memo", [Bind::Var(()), Bind::Fun(())].into(), super::memo::run::<true>),
        // jaq's `range($from; $upto; $by)`, with a tick per value.
        ("range", v(3), |mut cv| {
            let by = cv.0.pop_var();
            let upto = cv.0.pop_var();
            let from = cv.0.pop_var();
            Box::new(range(from, upto, by, cv.0.data().meter))
        }),
        // jaq defines the constants as filters (`def null: [][0]`, `def true: 0 == 0`, …), which a
        // mapping pays for at nearly every step; the prelude defines them as these, with the same values.
        ("bridge_null", v(0), |_| bome(Ok(Val::Null))),
        ("bridge_true", v(0), |_| bome(Ok(Val::Bool(true)))),
        ("bridge_false", v(0), |_| bome(Ok(Val::Bool(false)))),
        ("bridge_not", v(0), |cv| bome(Ok(Val::Bool(matches!(cv.1, Val::Null | Val::Bool(false)))))),
        // `bridge_as_array`: `as_array` (null → [], an array as it is, anything else → [.]) in one step.
        ("bridge_as_array", v(0), |cv| {
            bome(Ok(match cv.1 {
                Val::Null => std::iter::empty().collect(),
                array @ Val::Arr(_) => array,
                other => std::iter::once(other).collect(),
            }))
        }),
        // `bridge_join($s)`: jaq's `join` of an array with a string (every item as by `tostring`, `$s`
        // between), in one step instead of two path updates and a reduction.
        ("bridge_join", v(1), |cv| {
            unary(cv, |input, separator| {
                let Val::Arr(items) = &input else {
                    return Err(jaq_json::Error::str(format!("bridge_join needs an array, got {input}")));
                };
                let separator = separator.try_as_utf8_bytes()?;
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(separator);
                    }
                    match item {
                        Val::TStr(bytes) => out.extend_from_slice(bytes),
                        other => out.extend_from_slice(other.to_string().as_bytes()),
                    }
                }
                Ok(Val::utf8_str(bytes::Bytes::from(out)))
            })
        }),
        // `bridge_to_entries`: `to_entries` of an object ([{key, value}, …] in key order), in one step.
        ("bridge_to_entries", v(0), |cv| {
            let Val::Obj(map) = &cv.1 else {
                return bome(Err(jaq_json::Error::str(format!("bridge_to_entries needs an object, got {}", cv.1))));
            };
            let (key, value) = (static_str("key"), static_str("value"));
            let entries = map
                .iter()
                .map(|(k, v)| Val::obj([(key.clone(), k.clone()), (value.clone(), v.clone())].into_iter().collect()));
            bome(Ok(entries.collect()))
        }),
        // `bridge_test(re; flags)`: `test` with the program's regex cache (the prelude defines `test` as this).
        ("bridge_test", v(2), |mut cv| {
            let flags = cv.0.pop_var();
            let re = cv.0.pop_var();
            let regexes = cv.0.data().regexes;
            bome(regexes.test(&cv.1, &re, &flags))
        }),
        // `bridge_type`: what jaq's `type` gives, in one step (the prelude defines `type` as this).
        ("bridge_type", v(0), |cv| {
            let name: &'static str = match &cv.1 {
                Val::Null => "null",
                Val::Bool(_) => "boolean",
                Val::Num(_) => "number",
                Val::TStr(_) | Val::BStr(_) => "string",
                Val::Arr(_) => "array",
                Val::Obj(_) => "object",
            };
            bome(Ok(static_str(name)))
        }),
        // `sha256`: hex SHA-256 of a string's UTF-8 bytes, e.g. for ids derived from content.
        ("sha256", v(0), |cv| {
            bome(match &cv.1 {
                Val::TStr(bytes) | Val::BStr(bytes) => {
                    Ok(Val::from(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes[..]))))
                }
                other => Err(jaq_json::Error::str(format!("sha256 needs a string, got {other}"))),
            })
        }),
        // `count_elements($name)`: over the whole input, the number of `$name` elements of every object
        // that has the key (null 0, an array its length, anything else 1); the same as
        // `[.. | objects | select(has($name)) | .[$name] | as_array | length] | add // 0`, in one pass.
        ("count_elements", v(1), |cv| {
            unary(cv, |input, name| match &name {
                Val::TStr(_) => Ok(Val::Num(Num::Int(count_elements(&input, &name) as isize))),
                other => Err(jaq_json::Error::str(format!("count_elements needs a string name, got {other}"))),
            })
        }),
    ];
    natives.into_iter().map(run::<Data>).chain([tick_native()])
}

/// `bridge_tick`: checks the run's budget and passes its input on, in runs, paths and updates (the
/// engine puts it inside the program's loops, see `rewrite.rs`).
fn tick_native() -> jaq_core::native::Fun<Data> {
    let native = jaq_core::Native::<Data>::new(|cv| match cv.0.data().meter.tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(exceeded) => box_once(Err(over_budget(exceeded))),
    })
    .with_paths(|cv| match cv.0.data().meter.tick() {
        Ok(()) => box_once(Ok(cv.1)),
        Err(exceeded) => box_once(Err(over_budget(exceeded))),
    })
    .with_update(|cv, f| match cv.0.data().meter.tick() {
        Ok(()) => f(cv.1),
        Err(exceeded) => box_once(Err(over_budget(exceeded))),
    });
    (TICK, jaq_core::native::v(0), native)
}

/// jaq's `range($from; $upto; $by)` (jaq-core's native, which is private), with a tick per value:
/// `$from`, `$from + $by`, … while below `$upto` (above it for a negative `$by`; unequal for 0).
fn range<'a>(from: Val, upto: Val, by: Val, meter: &'a Meter) -> impl Iterator<Item = jaq_core::ValX<'a, Val>> + 'a {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let direction = by.partial_cmp(&Val::from(0usize)).unwrap_or(Equal);
    let mut next = Some(Ok(from));
    std::iter::from_fn(move || {
        let current = next.take()?;
        match current {
            Ok(x) => {
                let go_on = match direction {
                    Greater => x < upto,
                    Less => x > upto,
                    Equal => x != upto,
                };
                if !go_on {
                    return None;
                }
                if let Err(exceeded) = meter.tick() {
                    return Some(Err(over_budget(exceeded)));
                }
                next = Some((x.clone() + by.clone()).map_err(Exn::from));
                Some(Ok(x))
            }
            // jaq yields the error once and ends.
            Err(e) => Some(Err(e)),
        }
    })
}

/// See `count_elements` in [`bridge_funs`]. Recursion depth is bounded by the decoder's `max_depth`.
fn count_elements(value: &Val, name: &Val) -> usize {
    match value {
        Val::Arr(items) => items.iter().map(|item| count_elements(item, name)).sum(),
        Val::Obj(map) => {
            let own = match map.get(name) {
                None | Some(Val::Null) => 0,
                Some(Val::Arr(items)) => items.len(),
                Some(_) => 1,
            };
            own + map.values().map(|item| count_elements(item, name)).sum::<usize>()
        }
        _ => 0,
    }
}

/// A compiled jq program.
pub struct Program {
    filter: Filter,
    regexes: RegexCache,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Program")
    }
}

/// A compile error with its position in the program text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

impl Program {
    /// Parses and compiles `code`; every error comes back with line and column in `code`.
    pub fn compile(code: &str) -> Result<Self, Vec<CompileError>> {
        let position = |slice: &str| -> (usize, usize) {
            let offset = (slice.as_ptr() as usize).saturating_sub(code.as_ptr() as usize).min(code.len());
            let before = &code[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
            (line, column)
        };
        let error = |slice: &str, message: String| {
            let (line, column) = position(slice);
            CompileError { line, column, message }
        };

        let prelude = jaq_core::load::parse(PRELUDE, |p| p.defs()).expect("the prelude parses");
        // jaq's definitions and the prelude, with the budget's ticks in their loops and recursions.
        let builtin: Vec<Def<&'static str>> = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .chain(prelude)
            .map(|mut def| {
                tick_def(&mut def);
                def
            })
            .collect();
        let defs = || builtin.iter().cloned();
        let arena = Arena::default();
        let modules = Loader::new(defs()).load(&arena, File { code, path: () }).map_err(|errors| {
            let mut out = Vec::new();
            for (_, e) in errors {
                match e {
                    jaq_core::load::Error::Io(items) => {
                        out.extend(items.into_iter().map(|(s, m)| error(s, format!("cannot load module: {m}"))))
                    }
                    jaq_core::load::Error::Lex(items) => out
                        .extend(items.into_iter().map(|(expect, s)| error(s, format!("expected {}", expect.as_str())))),
                    jaq_core::load::Error::Parse(items) => out
                        .extend(items.into_iter().map(|(expect, s)| error(s, format!("expected {}", expect.as_str())))),
                }
            }
            out
        })?;
        let compile = |modules| {
            let funs = jaq_core::funs()
                .chain(jaq_std::funs())
                .chain(jaq_json::funs())
                .filter(|(name, _, _)| !IMPURE.contains(name) && !REPLACED_NATIVES.contains(name))
                .chain(bridge_funs())
                .chain(super::text::funs());
            Compiler::default().with_funs(funs).with_global_vars(GLOBALS).compile(modules)
        };
        // The program as written is valid. If it is plain definitions and a main term (no module
        // directives), it runs with its object constructions as left-nested sums (see
        // `nest_objects_left`) and the budget's ticks in its loops and recursions (`add_ticks`),
        // compiled as definitions of the prelude; if that does not compile (which no valid program
        // is known to do), it runs as written: then only the built-in definitions and natives tick.
        // (A program that names `bridge_main` itself runs as written: it would call the main term.)
        let parsed = jaq_core::load::parse(code, |p| Ok((p.defs()?, p.term()?))).filter(|_| !code.contains(MAIN));
        if let Some((mut program, mut main)) = parsed {
            for def in &mut program {
                nest_objects_left(&mut def.body);
                tick_def(def);
            }
            nest_objects_left(&mut main);
            add_ticks(&mut main);
            let main = Def { name: MAIN, args: Vec::new(), body: main };
            // (the built-in definitions live as long as the program's, as far as the loader is concerned)
            fn shorten<'a>(def: Def<&'static str>) -> Def<&'a str> {
                def
            }
            let loader = Loader::new(defs().map(shorten).chain(program).chain([main]));
            if let Ok(Ok(filter)) = loader.load(&arena, File { code: MAIN, path: () }).map(compile) {
                return Ok(Self { filter, regexes: RegexCache::default() });
            }
        }
        let filter = compile(modules).map_err(|errors| {
            errors
                .into_iter()
                .flat_map(|(_, errs)| errs)
                .map(|(s, undefined)| error(s, format!("undefined {} `{s}`", format!("{undefined:?}").to_lowercase())))
                .collect::<Vec<_>>()
        })?;
        Ok(Self { filter, regexes: RegexCache::default() })
    }

    /// Runs the program on `input` with the globals bound in [`GLOBALS`] order, within `budget`.
    /// It must yield exactly one value, and that value must be plain JSON. A run over budget is
    /// stopped at the engine's next tick and fails with the budget's [`Exceeded`] message, whatever
    /// the program made of the exception. The run starts with at least [`STACK_MIN`] of stack (on
    /// a stack of [`STACK_BYTES`] of its own if the thread has less left), so
    /// the caller's thread stack does not matter and a deep recursion stops at a tick.
    /// With a `memo`, `memo($key; f)` keeps and reuses f's outputs there (see `memo.rs`); without
    /// one, it runs `f` every time.
    pub fn run(&self, input: Val, globals: [Val; 4], budget: Budget, memo: Option<&Memo>) -> Result<Value, String> {
        let value = self.run_val(input, globals, budget, memo)?;
        to_json(&value).map_err(not_json)
    }

    /// [`Program::run`], giving the program's value as it is (checked to be JSON: no byte strings,
    /// NaN, infinities or non-string keys, with the error `run` gives for them).
    pub fn run_val(&self, input: Val, globals: [Val; 4], budget: Budget, memo: Option<&Memo>) -> Result<Val, String> {
        let value = stacker::maybe_grow(STACK_MIN, STACK_BYTES, move || {
            let meter = Meter::start(budget);
            let result = self.run_metered(input, globals, &meter, memo);
            match meter.exceeded() {
                Some(exceeded) => Err(exceeded.to_string()),
                None => result,
            }
        })?;
        match json_problem(&value) {
            Some(problem) => Err(not_json(problem)),
            None => Ok(value),
        }
    }

    fn run_metered(&self, input: Val, globals: [Val; 4], meter: &Meter, memo: Option<&Memo>) -> Result<Val, String> {
        let memo = memo.map(|memo| (memo, memo.context([&globals[0], &globals[1], &globals[2]])));
        let run = Run { lut: &self.filter.lut, regexes: &self.regexes, meter, memo };
        let ctx = Ctx::<Data>::new(&run, Vars::new(globals));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => {
                return Err("the program produced no document (a filter yielded `empty`)".into());
            }
            Some(result) => result.map_err(describe_exception)?,
        };
        if let Some(second) = outputs.next() {
            second.map_err(describe_exception)?;
            return Err("the program produced more than one document".into());
        }
        Ok(first)
    }
}

fn not_json(problem: String) -> String {
    format!("the program produced a value that is not JSON: {problem}")
}

fn describe_exception(exn: jaq_core::Exn<Val>) -> String {
    match exn.get_err() {
        Ok(error) => error.to_string(),
        Err(_) => "the program stopped (halt)".into(),
    }
}

/// The name under which a program's main term is compiled (see [`Program::compile`]).
const MAIN: &str = "bridge_main";

/// Converts a tree into a jq value.
pub fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if isize::try_from(i).is_ok() => Val::Num(Num::Int(i as isize)),
            (_, Some(f)) => Val::Num(Num::Float(f)),
            _ => Val::Num(Num::Dec(n.to_string().into())),
        },
        Value::String(s) => Val::from(s.clone()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(map) => Val::obj(map.iter().map(|(k, v)| (Val::from(k.clone()), to_val(v))).collect()),
    }
}

/// Converts a decoded XML tree into a jq value the way a mapping declares its input: every element
/// named in `arrays` is an array, even where it occurs once. The tree must have been decoded without
/// forced arrays (`arrays = []`), where only repeated elements are arrays; the result is then exactly
/// what decoding with `arrays` gives (`a_tree_shaped_by_arrays_is_the_tree_decoded_with_them`). The root
/// element, attributes (`@name`) and text (`#text`) are never wrapped.
pub fn to_val_with_arrays(tree: &Value, arrays: &[String]) -> Val {
    fn element(value: &Value, arrays: &[String]) -> Val {
        match value {
            Value::Array(items) => items.iter().map(|v| element(v, arrays)).collect(),
            Value::Object(map) => Val::obj(
                map.iter()
                    .map(|(k, v)| {
                        let inner = element(v, arrays);
                        let wrap = !v.is_array() && !k.starts_with(['@', '#']) && arrays.iter().any(|a| a == k);
                        (Val::from(k.clone()), if wrap { std::iter::once(inner).collect() } else { inner })
                    })
                    .collect(),
            ),
            other => to_val(other),
        }
    }
    match tree {
        _ if arrays.is_empty() => to_val(tree),
        Value::Object(roots) => {
            Val::obj(roots.iter().map(|(k, v)| (Val::from(k.clone()), element(v, arrays))).collect())
        }
        other => to_val(other),
    }
}

/// What makes `val` no JSON tree ([`to_json`]'s error), or `None`; without building the tree.
pub fn json_problem(val: &Val) -> Option<String> {
    match val {
        Val::Null | Val::Bool(_) | Val::TStr(_) | Val::Num(Num::Int(_)) => None,
        Val::Num(_) => to_json(val).err(),
        Val::BStr(_) => Some("a byte string".into()),
        Val::Arr(items) => items.iter().find_map(json_problem),
        Val::Obj(map) => map.iter().find_map(|(k, v)| match k {
            Val::TStr(_) => json_problem(v),
            other => Some(format!("an object key that is not a string ({other})")),
        }),
    }
}

/// The engine's values are written as XML directly ([`crate::codec::xml::encode_tree`]), as they
/// would be after [`to_json`]: the same texts of strings, numbers and booleans.
impl XmlTree for Val {
    fn node(&self) -> Node<'_, Self> {
        match self {
            Val::Null => Node::Null,
            Val::Bool(b) => Node::Scalar(Cow::Borrowed(if *b { "true" } else { "false" })),
            Val::TStr(bytes) | Val::BStr(bytes) => Node::Scalar(utf8_text(bytes)),
            Val::Num(_) => Node::Scalar(Cow::Owned(match to_json(self) {
                Ok(number) => number.to_string(),
                Err(_) => self.to_string(),
            })),
            Val::Arr(items) => Node::Array(items),
            Val::Obj(_) => Node::Object,
        }
    }

    fn entries(&self) -> impl Iterator<Item = (Cow<'_, str>, &Self)> {
        let map = match self {
            Val::Obj(map) => Some(map.iter()),
            _ => None,
        };
        map.into_iter().flatten().map(|(k, v)| match k {
            Val::TStr(key) => (utf8_text(key), v),
            other => (Cow::Owned(other.to_string()), v),
        })
    }

    fn string(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::TStr(bytes) => Some(utf8_text(bytes)),
            _ => None,
        }
    }
}

/// Converts a jq value back into a tree; NaN, infinities, byte strings and non-string keys are errors.
pub fn to_json(val: &Val) -> Result<Value, String> {
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Value::from(*f as i64)
            } else {
                serde_json::Number::from_f64(*f).map(Value::Number).ok_or_else(|| format!("number {f}"))?
            }
        }
        Val::Num(n) => {
            let text = n.to_string();
            serde_json::from_str::<Value>(&text).map_err(|_| format!("number {text}"))?
        }
        Val::TStr(bytes) => Value::String(utf8_text(bytes).into_owned()),
        Val::BStr(_) => return Err("a byte string".into()),
        Val::Arr(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match k {
                    Val::TStr(key) => Ok((utf8_text(key).into_owned(), to_json(v)?)),
                    other => Err(format!("an object key that is not a string ({other})")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests;
