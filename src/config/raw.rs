//! The configuration file as written: the TOML tables as plain, documented data (`Raw*`), before anything is checked.

use serde::Deserialize;
use toml::Spanned;

use crate::codec::{Format, Limits};

/// The config file as written. Relative paths are resolved against `root`, which itself is
/// relative to the directory of the config file.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// Base directory for relative paths, relative to the config file's directory (default `.`).
    #[serde(default = "dot")]
    pub root: Spanned<String>,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub paths: RawPaths,
    /// Time zone of all schedules (IANA name).
    #[serde(default = "berlin")]
    pub timezone: Spanned<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub codelists: RawCodelists,
    #[serde(default)]
    pub validation: RawValidation,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub daemon: RawDaemon,
    /// Which plans need approval by people other than their author (`[approval]`), and how long
    /// a plan may wait to be applied.
    pub approval: Option<Spanned<RawApproval>>,
    #[serde(default, rename = "target")]
    pub targets: Vec<RawTarget>,
    #[serde(default, rename = "source")]
    pub sources: Vec<RawSource>,
}

pub(super) fn dot() -> Spanned<String> {
    Spanned::new(0..0, ".".into())
}

pub(super) fn berlin() -> Spanned<String> {
    Spanned::new(0..0, "Europe/Berlin".into())
}

/// `[database]`
#[derive(Debug, Deserialize)]
pub struct RawDatabase {
    /// `sqlite://path` (relative paths resolved against `root`) or `postgres://…`.
    #[serde(default = "default_db")]
    pub url: String,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self { url: default_db() }
    }
}

pub(super) fn default_db() -> String {
    "sqlite://var/bridge.db".into()
}

/// `[paths]`
#[derive(Debug, Deserialize)]
pub struct RawPaths {
    /// Directory of mapping files.
    #[serde(default = "default_mappings")]
    pub mappings: Spanned<String>,
    /// Directory of genericode codelists.
    pub codelists: Option<Spanned<String>>,
    /// Base directory of outbox deliveries; each target writes to `<outbox>/<target id>/`.
    #[serde(default = "default_outbox")]
    pub outbox: Spanned<String>,
}

impl Default for RawPaths {
    fn default() -> Self {
        Self { mappings: default_mappings(), codelists: None, outbox: default_outbox() }
    }
}

pub(super) fn default_mappings() -> Spanned<String> {
    Spanned::new(0..0, "mappings".into())
}

pub(super) fn default_outbox() -> Spanned<String> {
    Spanned::new(0..0, "var/outbox".into())
}

/// `[codelists]`: where codelists come from besides the directory of `[paths] codelists`.
#[derive(Debug, Default, Deserialize)]
pub struct RawCodelists {
    /// Fetch the codelists that records refer to but the directory lacks from XRepository (default:
    /// off). Fetched lists are kept in the database, so later runs work offline.
    pub xrepository: Option<Spanned<RawXRepository>>,
}

/// `[codelists.xrepository]`
#[derive(Debug, Deserialize)]
pub struct RawXRepository {
    /// Base URL of XRepository, e.g. `https://www.xrepository.de`.
    pub url: String,
    /// Bound on each request (connect, answer and body), in seconds.
    #[serde(default = "default_xrepository_timeout")]
    pub timeout_secs: u64,
    /// Retries of a request after a transient failure (connect error, timeout, 429, 5xx).
    #[serde(default = "default_xrepository_retries")]
    pub retries: usize,
    /// First retry delay (exponential backoff with full jitter; Retry-After is honoured).
    #[serde(default = "default_retry_base")]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_xrepository_retry_max")]
    pub retry_max_ms: u64,
}

pub(super) fn default_xrepository_timeout() -> u64 {
    10
}

pub(super) fn default_xrepository_retries() -> usize {
    3
}

pub(super) fn default_xrepository_retry_max() -> u64 {
    10_000
}

