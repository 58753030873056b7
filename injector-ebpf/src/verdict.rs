//! The packet path, the same for every judging hook: parse once -> safety checks -> classify once
//! -> decide each matching fault's action -> count. Hooks differ only in what they pass in (hook
//! ids, which action kinds they judge); they carry the verdict out (main.rs).

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::PerCpuArray,
};
use injector_common::{
    Action, FaultCfg, FaultCounters, Hook, HookStats, JudgeHook, MAX_FAULTS,
    MAX_MATCHES_PER_PACKET, MAX_RULES, Outcome, Reply, RuleSet, ctrl, dns::Answer, flag, flow,
    stage,
};

use network_types::eth::EthHdr;

use crate::{
    classify::{Candidates, candidates},
    corrupt, loss,
    maps::{COUNTERS, CTRL, FAULTS, RULES, STATS},
    parse::{Bytes, Flow, Layout, parse, parse_then},
    rate,
    reject::{self, Plan},
};

#[derive(Clone, Copy)]
pub enum Verdict {
    Pass,
    Drop,
    /// Turn the packet into this reply to its sender (reject); its layout is `stashed()`.
    Reject(Reply),
    /// Deliver it, changed as `stashed()` says; with the time it was judged against (see
    /// [`Clock`]), which a delay counts from. Carried here, not in `Stash`: a larger stash copy
    /// takes 6.1's two-frame stack over 512 bytes.
    Change(u64),
    /// A DNS answer: deliver it rewritten to the error its fault's flags say
    /// (`dns::answer_with`).
    DnsError(u32),
}

/// What the faults that matched a packet do to it when it is delivered; several faults add up.
#[derive(Clone, Copy, Default)]
pub struct Change {
    /// Hold it this many ns (EDT); 0: not delayed.
    pub delay_ns: u64,
    /// Send a second copy.
    pub duplicate: bool,
    /// Flip one payload bit.
    pub corrupt: bool,
}

/// What `judge` hands to the code that carries out its verdict, per CPU: the layout of the
/// packet (written when an action that rewrites it, reject or corrupt, is chosen) and the change
/// the matching faults make (built while judging). In a map, not on the stack or in registers,
/// on purpose: the verifier does not follow values through map memory, so branching on them
/// neither marks the parser's stack slots precise (which kept it from merging the states of
/// different parse paths) nor makes each combination of changes a state of its own in the
/// judging loop. Measured: kept on the stack, the loop ran out of the 1M-instruction budget on
/// 6.18 and needed 530k on 6.1; through the map 85k on 6.18, 155-220k on 6.1 (40-45k before
/// these actions); with bursty loss, reorder and pulse 100-104k on 6.18, 187-252k on 6.1
/// (docs/modifiers.md). Nothing else runs the program on this CPU in between; the clones we send
/// come back synchronously but pass before judging.
#[derive(Clone, Copy)]
pub struct Stash {
    pub at: Layout,
    pub change: Change,
    /// The DNS faults whose names the packet's question matches, a bit each (its DNS index,
    /// `flag::DNS_INDEX_MASK`): written before judging (`dns::classify`), only while some DNS
    /// fault is installed.
    pub dns_faults: u64,
}

#[map]
static STASH: PerCpuArray<Stash> = PerCpuArray::with_max_entries(1, 0);

/// A packet's candidate rules and a summary of their non-empty words, per CPU: 72 bytes the
/// judging frame has no room for (256 faults, 512 rules), and for the reason [`Stash`] is in a
/// map (values the verifier does not follow). Written whole for each packet before they are
/// read (`classify::candidates`).
pub struct Judging {
    set: RuleSet,
    /// The non-empty words of `set`, a bit each (see `classify::Candidates`).
    nonempty: u64,
}

#[map]
static JUDGING: PerCpuArray<Judging> = PerCpuArray::with_max_entries(1, 0);

