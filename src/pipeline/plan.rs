//! Planning: scan a source, decide per item and target whether there is work, map and validate —
//! into the plan value: per item and target the change (create, update, withdraw, nothing, refuse),
//! the document, the base it builds on, the warnings and the inputs it was made from.
//!
//! The plan is a value: serialisable with its documents, shaped like `store::plans`' entries, so
//! that it can be stored and applied later without mapping again. A run makes its plan in slices
//! (the steps of one chunk of entries) and `pipeline::apply` applies each slice as it is made, so
//! that memory holds the keys of a source, not its documents.

mod decide;
mod map;
mod store;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Problem;
use crate::codec::Format;
use crate::domain::{ItemKey, ItemStatus, Stage};
use crate::mapping::Mapping;
use crate::store::plans::PlanEntry;

pub(super) use decide::{Decided, EntryScan, Scanned};
pub(super) use map::{map_entry, read_records};
pub(super) use store::distinct_items;
pub use store::{Origin, Stored, judge, store_plan};

/// What a run would change: its job's flags and one step per item and target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub flags: Flags,
    pub steps: Vec<Step>,
}

/// The job's flags a plan was made with; they travel with the plan (and its shared batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flags {
    /// Re-map and re-deliver even unchanged items.
    pub force: bool,
    /// Withdrawals are planned even when more of a source vanished than its guard allows.
    pub allow_withdrawals: bool,
}

/// One item at one target: what is to change there, and what that builds on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub key: ItemKey,
    pub target: String,
    pub source_id: String,
    /// The file (and position in a feed) the record was read from.
    pub origin: String,
    pub change: Change,
    pub base: Base,
    /// What the mapping (or lenient reading) could not carry over.
    pub warnings: Vec<String>,
    pub inputs: Inputs,
}

/// What a step changes at its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// Deliver a document the target holds nothing of ours for.
    Create { document: Document },
    /// Deliver a document in place of the one we delivered before.
    Update { document: Document },
    /// Take the item off the target (gone upstream); nothing is sent when the base holds nothing
    /// of ours.
    Withdraw,
    /// Mapped again, and the document is what the target holds: nothing to send.
    Nothing { output_hash: String },
    /// Not delivered; the problem says why (quarantined: bad input, mapping or schema; failed:
    /// retried next run).
    Refuse { problem: Problem },
}

/// A planned document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub format: Format,
    /// SHA-256 (hex) of the body: the output hash the ledger records, and the document's key in
    /// `plan_documents`.
    pub hash: String,
    #[serde(with = "utf8")]
    pub body: Bytes,
}

/// What a step builds on: what we last delivered to the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The target's version of it (`If-Match`).
    pub version: Option<String>,
    /// Our output hash of it; `None`: the target holds nothing of ours.
    pub hash: Option<String>,
    /// Ask the target what it holds before building on `version` (a forced delivery; a
    /// withdrawal whose version is not known).
    pub refresh: bool,
}

/// What a step was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub content_hash: Option<String>,
    pub mapping: Option<String>,
    pub mapping_version: Option<String>,
    /// Hash of the source's settings that shape the document at this target.
    pub settings_hash: Option<String>,
    /// The adoptions (comma-separated ARS) the document was mapped with, for sources with adoptions.
    pub adoptions: Option<String>,
    /// The LeiKa key of the record's service (sources with `leika_key`), recorded in the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leika_key: Option<String>,
}

impl Step {
    /// A step that delivers nothing for `key`, for `problem` (at the problem's target).
    pub(in crate::pipeline) fn refused(
        key: &ItemKey,
        source_id: &str,
        origin: String,
        inputs: Inputs,
        problem: Problem,
    ) -> Self {
        Self {
            key: key.clone(),
            target: problem.target.clone(),
            source_id: source_id.to_owned(),
            origin,
            change: Change::Refuse { problem },
            base: Base::default(),
            warnings: Vec::new(),
            inputs,
        }
    }

