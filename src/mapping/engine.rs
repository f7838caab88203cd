//! The jq engine: compiles a mapping program once (jaq) and runs it as a pure function of its inputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jaq_core::load::parse::{Def, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, DataT, Vars};
use jaq_json::{Num, Val};
use jaq_std::ValT as _;
use serde_json::Value;

/// jq built-ins that would make a mapping depend on something other than its inputs.
/// (`halt` stays: the engine turns it into an error instead of exiting the process.)
const IMPURE: &[&str] = &["now", "env", "input", "inputs", "localtime", "strflocaltime"];

/// jaq-std's regex natives, which the engine replaces by ones that keep the compiled regexes.
const REGEX_NATIVES: &[&str] = &["matches", "split_matches", "split_"];

/// Definitions the engine adds to every program. `$__lookups` and `$__codelists` are bound per run.
/// Some replace jaq's own definitions of things a mapping does at nearly every step by natives with
/// the same results (`replaced_definitions_and_regex_natives_agree_with_stock_jaq`): `type` (a chain
/// of up to six comparisons in jaq), the constants `null`, `true` and `false` and `not` (filters in
/// jaq: `null` is `[][0]`), `join` on arrays (two path updates and a reduction in jaq) and
/// `to_entries` on objects; `test` is the native `bridge_test`, which keeps the program's compiled
/// regexes instead of compiling one per call (as do the engine's `matches`, `split_matches` and
/// `split_`, on which jaq defines `match`, `capture`, `scan`, `split/2`, `sub` and `gsub`).
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
def lookup($table): . as $k | $__lookups[$table][$k | tostring];
def lookup($table; $default): lookup($table) // $default;
def codelist($uri): $__codelists[$uri];
def codelist($canonical; $version): $__codelists[$canonical + "|" + ($version // "")];
def as_array: if . == null then [] elif type == "array" then . else [.] end;
def slug: ascii_downcase
  | gsub("ä"; "ae") | gsub("ö"; "oe") | gsub("ü"; "ue") | gsub("ß"; "ss")
  | gsub("[^a-z0-9]+"; "-") | ltrimstr("-") | rtrimstr("-");
"#;

/// Names of the variables every program can read, in the order `run` binds them.
pub const GLOBALS: [&str; 4] = ["$__lookups", "$__codelists", "$source", "$item"];

/// What the engine's filters run on: jaq values, and per run the data of [`Run`].
struct Data;

impl DataT for Data {
    type V<'a> = Val;
    type Data<'a> = &'a Run<'a>;
}

/// The data a run gives the native filters: the look-up table of the compiled program and the
/// program's regex cache.
struct Run<'a> {
    lut: &'a jaq_core::Lut<Data>,
    regexes: &'a RegexCache,
}

impl<'a> jaq_core::data::HasLut<'a, Data> for &'a Run<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Data> {
        self.lut
    }
}

type Filter = jaq_core::Filter<Data>;

/// The compiled regexes of one program, by flags and regex. The regexes of a mapping are nearly all
/// literals of the program, so the cache stays small; at [`RegexCache::MAX`] entries (patterns that
/// come from the data) it is emptied and fills again.
#[derive(Default)]
struct RegexCache {
    compiled: Mutex<HashMap<Box<str>, ByRegex>>,
}

/// The compiled regexes of one set of flags, by regex.
type ByRegex = HashMap<Box<str>, Arc<Compiled>>;

/// A regex compiled with its flags, and the flags that act on how it is applied.
struct Compiled {
    regex: regex_bites::bytes::Regex,
    /// `g`: every match, not only the first.
    global: bool,
    /// `n`: empty matches are skipped.
    ignore_empty: bool,
}

impl RegexCache {
    const MAX: usize = 256;

    #[cfg(test)]
    fn len(&self) -> usize {
        self.compiled.lock().unwrap().values().map(HashMap::len).sum()
    }

