//! Shared code of the benchmarks: the corpus generator and the per-stage measurements.

#![allow(dead_code)] // each bench target uses a different part

pub mod corpus;
pub mod stages;
