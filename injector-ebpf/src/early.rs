//! The early stage's hand-over from a pod's host veth TC ingress (`tc_veth_ingress`, which judges
//! drops where the pod's packets enter the node) to the egress hook the same packet reaches next
//! (`ctrl::EARLY_TC`).
//!
//! The egress hook must not judge those drops again, unless the packet changed on the way: the
//! host's NAT (kube-proxy) turns a packet to a Service VIP into one to a pod, and a fault on that
//! pod must judge it. So the ingress hook records the packet's addresses, protocol and ports,
//! per CPU, and the egress hook compares: the same, it judges only the egress stage; changed (or
//! not recorded), every stage, on what the packet carries now.
//!
//! A packet goes from the ingress hook to the egress hook in one call chain on one CPU: the
//! bridge forwards it, or the host's IP stack routes it to flannel.1, before the softirq takes
//! the next packet. The record the egress hook reads is therefore its own packet's. Where that
//! does not hold (RPS steering the bridge's packets to another CPU, a netfilter queue), the
//! record is another packet's: a changed packet may then be taken as unchanged (its drops not
//! judged again), or the reverse (judged twice).
//!
//! Read with plain loads from the linear data (`bpf_skb_load_bytes` where the headers lie outside
//! it) into map memory, outside the judging path (a function of its own): that path has no stack
//! to spare, and the verifier walks it once per stage set, as with XDP. Untagged IPv4 and IPv6
//! are identified (ports of TCP and UDP: the first header after the IPv6 header, an IPv4 packet
//! that is not a later fragment); anything else (a VLAN-tagged frame, say) has no identity and
//! has its drops judged at egress again.

use aya_ebpf::{
    cty::c_void, helpers::bpf_skb_load_bytes, macros::map, maps::PerCpuArray, programs::TcContext,
};
use network_types::eth::EthHdr;

// EtherTypes as they sit in the packet, and the protocols with ports.
use crate::parse::{ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::verdict::ctrl_word;
use injector_common::ctrl;

/// Words of an identity: addresses (IPv4 in the first word; IPv6 in four), then protocol and
/// ports, then a marker that the identity is valid and of which family ([`V4`], [`V6`]).
const WORDS: usize = 6;
/// The last word of an IPv4 identity.
pub const V4: u64 = 1;
/// The last word of an IPv6 identity.
pub const V6: u64 = 2;

#[inline(always)]
fn family(v6: bool) -> u64 {
    if v6 { V6 } else { V4 }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    recorded: [u64; WORDS],
    now: [u64; WORDS],
    /// Non-zero: the recorded packet's drops were judged at its ingress (by `tc_veth_ingress`,
    /// or by XDP before it on an interface of `XDP_IFACES`); written by [`mark`].
    judged: u64,
    /// The GEN word under which the recorded packet's destination was found in no rule
    /// (`classify::destination_misses`); 0: not found so, or not asked. Written by [`mark`].
    miss: u64,
    /// The interface the recorded packet entered through (its veth).
    ifindex: u64,
}

#[map]
static EARLY_RECORD: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);

/// Ethernet header length: the IP header of an untagged frame starts here.
const L3: u32 = EthHdr::LEN as u32;

/// What to do with the record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Record,
    Compare,
    /// Only identify the packet (for [`identity`]); true when it has an identity.
    Identify,
}

/// The identity the last [`step`] on this CPU wrote (this packet's, when called after one in
/// the same program run): its words, in map memory, and whether it is IPv6; `None` when the
/// packet has none. Addresses as they sit in the packet: IPv4 source and destination in the
/// first word's bytes 0-3 and 4-7, IPv6 source in words 0-1, destination in words 2-3.
#[inline(always)]
pub fn identity() -> Option<(*const u64, bool)> {
    let r = EARLY_RECORD.get_ptr(0)?;
    // SAFETY: this CPU's slot; a field pointer within it.
    let now = unsafe { core::ptr::addr_of!((*r).now) as *const u64 };
    // SAFETY: word WORDS - 1 of `now`, in map memory.
    match unsafe { core::ptr::read_volatile(now.add(WORDS - 1)) } {
        V4 => Some((now, false)),
        V6 => Some((now, true)),
        _ => None,
    }
}

/// Loads `len` packet bytes at `off` into map memory at `dst`.
#[inline(always)]
fn load(ctx: &TcContext, off: u32, dst: *mut u64, len: u32) -> bool {
    // SAFETY: `dst` points into this CPU's EARLY_RECORD slot with at least `len` bytes left.
    unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const c_void, off, dst as *mut c_void, len) == 0 }
}

