//! Integration tests: the pipeline, the store and the command line, on throwaway copies of the demo data.

mod admin;
mod adoptions;
mod api;
mod bad_input;
mod browser;
mod cli;
mod config_check;
mod conformance;
mod corpus;
mod daemon;
mod delivery;
mod evidence;
mod fim;
mod hostile_source;
mod http;
mod pipeline;
mod properties;
mod quality;
mod runs;
mod store;
mod support;
mod xrepository;
