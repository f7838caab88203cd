//! Targets: where documents go. Each target has one delivery; today that is the outbox directory.

pub mod outbox;

use std::path::PathBuf;

use crate::config::{Delivery, Target};
use crate::domain::ItemKey;
use crate::mapping::Document;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a delivered document now lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub location: String,
}

/// Delivers one document of one item to its target.
pub fn deliver(
    target: &Target,
    key: &ItemKey,
    document: &Document,
) -> Result<Delivered, DeliverError> {
    match &target.delivery {
        Delivery::Outbox { dir } => {
            outbox::write(dir, key, document.format.extension(), &document.bytes)
        }
    }
}
