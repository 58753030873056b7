//! injector's kernel programs: one entry point per attach point, all sharing `verdict::judge`.
//! Built for bpfel-unknown-none by injector/build.rs; on the host it compiles to an empty binary.
//!
//! Where faults are judged (once per packet per fault, cluster-wide): on the node of the sender,
//! at the last egress hop there: the destination pod's host veth egress (same node, or the node
//! itself to a pod) or flannel.1 egress (to another node). Packets that entered the node through
//! flannel.1 were judged on their sender's node and pass veth egress unjudged. With the XDP program
//! attached to the host veths, drop and blackhole are judged there instead (the earliest point),
//! and the egress hooks then judge only delay for packets that entered through such a veth or
//! the bridge (the `XDP_IFACES` map); drops of everything else (from the node, from an uplink) are
//! still judged at egress.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod classify;
mod maps;
mod parse;
mod verdict;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, TC_ACT_STOLEN, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_skb_set_tstamp},
    macros::{classifier, map, xdp},
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};
use injector_common::{Hook, JudgeHook, ctrl, stage};
use maps::XDP_IFACES;
use verdict::{Verdict, ctrl_word, hook_stats, judge};

/// `BPF_SKB_TSTAMP_DELIVERY_MONO` (renamed `BPF_SKB_CLOCK_MONOTONIC` in 6.11, same value).
const TSTAMP_DELIVERY_MONO: u32 = 1;

/// 1: this kernel has `bpf_skb_set_tstamp` and `__sk_buff.tstamp_type` (Linux 5.18: Martin KaFai
/// Lau's "bpf: Add __sk_buff->delivery_time_type and bpf_skb_set_delivery_time()", renamed to
/// tstamp_type / bpf_skb_set_tstamp before the release), so the judging programs stamp EDT
/// delivery times; 0: they judge drops only (5.10). The daemon sets it before loading (a
/// `.rodata` global, frozen at load): the verifier then knows its value ("bpf: Track contents of
/// read-only maps as scalars", 5.5) and never walks the stamping code on a kernel without the
/// helper; as root, the branch it proved dead is removed before helper calls are resolved.
/// One set of programs, so every name, pin and attach path stays the same on every kernel.
#[unsafe(no_mangle)]
static EDT_STAMP: u8 = 1;

#[inline(always)]
fn edt_stamp() -> bool {
    // SAFETY: reading our own global; volatile so the compiler keeps the load the loader patches.
    unsafe { core::ptr::read_volatile(&EDT_STAMP) != 0 }
}

/// What the original of a packet handed to fq as a clone gets. STOLEN, not SHOT: both free it,
/// but from the qdisc layer SHOT is reported to a local sender as NET_XMIT_DROP (TCP then enters
/// CWR and treats the segment as not sent; see `hand_to_fq`), STOLEN as NET_XMIT_SUCCESS.
const ORIGINAL_HANDED_OVER: i32 = TC_ACT_STOLEN;

/// Per CPU: the clone `hand_to_fq` is sending right now, as `IN_FLIGHT | ifindex << 32 | bits`
/// (`bits`: the mark bits it added), 0 otherwise. `bpf_clone_redirect` to an egress device
/// transmits synchronously (`__bpf_tx_skb` -> `dev_queue_xmit`, same CPU, bottom halves off), so
/// the clone meets this device's egress program while the token is set; nothing else can run
/// that program on this CPU in between. This identifies our clone exactly, whatever its mark:
/// a foreign packet that carries the clone-mark bit is judged like any other and keeps its mark.
#[map]
static CLONE_TOKEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
const IN_FLIGHT: u64 = 1 << 63;

/// EDT: the packet leaves fq no earlier than now (or its existing delivery time) + `delay_ns`.
#[inline(always)]
fn stamp(ctx: &TcContext, delay_ns: u64) {
    let skb = ctx.skb.skb;
    // SAFETY: reading context fields and calling a helper on our own skb.
    unsafe {
        let now = bpf_ktime_get_ns();
        // Build on an existing stamp only if it is a delivery time; a receive timestamp is wall-clock.
        let base = if u32::from((*skb).tstamp_type) == TSTAMP_DELIVERY_MONO && (*skb).tstamp > now {
            (*skb).tstamp
        } else {
            now
        };
        bpf_skb_set_tstamp(skb, base + delay_ns, TSTAMP_DELIVERY_MONO);
    }
}