/// What the egress judges parsed of the packet, per CPU: its flow, written where each way of
/// parsing it succeeds (`parse::parse_then`) and read from here by classification and judging,
/// and its endpoints in the flow hash's order (`flow::canonical`), written once before judging.
/// In a map, not on the stack or in registers, for the reason [`Stash`] is: the verifier does not
/// follow values through map memory, so the states of the parse paths (each with its own
/// addresses, protocol, ports and offsets, their constants marked precise by branches on them:
/// before 6.4, precision tracking does not follow them across the BPF-to-BPF calls before and
/// during classification and marks every scalar precise instead) merge after the flow is
/// written. Measured on 6.1: tc_veth_egress 904k -> 322k, tc_vxlan_egress 889k -> 319k verified
/// instructions of the 1M limit (6.12: 219k -> 202k; 6.18: 214k -> 213k, 218k -> 212k). The
/// endpoints' order is found once, here, not per fault in the judging loop: there, its
/// comparisons of the words read back from the map cost 6.18 ~25k instructions. Only the egress
/// judges: the early stage's judges (small) keep the flow on their stack, and a change of their
/// code took tc_veth_ingress's parser into a path 6.1 refuses ("invalid mem access 'scalar'").
/// What it costs a packet: nothing measurable (BPF_PROG_TEST_RUN, a delayed packet ~1.18 us and
/// a packet a 50% flow fault passes ~300 ns, before and after).
#[derive(Clone, Copy)]
pub struct Parsed {
    flow: Flow,
    ends: [u64; 5],
}

#[map]
static PARSED: PerCpuArray<Parsed> = PerCpuArray::with_max_entries(1, 0);

/// Writes `flow` to `p` field by field (volatile: the compiler keeps the stores and reads the
/// fields back from the map; one volatile store of the whole flow took a copy of it on the stack).
///
/// # Safety
/// `p` is this CPU's slot of [`PARSED`].
#[inline(always)]
unsafe fn keep_flow(p: *mut Flow, flow: &Flow) {
    use core::ptr::{addr_of_mut, read_unaligned, write_volatile};
    // SAFETY: `p` is valid (the caller's promise); the reads are within `flow`'s addresses.
    unsafe {
        for i in 0..2 {
            let s = read_unaligned((flow.src.as_ptr() as *const u64).add(i));
            write_volatile((addr_of_mut!((*p).src) as *mut u64).add(i), s);
            let d = read_unaligned((flow.dst.as_ptr() as *const u64).add(i));
            write_volatile((addr_of_mut!((*p).dst) as *mut u64).add(i), d);
        }
        write_volatile(addr_of_mut!((*p).v6), flow.v6);
        write_volatile(addr_of_mut!((*p).proto), flow.proto);
        write_volatile(addr_of_mut!((*p).has_ports), flow.has_ports);
        write_volatile(addr_of_mut!((*p).sport), flow.sport);
        write_volatile(addr_of_mut!((*p).dport), flow.dport);
        write_volatile(addr_of_mut!((*p).l3_off), flow.l3_off);
        write_volatile(addr_of_mut!((*p).l4_off), flow.l4_off);
    }
}

/// When the packet reached an egress judging hook, per CPU (see [`Clock`]). In a map, not
/// carried in a register through the parser: a clock value live across the parse paths took
/// tc_vxlan_egress past 6.1's and 5.10's 1M verifier instructions.
#[map]
static HOOK_CLOCK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where `judge` takes the time it judges deadlines and rates against and a delay counts from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Read after classification, only for a packet some fault's selectors match: the hooks
    /// that only drop (a drop has no delay to count).
    Classified,
    /// Read by [`read_hook_clock`] before the parse (after the check that a fault names the
    /// destination): the hooks that delay, where the judging's own work would otherwise count
    /// into the delay (netem's counts from its enqueue, after the tc egress hook).
    Hook,
}

/// Reads the clock into this CPU's [`HOOK_CLOCK`], for a `judge` with [`Clock::Hook`].
#[inline(always)]
pub fn read_hook_clock() {
    if let Some(t) = HOOK_CLOCK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a helper without arguments.
        unsafe { core::ptr::write_volatile(t, bpf_ktime_get_ns()) };
    }
}

/// Stashes `flow`'s layout in `stash` and reads it back from the map (volatile: the compiler
/// must not hand back the values it just stored, the verifier must see them come from the map).
#[inline(always)]
fn stash_layout(stash: *mut Stash, flow: &Flow) -> Layout {
    // SAFETY: this CPU's slot (see STASH).
    unsafe {
        let at = core::ptr::addr_of_mut!((*stash).at);
        core::ptr::write_volatile(at, flow.layout());
        core::ptr::read_volatile(at)
    }
}

/// Some fault of `stages` is installed in the generation of `gen_word`.
#[inline(always)]
pub fn installed(stages: u32, gen_word: u64) -> bool {
    (stages & stage::EARLY != 0 && gen_word & ctrl::GEN_EARLY_NONE == 0)
        || (stages & stage::EGRESS != 0 && gen_word & ctrl::GEN_EGRESS_NONE == 0)
}

