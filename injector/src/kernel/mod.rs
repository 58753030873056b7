//! The kernel side: the maps the programs read and write (`maps`; the host arrays written
//! through a mapping, `hosts`; batched hash writes, `batch`), attaching programs to interfaces
//! by role (`attach`), the qdiscs delay needs (`qdisc`), what this kernel offers (`features`),
//! which build of the programs it gets (`programs`) and the daemon's records in parts (`specs`).

pub mod attach;
pub mod batch;
pub mod features;
pub mod hosts;
pub mod maps;
pub mod pins;
pub mod programs;
pub mod qdisc;
pub mod specs;

pub use maps::{Maps, monotonic_ns};
