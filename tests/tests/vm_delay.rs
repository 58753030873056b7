//! Real delay, on a stock kernel with sch_fq: these run inside the VM (`cargo xtask vm test`, part
//! of `cargo xtask test`); on this host they are ignored, as its kernel has no fq. The lab and the
//! daemons run in the guest, attaching through netlink clsact (6.1 has no TCX).

use std::time::Duration;

use injector_tests::{
    cmd,
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod},
    require_root,
};

/// Round-trip times (ms) of `count` pings, 20 ms apart.
fn rtts(from: &Pod, to: &Pod, count: u32) -> Vec<f64> {
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            &from.netns,
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.02",
            "-W",
            "2",
            &to.ip.to_string(),
        ],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: &[f64]) -> f64 {
    v[v.len() / 2]
}

fn root_qdisc(netns: &str, dev: &str) -> String {
    cmd::run("tc", &["-n", netns, "qdisc", "show", "dev", dev, "root"]).unwrap()
}

#[test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm test)"]
fn delay_is_added_once_same_node_and_cross_node_and_nowhere_else() {
    require_root();
    assert!(injector::features::fq(), "this kernel has no sch_fq");
    let l = Lab::up(&lab::run_prefix("vd"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let (a, b, c, e) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1), l.pod(2, 2));
    let veth_b = &b.host_veth;
    assert!(root_qdisc(&l.node(1).netns, veth_b).contains("noqueue"));
    let base_same = median(&rtts(a, b, 20));
    let base_cross = median(&rtts(a, c, 20));

    // One way, from a to b (same node) and from a to c (cross-node), on every node.
    let faults = format!(
        r#"[{{"name":"same","from":["{a}"],"to":["{b}"],"delay":"50ms","for":"5m"}},{{"name":"cross","from":["{a}"],"to":["{c}"],"delay":"50ms","for":"5m"}}]"#,
        a = a.ip,
        b = b.ip,
        c = c.ip
    );
    d1.apply(&faults).unwrap();
    d2.apply(&faults).unwrap();
    assert!(
        root_qdisc(&l.node(1).netns, veth_b).contains("qdisc fq"),
        "fq installed by the daemon"
    );
    assert!(root_qdisc(&l.node(1).netns, "flannel.1").contains("qdisc fq"));

    let same = rtts(a, b, 40);
    let cross = rtts(a, c, 40);
    let other = rtts(a, e, 40);
    eprintln!(
        "baseline same {base_same:.2} cross {base_cross:.2}; delayed same {:.2} cross {:.2}; other {:.2}",
        median(&same),
        median(&cross),
        median(&other)
    );
    assert_eq!(same.len(), 40, "no loss");
    assert_eq!(cross.len(), 40, "no loss");
    assert!(same[0] >= 50.0, "no packet early: min {}", same[0]);
    assert!(cross[0] >= 50.0, "no packet early: min {}", cross[0]);
    // Real-time TCG: assert the median only; added once, not twice (cross-node would be 100+).
    assert!(
        median(&same) - base_same < 65.0,
        "same-node median {}",
        median(&same)
    );
    assert!(
        median(&cross) - base_cross < 65.0,
        "cross-node median {} (delayed twice?)",
        median(&cross)
    );
    assert!(
        median(&other) < 25.0,
        "another pair is not delayed: {}",
        median(&other)
    );

    // No delay fault left: the daemon restores the default qdisc.
    d1.clear().unwrap();
    d2.clear().unwrap();
    assert!(
        root_qdisc(&l.node(1).netns, veth_b).contains("noqueue"),
        "{}",
        root_qdisc(&l.node(1).netns, veth_b)
    );
    assert!(median(&rtts(a, b, 20)) < 25.0);
    std::thread::sleep(Duration::from_millis(10));
}

/// iperf3 from `from` to `to` for `secs`: received Mbit/s.
fn iperf(from: &Pod, to: &Pod, secs: u32) -> f64 {
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &to.netns, "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3");
    std::thread::sleep(Duration::from_millis(500));
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            &from.netns,
            "iperf3",
            "-c",
            &to.ip.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ],
    )
    .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6
}

#[test]
#[ignore = "needs sch_fq and sch_netem: runs in the VM (cargo xtask vm test)"]
fn tcp_throughput_with_a_50ms_delay_is_close_to_netem() {
    require_root();
    let l = Lab::up(&lab::run_prefix("vt"), 2).unwrap();
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let n1 = &l.node(1).netns;
    // netem on the same devices the fault is judged at: vethB egress (same node), flannel.1 (cross).
    let mut netem = Vec::new();
    for (to, dev) in [(b, b.host_veth.as_str()), (c, "flannel.1")] {
        cmd::run(
            "tc",
            &[
                "-n", n1, "qdisc", "add", "dev", dev, "root", "netem", "delay", "50ms", "limit",
                "100000",
            ],
        )
        .unwrap();
        netem.push(iperf(a, to, 5));
        cmd::run("tc", &["-n", n1, "qdisc", "del", "dev", dev, "root"]).unwrap();
    }
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    d1.apply(&format!(
        r#"[{{"name":"same","from":["{a}"],"to":["{b}"],"delay":"50ms","for":"5m"}},{{"name":"cross","from":["{a}"],"to":["{c}"],"delay":"50ms","for":"5m"}}]"#,
        a = a.ip, b = b.ip, c = c.ip
    ))
    .unwrap();
    let ours = [iperf(a, b, 5), iperf(a, c, 5)];
    for (i, path) in ["same-node", "cross-node"].iter().enumerate() {
        eprintln!(
            "TCP with 50 ms, {path}: injector {:.1} Mbit/s, netem {:.1} Mbit/s, ratio {:.2}",
            ours[i],
            netem[i],
            ours[i] / netem[i]
        );
    }
    for (i, path) in ["same-node", "cross-node"].iter().enumerate() {
        assert!(
            ours[i] >= 0.8 * netem[i],
            "{path}: {:.1} Mbit/s is under 80% of netem's {:.1}",
            ours[i],
            netem[i]
        );
    }
}
