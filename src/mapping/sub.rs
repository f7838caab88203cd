//! jq's `sub` and `gsub` as one native: jaq-std's definition, with the same outputs, in linear time.
//!
//! jaq-std defines
//!
//! ```jq
//! def sub(re; f; flags):
//!   def handle: if isarray then capture_of_match | f end;
//!   reduce split_matches(re; flags)[] as $x (""; . + ($x | handle));
//! ```
//!
//! Each step of the reduction copies the text built so far to add one piece, and jaq's `reduce`
//! keeps the earlier texts while `f` may still have outputs: for a text with many matches that is
//! quadratic in time and memory (20,000 ids in one rule text: 5 s and 2.8 GB; 100,000 killed the
//! process). Here the text grows in one buffer that a step extends in place unless another branch
//! of the reduction still needs it, so one output per match costs one copy of each piece. The
//! reduction is jaq's own, step for step (see `fold` in jaq-core): for every combination of the
//! outputs of `f` at the matches one result, in the same order, with errors where jaq has them
//! (`bridge_sub_agrees_with_jaq_std_sub` in the tests).

use std::cell::RefCell;
use std::rc::Rc;

use jaq_core::{Cv, Exn, ValX, ValXs};
use jaq_json::Val;

use super::engine::{Data, Run, over_budget};
use super::regex::{Piece, SubError};

type Item<'a> = Result<Piece, Exn<'a, Val>>;

/// `bridge_sub(re; f; flags)`: three filter arguments, as in jaq-std's `sub`.
pub(crate) fn run(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let (flags, flags_ctx) = cv.0.pop_fun();
    let (f, f_ctx) = cv.0.pop_fun();
    let (re, re_ctx) = cv.0.pop_fun();
    let run: &Run<'_> = cv.0.data();
    let input = cv.1;

    // The stream `split_matches(re; flags)[]`: for each output of `re`, for each output of `flags`
    // (the order in which jaq binds a native's arguments), the pieces or the error.
    let pieces = {
        let input = input.clone();
        re.run((re_ctx, input.clone())).flat_map(move |re| -> Box<dyn Iterator<Item = Item<'_>>> {
            let re = match re {
                Ok(re) => re,
                Err(e) => return Box::new(std::iter::once(Err(e))),
            };
            let input = input.clone();
            Box::new(flags.run((flags_ctx.clone(), input.clone())).flat_map(
                move |flags| -> Box<dyn Iterator<Item = Item<'_>>> {
                    let flags = match flags {
                        Ok(flags) => flags,
                        Err(e) => return Box::new(std::iter::once(Err(e))),
                    };
                    match run.regexes.pieces(&input, &re, &flags, run.meter) {
                        Ok(pieces) => Box::new(pieces.into_iter().map(Ok)),
                        Err(SubError::Jq(e)) => Box::new(std::iter::once(Err(Exn::from(e)))),
                        Err(SubError::Budget(exceeded)) => Box::new(std::iter::once(Err(over_budget(exceeded)))),
                    }
                },
            ))
        })
    };
    let mut pieces = Pieces { source: Box::new(pieces), seen: Vec::new(), done: false };
    let mut stack = vec![Frame::Input(0, Acc::Text(Text::default()))];
    Box::new(std::iter::from_fn(move || -> Option<ValX<'_, Val>> {
        loop {
            match stack.pop()? {
                Frame::Input(at, acc) => {
                    if let Err(exceeded) = run.meter.tick() {
                        return Some(Err(over_budget(exceeded)));
                    }
                    match pieces.get(at) {
                        // the end of the reduction: its result
                        None => return Some(Ok(acc.into_val())),
                        Some(Err(e)) => return Some(Err(e)),
                        Some(Ok(Piece::Text(text))) => match acc.add(text) {
                            Ok(acc) => stack.push(Frame::Input(at + 1, acc)),
                            Err(e) => return Some(Err(e)),
                        },
                        Some(Ok(Piece::Match(captures))) => {
                            let outputs = f.run((f_ctx.clone(), captures));
                            stack.push(Frame::Output(at + 1, acc, outputs));
                        }
                    }
                }
                Frame::Output(at, base, mut outputs) => {
                    let Some(output) = outputs.next() else { continue };
                    // As jaq's fold: the outputs still to come wait below this one's continuation
                    // (not kept when the iterator says there are none).
                    let rest = (outputs.size_hint() != (0, Some(0))).then(|| base.clone());
                    let sum = output.and_then(|output| base.add(output));
                    if let Some(base) = rest {
                        stack.push(Frame::Output(at, base, outputs));
                    }
                    match sum {
                        Ok(acc) => stack.push(Frame::Input(at, acc)),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }))
}

/// A step of the reduction: add the piece at an index to a text, or add the outputs of `f` for
/// a match (the one before the index) to a text.
enum Frame<'a> {
    Input(usize, Acc),
    Output(usize, Acc, ValXs<'a, Val>),
}

/// The stream of pieces, read once and kept for the branches that come back to a piece. Nothing
/// after the first error is read: every branch stops there.
struct Pieces<'a> {
    source: Box<dyn Iterator<Item = Item<'a>> + 'a>,
    seen: Vec<Item<'a>>,
    done: bool,
}

impl<'a> Pieces<'a> {
    fn get(&mut self, at: usize) -> Option<Item<'a>> {
        while self.seen.len() <= at && !self.done {
            match self.source.next() {
                None => self.done = true,
                Some(item) => {
                    self.done = item.is_err();
                    self.seen.push(item);
                }
            }
        }
        self.seen.get(at).cloned()
    }
}

/// The reduction's value: a text while every step added a text (or null), else whatever jaq's `+`
/// made of it.
#[derive(Clone)]
enum Acc {
    Text(Text),
    Val(Val),
}

impl Acc {
    /// `. + $x` as jaq computes it; texts are appended to the buffer.
    fn add<'a>(self, x: Val) -> Result<Acc, Exn<'a, Val>> {
        match (self, x) {
            (acc, Val::Null) => Ok(acc),
            (Acc::Text(text), Val::TStr(bytes)) => Ok(Acc::Text(text.push(&bytes))),
            (acc, x) => (acc.into_val() + x).map(Acc::Val).map_err(Exn::from),
        }
    }

    fn into_val(self) -> Val {
        match self {
            Acc::Text(text) => text.into_val(),
            Acc::Val(val) => val,
        }
    }
}

/// A text as the first `len` bytes of a buffer that branches of the reduction share. The branch
/// whose text is the whole buffer appends in place; any other copies its part first.
#[derive(Clone, Default)]
struct Text {
    buffer: Rc<RefCell<Vec<u8>>>,
    len: usize,
}

impl Text {
    fn push(mut self, bytes: &[u8]) -> Text {
        if self.buffer.borrow().len() != self.len {
            let mine = self.buffer.borrow()[..self.len].to_vec();
            self.buffer = Rc::new(RefCell::new(mine));
        }
        self.buffer.borrow_mut().extend_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    fn into_val(self) -> Val {
        let bytes = match Rc::try_unwrap(self.buffer) {
            Ok(buffer) => {
                let mut buffer = buffer.into_inner();
                buffer.truncate(self.len);
                bytes::Bytes::from(buffer)
            }
            Err(shared) => bytes::Bytes::copy_from_slice(&shared.borrow()[..self.len]),
        };
        Val::utf8_str(bytes)
    }
}
