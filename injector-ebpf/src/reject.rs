//! Reject: the packet is rewritten into the answer its sender would get if the destination
//! refused it (a TCP reset, an ICMP/ICMPv6 destination unreachable) and goes back in through
//! the device it was judged at, so the kernel delivers it the way a real answer travels.
//!
//! Built in place: addresses and MACs swapped, a fresh TTL/hop limit (64), checksums computed
//! here. The reply enters the judging device's ingress (`bpf_redirect(ifindex, BPF_F_INGRESS)`):
//! on a pod's veth it is as if that pod answered (the bridge takes it to the sender); on
//! flannel.1 as if the other node sent it back (routed to the sender, and not judged again there,
//! like any packet from another node). Headers are assembled in a per-CPU scratch map: the
//! judging path leaves little of the 512-byte stack.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    cty::c_void,
    helpers::{
        bpf_csum_diff, bpf_l4_csum_replace, bpf_redirect, bpf_skb_change_head, bpf_skb_change_tail,
        bpf_skb_load_bytes, bpf_skb_store_bytes,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use injector_common::Reply;
use network_types::{
    eth::EthHdr,
    icmp::{Icmpv4Hdr, Icmpv6Hdr},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

use crate::{
    csum::{self, Sum},
    parse::{Bytes, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, Layout},
};

/// `BPF_F_INGRESS`: redirect into the device's receive path.
const F_INGRESS: u64 = 1;
/// `BPF_F_RECOMPUTE_CSUM`: keep `skb->csum` of a CHECKSUM_COMPLETE skb in step with the bytes.
const F_RECOMPUTE_CSUM: u64 = 1;
/// `bpf_l4_csum_replace`'s field size bits: a 16-bit field.
const CSUM_FIELD_16: u64 = 2;
const TTL: u8 = 64;
/// ICMP destination unreachable (type 3), ICMPv6 destination unreachable (type 1).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
/// Bytes of the L4 header quoted after the IP header(s): 8 (RFC 792); for TCP its whole 20-byte
/// header (a local sender's packet leaves its TCP checksum to the device, and the kernel refuses
/// to cut a packet through the field still to be filled).
const QUOTE_L4: usize = 8;
const QUOTE_L4_TCP: usize = TcpHdr::LEN;
/// Most bytes quoted: IPv4's largest header with a TCP header is 80; IPv6 extension headers
/// beyond this are cut (RFC 4443 asks for as much as fits in 1280 bytes; this is within it).
const QUOTE_MAX: usize = 256;
/// IPv4 "don't fragment", as the flags of `Ipv4Hdr::set_frags`.
const DF: u8 = 0b010;

/// The reply's headers while they are built, and the quote (for its checksum).
#[repr(C)]
struct Scratch {
    eth: EthHdr,
    /// What follows the first VLAN tag's TPID (the rest of up to two tags, rare on these
    /// devices), 4 bytes each.
    tags: [[u8; 4]; 2],
    ip4: Ipv4Hdr,
    ip6: Ipv6Hdr,
    tcp: TcpHdr,
    icmp4: Icmpv4Hdr,
    icmp6: Icmpv6Hdr,
    quote: [u8; QUOTE_MAX],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What a reject fault does with a packet it selected.
pub enum Plan {
    /// Let it through: a TCP reset or an ICMP error is never answered (RFC 9293 3.10.7.1,
    /// RFC 1122 3.2.2, RFC 4443 2.4(e)), which also keeps our own replies from being answered.
    Pass,
    /// Drop it without a reply: a non-first fragment (no L4 header to answer, RFC 1812
    /// 4.3.2.7), a multicast or broadcast destination, an IPv6 TCP segment with extension
    /// headers (the reset is built in place over them).
    Silent,
    Answer(Reply),
}

/// `flow`: the packet's stashed layout (see `verdict::STASH`), `dst` its destination.
#[inline(always)]
pub fn plan<B: Bytes>(pkt: &B, flow: &Layout, dst: &[u8; 16], reply: Reply) -> Plan {
    let l4 = usize::from(flow.l4_off);
    if l4 == 0 {
        return Plan::Silent;
    }
    let is_error = match flow.proto {
        // Byte 13: the flags; RST is bit 2.
        IPPROTO_TCP => pkt.read::<u8>(l4 + 13).is_none_or(|f| f & 0x04 != 0),
        // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
        IPPROTO_ICMP if !flow.v6 => pkt
            .read::<u8>(l4)
            .is_none_or(|t| matches!(t, 3 | 4 | 5 | 11 | 12)),
        // ICMPv6 errors are types 0-127.
        IPPROTO_ICMPV6 if flow.v6 => pkt.read::<u8>(l4).is_none_or(|t| t < 128),
        _ => false,
    };
    if is_error {
        return Plan::Pass;
    }
    let multicast = if flow.v6 {
        dst[0] == 0xff
    } else {
        dst[0] >= 224 || dst[..4] == [255; 4]
    };
    let r = reply.for_proto(flow.proto);
    if multicast
        || (r == Reply::TcpReset && flow.v6 && l4 != usize::from(flow.l3_off) + Ipv6Hdr::LEN)
    {
        return Plan::Silent;
    }
    Plan::Answer(r)
}

/// Rewrites the packet into `reply` and sends it back in through this device. A reply that
/// cannot be built (a helper failed) leaves the packet dropped.
#[inline(always)]
pub fn answer(ctx: &TcContext, at: &Layout, reply: Reply) -> i32 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: this CPU's scratch; nothing else runs on this CPU while the program does.
    let s = unsafe { &mut *s };
    let built = match reply {
        Reply::TcpReset | Reply::Auto => reset(ctx, at, s),
        _ => unreachable_reply(ctx, at, reply, s),
    };
    if built.is_none() {
        return TC_ACT_SHOT;
    }
    // SAFETY: reading a context field, calling a helper with plain arguments.
    unsafe { bpf_redirect((*ctx.skb.skb).ifindex, F_INGRESS) as i32 }
}

/// Reads `size_of::<T>()` bytes at `off` into `dst` (scratch memory, not the stack).
#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize, dst: &mut T) -> Option<()> {
    // SAFETY: `dst` is valid for `size_of::<T>()` bytes.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            off as u32,
            dst as *mut T as *mut c_void,
            size_of::<T>() as u32,
        )
    };
    (r == 0).then_some(())
}