/// Changes the stashed change in place (volatile: it stays in the map, out of the verifier's
/// state).
#[inline(always)]
fn add_change(stash: *mut Stash, f: impl FnOnce(&mut Change)) {
    // SAFETY: this CPU's slot (see STASH).
    unsafe {
        let c = core::ptr::addr_of_mut!((*stash).change);
        let mut v = core::ptr::read_volatile(c);
        f(&mut v);
        core::ptr::write_volatile(c, v);
    }
}

/// Records the DNS faults the packet's question matches (see `Stash::dns_faults`).
#[inline(always)]
pub fn set_dns_faults(v: u64) {
    if let Some(p) = STASH.get_ptr_mut(0) {
        // SAFETY: this CPU's slot (see STASH).
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).dns_faults), v) };
    }
}

/// What `judge` stashed for the verdict it returned.
#[inline(always)]
pub fn stashed() -> Option<Stash> {
    // SAFETY: this CPU's slot (see STASH); read only.
    STASH
        .get_ptr(0)
        .map(|p| unsafe { core::ptr::read_volatile(p) })
}

#[inline(always)]
pub fn ctrl_word(i: u32) -> u64 {
    CTRL.get(i).copied().unwrap_or(0)
}

#[inline(always)]
pub fn hook_stats(hook: Hook) -> Option<&'static mut HookStats> {
    // SAFETY: a per-CPU slot; only this CPU writes it while the program runs.
    STATS.get_ptr_mut(hook as u32).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn counters(slot: u32, jh: JudgeHook) -> Option<&'static mut FaultCounters> {
    // SAFETY: as above.
    COUNTERS
        .get_ptr_mut(slot * JudgeHook::COUNT + jh as u32)
        .map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn rand() -> u32 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}

/// The flow hash of `f` with `seed`; at the egress judges (`Clock::Hook`) from the endpoints
/// `judge` put in order in `parsed` (see [`PARSED`]).
#[inline(always)]
fn flow_ppm(f: &Flow, parsed: *const Parsed, clock: Clock, seed: u32) -> u32 {
    if clock == Clock::Hook {
        // SAFETY: this CPU's slot, its `ends` written by `judge` for this packet.
        let e = unsafe { core::ptr::addr_of!((*parsed).ends) as *const u64 };
        // SAFETY: as above, words 0..5 of `ends`.
        let ends = core::array::from_fn(|i| unsafe { core::ptr::read_volatile(e.add(i)) });
        flow::ppm_canonical(&ends, seed)
    } else {
        flow::ppm_of((&f.src, f.sport), (&f.dst, f.dport), f.proto, seed)
    }
}

/// A delay fault's delay for one packet: uniform in [delay - jitter, delay + jitter]; 64 random
/// bits keep the bias negligible.
#[inline(always)]
fn delay_of(cfg: &FaultCfg) -> u64 {
    let j = if cfg.jitter_ns == 0 {
        0
    } else {
        ((u64::from(rand()) << 32) | u64::from(rand())) % (2 * cfg.jitter_ns + 1)
    };
    cfg.delay_ns.saturating_sub(cfg.jitter_ns) + j
}

