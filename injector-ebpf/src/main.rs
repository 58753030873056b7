//! injector's kernel programs: one entry point per attach point, all sharing `verdict::judge`.
//! Built for bpfel-unknown-none by injector/build.rs; on the host it compiles to an empty binary.
//!
//! Where faults are judged (once per packet per fault, cluster-wide): on the node of the sender,
//! at the last egress hop there: the destination pod's host veth egress (same node, or the node
//! itself to a pod) or flannel.1 egress (to another node). Packets that entered the node through
//! flannel.1 were judged on their sender's node and pass veth egress unjudged. Drop and blackhole
//! (the early stage) of what a pod sends are judged where it enters the node, at its host veth's
//! TC ingress (`tc_veth_ingress`), or with `--xdp` by the XDP program there; the egress hooks then
//! leave the faults judged there alone for packets that ingress recorded as judged (`ctrl::EARLY`,
//! early.rs), and still judge drops of everything else (from the node, from an uplink, from a veth
//! whose XDP attach failed). A packet the host's NAT changed on the way (a Service VIP to a pod)
//! has its drops judged again at egress, on its new addresses (early.rs).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod classify;
mod clone;
mod corrupt;
mod csum;
mod dns;
mod early;
mod loss;
mod maps;
mod parse;
mod rate;
mod reject;
mod verdict;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::bpf_skb_set_tstamp,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use injector_common::{Hook, JudgeHook, ctrl, dns as dns_rcode, stage};
use maps::XDP_IFACES;
use parse::LinearTc;
use verdict::{
    Clock, Stash, Verdict, ctrl_word, hook_stats, installed, judge, read_hook_clock, stashed,
};

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

/// EDT: the packet leaves fq no earlier than `now` (when judging began, see `Verdict::Change`;
/// or its existing delivery time, if later) + `delay_ns`.
#[inline(always)]
fn stamp(ctx: &TcContext, now: u64, delay_ns: u64) {
    let skb = ctx.skb.skb;
    // SAFETY: reading context fields and calling a helper on our own skb.
    unsafe {
        // Build on an existing stamp only if it is a delivery time; a receive timestamp is wall-clock.
        let base = if u32::from((*skb).tstamp_type) == TSTAMP_DELIVERY_MONO && (*skb).tstamp > now {
            (*skb).tstamp
        } else {
            now
        };
        bpf_skb_set_tstamp(skb, base + delay_ns, TSTAMP_DELIVERY_MONO);
    }
}

/// Carries out a verdict that delivers the packet changed: the bit flip first (a duplicate is
/// then a copy of the corrupted packet), the EDT stamp (the duplicate inherits it), the
/// duplicate, and, for a delayed packet, the hand-over to fq.
#[inline(always)]
fn deliver_changed(ctx: &TcContext, s: &Stash, since_ns: u64, edt: bool) -> i32 {
    let ch = &s.change;
    if ch.corrupt && !corrupt::flip(ctx, &s.at) {
        return TC_ACT_SHOT;
    }
    // Without the stamp the API refuses delay faults: nothing is delayed.
    let delayed = edt && ch.delay_ns > 0;
    if delayed {
        stamp(ctx, since_ns, ch.delay_ns);
    }
    if ch.duplicate {
        clone::send(ctx);
    }
    if delayed {
        clone::hand_to_fq(ctx)
    } else {
        TC_ACT_OK
    }
}

