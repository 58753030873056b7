//! Faults with real traffic on the two-node lab: loss measured against a binomial bound (same-node,
//! cross-node, with XDP), judged once on the whole path; a port blackhole that leaves other ports
//! and pods alone; flow faults that hit the same flows again with the same seed; and faults that
//! end by themselves after the daemon was SIGKILLed (deadline, heartbeat).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use injector_common::flow;
use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod},
    require_root, stats,
    traffic::{Servers, tcp_connects, udp_echoes, udp_flows},
};

/// Starts a daemon on both nodes (with `extra` arguments) and applies `faults` on both, as every
/// node of a cluster would hold every fault.
fn daemons(l: &Lab, extra: &[&str], faults: &str) -> (Daemon, Daemon) {
    let d1 = Daemon::start_with(&injector_bin(), l.node(1), extra).unwrap();
    let d2 = Daemon::start_with(&injector_bin(), l.node(2), extra).unwrap();
    d1.apply(faults).unwrap();
    d2.apply(faults).unwrap();
    (d1, d2)
}

/// 10k pings from `a` to `b` with a 10% loss fault on the requests; the loss must be within the
/// 99.9% binomial bound of 10%, and the fault judged each request exactly once cluster-wide.
fn ten_percent(l: &Lab, a: &Pod, b: &Pod, extra: &[&str]) {
    let n = 10_000u32;
    let faults = format!(
        r#"[{{"name":"loss10","from":["{}"],"to":["{}"],"proto":"icmp","loss":"10%","for":"5m"}}]"#,
        a.ip, b.ip
    );
    let (d1, d2) = daemons(l, extra, &faults);
    let got = l.ping_fast(a, b.ip.into(), n).unwrap();
    let lost = n - got;
    injector_tests::stats::assert_binomial(
        u64::from(lost),
        u64::from(n),
        0.1,
        &format!("{} -> {}: lost", a.name, b.name),
    );
    // Judged once: all judgements on the sender's node, none on the receiver's.
    let (s1, s2) = (d1.local(&["stats"]).unwrap(), d2.local(&["stats"]).unwrap());
    let judged: u64 = ["veth_egress", "overlay_egress", "veth_ingress"]
        .iter()
        .map(|h| stats::fault(&s1, "loss10", h, "matched"))
        .sum();
    assert_eq!(
        judged,
        u64::from(n),
        "every request judged once on {}:\n{s1}",
        l.node(a.node).name
    );
    let elsewhere: u64 = ["veth_egress", "overlay_egress", "veth_ingress"]
        .iter()
        .map(|h| stats::fault(&s2, "loss10", h, "matched"))
        .sum();
    assert_eq!(elsewhere, 0, "judged again on the other node:\n{s2}");
    let dropped: u64 = ["veth_egress", "overlay_egress", "veth_ingress"]
        .iter()
        .map(|h| stats::fault(&s1, "loss10", h, "dropped"))
        .sum();
    assert_eq!(
        dropped,
        u64::from(lost),
        "the counters account for every lost ping"
    );
}

#[test]
fn ten_percent_loss_same_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("lo"), 2).unwrap();
    ten_percent(&l, l.pod(1, 1), l.pod(1, 2), &[]);
}

#[test]
fn ten_percent_loss_cross_node_is_not_nineteen() {
    require_root();
    let l = Lab::up(&lab::run_prefix("lx"), 2).unwrap();
    ten_percent(&l, l.pod(1, 1), l.pod(2, 1), &[]);
}

#[test]
fn ten_percent_loss_cross_node_with_xdp() {
    require_root();
    let l = Lab::up(&lab::run_prefix("lX"), 2).unwrap();
    ten_percent(&l, l.pod(1, 1), l.pod(2, 1), &["--xdp"]);
}

