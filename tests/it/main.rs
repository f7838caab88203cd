//! Integration tests: the pipeline, the store and the command line, on throwaway copies of the demo data.

mod cli;
mod fim;
mod pipeline;
mod support;
