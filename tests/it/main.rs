//! Integration tests: the pipeline, the store and the command line, on throwaway copies of the demo data.

/// The counting allocator of the binaries (src/alloc.rs), so that mapping budgets hold in these tests too.
#[global_allocator]
static GLOBAL: portal_bridge::alloc::Counting<std::alloc::System> = portal_bridge::alloc::Counting(std::alloc::System);

mod admin;
mod adoptions;
mod api;
mod audit;
mod audit_pages;
mod bad_input;
mod browser;
mod budget;
mod cli;
mod config_check;
mod conformance;
mod corpus;
mod daemon;
mod delivery;
mod devtools;
mod evidence;
mod fim;
mod hostile_source;
mod http;
mod monitoring;
mod observability;
mod operators;
mod package;
mod pipeline;
mod plan_pages;
mod plans;
mod properties;
mod quality;
mod runs;
mod shell;
mod store;
mod support;
mod xrepository;
