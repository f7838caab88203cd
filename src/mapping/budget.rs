//! The budget of one jq run (a mapping or a key expression): how long it may run and how many bytes it may hold.
//!
//! The engine checks the budget at its ticks (see `rewrite.rs`: every step of a `reduce`/`foreach`,
//! every call of a recursive definition, every evaluation of `.[]` and `..`, every value of
//! `range`, every match of the regex natives, every piece of `sub`). A run over budget is stopped at the next tick with an exception that `try` cannot
//! catch, and fails with a message naming the configuration key ([`Exceeded`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// What one run of a jq program may spend (`[limits] max_mapping_seconds`, `max_mapping_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Longest a run may take.
    pub time: Duration,
    /// Most bytes a run may hold at once (allocated minus freed on its thread, counted by
    /// [`crate::alloc::Counting`]; not enforced where that allocator is not installed).
    pub bytes: u64,
}

impl Budget {
    /// `[limits] max_mapping_seconds` when not configured.
    pub const DEFAULT_SECONDS: u64 = 10;
    /// `[limits] max_mapping_bytes` when not configured.
    pub const DEFAULT_BYTES: u64 = 256 * 1024 * 1024;
}

impl Default for Budget {
    fn default() -> Self {
        Self { time: Duration::from_secs(Self::DEFAULT_SECONDS), bytes: Self::DEFAULT_BYTES }
    }
}

/// Which budget a run went over; the message names the configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("stopped after running longer than {} s (limits.max_mapping_seconds)", .0.as_secs_f64())]
    Time(Duration),
    #[error("stopped after holding more than {0} bytes (limits.max_mapping_bytes)")]
    Bytes(u64),
    #[error(
        "stopped after nesting calls deeper than the engine's stack of {} MiB allows (a recursion without end?)",
        STACK_MIN >> 20
    )]
    Stack,
}

/// The stack a run gets when the thread it is called on has less than [`STACK_MIN`] left: one of
/// this size is allocated for the run, so the caller's thread stack does not matter.
pub const STACK_BYTES: usize = 64 << 20;

/// The stack every run starts with at least. Allocating a stack per run costs 10 µs plus a page
/// fault per 4 KiB it touches, so the binaries give their runtime's threads stacks of
/// [`STACK_BYTES`] (src/main.rs), on which runs start in place.
pub(crate) const STACK_MIN: usize = 32 << 20;

/// Stack left at a tick below which the run is stopped ([`Exceeded::Stack`]); room for the natives
/// and drops between two ticks.
const STACK_RESERVE: usize = 8 << 20;

/// How many ticks pass between two readings of the clock.
const TICKS_PER_CLOCK: u32 = 64;

/// The running account of one run.
pub(crate) struct Meter {
    budget: Budget,
    deadline: Instant,
    /// [`crate::alloc::thread_net_bytes`] when the run started.
    bytes_at_start: isize,
    ticks: Cell<u32>,
    exceeded: Cell<Option<Exceeded>>,
}

impl Meter {
    /// Starts the account; must be made on the thread that runs the program.
    pub(crate) fn start(budget: Budget) -> Self {
        let now = Instant::now();
        Self {
            budget,
            deadline: now.checked_add(budget.time).unwrap_or(now + Duration::from_secs(365 * 24 * 3600)),
            bytes_at_start: crate::alloc::thread_net_bytes(),
            ticks: Cell::new(0),
            exceeded: Cell::new(None),
        }
    }

    /// One check. Once over budget, every later tick fails too, so a program that catches the
    /// exception cannot go on for long.
    #[inline]
    pub(crate) fn tick(&self) -> Result<(), Exceeded> {
        if let Some(exceeded) = self.exceeded.get() {
            return Err(exceeded);
        }
        let held = crate::alloc::thread_net_bytes().saturating_sub(self.bytes_at_start);
        let ticks = self.ticks.get().wrapping_add(1);
        self.ticks.set(ticks);
        let exceeded = if held > 0 && held as u64 > self.budget.bytes {
            Some(Exceeded::Bytes(self.budget.bytes))
        } else if stacker::remaining_stack().is_some_and(|left| left < STACK_RESERVE) {
            Some(Exceeded::Stack)
        } else if ticks % TICKS_PER_CLOCK == 0 && Instant::now() > self.deadline {
            Some(Exceeded::Time(self.budget.time))
        } else {
            None
        };
        match exceeded {
            None => Ok(()),
            Some(exceeded) => {
                self.exceeded.set(Some(exceeded));
                Err(exceeded)
            }
        }
    }

    /// Whether (and how) the run went over budget at some tick.
    pub(crate) fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_checked_every_few_ticks_and_stays_exceeded() {
        // (on a stack of the size runs get, as `Program::run` gives them)
        stacker::maybe_grow(STACK_MIN, STACK_BYTES, || {
            let meter = Meter::start(Budget { time: Duration::ZERO, bytes: u64::MAX });
            std::thread::sleep(Duration::from_millis(2));
            let results: Vec<_> = (0..TICKS_PER_CLOCK).map(|_| meter.tick()).collect();
            assert!(results[..TICKS_PER_CLOCK as usize - 1].iter().all(Result::is_ok));
            assert_eq!(results.last(), Some(&Err(Exceeded::Time(Duration::ZERO))));
            assert_eq!(meter.tick(), Err(Exceeded::Time(Duration::ZERO)));
            assert_eq!(meter.exceeded(), Some(Exceeded::Time(Duration::ZERO)));
        });
    }

    #[test]
    fn a_run_on_a_small_stack_stops_at_its_first_tick() {
        let meter = Meter::start(Budget::default());
        let on_a_small_stack = std::thread::Builder::new().stack_size(1 << 20).spawn(move || meter.tick());
        assert_eq!(on_a_small_stack.unwrap().join().unwrap(), Err(Exceeded::Stack));
    }

    #[test]
    fn messages_name_the_configuration_keys() {
        assert!(Exceeded::Time(Duration::from_secs(10)).to_string().contains("10 s (limits.max_mapping_seconds)"));
        assert!(Exceeded::Bytes(1024).to_string().contains("1024 bytes (limits.max_mapping_bytes)"));
        assert!(Exceeded::Stack.to_string().contains("32 MiB"));
    }
}