/// A both-ways 10% loss whose `from` and `to` both hold `a` and `b` (each packet matches both of
/// its rules): requests and replies are each judged once, so 10k pings lose 1 - 0.9^2 = 19%
/// (judged twice per packet it was 35%), and the counters count each packet once.
fn both_ways_overlapping(l: &Lab, a: &Pod, b: &Pod) {
    let n = 10_000u32;
    let ab = format!(r#"["{}","{}"]"#, a.ip, b.ip);
    let faults = format!(
        r#"[{{"name":"bw","from":{ab},"to":{ab},"proto":"icmp","loss":"10%","both_ways":true,"for":"5m"}}]"#
    );
    let (d1, d2) = daemons(l, &[], &faults);
    let got = l.ping_fast(a, b.ip.into(), n).unwrap();
    let lost = n - got;
    stats::assert_binomial(
        u64::from(lost),
        u64::from(n),
        1.0 - 0.9 * 0.9,
        &format!("{} <-> {}: pings lost", a.name, b.name),
    );
    let hooks = ["veth_egress", "overlay_egress", "veth_ingress"];
    let sum =
        |s: &str, key: &str| -> u64 { hooks.iter().map(|h| stats::fault(s, "bw", h, key)).sum() };
    let (s1, s2) = (d1.local(&["stats"]).unwrap(), d2.local(&["stats"]).unwrap());
    let matched = sum(&s1, "matched") + sum(&s2, "matched");
    let dropped = sum(&s1, "dropped") + sum(&s2, "dropped");
    assert_eq!(
        dropped,
        u64::from(lost),
        "every lost ping dropped once:\n{s1}\n{s2}"
    );
    // Judged: every request, and every reply that was sent (n minus the requests dropped, which
    // are at most the pings lost).
    let (n, lost) = (u64::from(n), u64::from(lost));
    assert!(
        (2 * n - lost..=2 * n).contains(&matched),
        "matched {matched}: each request and reply counted once (between {} and {})",
        2 * n - lost,
        2 * n
    );
}

#[test]
fn both_ways_overlapping_loss_same_node_is_judged_once_per_packet() {
    require_root();
    let l = Lab::up(&lab::run_prefix("bs"), 2).unwrap();
    both_ways_overlapping(&l, l.pod(1, 1), l.pod(1, 2));
}

#[test]
fn both_ways_overlapping_loss_cross_node_is_judged_once_per_packet() {
    require_root();
    let l = Lab::up(&lab::run_prefix("bx"), 2).unwrap();
    both_ways_overlapping(&l, l.pod(1, 1), l.pod(2, 1));
}

/// A fault on a node's whole pod subnet: the node's own addresses in it (cni0's 10.42.1.1,
/// flannel.1's 10.42.1.0) are carved out, shown in the reply and in `fault get`; the bridge
/// address still answers every ping while a pod in the subnet loses its share.
#[test]
fn a_fault_on_a_pod_subnet_carves_out_the_node_addresses() {
    require_root();
    let l = Lab::up(&lab::run_prefix("cv"), 2).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let subnet = |more: &[&str]| {
        let mut a = vec![
            "fault",
            "add",
            "subnet",
            "--to",
            "10.42.1.0/24",
            "--proto",
            "icmp",
            "--for",
            "5m",
        ];
        a.extend_from_slice(more);
        d.cli_ok(&a, "").unwrap()
    };
    let out = subnet(&["--loss", "50%", "-o", "json"]);
    assert!(
        out.contains("10.42.1.1/32") && out.contains("10.42.1.0/32"),
        "the reply names what was carved: {out}"
    );
    let got: serde_json::Value = serde_json::from_str(
        &d.cli_ok(&["fault", "get", "subnet", "-o", "json"], "")
            .unwrap(),
    )
    .unwrap();
    let carved = got.to_string();
    assert!(
        carved.contains("10.42.1.1/32") && carved.contains("node address"),
        "fault get shows the carved targets: {carved}"
    );
    let n = 400u32;
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let to_bridge = l.ping_fast(a, "10.42.1.1".parse().unwrap(), n).unwrap();
    assert_eq!(to_bridge, n, "the bridge address is untouched");
    // Request and reply both go to a pod of the subnet: a round trip survives with 0.5^2.
    let to_pod = l.ping_fast(a, b.ip.into(), n).unwrap();
    stats::assert_binomial(
        u64::from(n - to_pod),
        u64::from(n),
        0.75,
        "pings lost between pods of the subnet",
    );
    // --force includes them.
    subnet(&["--blackhole", "--force", "--replace"]);
    assert_eq!(
        l.ping(a, "10.42.1.1".parse().unwrap(), 3).unwrap(),
        0,
        "forced: the bridge address is hit too"
    );
}

fn at(p: &Pod, port: u16) -> SocketAddr {
    SocketAddr::new(p.ip.into(), port)
}

#[test]
fn a_port_blackhole_leaves_other_ports_and_pods_alone() {
    require_root();
    let l = Lab::up(&lab::run_prefix("bp"), 2).unwrap();
    let (a, db, other) = (l.pod(1, 1), l.pod(2, 1), l.pod(2, 2));
    let _s1 = Servers::start(&db.netns, &[5432, 5433], &[5432, 5433]).unwrap();
    let _s2 = Servers::start(&other.netns, &[5432], &[5432]).unwrap();
    let faults = format!(
        r#"[{{"name":"db-tcp","to":["{ip}"],"proto":"tcp","dport":["5432"],"blackhole":true,"for":"5m"}},
            {{"name":"db-udp","to":["{ip}"],"proto":"udp","dport":["5432"],"blackhole":true,"for":"5m"}}]"#,
        ip = db.ip
    );
    let (d1, _d2) = daemons(&l, &[], &faults);
    let w = Duration::from_millis(500);
    assert!(
        !tcp_connects(&a.netns, at(db, 5432), Duration::from_secs(1)).unwrap(),
        "tcp :5432 blackholed"
    );
    assert_eq!(
        udp_echoes(&a.netns, at(db, 5432), 20, w).unwrap(),
        0,
        "udp :5432 blackholed"
    );
    assert!(
        tcp_connects(&a.netns, at(db, 5433), Duration::from_secs(2)).unwrap(),
        "tcp :5433 untouched"
    );
    assert_eq!(
        udp_echoes(&a.netns, at(db, 5433), 20, w).unwrap(),
        20,
        "udp :5433 untouched"
    );
    assert!(
        tcp_connects(&a.netns, at(other, 5432), Duration::from_secs(2)).unwrap(),
        "other pod untouched"
    );
    assert_eq!(
        udp_echoes(&a.netns, at(other, 5432), 20, w).unwrap(),
        20,
        "other pod untouched"
    );
    assert_eq!(
        l.ping(a, db.ip.into(), 3).unwrap(),
        3,
        "icmp to the db untouched"
    );
    let s = d1.local(&["stats"]).unwrap();
    assert_eq!(
        stats::fault(&s, "db-udp", "veth_ingress", "dropped"),
        20,
        "{s}"
    );
}

