//! The two-node flannel lab in network namespaces: per node a `cni0` bridge, pods (netns with
//! `eth0`, host `veth*` on cni0) and `flannel.1` (VXLAN vni 1, port 8472, nolearning) with the
//! static route/neigh/fdb entries flannel's VXLAN backend installs; nodes joined by an underlay veth.
//! Every name carries a per-run prefix; `Drop` tears it all down unless `keep()` was called.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};

use crate::cmd::{in_ns, ip, ip_batch, output, run};

/// Pod MTU, as flannel sets it: underlay 1500 minus the 50 bytes of VXLAN encapsulation.
pub const POD_MTU: &str = "1450";
/// Where bpffs is mounted; daemons of a lab pin under `BPFFS/<prefix>-<node>`.
pub const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, Clone)]
pub struct Pod {
    /// Short name, e.g. `n1p2` (node 1, pod 2).
    pub name: String,
    /// The pod's network namespace.
    pub netns: String,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    /// The host-side veth in the node netns (a port of cni0).
    pub host_veth: String,
    /// 1-based node number.
    pub node: u8,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// `node1`, `node2`.
    pub name: String,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    /// This node's pod subnet, 10.42.N.0/24.
    pub pod_cidr: String,
    pub flannel_mac: String,
    pub pods: Vec<Pod>,
}

impl Node {
    /// bpffs directory for this node's daemon.
    pub fn bpffs(&self) -> String {
        format!("{BPFFS}/{}", self.netns)
    }
}

pub struct Lab {
    pub prefix: String,
    pub nodes: Vec<Node>,
    keep: bool,
}

