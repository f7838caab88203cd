//! Targets: where documents go — an outbox directory or the portal's HTTP import API — and the
//! classification of delivery failures into transient, permanent and conflict.

pub mod http;
pub mod outbox;

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::codec::Format;
use crate::config::{Delivery, Target};
use crate::domain::{ItemKey, ItemStatus};

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
            DeliverError::Io { .. } | DeliverError::Transient(_) => ItemStatus::Failed,
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
}

/// The idempotency key of an action: the same document for the same item and target on top of
/// the same portal version always has the same key, so a repetition (after a lost response or a
/// crash) is recognised as a replay; a later change back to an earlier document (A → B → A), or a
/// second withdrawal after a re-creation, builds on another version and gets a new key.
pub fn idempotency_key(key: &ItemKey, target: &str, action: &Action, known_version: Option<&str>) -> String {
    let base = known_version.unwrap_or("-");
    hex::encode(Sha256::digest(format!("{key}\n{target}\n{}\n{base}", action.output_hash()).as_bytes()))
}

/// How a target delivers, as intents record it: `outbox` (an intent keeps no body, the file is the
/// document) or `http`.
pub fn kind(target: &Target) -> &'static str {
    match target.delivery {
        Delivery::Outbox { .. } => "outbox",
        Delivery::Http(_) => "http",
    }
}

/// Where a target delivers to: its kind and directory or URL. When it changes, nothing the ledger
/// says the target holds can be trusted, so its items are delivered again.
pub fn fingerprint(target: &Target) -> String {
    match &target.delivery {
        Delivery::Outbox { dir } => format!("outbox:{}", dir.display()),
        Delivery::Http(http) => format!("http:{}", http.base),
    }
}

/// Where a delivered document now lives and which version the target gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub location: String,
    /// The target's version (ETag) of what it now holds; `None` for the outbox and after a withdrawal.
    pub version: Option<String>,
}

/// Carries out one action for one item at its target. `known_version` is the version we last
/// delivered (for `If-Match`); `None` means we believe the target holds nothing. `idempotency` is
/// the key the action's intent recorded (see [`idempotency_key`]), sent with every attempt.
pub async fn deliver(
    target: &Target,
    key: &ItemKey,
    action: &Action,
    known_version: Option<&str>,
    idempotency: &str,
) -> Result<Delivered, DeliverError> {
    match &target.delivery {
        Delivery::Outbox { dir } => {
            let (dir, key, action) = (dir.clone(), key.clone(), action.clone());
            tokio::task::spawn_blocking(move || match action {
                Action::Put { body, format, .. } => outbox::write(&dir, &key, format.extension(), &body),
                Action::Delete => outbox::remove(&dir, &key),
            })
            .await
            .map_err(|e| DeliverError::Transient(format!("the writer thread failed: {e}")))?
        }
        Delivery::Http(http) => match action {
            Action::Put { body, format, .. } => {
                http.put(&target.id, key, body.clone(), *format, idempotency, known_version).await
            }
            Action::Delete => http.delete(&target.id, key, idempotency, known_version).await,
        },
    }
}

/// After a crash between recording an intent and recording its outcome: did the target get it?
/// Returns the delivery if the target holds exactly the intended result, `None` if it must be sent again.
pub async fn check_delivered(
    target: &Target,
    key: &ItemKey,
    action: &Action,
) -> Result<Option<Delivered>, DeliverError> {
    match &target.delivery {
        Delivery::Outbox { dir } => {
            let (dir, key, action) = (dir.clone(), key.clone(), action.clone());
            tokio::task::spawn_blocking(move || outbox::holds(&dir, &key, &action))
                .await
                .map_err(|e| DeliverError::Transient(format!("the reader thread failed: {e}")))?
        }
        Delivery::Http(http) => {
            let stored = http.get(&target.id, key).await?;
            Ok(match (action, stored) {
                (Action::Put { output_hash, .. }, Some(stored)) if &stored.sha256 == output_hash => Some(Delivered {
                    location: http.item_url(&target.id, key).to_string(),
                    version: Some(stored.version),
                }),
                (Action::Delete, None) => {
                    Some(Delivered { location: http.item_url(&target.id, key).to_string(), version: None })
                }
                _ => None,
            })
        }
    }
}
