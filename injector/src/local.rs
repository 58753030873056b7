//! `injector local ...`: direct access to a daemon's pinned maps on this node, without its API.
//! The first-light way to add a drop entry; the fault API supersedes it.

use std::{path::Path, time::Duration};

use anyhow::Result;
use injector_common::{Hook, Target};

use crate::{
    kernel::{Maps, monotonic_ns},
    parse::Cidr,
};

pub fn add_drop(bpffs: &Path, to: Cidr, lifetime: Duration) -> Result<()> {
    let mut maps = Maps::open_pinned(bpffs)?;
    let deadline_ns = monotonic_ns() + lifetime.as_nanos() as u64;
    maps.put(
        to,
        Target {
            deadline_ns,
            fault_id: 0,
            _pad: 0,
        },
    )?;
    println!("drop {to} for {}s", lifetime.as_secs_f64());
    Ok(())
}

pub fn rm_drop(bpffs: &Path, to: Cidr) -> Result<()> {
    let mut maps = Maps::open_pinned(bpffs)?;
    if !maps.remove(to)? {
        anyhow::bail!("--to: no drop entry for {to}; `injector local stats` lists them");
    }
    println!("removed {to}");
    Ok(())
}

pub fn stats(bpffs: &Path) -> Result<()> {
    let maps = Maps::open_pinned(bpffs)?;
    let now = monotonic_ns();
    for (cidr, t) in maps.entries()? {
        let left = t.deadline_ns.saturating_sub(now) as f64 / 1e9;
        println!("entry {cidr} remaining_s={left:.1}");
    }
    for hook in Hook::ALL {
        let s = maps.stats(hook)?;
        println!(
            "hook {} seen={} unparsed={} matched={} dropped={} dropped_bytes={} expired={}",
            hook.name(),
            s.seen_packets,
            s.unparsed_packets,
            s.matched_packets,
            s.dropped_packets,
            s.dropped_bytes,
            s.expired_packets
        );
    }
    Ok(())
}
