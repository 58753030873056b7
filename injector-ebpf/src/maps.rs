//! The maps the programs read (faults) and write (counters). Pinned by name under the daemon's
//! bpffs directory, so a restarted daemon adopts the faults already in the kernel.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, PerCpuArray},
};
use injector_common::{HookStats, MAX_PREFIXES, Target};

#[map(name = "DST_V4")]
pub static DST_V4: LpmTrie<[u8; 4], Target> = LpmTrie::pinned(MAX_PREFIXES, 0);

#[map(name = "DST_V6")]
pub static DST_V6: LpmTrie<[u8; 16], Target> = LpmTrie::pinned(MAX_PREFIXES, 0);

#[map(name = "STATS")]
pub static STATS: PerCpuArray<HookStats> = PerCpuArray::pinned(injector_common::Hook::COUNT, 0);
