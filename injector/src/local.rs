//! `injector local ...`: a daemon's pinned maps on this node, edited directly (no API). `apply`
//! replaces the whole fault set atomically; `abort` disarms every fault in one write.

use std::{collections::BTreeMap, io::Read as _, path::Path};

use anyhow::{Context as _, Result, bail};
use injector_common::{Hook, JudgeHook, ctrl};

use crate::{
    fault::{
        compile::{assign_slots, compile},
        spec::{Action, Fault, FaultSpec},
    },
    features,
    kernel::{Maps, monotonic_ns},
};

/// Reads faults from a JSON file (`-` for stdin): a list of faults, or `{"faults": [...]}`.
pub fn read_specs(path: &str) -> Result<Vec<FaultSpec>> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("-f: cannot read {path}"))?
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("-f {path}: not JSON"))?;
    let list = match v {
        serde_json::Value::Array(l) => l,
        serde_json::Value::Object(mut o) if o.get("faults").is_some_and(|f| f.is_array()) => {
            match o.remove("faults") {
                Some(serde_json::Value::Array(l)) => l,
                _ => unreachable!("checked above"),
            }
        }
        _ => bail!("-f {path}: expected a list of faults, or {{\"faults\": [...]}}"),
    };
    list.into_iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::from_value::<FaultSpec>(f).map_err(|e| anyhow::anyhow!("faults[{i}]: {e}"))
        })
        .collect()
}

/// Validates every spec; the first error names `faults[i].field`.
pub fn validate(specs: &[FaultSpec]) -> Result<Vec<Fault>> {
    let faults = specs
        .iter()
        .enumerate()
        .map(|(i, s)| s.validate(&format!("faults[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let delay = faults
        .iter()
        .position(|f| matches!(f.action, Action::Delay { .. }));
    if let Some(i) = delay
        && !features::fq()
    {
        bail!(
            "faults[{i}].delay: the fq qdisc is unavailable on this kernel (not built in, no sch_fq module); \
             delay holds packets in fq (EDT). Use loss or blackhole here, or a kernel with sch_fq"
        );
    }
    Ok(faults)
}

pub fn apply(bpffs: &Path, path: &str) -> Result<()> {
    let faults = validate(&read_specs(path)?)?;
    let names: Vec<&str> = faults.iter().map(|f| f.name.as_str()).collect();
    let slots = assign_slots(&BTreeMap::new(), &names)?;
    let img = compile(&faults, &slots, monotonic_ns())?;
    let mut maps = Maps::open_pinned(bpffs)?;
    maps.install(&img, &slots)?;
    maps.set_ctrl(ctrl::ARMED, 1)?;
    for (f, s) in faults.iter().zip(&slots) {
        println!(
            "fault {} slot={s} for={}s",
            f.name,
            f.lifetime.as_secs_f64()
        );
    }
    Ok(())
}

pub fn clear(bpffs: &Path) -> Result<()> {
    let img = compile(&[], &[], monotonic_ns())?;
    Maps::open_pinned(bpffs)?.install(&img, &[])?;
    println!("cleared");
    Ok(())
}

pub fn abort(bpffs: &Path) -> Result<()> {
    Maps::open_pinned(bpffs)?.set_ctrl(ctrl::ARMED, 0)?;
    println!("aborted: every fault disarmed");
    Ok(())
}

pub fn stats(bpffs: &Path, names: Option<&str>) -> Result<()> {
    let maps = Maps::open_pinned(bpffs)?;
    let names: Vec<String> = match names {
        Some(p) => read_specs(p)?.into_iter().map(|s| s.name).collect(),
        None => vec![],
    };
    let now = monotonic_ns();
    println!(
        "armed={} gen={} heartbeat_age_ms={}",
        maps.ctrl(ctrl::ARMED)?,
        maps.ctrl(ctrl::GEN)?,
        now.saturating_sub(maps.ctrl(ctrl::HEARTBEAT_NS)?) / 1_000_000
    );
    for (slot, cfg) in maps.live_faults()? {
        let name = names
            .get(slot as usize)
            .cloned()
            .unwrap_or_else(|| format!("slot{slot}"));
        let left = cfg.deadline_ns.saturating_sub(now) as f64 / 1e9;
        for jh in JudgeHook::ALL {
            let c = maps.fault_counters(slot, jh)?;
            println!(
                "fault {name} slot={slot} hook={} remaining_s={left:.1} matched={} dropped={} delayed={} passed={} matched_bytes={}",
                jh.name(),
                c.matched_packets,
                c.dropped_packets,
                c.delayed_packets,
                c.passed_packets,
                c.matched_bytes
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
