//! Corrupt: one random bit of the payload (after the L4 header) flipped, checksums left as they
//! were, so the receiver's stack discards the packet, as with netem's corrupt.
//!
//! A local sender's TCP/UDP packet (CHECKSUM_PARTIAL: veth and the node's own stack leave the
//! checksum to the device) cannot be corrupted that way: its checksum is computed later, over
//! the flipped bit, or never, by a local receiver that trusts it; netem computes it first
//! (`skb_checksum_help`), which BPF cannot. Such a packet is dropped in its place, which is
//! what the receiver would have done with a corrupted one.

use aya_ebpf::{helpers::bpf_csum_level, programs::TcContext};

use crate::{
    parse::{Bytes, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Layout},
    verdict::rand,
};

/// `BPF_F_RECOMPUTE_CSUM`: keep `skb->csum` of a CHECKSUM_COMPLETE skb in step with the bytes,
/// so the receiver's check sees the flip.
const F_RECOMPUTE_CSUM: u64 = 1;
/// `BPF_CSUM_LEVEL_RESET`: a checksum the device verified (CHECKSUM_UNNECESSARY) is checked again.
const CSUM_LEVEL_RESET: u64 = 3;
/// `bpf_l4_csum_replace`'s field size bits: a 16-bit field.
const CSUM_FIELD_16: u64 = 2;

/// The payload of the packet: its offset and length, up to the end its IP header gives
/// (`len`: the packet's length). None without one (a bare TCP segment, a non-first fragment).
#[inline(always)]
pub fn payload<B: Bytes>(pkt: &B, flow: &Layout, len: u32) -> Option<(u32, u32)> {
    let (l3, l4) = (u32::from(flow.l3_off), u32::from(flow.l4_off));
    if l4 == 0 {
        return None;
    }
    let start = l4
        + match flow.proto {
            IPPROTO_TCP => u32::from(pkt.read::<u8>(l4 as usize + 12)? >> 4) * 4,
            IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6 => 8,
            _ => 0,
        };
    let ip_len = if flow.v6 {
        40 + u32::from(u16::from_be_bytes(pkt.read::<[u8; 2]>(l3 as usize + 4)?))
    } else {
        u32::from(u16::from_be_bytes(pkt.read::<[u8; 2]>(l3 as usize + 2)?))
    };
    let end = (l3 + ip_len).min(len);
    (end > start).then_some((start, end - start))
}

/// Flips the bit; false when the packet must be dropped in its place (see above).
#[inline(always)]
pub fn flip(ctx: &TcContext, flow: &Layout) -> bool {
    let Some((off, n)) = payload(ctx, flow, ctx.len()) else {
        return true;
    };
    let check = match flow.proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 0,
    };
    if check != 0 && checksum_pending(ctx, flow.l4_off as usize + check) {
        return false;
    }
    let at = (off + rand() % n) as usize;
    let Ok(b) = ctx.load::<u8>(at) else {
        return true;
    };
    let flipped = b ^ (1 << (rand() & 7));
    if ctx.store(at, &flipped, F_RECOMPUTE_CSUM).is_err() {
        return true;
    }
    // SAFETY: a helper on our own skb.
    unsafe { bpf_csum_level(ctx.skb.skb, CSUM_LEVEL_RESET) };
    true
}

/// Whether the L4 checksum at `field` is still to be computed (CHECKSUM_PARTIAL). BPF cannot
/// read `ip_summed`, but `bpf_l4_csum_replace` without BPF_F_PSEUDO_HDR changes the field only
/// when the checksum is complete: change it by one, see, put the old value back.
#[inline(always)]
fn checksum_pending(ctx: &TcContext, field: usize) -> bool {
    let Ok(before) = ctx.load::<[u8; 2]>(field) else {
        return true;
    };
    // SAFETY: a helper on our own skb, at an L4 checksum field (even offset).
    let r = unsafe {
        aya_ebpf::helpers::bpf_l4_csum_replace(ctx.skb.skb, field as u32, 0, 1, CSUM_FIELD_16)
    };
    let Ok(after) = ctx.load::<[u8; 2]>(field) else {
        return true;
    };
    if r != 0 || after == before {
        return true;
    }
    // The replace did not touch skb->csum (no BPF_F_PSEUDO_HDR): restore the bytes as they were.
    ctx.store(field, &before, 0).is_err()
}