/// `[admin]`: the admin HTTP API and review pages of the daemon.
#[derive(Debug, Deserialize)]
pub struct RawAdmin {
    /// Listen address; loopback by default. Put a reverse proxy with TLS in front to reach it from elsewhere.
    #[serde(default = "default_admin_listen")]
    pub listen: Spanned<String>,
    /// One bearer token, from an environment variable or a file: the identity `admin` with the
    /// role approver (the setting from before named tokens; it may stand beside `tokens_file`).
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    /// The file of named tokens with roles (viewer, operator, approver), each as its SHA-256
    /// (see `api::tokens`). Read again, like the single token, when the daemon reloads (SIGHUP).
    pub tokens_file: Option<String>,
    /// Require a token for read calls and pages too.
    #[serde(default)]
    pub read_needs_token: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_env: None,
            token_file: None,
            tokens_file: None,
            read_needs_token: false,
        }
    }
}

pub(super) fn default_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}

/// `[approval]`: the approval policy for every source and target (see [`crate::policy`]); a
/// source's or target's own `approval = { … }` tightens it for that source or target.
#[derive(Debug, Deserialize)]
pub struct RawApproval {
    /// Approvers other than the author a plan needs when a rule applies (default 1).
    pub approvers: Option<u32>,
    /// Every withdrawal needs approval (default true).
    pub withdrawals: Option<bool>,
    /// A plan changing more items of a source than this needs approval (default: no limit).
    pub max_changes: Option<u64>,
    /// A plan changing more than this share of a source's items, in percent, needs approval.
    pub max_changed_percent: Option<u8>,
    /// Every change needs approval (default false).
    pub always: Option<bool>,
    /// Hours after which a plan that was not applied expires (default 72).
    #[serde(default = "default_plan_hours")]
    pub plans_expire_after_hours: u64,
}

pub(super) fn default_plan_hours() -> u64 {
    72
}

impl RawApproval {
    pub(super) fn rules(&self) -> crate::policy::ApprovalRules {
        crate::policy::ApprovalRules {
            approvers: self.approvers,
            withdrawals: self.withdrawals,
            max_changes: self.max_changes,
            max_changed_percent: self.max_changed_percent,
            always: self.always,
        }
    }
}

/// `[daemon]`
#[derive(Debug, Deserialize)]
pub struct RawDaemon {
    /// On SIGTERM/SIGINT, how long runs in progress may take to finish before they are stopped
    /// (safely: their deliveries are reconciled at the next start).
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// How long a source's lease lasts without renewal: after a crash, another instance takes
    /// the source over this long after the last renewal.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// A scheduled or triggered run with more (item, target) pairs of work than this splits its
    /// work into batches of this size that every instance on the same database claims and works
    /// on (the instance holding the source's lease included); 0 keeps every run on one instance.
    #[serde(default = "default_share_batch")]
    pub share_batch: usize,
}

impl Default for RawDaemon {
    fn default() -> Self {
        Self { shutdown_grace_secs: default_grace(), lease_secs: default_lease(), share_batch: default_share_batch() }
    }
}

pub(super) fn default_grace() -> u64 {
    30
}

pub(super) fn default_lease() -> u64 {
    30
}

pub(super) fn default_share_batch() -> usize {
    100
}

/// `[validation]`: which schemas check inputs and outputs, beyond what the mapping files name.
#[derive(Debug, Default, Deserialize)]
pub struct RawValidation {
    /// Directory holding XSDs (e.g. the official XDatenfelder ones); relative schema paths in
    /// this section are resolved against it (default: `root`).
    pub xsd_dir: Option<Spanned<String>>,
    /// Mapping name → schema that replaces the mapping's `output.schema` (e.g. the official
    /// XDatenfelder 3.0.0 XSD instead of the project's profile).
    #[serde(default)]
    pub output: std::collections::BTreeMap<String, Spanned<String>>,
    /// Mapping name → XSD that XML records are checked against before mapping. Deviations (such as
    /// element order) are logged as warnings; the record is still mapped.
    #[serde(default)]
    pub input: std::collections::BTreeMap<String, Spanned<String>>,
}

