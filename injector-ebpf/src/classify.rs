//! Classification: the rules a packet matches, from four LPM lookups (source, destination, source
//! port, destination port) intersected with the protocol's mask. Constant cost in the number of
//! faults and prefixes (the tries are logarithmic in their size, the sets are two words).

use aya_ebpf::maps::lpm_trie::Key;
use injector_common::{RuleSet, mask};

use crate::{
    maps::{DPORT, DST_V4, DST_V6, MASKS, SPORT, SRC_V4, SRC_V6},
    parse::{Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

#[inline(always)]
fn addr_v4(g: u8, a: &[u8; 16]) -> Key<[u8; 5]> {
    Key::new(40, [g, a[0], a[1], a[2], a[3]])
}

#[inline(always)]
fn addr_v6(g: u8, a: &[u8; 16]) -> Key<[u8; 17]> {
    let mut k = [0u8; 17];
    k[0] = g;
    k[1..].copy_from_slice(a);
    Key::new(136, k)
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

/// The rules of generation `g` that `flow` matches; empty when none.
#[inline(always)]
pub fn candidates(flow: &Flow, g: u8) -> RuleSet {
    // Destination first: faults name their targets, so most packets stop after one lookup.
    let dst = if flow.v6 {
        DST_V6.get(addr_v6(g, &flow.dst))
    } else {
        DST_V4.get(addr_v4(g, &flow.dst))
    };
    let Some(dst) = dst.filter(|d| !d.is_empty()) else {
        return RuleSet::EMPTY;
    };
    let src = if flow.v6 {
        SRC_V6.get(addr_v6(g, &flow.src))
    } else {
        SRC_V4.get(addr_v4(g, &flow.src))
    };
    let Some(src) = src else {
        return RuleSet::EMPTY;
    };
    let mut set = src.and(*dst);
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