/// Writes `src` at `off`.
#[inline(always)]
fn store<T>(ctx: &TcContext, off: usize, src: &T) -> Option<()> {
    // SAFETY: `src` is valid for `size_of::<T>()` bytes; a helper on our own skb.
    let r = unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            off as u32,
            src as *const T as *const c_void,
            size_of::<T>() as u32,
            F_RECOMPUTE_CSUM,
        )
    };
    (r == 0).then_some(())
}

/// Reads the Ethernet header (MACs swapped: the reply goes back where the packet came from),
/// and the IP header into `s.ip4`/`s.ip6`. Returns the IP length (IPv4 total length, IPv6 40 +
/// payload length; 0 for BIG TCP), at most what the skb holds from the IP header on.
#[inline(always)]
fn read_headers(ctx: &TcContext, at: &Layout, s: &mut Scratch) -> Option<usize> {
    let l3 = usize::from(at.l3_off);
    load(ctx, 0, &mut s.eth)?;
    core::mem::swap(&mut s.eth.src_addr, &mut s.eth.dst_addr);
    let field = if at.v6 {
        load(ctx, l3, &mut s.ip6)?;
        let p = usize::from(s.ip6.payload_len());
        if p == 0 { 0 } else { Ipv6Hdr::LEN + p }
    } else {
        load(ctx, l3, &mut s.ip4)?;
        usize::from(s.ip4.tot_len())
    };
    let held = (ctx.len() as usize).saturating_sub(l3);
    Some(if field != 0 { field.min(held) } else { held })
}

/// Turns the IP header in scratch into the reply's: source and destination swapped, a fresh
/// header for `payload` bytes of `proto`, `hdr_len` bytes long (IPv4 may keep its options'
/// length, blanked by the caller), `flags` its IPv4 fragment flags. Returns the L4 checksum's
/// pseudo-header sum.
#[inline(always)]
fn reply_ip(
    at: &Layout,
    s: &mut Scratch,
    proto: u8,
    hdr_len: usize,
    payload: usize,
    flags: u8,
) -> Sum {
    if at.v6 {
        let h = &mut s.ip6;
        core::mem::swap(&mut h.src_addr, &mut h.dst_addr);
        h.set_vcf(6, 0, 0, 0);
        h.set_payload_len(payload as u16);
        h.next_hdr = proto;
        h.hop_limit = TTL;
        csum::pseudo6(&h.src_addr, &h.dst_addr, payload as u32, proto)
    } else {
        let h = &mut s.ip4;
        core::mem::swap(&mut h.src_addr, &mut h.dst_addr);
        h.set_vihl(4, hdr_len as u8);
        h.tos = 0;
        h.set_tot_len((hdr_len + payload) as u16);
        h.set_id(0);
        h.set_frags(flags, 0);
        h.ttl = TTL;
        h.proto = proto;
        h.check = [0; 2];
        h.check = (!csum::fold(csum::of(&*h))).to_be_bytes();
        csum::pseudo4(&h.src_addr, &h.dst_addr, payload as u16, proto)
    }
}

