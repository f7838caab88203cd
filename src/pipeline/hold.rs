//! Holding a run's sources: the leases (`source:<id>`) a run takes before it writes anything, all or
//! none, waiting for a busy source up to the job's limit; renewed on the database's clock while the
//! run goes on and given back at its end. A lease that is lost stops the run before its next write.

use std::time::{Duration, Instant};

use super::stop::{Stop, Stopped};
use crate::store::lease::{Fence, lease_name};
use crate::store::{Store, StoreError};

/// How often a run waiting for a busy source asks again.
const POLL: Duration = Duration::from_millis(200);

/// A source that another holder has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source {source_id} is busy: {holder} holds its lease (until {until}, database time)")]
pub struct Busy {
    pub source_id: String,
    pub holder: String,
    pub until: String,
}

/// Why a run could not take its sources.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Busy(Busy),
    #[error("stopped while waiting for a busy source: {0}")]
    Stopped(Stopped),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The leases of one run's sources, held by `holder`.
#[derive(Debug)]
pub struct Hold {
    store: Store,
    holder: String,
    sources: Vec<String>,
    ttl: Duration,
}

impl Hold {
    /// Takes the leases of `sources` for `holder`, each for `ttl`: all of them, or (when one is
    /// busy) none, asking again until `wait` has passed or `stop` is asked.
    pub async fn take(
        store: &Store,
        holder: &str,
        sources: &[String],
        ttl: Duration,
        wait: Duration,
        stop: &Stop,
    ) -> Result<Hold, HoldError> {
        let mut sources = sources.to_vec();
        sources.sort();
        sources.dedup();
        let started = Instant::now();
        loop {
            let busy = Self::take_all(store, holder, &sources, ttl).await?;
            let Some(busy) = busy else {
                return Ok(Hold { store: store.clone(), holder: holder.to_owned(), sources, ttl });
            };
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(HoldError::Busy(busy));
            }
            tokio::select! {
                () = stop.stopped() => {
                    return Err(HoldError::Stopped(stop.why().unwrap_or(Stopped::Interrupted("stopped".into()))));
                }
                () = tokio::time::sleep(POLL.min(left)) => {}
            }
        }
    }

    /// One attempt: every lease taken (`None`), or the first busy one (those taken are given back).
    async fn take_all(
        store: &Store,
        holder: &str,
        sources: &[String],
        ttl: Duration,
    ) -> Result<Option<Busy>, StoreError> {
        for (taken, source_id) in sources.iter().enumerate() {
            if let Err(lease) = store.take_lease(&lease_name(source_id), holder, ttl).await? {
                for source_id in &sources[..taken] {
                    store.release_lease(&lease_name(source_id), holder).await?;
                }
                let busy = Busy { source_id: source_id.clone(), holder: lease.holder, until: lease.expires_at };
                return Ok(Some(busy));
            }
        }
        Ok(None)
    }

    /// Who holds the leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// What a write to `source_id`'s items must still hold.
    pub fn fence(&self, source_id: &str) -> Fence {
        Fence::source(source_id, &self.holder)
    }

    /// Renews the leases every third of their length, for as long as it is polled (never ends by
    /// itself). A lease that is lost asks `stop` to stop the run (as `aborted`); renewal then ends.
    pub async fn keep(&self, stop: &Stop) {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            for source_id in &self.sources {
                let name = lease_name(source_id);
                match self.store.renew_lease(&name, &self.holder, self.ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let now = self.store.leases().await.unwrap_or_default();
                        let other = now.iter().find(|l| l.name == name).map(|l| l.holder.clone());
                        let why = match other {
                            Some(other) => format!("the lease {name} is held by {other} now"),
                            None => format!("the lease {name} expired and was given up"),
                        };
                        tracing::error!(holder = %self.holder, "{why}; the run stops before its next write");
                        stop.stop(Stopped::LeaseLost(why));
                        return std::future::pending().await;
                    }
                    Err(e) => tracing::warn!(lease = %name, "cannot renew the lease: {e}"),
                }
            }
        }
    }

    /// Gives the leases back.
    pub async fn release(self) {
        for source_id in &self.sources {
            if let Err(e) = self.store.release_lease(&lease_name(source_id), &self.holder).await {
                tracing::warn!(source = %source_id, "cannot give the lease back (it expires by itself): {e}");
            }
        }
    }
}

/// A name for this process that no other running process has: its host, its process id and a
/// random part (`host:pid:abcd`).
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

/// The holder name of run `n` of an instance: `<instance>#<n>`.
pub fn holder_name(instance: &str, n: u64) -> String {
    format!("{instance}#{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_run_takes_all_its_sources_or_none_and_waits_as_long_as_it_may() {
        let (_dir, store) = store().await;
        let (hour, stop) = (Duration::from_secs(3600), Stop::default());
        let sources = ["b".to_owned(), "a".to_owned()];
        store.take_lease("source:b", "other#1", Duration::from_millis(300)).await.unwrap().unwrap();
        let busy = Hold::take(&store, "me#1", &sources, hour, Duration::ZERO, &stop).await.unwrap_err();
        assert!(matches!(&busy, HoldError::Busy(b) if b.source_id == "b" && b.holder == "other#1"), "{busy}");
        let leases = store.leases().await.unwrap();
        assert_eq!(leases.iter().map(|l| l.holder.as_str()).collect::<Vec<_>>(), ["other#1"], "none of mine is left");
        // Waiting long enough, the run gets both once the other lease lapses.
        let hold = Hold::take(&store, "me#1", &sources, hour, Duration::from_secs(30), &stop).await.unwrap();
        assert_eq!(hold.fence("a"), Fence::source("a", "me#1"));
        assert_eq!(store.leases().await.unwrap().iter().filter(|l| l.holder == "me#1").count(), 2);
        // Asked to stop while it waits, a run gives up without taking anything.
        let waiting = tokio::spawn({
            let (store, stop) = (store.clone(), stop.clone());
            async move { Hold::take(&store, "you#1", &["a".to_owned()], hour, hour, &stop).await }
        });
        stop.stop(Stopped::Interrupted("Ctrl-C".into()));
        assert!(matches!(waiting.await.unwrap(), Err(HoldError::Stopped(Stopped::Interrupted(_)))));
        hold.release().await;
        assert!(store.leases().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_run() {
        let (_dir, store) = store().await;
        let stop = Stop::default();
        let hold = Hold::take(&store, "me#1", &["a".to_owned()], Duration::from_secs(3), Duration::ZERO, &stop).await;
        let hold = hold.unwrap();
        store.release_lease("source:a", "me#1").await.unwrap();
        store.take_lease("source:a", "thief#1", Duration::from_secs(3600)).await.unwrap().unwrap();
        tokio::select! {
            () = hold.keep(&stop) => unreachable!(),
            () = stop.stopped() => {}
        }
        assert!(matches!(stop.why(), Some(Stopped::LeaseLost(why)) if why.contains("thief#1")));
    }
}
