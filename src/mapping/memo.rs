//! Memoised building blocks: the native `memo($key; f)` gives the outputs `f` gave before for the same input, key and run context.
//!
//! A Stammdatenschema uses the same Datenfelder and Datenfeldgruppen many times, and forms share
//! building blocks; a mapping wraps the conversion of such a block in `memo`, and a [`Memo`] keeps
//! the outputs of each conversion that ended without an error, by
//!
//! - the place of `f` in the program (two `memo` calls never share entries; `memo` is a native for
//!   this: as a definition, every caller's `f` would be the definition's parameter),
//! - the input and `$key`, compared exactly (same keys in the same order, same kind of number:
//!   jq's own `==` would take `1` for `1.0` and `{"a":1,"b":2}` for `{"b":2,"a":1}`, whose outputs
//!   can differ),
//! - the run's context: the globals `$__lookups`, `$__codelists` and `$source`.
//!
//! So `f` must be a function of its input, `$key` and those globals: what else it reads (a variable
//! bound outside `f`, `$item`) belongs in `$key`. A `def` that hands its own filter parameter to
//! `memo` must put what tells its callers apart in `$key` too (the place of `f` is then the same
//! for all of them). Errors (and a budget's halt) are never kept: a conversion that fails runs
//! again at its next use, and fails there as before. A stream that is not read to its end is not
//! kept either. A hit costs one budget tick, however many the conversion took.
//!
//! The memory is bounded by [`MemoLimits`] (entries, and bytes by an estimate of the values held:
//! keys, inputs and outputs); when an entry would exceed them, the memo is emptied first. A memo
//! belongs to one run of a program or to one [`super::Mapping`] (shared by the threads that apply
//! it, behind a mutex held only to look up and to insert).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use jaq_core::{Cv, ValXs};
use jaq_json::{Num, Val};

use super::engine::{Data, Run, over_budget};

/// How much a [`Memo`] holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoLimits {
    /// Most entries (conversions kept).
    pub entries: usize,
    /// Most bytes, by [`estimate`] of the inputs, keys and outputs kept.
    pub bytes: usize,
}

impl Default for MemoLimits {
    /// 4,096 entries and 32 MiB: the distinct building blocks of a few hundred real forms (S00000009
    /// has 53 distinct Datenfelder, a few KB each as input and output).
    fn default() -> Self {
        Self { entries: 4096, bytes: 32 << 20 }
    }
}

/// Counters of a [`Memo`], for tests and measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now (estimated).
    pub bytes: usize,
    /// How often the memo was emptied because an entry would have exceeded its limits.
    pub resets: u64,
}

/// The outputs of memoised conversions (see the module documentation).
pub struct Memo {
    limits: MemoLimits,
    /// Seeded per memo, so that inputs cannot be made to collide on purpose.
    hasher: foldhash::quality::RandomState,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").field("limits", &self.limits).field("stats", &self.stats()).finish()
    }
}

#[derive(Default)]
struct Inner {
    /// The run contexts (`$__lookups`, `$__codelists`, `$source`) entries were made under, by
    /// number. Numbers are never given twice, so a run that still holds the number of a context
    /// dropped by [`Inner::clear`] only finds (and makes) entries of its own context.
    contexts: Vec<(u64, [Val; 3])>,
    next_context: u64,
    /// Entries by the hash of their input and key.
    entries: HashMap<u64, Vec<Entry>>,
    stats: MemoStats,
}

struct Entry {
    key: Key,
    outputs: Arc<[Val]>,
}

/// What an entry is found by.
pub(crate) struct Key {
    hash: u64,
    context: u64,
    place: jaq_core::compile::TermId,
    input: Val,
    extra: Val,
}

impl Key {
    fn matches(&self, other: &Key) -> bool {
        self.hash == other.hash
            && self.context == other.context
            && self.place == other.place
            && same(&self.input, &other.input)
            && same(&self.extra, &other.extra)
    }
}

/// Most run contexts a memo tells apart; a new one beyond them empties the memo.
const MAX_CONTEXTS: usize = 16;

impl Memo {
    pub fn new(limits: MemoLimits) -> Self {
        Self { limits, hasher: foldhash::quality::RandomState::default(), inner: Mutex::new(Inner::default()) }
    }

    pub fn limits(&self) -> MemoLimits {
        self.limits
    }

