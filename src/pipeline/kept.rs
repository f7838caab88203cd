//! Records decoded by pass 1, kept for pass 2 within a fixed memory budget, so that an entry is
//! decoded once per run where memory allows.
//!
//! Pass 1 decodes every entry to learn keys and content hashes; pass 2 maps the entries that have
//! work. The records of an entry are kept (its decoded tree and jq value) while the kept entries'
//! raw bytes stay under the budget; pass 2 takes them out (freeing them) instead of reading and
//! decoding the entry again. Pass 2 works in pass 1's order, so a run of more than the budget keeps
//! its first entries and decodes the rest again: memory stays flat however many entries a run has.

use std::collections::HashMap;
use std::sync::Mutex;

/// Raw bytes of the entries kept at most. A decoded tree with its jq value takes about six times
/// its raw bytes, so this keeps about 12 MB: a run of up to ~60 typical forms (a region's changes)
/// is decoded once. Measured at 8 MB (N = 1,000 forms): peak RSS +47 MB and no wall time the run's
/// noise could show, as decoding is ~2 % of a form's cost (docs/performance.md).
pub(super) const BUDGET_BYTES: usize = 2 << 20;

/// The kept records (`R`: [`crate::source::Record`]) of a source's run, by entry origin.
#[derive(Debug)]
pub(super) struct Kept<R> {
    budget: usize,
    state: Mutex<State<R>>,
}

#[derive(Debug)]
struct State<R> {
    /// Raw bytes of the entries kept now.
    used: usize,
    entries: HashMap<String, (usize, Vec<R>)>,
}

impl<R> Default for Kept<R> {
    /// Keeps nothing.
    fn default() -> Self {
        Self::new(0)
    }
}

impl<R> Kept<R> {
    /// Keeps records of up to `budget` raw bytes of entries (0: none).
    pub(super) fn new(budget: usize) -> Self {
        Self { budget, state: Mutex::new(State { used: 0, entries: HashMap::new() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the records of entry `origin` (`size` raw bytes) if they fit into the budget; gives them
    /// back if not.
    pub(super) fn offer(&self, origin: &str, size: usize, records: Vec<R>) -> Result<(), Vec<R>> {
        let mut state = self.state();
        if state.used + size > self.budget || state.entries.contains_key(origin) {
            return Err(records);
        }
        state.used += size;
        state.entries.insert(origin.to_owned(), (size, records));
        Ok(())
    }

    /// Takes the kept records of entry `origin` out (pass 2 decodes entries not kept).
    pub(super) fn take(&self, origin: &str) -> Option<Vec<R>> {
        let mut state = self.state();
        let (size, records) = state.entries.remove(origin)?;
        state.used -= size;
        Some(records)
    }

    /// Drops the kept entries `wanted` says pass 2 will not need.
    pub(super) fn retain(&self, wanted: impl Fn(&str) -> bool) {
        let mut state = self.state();
        state.entries.retain(|origin, _| wanted(origin));
        state.used = state.entries.values().map(|(size, _)| size).sum();
    }

    /// Raw bytes of the entries kept now.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.state().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<String> {
        vec![format!("record {n}")]
    }

    #[test]
    fn entries_are_kept_within_the_budget_and_taken_out_once() {
        let kept: Kept<String> = Kept::new(100);
        assert!(kept.offer("a.json", 60, records(1)).is_ok());
        assert!(kept.offer("b.json", 50, records(2)).is_err(), "over the budget: given back");
        assert!(kept.offer("c.json", 40, records(3)).is_ok());
        assert_eq!(kept.used(), 100);
        assert_eq!(kept.take("a.json").map(|r| r.len()), Some(1));
        assert!(kept.take("a.json").is_none(), "taken out once");
        assert_eq!(kept.used(), 40);
        assert!(kept.offer("b.json", 50, records(2)).is_ok(), "room again after a take");
        kept.retain(|origin| origin == "b.json");
        assert_eq!(kept.used(), 50);
        assert!(kept.take("c.json").is_none(), "not wanted: dropped");
        assert!(kept.take("b.json").is_some());
        assert!(Kept::<String>::new(0).offer("a.json", 1, records(1)).is_err(), "a budget of 0 keeps nothing");
    }
}