#[test]
fn a_flow_fault_hits_the_same_flows_on_a_rerun_with_the_same_seed() {
    require_root();
    let l = Lab::up(&lab::run_prefix("fl"), 2).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(2, 1));
    let _srv = Servers::start(&b.netns, &[7000], &[]).unwrap();
    let faults = |seed: u32| {
        format!(
            r#"[{{"name":"flows30","to":["{}"],"proto":"udp","flows":"30%","seed":{seed},"blackhole":true,"for":"5m"}}]"#,
            b.ip
        )
    };
    let sports: Vec<u16> = (31000..31400).collect();
    let run = |d1: &Daemon, d2: &Daemon, seed| {
        for d in [d1, d2] {
            d.clear().unwrap();
            d.apply(&faults(seed)).unwrap();
        }
        udp_flows(
            &a.netns,
            at(b, 7000),
            sports.clone(),
            Duration::from_secs(1),
        )
        .unwrap()
    };
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let first = run(&d1, &d2, 7);
    let hit = first.iter().filter(|ok| !**ok).count();
    // 30% of 400 flows: mean 120, sd 9.2; 99.9% bound +-30.
    assert!(hit.abs_diff(120) <= 30, "{hit} of 400 flows hit");
    // Exactly the flows the shared hash picks.
    let ep = |ip: std::net::Ipv4Addr, port| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&ip.octets());
        flow::Endpoint { addr, port }
    };
    for (i, p) in sports.iter().enumerate() {
        let predicted = flow::ppm(&ep(a.ip, *p), &ep(b.ip, 7000), 17, 7) < 300_000;
        assert_eq!(!first[i], predicted, "flow :{p}");
    }
    assert_eq!(run(&d1, &d2, 7), first, "same seed, same flows");
    assert_ne!(run(&d1, &d2, 8), first, "another seed, other flows");
}

#[test]
fn a_fault_stops_at_its_deadline_after_the_daemon_was_killed() {
    require_root();
    let l = Lab::up(&lab::run_prefix("dk"), 2).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let mut d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let applied = Instant::now();
    d.apply(&format!(
        r#"[{{"name":"bh","to":["{}"],"blackhole":true,"for":"3s"}}]"#,
        b.ip
    ))
    .unwrap();
    d.signal_and_wait(libc::SIGKILL).unwrap();
    // Nobody is left to remove it: the pinned programs and maps keep the fault...
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        0,
        "fault active after SIGKILL"
    );
    // ...until the deadline the kernel checks.
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(applied.elapsed()) + Duration::from_millis(300),
    );
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        3,
        "fault over at its deadline"
    );
}

