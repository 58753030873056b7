//! Faults: what the user writes ([`spec`], its action in [`action`]) and how it becomes map
//! entries ([`compile`]).

pub mod action;
pub mod compile;
pub mod spec;
