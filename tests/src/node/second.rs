//! The second node of a run on this one machine. A node is a kernel's worth of host state, and a
//! second kubelet, containerd and DaemonSet pod beside the first would share the host's: the
//! DaemonSet's hostPath pins (`/sys/fs/bpf/injector`) and API socket (`/run/injector`), kubelet's
//! hard-coded `/var/lib/kubelet/{device-plugins,pod-resources}` sockets and its `/var/log/pods`
//! (whose garbage collector deletes the directories of pods it does not know: the other node's),
//! `cni0`, the ports kubelet and kube-proxy bind, the iptables rules kube-proxy owns, and the
//! `kubepods` cgroups. So the second node gets what a second machine would have:
//! - a **network namespace** (`<prefix>-node2`) with an underlay link to the host
//!   ([`HOST_IP`]/[`NODE_IP`], MTU [`UNDERLAY_MTU`]), where its `cni0`, pod veths, `flannel.1`,
//!   iptables rules, kubelet's and kube-proxy's ports and the DaemonSet pod's (hostNetwork) port
//!   are its own;
//! - a **mount namespace** (pinned at `<run>/node2/mnt`, a slave of the host's) with its own
//!   bpffs instance on `/sys/fs/bpf` and tmpfs on `/run`, `/var/log` and `/var/lib/{kubelet,cni,
//!   dockershim}`: containerd's shims and runc resolve the DaemonSet's hostPath volumes there;
//! - a **cgroup root** (`/<prefix>-node2` in every hierarchy: kubelet's `--cgroup-root`).
//!
//! Its processes are started through `nsenter` (which execs: the pid file names the program
//! itself). The two nodes are joined as flannel's VXLAN backend joins nodes (`flannel.1`, VNI 1,
//! port 8472, the static route, neighbour and fdb entry of each other node's lease), over the
//! underlay link: pod-to-pod traffic between the nodes crosses the real `flannel.1` on both.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::{
    cluster::spawn_kept,
    cmd::{ip, run},
    lab::{FlannelLease, join_flannel},
};

/// The host's end of the underlay link (the first node's address as the second sees it).
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 42, 1);
/// The second node's address (its InternalIP: kubelet's `--node-ip`).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 42, 2);
/// The underlay's MTU: room for VXLAN's 50 bytes around a full 1500-byte pod packet, so the pods
/// keep the bridge plugin's MTU.
const UNDERLAY_MTU: &str = "1550";
/// flannel's VXLAN device, as its backend names it (and the DaemonSet's daemon attaches to).
const FLANNEL: &str = "flannel.1";
/// Mount points the second node gets its own tmpfs on (created on the host first if missing:
/// [`super::host::PATHS`] records and removes those).
const PRIVATE_DIRS: [&str; 5] = [
    "/run",
    "/var/log",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/dockershim",
];

/// The second node's network namespace.
pub fn netns(prefix: &str) -> String {
    format!("{prefix}-node2")
}

/// The host's end of the underlay link: `n2-` and the prefix's last 8 characters (a link's name
/// has at most 15).
pub fn host_link(prefix: &str) -> String {
    let tail: String = prefix
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("n2-{tail}")
}

/// Where the second node keeps its containerd, kubelet and CNI state.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("node2")
}

/// The pinned mount namespace.
fn mntns(run_dir: &Path) -> PathBuf {
    dir(run_dir).join("mnt")
}

/// The second node's cgroup root (kubelet's `--cgroup-root`).
pub fn cgroup_root(prefix: &str) -> String {
    format!("{prefix}-node2")
}

/// The flannel MAC of node `n` (1 or 2).
fn flannel_mac(n: u8) -> String {
    format!("0e:88:00:00:00:{n:02x}")
}

/// Makes the namespaces, the underlay link and the cgroup root. Whatever it made is removed by
/// [`remove`] (the caller's `down`), also when it fails part-way.
pub fn create(prefix: &str, run_dir: &Path) -> Result<()> {
    let ns = netns(prefix);
    let host = host_link(prefix);
    std::fs::create_dir_all(dir(run_dir))?;
    run("ip", &["netns", "add", &ns])?;
    ip(
        "",
        &[
            "link",
            "add",
            &host,
            "mtu",
            UNDERLAY_MTU,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            UNDERLAY_MTU,
            "netns",
            &ns,
        ],
    )?;
    ip("", &["addr", "add", &format!("{HOST_IP}/24"), "dev", &host])?;
    ip("", &["link", "set", &host, "up"])?;
    ip(&ns, &["link", "set", "lo", "up"])?;
    ip(
        &ns,
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"],
    )?;
    ip(&ns, &["link", "set", "eth0", "up"])?;
    ip(
        &ns,
        &["route", "add", "default", "via", &HOST_IP.to_string()],
    )?;

    for d in PRIVATE_DIRS {
        std::fs::create_dir_all(d)?;
    }
    let pin = mntns(run_dir);
    std::fs::write(&pin, "")?;
    let script = format!(
        "set -e\nmount -t bpf bpf /sys/fs/bpf\nfor d in {}; do mount -t tmpfs -o mode=0755 tmpfs $d; done\n",
        PRIVATE_DIRS.join(" ")
    );
    run(
        "unshare",
        &[
            &format!("--mount={}", pin.display()),
            "--propagation",
            "slave",
            "sh",
            "-c",
            &script,
        ],
    )
    .context("the second node's mount namespace")?;

    for h in cgroup_hierarchies() {
        std::fs::create_dir_all(h.join(cgroup_root(prefix)))?;
    }
    Ok(())
}

