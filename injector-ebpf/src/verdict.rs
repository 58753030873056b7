//! The packet path, the same for every judging hook: parse once -> safety checks -> classify once
//! -> act -> count. Hooks differ only in what they pass in (hook ids, which action kinds they judge).

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use injector_common::{
    Action, FaultCounters, Hook, HookStats, JudgeHook, MAX_FAULTS, MAX_MATCHES_PER_PACKET,
    MAX_RULES, Outcome, ctrl, flag,
    flow::{self, Endpoint},
};

use crate::{
    classify::candidates,
    maps::{COUNTERS, CTRL, FAULTS, RULES, STATS},
    parse::{Bytes, Flow, parse},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Hold the packet this many ns (EDT).
    Delay(u64),
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
fn rand() -> u32 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}

#[inline(always)]
fn flow_ppm(f: &Flow, seed: u32) -> u32 {
    let a = Endpoint {
        addr: f.src,
        port: f.sport,
    };
    let b = Endpoint {
        addr: f.dst,
        port: f.dport,
    };
    flow::ppm(&a, &b, f.proto, seed)
}

/// Judges one packet of `len` bytes at `hook`, for the actions of `stages` (an
/// `injector_common::stage` set; the others are judged at another hook). Each fault is judged once
/// however many of its rules match (a both-ways fault whose `from` and `to` overlap matches twice).
#[inline(always)]
pub fn judge<B: Bytes>(pkt: &B, len: u32, hook: Hook, jh: JudgeHook, stages: u32) -> Verdict {
    let Some(stats) = hook_stats(hook) else {
        return Verdict::Pass;
    };
    stats.seen_packets += 1;
    stats.seen_bytes += u64::from(len);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // Safety switches first (no parsing while they hold): one word disarms everything; a stale
    // daemon heartbeat lapses every fault.
    if ctrl_word(ctrl::ARMED) != 1
        || now > ctrl_word(ctrl::HEARTBEAT_NS).saturating_add(ctrl_word(ctrl::GRACE_NS))
    {
        stats.lapsed_packets += 1;
        return Verdict::Pass;
    }
    let gen_word = ctrl_word(ctrl::GEN);
    if gen_word & ctrl::GEN_ANY == 0 {
        // No fault installed: nothing to parse for.
        return Verdict::Pass;
    }
    let Some(flow) = parse(pkt) else {
        stats.unparsed_packets += 1;
        return Verdict::Pass;
    };
    let g = (gen_word & 1) as u8;
    let mut set = candidates(&flow, gen_word);
    let mut delay = 0u64;
    // Slots (faults) judged for this packet already: one bit each (MAX_FAULTS = 64).
    let mut judged = 0u64;
    for _ in 0..MAX_MATCHES_PER_PACKET {
        let Some(r) = set.pop_lowest() else { break };
        let Some(rule) = RULES.get(u32::from(g) * MAX_RULES + (r & (MAX_RULES - 1))) else {
            break;
        };
        let slot = rule.slot & (MAX_FAULTS - 1);
        if judged & (1 << slot) != 0 {
            continue; // the fault's other rule matched too
        }
        judged |= 1 << slot;
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
            && (cfg.flow_ppm >= 1_000_000 || flow_ppm(&flow, cfg.seed) < cfg.flow_ppm);
        if !selected {
            c.count(Outcome::Passed, bytes);
            continue;
        }
        match act {
            Action::Drop | Action::Blackhole => {
                if u64::from(rand()) < cfg.drop_threshold {
                    c.count(act.outcome(), bytes);
                    return Verdict::Drop;
                }
                c.count(Outcome::Passed, bytes);
            }
            Action::Delay => {
                // Uniform in [delay - jitter, delay + jitter]; 64 random bits keep the bias negligible.
                let j = if cfg.jitter_ns == 0 {
                    0
                } else {
                    ((u64::from(rand()) << 32) | u64::from(rand())) % (2 * cfg.jitter_ns + 1)
                };
                delay += cfg.delay_ns.saturating_sub(cfg.jitter_ns) + j;
                c.count(act.outcome(), bytes);
            }
        }
    }
    if delay > 0 {
        Verdict::Delay(delay)
    } else {
        Verdict::Pass
    }
}
