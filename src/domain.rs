//! The bridge's vocabulary: item keys, content hashes, statuses and run triggers as newtypes and enums.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Identity of one record across runs: `source/external-id`, e.g. `aachen-forms/S05000101@1.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemKey(String);

impl ItemKey {
    pub fn new(source: &str, external_id: &str) -> Self {
        Self(format!("{source}/{external_id}"))
    }

    /// Parses a key as typed by an operator; it must contain a `/` after a non-empty source id.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('/') {
            Some((source, id)) if !source.is_empty() && !id.is_empty() => Some(Self(text.to_owned())),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn source(&self) -> &str {
        self.0.split_once('/').map_or("", |(s, _)| s)
    }

    pub fn external_id(&self) -> &str {
        self.0.split_once('/').map_or(self.0.as_str(), |(_, id)| id)
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a canonical byte form, as 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(String);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// Hash over several parts, each length-prefixed so that part boundaries matter.
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Self(hex::encode(hasher.finalize()))
    }

    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for tables and logs.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum! {
    /// State of one item at one target in the ledger (names as in DESIGN.md).
    ItemStatus {
        /// Seen for the first time, not yet delivered.
        New = "new",
        /// The current document was delivered by the last run that touched it.
        Delivered = "delivered",
        /// The last run found nothing changed; the target holds the current document.
        Unchanged = "unchanged",
        /// Transient failure; retried on the next run.
        Failed = "failed",
        /// Permanent problem (bad input, mapping or schema error); needs an operator.
        Quarantined = "quarantined",
        /// The target was changed by someone else since our last write.
        Conflict = "conflict",
        /// Gone upstream.
        Withdrawn = "withdrawn",
    }
}

string_enum! {
    /// Overall outcome of a run.
    RunStatus {
        Running = "running",
        /// Every item went through.
        Ok = "ok",
        /// Some items failed or were quarantined; the others went through.
        Partial = "partial",
        /// The run could not do its job at all (e.g. a source could not be read).
        Failed = "failed",
        /// Stopped on request before it was done (Ctrl-C, the daemon's shutdown, `overlap = replace`);
        /// deliveries in flight settled or stay as intents for the next run.
        Interrupted = "interrupted",
        /// Ended without finishing: its process died, or it lost its lease to another holder.
        Aborted = "aborted",
    }
}

string_enum! {
    /// Who started a run.
    Trigger {
        Schedule = "schedule",
        Cli = "cli",
        Api = "api",
    }
}

string_enum! {
    /// Severity of a migration-log event.
    Level {
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

string_enum! {
    /// Pipeline stage an event belongs to.
    Stage {
        Run = "run",
        Fetch = "fetch",
        Decode = "decode",
        Map = "map",
        Validate = "validate",
        Deliver = "deliver",
        Operator = "operator",
    }
}

impl Level {
    /// Numeric rank for "at least this level" filters.
    pub fn rank(self) -> u8 {
        match self {
            Level::Debug => 0,
            Level::Info => 1,
            Level::Warn => 2,
            Level::Error => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_key_splits_at_first_slash_only() {
        let key = ItemKey::new("aachen-forms", "a/b@1.0");
        assert_eq!(key.as_str(), "aachen-forms/a/b@1.0");
        assert_eq!(key.source(), "aachen-forms");
        assert_eq!(key.external_id(), "a/b@1.0");
        assert!(ItemKey::parse("no-slash").is_none());
        assert!(ItemKey::parse("/x").is_none());
    }

    #[test]
    fn status_round_trips_through_text() {
        for status in ItemStatus::ALL {
            assert_eq!(status.as_str().parse::<ItemStatus>().unwrap(), *status);
        }
        assert!("done".parse::<ItemStatus>().unwrap_err().contains("quarantined"));
    }

    #[test]
    fn hash_of_parts_respects_boundaries() {
        let a = ContentHash::of_parts([b"ab".as_slice(), b"c"]);
        let b = ContentHash::of_parts([b"a".as_slice(), b"bc"]);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 64);
    }
}

/// Source of the current time; tests pass their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> chrono::DateTime<chrono::Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}

/// A stored timestamp (RFC 3339, UTC) as people read it: in the configured time zone `tz`, with
/// the zone's abbreviation (`2026-12-07 13:10:21 CET`); text that is no timestamp is shown as it is.
pub fn local_time(text: &str, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string())
        .unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod local_time_tests {
    use super::local_time;

    #[test]
    fn timestamps_are_shown_in_the_configured_zone_with_its_name() {
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(local_time("2026-12-07T13:10:21Z", berlin), "2026-12-07 14:10:21 CET");
        assert_eq!(local_time("2026-07-07T13:10:21.5+00:00", berlin), "2026-07-07 15:10:21 CEST");
        assert_eq!(local_time("-", berlin), "-");
    }
}
