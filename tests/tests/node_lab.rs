//! injector as users run it: the DaemonSet of deploy/ (applied unchanged, its image imported into
//! containerd) on two real nodes (per node kubelet, containerd, kube-proxy and the CNI bridge on
//! `cni0`; the second in a network and mount namespace of its own, joined by flannel's VXLAN;
//! `injector_tests::node`), next to application pods kubelet started: `web` on node 2, `client`
//! and `bystander` on node 1. Both daemons attach to their node's cni0, pod veths and flannel.1,
//! each with its own pins. A blackhole NetworkFault between two labelled pods stops their HTTP
//! across the nodes and leaves a third pod's; the daemon's pod deleted mid-fault (the DaemonSet
//! brings a new one) leaves the fault running in the kernel and the new daemon adopts it;
//! deleting the fault restores the traffic; deleting the DaemonSet removes programs and pins on
//! both nodes; `node down` leaves the machine as it was (a snapshot of links, routes, mounts,
//! cgroups, rules, sysctls, paths and pins).
//!
//! One test in this file: the nodes own host-wide things (cni0, kubelet's ports) and the
//! snapshot covers the whole host, so nothing else may run beside it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{SchedClassifier, TcAttachType};
use injector_tests::{
    cmd::ip,
    lab::run_prefix,
    node::{
        self, Member, Node,
        host::Snapshot,
        workload::{NS, daemon_pod, fetch, metrics, sample, start_pods},
    },
    require_root,
    snapshot::tcx_programs,
};

const FAULT: &str = "apiVersion: injector.dev/v1alpha1
kind: NetworkFault
metadata: {name: cut-web, namespace: shop}
spec:
  from: {pods: {matchLabels: {app: client}}}
  to: {pods: {matchLabels: {app: web}}}
  blackhole: true
  duration: 10m
";

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Names of the TCX programs on interface `iface` of node `m` (in its network namespace).
fn tcx(n: &Node, m: &Member, iface: &str) -> Result<Vec<String>> {
    if let Some(ns) = m.netns(&n.prefix) {
        return tcx_programs(&ns, iface);
    }
    let mut names = Vec::new();
    for at in [TcAttachType::Ingress, TcAttachType::Egress] {
        for p in SchedClassifier::query_tcx(iface, at)?.1 {
            names.push(p.name_as_str().unwrap_or("?").to_string());
        }
    }
    Ok(names)
}

/// The pods' host-side veths on node `m`'s bridge.
fn veths(n: &Node, m: &Member) -> Result<Vec<String>> {
    let ns = m.netns(&n.prefix).unwrap_or_default();
    let ports = ip(&ns, &["-o", "link", "show", "master", node::BRIDGE])?;
    Ok(ports
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|p| p.split('@').next().unwrap_or(p).to_string())
        .collect())
}

/// The interfaces the daemon on `m` attaches to: the pods' veths, flannel.1 (two nodes). Not
/// cni0: the DaemonSet runs without `--observe`.
fn judged_ifaces(n: &Node, m: &Member) -> Result<Vec<String>> {
    let mut all = veths(n, m)?;
    if n.nodes.len() > 1 {
        all.push("flannel.1".into());
    }
    Ok(all)
}

/// Whether the DaemonSet's pins are on node `m` (node 2 has a bpffs instance of its own; a
/// failure to look there is an error, not "absent").
fn pinned(n: &Node, m: &Member) -> Result<bool> {
    if m.netns(&n.prefix).is_none() {
        return Ok(std::path::Path::new("/sys/fs/bpf/injector").exists());
    }
    let out = node::second::exec(
        &n.prefix,
        &n.dir,
        "sh",
        &[
            "-c",
            "if test -e /sys/fs/bpf/injector; then echo yes; else echo no; fi",
        ],
    )?;
    Ok(out.trim() == "yes")
}

