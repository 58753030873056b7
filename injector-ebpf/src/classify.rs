//! Classification: the rules a packet matches, from four lookups (destination, source, source
//! port, destination port) intersected with the protocol's mask, stopping at the first empty set.
//! An address is looked up in a hash of host addresses (/32, /128) first, then, on a miss and only
//! when the generation has any, in an LPM trie of shorter prefixes. Constant cost in the number of
//! faults and host prefixes (the tries are logarithmic in their size, the sets are two words).

use aya_ebpf::maps::{HashMap, LpmTrie, lpm_trie::Key};
use injector_common::{RuleSet, ctrl, mask};

use crate::{
    maps::{
        DPORT, DST_HOST_V4, DST_HOST_V6, DST_V4, DST_V6, MASKS, SPORT, SRC_HOST_V4, SRC_HOST_V6,
        SRC_V4, SRC_V6,
    },
    parse::{Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

/// The rule set of an address in the active generation: the host map first (full-length
/// prefixes), then, only if `gen_word` has `trie_bit` (the trie holds shorter prefixes), the trie.
#[inline(always)]
fn addr_set<const N: usize>(
    host: &HashMap<[u8; N], RuleSet>,
    trie: &LpmTrie<[u8; N], RuleSet>,
    gen_word: u64,
    trie_bit: u64,
    a: &[u8; 16],
) -> Option<RuleSet> {
    let mut k = [0u8; N];
    k[0] = (gen_word & 1) as u8;
    k[1..].copy_from_slice(&a[..N - 1]);
    // SAFETY: the value is copied out at once; entries are replaced, never written in place.
    if let Some(s) = unsafe { host.get(k) } {
        return Some(*s);
    }
    if gen_word & trie_bit != 0 {
        trie.get(Key::new(8 * N as u32, k)).copied()
    } else {
        None
    }
}

#[inline(always)]
fn port(g: u8, p: u16) -> Key<[u8; 3]> {
    let b = p.to_be_bytes();
    Key::new(24, [g, b[0], b[1]])
}

#[inline(always)]
fn mask_of(g: u8, m: u32) -> RuleSet {
    MASKS
        .get(u32::from(g) * mask::PER_GEN + m)
        .copied()
        .unwrap_or(RuleSet::EMPTY)
}

/// The rules of the active generation (`gen_word`: the GEN control word) that `flow` matches;
/// empty when none.
#[inline(always)]
pub fn candidates(flow: &Flow, gen_word: u64) -> RuleSet {
    let g = (gen_word & 1) as u8;
    // Destination first: faults name their targets, so most packets stop after one lookup.
    let dst = if flow.v6 {
        addr_set(
            &DST_HOST_V6,
            &DST_V6,
            gen_word,
            ctrl::GEN_TRIE_DST_V6,
            &flow.dst,
        )
    } else {
        addr_set(
            &DST_HOST_V4,
            &DST_V4,
            gen_word,
            ctrl::GEN_TRIE_DST_V4,
            &flow.dst,
        )
    };
    let Some(dst) = dst.filter(|d| !d.is_empty()) else {
        return RuleSet::EMPTY;
    };
    let src = if flow.v6 {
        addr_set(
            &SRC_HOST_V6,
            &SRC_V6,
            gen_word,
            ctrl::GEN_TRIE_SRC_V6,
            &flow.src,
        )
    } else {
        addr_set(
            &SRC_HOST_V4,
            &SRC_V4,
            gen_word,
            ctrl::GEN_TRIE_SRC_V4,
            &flow.src,
        )
    };
    let Some(src) = src else {
        return RuleSet::EMPTY;
    };
    let mut set = src.and(dst);
    if set.is_empty() {
        return set;
    }
    let class = match flow.proto {
        IPPROTO_TCP => mask::TCP,
        IPPROTO_UDP => mask::UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => mask::ICMP,
        _ => mask::OTHER,
    };
    set = set.and(mask_of(g, class));
    if set.is_empty() {
        return set;
    }
    if !flow.has_ports {
        return set.and(mask_of(g, mask::NO_PORTS));
    }
    match (
        SPORT.get(port(g, flow.sport)),
        DPORT.get(port(g, flow.dport)),
    ) {
        (Some(s), Some(d)) => set.and(*s).and(*d),
        _ => RuleSet::EMPTY,
    }
}
