//! `cargo xtask demo`: the main job on the two-node lab. Builds injector, brings the lab up,
//! starts a daemon in each node, applies a blackhole, a 10% loss and a delay between named pods
//! with the CLI, shows their effect with real traffic, `injector top` and the metrics, then
//! tears everything down and shows that nothing is left; then the same lab as a Kubernetes
//! cluster with NetworkFaults (`demo_k8s`), and delay in a VM.

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Result, ensure};
use injector_tests::{
    cmd,
    daemon::Daemon,
    lab::{self, Lab, Pod},
};

use crate::{bootstrap, root, sh};

/// `injector fault add NAME --from A --to B --delay 50ms --jitter 5ms --for 60s`, as arguments.
fn delay_fault(name: &str, from: &Pod, to: &Pod) -> Vec<String> {
    let (f, t) = (from.ip.to_string(), to.ip.to_string());
    [
        "fault", "add", name, "--from", &f, "--to", &t, "--delay", "50ms", "--jitter", "5ms",
        "--for", "60s",
    ]
    .map(String::from)
    .to_vec()
}

fn ping(l: &Lab, from: &Pod, to: &Pod) -> Result<u32> {
    let dst: IpAddr = to.ip.into();
    let got = l.ping(from, dst, 20)?;
    println!(
        "  ping {} ({}) -> {} ({dst}): {got}/20 answered",
        from.name, from.ip, to.name
    );
    Ok(got)
}

/// The Kubernetes part's heading.
const K8S: &str =
    "Kubernetes: NetworkFaults by labels through `kubectl injector`, on a real API server";

/// The real node part's heading.
const NODE: &str =
    "two real Kubernetes nodes here: the DaemonSet from deploy/, faults on pods kubelet started";

