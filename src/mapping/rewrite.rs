//! Rewrites of parsed jq terms before compiling, each with the same outputs: objects built in linear time, and the budget's ticks.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::path::Part;

/// The native that checks the run's budget and passes its input on (see `budget.rs`); with
/// paths and updates, so that it can stand inside path expressions.
pub(crate) const TICK: &str = "bridge_tick";

/// Calls `f` on every term directly inside `term` (the keys of object patterns included).
fn each_child<'s>(term: &mut Term<&'s str>, f: &mut dyn FnMut(&mut Term<&'s str>)) {
    fn pattern<'s>(p: &mut Pattern<&'s str>, f: &mut dyn FnMut(&mut Term<&'s str>)) {
        match p {
            Pattern::Var(_) => {}
            Pattern::Arr(items) => items.iter_mut().for_each(|p| pattern(p, f)),
            Pattern::Obj(entries) => entries.iter_mut().for_each(|(k, v)| {
                f(k);
                pattern(v, f);
            }),
        }
    }
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) | Term::Var(_) => {}
        Term::Str(_, parts) => parts.iter_mut().for_each(|part| {
            if let StrPart::Term(t) = part {
                f(t)
            }
        }),
        Term::Arr(inner) => inner.iter_mut().for_each(|t| f(t)),
        Term::Obj(entries) => entries.iter_mut().for_each(|(k, v)| {
            f(k);
            v.iter_mut().for_each(&mut *f);
        }),
        Term::Neg(t) | Term::Label(_, t) => f(t),
        Term::BinOp(l, op, r) => {
            if let BinaryOp::Pipe(Some(p)) = op {
                pattern(p, f);
            }
            f(l);
            f(r);
        }
        Term::Fold(_, xs, p, args) => {
            f(xs);
            pattern(p, f);
            args.iter_mut().for_each(&mut *f);
        }
        Term::TryCatch(t, catch) => {
            f(t);
            catch.iter_mut().for_each(|c| f(c));
        }
        Term::IfThenElse(branches, otherwise) => {
            for (cond, then) in branches {
                f(cond);
                f(then);
            }
            otherwise.iter_mut().for_each(|t| f(t));
        }
        Term::Def(defs, t) => {
            defs.iter_mut().for_each(|def| f(&mut def.body));
            f(t);
        }
        Term::Call(_, args) => args.iter_mut().for_each(&mut *f),
        Term::Path(t, path) => {
            f(t);
            for (part, _) in &mut path.0 {
                match part {
                    Part::Index(i) => f(i),
                    Part::Range(from, to) => from.iter_mut().chain(to.iter_mut()).for_each(&mut *f),
                }
            }
        }
    }
}

/// Rewrites every object construction `{k1: v1, k2: v2, …, kn: vn}` in `term` into the sum
/// `{k1: v1} + {k2: v2} + … + {kn: vn}`, nested to the left. jaq compiles an object as that sum
/// nested to the right, `{k1: v1} + ({k2: v2} + …)`, and its `+` copies the right object into the
/// left one: every key is copied once per key before it, so an object of 25 keys costs 300 copies
/// (25 µs here). Nested to the left, each `+` adds one key to an object nobody else holds (25
/// copies). Same values, same key order, same outputs in the same order for keys or values with
/// several outputs (`objects_nested_to_the_left_give_the_same_outputs`).
pub(crate) fn nest_objects_left(term: &mut Term<&str>) {
    each_child(term, &mut nest_objects_left);
    if let Term::Obj(entries) = term
        && entries.len() > 1
    {
        let mut singles = std::mem::take(entries).into_iter().map(|entry| Term::Obj(vec![entry]));
        let first = singles.next().expect("more than one entry");
        *term = singles.fold(first, |sum, single| {
            Term::BinOp(Box::new(sum), BinaryOp::Math(jaq_core::ops::Math::Add), Box::new(single))
        });
    }
}

fn tick() -> Term<&'static str> {
    Term::Call(TICK, Vec::new())
}

/// `bridge_tick | t` (a tail call in `t` stays a tail call).
fn tick_then(t: Term<&str>) -> Term<&str> {
    Term::BinOp(Box::new(tick()), BinaryOp::Pipe(None), Box::new(t))
}

/// Adds the budget's ticks to `term` (see `budget.rs`): before every step of a `reduce` or
/// `foreach`, and before every evaluation of `..` and of a path with an iteration `.[]`. Together
/// with the ticks of recursive definitions ([`tick_def`]) and of the natives that make streams
/// (`range`, the regex natives, `sub`), nothing repeats without a tick: what runs between two
/// ticks is bounded by the program's text and the size of one value that exists (the elements of
/// one array or object iterated, the sub-values of one value for `..`), so nested iterations such
/// as `.[] as $a | .[] as $b | …` tick once per value of the outer ones.
pub(crate) fn add_ticks(term: &mut Term<&str>) {
    each_child(term, &mut add_ticks);
    match term {
        Term::Recurse => *term = tick_then(Term::Recurse),
        Term::Fold(_, _, _, args) => {
            if let Some(update) = args.get_mut(1) {
                *update = tick_then(std::mem::take(update));
            }
        }
        Term::Def(defs, _) => defs.iter_mut().for_each(tick_recursion),
        Term::Path(_, path) if path.0.iter().any(|(part, _)| matches!(part, Part::Range(None, None))) => {
            *term = tick_then(std::mem::take(term));
        }
        _ => {}
    }
}

/// Whether `name`/`arity` is called anywhere in `term`.
fn calls(term: &Term<&str>, name: &str, arity: usize) -> bool {
    let mut found = false;
    let mut term = term.clone();
    fn visit(term: &mut Term<&str>, name: &str, arity: usize, found: &mut bool) {
        if let Term::Call(n, args) = term
            && *n == name
            && args.len() == arity
        {
            *found = true;
        }
        if !*found {
            each_child(term, &mut |t| visit(t, name, arity, found));
        }
    }
    visit(&mut term, name, arity, &mut found);
    found
}

/// A definition whose body calls itself (directly, through a definition inside it, or through a
/// filter argument) starts with a tick, so every round of a recursion is counted.
fn tick_recursion(def: &mut Def<&str, Term<&str>>) {
    if calls(&def.body, def.name, def.args.len()) {
        def.body = tick_then(std::mem::take(&mut def.body));
    }
}

/// [`add_ticks`] for a definition of the program or of the standard library.
pub(crate) fn tick_def(def: &mut Def<&str, Term<&str>>) {
    add_ticks(&mut def.body);
    tick_recursion(def);
}