/// Every cgroup hierarchy's root: /sys/fs/cgroup itself under cgroup v2 (the unified
/// hierarchy), else each hierarchy mounted under it (v1: one per controller, as on this machine).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Joins the host (node 1) and the second node as flannel's VXLAN backend does
/// ([`join_flannel`]): on each side `flannel.1` (local = its underlay address, its pod network's
/// `.0` as its address) with the other's lease.
pub fn join_vxlan(prefix: &str) -> Result<()> {
    let ns = netns(prefix);
    let host = host_link(prefix);
    let sides = [
        ("", host.as_str(), HOST_IP, 1u8),
        (ns.as_str(), "eth0", NODE_IP, 2u8),
    ];
    for (i, (netns, dev, local, n)) in sides.iter().enumerate() {
        let (_, _, peer_ip, peer_n) = sides[1 - i];
        let lease = FlannelLease {
            pod_cidr: super::pod_cidr(peer_n),
            gateway: super::pod_gateway(peer_n, 0).to_string(),
            mac: flannel_mac(peer_n),
            underlay: peer_ip,
        };
        join_flannel(
            netns,
            dev,
            *local,
            &flannel_mac(*n),
            None,
            &super::pod_gateway(*n, 0).to_string(),
            &[lease],
        )?;
    }
    Ok(())
}

/// Starts `bin args...` as process `name` of run `prefix` inside the second node's namespaces
/// ([`spawn_kept`], through `nsenter`, which execs it).
pub fn spawn(
    prefix: &str,
    run_dir: &Path,
    name: &str,
    bin: &Path,
    args: &[String],
) -> Result<PathBuf> {
    let mut all = vec![
        format!("--mount={}", mntns(run_dir).display()),
        format!("--net=/run/netns/{}", netns(prefix)),
        "--".into(),
        bin.display().to_string(),
    ];
    all.extend_from_slice(args);
    spawn_kept(prefix, name, Path::new("/usr/bin/nsenter"), &all)
}

/// `cmd args...` inside the second node's namespaces, to completion; its stdout.
pub fn exec(prefix: &str, run_dir: &Path, cmd: &str, args: &[&str]) -> Result<String> {
    let mount = format!("--mount={}", mntns(run_dir).display());
    let net = format!("--net=/run/netns/{}", netns(prefix));
    let mut all = vec![mount.as_str(), net.as_str(), "--", cmd];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// Undoes [`create`] and [`join_vxlan`] once the node's processes are gone: the mounts made in
/// its mount namespace (containerd's overlays, pod netns pins) unmounted, the namespace's pin
/// unmounted, the network namespace deleted (its links with it), the host's `flannel.1` and
/// underlay link deleted, the cgroup root removed. Idempotent; every step is tried.
pub fn remove(prefix: &str, run_dir: &Path, errors: &mut Vec<String>) {
    let pin = mntns(run_dir);
    let pinned = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*pin.display().to_string()));
    if pinned {
        // The namespace outlives its processes while pinned; what it mounted under the run's
        // directory would keep the directory busy, so it goes first, deepest first.
        let info = exec(prefix, run_dir, "cat", &["/proc/self/mountinfo"]).unwrap_or_default();
        let root = dir(run_dir).display().to_string();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&format!("{root}/")))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts.dedup();
        for m in mounts {
            if let Err(e) = exec(prefix, run_dir, "umount", &["-l", m]) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = run("umount", &[&pin.display().to_string()]) {
            errors.push(format!("{e:#}"));
        }
    }
    let ns = netns(prefix);
    if Path::new("/run/netns").join(&ns).exists()
        && let Err(e) = run("ip", &["netns", "del", &ns])
    {
        errors.push(format!("{e:#}"));
    }
    for link in [FLANNEL.to_string(), host_link(prefix)] {
        if Path::new("/sys/class/net").join(&link).exists()
            && let Err(e) = ip("", &["link", "del", &link])
        {
            errors.push(format!("{e:#}"));
        }
    }
    for h in cgroup_hierarchies() {
        let top = h.join(cgroup_root(prefix));
        if top.is_dir() {
            super::remove_cgroup(&top, errors);
        }
    }
}
