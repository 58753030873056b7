//! What a node looks like from the outside: qdiscs, links, programs on the TCX hooks, bpffs pins.
//! Taken before a daemon starts and after it stops, the two must be equal.

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{Context as _, Result, bail};
use aya::programs::{SchedClassifier, TcAttachType};

use crate::cmd::{ip, run};

/// Runs `f` on a fresh thread inside network namespace `netns` (only that thread moves).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a valid fd, for this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .expect("netns thread panicked")
    })
}

/// Names of the programs attached through TCX to `iface` in `netns`, ingress then egress.
pub fn tcx_programs(netns: &str, iface: &str) -> Result<Vec<String>> {
    in_netns(netns, || -> Result<Vec<String>> {
        let mut names = Vec::new();
        for at in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(iface, at)?;
            for p in progs {
                names.push(format!("{at:?}:{}", p.name_as_str().unwrap_or("?")));
            }
        }
        Ok(names)
    })?
}

/// A textual picture of `netns` (qdiscs, links, TCX programs) and of the bpffs directory `pins`.
pub fn node(netns: &str, pins: &str) -> Result<String> {
    let mut s = String::new();
    s += &run("tc", &["-n", netns, "qdisc", "show"])?;
    let links = ip(netns, &["-o", "link", "show"])?;
    s += &links;
    for line in links.lines() {
        let name = line
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        if !name.is_empty() {
            s += &format!("{name} tcx={:?}\n", tcx_programs(netns, name)?);
        }
    }
    match std::fs::read_dir(pins) {
        Ok(rd) => {
            let mut v: Vec<_> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            s += &format!("pins {pins}: {v:?}\n");
        }
        Err(_) => s += &format!("pins {pins}: none\n"),
    }
    Ok(s)
}