/// A prefix unique to this run: `tag` plus 6 hex digits from the pid and the clock.
pub fn run_prefix(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = (std::process::id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(nanos);
    format!("{tag}{:06x}", mix & 0xff_ffff)
}

fn host_veth_name(pod_netns: &str) -> String {
    // Like the CNI bridge plugin: "veth" + 8 hex digits; a stable hash of the pod.
    let h = pod_netns.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("veth{h:08x}")
}

impl Pod {
    /// Pod number `p` (1..=253) of node `n` in lab `prefix`: its names and addresses.
    pub fn at(prefix: &str, n: u8, p: u8) -> Pod {
        let pod_ns = format!("{prefix}-n{n}p{p}");
        Pod {
            name: format!("n{n}p{p}"),
            host_veth: host_veth_name(&pod_ns),
            netns: pod_ns,
            ip: Ipv4Addr::new(10, 42, n, 1 + p),
            ip6: Ipv6Addr::new(0xfd00, 0x42, u16::from(n), 0, 0, 0, 0, u16::from(1 + p)),
            node: n,
        }
    }
}

/// Deletes a pod (as a CNI DEL would): its netns goes, and with it both ends of its veth.
pub fn delete_pod(pod: &Pod) -> Result<()> {
    ip("", &["netns", "del", &pod.netns]).map(drop)
}

fn sysctl(ns: &str, kv: &str) -> Result<()> {
    in_ns(ns, "sysctl", &["-qw", kv]).map(drop)
}

impl Lab {
    /// Builds the lab: two nodes with `pods_per_node` pods each. On any error, what was built is
    /// torn down before the error returns.
    pub fn up(prefix: &str, pods_per_node: u8) -> Result<Lab> {
        assert!(
            (1..=200).contains(&pods_per_node),
            "pods_per_node must be 1..=200"
        );
        let nodes = (1..=2u8)
            .map(|n| {
                let netns = format!("{prefix}-node{n}");
                let pods = (1..=pods_per_node).map(|p| Pod::at(prefix, n, p)).collect();
                Node {
                    name: format!("node{n}"),
                    netns,
                    underlay_ip: Ipv4Addr::new(172, 30, 0, n),
                    pod_cidr: format!("10.42.{n}.0/24"),
                    flannel_mac: format!("0e:42:00:00:00:{n:02x}"),
                    pods,
                }
            })
            .collect();
        let lab = Lab {
            prefix: prefix.to_string(),
            nodes,
            keep: false,
        };
        lab.build()
            .with_context(|| format!("building lab {prefix}"))?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        for node in &self.nodes {
            ip("", &["netns", "add", &node.netns])?;
            let ns = node.netns.as_str();
            ip(ns, &["link", "set", "lo", "up"])?;
            sysctl(ns, "net.ipv4.ip_forward=1")?;
            sysctl(ns, "net.ipv6.conf.all.forwarding=1")?;
        }
        let (n1, n2) = (&self.nodes[0], &self.nodes[1]);
        // The underlay: eth0 of node1 <-> eth0 of node2.
        ip(
            &n1.netns,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &n2.netns,
            ],
        )?;
        for node in &self.nodes {
            let ns = node.netns.as_str();
            ip(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", node.underlay_ip),
                    "dev",
                    "eth0",
                ],
            )?;
            ip(ns, &["link", "set", "eth0", "up"])?;
            self.build_cni(node)?;
        }
        for node in &self.nodes {
            self.build_flannel(node)?;
        }
        Ok(())
    }

    fn build_cni(&self, node: &Node) -> Result<()> {
        let ns = node.netns.as_str();
        let n = node.pod_cidr.split('.').nth(2).expect("10.42.N.0/24");
        // An address of its own: a bridge without one takes the lowest of its ports' addresses
        // and changes it as pods come and go, and every pod's neighbour entry for its gateway
        // goes stale (seen in the soak: a third of the pings across nodes lost while pods
        // churned, with or without injector).
        let mac = format!(
            "02:42:0a:2a:{:02x}:01",
            n.parse::<u8>().expect("node number")
        );
        ip(
            ns,
            &["link", "add", "cni0", "address", &mac, "type", "bridge"],
        )?;
        ip(ns, &["link", "set", "cni0", "mtu", POD_MTU])?;
        ip(
            ns,
            &["addr", "add", &format!("10.42.{n}.1/24"), "dev", "cni0"],
        )?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("fd00:42:{n}::1/64"),
                "dev",
                "cni0",
                "nodad",
            ],
        )?;
        ip(ns, &["link", "set", "cni0", "up"])?;
        for pod in &node.pods {
            build_pod(ns, pod, POD_MTU)?;
        }
        Ok(())
    }

    fn build_flannel(&self, node: &Node) -> Result<()> {
        let n = node.pod_cidr.split('.').nth(2).expect("10.42.N.0/24");
        let peers: Vec<FlannelLease> = self
            .nodes
            .iter()
            .filter(|p| p.name != node.name)
            .map(|p| {
                let pn = p.pod_cidr.split('.').nth(2).expect("10.42.N.0/24");
                FlannelLease {
                    pod_cidr: p.pod_cidr.clone(),
                    gateway: format!("10.42.{pn}.0"),
                    mac: p.flannel_mac.clone(),
                    underlay: p.underlay_ip,
                }
            })
            .collect();
        join_flannel(
            &node.netns,
            "eth0",
            node.underlay_ip,
            &node.flannel_mac,
            Some(POD_MTU),
            &format!("10.42.{n}.0"),
            &peers,
        )
    }

    /// Adds a pod to node `n` while the lab runs (as a CNI ADD would); returns it.
    pub fn add_pod(&mut self, n: u8) -> Result<Pod> {
        self.add_pod_with_mtu(n, POD_MTU)
    }

    /// As [`add_pod`](Self::add_pod), with both ends of its veth at `mtu` (e.g. one too large
    /// for XDP on veth, to provoke an XDP attach failure).
    pub fn add_pod_with_mtu(&mut self, n: u8, mtu: &str) -> Result<Pod> {
        let node = &self.nodes[usize::from(n - 1)];
        // The smallest free number: after removals, numbers (and addresses) are reused.
        let p = (1..=253u8)
            .find(|p| node.pods.iter().all(|q| q.name != format!("n{n}p{p}")))
            .context("node is full: 253 pods")?;
        let pod = Pod::at(&self.prefix, n, p);
        build_pod(&node.netns, &pod, mtu)?;
        self.nodes[usize::from(n - 1)].pods.push(pod.clone());
        Ok(pod)
    }

    /// Creates pod `pod` (from [`Pod::at`]) without the lab tracking it, for churn: the caller
    /// deletes it with [`delete_pod`]; the lab's teardown removes it too (its netns carries the
    /// lab's prefix).
    pub fn create_untracked(&self, pod: &Pod) -> Result<()> {
        build_pod(&self.node(pod.node).netns, pod, POD_MTU)
    }

    /// Removes a pod (as a CNI DEL would): its netns goes, and with it both ends of its veth.
    pub fn remove_pod(&mut self, n: u8, name: &str) -> Result<()> {
        let node = &mut self.nodes[usize::from(n - 1)];
        let i = node
            .pods
            .iter()
            .position(|p| p.name == name)
            .context("no such pod")?;
        delete_pod(&node.pods[i])?;
        node.pods.remove(i);
        Ok(())
    }

    /// Pod `p` (1-based) of node `n` (1-based).
    pub fn pod(&self, n: u8, p: u8) -> &Pod {
        &self.nodes[usize::from(n - 1)].pods[usize::from(p - 1)]
    }

    pub fn node(&self, n: u8) -> &Node {
        &self.nodes[usize::from(n - 1)]
    }

    /// Leaves the lab up when this value is dropped (for `cargo xtask lab up`).
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// `count` pings from `from` to `to`, 0.5 ms apart (2000/s), waiting up to 2 s for the last
    /// replies; returns how many were answered.
    pub fn ping_fast(&self, from: &Pod, to: IpAddr, count: u32) -> Result<u32> {
        ping(from, to, count, "0.0005", "2")
    }

    /// `count` pings from `from` to `to`, 10 ms apart; returns how many were answered.
    pub fn ping(&self, from: &Pod, to: IpAddr, count: u32) -> Result<u32> {
        ping(from, to, count, "0.01", "1")
    }
}

