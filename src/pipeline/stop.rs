//! Asking a run to stop early: it starts nothing new, lets what is in flight settle, records it and
//! ends as `interrupted` — or as `aborted` when it lost its lease to another holder.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why a run was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// On request: Ctrl-C, the daemon's shutdown, `overlap = replace`. The text says who asked.
    Interrupted(String),
    /// The run no longer holds its lease: it must not write anything more. The text says who holds it.
    LeaseLost(String),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Interrupted(why) => write!(f, "interrupted: {why}"),
            Stopped::LeaseLost(why) => write!(f, "aborted: lost its lease ({why})"),
        }
    }
}

/// A handle to ask a run to stop; clones share the request. The first reason given stands.
#[derive(Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    why: Arc<Mutex<Option<Stopped>>>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stop").field(&self.why()).finish()
    }
}

impl Stop {
    /// Asks the run to stop.
    pub fn stop(&self, why: Stopped) {
        self.why.lock().expect("not poisoned").get_or_insert(why);
        self.token.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the run is asked to stop.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// Why the run was asked to stop, if it was.
    pub fn why(&self) -> Option<Stopped> {
        self.why.lock().expect("not poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_stands_and_clones_share_it() {
        let stop = Stop::default();
        let other = stop.clone();
        assert!(!other.is_stopped() && other.why().is_none());
        stop.stop(Stopped::LeaseLost("x".into()));
        other.stop(Stopped::Interrupted("Ctrl-C".into()));
        assert!(other.is_stopped());
        assert_eq!(stop.why(), Some(Stopped::LeaseLost("x".into())));
        assert_eq!(stop.why().unwrap().to_string(), "aborted: lost its lease (x)");
    }
}
