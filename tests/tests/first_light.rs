//! The daemon in the lab: it attaches to the pod veths, cni0 and flannel.1; a fault for one
//! destination stops traffic to it and only to it; clearing it, or its deadline passing, restores
//! traffic; bad input changes nothing; SIGTERM leaves the node exactly as before.

use std::time::{Duration, Instant};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root, snapshot, stats,
};

fn blackhole(to: &str, lifetime: &str) -> String {
    format!(r#"[{{"name":"bh","to":["{to}"],"blackhole":true,"for":"{lifetime}"}}]"#)
}

#[test]
fn blackhole_blocks_only_its_destination_until_cleared() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tf"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let (a, b_same, c_cross, d_cross) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1), l.pod(2, 2));
    for to in [b_same, c_cross, d_cross] {
        assert_eq!(
            l.ping(a, to.ip.into(), 3).unwrap(),
            3,
            "baseline to {}",
            to.name
        );
    }
    d1.apply(&blackhole(&c_cross.ip.to_string(), "5m")).unwrap();
    assert_eq!(
        l.ping(a, c_cross.ip.into(), 5).unwrap(),
        0,
        "dropped cross-node"
    );
    assert_eq!(
        l.ping(a, d_cross.ip.into(), 3).unwrap(),
        3,
        "other pod on that node untouched"
    );
    assert_eq!(
        l.ping(a, b_same.ip.into(), 3).unwrap(),
        3,
        "same-node pod untouched"
    );
    let s = d1.local(&["stats"]).unwrap();
    assert_eq!(
        stats::fault(&s, "slot0", "overlay_egress", "dropped"),
        5,
        "{s}"
    );

    d1.local(&["clear"]).unwrap();
    assert_eq!(
        l.ping(a, c_cross.ip.into(), 3).unwrap(),
        3,
        "restored after clear"
    );

    // Same node, IPv6, by prefix.
    d1.apply(&blackhole("fd00:42:1::3/128", "5m")).unwrap();
    assert_eq!(
        l.ping(a, b_same.ip6.into(), 3).unwrap(),
        0,
        "dropped same-node IPv6"
    );
    assert_eq!(
        l.ping(a, b_same.ip.into(), 3).unwrap(),
        3,
        "IPv4 to the same pod untouched"
    );
}

#[test]
fn a_fault_ends_at_its_deadline_in_the_kernel() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tk"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let added = Instant::now();
    d1.apply(&blackhole("10.42.1.0/24", "2s")).unwrap();
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        0,
        "dropped before the deadline"
    );
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(added.elapsed()) + Duration::from_millis(200),
    );
    // Nobody removed the fault: the program ignores it past its deadline.
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        3,
        "traffic back after the deadline"
    );
    let s = d1.local(&["stats"]).unwrap();
    assert!(
        s.contains("fault slot0 "),
        "the fault is still in the map:\n{s}"
    );
    assert!(stats::hook(&s, "veth_egress", "expired") >= 3, "{s}");
}

#[test]
fn sigterm_leaves_the_node_as_it_was() {
    require_root();
    let l = Lab::up(&lab::run_prefix("ts"), 2).unwrap();
    let node = l.node(1);
    let before = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    let d = Daemon::start_with(&injector_bin(), node, &["--xdp"]).unwrap();
    let during = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    // veths: observe in, judge out; cni0: observe both ways; flannel.1: observe in, judge out.
    assert_eq!(during.matches("Ingress:tc_observe").count(), 4, "{during}");
    assert_eq!(
        during.matches("Egress:tc_veth_egress").count(),
        2,
        "{during}"
    );
    assert_eq!(
        during.matches("Egress:tc_vxlan_egress").count(),
        1,
        "{during}"
    );
    assert_eq!(during.matches("Egress:tc_observe").count(), 1, "{during}");
    assert_eq!(
        during.matches("prog/xdp id").count(),
        2,
        "XDP on both pod veths:\n{during}"
    );
    assert!(
        during.contains("\"DST_V4\"") && during.contains("\"links\""),
        "{during}"
    );
    d.apply(&blackhole("10.42.2.0/24", "5m")).unwrap();
    d.stop().unwrap();
    let after = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    assert_eq!(before, after);
    assert_eq!(l.ping(l.pod(1, 1), l.pod(2, 1).ip.into(), 3).unwrap(), 3);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tb"), 1).unwrap();
    let d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    d.apply(&blackhole("10.42.9.9", "5m")).unwrap();
    let before = d.local(&["stats"]).unwrap();
    let ok = r#"{"name":"ok","to":["10.42.9.0/24"],"loss":"5%","for":"1m"}"#;
    for (fault, msg) in [
        (
            r#"{"name":"x","to":["10.42.2.7/24"],"loss":"5%","for":"1m"}"#,
            "faults[1].to: '10.42.2.7/24' has host bits set; did you mean 10.42.2.0/24?",
        ),
        (
            r#"{"name":"x","to":["10.42.2.300"],"loss":"5%","for":"1m"}"#,
            "faults[1].to: '10.42.2.300' is not an IP address or CIDR",
        ),
        (
            r#"{"name":"x","loss":"150%","for":"1m"}"#,
            "faults[1].loss: '150%': must be between 0% and 100%",
        ),
        (
            r#"{"name":"x","proto":"tcp","dport":["70000"],"blackhole":true,"for":"1m"}"#,
            "faults[1].dport: '70000': ports are 0-65535",
        ),
        (
            r#"{"name":"x","blackhole":true,"for":"forever"}"#,
            "faults[1].for: 'forever' is not a duration",
        ),
        (
            r#"{"name":"x","delay":"100ms","for":"1m"}"#,
            "faults[1].delay: the fq qdisc is unavailable on this kernel",
        ),
        (
            r#"{"name":"ok","blackhole":true,"for":"1m"}"#,
            "name: 'ok' is used by two faults",
        ),
        (
            r#"{"name":"x","blackhole":true,"for":"1m","colour":"red"}"#,
            "faults[1]: unknown field `colour`",
        ),
    ] {
        if msg.contains("fq qdisc") && injector::features::fq() {
            continue; // this kernel has fq: delay is accepted
        }
        let err = d.apply(&format!("[{ok},{fault}]")).unwrap_err().to_string();
        assert!(err.contains(msg), "{fault}: {err}");
        assert!(err.contains("exit status: 1"), "{err}");
    }
    // The same faults, the same counters (remaining time aside).
    let faults = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("fault "))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !w.starts_with("remaining_s="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert_eq!(
        faults(&d.local(&["stats"]).unwrap()),
        faults(&before),
        "the running fault set changed"
    );
    assert_eq!(
        l.ping(l.pod(1, 1), "10.42.9.9".parse().unwrap(), 1)
            .unwrap(),
        0
    );
}