/// Writes the reply's IP header at `l3`.
#[inline(always)]
fn store_ip(ctx: &TcContext, at: &Layout, s: &Scratch, l3: usize) -> Option<()> {
    if at.v6 {
        store(ctx, l3, &s.ip6)
    } else {
        store(ctx, l3, &s.ip4)
    }
}

/// A TCP reset, RFC 9293 3.10.7.1: to a segment with ACK, `seq = SEG.ACK`; otherwise
/// `seq = 0` and `RST|ACK` with `ack = SEG.SEQ + SEG.LEN` (payload, +1 for SYN, +1 for FIN).
/// Built over the segment: an IPv4 header keeps its length (options blanked: 0 is "end of
/// options"), the TCP header (20 bytes, no options) stays where it was, the rest is cut.
#[inline(always)]
fn reset(ctx: &TcContext, at: &Layout, s: &mut Scratch) -> Option<()> {
    let (l3, l4) = (usize::from(at.l3_off), usize::from(at.l4_off));
    let ip_end = l3 + read_headers(ctx, at, s)?;
    load(ctx, l4, &mut s.tcp)?;
    let th = &mut s.tcp;
    let payload = ip_end.saturating_sub(l4 + usize::from(th.doff()) * 4) as u32;
    let seg_len = payload + u32::from(th.syn()) + u32::from(th.fin());
    let (seq, ack, with_ack) = if th.ack() != 0 {
        (u32::from_be_bytes(th.ack_seq), 0, 0)
    } else {
        (0, u32::from_be_bytes(th.seq).wrapping_add(seg_len), 1)
    };
    core::mem::swap(&mut th.source, &mut th.dest);
    th.seq = seq.to_be_bytes();
    th.ack_seq = ack.to_be_bytes();
    th._bitfield_1 = TcpHdr::new_bitfield_1(0, 5, 0, 0, 1, 0, with_ack, 0, 0, 0);
    th.window = [0; 2];
    th.check = [0; 2];
    th.urg_ptr = [0; 2];
    let pseudo = reply_ip(at, s, IPPROTO_TCP, l4 - l3, TcpHdr::LEN, DF);
    // The whole checksum for a packet whose checksum is complete; a local sender's packet
    // (CHECKSUM_PARTIAL) instead holds only the pseudo-header's sum there, and the device adds
    // the rest. The field is written for the second case, then moved to the first by
    // bpf_l4_csum_replace without BPF_F_PSEUDO_HDR, which the kernel applies only when the
    // checksum is complete (the TCP header stays where the kernel expects it): right either way.
    let seed = csum::fold(pseudo);
    let full = !csum::fold(pseudo.add(csum::of(&s.tcp)));
    s.tcp.check = seed.to_be_bytes();
    // Cut first: the helper also unclones, so nothing below writes into a sender's own copy.
    // SAFETY: a helper on our own skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (l4 + TcpHdr::LEN) as u32, 0) } != 0 {
        return None;
    }
    store(ctx, 0, &s.eth)?;
    store_ip(ctx, at, s, l3)?;
    // IPv4 options (at most 40 bytes, a multiple of 4) blanked.
    for i in 0..10 {
        let o = l3 + Ipv4Hdr::LEN + 4 * i;
        if at.v6 || o >= l4 {
            break;
        }
        store(ctx, o, &0u32)?;
    }
    store(ctx, l4, &s.tcp)?;
    let to = csum::fold(Sum(u64::from(!full)).add(Sum(u64::from(seed))));
    // SAFETY: a helper on our own skb, at the TCP checksum field (even offset).
    let r = unsafe {
        bpf_l4_csum_replace(
            ctx.skb.skb,
            (l4 + 16) as u32,
            0,
            u64::from(to.to_be()),
            CSUM_FIELD_16,
        )
    };
    (r == 0).then_some(())
}