/// `[limits]`: bounds enforced while reading records (each checked while reading, not after) and
/// while mapping them (the budget of each run of a mapping or key expression); see
/// docs/robustness.md. Defaults are far above real FIM and ZuFi records.
#[derive(Debug, Deserialize)]
pub struct RawLimits {
    /// Largest record file read, in bytes.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
    /// Deepest nesting of elements or JSON values.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Most XML elements (JSON: values) in one record file.
    #[serde(default = "default_max_elements")]
    pub max_elements: usize,
    /// Most XML attributes in one record file (all elements together, namespace declarations included).
    #[serde(default = "default_max_attributes")]
    pub max_attributes: usize,
    /// Longest text of one element, attribute value or JSON string, in bytes.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
    /// Longest external id of a record, in characters (Unicode scalar values); a longer id makes
    /// the record fail with an error naming the file and this limit.
    #[serde(default = "default_max_id_chars")]
    pub max_id_chars: usize,
    /// Largest codelist file read, in bytes; a larger one is reported as broken without being read.
    #[serde(default = "default_max_codelist_bytes")]
    pub max_codelist_bytes: u64,
    /// Longest one run of a mapping (or of a source's key, leika_key or form_link expression) on
    /// one record may take, in seconds; a run that takes longer is stopped and the item quarantined.
    #[serde(default = "default_max_mapping_seconds")]
    pub max_mapping_seconds: Spanned<f64>,
    /// Most memory one such run may hold at once, in bytes; a run that holds more is stopped and
    /// the item quarantined.
    #[serde(default = "default_max_mapping_bytes")]
    pub max_mapping_bytes: Spanned<u64>,
    /// How long a mapping keeps the outputs of its program's `memo` (building blocks converted
    /// once): `"record"` (within one record, the default), `"run"` (across the records of a run) or
    /// `"off"`. The documents are the same in every case.
    #[serde(default)]
    pub mapping_memo: RawMemoScope,
    /// Most memory (estimated) the memo of one mapping holds, in bytes; it is emptied when full.
    #[serde(default = "default_max_mapping_memo_bytes")]
    pub max_mapping_memo_bytes: u64,
}

/// `limits.mapping_memo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMemoScope {
    Run,
    #[default]
    Record,
    Off,
}

pub(super) fn default_max_mapping_memo_bytes() -> u64 {
    crate::mapping::MemoLimits::default().bytes as u64
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: default_max_record_bytes(),
            max_depth: default_max_depth(),
            max_elements: default_max_elements(),
            max_attributes: default_max_attributes(),
            max_text_bytes: default_max_text_bytes(),
            max_id_chars: default_max_id_chars(),
            max_codelist_bytes: default_max_codelist_bytes(),
            max_mapping_seconds: default_max_mapping_seconds(),
            max_mapping_bytes: default_max_mapping_bytes(),
            mapping_memo: RawMemoScope::default(),
            max_mapping_memo_bytes: default_max_mapping_memo_bytes(),
        }
    }
}

impl RawLimits {
    /// How the mappings keep the outputs of `memo` (`mapping_memo`, `max_mapping_memo_bytes`).
    pub fn memo(&self) -> crate::mapping::MemoScope {
        let limits = crate::mapping::MemoLimits {
            bytes: usize::try_from(self.max_mapping_memo_bytes).unwrap_or(usize::MAX),
            ..Default::default()
        };
        match self.mapping_memo {
            RawMemoScope::Run => crate::mapping::MemoScope::Run(limits),
            RawMemoScope::Record => crate::mapping::MemoScope::Record(limits),
            RawMemoScope::Off => crate::mapping::MemoScope::Off,
        }
    }

    /// The limits the codec enforces.
    pub fn codec(&self) -> Limits {
        Limits {
            max_depth: self.max_depth,
            max_elements: self.max_elements,
            max_attributes: self.max_attributes,
            max_text_bytes: self.max_text_bytes,
        }
    }
}

pub(super) fn default_max_record_bytes() -> u64 {
    16 * 1024 * 1024
}

pub(super) fn default_max_depth() -> usize {
    Limits::default().max_depth
}