/// A stamped packet that still belongs to a local socket (same-node traffic through the bridge
/// keeps its sender's socket) must not wait in fq as it is: TCP small queues would see its bytes
/// in flight for the whole delay and throttle the connection to ~1 Mbit/s. A clone carries no
/// socket: it goes to this device's egress again (fq holds it; `CLONE_TOKEN` lets it pass
/// unjudged), and the original is freed, which returns its bytes to the sender at once. The
/// original is answered STOLEN: for the node's own traffic (node -> pod across flannel.1) this
/// hook runs inside the sender's `dev_queue_xmit`, and SHOT would come back to TCP as a local
/// drop (`tcp_enter_cwr`, segment not sent, the clone's data then acked as unsent).
/// While the clone is on its way it carries the `CTRL[CLONE_MARK]` bit (if set and not already
/// on the packet), a label for hooks ahead of ours; the bit is removed when it passes here.
#[inline(always)]
fn hand_to_fq(ctx: &TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: reading context fields of our own skb.
    let (has_sk, ifindex, mark) = unsafe {
        (
            !(*skb).__bindgen_anon_2.sk.is_null(),
            (*skb).ifindex,
            (*skb).mark,
        )
    };
    if !has_sk {
        return TC_ACT_OK;
    }
    let Some(token) = CLONE_TOKEN.get_ptr_mut(0) else {
        return TC_ACT_OK;
    };
    let added = (ctrl_word(ctrl::CLONE_MARK) as u32) & !mark;
    // SAFETY: this CPU's slot; only this CPU touches it, and not concurrently (see CLONE_TOKEN).
    unsafe { *token = IN_FLIGHT | (u64::from(ifindex) << 32) | u64::from(added) };
    if added != 0 {
        ctx.set_mark(mark | added);
    }
    let cloned = ctx.clone_redirect(ifindex, 0).is_ok();
    // SAFETY: as above.
    unsafe { *token = 0 };
    if added != 0 {
        ctx.set_mark(mark);
    }
    // If the clone could not be made, the original goes on, stamped (delayed, TCP throttled).
    if cloned {
        ORIGINAL_HANDED_OVER
    } else {
        TC_ACT_OK
    }
}

/// The clone `hand_to_fq` is sending right now, back at this egress: take the token, remove the
/// mark bits it added (a bit the packet carried before stays), let it through to fq.
#[inline(always)]
fn is_our_clone(ctx: &TcContext) -> bool {
    let Some(token) = CLONE_TOKEN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot (see CLONE_TOKEN); reading context fields.
    let (t, ifindex, mark) = unsafe { (*token, (*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    if t & IN_FLIGHT == 0 || (t >> 32) as u32 & 0x7FFF_FFFF != ifindex {
        return false;
    }
    // SAFETY: as above. One clone per token.
    unsafe { *token = 0 };
    let added = t as u32;
    if added != 0 {
        ctx.set_mark(mark & !added);
    }
    true
}

#[inline(always)]
fn tc_judge(ctx: &TcContext, hook: Hook, jh: JudgeHook) -> i32 {
    // Without the EDT stamp nothing is delayed, so there are no clones either.
    let edt = edt_stamp();
    if edt && is_our_clone(ctx) {
        return TC_ACT_OK;
    }
    // SAFETY: reading a context field.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // Entered through a pod veth whose XDP program judged its drops already?
    // SAFETY: the value is only tested for presence.
    let xdp_judged =
        iif != 0 && ctrl_word(ctrl::XDP) == 1 && unsafe { XDP_IFACES.get(iif) }.is_some();
    // Without the stamp the API refuses delay faults, so there are none to judge; the stages stay
    // as they are (masking delay out here too would let LLVM duplicate the judging loop).
    let stages = if xdp_judged {
        jh.stages() & !stage::EARLY
    } else {
        jh.stages()
    };
    match judge(ctx, ctx.len(), hook, jh, stages) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Delay(ns) if edt => {
            stamp(ctx, ns);
            hand_to_fq(ctx)
        }
        // Unreachable without the stamp (no delay fault is accepted): pass.
        Verdict::Delay(_) => TC_ACT_OK,
    }
}

/// Host veth egress: what a pod receives. Last hop on the sender's node for same-node traffic.
#[classifier]
pub fn tc_veth_egress(ctx: TcContext) -> i32 {
    // SAFETY: reading a context field.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let overlay = ctrl_word(ctrl::OVERLAY_IFINDEX) as u32;
    if overlay != 0 && iif == overlay {
        // Came from another node through flannel.1: judged there.
        if let Some(s) = hook_stats(Hook::VethEgress) {
            s.seen_packets += 1;
            s.seen_bytes += u64::from(ctx.len());
            s.skipped_packets += 1;
        }
        return TC_ACT_OK;
    }
    tc_judge(&ctx, Hook::VethEgress, JudgeHook::VethEgress)
}

/// flannel.1 egress: inner packets leaving for another node. Last hop on the sender's node.
#[classifier]
pub fn tc_vxlan_egress(ctx: TcContext) -> i32 {
    tc_judge(&ctx, Hook::OverlayEgress, JudgeHook::OverlayEgress)
}

/// Counts what a hook sees and judges nothing.
#[classifier]
pub fn tc_observe(ctx: TcContext) -> i32 {
    if let Some(s) = hook_stats(Hook::Observe) {
        s.seen_packets += 1;
        s.seen_bytes += u64::from(ctx.len());
    }
    TC_ACT_OK
}

/// XDP on a host veth: what the pod sends. The cheapest place to drop.
#[xdp]
pub fn xdp_veth(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    match judge(
        &ctx,
        len,
        Hook::XdpVeth,
        JudgeHook::XdpVeth,
        JudgeHook::XdpVeth.stages(),
    ) {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::Delay(_) => xdp_action::XDP_PASS,
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
