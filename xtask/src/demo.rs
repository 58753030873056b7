//! `cargo xtask demo`: the main job on the two-node lab. Builds injector, brings the lab up,
//! starts a daemon in each node, applies a blackhole and a 10% loss between named pods and shows
//! their effect with real traffic and the kernel's counters, then tears everything down and shows
//! that nothing is left.

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Result, ensure};
use injector_tests::{
    cmd,
    daemon::Daemon,
    lab::{self, Lab, Pod},
};

use crate::{bootstrap, root, sh};

fn ping(l: &Lab, from: &Pod, to: &Pod) -> Result<u32> {
    let dst: IpAddr = to.ip.into();
    let got = l.ping(from, dst, 20)?;
    println!(
        "  ping {} ({}) -> {} ({dst}): {got}/20 answered",
        from.name, from.ip, to.name
    );
    Ok(got)
}

fn local(d: &Daemon, args: &[&str]) -> Result<()> {
    println!(
        "  $ injector local --bpffs {} {}",
        d.bpffs.display(),
        args.join(" ")
    );
    for line in d
        .local(args)?
        .lines()
        .filter(|l| !l.contains(" matched=0 "))
    {
        println!("    {line}");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    bootstrap()?;
    sh("cargo", &["build", "--release", "-p", "injector"])?;
    let bin: PathBuf = root().join("target/release/injector");
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

    println!("\n== 2. a daemon in each node attaches to cni0, veth*, flannel.1");
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
        "\n== 4. faults: blackhole pod {} ({}), 10% loss {} -> {}, for 30 s (kernel-enforced)",
        c.name, c.ip, a.name, e.name
    );
    let faults = format!(
        r#"[{{"name":"bh-n2p1","to":["{}"],"blackhole":true,"for":"30s"}},
 {{"name":"loss-n1p1-n2p2","from":["{}"],"to":["{}"],"proto":"icmp","loss":"10%","for":"30s"}}]"#,
        c.ip, a.ip, e.ip
    );
    println!(
        "  $ injector fault apply -f faults.json   # on both nodes: every node holds every fault"
    );
    println!("  {}", faults.replace('\n', "\n  "));
    for d in [&d1, &d2] {
        d.apply(&faults)?;
    }
    ensure!(ping(&l, a, c)? == 0, "the blackhole did not take effect");
    ensure!(ping(&l, a, b)? == 20, "a same-node pod was affected");

    println!(
        "\n== 5. 10% loss from {} to {} (cross-node): 5000 pings at 2000/s",
        a.name, e.name
    );
    let got = l.ping_fast(a, e.ip.into(), 5000)?;
    let lost = 5000 - got;
    println!(
        "  lost {lost} of 5000 = {:.1}%: judged once, on node1 at flannel.1 egress",
        f64::from(lost) / 50.0
    );
    ensure!((350..=650).contains(&lost), "loss far from 10%");
    println!("  what the kernel counted on node1:");
    local(&d1, &["stats"])?;

    println!("\n== 6. delete the faults: traffic is back at once");
    for d in [&d1, &d2] {
        println!(
            "  $ injector --socket {} fault rm --all",
            d.socket.display()
        );
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
    println!("\ndemo: ok");
    Ok(())
}
