//! Prometheus metrics: durations the pipeline and the scheduler record, and gauges set from a snapshot at scrape time.
//!
//! Depends on neither the pipeline nor the API: the pipeline records into [`Metrics`], the API's
//! `/metrics` route (`api::metrics`) reads the store and the scheduler into a [`Snapshot`] and encodes.
//!
//! | metric | kind | labels | from |
//! |---|---|---|---|
//! | `portal_bridge_run_duration_seconds` | histogram | trigger, status | [`Metrics::observe_run`] |
//! | `portal_bridge_stage_duration_seconds` | histogram | stage | [`Metrics::observe_stage`] |
//! | `portal_bridge_upstream_request_duration_seconds` | histogram | source | [`Metrics::observe_upstream`] |
//! | `portal_bridge_documents_total` | counter | source, target, outcome | [`Metrics::count_document`] (runs of this process) |
//! | `portal_bridge_items` | gauge | source, target, status | the ledger, at scrape time |
//! | `portal_bridge_runs` | gauge | trigger, status | the stored runs, at scrape time |
//! | `portal_bridge_source_last_success_timestamp_seconds` | gauge | source | the store (each source's own result, every trigger) |
//! | `portal_bridge_source_next_run_timestamp_seconds` | gauge | source | the scheduler (`api::SourceStates`) |
//! | `portal_bridge_source_running` | gauge | source | the scheduler (`api::SourceStates`) |
//! | `portal_bridge_database_up` | gauge | | `store.ping()` at scrape time |

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::{RunStatus, Stage, Trigger};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    trigger: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemLabels {
    source: String,
    target: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditHeadLabels {
    hash: String,
    seq: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DocumentLabels {
    source: String,
    target: String,
    outcome: String,
}

/// What became of one document (an item at a target) in a run, as `portal_bridge_documents_total`
/// counts it. `Warning` counts documents that went through with warnings, in addition to their
/// `delivered` or `unchanged`; the other outcomes exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Unchanged,
    Quarantined,
    Failed,
    Withdrawn,
    Conflict,
    Warning,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Unchanged => "unchanged",
            Outcome::Quarantined => "quarantined",
            Outcome::Failed => "failed",
            Outcome::Withdrawn => "withdrawn",
            Outcome::Conflict => "conflict",
            Outcome::Warning => "warning",
        }
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 s … about 4.5 h.
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// 1 ms … about 4.4 min.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// 10 ms … about 82 s.
fn upstream_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// The registry and the instruments; see the methods for what is recorded.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    run_duration: Histograms<RunLabels>,
    stage_duration: Histograms<StageLabels>,
    upstream_duration: Histograms<SourceLabels>,
    documents: Family<DocumentLabels, Counter>,
    items: Family<ItemLabels, Gauge>,
    runs: Family<RunLabels, Gauge>,
    last_success: Family<SourceLabels, Gauge>,
    next_run: Family<SourceLabels, Gauge>,
    running: Family<SourceLabels, Gauge>,
    audit_head: Family<AuditHeadLabels, Gauge>,
    database_up: Gauge,
    plans_awaiting: Gauge,
    oldest_plan_age: Gauge,
    /// Scrapes refresh the gauges and encode under this lock, so that each sees a consistent set.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portal_bridge");
        let run_duration: Histograms<RunLabels> = Family::new_with_constructor(run_histogram);
        let stage_duration: Histograms<StageLabels> = Family::new_with_constructor(stage_histogram);
        let upstream_duration: Histograms<SourceLabels> = Family::new_with_constructor(upstream_histogram);
        let documents = Family::<DocumentLabels, Counter>::default();
        let items = Family::<ItemLabels, Gauge>::default();
        let runs = Family::<RunLabels, Gauge>::default();
        let last_success = Family::<SourceLabels, Gauge>::default();
        let next_run = Family::<SourceLabels, Gauge>::default();
        let running = Family::<SourceLabels, Gauge>::default();
        let audit_head = Family::<AuditHeadLabels, Gauge>::default();
        let database_up = Gauge::default();
        let plans_awaiting = Gauge::default();
        let oldest_plan_age = Gauge::default();
        registry.register(
            "run_duration_seconds",
            "Duration of pipeline runs, by trigger and final status",
            run_duration.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "Time spent in one pipeline stage (fetch per source; decode, map, validate, deliver per item and target)",
            stage_duration.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Latency of requests to a source's upstream (one observation per HTTP request)",
            upstream_duration.clone(),
        );
        registry.register(
            "documents",
            "Documents (items per target) by what became of them in the runs of this process: delivered, unchanged, \
             quarantined, failed, withdrawn, conflict; warning counts those that went through with warnings, besides \
             their delivered or unchanged",
            documents.clone(),
        );
        registry.register("items", "Ledger rows (items per target) by source, target and status", items.clone());
        registry.register("runs", "Stored runs by trigger and status", runs.clone());
        registry.register(
            "source_last_success_timestamp_seconds",
            "End of the last run (any trigger) in which the source went through without problems of its own (unix seconds)",
            last_success.clone(),
        );
        registry.register(
            "source_next_run_timestamp_seconds",
            "Next scheduled run of the source (unix seconds)",
            next_run.clone(),
        );
        registry.register("source_running", "1 while a run of the source is in progress", running.clone());
        registry.register("database_up", "1 if the database answered at scrape time", database_up.clone());
        registry.register(
            "plans_awaiting_approval",
            "Plans that wait for an approver (status open)",
            plans_awaiting.clone(),
        );
        registry.register(
            "plan_awaiting_approval_oldest_age_seconds",
            "Age of the oldest plan that waits for an approver (0 when none waits)",
            oldest_plan_age.clone(),
        );
        registry.register(
            "audit_head_info",
            "The audit chain's head (hash and seq of its last link) at scrape time; always 1 (docs/audit.md)",
            audit_head.clone(),
        );
        Self {
            registry,
            run_duration,
            stage_duration,
            upstream_duration,
            documents,
            items,
            runs,
            last_success,
            next_run,
            running,
            audit_head,
            database_up,
            plans_awaiting,
            oldest_plan_age,
            scrape: Mutex::new(()),
        }
    }

    /// A run finished: call once per run (not for dry runs), with its wall-clock duration.
    pub fn observe_run(&self, trigger: Trigger, status: RunStatus, seconds: f64) {
        let labels = RunLabels { trigger: trigger.as_str().into(), status: status.as_str().into() };
        self.run_duration.get_or_create(&labels).observe(seconds);
    }

    /// Time spent in one stage: `Stage::Fetch` once per source fetch; `Decode`, `Map`, `Validate`
    /// and `Deliver` once per item and target (or per record for `Decode`).
    pub fn observe_stage(&self, stage: Stage, seconds: f64) {
        self.stage_duration.get_or_create(&StageLabels { stage: stage.as_str().into() }).observe(seconds);
    }

    /// One request to a source's upstream (each page and each retry), from sending to the full body.
    pub fn observe_upstream(&self, source: &str, seconds: f64) {
        self.upstream_duration.get_or_create(&SourceLabels { source: label(source) }).observe(seconds);
    }

    /// One document's outcome in a run (see [`Outcome`]).
    pub fn count_document(&self, source: &str, target: &str, outcome: Outcome) {
        let labels = DocumentLabels { source: label(source), target: label(target), outcome: outcome.as_str().into() };
        self.documents.get_or_create(&labels).inc();
    }

    /// The registry as OpenMetrics text, after setting the scrape-time gauges from `now`.
    pub fn encode(&self, now: Snapshot) -> Result<String, std::fmt::Error> {
        let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.database_up.set(i64::from(now.database_up));
        self.plans_awaiting.set(now.plans_awaiting);
        self.oldest_plan_age.set(now.oldest_plan_age.unwrap_or(0));
        // A failed query leaves the gauges empty rather than stale.
        self.items.clear();
        for ((source, target, status), count) in now.items {
            self.items.get_or_create(&ItemLabels { source, target, status }).set(count);
        }
        self.runs.clear();
        for ((trigger, status), count) in now.runs {
            self.runs.get_or_create(&RunLabels { trigger, status }).set(count);
        }
        self.audit_head.clear();
        if let Some((seq, hash)) = now.audit_head {
            self.audit_head.get_or_create(&AuditHeadLabels { hash: label(&hash), seq: seq.to_string() }).set(1);
        }
        self.last_success.clear();
        self.next_run.clear();
        self.running.clear();
        for (id, state) in now.sources {
            let source = SourceLabels { source: label(&id) };
            if let Some(at) = state.last_success {
                self.last_success.get_or_create(&source).set(at);
            }
            if let Some(at) = state.next_run {
                self.next_run.get_or_create(&source).set(at);
            }
            self.running.get_or_create(&source).set(i64::from(state.running));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What a scrape reads from the store and the daemon before it takes the lock (label values
/// already escaped with [`label`]).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub database_up: bool,
    /// (source, target, status) → ledger rows.
    pub items: BTreeMap<(String, String, String), i64>,
    /// (trigger, status) → stored runs.
    pub runs: BTreeMap<(String, String), i64>,
    /// Source id (unescaped) → its scheduler state.
    pub sources: BTreeMap<String, SourceGauges>,
    /// Plans waiting for an approver, and the age of the oldest in seconds.
    pub plans_awaiting: i64,
    pub oldest_plan_age: Option<i64>,
    /// The audit chain's head: (seq, hash).
    pub audit_head: Option<(i64, String)>,
}

/// A source's scheduler state as the gauges show it (times as Unix seconds).
#[derive(Debug, Default, Clone, Copy)]
pub struct SourceGauges {
    pub last_success: Option<i64>,
    pub next_run: Option<i64>,
    pub running: bool,
}

/// A label value as the text format needs it (prometheus-client writes values as given).
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_show_up_in_the_text() {
        let metrics = Metrics::new();
        metrics.observe_run(Trigger::Schedule, RunStatus::Partial, 12.5);
        metrics.observe_stage(Stage::Map, 0.004);
        metrics.observe_upstream("owl-zufi", 0.2);
        metrics.count_document("owl-forms", "portal-xml", Outcome::Delivered);
        metrics.count_document("owl-forms", "portal-xml", Outcome::Delivered);
        let mut now = Snapshot { database_up: true, ..Snapshot::default() };
        now.items.insert(("owl-forms".into(), "portal-xml".into(), "delivered".into()), 3);
        now.sources.insert("owl\"x".into(), SourceGauges { last_success: Some(60), ..Default::default() });
        let text = metrics.encode(now).unwrap();
        assert!(
            text.contains("portal_bridge_run_duration_seconds_count{trigger=\"schedule\",status=\"partial\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portal_bridge_run_duration_seconds_sum{trigger=\"schedule\",status=\"partial\"} 12.5"),
            "{text}"
        );
        assert!(text.contains("portal_bridge_stage_duration_seconds_count{stage=\"map\"} 1"), "{text}");
        assert!(
            text.contains("portal_bridge_upstream_request_duration_seconds_count{source=\"owl-zufi\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portal_bridge_items{source=\"owl-forms\",target=\"portal-xml\",status=\"delivered\"} 3"),
            "{text}"
        );
        assert!(text.contains("portal_bridge_source_last_success_timestamp_seconds{source=\"owl\\\"x\"} 60"), "{text}");
        assert!(text.contains("portal_bridge_database_up 1"), "{text}");
        assert!(
            text.contains(
                "portal_bridge_documents_total{source=\"owl-forms\",target=\"portal-xml\",outcome=\"delivered\"} 2"
            ),
            "{text}"
        );

        // The next scrape forgets rows that are gone.
        let text = metrics.encode(Snapshot::default()).unwrap();
        assert!(!text.contains("portal_bridge_items{"), "{text}");
        assert!(text.contains("portal_bridge_database_up 0"), "{text}");
    }
}
