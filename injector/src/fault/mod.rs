//! Faults: what the user writes ([`spec`]) and how it becomes map entries ([`compile`]).

pub mod compile;
pub mod spec;
