//! `injector local ...`: a daemon's pinned maps on this node, read or disarmed directly, without
//! its API: what still works when the daemon is wedged or gone. The daemon is the only writer of
//! faults; these commands never add one.

use std::path::Path;

use anyhow::Result;
use injector_common::{Hook, JudgeHook, Outcome, ctrl};

use crate::{
    daemon::records,
    kernel::{Maps, monotonic_ns},
};

/// Disarms every fault in one map write. `injector arm` (through the daemon) re-arms.
pub fn abort(bpffs: &Path) -> Result<()> {
    Maps::open_pinned(bpffs)?.set_ctrl(ctrl::ARMED, 0)?;
    println!("aborted: every fault disarmed");
    Ok(())
}

/// Prints the control words, each live fault's counters per hook, and the per-hook counters.
pub fn stats(bpffs: &Path) -> Result<()> {
    let mut maps = Maps::open_pinned(bpffs)?;
    // Names from the records of the generation the kernel runs.
    let names: std::collections::BTreeMap<u32, String> =
        records::manifest(&maps, maps.active_gen()?)?
            .into_iter()
            .filter_map(|(slot, id)| {
                records::fault(&maps, id)
                    .ok()
                    .flatten()
                    .map(|r| (slot, r.spec.name))
            })
            .collect();
    let now = monotonic_ns();
    println!(
        "armed={} gen={} heartbeat_age_ms={} records={}",
        maps.ctrl(ctrl::ARMED)?,
        maps.ctrl(ctrl::GEN)? & 1,
        now.saturating_sub(maps.ctrl(ctrl::HEARTBEAT_NS)?) / 1_000_000,
        records::fault_ids(&mut maps)?.len()
    );
    for (slot, cfg) in maps.live_faults()? {
        let name = names
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| format!("slot{slot}"));
        let left = cfg.deadline_ns.saturating_sub(now) as f64 / 1e9;
        for jh in JudgeHook::ALL {
            let c = maps.fault_counters(slot, jh)?;
            let outcomes: Vec<String> = Outcome::ALL
                .iter()
                .map(|&o| format!("{}={}", o.name(), c.packets(o)))
                .collect();
            println!(
                "fault {name} slot={slot} hook={} remaining_s={left:.1} {} matched_bytes={}",
                jh.name(),
                outcomes.join(" "),
                c.get(Outcome::Matched).bytes
            );
        }
    }
    for hook in Hook::ALL {
        let s = maps.stats(hook)?;
        println!(
            "hook {} seen={} unparsed={} lapsed={} skipped={} expired={}",
            hook.name(),
            s.seen_packets,
            s.unparsed_packets,
            s.lapsed_packets,
            s.skipped_packets,
            s.expired_packets
        );
    }
    Ok(())
}