#[test]
fn faults_lapse_when_the_heartbeat_is_older_than_the_grace_period() {
    require_root();
    let l = Lab::up(&lab::run_prefix("hb"), 2).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let mut d = Daemon::start_with(&injector_bin(), l.node(1), &["--grace", "2s"]).unwrap();
    d.apply(&format!(
        r#"[{{"name":"bh","to":["{}"],"blackhole":true,"for":"5m"}}]"#,
        b.ip
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        0,
        "a live daemon's heartbeat keeps the fault"
    );
    let killed = Instant::now();
    d.signal_and_wait(libc::SIGKILL).unwrap();
    assert_eq!(
        l.ping(a, b.ip.into(), 2).unwrap(),
        0,
        "still active within the grace period"
    );
    std::thread::sleep(Duration::from_millis(3200).saturating_sub(killed.elapsed()));
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        3,
        "lapsed: heartbeat older than 2s"
    );
}

/// One fault at a time added and removed, each change a generation flip that rewrites only the
/// array entries that differ from what that generation last held: after every step the UDP
/// traffic is exactly what the remaining faults say (a TCP-only fault in a slot that held a UDP
/// one must not keep dropping UDP).
#[test]
fn the_fault_set_is_exact_after_every_add_and_remove() {
    require_root();
    let l = Lab::up(&lab::run_prefix("fs"), 2).unwrap();
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let _sb = Servers::start(&b.netns, &[7000], &[]).unwrap();
    let _sc = Servers::start(&c.netns, &[7000], &[]).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let reach =
        |to: &Pod| udp_echoes(&a.netns, at(to, 7000), 5, Duration::from_millis(300)).unwrap() > 0;
    // (fault added, or removed when `to` is None; its protocol; UDP reaches b; reaches c)
    let steps: [(&str, Option<&Pod>, &str, bool, bool); 9] = [
        ("hb", Some(b), "udp", false, true),
        ("hb", None, "", true, true),
        ("hb", Some(b), "tcp", true, true),
        ("hc", Some(c), "udp", true, false),
        ("hb", None, "", true, false),
        ("hb2", Some(b), "udp", false, false),
        ("hc", None, "", false, true),
        ("hc", Some(c), "tcp", false, true),
        ("hb2", None, "", true, true),
    ];
    for (i, (name, to, proto, b_ok, c_ok)) in steps.into_iter().enumerate() {
        match to {
            Some(to) => {
                d1.apply(&format!(
                    r#"[{{"name":"{name}","from":["{}"],"to":["{}"],"proto":"{proto}","blackhole":true,"for":"5m"}}]"#,
                    a.ip, to.ip
                ))
                .unwrap();
            }
            None => {
                d1.cli_ok(&["fault", "rm", name], "").unwrap();
            }
        }
        assert_eq!(
            (reach(b), reach(c)),
            (b_ok, c_ok),
            "step {i} ({name} {}): UDP reachability of (b, c)",
            to.map_or("removed".to_string(), |_| format!("added, {proto}"))
        );
    }
}

/// With `--xdp`, drops of pod traffic are judged by XDP at the sender's veth and egress leaves
/// them alone; traffic that entered the node elsewhere (here: routed in from the underlay, as
/// from an uplink) must still be judged at egress, not skipped as if XDP had seen it.
#[test]
fn with_xdp_traffic_from_an_uplink_is_still_judged() {
    require_root();
    let l = Lab::up(&lab::run_prefix("xu"), 2).unwrap();
    let (n1, n2, a) = (l.node(1), l.node(2), l.pod(1, 1));
    // node2 reaches pod a through node1's underlay address, not through flannel.1.
    injector_tests::cmd::ip(
        &n2.netns,
        &[
            "route",
            "add",
            &format!("{}/32", a.ip),
            "via",
            &n1.underlay_ip.to_string(),
            "dev",
            "eth0",
        ],
    )
    .unwrap();
    let ping = || {
        let out = injector_tests::cmd::output(
            "ip",
            &[
                "netns",
                "exec",
                &n2.netns,
                "ping",
                "-c",
                "5",
                "-i",
                "0.05",
                "-W",
                "1",
                &a.ip.to_string(),
            ],
        )
        .unwrap();
        lab::parse_ping_received(&String::from_utf8_lossy(&out.stdout)).unwrap_or(0)
    };
    let d1 = Daemon::start_with(&injector_bin(), n1, &["--xdp"]).unwrap();
    assert_eq!(ping(), 5, "routed in from the underlay, no fault");
    d1.apply(&format!(
        r#"[{{"name":"uplink","from":["{}"],"to":["{}"],"proto":"icmp","blackhole":true,"for":"5m"}}]"#,
        n2.underlay_ip, a.ip
    ))
    .unwrap();
    assert_eq!(ping(), 0, "judged at the veth's egress");
    let s = d1.local(&["stats"]).unwrap();
    assert_eq!(
        stats::fault(&s, "uplink", "veth_egress", "dropped"),
        5,
        "{s}"
    );
}