/// A pod's netns, its veth pair (host end on cni0 in `node_ns`), addresses and routes: three
/// processes (`ip netns add`, then one `ip -batch` in the node and one in the pod), cheap enough
/// for the churn's 20 pods a second per node. On a failure the pod's netns is deleted again (and
/// with it both ends of its veth), and the error names the pod and the command.
fn build_pod(node_ns: &str, pod: &Pod, mtu: &str) -> Result<()> {
    ip("", &["netns", "add", &pod.netns])
        .with_context(|| format!("creating pod {} on {node_ns}", pod.name))?;
    let built = build_pod_links(node_ns, pod, mtu);
    if built.is_err()
        && let Err(e) = ip("", &["netns", "del", &pod.netns])
    {
        eprintln!(
            "pod {}: removing its netns after a failure: {e:#}",
            pod.name
        );
    }
    built.with_context(|| format!("creating pod {} on {node_ns}", pod.name))
}

fn build_pod_links(node_ns: &str, pod: &Pod, mtu: &str) -> Result<()> {
    let (n, p, veth) = (pod.node, &pod.netns, &pod.host_veth);
    ip_batch(
        node_ns,
        &[
            format!("link add {veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {p}"),
            format!("link set {veth} master cni0 up"),
        ],
    )?;
    ip_batch(
        p,
        &[
            "link set lo up".to_string(),
            format!("addr add {}/24 dev eth0", pod.ip),
            format!("addr add {}/64 dev eth0 nodad", pod.ip6),
            "link set eth0 up".to_string(),
            format!("route add default via 10.42.{n}.1"),
            // The gateway's family makes it an IPv6 route (`-6` is not read in a batch).
            format!("route add default via fd00:42:{n}::1"),
        ],
    )
}

/// `count` pings `interval` seconds apart, each waited for up to `wait` seconds; how many answered.
fn ping(from: &Pod, to: IpAddr, count: u32, interval: &str, wait: &str) -> Result<u32> {
    let (c, t) = (count.to_string(), to.to_string());
    let args = [
        "netns",
        "exec",
        &from.netns,
        "ping",
        "-q",
        "-n",
        "-c",
        &c,
        "-i",
        interval,
        "-W",
        wait,
        &t,
    ];
    let out = output("ip", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping_received(&text).with_context(|| format!("unexpected ping output: {text}"))
}

/// Reads "N packets transmitted, M received" from ping's summary.
pub fn parse_ping_received(out: &str) -> Option<u32> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let after = line.split(", ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = down(&self.prefix)
        {
            eprintln!("lab {}: teardown failed: {e:#}", self.prefix);
        }
    }
}

/// Network namespaces whose name starts with `prefix-`.
pub fn namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    let want = format!("{prefix}-");
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&want))
        .map(String::from)
        .collect())
}

