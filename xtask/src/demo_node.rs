//! `cargo xtask demo --node`: injector on two real Kubernetes nodes here (per node kubelet,
//! containerd, kube-proxy, the CNI bridge; the second in namespaces of its own, joined by
//! flannel's VXLAN; `injector_tests::node`), installed as users install it
//! (`kubectl apply -k deploy/`), faults made with `kubectl injector` between pods kubelet started
//! on different nodes, the daemon's pod replaced mid-fault, and the machine as before at the end.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, ensure};
use injector_tests::{
    lab,
    node::{
        Node,
        host::Snapshot,
        workload::{NS, daemon_pod, fetch, metrics, sample, start_pods},
    },
};

use crate::demo_k8s::{kubectl, wait};

fn show(n: &Node, from: &str, web_ip: &str) -> Result<bool> {
    let ok = fetch(n, from, web_ip)?;
    println!(
        "  {from} -> web http://{web_ip}:8080/: {}",
        if ok { "page" } else { "no answer" }
    );
    Ok(ok)
}

pub fn run(bin: &Path) -> Result<()> {
    let bin_dir = bin.parent().context("bin dir")?;
    let before = Snapshot::take()?;
    let prefix = lab::run_prefix("demonode");
    let t = Instant::now();
    let n = Node::up_with(&prefix, 2)?;
    println!(
        "  nodes {} Ready: per node containerd, kubelet, kube-proxy and the CNI bridge on cni0, the\n  \
         second in a network and mount namespace of its own, joined by flannel.1 (VXLAN); a\n  \
         scheduler, a controller-manager and an API server; all built from Debian's kubernetes\n  \
         source ({:.1?})",
        n.nodes
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" and "),
        t.elapsed()
    );
    let kc = n.kubeconfig();
    let t = Instant::now();
    println!("  $ kubectl apply -k deploy/");
    n.install_injector()?;
    println!(
        "  injector's DaemonSet Ready in {:.1?} (image localhost/injector imported into containerd)",
        t.elapsed()
    );
    let web_ip = start_pods(&n)?;
    kubectl(&kc, bin_dir, &["get", "pods", "-A", "-o", "wide"])?;
    for from in ["client", "bystander"] {
        ensure!(show(&n, from, &web_ip)?, "{from} -> web before any fault");
    }

    println!("\n  -- a blackhole from app=client (node 1) to app=web (node 2), by labels");
    let t = Instant::now();
    kubectl(
        &kc,
        bin_dir,
        &[
            "injector",
            "fault",
            "add",
            "cut-web",
            "-n",
            NS,
            "--from",
            "app=client",
            "--to",
            "app=web",
            "--blackhole",
            "--for",
            "5m",
        ],
    )?;
    wait("client -> web blackholed", || {
        Ok(!fetch(&n, "client", &web_ip)?)
    })?;
    println!(
        "  in effect within {:.1?} of the call (each check is a kubectl exec)",
        t.elapsed()
    );
    ensure!(
        !show(&n, "client", &web_ip)?,
        "client -> web under the fault"
    );
    ensure!(
        show(&n, "bystander", &web_ip)?,
        "bystander -> web under the fault"
    );
    kubectl(&kc, bin_dir, &["injector", "ls", "-n", NS, "-o", "wide"])?;

    println!(
        "\n  -- the daemon's pod on node 1 deleted mid-fault: its DaemonSet stays, so it hands over"
    );
    let first = &n.nodes[0];
    let (old, old_uid) = daemon_pod(&n, first)?;
    kubectl(
        &kc,
        bin_dir,
        &["delete", "pod", "-n", "injector", &old, "--wait=false"],
    )?;
    ensure!(
        !show(&n, "client", &web_ip)?,
        "client -> web while the daemon's pod goes"
    );
    let t = Instant::now();
    wait("a new daemon pod", || {
        Ok(daemon_pod(&n, first).is_ok_and(|(_, uid)| uid != old_uid))
    })?;
    wait("the new daemon adopted the fault", || {
        Ok(metrics(first).is_ok_and(|m| sample(&m, "injector_faults_active") == 1.0))
    })?;
    println!(
        "  new pod {} running, the fault adopted ({:.1?}); injector_faults_active 1",
        daemon_pod(&n, first)?.0,
        t.elapsed()
    );
    ensure!(
        !show(&n, "client", &web_ip)?,
        "client -> web after the hand-over"
    );

    println!("\n  -- the fault deleted");
    kubectl(&kc, bin_dir, &["injector", "rm", "-n", NS, "cut-web"])?;
    let took = wait("client -> web restored", || fetch(&n, "client", &web_ip))?;
    println!("  traffic back within {took:.1?}");
    show(&n, "client", &web_ip)?;

    let t = Instant::now();
    drop(n);
    let after = Snapshot::take()?;
    ensure!(
        before == after,
        "node down left the machine changed:\n{}",
        before.diff(&after)
    );
    println!(
        "  node down in {:.1?}: pods stopped by kubelet, the DaemonSet's daemon removed its programs\n  \
         and pins, every process stopped, the machine as before (links, routes, mounts, cgroups,\n  \
         rules, sysctls, paths, pins compared)",
        t.elapsed()
    );
    Ok(())
}