    /// The compiled regex for `re` with `flags`, checked as jaq-std checks them (flags first, then
    /// the regex; same messages), compiled once per program.
    fn get(&self, re: &Val, flags: &Val) -> Result<Arc<Compiled>, jaq_core::Error<Val>> {
        fn as_str(v: &Val) -> Result<&str, jaq_core::Error<Val>> {
            std::str::from_utf8(v.try_as_utf8_bytes()?).map_err(jaq_core::Error::str)
        }
        let flags = as_str(flags)?;
        let mut builder_flags = [false; 5]; // i, m, s, l, x
        let (mut global, mut ignore_empty) = (false, false);
        for flag in flags.chars() {
            match flag {
                'g' => global = true,
                'n' => ignore_empty = true,
                'i' => builder_flags[0] = true,
                'm' => builder_flags[1] = true,
                's' => builder_flags[2] = true,
                'l' => builder_flags[3] = true,
                'x' => builder_flags[4] = true,
                'p' => (builder_flags[1], builder_flags[2]) = (true, true),
                c => return Err(jaq_core::Error::str(format_args!("invalid regex flag: {c}"))),
            }
        }
        let re = as_str(re)?;
        let lock = || self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(compiled) = lock().get(flags).and_then(|by_regex| by_regex.get(re)) {
            return Ok(Arc::clone(compiled));
        }
        let [i, m, s, l, x] = builder_flags;
        let regex = regex_bites::bytes::RegexBuilder::new(re)
            .case_insensitive(i)
            .multi_line(m)
            .dot_matches_new_line(s)
            .swap_greed(l)
            .ignore_whitespace(x)
            .build()
            .map_err(|e| jaq_core::Error::str(format_args!("invalid regex: {e}")))?;
        let compiled = Arc::new(Compiled { regex, global, ignore_empty });
        // Past MAX regexes (patterns from the data, e.g. each form's praezisierung pattern tested for
        // validity) the cache starts again, so the program's own regexes are not shut out for good.
        let mut cache = lock();
        if cache.values().map(HashMap::len).sum::<usize>() >= Self::MAX {
            cache.clear();
        }
        cache.entry(flags.into()).or_default().insert(re.into(), Arc::clone(&compiled));
        Ok(compiled)
    }

    /// jq's `test(re; flags)` as jaq-std implements it (`matches(re; flags) | any`), with the
    /// compiled regex kept for the next call.
    fn test(&self, input: &Val, re: &Val, flags: &Val) -> jaq_core::ValR<Val> {
        let compiled = self.get(re, flags)?;
        let haystack = input.try_as_utf8_bytes()?;
        let found = if compiled.ignore_empty {
            compiled.regex.find_iter(haystack).any(|m| !m.as_bytes().is_empty())
        } else {
            compiled.regex.is_match(haystack)
        };
        Ok(Val::Bool(found))
    }

    /// jaq-std's natives `matches` (`parts` = false, true), `split_matches` (true, true) and
    /// `split_` (true, false), on which `match`, `capture`, `scan`, `split/2`, `splits`, `sub` and
    /// `gsub` are defined: the same array of parts (the text between matches as strings, each match
    /// as an array of its groups' {offset, length, string, name}), with the compiled regex kept.
    fn parts(&self, input: &Val, re: &Val, flags: &Val, (between, matches): (bool, bool)) -> jaq_core::ValR<Val> {
        let compiled = self.get(re, flags)?;
        let text = input.try_as_utf8_bytes()?;
        let mut chars = CharOffsets { text, byte: 0, char: 0 };
        let (key_offset, key_length, key_string, key_name) =
            (static_str("offset"), static_str("length"), static_str("string"), static_str("name"));
        let mut out = Vec::new();
        let mut last = 0;
        for captures in compiled.regex.captures_iter(text) {
            let whole = captures.get(0).expect("group 0 is the whole match");
            if compiled.ignore_empty && whole.as_bytes().is_empty() {
                continue;
            }
            if between {
                out.push(input.as_sub_str(&text[last..whole.start()]));
                last = whole.end();
            }
            if matches {
                let groups = captures.iter().zip(compiled.regex.capture_names());
                let groups = groups.filter_map(|(group, name)| Some((group?, name)));
                out.push(
                    groups
                        .map(|(group, name)| {
                            let mut fields = vec![
                                (key_offset.clone(), Val::from(chars.at(group.start()))),
                                (key_length.clone(), Val::from(bstr::ByteSlice::chars(group.as_bytes()).count())),
                                (key_string.clone(), input.as_sub_str(group.as_bytes())),
                            ];
                            if let Some(name) = name {
                                fields.push((key_name.clone(), Val::from(name.to_string())));
                            }
                            Val::obj(fields.into_iter().collect())
                        })
                        .collect(),
                );
            }
            if !compiled.global {
                break;
            }
        }
        if between {
            out.push(input.as_sub_str(&text[last..]));
        }
        Ok(out.into_iter().collect())
    }
}

/// A jq string of a text the program has built in, without copying it.
fn static_str(text: &'static str) -> Val {
    Val::utf8_str(bytes::Bytes::from_static(text.as_bytes()))
}

