//! Delivery: the intent journal (record intent → deliver with an idempotency key → probe → settle)
//! and the one [`Target`] trait that an outbox directory and the portal's HTTP import API implement.
//!
//! Nothing outside this module asks which kind a target is: each implementation decides what an
//! intent keeps of a document, how it probes for a delivery left unfinished, how a left-over intent
//! is reconciled and what it tidies before a run. The pipeline sends through the [`Journal`].

pub mod http;
mod journal;
pub mod outbox;

use std::path::PathBuf;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::codec::Format;
use crate::domain::{ItemKey, ItemStatus};
use crate::store::intents::Intent;

pub use journal::{Journal, LeftOver, Provenance, Request, Resume, Sent, Ticket};

/// Why a delivery failed, classified by what the bridge does about it.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Worth retrying later (429, 5xx, timeouts, connection errors).
    #[error("{0}")]
    Transient(String),
    /// The target refused the document; retrying the same document will not help.
    #[error("the portal refused the document: HTTP {status}: {excerpt}")]
    Permanent { status: u16, excerpt: String },
    /// Someone changed the item in the target since our last write (HTTP 412).
    #[error("the portal's copy changed since our last write (HTTP 412): {0}")]
    Conflict(String),
    /// The intent could not be recorded: nothing was sent.
    #[error("cannot record the delivery intent: {0}")]
    Journal(crate::store::StoreError),
}

impl DeliverError {
    /// True if the target may have applied the action although the answer says it failed (a
    /// timeout, a dropped connection, a 5xx after the write): what the target holds is unknown
    /// until it is asked, so the delivery's intent stays for the next run to reconcile.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, DeliverError::Transient(_))
    }

    /// The item status this failure leaves the item in.
    pub fn status(&self) -> ItemStatus {
        match self {
            DeliverError::Io { .. } | DeliverError::Transient(_) | DeliverError::Journal(_) => ItemStatus::Failed,
            DeliverError::Permanent { .. } => ItemStatus::Quarantined,
            DeliverError::Conflict(_) => ItemStatus::Conflict,
        }
    }
}

/// What is sent: a document, or the withdrawal of one.
#[derive(Debug, Clone)]
pub enum Action {
    Put { body: bytes::Bytes, format: Format, output_hash: String },
    Delete,
}

impl Action {
    /// The hash the ledger records for this action (`withdrawn` for a withdrawal).
    pub fn output_hash(&self) -> &str {
        match self {
            Action::Put { output_hash, .. } => output_hash,
            Action::Delete => "withdrawn",
        }
    }

    /// The action a recorded intent describes, with the body it kept (empty where the target keeps none).
    fn of_intent(intent: &Intent) -> Self {
        match intent.action.as_str() {
            "delete" => Action::Delete,
            _ => Action::Put {
                body: intent.body.clone().into(),
                format: if intent.format == "xml" { Format::Xml } else { Format::Json },
                output_hash: intent.output_hash.clone(),
            },
        }
    }
}

/// The idempotency key of an action: the same document for the same item and target on top of
/// the same portal version always has the same key, so a repetition (after a lost response or a
/// crash) is recognised as a replay; a later change back to an earlier document (A → B → A), or a
/// second withdrawal after a re-creation, builds on another version and gets a new key.
pub fn idempotency_key(key: &ItemKey, target: &str, action: &Action, known_version: Option<&str>) -> String {
    let base = known_version.unwrap_or("-");
    hex::encode(Sha256::digest(format!("{key}\n{target}\n{}\n{base}", action.output_hash()).as_bytes()))
}

/// Where a delivered document now lives and which version the target gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub location: String,
    /// The target's version (ETag) of what it now holds; `None` for the outbox and after a withdrawal.
    pub version: Option<String>,
}

/// What asking the target before a delivery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebased {
    /// The version to build on (`If-Match`), `None` to create.
    Base(Option<String>),
    /// A withdrawal whose item the target no longer holds: nothing to send.
    AlreadyGone(String),
}

/// What a left-over intent (of a run that ended between recording it and recording its outcome)
/// turns into, as the target's kind decides.
#[derive(Debug, Clone)]
pub enum Reconcile {
    /// Finish it: probe the target, and send this action again (same idempotency key) if it does
    /// not hold the result.
    Resume(Action),
    /// Drop it, for this reason (logged): the run maps and delivers the item anew.
    Drop(String),
}

/// One place documents are delivered to. `key` is the item; every method may be called from
/// several tasks at once.
pub trait Target: std::fmt::Debug + Send + Sync {
    /// How intents record this kind of delivery: `outbox` or `http`.
    fn kind(&self) -> &'static str;

    /// Where the target delivers to: its kind and directory or URL. When it changes, nothing the
    /// ledger says the target holds can be trusted, so its items are delivered again.
    fn fingerprint(&self) -> String;

    /// What an intent keeps of an action's document: the outbox keeps nothing (the file is the
    /// document, the output hash says what was to be written), the HTTP target the body.
    fn intent_body(&self, action: &Action) -> Vec<u8>;

    /// Carries out one action. `known_version` is the version we last delivered (for `If-Match`);
    /// `None` means we believe the target holds nothing. `idempotency` is the key the action's
    /// intent recorded (see [`idempotency_key`]), sent with every attempt.
    fn deliver<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
        known_version: Option<&'a str>,
        idempotency: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, DeliverError>>;

    /// After a crash between recording an intent and recording its outcome: did the target get it?
    /// The delivery if the target holds exactly the intended result, `None` if it must be sent again.
    fn probe<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
    ) -> BoxFuture<'a, Result<Option<Delivered>, DeliverError>>;

    /// Before a forced delivery or a withdrawal whose version is not known: what to build on.
    /// `delivered` is the output hash of what we last delivered.
    fn rebase<'a>(
        &'a self,
        key: &'a ItemKey,
        action: &'a Action,
        known_version: Option<String>,
        delivered: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Rebased, DeliverError>>;

    /// The target's version of what it holds for the item now (`None`: it holds nothing, or the
    /// target has no versions), for an operator who takes the target's copy over.
    fn current_version<'a>(&'a self, key: &'a ItemKey) -> BoxFuture<'a, Result<Option<String>, DeliverError>>;

    /// What a left-over intent of this target turns into (the intent was recorded for this kind).
    fn reconcile<'a>(&'a self, key: &'a ItemKey, intent: &'a Intent) -> BoxFuture<'a, Reconcile> {
        let _ = key;
        Box::pin(async move { Reconcile::Resume(Action::of_intent(intent)) })
    }

    /// A warning if a document the ledger says we delivered to `location` is visibly gone (a file
    /// removed from the outbox): the item is delivered again. `None` where the target cannot tell
    /// without being asked.
    fn lost(&self, location: Option<&str>) -> Option<String> {
        let _ = location;
        None
    }

    /// Tidies up before a run (what killed writes left behind).
    fn tidy(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