/// Judges one packet of `len` bytes at `hook`, for the actions of `stages` (an
/// `injector_common::stage` set; the others are judged at another hook), against the generation
/// `gen_word` (the GEN control word, read once per packet by the caller: the DNS names were
/// matched against the same one). Each fault is judged once
/// however many of its rules match (a both-ways fault whose `from` and `to` overlap matches twice).
#[inline(always)]
pub fn judge<B: Bytes>(
    pkt: &B,
    len: u32,
    hook: Hook,
    jh: JudgeHook,
    stages: u32,
    gen_word: u64,
    clock: Clock,
) -> Verdict {
    let Some(stats) = hook_stats(hook) else {
        return Verdict::Pass;
    };
    stats.seen_packets += 1;
    stats.seen_bytes += u64::from(len);
    if gen_word & ctrl::GEN_ANY == 0 || !installed(stages, gen_word) {
        // No fault of these stages installed: nothing to judge, nothing to parse for.
        return Verdict::Pass;
    }
    // The egress judges classify and judge the flow in map memory (see PARSED), the others from
    // their stack.
    let local;
    let (flow, parsed): (&Flow, *mut Parsed) = if clock == Clock::Hook {
        let Some(p) = PARSED.get_ptr_mut(0) else {
            return Verdict::Pass;
        };
        // SAFETY: this CPU's slot; read back through the reference only (no other writes).
        unsafe {
            let fp = core::ptr::addr_of_mut!((*p).flow);
            if parse_then(pkt, |f| keep_flow(fp, &f)).is_none() {
                stats.unparsed_packets += 1;
                return Verdict::Pass;
            }
            (&*fp, p)
        }
    } else {
        let Some(flow) = parse(pkt) else {
            stats.unparsed_packets += 1;
            return Verdict::Pass;
        };
        local = flow;
        (&local, core::ptr::null_mut())
    };
    let g = (gen_word & 1) as u8;
    let Some(j) = JUDGING.get_ptr_mut(0) else {
        return Verdict::Pass;
    };
    // SAFETY: fields of this CPU's slot (see JUDGING).
    let set = unsafe {
        Candidates::new(
            core::ptr::addr_of_mut!((*j).set) as *mut u64,
            core::ptr::addr_of_mut!((*j).nonempty),
        )
    };
    if !candidates(flow, gen_word, &set) {
        return Verdict::Pass;
    }
    if clock == Clock::Hook {
        let ends = flow::canonical((&flow.src, flow.sport), (&flow.dst, flow.dport), flow.proto);
        // SAFETY: this CPU's slot (see above); volatile, so the judging loop reads it back.
        unsafe {
            let e = core::ptr::addr_of_mut!((*parsed).ends) as *mut u64;
            for (i, w) in ends.iter().enumerate() {
                core::ptr::write_volatile(e.add(i), *w);
            }
        }
    }
    // The clock and the safety switches only for a packet some fault's selectors match (at the
    // egress hooks, the clock for one whose destination a fault names: see `Clock`): most
    // packets match none, and the clock read was the largest single cost of passing one (~25 ns
    // of ~180 in a test run here). One word disarms everything; a stale daemon heartbeat lapses
    // every fault; either way the packet passes as if nothing matched.
    let now = match clock {
        // SAFETY: this CPU's slot, written by the caller for this packet (see HOOK_CLOCK).
        // (Never missing: index 0 of a per-CPU array.)
        Clock::Hook => match HOOK_CLOCK.get_ptr(0) {
            Some(t) => unsafe { core::ptr::read_volatile(t) },
            None => unsafe { bpf_ktime_get_ns() },
        },
        // SAFETY: a helper without arguments.
        Clock::Classified => unsafe { bpf_ktime_get_ns() },
    };
    if ctrl_word(ctrl::ARMED) != 1
        || now > ctrl_word(ctrl::HEARTBEAT_NS).saturating_add(ctrl_word(ctrl::GRACE_NS))
    {
        stats.lapsed_packets += 1;
        return Verdict::Pass;
    }
    // The change the matching faults make, built in the map (see STASH).
    let Some(stash) = STASH.get_ptr_mut(0) else {
        return Verdict::Pass;
    };
    // SAFETY: this CPU's slot (see STASH).
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*stash).change), Change::default())
    };
    // The fault judged last. A fault's rules are consecutive (the compiler numbers them so), and
    // the rules are popped in order: a fault whose two rules both match meets itself right
    // after itself, and is judged once. (Before 256 faults, a 64-bit mask of the slots judged;
    // 256 bits in map memory cost a matched packet ~10 ns more than this register.)
    let mut last = u32::MAX;
    for _ in 0..MAX_MATCHES_PER_PACKET {
        let Some(r) = set.pop_lowest() else { break };
        let Some(rule) = RULES.get(u32::from(g) * MAX_RULES + (r & (MAX_RULES - 1))) else {
            break;
        };
        let slot = rule.slot & (MAX_FAULTS - 1);
        if slot == last {
            continue; // the fault's other rule matched too
        }
        last = slot;
        let Some(cfg) = FAULTS.get(u32::from(g) * MAX_FAULTS + slot) else {
            break;
        };
        let Some(act) = Action::from_u32(cfg.action) else {
            continue; // an action this program does not know: fail open
        };
        if act.stage() & stages == 0 {
            continue; // judged at another hook
        }
        if now >= cfg.deadline_ns {
            stats.expired_packets += 1;
            continue;
        }
        let Some(c) = counters(slot, jh) else {
            continue;
        };
        let bytes = u64::from(len);
        c.count(Outcome::Matched, bytes);
        let selected = now >= cfg.start_ns
            && cfg.flags & flag::DRY_RUN == 0
            && cfg.pulse_on(now)
            && (cfg.flow_ppm >= 1_000_000
                || flow_ppm(flow, parsed, clock, cfg.seed) < cfg.flow_ppm);
        if !selected {
            c.count(Outcome::Passed, bytes);
            continue;
        }
        // A DNS fault acts on the answers its names match (`dns::classify`): a drop (its
        // threshold is 1) as a blackhole, a delay as a delay (no loss, no reorder).
        let act = if act == Action::Dns {
            // SAFETY: this CPU's slot (see STASH).
            let names =
                unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*stash).dns_faults)) };
            let mode = Answer::from_flags(cfg.flags);
            let index = (cfg.flags & flag::DNS_INDEX_MASK) >> flag::DNS_INDEX_SHIFT;
            if names & (1 << index) == 0 || mode.is_none() {
                c.count(Outcome::Passed, bytes);
                continue;
            }
            match mode {
                Some(Answer::Drop) => Action::Blackhole,
                Some(Answer::Delay) => Action::Delay,
                _ => Action::Dns,
            }
        } else {
            act
        };
        match act {
            Action::Drop | Action::Blackhole => {
                if loss::lost(cfg, slot) {
                    c.count(act.outcome(), bytes);
                    return Verdict::Drop;
                }
                c.count(Outcome::Passed, bytes);
            }
            Action::Delay => {
                // A delay fault's loss first (none: threshold 0), as netem: lost, or delayed, or
                // (a reorder share) sent at once.
                if loss::lost(cfg, slot) {
                    c.count(Outcome::Dropped, bytes);
                    return Verdict::Drop;
                }
                if u64::from(rand()) < cfg.reorder {
                    c.count(Outcome::Reordered, bytes);
                    continue;
                }
                // The kernel stamps delivery times on IP skbs only (`bpf_skb_set_tstamp` answers
                // EOPNOTSUPP when the frame's protocol is a VLAN tag): a tagged frame cannot be
                // held and passes, counted so (found by the differential fuzzing: it was
                // counted delayed and sent at once). Read back from the stash, not from `flow`:
                // a branch on the parser's own value would make the verifier keep every parse
                // path apart (210k -> 500k instructions on 6.18).
                if usize::from(stash_layout(stash, flow).l3_off) != EthHdr::LEN {
                    c.count(Outcome::Passed, bytes);
                    continue;
                }
                let d = delay_of(cfg);
                add_change(stash, |ch| ch.delay_ns += d);
                c.count(act.outcome(), bytes);
            }
            Action::Rate => {
                let ip_bytes = rate::ip_bytes(pkt, &stash_layout(stash, flow), len);
                let pace = ctrl_word(ctrl::RATE_PACE) == 1;
                match rate::admit(cfg, slot, now, ip_bytes, pace) {
                    None => {
                        c.count(Outcome::Dropped, bytes);
                        return Verdict::Drop;
                    }
                    Some(0) => c.count(Outcome::Passed, bytes),
                    Some(wait) => {
                        add_change(stash, |ch| ch.delay_ns += wait);
                        c.count(act.outcome(), bytes);
                    }
                }
            }
            Action::Reject => match reject::plan(
                pkt,
                &stash_layout(stash, flow),
                &flow.dst,
                Reply::from_flags(cfg.flags),
            ) {
                // A reset or an ICMP error is never answered (our own replies among them).
                Plan::Pass => c.count(Outcome::Passed, bytes),
                Plan::Silent => {
                    c.count(act.outcome(), bytes);
                    return Verdict::Drop;
                }
                Plan::Answer(r) => {
                    c.count(act.outcome(), bytes);
                    return Verdict::Reject(r);
                }
            },
            // Taken out above: a drop is a blackhole, a delay a delay, and these an error.
            Action::Dns => {
                c.count(act.outcome(), bytes);
                return Verdict::DnsError(cfg.flags);
            }
            Action::Duplicate | Action::Corrupt => {
                // Corrupt needs a payload to flip a bit of; a packet without one passes.
                if u64::from(rand()) < cfg.threshold
                    && (act == Action::Duplicate
                        || corrupt::payload(pkt, &stash_layout(stash, flow), len).is_some())
                {
                    let dup = act == Action::Duplicate;
                    add_change(stash, |ch| {
                        ch.duplicate |= dup;
                        ch.corrupt |= !dup;
                    });
                    c.count(act.outcome(), bytes);
                } else {
                    c.count(Outcome::Passed, bytes);
                }
            }
        }
    }
    // SAFETY: this CPU's slot (see STASH).
    let ch = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*stash).change)) };
    if ch.delay_ns != 0 || ch.duplicate || ch.corrupt {
        Verdict::Change(now)
    } else {
        Verdict::Pass
    }
}