pub fn run(kubernetes_only: bool, node_only: bool) -> Result<()> {
    bootstrap()?;
    crate::node::ensure_built()?;
    sh("cargo", &["build", "--release", "-p", "injector"])?;
    let bin: PathBuf = root().join("target/release/injector");
    if kubernetes_only || node_only {
        if kubernetes_only {
            println!("\n== {K8S}");
            crate::demo_k8s::run(&bin)?;
        }
        if node_only {
            println!("\n== {NODE}");
            crate::demo_node::run(&bin)?;
        }
        println!("\ndemo: ok");
        return Ok(());
    }
    let host_netns = cmd::run("ip", &["netns", "list"])?;
    let host_links = cmd::ip("", &["-o", "link", "show"])?;

    let prefix = lab::run_prefix("demo");
    println!("\n== 1. the lab: two flannel nodes in network namespaces (prefix {prefix})");
    let l = Lab::up(&prefix, 2)?;
    for n in &l.nodes {
        println!(
            "  {} ({}): cni0 {} flannel.1 vni 1 underlay {}",
            n.name, n.netns, n.pod_cidr, n.underlay_ip
        );
        for p in &n.pods {
            println!(
                "    pod {} {} / {}  host veth {}",
                p.name, p.ip, p.ip6, p.host_veth
            );
        }
    }

    println!(
        "\n== 2. a daemon in each node attaches to veth*, flannel.1 (cni0 only with --observe)"
    );
    let d1 = Daemon::start(&bin, l.node(1))?;
    let d2 = Daemon::start(&bin, l.node(2))?;
    for d in [&d1, &d2] {
        let attached = d
            .log_text()
            .lines()
            .filter(|l| l.contains("attached"))
            .count();
        println!(
            "  {}: {attached} interfaces, maps and links pinned under {}",
            d.node,
            d.bpffs.display()
        );
    }

    let (a, b, c, e) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1), l.pod(2, 2));
    println!("\n== 3. before: every pod reaches every other, same node and across flannel.1");
    for to in [b, c, e] {
        ensure!(
            ping(&l, a, to)? == 20,
            "baseline ping to {} failed",
            to.name
        );
    }

    println!(
        "\n== 4. faults from the CLI, on both nodes (every node holds every fault), 60 s each"
    );
    let delay_args = delay_fault("slow-n1p2", a, b);
    let delay_args: Vec<&str> = delay_args.iter().map(String::as_str).collect();
    // A real resolver for the DNS fault: dnsmasq in n2p2, asked by n1p1 across flannel.1.
    let resolver = injector_tests::dns::Resolver::start(e);
    injector_tests::dns::wait_answering(a, e.ip.into());
    let faults: [Vec<String>; 4] = [
        [
            "fault",
            "add",
            "bh-n2p1",
            "--to",
            &c.ip.to_string(),
            "--blackhole",
            "--for",
            "60s",
        ]
        .map(String::from)
        .to_vec(),
        [
            "fault",
            "add",
            "loss-n2p2",
            "--from",
            &a.ip.to_string(),
            "--to",
            &e.ip.to_string(),
            "--proto",
            "icmp",
            "--loss",
            "10%",
            "--for",
            "60s",
        ]
        .map(String::from)
        .to_vec(),
        [
            "fault",
            "add",
            "bw-n2p2",
            "--from",
            &a.ip.to_string(),
            "--to",
            &e.ip.to_string(),
            "--proto",
            "tcp",
            "--rate",
            "10mbit",
            "--for",
            "60s",
        ]
        .map(String::from)
        .to_vec(),
        [
            "fault",
            "add",
            "dns-n1p1",
            "--to",
            &a.ip.to_string(),
            "--dns",
            "nxdomain",
            "--dns-name",
            "db.prod.svc.cluster.local",
            "--for",
            "60s",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for f in &faults {
        let args: Vec<&str> = f.iter().map(String::as_str).collect();
        println!("  $ injector {}", args.join(" "));
        let reply = d1.cli_ok(&args, "")?;
        d2.cli_ok(&args, "")?;
        // The rate's mode (paced or policed, and why) is in the reply.
        for line in reply.lines().filter(|l| l.contains("rate:")) {
            println!("    {}", line.trim());
        }
    }
    println!("  $ injector {}", delay_args.join(" "));
    let delay = d1.cli(&delay_args, "")?;
    let delay_ok = delay.status.success();
    if delay_ok {
        d2.cli_ok(&delay_args, "")?;
        println!("    created: slow-n1p2 (fq installed on the egress devices by the daemon)");
    } else {
        println!(
            "    refused, exit {}: {}",
            delay.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&delay.stderr).trim()
        );
        println!("    (this kernel has no sch_fq; real delay runs on a stock kernel in the VM)");
    }
    println!("  $ injector fault ls");
    for line in d1.cli_ok(&["fault", "ls"], "")?.lines() {
        println!("    {line}");
    }

    println!("\n== 5. the effect, with real traffic");
    ensure!(ping(&l, a, c)? == 0, "the blackhole did not take effect");
    ensure!(ping(&l, a, l.pod(2, 2))? > 0, "the loss fault blackholed");
    let got = l.ping_fast(a, e.ip.into(), 5000)?;
    let lost = 5000 - got;
    println!(
        "  5000 pings {} -> {} at 2000/s: lost {lost} = {:.1}% (judged once, on node1 at flannel.1 egress)",
        a.name,
        e.name,
        f64::from(lost) / 50.0
    );
    ensure!((350..=650).contains(&lost), "loss far from 10%");
    if delay_ok {
        ensure!(ping(&l, a, b)? == 20, "the delayed pod lost traffic");
    }
    // The first second (the bucket, slow start) left out.
    let tcp =
        injector_tests::perf::iperf_with(&a.netns, &e.netns, &e.ip.to_string(), 4, &["-O", "1"])?;
    println!(
        "  iperf3 {} -> {} under the 10mbit rate: {tcp:.2} Mbit/s of TCP payload (the rate counts \
         IP bytes: 9.64 is 10mbit exactly)",
        a.name, e.name
    );
    ensure!(
        tcp > 1.0 && tcp < 10.5,
        "TCP under the 10mbit rate: {tcp:.2} Mbit/s"
    );
    let (nx, other) = (
        injector_tests::dns::dig(a, e.ip.into(), "db.prod.svc.cluster.local"),
        injector_tests::dns::dig(a, e.ip.into(), "web.prod.svc.cluster.local"),
    );
    println!(
        "  dig @{} from {}: db.prod.svc.cluster.local -> {nx}, web.prod.svc.cluster.local -> \
         {other} (the answer rewritten in the kernel on node2's flannel.1 egress)",
        e.name, a.name
    );
    ensure!(
        nx == "NXDOMAIN" && other == injector_tests::dns::ANSWERED,
        "DNS fault: {nx} / {other}"
    );
    drop(resolver);
    println!("  $ injector top --count 1");
    for line in d1.cli_ok(&["top", "--count", "1"], "")?.lines() {
        println!("    {line}");
    }
    let (_, metrics) = injector_tests::traffic::http_get(
        &l.node(1).netns,
        "127.0.0.1:9464".parse()?,
        "/metrics",
        "text/plain",
    )?;
    println!("  $ curl -s node1:9464/metrics | grep 'action=\"dropped\"' | grep -v ' 0$'");
    for line in metrics
        .lines()
        .filter(|l| l.contains("action=\"dropped\"") && !l.ends_with(" 0"))
    {
        println!("    {line}");
    }

    println!("\n== 6. delete the faults: traffic is back at once");
    println!("  $ injector fault rm --all");
    for d in [&d1, &d2] {
        d.clear()?;
    }
    ensure!(ping(&l, a, c)? == 20, "traffic did not come back");

    println!("\n== 7. tear down: daemons stopped (SIGTERM), lab removed");
    d1.stop()?;
    d2.stop()?;
    drop(l);
    let left = lab::namespaces(&prefix)?;
    ensure!(left.is_empty(), "namespaces left: {left:?}");
    ensure!(
        cmd::run("ip", &["netns", "list"])? == host_netns,
        "`ip netns list` differs from before"
    );
    ensure!(
        cmd::ip("", &["-o", "link", "show"])? == host_links,
        "`ip link` differs from before"
    );
    ensure!(lab::status(&prefix)?.contains("down"));
    println!(
        "  `ip netns list` and `ip link` are as before; no pins under {}/{prefix}-*",
        lab::BPFFS
    );

    println!("\n== 8. {K8S}");
    crate::demo_k8s::run(&bin)?;

    println!("\n== 9. {NODE}");
    crate::demo_node::run(&bin)?;

    println!(
        "\n== 10. delay, on a stock Debian kernel with sch_fq (this host has none): the same demo in a VM"
    );
    let vm = crate::vm::setup()?;
    let xtask = crate::self_exe()?;
    let (rc, out) = crate::vm::run(
        &vm,
        &format!("{} demo-delay", xtask.display()),
        false,
        std::time::Duration::from_secs(600),
    )?;
    print!("{out}");
    ensure!(rc == 0, "the delay demo in the VM failed (exit {rc})");
    println!("\ndemo: ok");
    Ok(())
}

