//! The quality report: per item, what the bridge found wrong upstream in its last migration, classified for the regions.
//!
//! The findings are the warnings and errors of the migration log (see [`Store::findings`]); each is
//! put in a [`Category`] by its message alone ([`classify`]), and the same message for several
//! targets of one item becomes one [`Finding`] naming them all. [`render`] writes the report as
//! text or CSV; JSON is its `Serialize` form.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::domain::Level;
use crate::store::findings::FindingRow;
use crate::store::{Store, StoreError};

/// What kind of problem a finding is. The ids ([`Category::id`]) are stable: scripts and CSV filters use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The item was not delivered (an error in its last run).
    Quarantine,
    /// The record deviates from its standard's XSD (XDatenfelder 2.0 or 3.0.0).
    XsdDeviation,
    /// Text outside DIN SPEC 91379 String.Latin, replaced in the XDatenfelder 3.0.0 document.
    StringLatin,
    /// A codelist the form references is not at hand.
    CodelistMissing,
    /// A codelist is referenced without a version; the newest at hand was used.
    CodelistVersionless,
    /// A rule whose script is an empty stub.
    StubScript,
    /// A group type, field type or data type the form platform does not support.
    Unsupported,
    /// Something the form mapping had to keep as a note instead of mapping it.
    NotedNotMapped,
    /// Anything else the log says about the item (never dropped).
    Other,
}

impl Category {
    /// In the order reports list them: what was not delivered first.
    pub const ALL: [Category; 9] = [
        Category::Quarantine,
        Category::XsdDeviation,
        Category::StringLatin,
        Category::CodelistMissing,
        Category::CodelistVersionless,
        Category::StubScript,
        Category::Unsupported,
        Category::NotedNotMapped,
        Category::Other,
    ];

    /// The stable id, e.g. `codelist-missing`.
    pub fn id(self) -> &'static str {
        match self {
            Category::XsdDeviation => "xsd-deviation",
            Category::StringLatin => "string-latin",
            Category::CodelistMissing => "codelist-missing",
            Category::CodelistVersionless => "codelist-versionless",
            Category::StubScript => "stub-script",
            Category::Unsupported => "unsupported",
            Category::NotedNotMapped => "noted-not-mapped",
            Category::Quarantine => "quarantine",
            Category::Other => "other",
        }
    }

    /// German label with the English gloss, as the review pages write their headings.
    pub fn label(self) -> &'static str {
        match self {
            Category::XsdDeviation => "Abweichung vom XSD des Standards (deviates from the standard's XSD)",
            Category::StringLatin => "Zeichen außerhalb String.Latin (characters outside DIN SPEC 91379)",
            Category::CodelistMissing => "Codeliste fehlt (codelist missing)",
            Category::CodelistVersionless => "Codeliste ohne Version (codelist without a version)",
            Category::StubScript => "Leeres Regelskript (empty rule script)",
            Category::Unsupported => "Nicht unterstützt (unsupported)",
            Category::NotedNotMapped => "Nur als Hinweis übernommen (noted, not mapped)",
            Category::Quarantine => "Quarantäne, nicht geliefert (quarantined, not delivered)",
            Category::Other => "Sonstiges (other)",
        }
    }
}

/// The codes of the form mappings' warnings (`warning("code"; …)` in mappings/*-to-form.jq) that
/// mean a value was kept as a note instead of being mapped. `unsupported*` codes and the two codelist
/// codes have categories of their own; a code not named anywhere is `other` until it is added here.
const NOTED_CODES: [&str; 12] = [
    "anzahl-invalid",
    "codelist-column-missing",
    "empty-struktur",
    "file-constraint-invalid",
    "missing-id",
    "pattern-invalid",
    "pattern-not-regex",
    "praezisierung-invalid-value",
    "praezisierung-unknown-key",
    "praezisierung-unparsed",
    "schema-empty",
    "select-without-options",
];