/// Tears down everything of lab `prefix`: processes in its namespaces (SIGTERM, then SIGKILL),
/// the namespaces (and with them every link), and bpffs directories named after it. Idempotent.
pub fn down(prefix: &str) -> Result<()> {
    let nss = namespaces(prefix)?;
    let mut pids: Vec<i32> = Vec::new();
    for ns in &nss {
        if let Ok(out) = run("ip", &["netns", "pids", ns]) {
            pids.extend(out.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    crate::proc::terminate_pids(&pids);
    let mut errors = String::new();
    for ns in &nss {
        if let Err(e) = ip("", &["netns", "del", ns]) {
            let _ = writeln!(errors, "{e:#}");
        }
    }
    if let Ok(rd) = std::fs::read_dir(BPFFS) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                // bpffs: unlinking a pin drops our reference; the directory then goes.
                if let Err(e) = std::fs::remove_dir_all(e.path()) {
                    let _ = writeln!(errors, "removing {}: {e}", BPFFS);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{errors}")
    }
}

/// A human-readable summary of lab `prefix`: namespaces, their links and addresses, pins.
pub fn status(prefix: &str) -> Result<String> {
    let nss = namespaces(prefix)?;
    let mut s = String::new();
    if nss.is_empty() {
        writeln!(s, "lab {prefix}: down (no namespaces named {prefix}-*)")?;
        return Ok(s);
    }
    writeln!(s, "lab {prefix}: {} namespaces", nss.len())?;
    for ns in &nss {
        writeln!(s, "== {ns}")?;
        for l in ip(ns, &["-br", "addr"])?.lines() {
            writeln!(s, "   {l}")?;
        }
        if let Ok(p) = run("ip", &["netns", "pids", ns])
            && !p.trim().is_empty()
        {
            writeln!(
                s,
                "   processes: {}",
                p.split_whitespace().collect::<Vec<_>>().join(" ")
            )?;
        }
    }
    if let Ok(rd) = std::fs::read_dir(BPFFS) {
        for e in rd.flatten().filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
        }) {
            writeln!(s, "bpffs {}", e.path().display())?;
        }
    }
    Ok(s)
}

/// Another node's lease as flannel's VXLAN backend installs it on a node.
pub struct FlannelLease {
    /// Its pod network.
    pub pod_cidr: String,
    /// Its pod network's `.0` (the address on its `flannel.1`).
    pub gateway: String,
    /// Its `flannel.1`'s MAC.
    pub mac: String,
    /// Its underlay address (the VXLAN packets' destination).
    pub underlay: Ipv4Addr,
}

/// One node's side of flannel's VXLAN backend in `netns` (`""`: the host's): `flannel.1` (VNI 1,
/// port 8472, no learning; MAC `mac`, local `local` on `dev`, MTU `mtu` or the kernel's
/// default, address `addr`/32), and each other node's lease: a route to its pod network onlink
/// via its `.0`, a permanent neighbour for that `.0`, an fdb entry to its underlay address.
/// The lab's nodes and a real node's second ([`crate::node::second`]) are joined this way.
pub fn join_flannel(
    netns: &str,
    dev: &str,
    local: Ipv4Addr,
    mac: &str,
    mtu: Option<&str>,
    addr: &str,
    peers: &[FlannelLease],
) -> Result<()> {
    const DEV: &str = "flannel.1";
    let local = local.to_string();
    ip(
        netns,
        &[
            "link",
            "add",
            DEV,
            "address",
            mac,
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local,
            "dev",
            dev,
            "dstport",
            "8472",
            "nolearning",
        ],
    )?;
    if let Some(mtu) = mtu {
        ip(netns, &["link", "set", DEV, "mtu", mtu])?;
    }
    ip(netns, &["addr", "add", &format!("{addr}/32"), "dev", DEV])?;
    ip(netns, &["link", "set", DEV, "up"])?;
    for p in peers {
        ip(
            netns,
            &[
                "route",
                "add",
                &p.pod_cidr,
                "via",
                &p.gateway,
                "dev",
                DEV,
                "onlink",
            ],
        )?;
        ip(
            netns,
            &[
                "neigh",
                "add",
                &p.gateway,
                "lladdr",
                &p.mac,
                "dev",
                DEV,
                "nud",
                "permanent",
            ],
        )?;
        let underlay = p.underlay.to_string();
        let mut fdb = Vec::new();
        if !netns.is_empty() {
            fdb.extend(["-n", netns]);
        }
        fdb.extend(["fdb", "append", &p.mac, "dev", DEV, "dst", &underlay]);
        run("bridge", &fdb)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_is_read() {
        let out = "--- 10.42.2.2 ping statistics ---\n20 packets transmitted, 17 received, 15% packet loss, time 190ms\n";
        assert_eq!(parse_ping_received(out), Some(17));
        let out = "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 40ms\n";
        assert_eq!(parse_ping_received(out), Some(0));
        assert_eq!(parse_ping_received("garbage"), None);
    }

    #[test]
    fn names_fit_and_are_unique_per_run() {
        let a = run_prefix("t");
        assert_eq!(a.len(), 7);
        // Linux interface names are at most 15 bytes.
        assert!(host_veth_name("t123456-n1p200").len() <= 15);
        assert_ne!(host_veth_name("x-n1p1"), host_veth_name("x-n1p2"));
    }
}
