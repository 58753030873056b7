//! fq on the judging egress devices while a delay fault exists: installed through rtnetlink where
//! the device has its default `noqueue`, sized for rate x delay, remembered (also across a daemon
//! restart, in the SPECS map) and removed again when no delay fault is left or the daemon stops.
//! A root qdisc the daemon did not install is never replaced: the device is reported instead.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{core::Core, records};
use crate::{
    fault::spec::Action,
    kernel::{attach::Role, qdisc},
};

#[derive(Default, Serialize, Deserialize)]
pub struct FqState {
    /// Devices whose root fq the daemon installed (and must remove).
    pub installed: BTreeSet<String>,
    /// The parameters of those fq qdiscs.
    pub params: Option<(u32, u32, u32)>,
    /// Devices where delay cannot work, and why.
    #[serde(skip)]
    pub refused: BTreeMap<String, String>,
}

fn longest_delay(c: &Core) -> Option<Duration> {
    c.faults
        .iter()
        .filter_map(|e| match e.fault.action {
            Action::Delay { latency, jitter } => Some(latency + jitter),
            _ => None,
        })
        .max()
}

fn persist(c: &mut Core) {
    if let Err(e) = records::put_own(&mut c.maps, records::key::FQ, &c.fq) {
        warn!(error = %e, "storing the fq record");
    }
}

/// Reads what a previous instance installed.
pub fn adopt(c: &mut Core) {
    if let Some(st) = records::own::<FqState>(&c.maps, records::key::FQ) {
        c.fq = st;
    }
}

/// Brings the devices' qdiscs in line with the fault set.
pub fn sync(c: &mut Core) {
    let want = if c.features.fq {
        longest_delay(c)
    } else {
        None
    };
    let before = (c.fq.installed.clone(), c.fq.params);
    match want {
        Some(delay) => {
            let p = qdisc::fq_params(c.fq_max_pps, delay);
            let key = (p.limit, p.horizon_us, p.timer_slack_ns);
            let devices: Vec<String> = c
                .ifaces
                .iter()
                .filter(|(_, s)| {
                    s.error.is_none() && matches!(s.role, Role::PodVeth | Role::Overlay)
                })
                .map(|(n, _)| n.clone())
                .collect();
            for dev in devices {
                let ours = c.fq.installed.contains(&dev);
                if ours && c.fq.params == Some(key) {
                    continue;
                }
                let kind = match qdisc::root_kind(&dev) {
                    Ok(k) => k,
                    Err(e) => {
                        c.fq.refused
                            .insert(dev, format!("reading its root qdisc: {e}"));
                        continue;
                    }
                };
                if !ours && kind != "noqueue" {
                    if kind != "fq" && !c.fq.refused.contains_key(&dev) {
                        warn!(iface = %dev, qdisc = %kind, "root qdisc is not ours: not replaced, delay faults have no effect there");
                    }
                    let why = if kind == "fq" {
                        "an fq the daemon did not install is used as it is".to_string()
                    } else {
                        format!(
                            "root qdisc {kind} was not installed by the daemon; not replaced, delay has no effect here"
                        )
                    };
                    c.fq.refused.insert(dev, why);
                    continue;
                }
                match qdisc::install_fq(&dev, p) {
                    Ok(()) => {
                        info!(iface = %dev, limit = p.limit, horizon_us = p.horizon_us, "fq installed for delay faults");
                        c.fq.installed.insert(dev.clone());
                        c.fq.refused.remove(&dev);
                    }
                    Err(e) => {
                        c.fq.refused.insert(dev, format!("installing fq: {e}"));
                    }
                }
            }
            c.fq.params = Some(key);
        }
        None => restore_all(c),
    }
    if before != (c.fq.installed.clone(), c.fq.params) {
        persist(c);
    }
}

/// Removes every fq the daemon installed (the devices return to their default qdisc).
pub fn restore_all(c: &mut Core) {
    for dev in std::mem::take(&mut c.fq.installed) {
        match qdisc::delete_root(&dev) {
            Ok(()) => info!(iface = %dev, "fq removed, default qdisc restored"),
            // The device is gone, or someone removed it already: nothing to restore.
            Err(e)
                if e.raw_os_error() == Some(libc::ENODEV)
                    || e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => warn!(iface = %dev, error = %e, "removing the fq we installed"),
        }
    }
    c.fq.params = None;
    c.fq.refused.clear();
}
