//! injector as users run it: the DaemonSet of deploy/ (applied unchanged, its image imported into
//! containerd) on a real node (kubelet, containerd, kube-proxy, the CNI bridge on `cni0`;
//! `injector_tests::node`), next to application pods kubelet started. A blackhole NetworkFault
//! between two labelled pods stops their HTTP and leaves a third pod's; the daemon's pod deleted
//! mid-fault (the DaemonSet brings a new one) leaves the fault running in the kernel and the new
//! daemon adopts it; deleting the fault restores the traffic; `node down` leaves the machine as
//! it was (a snapshot of links, routes, mounts, cgroups, rules, sysctls, paths and pins).
//!
//! One test in this file: the node owns host-wide things (cni0, kubelet's ports) and the
//! snapshot covers the whole host, so nothing else may run beside it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{SchedClassifier, TcAttachType};
use injector_tests::{
    lab::run_prefix,
    node::{
        self, Node,
        host::Snapshot,
        workload::{NS, daemon_pod, fetch, metrics, sample, start_pods},
    },
    require_root,
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

/// Names of the TCX programs on host interface `iface`, ingress then egress.
fn tcx(iface: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for at in [TcAttachType::Ingress, TcAttachType::Egress] {
        for p in SchedClassifier::query_tcx(iface, at)?.1 {
            names.push(p.name_as_str().unwrap_or("?").to_string());
        }
    }
    Ok(names)
}

fn scenario(n: &Node) -> Result<()> {
    let t = Instant::now();
    n.install_injector()?;
    eprintln!("DaemonSet Ready in {:.1?}", t.elapsed());
    let web_ip = start_pods(n)?;
    // The daemon attached to the real bridge and to every pod's host-side veth.
    let ports = injector_tests::cmd::run("ip", &["-o", "link", "show", "master", node::BRIDGE])?;
    let veths: Vec<String> = ports
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|p| p.split('@').next().unwrap_or(p).to_string())
        .collect();
    ensure!(veths.len() == 3, "cni0's ports: {veths:?}");
    wait_for(
        "programs on cni0 and the pods' veths",
        Duration::from_secs(20),
        || {
            Ok(!tcx(node::BRIDGE)?.is_empty()
                && veths.iter().all(|v| tcx(v).is_ok_and(|p| !p.is_empty())))
        },
    )?;
    let m = metrics()?;
    ensure!(
        sample(&m, "injector_interfaces_attached") >= 4.0,
        "injector_interfaces_attached: {}",
        sample(&m, "injector_interfaces_attached")
    );
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

    // The daemon's pod deleted mid-fault: the kernel keeps judging, the next pod adopts.
    let (old_name, old_uid) = daemon_pod(n)?;
    let dropped_before = sample(&metrics()?, "injector_packets_total");
    n.kubectl_ok(
        &["delete", "pod", "-n", "injector", &old_name, "--wait=false"],
        None,
    )?;
    ensure!(
        !fetch(n, "client", &web_ip)?,
        "client -> web came through while the daemon's pod was deleted"
    );
    wait_for("a new daemon pod Running", Duration::from_secs(120), || {
        Ok(daemon_pod(n).is_ok_and(|(_, uid)| uid != old_uid))
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
            let m = metrics()?;
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

    // Uninstalled as users do: the DaemonSet goes, so its pod's daemon does not hand over but
    // removes its programs and pins (the application pods stay).
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
    wait_for(
        "no programs and no pins after the DaemonSet's deletion",
        Duration::from_secs(60),
        || {
            Ok(!std::path::Path::new("/sys/fs/bpf/injector").exists()
                && tcx(node::BRIDGE)?.is_empty()
                && veths.iter().all(|v| tcx(v).is_ok_and(|p| p.is_empty())))
        },
    )?;
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
        let n = Node::up(&prefix).expect("node up");
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