pub(super) fn default_max_elements() -> usize {
    Limits::default().max_elements
}

pub(super) fn default_max_attributes() -> usize {
    Limits::default().max_attributes
}

pub(super) fn default_max_text_bytes() -> usize {
    Limits::default().max_text_bytes
}

/// Far above FIM ids with version (`S05000101@1.0`), LeiKa keys (14 digits) and URLs as ids.
pub(super) fn default_max_id_chars() -> usize {
    200
}

/// The largest real codelists (e.g. every municipality of Germany) are a few MB.
pub(super) fn default_max_codelist_bytes() -> u64 {
    16 * 1024 * 1024
}

/// The largest real forms map in well under a second (docs/performance.md).
pub(super) fn default_max_mapping_seconds() -> Spanned<f64> {
    Spanned::new(0..0, crate::mapping::Budget::DEFAULT_SECONDS as f64)
}

/// Mapping the largest real forms holds a few MB.
pub(super) fn default_max_mapping_bytes() -> Spanned<u64> {
    Spanned::new(0..0, crate::mapping::Budget::DEFAULT_BYTES)
}

/// `[[target]]`
#[derive(Debug, Deserialize)]
pub struct RawTarget {
    pub id: Spanned<String>,
    /// How documents are delivered: `outbox` (files in a directory) or `http` (the portal import API).
    #[serde(default = "default_delivery")]
    pub delivery: Spanned<String>,
    /// The portal import API (delivery = "http"), see docs/portal-api.md.
    pub http: Option<Spanned<RawTargetHttp>>,
    /// This target's approval rules, tightening `[approval]` (e.g. `{ always = true }` for production).
    pub approval: Option<Spanned<crate::policy::ApprovalRules>>,
}

pub(super) fn default_delivery() -> Spanned<String> {
    Spanned::new(0..0, "outbox".into())
}

/// `[target.http]`
#[derive(Debug, Clone, Deserialize)]
pub struct RawTargetHttp {
    /// Base URL of the import API, e.g. `https://portal.example/import/v1`.
    pub url: String,
    /// The bearer token: from an environment variable or a file, never written in the config.
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    /// Requests to this target at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_target_rps")]
    pub requests_per_second: u32,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    #[serde(default = "default_retry_base")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
}

pub(super) fn default_concurrency() -> usize {
    4
}

pub(super) fn default_target_rps() -> u32 {
    20
}

/// `[[source]]`
#[derive(Debug, Deserialize)]
pub struct RawSource {
    /// Unique id; the first part of every item key of this source.
    pub id: Spanned<String>,
    /// Model region the source belongs to (aachen, bergisches-staedtedreieck, emscher-lippe, owl, soest …).
    pub region: String,
    /// `directory`: the files of one directory; `http`: pages of JSON from a URL.
    pub kind: Spanned<String>,
    /// Directory to read (kind = directory).
    pub path: Option<Spanned<String>>,
    /// URL of the first page (kind = http).
    pub url: Option<Spanned<String>>,
    /// HTTP settings (kind = http).
    pub http: Option<Spanned<RawHttp>>,
    /// JSON pointer to the array of records when a page is an object (split = "array"), e.g. `/items`.
    pub records: Option<String>,
    /// File name globs to include (default: `*.xml` and `*.json`).
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// Record format; by default taken from each file's extension.
    pub format: Option<Format>,
    /// `none`: one file is one record; `array`: a file holds a JSON array of records.
    #[serde(default)]
    pub split: Split,
    /// jq expression giving a record's external id; default: the file name without extension.
    pub key: Option<Spanned<String>>,
    /// jq expression giving a record's LeiKa key. When set, the adoptions of that service are part
    /// of the record's input (`$item.adoptions`): adding or removing one re-delivers the service.
    pub leika_key: Option<Spanned<String>>,
    /// Share of a source's items that may vanish in one run before its withdrawals are held
    /// (default 0.1); `migrate --allow-withdrawals` (or `POST /api/runs` with `allow_withdrawals`)
    /// overrides the guard once.
    #[serde(default = "default_withdrawal_share")]
    pub max_withdrawal_share: f64,
    /// Link to the form a record's online service uses; a service whose form did not go through
    /// is held back (`failed`, naming the form).
    pub form_link: Option<RawFormLink>,
    /// Names of the mappings applied to every record (one document per mapping).
    pub mappings: Spanned<Vec<String>>,
    /// Cron schedule (crontab syntax); without one the source only runs when triggered.
    pub schedule: Option<Spanned<String>>,
    /// When a run is due while the previous one still runs: `forbid` (skip it), `replace` (stop
    /// the old one, start anew) or `allow` (start the new one after the old one ended).
    #[serde(default)]
    pub overlap: crate::scheduler::Overlap,
    /// Runs missed while the daemon was down: `catch-up-once` (run once at start) or `skip`.
    #[serde(default)]
    pub missed: crate::scheduler::Missed,
    /// Up to this many seconds of random delay for each scheduled run (spreads load).
    #[serde(default)]
    pub jitter_secs: u64,
    /// What a mapping does when a referenced codelist is missing: `quarantine` the item (default)
    /// or `warn` (the document gets a warning element). Readable as `$source.on_missing_codelist`.
    #[serde(default)]
    pub on_missing_codelist: OnMissingCodelist,
    /// Free parameters for the mappings, readable as `$source.params` (e.g. a form URL template).
    #[serde(default)]
    pub params: toml::Table,
    /// This source's approval rules, tightening `[approval]`.
    pub approval: Option<Spanned<crate::policy::ApprovalRules>>,
}

