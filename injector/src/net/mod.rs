//! The host's network: the interfaces and their addresses (`ifaces`), rtnetlink on the wire
//! (`netlink`), link events (`netwatch`), and entering a network namespace (`netns`).

pub mod ifaces;
pub mod netlink;
pub mod netns;
pub mod netwatch;