/// Character offsets of byte offsets in a text (jq counts offsets in characters), counted
/// incrementally: offsets mostly come in increasing order. A group that starts before the one before
/// it (`"ba" | match("(?:(a)|(b))+")`) is counted from the start; stock jaq would panic there.
struct CharOffsets<'a> {
    text: &'a [u8],
    byte: usize,
    char: usize,
}

impl CharOffsets<'_> {
    fn at(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            (self.byte, self.char) = (0, 0);
        }
        self.char += bstr::ByteSlice::chars(&self.text[self.byte..byte]).count();
        self.byte = byte;
        self.char
    }
}

/// Native built-ins of the engine: deterministic helpers jq lacks, and faster versions of jaq's own
/// (see [`PRELUDE`] and [`REGEX_NATIVES`]).
fn bridge_funs() -> impl Iterator<Item = jaq_core::native::Fun<Data>> {
    use jaq_core::native::{Filter as Native, bome, run, unary, v};
    // jaq-std's regex natives compile their regex on every call; these replace them (same names, so
    // jaq-std's `match`, `capture`, `scan`, `split/2`, `splits`, `sub` and `gsub` use them).
    fn parts<const BETWEEN: bool, const MATCHES: bool>(mut cv: jaq_core::Cv<'_, Data>) -> jaq_core::ValXs<'_, Val> {
        let flags = cv.0.pop_var();
        let re = cv.0.pop_var();
        let regexes = cv.0.data().regexes;
        jaq_core::native::bome(regexes.parts(&cv.1, &re, &flags, (BETWEEN, MATCHES)))
    }
    let natives: [Native<jaq_core::RunPtr<Data>>; 13] = [
        ("matches", v(2), parts::<false, true>),
        ("split_matches", v(2), parts::<true, true>),
        ("split_", v(2), parts::<true, false>),
        // jaq defines the constants as filters (`def null: [][0]`, `def true: 0 == 0`, …), which a
        // mapping pays for at nearly every step; the prelude defines them as these, with the same values.
        ("bridge_null", v(0), |_| bome(Ok(Val::Null))),
        ("bridge_true", v(0), |_| bome(Ok(Val::Bool(true)))),
        ("bridge_false", v(0), |_| bome(Ok(Val::Bool(false)))),
        ("bridge_not", v(0), |cv| bome(Ok(Val::Bool(matches!(cv.1, Val::Null | Val::Bool(false)))))),
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
    natives.into_iter().map(run::<Data>)
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
        let defs = || jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).chain(prelude.iter().cloned());
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
                .filter(|(name, _, _)| !IMPURE.contains(name) && !REGEX_NATIVES.contains(name))
                .chain(bridge_funs());
            Compiler::default().with_funs(funs).with_global_vars(GLOBALS).compile(modules)
        };
        // The program as written is valid. If it is plain definitions and a main term (no module
        // directives), it runs with its object constructions as left-nested sums (see
        // `nest_objects_left`), compiled as definitions of the prelude; if that does not compile
        // (which no valid program is known to do), it runs as written.
        // (A program that names `bridge_main` itself runs as written: it would call the main term.)
        let parsed = jaq_core::load::parse(code, |p| Ok((p.defs()?, p.term()?))).filter(|_| !code.contains(MAIN));
        if let Some((mut program, mut main)) = parsed {
            for def in &mut program {
                nest_objects_left(&mut def.body);
            }
            nest_objects_left(&mut main);
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

    /// Runs the program on `input` with the globals bound in [`GLOBALS`] order. It must yield
    /// exactly one value, and that value must be plain JSON.
    pub fn run(&self, input: Val, globals: [Val; 4]) -> Result<Value, String> {
        let run = Run { lut: &self.filter.lut, regexes: &self.regexes };
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
        to_json(&first).map_err(|e| format!("the program produced a value that is not JSON: {e}"))
    }
}

fn describe_exception(exn: jaq_core::Exn<Val>) -> String {
    match exn.get_err() {
        Ok(error) => error.to_string(),
        Err(_) => "the program stopped (halt)".into(),
    }
}

/// The name under which a program's main term is compiled (see [`Program::compile`]).
const MAIN: &str = "bridge_main";

/// Rewrites every object construction `{k1: v1, k2: v2, …, kn: vn}` in `term` into the sum
/// `{k1: v1} + {k2: v2} + … + {kn: vn}`, nested to the left. jaq compiles an object as that sum
/// nested to the right, `{k1: v1} + ({k2: v2} + …)`, and its `+` copies the right object into the
/// left one: every key is copied once per key before it, so an object of 25 keys costs 300 copies
/// (25 µs here). Nested to the left, each `+` adds one key to an object nobody else holds (25
/// copies). Same values, same key order, same outputs in the same order for keys or values with
/// several outputs (`objects_nested_to_the_left_give_the_same_outputs`).
fn nest_objects_left(term: &mut Term<&str>) {
    use jaq_core::load::lex::StrPart;
    use jaq_core::load::parse::{BinaryOp, Pattern};

    fn pattern(p: &mut Pattern<&str>) {
        match p {
            Pattern::Var(_) => {}
            Pattern::Arr(items) => items.iter_mut().for_each(pattern),
            Pattern::Obj(entries) => entries.iter_mut().for_each(|(k, v)| {
                nest_objects_left(k);
                pattern(v);
            }),
        }
    }

    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) | Term::Var(_) => {}
        Term::Str(_, parts) => parts.iter_mut().for_each(|part| {
            if let StrPart::Term(t) = part {
                nest_objects_left(t)
            }
        }),
        Term::Arr(inner) => inner.iter_mut().for_each(|t| nest_objects_left(t)),
        Term::Obj(entries) => {
            for (k, v) in entries.iter_mut() {
                nest_objects_left(k);
                v.iter_mut().for_each(nest_objects_left);
            }
            if entries.len() > 1 {
                let mut singles = std::mem::take(entries).into_iter().map(|entry| Term::Obj(vec![entry]));
                let first = singles.next().expect("more than one entry");
                *term = singles.fold(first, |sum, single| {
                    Term::BinOp(Box::new(sum), BinaryOp::Math(jaq_core::ops::Math::Add), Box::new(single))
                });
            }
        }
        Term::Neg(t) | Term::Label(_, t) => nest_objects_left(t),
        Term::BinOp(l, op, r) => {
            if let BinaryOp::Pipe(Some(p)) = op {
                pattern(p);
            }
            nest_objects_left(l);
            nest_objects_left(r);
        }
        Term::Fold(_, xs, p, args) => {
            nest_objects_left(xs);
            pattern(p);
            args.iter_mut().for_each(nest_objects_left);
        }
        Term::TryCatch(t, catch) => {
            nest_objects_left(t);
            catch.iter_mut().for_each(|c| nest_objects_left(c));
        }
        Term::IfThenElse(branches, otherwise) => {
            for (cond, then) in branches {
                nest_objects_left(cond);
                nest_objects_left(then);
            }
            otherwise.iter_mut().for_each(|t| nest_objects_left(t));
        }
        Term::Def(defs, t) => {
            defs.iter_mut().for_each(|def| nest_objects_left(&mut def.body));
            nest_objects_left(t);
        }
        Term::Call(_, args) => args.iter_mut().for_each(nest_objects_left),
        Term::Path(t, path) => {
            nest_objects_left(t);
            for (part, _) in &mut path.0 {
                match part {
                    jaq_core::path::Part::Index(i) => nest_objects_left(i),
                    jaq_core::path::Part::Range(from, to) => {
                        from.iter_mut().chain(to.iter_mut()).for_each(nest_objects_left)
                    }
                }
            }
        }
    }
}

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
        Val::TStr(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Val::BStr(_) => return Err("a byte string".into()),
        Val::Arr(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match k {
                    Val::TStr(key) => Ok((String::from_utf8_lossy(key).into_owned(), to_json(v)?)),
                    other => Err(format!("an object key that is not a string ({other})")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
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
        Program::compile(&code).expect("compiles").run(to_val(&input), globals())
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
        assert_eq!(program.run(to_val(&cases), globals()), Ok(json!(true)));
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
            program.run(to_val(&json!(["ab", "X1", "c"])), globals()).unwrap();
        }
        assert_eq!(program.regexes.len(), 2);
        // Patterns from the data fill the cache; when it is full it starts again, so the program's own
        // regexes are cached again afterwards.
        let patterns: Vec<String> = (0..RegexCache::MAX + 10).map(|i| format!("^{i}$")).collect();
        let program = Program::compile(
            r#"([.[] as $re | "7" | test($re)] | map(select(.)) | length), ("x" | test("^literal$"))"#,
        )
        .unwrap();
        let outputs = program.run(to_val(&json!(patterns)), globals());
        assert!(outputs.unwrap_err().contains("more than one document"));
        assert_eq!(program.regexes.len(), 11, "10 data patterns after the clearing, and the literal");
        assert!(program.regexes.compiled.lock().unwrap().get("").is_some_and(|by| by.contains_key("^literal$")));
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
}