/// kube-proxy's way to a Service: the host's NAT turns a packet to the VIP into one to a pod
/// (iptables DNAT in the node's namespace, with br_netfilter for the bridged replies). The
/// sender's veth judges drops at TC ingress, where the packet still carries the VIP; a fault
/// naming the pod must still cut it, judged at egress on the pod's address, and once.
#[test]
fn a_fault_on_a_pod_cuts_its_traffic_through_a_service_vip() {
    through_a_vip("vip", &[]);
}

/// The same with XDP judging drops on the veths: the TC ingress program records for egress.
#[test]
fn a_fault_on_a_pod_cuts_its_traffic_through_a_service_vip_with_xdp() {
    through_a_vip("vipx", &["--xdp"]);
}

fn through_a_vip(tag: &str, extra: &[&str]) {
    require_root();
    let l = Lab::up(&lab::run_prefix(tag), 2).unwrap();
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let _sb = Servers::start(&b.netns, &[5432, 5433], &[]).unwrap();
    let _sc = Servers::start(&c.netns, &[5432], &[]).unwrap();
    let ns = &l.node(1).netns;
    injector_tests::cmd::in_ns(
        ns,
        "sysctl",
        &["-qw", "net.bridge.bridge-nf-call-iptables=1"],
    )
    .unwrap();
    let vips = [
        ("10.96.0.71", b, 5432),
        ("10.96.0.72", c, 5432),
        ("10.96.0.73", b, 5433),
    ];
    for (vip, p, port) in vips {
        let to = format!("{}:{port}", p.ip);
        injector_tests::cmd::in_ns(
            ns,
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                vip,
                "-p",
                "udp",
                "--dport",
                "80",
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ],
        )
        .unwrap();
    }
    let vip = |i: usize| SocketAddr::new(vips[i].0.parse().unwrap(), 80);
    let w = Duration::from_millis(500);
    for (i, (name, _, _)) in vips.iter().enumerate() {
        assert_eq!(
            udp_echoes(&a.netns, vip(i), 5, w).unwrap(),
            5,
            "{name} without faults"
        );
    }
    let faults = format!(
        r#"[{{"name":"bh-b","to":["{b}"],"proto":"udp","dport":["5432"],"blackhole":true,"for":"5m"}},
            {{"name":"bh-c","to":["{c}"],"proto":"udp","dport":["5432"],"blackhole":true,"for":"5m"}},
            {{"name":"shadow","to":["{b}"],"proto":"udp","dport":["5433"],"blackhole":true,"dry_run":true,"for":"5m"}}]"#,
        b = b.ip,
        c = c.ip
    );
    let (d1, _d2) = daemons(&l, extra, &faults);
    assert_eq!(
        udp_echoes(&a.netns, vip(0), 20, w).unwrap(),
        0,
        "same node, through the VIP"
    );
    assert_eq!(
        udp_echoes(&a.netns, vip(1), 20, w).unwrap(),
        0,
        "cross node, through the VIP"
    );
    assert_eq!(
        udp_echoes(&a.netns, vip(2), 20, w).unwrap(),
        20,
        "a dry run passes"
    );
    assert_eq!(
        udp_echoes(&a.netns, at(b, 5433), 20, w).unwrap(),
        20,
        "a dry run passes"
    );
    let s = d1.local(&["stats"]).unwrap();
    let count = |f: &str, hook: &str, what: &str| stats::fault(&s, f, hook, what);
    assert_eq!(count("bh-b", "veth_egress", "dropped"), 20, "{s}");
    assert_eq!(count("bh-c", "overlay_egress", "dropped"), 20, "{s}");
    assert_eq!(
        count("bh-b", "veth_ingress", "matched"),
        0,
        "the VIP matches nothing: {s}"
    );
    // The dry run: through the VIP judged at egress, directly at ingress; each request once.
    assert_eq!(count("shadow", "veth_egress", "matched"), 20, "{s}");
    assert_eq!(count("shadow", "veth_ingress", "matched"), 20, "{s}");
}
