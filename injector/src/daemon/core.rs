//! The daemon's shared state: the maps, the fault set, what is attached where, the protected
//! targets and the kernel features. One mutex; every holder does a few map syscalls at most.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use serde::Serialize;

use super::{carve::Protected, faultset::FaultSet, fq::FqState, records};
use crate::{
    fault::spec::Action,
    kernel::{
        Maps,
        attach::{IfaceStatus, Role},
    },
};

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Features {
    pub tcx: bool,
    pub fq: bool,
    pub btf: bool,
    /// `bpf_skb_set_tstamp` (5.18+): the programs stamp EDT delivery times; without, no delay.
    pub edt_stamp: bool,
}

impl Features {
    /// Whether packets can be held until a time (delay, paced rate): EDT stamps and fq.
    pub fn holds(&self) -> bool {
        self.edt_stamp && self.fq
    }

    /// How rate faults keep their rate here, as the reply to adding one says it.
    pub fn rate_mode(&self) -> &'static str {
        if self.holds() {
            "paced: held in fq until the rate allows (EDT)"
        } else {
            "policed: packets above the rate are dropped (no fq or EDT on this node to hold them)"
        }
    }
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

impl Core {
    /// Stores which clsact qdiscs are ours, for a restarted daemon's clean stop.
    pub fn save_clsact(&mut self) {
        if let Err(e) = records::put_own(&mut self.maps, records::key::CLSACT, &self.clsact_owned) {
            tracing::warn!(error = %e, "storing the clsact record");
        }
    }

    /// Brings the fq qdiscs in line with the fault set (see `fq`).
    pub fn sync_fq(&mut self) {
        let longest = if self.features.fq {
            self.faults
                .iter()
                .filter_map(|e| match e.fault.action {
                    // A delay, a DNS fault that delays answers.
                    a if a.hold().is_some() => a.hold(),
                    // A paced rate fault holds packets up to its queue.
                    Action::Rate(_) if self.features.holds() => Some(
                        std::time::Duration::from_nanos(injector_common::RATE_QUEUE_NS),
                    ),
                    _ => None,
                })
                .max()
        } else {
            None
        };
        let devices: Vec<String> = self
            .ifaces
            .iter()
            .filter(|(_, s)| s.error.is_none() && matches!(s.role, Role::PodVeth | Role::Overlay))
            .map(|(n, _)| n.clone())
            .collect();
        self.fq
            .sync(&mut self.maps, longest, devices, self.fq_max_pps);
    }

    /// Whether a delay fault can work on this node, and if not, why (the API's message).
    pub fn delay_support(&self) -> Result<(), String> {
        if !self.features.edt_stamp {
            Err(format!(
                "this kernel ({}) lacks bpf_skb_set_tstamp (5.18+): delay cannot be stamped; \
                 use loss or blackhole, or a kernel >= 5.18",
                crate::kernel::features::release()
            ))
        } else if self.features.fq {
            Ok(())
        } else {
            Err("the fq qdisc is unavailable on this kernel (not built in, no sch_fq module); \
                 delay holds packets in fq (EDT). Use loss or blackhole here, or a kernel with sch_fq"
                .into())
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