/// ICMP (IPv4) or ICMPv6 destination unreachable from the destination to the sender, quoting
/// the packet's IP header(s) and the first 8 bytes of its L4 header (20 for TCP), at most
/// `QUOTE_MAX` bytes. New headers go in front: Ethernet (and VLAN tags), IP, ICMP.
#[inline(always)]
fn unreachable_reply(ctx: &TcContext, at: &Layout, reply: Reply, s: &mut Scratch) -> Option<()> {
    let (l3, l4) = (usize::from(at.l3_off), usize::from(at.l4_off));
    let ip_len = read_headers(ctx, at, s)?;
    let l4_quoted = if at.proto == IPPROTO_TCP {
        QUOTE_L4_TCP
    } else {
        QUOTE_L4
    };
    // Whole 32-bit words (a shorter packet loses at most 3 bytes of its end from the quote).
    let quote = (l4 - l3 + l4_quoted).min(ip_len).min(QUOTE_MAX) & !3;
    if quote == 0 {
        return None;
    }
    let quote = bounded_quote(quote);
    for (i, t) in s.tags.iter_mut().enumerate() {
        if l3 > EthHdr::LEN + 4 * i {
            load(ctx, EthHdr::LEN + 4 * i, t)?;
        }
    }
    load_quote(ctx, l3, &mut s.quote, quote)?;
    let (ip_hdr, icmp_len) = if at.v6 {
        (Ipv6Hdr::LEN, Icmpv6Hdr::LEN)
    } else {
        (Ipv4Hdr::LEN, Icmpv4Hdr::LEN)
    };
    // SAFETY: helpers on our own skb. Cut to the quote first, then make room in front.
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb, (l3 + quote) as u32, 0) != 0
            || bpf_skb_change_head(ctx.skb.skb, (ip_hdr + icmp_len) as u32, 0) != 0
        {
            return None;
        }
    }
    store(ctx, 0, &s.eth)?;
    // VLAN tags (at most two): the EtherType field of `eth` holds the first tag's TPID.
    for (i, t) in s.tags.iter().enumerate() {
        if l3 > EthHdr::LEN + 4 * i {
            store(ctx, EthHdr::LEN + 4 * i, t)?;
        }
    }
    // SAFETY: the quote's bytes in scratch, `quote` of them (a multiple of 4, at most 256).
    let quoted = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            s.quote.as_mut_ptr() as *mut u32,
            quote as u32,
            0,
        )
    };
    // bpf_csum_diff sums in memory order; folded and byte-swapped it is the big-endian sum.
    let quoted = Sum(u64::from(
        csum::fold(Sum(quoted as u32 as u64)).swap_bytes(),
    ));
    let pseudo = reply_ip(
        at,
        s,
        if at.v6 {
            IPPROTO_ICMPV6
        } else {
            IpProto::Icmp as u8
        },
        ip_hdr,
        icmp_len + quote,
        0,
    );
    store_ip(ctx, at, s, l3)?;
    let (code4, code6) = reply.icmp_codes();
    if at.v6 {
        let h = &mut s.icmp6;
        (h.type_, h.code, h.check, h.data) = (ICMPV6_DEST_UNREACH, code6, [0; 2], [0; 4]);
        h.check = (!csum::fold(pseudo.add(quoted).add(csum::of(&*h)))).to_be_bytes();
        store(ctx, l3 + ip_hdr, &s.icmp6)
    } else {
        let h = &mut s.icmp4;
        (h.type_, h.code, h.check, h.data) = (ICMP_DEST_UNREACH, code4, [0; 2], [0; 4]);
        h.check = (!csum::fold(quoted.add(csum::of(&*h)))).to_be_bytes();
        store(ctx, l3 + ip_hdr, &s.icmp4)
    }
}

/// `len` (a multiple of 4, from 4 to `QUOTE_MAX`) rebuilt from an opaque copy in a form whose
/// bounds the verifier sees (4 + 4 * ((words - 1) % 64)): a size argument must be provably
/// within the buffer and, on 5.10, not 0; the compiler would fold a plain check into another
/// register or drop it.
#[inline(always)]
fn bounded_quote(len: usize) -> usize {
    let words = core::hint::black_box(len / 4);
    4 + 4 * (words.wrapping_sub(1) & (QUOTE_MAX / 4 - 1))
}

/// Reads the quote, `len` bytes (from `bounded_quote`), at `off`.
#[inline(always)]
fn load_quote(ctx: &TcContext, off: usize, dst: &mut [u8; QUOTE_MAX], len: usize) -> Option<()> {
    // SAFETY: `dst` holds QUOTE_MAX bytes, `len` is at most that.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            off as u32,
            dst.as_mut_ptr() as *mut c_void,
            len as u32,
        )
    };
    (r == 0).then_some(())
}