fn scenario(n: &Node) -> Result<()> {
    let t = Instant::now();
    n.install_injector()?;
    eprintln!("DaemonSet Ready in {:.1?}", t.elapsed());
    let web_ip = start_pods(n)?;
    // On every node the daemon attached to every pod's host-side veth and flannel.1 (web on the
    // last node, client and bystander on the first), and nothing to the real bridge.
    let want_pods = if n.nodes.len() > 1 { [2, 1] } else { [3, 0] };
    for (m, want) in n.nodes.iter().zip(want_pods) {
        let pods = veths(n, m)?;
        ensure!(pods.len() == want, "{}: cni0's ports {pods:?}", m.name);
        let ifaces = judged_ifaces(n, m)?;
        wait_for(
            &format!("programs on {ifaces:?} of {}", m.name),
            Duration::from_secs(20),
            || {
                Ok(ifaces
                    .iter()
                    .all(|i| tcx(n, m, i).is_ok_and(|p| !p.is_empty())))
            },
        )?;
        let bridge = tcx(n, m, node::BRIDGE)?;
        ensure!(
            bridge.is_empty(),
            "{}: programs on {} without --observe: {bridge:?}",
            m.name,
            node::BRIDGE
        );
        let attached = sample(&metrics(m)?, "injector_interfaces_attached");
        ensure!(
            attached >= ifaces.len() as f64,
            "{}: injector_interfaces_attached {attached}, want >= {}",
            m.name,
            ifaces.len()
        );
    }
    for from in ["client", "bystander"] {
        ensure!(fetch(n, from, &web_ip)?, "{from} -> web before any fault");
    }

    // The fault: client's HTTP to web stops, bystander's goes on.
    let t = Instant::now();
    n.kubectl_ok(&["apply", "-f", "-"], Some(FAULT))?;
    wait_for("client -> web blackholed", Duration::from_secs(20), || {
        Ok(!fetch(n, "client", &web_ip)?)
    })?;
    eprintln!("fault in effect within {:.1?}", t.elapsed());
    ensure!(
        fetch(n, "bystander", &web_ip)?,
        "bystander -> web under the fault"
    );
    for m in &n.nodes {
        wait_for(
            &format!("the daemon on {} reports the fault", m.name),
            Duration::from_secs(20),
            || Ok(sample(&metrics(m)?, "injector_faults_active") == 1.0),
        )?;
    }

    // The daemon's pod on the client's node deleted mid-fault: the kernel keeps judging, the
    // next pod adopts.
    let first = &n.nodes[0];
    let (old_name, old_uid) = daemon_pod(n, first)?;
    let dropped_before = sample(&metrics(first)?, "injector_packets_total");
    n.kubectl_ok(
        &["delete", "pod", "-n", "injector", &old_name, "--wait=false"],
        None,
    )?;
    ensure!(
        !fetch(n, "client", &web_ip)?,
        "client -> web came through while the daemon's pod was deleted"
    );
    wait_for("a new daemon pod Running", Duration::from_secs(120), || {
        Ok(daemon_pod(n, first).is_ok_and(|(_, uid)| uid != old_uid))
    })?;
    n.daemonset_ready()?;
    ensure!(
        !fetch(n, "client", &web_ip)?,
        "client -> web came through after the daemon's pod was replaced"
    );
    ensure!(
        fetch(n, "bystander", &web_ip)?,
        "bystander -> web after the replacement"
    );
    let mut seen = (0.0, 0.0);
    wait_for(
        "the new daemon reports the adopted fault",
        Duration::from_secs(20),
        || {
            let m = metrics(first)?;
            seen = (
                sample(&m, "injector_faults_active"),
                sample(&m, "injector_packets_total"),
            );
            Ok(seen.0 == 1.0 && seen.1 > dropped_before)
        },
    )
    .with_context(|| {
        format!(
            "the new daemon: injector_faults_active {} (want 1), injector_packets_total {} (before the restart {dropped_before})",
            seen.0, seen.1
        )
    })?;

    // Deleting the fault restores the traffic.
    n.kubectl_ok(&["delete", "networkfault", "-n", NS, "cut-web"], None)?;
    wait_for("client -> web restored", Duration::from_secs(20), || {
        fetch(n, "client", &web_ip)
    })?;

    // Uninstalled as users do: the DaemonSet goes, so its pods' daemons do not hand over but
    // remove their programs and pins (the application pods stay).
    let fault = n.kubectl_ok(&["apply", "-f", "-"], Some(FAULT))?;
    wait_for(
        "client -> web blackholed again",
        Duration::from_secs(20),
        || Ok(!fetch(n, "client", &web_ip)?),
    )
    .context(fault)?;
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    n.kubectl_ok(
        &[
            "delete",
            "daemonset",
            "-n",
            "injector",
            "injector",
            "--wait=true",
        ],
        None,
    )?;
    for m in &n.nodes {
        let ifaces = judged_ifaces(n, m)?;
        wait_for(
            &format!(
                "no programs and no pins on {} after the DaemonSet's deletion",
                m.name
            ),
            Duration::from_secs(60),
            || {
                Ok(!pinned(n, m)?
                    && ifaces
                        .iter()
                        .all(|i| tcx(n, m, i).is_ok_and(|p| p.is_empty())))
            },
        )?;
    }
    ensure!(
        fetch(n, "client", &web_ip)?,
        "client -> web after the DaemonSet's deletion (the fault ended with it)"
    );
    n.kubectl_ok(
        &["delete", "-k", deploy, "--ignore-not-found", "--wait=true"],
        None,
    )?;
    Ok(())
}

#[test]
fn daemonset_on_a_real_node() {
    require_root();
    let before = Snapshot::take().expect("snapshot before");
    let prefix = run_prefix("nd");
    {
        let n = Node::up_with(&prefix, 2).expect("nodes up");
        if let Err(e) = scenario(&n) {
            panic!("{e:#}\n{}", n.diagnostics());
        }
        // Dropped: node::down.
    }
    let after = Snapshot::take().expect("snapshot after");
    assert!(
        before == after,
        "node down left the machine changed:\n{}",
        before.diff(&after)
    );
}
