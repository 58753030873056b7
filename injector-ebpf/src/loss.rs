//! Whether a fault loses a packet: independent loss (a threshold), or the Gilbert-Elliott model
//! (`flag::GE`) whose state lives per fault per CPU in `GE_STATE`, out of the verifier's state.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use injector_common::{FaultCfg, GeState, MAX_FAULTS, flag};

use crate::verdict::rand;

/// Slot -> this CPU's Gilbert-Elliott state of the fault in it. Not pinned: a restarted daemon's
/// programs begin every chain in the good state.
#[map]
static GE_STATE: PerCpuArray<GeState> = PerCpuArray::with_max_entries(MAX_FAULTS, 0);

/// Whether the fault in `slot` (configured as `cfg`) loses this packet.
#[inline(always)]
pub fn lost(cfg: &FaultCfg, slot: u32) -> bool {
    if cfg.flags & flag::GE == 0 {
        return u64::from(rand()) < cfg.threshold;
    }
    let Some(st) = GE_STATE.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: this CPU's slot; volatile, so the state stays in the map (see verdict::STASH).
    unsafe {
        let start = core::ptr::addr_of_mut!((*st).start_ns);
        let bad = core::ptr::addr_of_mut!((*st).bad);
        // A new fault in the slot begins in the good state.
        let was_bad =
            core::ptr::read_volatile(start) == cfg.start_ns && core::ptr::read_volatile(bad) != 0;
        let (lost, now_bad) = cfg.ge.step(was_bad, rand(), rand());
        core::ptr::write_volatile(start, cfg.start_ns);
        core::ptr::write_volatile(bad, u64::from(now_bad));
        lost
    }
}