    pub fn stats(&self) -> MemoStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves at worst a missing entry: the memo stays usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number under which a run with these globals (`$__lookups`, `$__codelists`, `$source`)
    /// keeps its entries: the same for runs whose globals are equal.
    pub(crate) fn context(&self, globals: [&Val; 3]) -> u64 {
        let mut inner = self.lock();
        if let Some((id, _)) = inner.contexts.iter().find(|(_, c)| c.iter().zip(globals).all(|(a, b)| same(a, b))) {
            return *id;
        }
        if inner.contexts.len() >= MAX_CONTEXTS {
            inner.clear();
            inner.stats.resets += 1;
        }
        let id = inner.next_context;
        inner.next_context += 1;
        inner.contexts.push((id, globals.map(Val::clone)));
        id
    }

    pub(crate) fn key(&self, context: u64, place: jaq_core::compile::TermId, input: Val, extra: Val) -> Key {
        let mut hasher = self.hasher.build_hasher();
        hash(&input, &mut hasher);
        hash(&extra, &mut hasher);
        Key { hash: hasher.finish(), context, place, input, extra }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Arc<[Val]>> {
        let mut inner = self.lock();
        let found = inner.entries.get(&key.hash).and_then(|bucket| bucket.iter().find(|e| e.key.matches(key)));
        let found = found.map(|entry| entry.outputs.clone());
        match found {
            Some(_) => inner.stats.hits += 1,
            None => inner.stats.misses += 1,
        }
        found
    }

    pub(crate) fn insert(&self, key: Key, outputs: Vec<Val>) {
        let bytes = estimate(&key.input) + estimate(&key.extra) + outputs.iter().map(estimate).sum::<usize>();
        if bytes > self.limits.bytes || self.limits.entries == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.stats.entries + 1 > self.limits.entries || inner.stats.bytes + bytes > self.limits.bytes {
            inner.clear();
            inner.stats.resets += 1;
            // (the context of this key was dropped with the rest: the entry would never be found)
            return;
        }
        let bucket = inner.entries.entry(key.hash).or_default();
        if bucket.iter().any(|e| e.key.matches(&key)) {
            return;
        }
        bucket.push(Entry { key, outputs: outputs.into() });
        inner.stats.entries += 1;
        inner.stats.bytes += bytes;
    }
}

impl Inner {
    fn clear(&mut self) {
        self.entries.clear();
        self.contexts.clear();
        self.stats.entries = 0;
        self.stats.bytes = 0;
    }
}

/// Exact equality: jq's `==` without its conversions (kinds of numbers, key order, byte and text
/// strings stay apart). Shared values are equal without a look inside.
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => match (x, y) {
            (Num::Int(x), Num::Int(y)) => x == y,
            (Num::BigInt(x), Num::BigInt(y)) => x == y,
            (Num::Float(x), Num::Float(y)) => x.to_bits() == y.to_bits(),
            (Num::Dec(x), Num::Dec(y)) => x == y,
            _ => false,
        },
        (Val::TStr(x), Val::TStr(y)) | (Val::BStr(x), Val::BStr(y)) => x == y,
        (Val::Arr(x), Val::Arr(y)) => {
            jaq_json::Rc::ptr_eq(x, y) || (x.len() == y.len() && x.iter().zip(y.iter()).all(|(x, y)| same(x, y)))
        }
        (Val::Obj(x), Val::Obj(y)) => {
            jaq_json::Rc::ptr_eq(x, y)
                || (x.len() == y.len()
                    && x.iter().zip(y.iter()).all(|((kx, vx), (ky, vy))| same(kx, ky) && same(vx, vy)))
        }
        _ => false,
    }
}

/// A hash that agrees with [`same`] (key order counts).
fn hash(value: &Val, state: &mut impl Hasher) {
    match value {
        Val::Null => state.write_u8(0),
        Val::Bool(b) => state.write_u8(1 + u8::from(*b)),
        Val::Num(Num::Int(i)) => {
            state.write_u8(3);
            i.hash(state);
        }
        Val::Num(Num::BigInt(i)) => {
            state.write_u8(4);
            i.hash(state);
        }
        Val::Num(Num::Float(f)) => {
            state.write_u8(5);
            f.to_bits().hash(state);
        }
        Val::Num(Num::Dec(d)) => {
            state.write_u8(6);
            d.hash(state);
        }
        Val::TStr(s) => {
            state.write_u8(7);
            s.hash(state);
        }
        Val::BStr(s) => {
            state.write_u8(8);
            s.hash(state);
        }
        Val::Arr(items) => {
            state.write_u8(9);
            state.write_usize(items.len());
            items.iter().for_each(|item| hash(item, state));
        }
        Val::Obj(map) => {
            state.write_u8(10);
            state.write_usize(map.len());
            for (k, v) in map.iter() {
                hash(k, state);
                hash(v, state);
            }
        }
    }
}

