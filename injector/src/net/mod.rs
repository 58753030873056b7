//! The host's network: the interfaces and their addresses (`ifaces`), rtnetlink link events
//! (`netwatch`), and entering a network namespace (`netns`).

pub mod ifaces;
pub mod netns;
pub mod netwatch;