#[inline(always)]
fn tc_judge(ctx: &TcContext, hook: Hook, jh: JudgeHook) -> i32 {
    // The generation, read once: the DNS names are matched and the packet judged against the
    // same one, also when a change flips it meanwhile.
    let gen_word = ctrl_word(ctrl::GEN);
    // First, where the verifier has one state to walk it in (see dns.rs).
    if gen_word & ctrl::GEN_DNS != 0 {
        dns::classify(ctx, (gen_word & 1) as u8);
    }
    let edt = edt_stamp();
    // Clones of ours come back only while a fault that sends them is installed.
    if gen_word & ctrl::GEN_CLONES != 0 && clone::is_our_clone(ctx) {
        return TC_ACT_OK;
    }
    // SAFETY: reading a context field.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // Entered through a pod veth whose ingress judged its drops, and is the packet as it was
    // then, not changed by NAT on the way (see early.rs)? Asked only while some drop-like fault
    // is installed: without, there is no early stage to skip. The record says whether its
    // ingress judged it (`early::mark`); from the node itself (`iif` 0) nothing was recorded.
    let judged_early = gen_word & (ctrl::GEN_ANY | ctrl::GEN_EARLY_NONE) == ctrl::GEN_ANY
        && iif != 0
        && ctrl_word(ctrl::EARLY) != ctrl::EARLY_AT_EGRESS
        && early::step(ctx, early::Step::Compare);
    if judged_early && gen_word & ctrl::GEN_EGRESS_NONE != 0 {
        // Judged at ingress, and nothing of the egress stage is installed: counted only.
        if let Some(s) = hook_stats(hook) {
            s.seen_packets += 1;
            s.seen_bytes += u64::from(ctx.len());
        }
        return TC_ACT_OK;
    }
    // Without the stamp the API refuses delay faults, so there are none to judge; the stages stay
    // as they are (masking delay out here too would let LLVM duplicate the judging loop).
    let stages = if judged_early {
        jh.stages() & !stage::EARLY
    } else {
        jh.stages()
    };
    // A packet whose destination no fault names passes unparsed: most packets, at the hooks
    // every packet of a node crosses (see classify::destination_misses). A packet judged at
    // ingress was identified by the comparison already. The cost: 6.1's verifier walked
    // tc_veth_egress in 889k instructions of its 1M (776k before; 141k now that the flow is
    // judged from map memory, see verdict::PARSED); variants that skipped judged-early packets
    // (915k) or asked inside `judge` (over 1M) cost more.
    // With nothing of these stages installed the packet is only counted, as `judge` would, but
    // before the clock read below: a clock read for every packet of an idle node doubled the
    // egress hook's cost (bench part 2, no faults: 69 -> 129 ns; `rdtsc` is slow in this VM).
    // A packet judged at ingress had its destination looked up there (`early::missed`).
    let nothing = gen_word & ctrl::GEN_ANY == 0 || !installed(stages, gen_word);
    if nothing
        || judged_early && early::missed(gen_word)
        || (judged_early || early::step(ctx, early::Step::Identify))
            && classify::destination_misses(gen_word)
    {
        if let Some(s) = hook_stats(hook) {
            s.seen_packets += 1;
            s.seen_bytes += u64::from(ctx.len());
        }
        return TC_ACT_OK;
    }
    // The delay counts from here, before the parse and classification: as netem's from its
    // enqueue (after this hook), not from after our own work (read after classification, the
    // p50 error in part 5 of the benchmarks was 1.6 us higher under TCG). Only for a packet
    // whose destination a fault names.
    read_hook_clock();
    match judge(ctx, ctx.len(), hook, jh, stages, gen_word, Clock::Hook) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        // Carried out by the entry function (`carry_out`), one call level up: see there.
        Verdict::DnsError(flags) => DNS_ANSWER + ((flags >> dns_rcode::RCODE_SHIFT) & 0xf) as i32,
        Verdict::Reject(reply) => match stashed() {
            Some(s) => reject::answer(ctx, &s.at, reply),
            None => TC_ACT_SHOT,
        },
        Verdict::Change(since_ns) => match stashed() {
            Some(s) => deliver_changed(ctx, &s, since_ns, edt),
            None => TC_ACT_OK,
        },
    }
}

/// What `tc_judge` returns for a DNS answer to rewrite: this plus the RCODE (TC's verdicts are
/// small numbers).
const DNS_ANSWER: i32 = 0x1_0000;

/// The judging function's verdict, with a DNS answer rewritten here: the rewrite is a BPF-to-BPF
/// call (`dns::answer_with`), and from the entry function it is the second of two frames, not
/// the third (6.1 counts the three frames' stacks at 544 of 512 bytes).
#[inline(always)]
fn carry_out(ctx: &TcContext, r: i32) -> i32 {
    if r >= DNS_ANSWER {
        dns::answer_with(ctx, (r - DNS_ANSWER) as u32)
    } else {
        r
    }
}

/// Host veth egress: what a pod receives. Last hop on the sender's node for same-node traffic.
#[classifier]
// Inlined into the entry point the macro makes: as a function of its own it is one more frame
// (rounded to 32 bytes) in the call chains the verifier counts against 512 bytes.
#[inline(always)]
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
    carry_out(
        &ctx,
        tc_judge(&ctx, Hook::VethEgress, JudgeHook::VethEgress),
    )
}

