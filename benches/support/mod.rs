//! Shared code of the benchmarks: the corpus generator, the real FIM exports, the per-stage measurements and the hand-written reference of one mapping.

#![allow(dead_code)] // each bench target uses a different part

pub mod corpus;
pub mod profile;
pub mod real;
pub mod reference;
pub mod stages;