    /// The step as a stored plan's entry with its document's body (`create`, `update` and
    /// `withdraw` only: a step that changes nothing is no entry). `diff` is against what was last
    /// delivered.
    pub fn entry(&self, diff: String) -> Option<(PlanEntry, Option<Vec<u8>>)> {
        let (action, document) = match &self.change {
            Change::Create { document } => ("create", Some(document)),
            Change::Update { document } => ("update", Some(document)),
            Change::Withdraw => ("withdraw", None),
            Change::Nothing { .. } | Change::Refuse { .. } => return None,
        };
        let entry = PlanEntry {
            item_key: self.key.to_string(),
            target: self.target.clone(),
            source_id: self.source_id.clone(),
            origin: self.origin.clone(),
            action: action.into(),
            document_hash: document.map(|d| d.hash.clone()),
            format: document.map_or("none", |d| d.format.extension()).into(),
            base_version: self.base.version.clone(),
            base_hash: self.base.hash.clone(),
            diff,
            warnings: serde_json::to_string(&self.warnings).expect("strings serialise"),
            inputs: serde_json::to_string(&self.inputs).expect("inputs serialise"),
            state: "planned".into(),
            message: None,
        };
        Some((entry, document.map(|d| d.body.to_vec())))
    }
}

/// Why a stored plan's entry cannot be turned back into a step (the store was edited by hand, or
/// its document is missing).
#[derive(Debug, thiserror::Error)]
#[error("plan entry {item_key} → {target}: {why}")]
pub struct BadEntry {
    pub item_key: String,
    pub target: String,
    pub why: String,
}

impl Step {
    /// A stored plan's entry as the step that applies it, with its document's `body` (for a create
    /// or update) and the flags the plan was made with: what applying a plan sends is exactly what
    /// was planned, built on the base the plan saw. A forced plan asks the target what to build on,
    /// as the forced run would have; a withdrawal whose version was not known does too.
    pub fn from_entry(entry: &PlanEntry, body: Option<Vec<u8>>, flags: Flags) -> Result<Self, BadEntry> {
        let bad = |why: String| BadEntry { item_key: entry.item_key.clone(), target: entry.target.clone(), why };
        let key = ItemKey::parse(&entry.item_key).ok_or_else(|| bad("not an item key".into()))?;
        let document = |body: Option<Vec<u8>>| -> Result<Document, BadEntry> {
            let body = body.ok_or_else(|| bad("its document is not stored".into()))?;
            let format = match entry.format.as_str() {
                "xml" => Format::Xml,
                "json" => Format::Json,
                other => return Err(bad(format!("unknown document format `{other}`"))),
            };
            let hash = crate::store::plans::document_hash(&body);
            if entry.document_hash.as_deref() != Some(hash.as_str()) {
                return Err(bad("its stored document does not match the entry's hash".into()));
            }
            Ok(Document { format, hash, body: body.into() })
        };
        let (change, refresh) = match entry.action.as_str() {
            "create" => (Change::Create { document: document(body)? }, flags.force),
            "update" => (Change::Update { document: document(body)? }, flags.force),
            "withdraw" => (Change::Withdraw, entry.base_version.is_none()),
            other => return Err(bad(format!("unknown action `{other}`"))),
        };
        Ok(Self {
            key,
            target: entry.target.clone(),
            source_id: entry.source_id.clone(),
            origin: entry.origin.clone(),
            change,
            base: Base { version: entry.base_version.clone(), hash: entry.base_hash.clone(), refresh },
            warnings: serde_json::from_str(&entry.warnings).map_err(|e| bad(format!("its warnings: {e}")))?,
            inputs: serde_json::from_str(&entry.inputs).map_err(|e| bad(format!("its inputs: {e}")))?,
        })
    }
}

/// A step that delivers nothing for `key` at `mapping`'s target: the record (`content_hash`) was
/// read from `origin` and failed with `why` (status, stage, message).
pub(in crate::pipeline) fn refusal(
    source_id: &str,
    key: &ItemKey,
    mapping: &Mapping,
    origin: String,
    content_hash: Option<String>,
    why: (ItemStatus, Stage, String),
) -> Step {
    let (status, stage, message) = why;
    let inputs = Inputs {
        content_hash,
        mapping: Some(mapping.name.clone()),
        mapping_version: Some(mapping.version.to_string()),
        ..Inputs::default()
    };
    let problem = Problem { item_key: key.to_string(), target: mapping.output.target.clone(), status, stage, message };
    Step::refused(key, source_id, origin, inputs, problem)
}

