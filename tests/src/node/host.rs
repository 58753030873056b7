//! What a node changes on the machine outside its own directory, recorded before [`super::up`]
//! changes anything (`host.json` in the run's directory) and put back by [`super::down`]:
//! - sysctls: the CNI bridge plugin sets `net.ipv4.ip_forward`, kube-proxy
//!   `net.ipv4.conf.all.route_localnet` (kubelet would set more; scripts/build-k8s.sh makes it
//!   only warn);
//! - paths kubelet, containerd and the DaemonSet's hostPath volumes create (`/var/log/pods`,
//!   `/run/containerd`, `/var/lib/cni`, `/run/injector`, ...): removed if they were not there;
//! - netfilter tables kube-proxy's iptables-nft creates: deleted if they were not there;
//! - `/sys/fs/bpf` made a shared mount (as under systemd) for the DaemonSet's HostToContainer
//!   volume: made private again if it was.
//!
//! [`Snapshot`] is the test's picture of all of that and more (links, routes, mounts, cgroups,
//! rules, pins): taken before `up` and after `down`, the two must be equal.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::cmd::run;

/// Sysctls a node's components may set on the host.
const SYSCTLS: [&str; 9] = [
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// Host paths a node's components may create (found by running one: kubelet's hard-coded log
/// directories, containerd's shim and runc state, libcni's result cache, the DaemonSet's
/// `DirectoryOrCreate` volume, the `/lib/modules` this machine lacks and the DaemonSet mounts).
pub(super) const PATHS: [&str; 10] = [
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/var/lib/cni",
    "/run/injector",
    "/lib/modules",
    "/var/lib/kubelet",
    "/var/lib/dockershim",
    "/etc/kubernetes",
    "/run/kubernetes",
];

const BPFFS: &str = "/sys/fs/bpf";

/// What was there before the node: restored by [`restore`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Before {
    sysctls: BTreeMap<String, String>,
    absent: Vec<String>,
    nft_tables: Vec<String>,
    bpffs_shared: bool,
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name))
        .ok()
        .map(|v| v.trim().to_string())
}

/// `family name` of every netfilter table (`ip nat`, `ip6 filter`, ...).
fn nft_tables() -> Result<Vec<String>> {
    Ok(run("nft", &["list", "tables"])?
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(|t| t.trim().to_string())
        .collect())
}

/// The optional fields of `mount`'s line in /proc/self/mountinfo (`shared:N`, `master:N`).
fn propagation(mount: &str) -> Result<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mount))
        .with_context(|| format!("{mount} is not a mount point"))?;
    Ok(line
        .split(' ')
        .skip(6)
        .take_while(|f| *f != "-")
        .collect::<Vec<_>>()
        .join(" "))
}

/// Records the host's state into `dir/host.json`, then makes `/sys/fs/bpf` shared.
pub(super) fn record(dir: &Path) -> Result<()> {
    let before = Before {
        sysctls: SYSCTLS
            .iter()
            .filter_map(|s| read_sysctl(s).map(|v| (s.to_string(), v)))
            .collect(),
        absent: PATHS
            .iter()
            .filter(|p| !Path::new(p).exists())
            .map(|p| p.to_string())
            .collect(),
        nft_tables: nft_tables()?,
        bpffs_shared: propagation(BPFFS)?.contains("shared:"),
    };
    std::fs::write(dir.join("host.json"), serde_json::to_vec_pretty(&before)?)?;
    if !before.bpffs_shared {
        run("mount", &["--make-shared", BPFFS])?;
    }
    Ok(())
}

