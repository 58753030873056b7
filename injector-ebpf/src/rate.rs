//! Bandwidth (`Action::Rate`): GCRA over one schedule per fault shared by every CPU, so the
//! fault's matched traffic in aggregate keeps its rate. Paced (the packet is stamped with the time
//! it conforms and fq holds it: Cilium's bandwidth manager does this per pod) where the node has
//! fq, policed (dropped when it does not conform) where it has not: `ctrl::RATE_PACE`.
//!
//! The schedule is read and written without a lock, as Cilium's EDT code does: two CPUs judging
//! one fault at the same instant can both read the same schedule, and one packet's cost is then
//! not charged. Atomic compare-and-exchange would close that, but needs 5.12 (bullseye's 5.10 has
//! only the add without fetch); the error is one packet per such collision, not a drift.

use aya_ebpf::{macros::map, maps::Array};
use injector_common::{FaultCfg, MAX_FAULTS, RateState};

use crate::parse::{Bytes, IPPROTO_TCP, IPPROTO_UDP, Layout};

/// Slot -> the schedule of the rate fault in it. Not pinned: a restarted daemon's programs start
/// every rate fault with a full bucket.
#[map]
static RATE_STATE: Array<RateState> = Array::with_max_entries(MAX_FAULTS, 0);

/// The IP bytes the packet puts on the wire: from its IP header to its end, plus the headers
/// of the segments a GSO packet becomes (`gso_segs` of them; the headers are the IP and L4
/// header lengths of this one), as tc counts a GSO packet's size (`qdisc_pkt_len_init`).
#[inline(always)]
pub fn ip_bytes<B: Bytes>(pkt: &B, at: &Layout, len: u32) -> u64 {
    let l3 = u64::from(at.l3_off);
    let bytes = u64::from(len).saturating_sub(l3);
    let segs = u64::from(pkt.gso_segs());
    if segs <= 1 || at.l4_off == 0 {
        return bytes;
    }
    let l4 = match at.proto {
        IPPROTO_TCP => pkt
            .read::<u8>(usize::from(at.l4_off) + 12)
            .map_or(20, |d| u64::from(d >> 4) * 4),
        IPPROTO_UDP => 8,
        _ => 0,
    };
    let hdr = u64::from(at.l4_off).saturating_sub(l3) + l4;
    bytes + (segs - 1) * hdr
}

/// Whether the rate fault in `slot` lets a packet of `bytes` pass at `now`: `Some(wait)` (ns it
/// must be held; 0 when policing or when it conforms at once) or `None` (dropped).
#[inline(always)]
pub fn admit(cfg: &FaultCfg, slot: u32, now: u64, bytes: u64, pace: bool) -> Option<u64> {
    if cfg.rate == 0 {
        return Some(0);
    }
    // Without its schedule the fault lets the packet pass (fail open).
    let Some(st) = RATE_STATE.get_ptr_mut(slot) else {
        return Some(0);
    };
    // No overflow: 2^33 bytes x 10^9 < 2^64 (saturating_mul would need 128-bit multiplication,
    // which BPF lacks); no packet comes near 2^33 bytes.
    let cost = bytes.min(1 << 33) * 1_000_000_000 / cfg.rate;
    // SAFETY: the fault's entry; volatile, so the schedule stays in the map (see
    // verdict::STASH) and each CPU reads the latest one written.
    unsafe {
        let mut s = core::ptr::read_volatile(st);
        let r = s.admit(cfg.start_ns, now, cost, cfg.rate_burst_ns, pace);
        if r.is_some() {
            core::ptr::write_volatile(st, s);
        }
        r
    }
}