/// Documents are text (JSON or XML, UTF-8): serialised as strings, readable in a stored plan.
mod utf8 {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        let text =
            std::str::from_utf8(body).map_err(|e| serde::ser::Error::custom(format!("a document is UTF-8: {e}")))?;
        serializer.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ContentHash;

    fn document(text: &str) -> Document {
        Document {
            format: Format::Xml,
            hash: ContentHash::of(text.as_bytes()).to_string(),
            body: text.to_owned().into(),
        }
    }

    fn plan() -> Plan {
        let key = ItemKey::new("forms", "S05000101@1.0");
        let inputs = Inputs {
            content_hash: Some("c0ffee".into()),
            mapping: Some("xdf2-to-xdf3".into()),
            mapping_version: Some("3".into()),
            settings_hash: Some("5e771n95".into()),
            adoptions: Some("051540004004,051540008008".into()),
            leika_key: Some("99108001001000".into()),
        };
        let step = |target: &str, change, base| Step {
            key: key.clone(),
            target: target.into(),
            source_id: "forms".into(),
            origin: "forms/a.xml#2".into(),
            change,
            base,
            warnings: vec!["unknown code `x` ⇒ warning element".into()],
            inputs: inputs.clone(),
        };
        let delivered = Base { version: Some("v7".into()), hash: Some("ab12".into()), refresh: false };
        Plan {
            flags: Flags { force: true, allow_withdrawals: false },
            steps: vec![
                step("portal-xml", Change::Create { document: document("<a>ä &amp; ö</a>") }, Base::default()),
                step("form-platform", Change::Update { document: document("{\"id\":1}") }, delivered.clone()),
                step("old", Change::Withdraw, Base { refresh: true, ..delivered }),
                step("same", Change::Nothing { output_hash: "ab12".into() }, Base::default()),
                Step::refused(
                    &key,
                    "forms",
                    "forms/b.xml".into(),
                    Inputs::default(),
                    Problem {
                        item_key: key.to_string(),
                        target: "portal-xml".into(),
                        status: ItemStatus::Quarantined,
                        stage: Stage::Validate,
                        message: "not valid".into(),
                    },
                ),
            ],
        }
    }

    #[test]
    fn a_plan_round_trips_through_serde() {
        let plan = plan();
        let text = serde_json::to_string(&plan).unwrap();
        assert!(text.contains(r#""action":"create""#) && text.contains("<a>ä &amp; ö</a>"), "{text}");
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn steps_that_change_something_are_plan_entries() {
        let plan = plan();
        let entries: Vec<_> = plan.steps.iter().filter_map(|s| s.entry(String::new())).collect();
        let actions: Vec<&str> = entries.iter().map(|(e, _)| e.action.as_str()).collect();
        assert_eq!(actions, ["create", "update", "withdraw"]);
        let (create, body) = &entries[0];
        assert_eq!(
            create.document_hash.as_deref(),
            Some(crate::store::plans::document_hash(body.as_ref().unwrap()).as_str())
        );
        let (update, _) = &entries[1];
        assert_eq!((update.base_version.as_deref(), update.base_hash.as_deref()), (Some("v7"), Some("ab12")));
        let inputs: Inputs = serde_json::from_str(&update.inputs).unwrap();
        assert_eq!(inputs, plan.steps[1].inputs);
    }

    #[test]
    fn a_stored_entry_becomes_the_step_it_was_made_from() {
        let plan = plan();
        for step in &plan.steps[..3] {
            let (entry, body) = step.entry("diff".into()).unwrap();
            let back = Step::from_entry(&entry, body.clone(), plan.flags).unwrap();
            // As the run decides it: a forced delivery, or a withdrawal of an unknown version, asks first.
            let mut expected = step.clone();
            expected.base.refresh = match step.change {
                Change::Withdraw => step.base.version.is_none(),
                _ => plan.flags.force,
            };
            assert_eq!(back, expected);
            if let Some(body) = body {
                let mut other = body.clone();
                other.push(b' ');
                let err = Step::from_entry(&entry, Some(other), plan.flags).unwrap_err();
                assert!(err.to_string().contains("does not match"), "{err}");
            }
        }
    }
}