/// A message's category, and for a quarantine the category of its reason (if it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub category: Category,
    pub cause: Option<Category>,
}

/// Classifies one event of the migration log by its level and message. An error is always a
/// quarantine (the item was not delivered); its `cause` is what the message says beneath the
/// prefixes the pipeline adds (`<file>: mapping <name>: "…"`), e.g. missing codelists.
pub fn classify(level: &str, message: &str) -> Classified {
    if level == Level::Error.as_str() {
        let cause = std::iter::once(message)
            .chain(message.match_indices(": ").map(|(at, _)| &message[at + 2..]))
            .find_map(|tail| category_of(tail.trim_start_matches('"')));
        return Classified { category: Category::Quarantine, cause };
    }
    Classified { category: category_of(message).unwrap_or(Category::Other), cause: None }
}

/// The category a warning's text names, if any.
fn category_of(message: &str) -> Option<Category> {
    let text = message.trim_start();
    if text.starts_with("String.Latin (DIN SPEC 91379):") {
        return Some(Category::StringLatin);
    }
    if text.starts_with("rule ") && text.contains(": its script is an empty stub") {
        return Some(Category::StubScript);
    }
    if text.starts_with("missing codelist ") || text.starts_with("missing codelists (") {
        return Some(Category::CodelistMissing);
    }
    if text.starts_with("codelist ") && text.contains(" has no version in the form") {
        return Some(Category::CodelistVersionless);
    }
    if let Some(code) = mapping_code(text) {
        return match code {
            "missing-codelist" => Some(Category::CodelistMissing),
            "codelist-newest-version" => Some(Category::CodelistVersionless),
            code if code.starts_with("unsupported") => Some(Category::Unsupported),
            code if NOTED_CODES.contains(&code) => Some(Category::NotedNotMapped),
            _ => None,
        };
    }
    // "<origin>: the record deviates from xdatenfelder-2.0/xdatenfelder.xsd: …"
    if text.starts_with("the record deviates from ") || text.contains(": the record deviates from ") {
        return Some(Category::XsdDeviation);
    }
    None
}

/// The code of a form mapping's warning as it reaches the log: `code (elementId): message` or
/// `code: message`, the code lowercase words joined by hyphens.
fn mapping_code(text: &str) -> Option<&str> {
    let end = text.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))?;
    let (code, rest) = text.split_at(end);
    let words_ok = code.split('-').all(|w| !w.is_empty());
    if !code.contains('-') || !words_ok {
        return None;
    }
    let rest = match rest.strip_prefix(" (") {
        Some(inner) => &inner[inner.find(')')? + 1..],
        None => rest,
    };
    rest.starts_with(": ").then_some(code)
}

/// One finding of an item: a message, the targets it was logged for, and how often (at most) per target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub category: Category,
    /// For a quarantine: the category of its reason, if the message names one.
    pub cause: Option<Category>,
    pub targets: Vec<String>,
    pub message: String,
    /// How often the message was logged for one target (e.g. a field used in several groups).
    pub occurrences: usize,
}

impl Finding {
    /// The categories the finding counts under: its own and its cause.
    pub fn categories(&self) -> impl Iterator<Item = Category> + '_ {
        std::iter::once(self.category).chain(self.cause)
    }
}

/// One item with its status per target and its findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFindings {
    pub item: String,
    pub source: String,
    pub statuses: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
}

/// Per category: findings, and items with at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub category: Category,
    pub findings: usize,
    pub items: usize,
}

/// Counts for every category, in [`Category::ALL`] order; serialized as `{category: findings}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary(pub Vec<Count>);

impl Serialize for Summary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for count in &self.0 {
            map.serialize_entry(count.category.id(), &count.findings)?;
        }
        map.end()
    }
}

/// The whole report: the sources it covers, every item of them (clean ones with no findings), the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QualityReport {
    pub sources: Vec<String>,
    pub items: Vec<ItemFindings>,
    pub summary: Summary,
}