/// flannel.1 egress: inner packets leaving for another node. Last hop on the sender's node.
#[classifier]
// Inlined into the entry point the macro makes: as a function of its own it is one more frame
// (rounded to 32 bytes) in the call chains the verifier counts against 512 bytes.
#[inline(always)]
pub fn tc_vxlan_egress(ctx: TcContext) -> i32 {
    carry_out(
        &ctx,
        tc_judge(&ctx, Hook::OverlayEgress, JudgeHook::OverlayEgress),
    )
}

/// Host veth ingress: what the pod sends, where it enters the node. Records the packet for the
/// egress hook it reaches next (early.rs) and judges the early stage (drop, blackhole), unless
/// XDP judged it already (`--xdp`: XDP runs first, and this only records).
///
/// A packet whose destination no rule names passes unparsed, as at egress; the record tells
/// the egress hook so (`early::mark`), and whether the packet's drops were judged here or by
/// XDP before. Egress asked `XDP_IFACES` for that with a hash lookup on every packet: the
/// largest single cost of an idle node's egress hooks (bench part 1's profile: 13% of the
/// programs' samples), where a pod's ingress interface is known here without one.
#[classifier]
pub fn tc_veth_ingress(ctx: TcContext) -> i32 {
    let gen_word = ctrl_word(ctrl::GEN);
    let at = ctrl_word(ctrl::EARLY);
    if gen_word & (ctrl::GEN_ANY | ctrl::GEN_EARLY_NONE) == ctrl::GEN_ANY
        && record_at_ingress(&ctx, gen_word, at)
    {
        if let Some(s) = hook_stats(Hook::VethIngress) {
            s.seen_packets += 1;
            s.seen_bytes += u64::from(ctx.len());
        }
        return TC_ACT_OK;
    }
    if at != ctrl::EARLY_TC {
        if let Some(s) = hook_stats(Hook::Observe) {
            s.seen_packets += 1;
            s.seen_bytes += u64::from(ctx.len());
        }
        return TC_ACT_OK;
    }
    match judge(
        &LinearTc(&ctx),
        ctx.len(),
        Hook::VethIngress,
        JudgeHook::VethIngress,
        JudgeHook::VethIngress.stages(),
        gen_word,
        Clock::Classified,
    ) {
        Verdict::Drop => TC_ACT_SHOT,
        // The early stage only drops.
        Verdict::Pass | Verdict::Reject(_) | Verdict::DnsError(_) | Verdict::Change(_) => TC_ACT_OK,
    }
}

/// `tc_veth_ingress`'s record (see there); true when the packet passes unjudged: this hook
/// judges (`at`: `EARLY_TC`) and no rule names its destination. A function of its own: inlined,
/// it changed how LLVM compiled the judge's parse after it, into code 6.1's verifier refuses (a
/// branch it cannot tell is dead: "R1 invalid mem access 'scalar'").
#[inline(never)]
fn record_at_ingress(ctx: &TcContext, gen_word: u64, at: u64) -> bool {
    early::step(ctx, early::Step::Record);
    // With `--xdp`, XDP judged it if it is attached here (a veth whose XDP attach failed has
    // only this program, and its packets' drops are judged at egress).
    let judged = at == ctrl::EARLY_TC || at == ctrl::EARLY_XDP && xdp_judged(ctx);
    // Asked where an answer is used: here (the TC judge), or by an egress judge.
    let miss = (at == ctrl::EARLY_TC || gen_word & ctrl::GEN_EGRESS_NONE == 0)
        && classify::destination_misses(gen_word);
    early::mark(judged, if miss { gen_word } else { 0 });
    miss && at == ctrl::EARLY_TC
}

/// XDP judges the early stage on this packet's ingress interface (`--xdp`): it is in
/// `XDP_IFACES`. A function of its own, so that the key copied out of the context for the
/// lookup takes no room on the judging frame.
#[inline(never)]
fn xdp_judged(ctx: &TcContext) -> bool {
    // SAFETY: reading a context field.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is only tested for presence.
    unsafe { XDP_IFACES.get(ifindex) }.is_some()
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
        Hook::VethIngress,
        JudgeHook::VethIngress,
        JudgeHook::VethIngress.stages(),
        ctrl_word(ctrl::GEN),
        Clock::Classified,
    ) {
        Verdict::Drop => xdp_action::XDP_DROP,
        // XDP judges only the early stage; the rest cannot reach it.
        Verdict::Pass | Verdict::Reject(_) | Verdict::DnsError(_) | Verdict::Change(_) => {
            xdp_action::XDP_PASS
        }
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