/// Writes the packet's identity into `now` read from the linear data (plain loads: what nearly
/// every packet takes); `None` when its headers reach past the linear data.
#[inline(always)]
fn identify_linear(ctx: &TcContext, now: *mut u64) -> Option<bool> {
    let (data, end) = (ctx.data(), ctx.data_end());
    // Ethernet and an IPv4 header without options; longer headers are checked where read.
    if data + 34 > end {
        return None;
    }
    let at = |off: usize| data as *const u8 as usize + off;
    // SAFETY: every read below is within [data, end): checked above for offsets < 34, and
    // against `end` before the others.
    unsafe {
        let byte = |off: usize| core::ptr::read_unaligned(at(off) as *const u8);
        let ethertype = core::ptr::read_unaligned(at(12) as *const u16);
        let (proto, ports) = match ethertype {
            ETH_P_IP => {
                let proto = byte(L3 as usize + 9);
                let frag =
                    u16::from_be(core::ptr::read_unaligned(at(L3 as usize + 6) as *const u16));
                let l4 = L3 as usize + usize::from(byte(L3 as usize) & 0xf) * 4;
                core::ptr::write_volatile(
                    now,
                    core::ptr::read_unaligned(at(L3 as usize + 12) as *const u64),
                );
                let ports = if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && frag & 0x1fff == 0
                {
                    if data + l4 + 4 > end {
                        return None;
                    }
                    u64::from(core::ptr::read_unaligned((data + l4) as *const u32))
                } else {
                    0
                };
                (proto, ports)
            }
            ETH_P_IPV6 => {
                if data + 58 > end {
                    return None;
                }
                let proto = byte(L3 as usize + 6);
                for i in 0..4 {
                    core::ptr::write_volatile(
                        now.add(i),
                        core::ptr::read_unaligned(at(L3 as usize + 8 + 8 * i) as *const u64),
                    );
                }
                let ports = if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
                    u64::from(core::ptr::read_unaligned(at(L3 as usize + 40) as *const u32))
                } else {
                    0
                };
                (proto, ports)
            }
            _ => return Some(false),
        };
        core::ptr::write_volatile(now.add(4), (u64::from(proto) << 32) | ports);
        core::ptr::write_volatile(now.add(5), family(ethertype == ETH_P_IPV6));
    }
    Some(true)
}

/// Writes the packet's identity into `now`; false when it has none (see the module). From the
/// linear data where the headers are there, else through `bpf_skb_load_bytes`; both write the
/// same words.
#[inline(always)]
fn identify(ctx: &TcContext, now: *mut u64) -> bool {
    // SAFETY: `now` is WORDS words of map memory (`Record::now`).
    unsafe {
        for i in 0..WORDS {
            core::ptr::write_volatile(now.add(i), 0);
        }
    }
    if let Some(known) = identify_linear(ctx, now) {
        return known;
    }
    // SAFETY: as above.
    unsafe {
        for i in 0..WORDS {
            core::ptr::write_volatile(now.add(i), 0);
        }
    }
    identify_loaded(ctx, now)
}

/// [`identify`] through `bpf_skb_load_bytes` (headers outside the linear data).
#[inline(always)]
fn identify_loaded(ctx: &TcContext, now: *mut u64) -> bool {
    let Ok(ethertype) = ctx.load::<u16>(12) else {
        return false;
    };

    let (proto, l4) = match ethertype {
        ETH_P_IP => {
            let (Ok(vihl), Ok(frag), Ok(proto)) = (
                ctx.load::<u8>(L3 as usize),
                ctx.load::<u16>(L3 as usize + 6).map(u16::from_be),
                ctx.load::<u8>(L3 as usize + 9),
            ) else {
                return false;
            };
            // Source and destination: 8 bytes at 12.
            if !load(ctx, L3 + 12, now, 8) {
                return false;
            }
            let later_fragment = frag & 0x1fff != 0;
            (
                proto,
                (!later_fragment).then_some(L3 + u32::from(vihl & 0xf) * 4),
            )
        }
        ETH_P_IPV6 => {
            let Ok(next) = ctx.load::<u8>(L3 as usize + 6) else {
                return false;
            };
            // Source and destination: 32 bytes at 8.
            if !load(ctx, L3 + 8, now, 32) {
                return false;
            }
            (next, Some(L3 + 40))
        }
        _ => return false,
    };
    let ports = match l4 {
        Some(at) if proto == IPPROTO_TCP || proto == IPPROTO_UDP => {
            let Ok(p) = ctx.load::<u32>(at as usize) else {
                return false;
            };
            u64::from(p)
        }
        _ => 0,
    };
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(now.add(4), (u64::from(proto) << 32) | ports);
        core::ptr::write_volatile(now.add(5), family(ethertype == ETH_P_IPV6));
    }
    true
}

