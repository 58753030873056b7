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

use super::records;
use crate::kernel::{Maps, qdisc};

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

impl FqState {
    fn persist(&self, maps: &mut Maps) {
        if let Err(e) = records::put_own(maps, records::key::FQ, self) {
            warn!(error = %e, "storing the fq record");
        }
    }

    /// What a previous instance installed, from its record.
    pub fn adopt(maps: &Maps) -> Option<FqState> {
        records::own::<FqState>(maps, records::key::FQ)
    }
    /// Brings the qdiscs of the judging egress `devices` in line with `longest` (the longest
    /// delay plus jitter of the fault set; `None`: no delay fault, fq comes off), for fq's
    /// sized to hold `max_pps` for that long. A change is stored in `maps`' records.
    pub fn sync(
        &mut self,
        maps: &mut Maps,
        longest: Option<Duration>,
        devices: Vec<String>,
        max_pps: u32,
    ) {
        let before = (self.installed.clone(), self.params);
        match longest {
            Some(delay) => self.install(delay, devices, max_pps),
            None => self.restore_all(),
        }
        if before != (self.installed.clone(), self.params) {
            self.persist(maps);
        }
    }

    fn install(&mut self, delay: Duration, devices: Vec<String>, max_pps: u32) {
        let c = self; // short, in the loops below
        {
            let p = qdisc::fq_params(max_pps, delay);
            let key = (p.limit, p.horizon_us, p.timer_slack_ns);
            for dev in devices {
                let ours = c.installed.contains(&dev);
                if ours && c.params == Some(key) {
                    continue;
                }
                let kind = match qdisc::root_kind(&dev) {
                    Ok(k) => k,
                    Err(e) => {
                        c.refused
                            .insert(dev, format!("reading its root qdisc: {e}"));
                        continue;
                    }
                };
                if !ours && kind != "noqueue" {
                    if kind != "fq" && !c.refused.contains_key(&dev) {
                        warn!(iface = %dev, qdisc = %kind, "root qdisc is not ours: not replaced, delay faults have no effect there");
                    }
                    let why = if kind == "fq" {
                        "an fq the daemon did not install is used as it is".to_string()
                    } else {
                        format!(
                            "root qdisc {kind} was not installed by the daemon; not replaced, delay has no effect here"
                        )
                    };
                    c.refused.insert(dev, why);
                    continue;
                }
                match qdisc::install_fq(&dev, p) {
                    Ok(()) => {
                        info!(iface = %dev, limit = p.limit, horizon_us = p.horizon_us, "fq installed for delay faults");
                        c.installed.insert(dev.clone());
                        c.refused.remove(&dev);
                    }
                    Err(e) => {
                        c.refused.insert(dev, format!("installing fq: {e}"));
                    }
                }
            }
            c.params = Some(key);
        }
    }

    /// Removes every fq the daemon installed (the devices return to their default qdisc).
    pub fn restore_all(&mut self) {
        let c = self; // short, in the loops below
        for dev in std::mem::take(&mut c.installed) {
            match qdisc::delete_root(&dev) {
                Ok(()) => info!(iface = %dev, "fq removed, default qdisc restored"),
                // The device is gone, or someone removed it already: nothing to restore.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENODEV)
                        || e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => warn!(iface = %dev, error = %e, "removing the fq we installed"),
            }
        }
        c.params = None;
        c.refused.clear();
    }
}
