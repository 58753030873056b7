//! Differential fuzzing of the kernel path (prog_diff.rs): the reference model and the
//! generators.

pub mod generate;
pub mod model;
