//! The maps the programs read (faults) and write (counters). Pinned by name under the daemon's
//! bpffs directory, so a restarted daemon adopts the faults already in the kernel. Layouts are
//! described in injector-common.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use injector_common::{
    FaultCfg, FaultCounters, Hook, HookStats, JudgeHook, MAX_FAULTS, MAX_PREFIXES, MAX_RULES,
    MAX_XDP_IFACES, Rule, RuleSet, SPEC_KEYS, SPEC_PART, SpecKey, ctrl, hosts, mask,
};

#[map(name = "SRC_V4")]
pub static SRC_V4: LpmTrie<[u8; 5], RuleSet> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "DST_V4")]
pub static DST_V4: LpmTrie<[u8; 5], RuleSet> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "SRC_V6")]
pub static SRC_V6: LpmTrie<[u8; 17], RuleSet> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "DST_V6")]
pub static DST_V6: LpmTrie<[u8; 17], RuleSet> = LpmTrie::pinned(MAX_PREFIXES, 0);
/// A host map: one value per generation, `hosts::SEGMENT` entries (the header, then the hosts).
pub type HostMap<E> = Array<[E; hosts::SEGMENT as usize]>;

// Host prefixes: sorted per generation (one value each), written by the daemon through a mapping
// (see injector_common::hosts for why not a hash).
#[map(name = "SRC_HOST_V4")]
pub static SRC_HOST_V4: HostMap<hosts::V4> = Array::pinned(2, BPF_F_MMAPABLE);
#[map(name = "DST_HOST_V4")]
pub static DST_HOST_V4: HostMap<hosts::V4> = Array::pinned(2, BPF_F_MMAPABLE);
#[map(name = "SRC_HOST_V6")]
pub static SRC_HOST_V6: HostMap<hosts::V6> = Array::pinned(2, BPF_F_MMAPABLE);
#[map(name = "DST_HOST_V6")]
pub static DST_HOST_V6: HostMap<hosts::V6> = Array::pinned(2, BPF_F_MMAPABLE);
/// A classification's scratch (see classify.rs): the address searched and the position in the
/// host search, and the trie keys `destination_misses` builds in map memory rather than on the
/// judging frame.
pub struct HostSearch {
    pub addr: [u8; 16],
    pub pos: u32,
    /// `destination_misses`'s trie keys.
    pub key4: Key<[u8; 5]>,
    pub key6: Key<[u8; 17]>,
    /// The destinations this CPU found in no rule lately, direct-mapped by a hash of the
    /// address (`classify::destination_misses`).
    pub misses: [Miss; MISSES],
}

/// Entries of [`HostSearch::misses`]: a power of two.
pub const MISSES: usize = 64;

/// A destination found in no rule: the address's two words as `destination_misses` reads them
/// (IPv4: the address and 0) and the GEN word it was found under (inverted for IPv6, so that
/// an IPv4 address and an IPv6 one of the same words never share an entry). Zeroed at load:
/// no GEN word the search runs under is 0 (it has `ctrl::GEN_ANY`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Miss {
    pub tag: u64,
    pub a: u64,
    pub b: u64,
}

/// This CPU's host search; not pinned.
#[map]
pub static HOST_SEARCH: PerCpuArray<HostSearch> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "HOST_SETS")]
pub static HOST_SETS: Array<RuleSet> = Array::pinned(2 * hosts::SETS_PER_GEN, BPF_F_MMAPABLE);
#[map(name = "XDP_IFACES")]
pub static XDP_IFACES: HashMap<u32, u32> = HashMap::pinned(MAX_XDP_IFACES, BPF_F_NO_PREALLOC);
#[map(name = "SPORT")]
pub static SPORT: LpmTrie<[u8; 3], RuleSet> = LpmTrie::pinned(MAX_PREFIXES, 0);
#[map(name = "DPORT")]
pub static DPORT: LpmTrie<[u8; 3], RuleSet> = LpmTrie::pinned(MAX_PREFIXES, 0);

#[map(name = "MASKS")]
pub static MASKS: Array<RuleSet> = Array::pinned(2 * mask::PER_GEN, 0);
#[map(name = "RULES")]
pub static RULES: Array<Rule> = Array::pinned(2 * MAX_RULES, 0);
#[map(name = "FAULTS")]
pub static FAULTS: Array<FaultCfg> = Array::pinned(2 * MAX_FAULTS, 0);
#[map(name = "CTRL")]
pub static CTRL: Array<u64> = Array::pinned(ctrl::COUNT, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<FaultCounters> =
    PerCpuArray::pinned(MAX_FAULTS * JudgeHook::COUNT, 0);
#[map(name = "STATS")]
pub static STATS: PerCpuArray<HookStats> = PerCpuArray::pinned(Hook::COUNT, 0);

/// Userspace only (the daemon's records, in parts, for adoption after a restart).
#[map(name = "SPECS")]
pub static SPECS: HashMap<SpecKey, [u8; SPEC_PART]> = HashMap::pinned(SPEC_KEYS, BPF_F_NO_PREALLOC);
