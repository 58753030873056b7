//! Faults: what the user writes ([`spec`], its action in [`action`], the loss models in
//! [`loss`], on/off windows in [`pulse`], DNS names and answers in [`dns`]) and how it becomes map entries ([`compile`]).

pub mod action;
pub mod compile;
pub mod dns;
pub mod hosts;
pub mod loss;
pub mod pulse;
pub mod rate;
pub mod spec;