pub(super) fn default_withdrawal_share() -> f64 {
    0.1
}

/// `[source.form_link]`
#[derive(Debug, Deserialize)]
pub struct RawFormLink {
    /// Id of the source that delivers the forms.
    pub source: Spanned<String>,
    /// jq expression giving the form's external id in that source (`null`: the service has no form).
    pub id: Spanned<String>,
}

/// `[source.http]`
#[derive(Debug, Clone, Deserialize)]
pub struct RawHttp {
    /// `none`, `page` (a page-number query parameter) or `link` (the `Link: rel="next"` header).
    #[serde(default = "default_pagination")]
    pub pagination: String,
    #[serde(default = "default_page_param")]
    pub page_param: String,
    #[serde(default = "one")]
    pub first_page: u64,
    /// Query parameter and value for the page size; a shorter page is the last one.
    pub page_size_param: Option<String>,
    pub page_size: Option<u64>,
    #[serde(default = "default_max_pages")]
    pub max_pages: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Bound on the whole fetch of the source, all pages and retries included.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default = "default_retries")]
    pub max_retries: usize,
    #[serde(default = "default_retry_base")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    pub auth: Option<RawAuth>,
}

/// `[source.http.auth]`: credentials come from an environment variable or a file, never the config.
#[derive(Debug, Clone, Deserialize)]
pub struct RawAuth {
    /// `bearer` or `basic`.
    pub kind: String,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

pub(super) fn default_pagination() -> String {
    "none".into()
}
pub(super) fn default_page_param() -> String {
    "page".into()
}
pub(super) fn one() -> u64 {
    1
}
pub(super) fn default_max_pages() -> usize {
    1000
}
pub(super) fn default_connect_timeout() -> u64 {
    10
}
pub(super) fn default_request_timeout() -> u64 {
    60
}
pub(super) fn default_fetch_timeout() -> u64 {
    600
}
pub(super) fn default_max_body() -> u64 {
    64 * 1024 * 1024
}
pub(super) fn default_retries() -> usize {
    4
}
pub(super) fn default_retry_base() -> u64 {
    500
}
pub(super) fn default_retry_max() -> u64 {
    30_000
}
pub(super) fn default_rps() -> u32 {
    5
}

/// Policy for codelists a record refers to but the codelist directory lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingCodelist {
    #[default]
    Quarantine,
    Warn,
}

/// How a file is split into records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    #[default]
    None,
    Array,
}
