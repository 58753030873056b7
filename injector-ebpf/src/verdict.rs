//! The packet path, the same for every hook: parse once -> classify once -> act -> count.
//! Hooks differ only in the [`Hook`] they pass in; the return value says "drop" or "pass".

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use injector_common::{Hook, HookStats, Target};

use crate::{
    maps::{DST_V4, DST_V6, STATS},
    parse::{Bytes, Dst, destination},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

#[inline(always)]
fn lookup(dst: Dst) -> Option<Target> {
    match dst {
        Dst::V4(a) => DST_V4.get(Key::new(32, a)).copied(),
        Dst::V6(a) => DST_V6.get(Key::new(128, a)).copied(),
    }
}

#[inline(always)]
pub fn judge<B: Bytes>(pkt: &B, len: u32, hook: Hook) -> Verdict {
    let stats: Option<&mut HookStats> = STATS
        .get_ptr_mut(hook as u32)
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        .map(|p| unsafe { &mut *p });
    let Some(stats) = stats else {
        return Verdict::Pass;
    };
    stats.seen_packets += 1;

    let Some(dst) = destination(pkt) else {
        stats.unparsed_packets += 1;
        return Verdict::Pass;
    };
    let Some(target) = lookup(dst) else {
        return Verdict::Pass;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now >= target.deadline_ns {
        stats.expired_packets += 1;
        return Verdict::Pass;
    }
    stats.matched_packets += 1;
    stats.matched_bytes += u64::from(len);
    stats.dropped_packets += 1;
    stats.dropped_bytes += u64::from(len);
    Verdict::Drop
}