/// Why a report could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// The report over `sources`; `source` narrows the ledger rows read to one of them.
pub async fn quality(store: &Store, sources: Vec<String>, source: Option<&str>) -> Result<QualityReport, ReportError> {
    let rows = store.findings(source).await?;
    Ok(build(sources, &rows))
}

/// Groups ledger rows with their events (ordered by item, target, event) into the report.
pub fn build(sources: Vec<String>, rows: &[FindingRow]) -> QualityReport {
    let mut items: Vec<ItemFindings> = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let key = &rows[start].item_key;
        let end = start + rows[start..].iter().take_while(|r| &r.item_key == key).count();
        items.push(item(&rows[start..end]));
        start = end;
    }
    let summary = Summary(
        Category::ALL
            .iter()
            .map(|&category| {
                let counts = items.iter().map(|i| i.findings.iter().filter(|f| f.categories().any(|c| c == category)));
                let per_item: Vec<usize> = counts.map(Iterator::count).collect();
                Count { category, findings: per_item.iter().sum(), items: per_item.iter().filter(|n| **n > 0).count() }
            })
            .collect(),
    );
    QualityReport { sources, items, summary }
}

/// One item's rows: statuses per target, and its messages merged across targets. Findings are
/// ordered by category, then by where they first occur: the first of their targets by name, and
/// their place in that target's events (the order the mapping wrote them). Not by event id, since
/// the targets of an item are mapped in parallel and their events interleave differently each run.
fn item(rows: &[FindingRow]) -> ItemFindings {
    struct Merged<'a> {
        classified: Classified,
        first: (&'a str, usize),
        per_target: BTreeMap<String, usize>,
    }
    let mut statuses = BTreeMap::new();
    let mut merged: BTreeMap<&str, Merged> = BTreeMap::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        statuses.insert(row.target.clone(), row.status.clone());
        let (Some(level), Some(message)) = (&row.level, &row.message) else { continue };
        let place = seen.entry(row.target.as_str()).or_default();
        let at = (row.target.as_str(), *place);
        *place += 1;
        let entry = merged.entry(message.as_str()).or_insert_with(|| Merged {
            classified: classify(level, message),
            first: at,
            per_target: BTreeMap::new(),
        });
        // The same text as a warning for one target and an error for another: the error wins.
        if level == Level::Error.as_str() {
            entry.classified = classify(level, message);
        }
        entry.first = entry.first.min(at);
        *entry.per_target.entry(row.target.clone()).or_default() += 1;
    }
    let mut findings: Vec<((&str, usize), Finding)> = merged
        .into_iter()
        .map(|(message, m)| {
            let finding = Finding {
                category: m.classified.category,
                cause: m.classified.cause,
                occurrences: m.per_target.values().copied().max().unwrap_or(1),
                targets: m.per_target.into_keys().collect(),
                message: message.to_owned(),
            };
            (m.first, finding)
        })
        .collect();
    findings.sort_by(|(a, f), (b, g)| (f.category, a).cmp(&(g.category, b)));
    ItemFindings {
        item: rows[0].item_key.clone(),
        source: rows[0].source_id.clone(),
        statuses,
        findings: findings.into_iter().map(|(_, f)| f).collect(),
    }
}

impl QualityReport {
    /// The items of one source, in key order.
    pub fn items_of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a ItemFindings> + 'a {
        self.items.iter().filter(move |i| i.source == source)
    }

    /// Sources to show: the covered ones, then any the ledger holds besides (e.g. no longer configured).
    pub fn shown_sources(&self) -> Vec<&str> {
        let mut shown: Vec<&str> = self.sources.iter().map(String::as_str).collect();
        let extra: BTreeSet<&str> =
            self.items.iter().map(|i| i.source.as_str()).filter(|s| !self.sources.iter().any(|c| c == s)).collect();
        shown.extend(extra);
        shown
    }
}

#[cfg(test)]
mod tests;
