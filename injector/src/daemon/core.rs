//! The daemon's shared state: the maps, the fault set, what is attached where, the protected
//! targets and the kernel features. One mutex; every holder does a few map syscalls at most.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use serde::Serialize;

use super::{
    faultset::{FaultSet, Protected},
    fq::FqState,
};
use crate::kernel::{Maps, attach::IfaceStatus};

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Features {
    pub tcx: bool,
    pub fq: bool,
    pub btf: bool,
    /// `bpf_skb_set_tstamp` (5.18+): the programs stamp EDT delivery times; without, no delay.
    pub edt_stamp: bool,
}

pub struct Core {
    pub maps: Maps,
    pub faults: FaultSet,
    pub ifaces: BTreeMap<String, IfaceStatus>,
    pub attach_errors: u64,
    pub ready: bool,
    pub protected: Vec<Protected>,
    pub features: Features,
    pub bpffs: String,
    /// fq qdiscs the daemon installed for delay faults.
    pub fq: FqState,
    /// Packets per second an fq must hold for the longest delay (`--fq-max-pps`).
    pub fq_max_pps: u32,
    /// Interfaces whose clsact qdisc an instance of ours created (kernels without TCX).
    pub clsact_owned: std::collections::BTreeSet<String>,
}

/// SPECS keys from here on hold the daemon's own records, not faults.
pub const DAEMON_RECORDS: u32 = 0xFFFF_0000;
/// SPECS key of the clsact record.
pub const CLSACT_KEY: u32 = 0xFFFF_0001;

impl Core {
    /// Stores which clsact qdiscs are ours, for a restarted daemon's clean stop.
    pub fn save_clsact(&mut self) {
        let bytes = serde_json::to_vec(&self.clsact_owned).unwrap_or_default();
        if let Err(e) = self.maps.put_record(CLSACT_KEY, &bytes) {
            tracing::warn!(error = %e, "storing the clsact record");
        }
    }
}

#[derive(Clone)]
pub struct Shared(Arc<Mutex<Core>>);

impl Shared {
    pub fn new(core: Core) -> Self {
        Shared(Arc::new(Mutex::new(core)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the maps consistent (every write is one syscall and
        // the fault set flips generations), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
