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
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_skb_set_tstamp},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use injector_common::{Hook, JudgeHook, ctrl, stage};
use maps::XDP_IFACES;
use verdict::{Verdict, ctrl_word, hook_stats, judge};

/// `BPF_SKB_TSTAMP_DELIVERY_MONO` (renamed `BPF_SKB_CLOCK_MONOTONIC` in 6.11, same value).
const TSTAMP_DELIVERY_MONO: u32 = 1;
/// skb->mark bit of a delayed packet's clone on its way to fq (see `hand_to_fq`).
const MARK_CLONE: u32 = 0x1000_0000;

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
/// socket: it goes to this device's egress again (fq holds it, the mark lets it pass unjudged),
/// and the original is dropped, which returns its bytes to the sender at once.
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
    ctx.set_mark(mark | MARK_CLONE);
    let cloned = ctx.clone_redirect(ifindex, 0).is_ok();
    ctx.set_mark(mark);
    // If the clone could not be made, the original goes on, stamped (delayed, TCP throttled).
    if cloned { TC_ACT_SHOT } else { TC_ACT_OK }
}

/// The clone made by `hand_to_fq`, back at egress: clear the mark and let it through to fq.
#[inline(always)]
fn is_our_clone(ctx: &TcContext) -> bool {
    // SAFETY: reading a context field.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & MARK_CLONE == 0 {
        return false;
    }
    ctx.set_mark(mark & !MARK_CLONE);
    true
}

#[inline(always)]
fn tc_judge(ctx: &TcContext, hook: Hook, jh: JudgeHook) -> i32 {
    if is_our_clone(ctx) {
        return TC_ACT_OK;
    }
    // SAFETY: reading a context field.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // Entered through a pod veth whose XDP program judged its drops already?
    // SAFETY: the value is only tested for presence.
    let xdp_judged =
        iif != 0 && ctrl_word(ctrl::XDP) == 1 && unsafe { XDP_IFACES.get(iif) }.is_some();
    let stages = if xdp_judged {
        jh.stages() & !stage::EARLY
    } else {
        jh.stages()
    };
    match judge(ctx, ctx.len(), hook, jh, stages) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Delay(ns) => {
            stamp(ctx, ns);
            hand_to_fq(ctx)
        }
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