/// Puts back what `dir/host.json` recorded (every step tried; the first error returned).
pub(super) fn restore(dir: &Path) -> Result<()> {
    let path = dir.join("host.json");
    let Ok(text) = std::fs::read(&path) else {
        return Ok(());
    };
    let before: Before =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))?;
    let mut first: Option<anyhow::Error> = None;
    let mut keep = |r: Result<()>| {
        if let Err(e) = r
            && first.is_none()
        {
            first = Some(e);
        }
    };
    for (name, value) in &before.sysctls {
        if read_sysctl(name).as_deref() != Some(value) {
            keep(
                std::fs::write(sysctl_path(name), value)
                    .with_context(|| format!("restoring {name}={value}")),
            );
        }
    }
    for p in &before.absent {
        if Path::new(p).exists() {
            keep(std::fs::remove_dir_all(p).with_context(|| format!("removing {p}")));
        }
    }
    match nft_tables() {
        Ok(now) => {
            for t in now.iter().filter(|t| !before.nft_tables.contains(t)) {
                let mut args = vec!["delete", "table"];
                args.extend(t.split_whitespace());
                keep(run("nft", &args).map(drop));
            }
        }
        Err(e) => keep(Err(e)),
    }
    if !before.bpffs_shared {
        keep(run("mount", &["--make-private", BPFFS]).map(drop));
    }
    first.map_or(Ok(()), Err)
}

/// A textual picture of what a node could leave behind on the host.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot(pub String);

impl Snapshot {
    pub fn take() -> Result<Snapshot> {
        let mut s = String::new();
        // Links by name and master (indexes and counters aside), addresses, routes.
        for l in run("ip", &["-o", "link", "show"])?.lines() {
            let name = l.split(": ").nth(1).unwrap_or_default();
            let master = l.split(" master ").nth(1).map(|m| m.split(' ').next());
            writeln!(s, "link {name} master={master:?}")?;
        }
        s += &run("ip", &["-br", "addr"])?;
        s += &run("ip", &["route"])?;
        s += &run("ip", &["-6", "route"])?;
        // Mounts (mount point, propagation, type).
        for l in std::fs::read_to_string("/proc/self/mountinfo")?.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            // Named network namespaces (and `ip netns`'s own mount of their directory) are the
            // netns lab's and the second node's, which `down` deletes; a node pins its pods'
            // under its own directory (containerd's netns_mounts_under_state_dir).
            if f.get(4)
                .is_some_and(|m| *m == "/run/netns" || m.starts_with("/run/netns/"))
            {
                continue;
            }
            let sep = f.iter().position(|x| *x == "-").unwrap_or(f.len());
            writeln!(
                s,
                "mount {} {} {}",
                f.get(4).unwrap_or(&""),
                f[6.min(sep)..sep].join(","),
                f.get(sep + 1).unwrap_or(&"")
            )?;
        }
        // Top-level cgroups of every hierarchy.
        for h in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
            if let Ok(children) = std::fs::read_dir(h.path()) {
                let mut names: Vec<String> = children
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                writeln!(s, "cgroup {}: {names:?}", h.path().display())?;
            }
        }
        // Rules (no counters), tables, sysctls, paths, pins.
        for save in ["iptables-save", "ip6tables-save"] {
            for l in run(save, &[])?.lines().filter(|l| !l.starts_with('#')) {
                let l = l.split(" [").next().unwrap_or(l);
                writeln!(s, "{save}: {l}")?;
            }
        }
        writeln!(s, "nft tables: {:?}", nft_tables()?)?;
        for name in SYSCTLS {
            writeln!(s, "sysctl {name}={:?}", read_sysctl(name))?;
        }
        for p in PATHS {
            writeln!(s, "path {p}: {}", Path::new(p).exists())?;
        }
        // The DaemonSet's pins (deploy/: --bpffs=/sys/fs/bpf/injector); the lab's are its own.
        let mut pins: Vec<String> = std::fs::read_dir(Path::new(BPFFS).join("injector"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        pins.sort();
        writeln!(s, "bpffs injector/: {pins:?}")?;
        Ok(Snapshot(s))
    }

    /// The lines only in `self` (`-`) and only in `after` (`+`).
    pub fn diff(&self, after: &Snapshot) -> String {
        let a: Vec<&str> = self.0.lines().collect();
        let b: Vec<&str> = after.0.lines().collect();
        let mut d = String::new();
        for l in a.iter().filter(|l| !b.contains(l)) {
            let _ = writeln!(d, "- {l}");
        }
        for l in b.iter().filter(|l| !a.contains(l)) {
            let _ = writeln!(d, "+ {l}");
        }
        d
    }
}