/// Records the packet (`Step::Record`: the ingress hook; what [`mark`] said of the previous
/// record is cleared), compares it with the record (`Step::Compare`: the egress hook; true when
/// it is the recorded packet, unchanged, and its drops were judged at ingress: [`mark`]), or
/// only identifies it (`Step::Identify`, see [`identity`]).
#[inline(never)]
pub fn step(ctx: &TcContext, what: Step) -> bool {
    let Some(r) = EARLY_RECORD.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; field pointers within it.
    let (recorded, now) = unsafe {
        (
            core::ptr::addr_of_mut!((*r).recorded) as *mut u64,
            core::ptr::addr_of_mut!((*r).now) as *mut u64,
        )
    };
    // Without an identity `now` is all zero: recorded so, it matches nothing (a valid identity's
    // last word is V4 or V6).
    let known = identify(ctx, now);
    if what == Step::Identify {
        return known;
    }
    // SAFETY: fields of this CPU's slot, and of the context.
    let (judged, miss, ifindex, skb) = unsafe {
        (
            core::ptr::addr_of_mut!((*r).judged),
            core::ptr::addr_of_mut!((*r).miss),
            core::ptr::addr_of_mut!((*r).ifindex),
            ctx.skb.skb,
        )
    };
    let mut diff = 0;
    // SAFETY: as above.
    unsafe {
        if what == Step::Record {
            core::ptr::write_volatile(judged, 0);
            core::ptr::write_volatile(miss, 0);
            core::ptr::write_volatile(ifindex, u64::from((*skb).ifindex));
        } else {
            // The record is this packet's only if its ingress judged it, and it came from there:
            // from the veth that recorded it (bridged to a pod) or the bridge (routed), not from
            // an uplink or the node itself, whose packets no ingress of ours recorded.
            let iif = u64::from((*skb).ingress_ifindex);
            let from_there = iif != 0
                && (iif == core::ptr::read_volatile(ifindex)
                    || iif == ctrl_word(ctrl::BRIDGE_IFINDEX));
            diff = u64::from(core::ptr::read_volatile(judged) == 0 || !from_there);
        }
    }
    for i in 0..WORDS {
        // SAFETY: word `i` of both, in map memory.
        unsafe {
            let v = core::ptr::read_volatile(now.add(i));
            if what == Step::Record {
                core::ptr::write_volatile(recorded.add(i), v);
            } else {
                diff |= v ^ core::ptr::read_volatile(recorded.add(i));
            }
        }
    }
    what == Step::Compare && known && diff == 0
}

/// What the ingress hook found of the packet it just recorded ([`step`] with `Step::Record`):
/// whether its drops were judged there (`judged`), and the GEN word under which its
/// destination is in no rule (`miss`; 0: it is in some, or was not asked). The egress hook
/// reached next learns both from the record, without a lookup of its own: the interface the
/// packet entered through (a hash lookup in `XDP_IFACES` for every packet, before) and its
/// destination (the host search, see [`missed`]).
#[inline(always)]
pub fn mark(judged: bool, miss: u64) {
    let Some(r) = EARLY_RECORD.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: fields of this CPU's slot.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).judged), u64::from(judged));
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).miss), miss);
    }
}

/// True when the ingress hook found the recorded packet's destination in no rule under
/// `gen_word` ([`mark`]); for a packet [`step`] with `Step::Compare` found unchanged since. The
/// GEN word differs after every change (its change count, `ctrl::GEN_SEQ_SHIFT`), so a change
/// between the two hooks makes the egress hook look for itself. (A record is overwritten by the
/// next packet's at that CPU's ingress: the egress hook reads its own packet's, see the
/// module.)
#[inline(always)]
pub fn missed(gen_word: u64) -> bool {
    EARLY_RECORD.get_ptr(0).is_some_and(|r| {
        // SAFETY: a field of this CPU's slot.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*r).miss)) == gen_word }
    })
}
