//! portal-bridge moves the online services of the NRW "Digitale Modellregionen" into Kommunalportal.NRW.
//!
//! Data flow, one direction:
//!
//! ```text
//! config::Config::resolve()      sources, mappings, targets, schedules — all checked up front
//! pipeline::run(job, deps)
//!   pipeline::start              the sources' leases (one run per source, database clock), the run recorded
//!   source::list / read_entry    files of a source, split into records with key and content hash
//!   pipeline::codelists          lists the records refer to that nobody has: fetched (XRepository), cached
//!   store ledger                 unchanged hash + unchanged mapping version ⇒ skip
//!   codec::decode                XML → tree (quick-xml) | JSON → tree
//!   mapping::Mapping::apply      jq program (jaq) + lookups + codelists ⇒ one document per target,
//!                                within the record's budget (time, memory; alloc::Counting counts)
//!   validate::Validators::check  JSON Schema | XSD; failure ⇒ quarantine, never delivered
//!   target::deliver              outbox directory (atomic file per item)
//!   store::Store::write_fenced_batch  item status in the ledger + events in the migration log,
//!                                only while the run holds its lease and the rows are as it read them
//! report::quality                per item, the warnings and errors of its last migration, classified
//! ```
//!
//! `metrics` is the Prometheus registry the pipeline records into and the API's `/metrics` encodes;
//! it depends on neither. The portal import API simulator is not here: `crates/portal-sim`.

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
pub mod pipeline;
pub mod policy;
pub mod preview;
pub mod report;
pub mod retry;
pub mod scheduler;
pub mod source;
pub mod store;
pub mod validate;
pub mod xrepository;
