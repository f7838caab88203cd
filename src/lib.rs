//! portal-bridge moves the online services of the NRW "Digitale Modellregionen" into Kommunalportal.NRW.
//!
//! Data flow, one direction:
//!
//! ```text
//! config::Config::resolve()      sources, mappings, targets, schedules — all checked up front
//! pipeline::run(job, deps)
//!   pipeline::start              the sources' leases (one run per source, database clock), the run recorded
//!   pipeline::reconcile          deliveries an interrupted run left: probed and finished through the journal
//!  PLAN (pipeline::plan)
//!   source::list / read_entry    files of a source, split into records with key and content hash
//!   pipeline::codelists          lists the records refer to that nobody has: fetched (XRepository), cached
//!   store ledger                 unchanged hash + unchanged mapping version ⇒ skip
//!   codec::decode                XML → tree (quick-xml) | JSON → tree
//!   mapping::Mapping::apply      jq program (jaq) + lookups + codelists ⇒ one document per target,
//!                                within the record's budget (time, memory; alloc::Counting counts)
//!   validate::Validators::check  JSON Schema | XSD; failure ⇒ quarantine, never delivered
//!     └► plan::Step              per item and target: the change (create, update, withdraw, nothing,
//!                                refuse), the document, the base it builds on, warnings, inputs
//!  APPLY (pipeline::apply)
//!   delivery::Journal::send      intent recorded → delivered by the target (delivery::Target: outbox
//!                                directory | portal HTTP API) with an idempotency key → probed if left over
//!   store::Store::write_fenced_batch  item status in the ledger + events in the migration log + the
//!                                intent settled, only while the run holds its lease and the rows are as it read them
//! report::quality                per item, the warnings and errors of its last migration, classified
//! ```
//!
//! The operator's actions (retry, skip, resolve, adopt, a run started by hand) are one layer, `ops`,
//! that `cli` and `api` both call: it checks the arguments, starts runs through a runner (this
//! process, or the daemon for the API) under the sources' leases, and logs each action with who
//! (the OS user, or the admin token's name in `api::tokens`) and why.
//!
//! `metrics` is the Prometheus registry the pipeline records into and the API's `/metrics` encodes;
//! it depends on neither. `delivery` (the intent journal and the one `Target` trait) uses the store
//! and the metrics, never the pipeline. The portal import API simulator is not here: `crates/portal-sim`.

pub mod alloc;
pub mod api;
pub mod cli;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod domain;
pub mod mapping;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod plan_view;
pub mod policy;
pub mod preview;
pub mod report;
pub mod retry;
pub mod scheduler;
pub mod source;
pub mod store;
pub mod validate;
pub mod xrepository;