/// The delay part of the demo, run inside the VM by `run` (`cargo xtask demo-delay`).
pub fn delay_in_vm() -> Result<()> {
    let bin: PathBuf = root().join("target/release/injector");
    let l = Lab::up(&lab::run_prefix("demo"), 2)?;
    let d1 = Daemon::start(&bin, l.node(1))?;
    let d2 = Daemon::start(&bin, l.node(2))?;
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let rtt = |to: &Pod| -> Result<String> {
        let out = cmd::output(
            "ip",
            &[
                "netns",
                "exec",
                &a.netns,
                "ping",
                "-q",
                "-n",
                "-c",
                "10",
                "-i",
                "0.05",
                &to.ip.to_string(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(text
            .lines()
            .find(|l| l.starts_with("rtt"))
            .unwrap_or("no rtt line")
            .to_string())
    };
    println!("  before: {} -> {}: {}", a.name, b.name, rtt(b)?);
    println!("  before: {} -> {}: {}", a.name, c.name, rtt(c)?);
    for (to, name) in [(b, "slow-n1p2"), (c, "slow-n2p1")] {
        let args = delay_fault(name, a, to);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        println!("  $ injector {}", args.join(" "));
        d1.cli_ok(&args, "")?;
        d2.cli_ok(&args, "")?;
    }
    println!("  after:  {} -> {}: {}", a.name, b.name, rtt(b)?);
    println!("  after:  {} -> {}: {}", a.name, c.name, rtt(c)?);
    println!(
        "  $ tc qdisc show dev {}   # installed by the daemon",
        b.host_veth
    );
    let q = cmd::run(
        "tc",
        &[
            "-n",
            &l.node(1).netns,
            "qdisc",
            "show",
            "dev",
            &b.host_veth,
            "root",
        ],
    )?;
    println!("    {}", q.trim());
    println!("  $ injector top --count 1");
    for line in d1.cli_ok(&["top", "--count", "1"], "")?.lines() {
        println!("    {line}");
    }
    d1.clear()?;
    d2.clear()?;
    println!("  after `injector fault rm --all`: {}", rtt(b)?);
    d1.stop()?;
    d2.stop()?;
    Ok(())
}
