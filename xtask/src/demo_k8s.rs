//! The Kubernetes part of `cargo xtask demo` (also alone: `cargo xtask demo --kubernetes`): a real
//! kube-apiserver with the lab's nodes and pods, a daemon per node reconciling NetworkFaults with
//! only deploy/'s RBAC, and faults made with `kubectl injector` by labels, shown with real traffic.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use injector_tests::{
    cluster::{ADMIN, ClusterOptions, PodMeta},
    k8s::Deployed,
    lab::{self, Pod},
};

/// `kubectl ARGS` as a user types it: the admin kubeconfig, and the plugin found on PATH.
pub(crate) fn kubectl(kubeconfig: &Path, bin_dir: &Path, args: &[&str]) -> Result<String> {
    println!("  $ kubectl {}", args.join(" "));
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path)
        .output()
        .context("running kubectl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("kubectl {} failed: {text}{err}", args.join(" "));
    }
    for line in text.lines() {
        println!("    {line}");
    }
    Ok(text)
}

/// Polls `check` every 100 ms for up to 20 s; the time it took.
pub(crate) fn wait(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if check()? {
            return Ok(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what}: not within 20 s")
}

fn lost(d: &Deployed, from: &Pod, to: &Pod, n: u32) -> Result<u32> {
    Ok(n - d.cluster.lab.ping_fast(from, to.ip.into(), n)?)
}

pub fn run(bin: &Path) -> Result<()> {
    let bin_dir = bin.parent().context("bin dir")?;
    let prefix = lab::run_prefix("demok8s");
    let t = Instant::now();
    let mut d = Deployed::up_with(&prefix, ClusterOptions::default(), bin)?;
    let kc = d.cluster.kubeconfig(ADMIN);
    println!(
        "  etcd + kube-apiserver v1.20.2 on loopback (TLS, RBAC), reachable in each node at the same URL;\n  \
         deploy/'s namespace, CRDs and RBAC applied; a daemon per node with `--node-name` and the\n  \
         service account's token (only the ClusterRole's rights); up in {:.1?}",
        t.elapsed()
    );
    kubectl(&kc, bin_dir, &["get", "nodes,pods", "-A", "-o", "wide"])?;
    let (n1p1, n1p2, n2p1, n2p2) = (
        d.cluster.lab.pod(1, 1).clone(),
        d.cluster.lab.pod(1, 2).clone(),
        d.cluster.lab.pod(2, 1).clone(),
        d.cluster.lab.pod(2, 2).clone(),
    );

    println!("\n  -- 10% loss from app=checkout to app=payments (ICMP), by labels, across nodes");
    kubectl(
        &kc,
        bin_dir,
        &[
            "injector",
            "fault",
            "add",
            "checkout-payments",
            "-n",
            "shop",
            "--from",
            "app=checkout",
            "--to",
            "app=payments",
            "--proto",
            "icmp",
            "--loss",
            "10%",
            "--for",
            "3m",
        ],
    )?;
    let took = wait("the fault on both nodes", || {
        Ok((1..=2).all(|n| {
            d.owned(n, "shop/checkout-payments")
                .is_ok_and(|f| !f.is_empty())
        }))
    })?;
    println!("    installed on both nodes {took:.1?} after the call returned");
    let l = lost(&d, &n1p1, &n2p1, 3000)?;
    println!(
        "  3000 pings checkout (n1p1) -> payments (n2p1): lost {l} = {:.1}%",
        f64::from(l) / 30.0
    );
    ensure!((180..=420).contains(&l), "loss far from 10%");
    let l = lost(&d, &n1p2, &n2p1, 1000)?;
    println!("  1000 pings cart (n1p2, not selected) -> payments (n2p1): lost {l}");
    ensure!(l == 0, "an unselected pod lost traffic");

    println!("\n  -- a new pod labelled app=payments, on node1: covered as its podIP appears");
    let newp = d
        .cluster
        .add_pod(1, PodMeta::new("shop", &[("app", "payments")]))?;
    let took = wait("the new pod in the fault on both nodes", || {
        Ok((1..=2).all(|n| {
            d.owned(n, "shop/checkout-payments")
                .is_ok_and(|f| injector_tests::k8s::all_addrs(&f, "to").contains(&newp.ip.into()))
        }))
    })?;
    println!(
        "    pod {} ({}) in the fault's destinations on both nodes {took:.1?} after its podIP",
        newp.name, newp.ip
    );
    let l = lost(&d, &n1p1, &newp, 3000)?;
    println!(
        "  3000 pings checkout -> {} (same node): lost {l} = {:.1}%",
        newp.name,
        f64::from(l) / 30.0
    );

    println!("\n  -- the bank namespace's ledger blackholed");
    kubectl(
        &kc,
        bin_dir,
        &[
            "injector",
            "fault",
            "add",
            "ledger-down",
            "-n",
            "bank",
            "--to",
            "app=ledger",
            "--blackhole",
            "--for",
            "3m",
        ],
    )?;
    wait("ledger-down on both nodes", || {
        Ok((1..=2).all(|n| d.owned(n, "bank/ledger-down").is_ok_and(|f| !f.is_empty())))
    })?;
    let l = lost(&d, &n1p1, &n2p2, 20)?;
    println!("  20 pings checkout -> ledger (n2p2): lost {l}");
    ensure!(l == 20, "the blackhole let packets through");

    // The reports are written on change (at most once a second) and the status on the writer's tick.
    wait("the status of both faults", || {
        let out = Command::new("kubectl")
            .args([
                "get",
                "nf",
                "-A",
                "-o",
                "jsonpath={.items[*].status.nodes.count}",
            ])
            .env("KUBECONFIG", &kc)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "2 2")
    })?;
    kubectl(&kc, bin_dir, &["get", "networkfaults", "-A"])?;
    kubectl(&kc, bin_dir, &["injector", "ls", "-A", "-o", "wide"])?;

    println!("\n  -- one command disarms every fault on every node");
    let t = Instant::now();
    kubectl(&kc, bin_dir, &["injector", "abort", "--reason", "demo"])?;
    let took = wait("traffic back to the ledger", || {
        Ok(d.cluster.lab.ping(&n1p1, n2p2.ip.into(), 1)? == 1)
    })?;
    println!(
        "    ledger answers again {took:.1?} after the abort returned ({:.1?} in all)",
        t.elapsed()
    );
    wait("both faults gone from both nodes", || {
        Ok((1..=2).all(|n| d.faults(n).is_ok_and(|f| f.is_empty())))
    })?;
    d.wait_phase("shop", "checkout-payments", "Aborted");
    kubectl(&kc, bin_dir, &["get", "networkfaults", "-A"])?;
    println!("\n  -- tear down: daemons stopped, API server and etcd stopped, lab removed");
    drop(d);
    ensure!(
        lab::namespaces(&prefix)?.is_empty(),
        "namespaces of {prefix} left"
    );
    ensure!(
        !injector_tests::cluster::state_dir(&prefix).exists(),
        "the cluster's state directory is left"
    );
    Ok(())
}