/// About how many bytes a value holds (shared parts counted each time they occur).
pub(crate) fn estimate(value: &Val) -> usize {
    const SLOT: usize = std::mem::size_of::<Val>();
    SLOT + match value {
        Val::TStr(s) | Val::BStr(s) => s.len() + 32,
        Val::Num(Num::Dec(d)) => d.len() + 32,
        Val::Num(Num::BigInt(_)) => 64,
        Val::Arr(items) => 32 + items.iter().map(estimate).sum::<usize>(),
        Val::Obj(map) => 64 + map.iter().map(|(k, v)| estimate(k) + estimate(v) + 8).sum::<usize>(),
        _ => 0,
    }
}

/// `memo($key; f)` (`KEY`) and `memo(f)` (the same with a null key): `f`'s outputs, from the run's
/// memo when they are there. Without a memo in the run, `f` as it is.
pub(crate) fn run<const KEY: bool>(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let (f, f_ctx) = cv.0.pop_fun();
    let extra = if KEY { cv.0.pop_var() } else { Val::Null };
    let run: &Run<'_> = cv.0.data();
    let input = cv.1;
    let Some((memo, context)) = run.memo else {
        return f.run((f_ctx, input));
    };
    let key = memo.key(context, f, input.clone(), extra);
    if let Some(outputs) = memo.get(&key) {
        if let Err(exceeded) = run.meter.tick() {
            return Box::new(std::iter::once(Err(over_budget(exceeded))));
        }
        return Box::new((0..outputs.len()).map(move |i| Ok(outputs[i].clone())));
    }
    let mut outputs = f.run((f_ctx, input));
    let mut kept = Some((key, Vec::new()));
    Box::new(std::iter::from_fn(move || {
        let next = outputs.next();
        match (&next, &mut kept) {
            (Some(Ok(value)), Some((_, values))) => values.push(value.clone()),
            (Some(Err(_)), _) => kept = None,
            (None, kept @ Some(_)) => {
                let (key, values) = kept.take().expect("kept");
                memo.insert(key, values);
            }
            _ => {}
        }
        next
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::mapping::Budget;
    use crate::mapping::engine::{Program, to_val};

    fn globals(source: Value) -> [Val; 4] {
        [to_val(&json!({})), to_val(&json!({})), to_val(&source), to_val(&json!({"key": "k"}))]
    }

    fn run(code: &str, input: Value, memo: Option<&Memo>) -> Result<Value, String> {
        let program = Program::compile(code).expect("compiles");
        program.run(to_val(&input), globals(json!({"id": "s"})), Budget::default(), memo)
    }

    /// Runs `code` with a fresh memo and without one: the outputs must agree; gives them and the memo's counters.
    fn both(code: &str, input: Value, limits: MemoLimits) -> (Result<Value, String>, MemoStats) {
        let memo = Memo::new(limits);
        let with = run(code, input.clone(), Some(&memo));
        assert_eq!(with, run(code, input, None), "{code}");
        (with, memo.stats())
    }

    #[test]
    fn a_second_use_of_the_same_input_is_a_hit() {
        let code = "[.[] | memo({n: (.a + 1), s: \"x\"})]";
        let (out, stats) = both(code, json!([{"a": 1}, {"a": 2}, {"a": 1}, {"a": 1}]), MemoLimits::default());
        assert_eq!(out, Ok(json!([{"n": 2, "s": "x"}, {"n": 3, "s": "x"}, {"n": 2, "s": "x"}, {"n": 2, "s": "x"}])));
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
        assert!(stats.bytes > 0);
    }

    #[test]
    fn streams_are_kept_whole_and_in_order() {
        let (out, stats) = both("[.[] | [memo(.[], 0)]]", json!([[1, 2], [1, 2]]), MemoLimits::default());
        assert_eq!(out, Ok(json!([[1, 2, 0], [1, 2, 0]])));
        assert_eq!((stats.hits, stats.misses), (1, 1));
        // `empty` is kept as no outputs
        let (out, stats) = both("[.[] | memo(empty)]", json!([1, 1]), MemoLimits::default());
        assert_eq!((out, stats.hits), (Ok(json!([])), 1));
    }

    #[test]
    fn the_key_and_the_exact_input_tell_entries_apart() {
        // $key; numbers of another kind; objects with the same keys in another order; text and numbers
        let code = "[.[] | .[0] as $k | .[1] | memo($k; tojson)]";
        let input =
            json!([[1, {"a": 1, "b": 2}], [2, {"a": 1, "b": 2}], [1, {"b": 2, "a": 1}], [1, 1.0], [1, 1], [1, "1"]]);
        let (out, stats) = both(code, input, MemoLimits::default());
        assert_eq!(out, Ok(json!([r#"{"a":1,"b":2}"#, r#"{"a":1,"b":2}"#, r#"{"b":2,"a":1}"#, "1.0", "1", r#""1""#])));
        assert_eq!((stats.hits, stats.misses), (0, 6));
        // two places in the program never share entries
        let (out, stats) = both("[memo(1), memo(2)]", json!(null), MemoLimits::default());
        assert_eq!((out, stats.hits), (Ok(json!([1, 2])), 0));
    }

    #[test]
    fn errors_are_never_kept() {
        let code = r#"[.[] | try memo(if . == "bad" then error("no: \(.)") else . end) catch "caught \(.)"]"#;
        let (out, stats) = both(code, json!(["bad", "ok", "bad", "ok"]), MemoLimits::default());
        assert_eq!(out, Ok(json!(["caught no: bad", "ok", "caught no: bad", "ok"])));
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 3, 1));
        // an error after an output: nothing kept either
        let (_, stats) = both("[.[] | try memo(1, error(\"e\")) catch 0]", json!([1, 1]), MemoLimits::default());
        assert_eq!((stats.hits, stats.entries), (0, 0));
        // an uncaught error fails the run with and without the memo alike
        let (out, _) = both("memo(error(\"stop\"))", json!(null), MemoLimits::default());
        assert_eq!(out, Err("\"stop\"".into()));
        // a stream read only in part is not kept
        let (out, stats) = both("[.[] | first(memo(1, 2))]", json!([1, 1]), MemoLimits::default());
        assert_eq!((out, stats.entries), (Ok(json!([1, 1])), 0));
    }

    #[test]
    fn the_limits_are_kept() {
        let code = "[.[] | memo([., .])]";
        let input = json!((0..50).map(|i| json!({"i": i % 10})).collect::<Vec<_>>());
        let limits = MemoLimits { entries: 3, bytes: 1 << 20 };
        let (_, stats) = both(code, input.clone(), limits);
        assert!(stats.entries <= 3 && stats.resets > 0, "{stats:?}");
        // bytes: an entry larger than the whole memo is never kept
        let limits = MemoLimits { entries: 100, bytes: 200 };
        let (_, stats) = both(code, input.clone(), limits);
        assert!(stats.bytes <= 200 && stats.hits == 0, "{stats:?}");
        let limits = MemoLimits { entries: 100, bytes: 2_000 };
        let (_, stats) = both(code, input, limits);
        assert!(stats.bytes <= 2_000 && stats.resets > 0, "{stats:?}");
    }

    #[test]
    fn runs_share_a_memo_only_within_the_same_globals() {
        let program = Program::compile("[.[] | memo({id: $source.id, v: .})]").expect("compiles");
        let memo = Memo::new(MemoLimits::default());
        let input = to_val(&json!([1, 2]));
        let run = |source: Value| program.run(input.clone(), globals(source), Budget::default(), Some(&memo));
        assert_eq!(run(json!({"id": "a"})), Ok(json!([{"id": "a", "v": 1}, {"id": "a", "v": 2}])));
        assert_eq!(run(json!({"id": "b"})), Ok(json!([{"id": "b", "v": 1}, {"id": "b", "v": 2}])));
        assert_eq!(memo.stats().hits, 0);
        assert_eq!(run(json!({"id": "a"})), Ok(json!([{"id": "a", "v": 1}, {"id": "a", "v": 2}])));
        assert_eq!(memo.stats().hits, 2);
        // more contexts than a memo tells apart: it starts again, and still gives each its own
        for i in 0..(MAX_CONTEXTS + 2) {
            assert_eq!(run(json!({"id": i})), Ok(json!([{"id": i, "v": 1}, {"id": i, "v": 2}])));
        }
        assert!(memo.stats().resets > 0);
    }
}
