//! The daemon in the lab: it attaches to the pod veths, cni0 and flannel.1; a fault for one
//! destination stops traffic to it and only to it; deleting it, or its deadline passing, restores
//! traffic; SIGTERM leaves the node exactly as before.

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
fn blackhole_blocks_only_its_destination_until_deleted() {
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
        "other pod there untouched"
    );
    assert_eq!(
        l.ping(a, b_same.ip.into(), 3).unwrap(),
        3,
        "same-node pod untouched"
    );
    let s = d1.local(&["stats"]).unwrap();
    assert_eq!(stats::fault(&s, "bh", "veth_ingress", "dropped"), 5, "{s}");

    d1.cli_ok(&["fault", "rm", "bh"], "").unwrap();
    assert_eq!(
        l.ping(a, c_cross.ip.into(), 3).unwrap(),
        3,
        "restored after delete"
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
        "IPv4 to that pod untouched"
    );
}

#[test]
fn a_fault_ends_at_its_deadline() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tk"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let added = Instant::now();
    d1.apply(&blackhole(&b.ip.to_string(), "2s")).unwrap();
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        0,
        "dropped before the deadline"
    );
    let left = Duration::from_secs(2).saturating_sub(added.elapsed());
    std::thread::sleep(left + Duration::from_millis(200));
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        3,
        "traffic back after the deadline"
    );
    // The daemon forgets it within a second (faults_lab shows the kernel ends it with no daemon).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(d1.cli_ok(&["fault", "ls"], "").unwrap(), "no faults\n");
}

/// How many of each hook a node's snapshot holds: tc_observe at ingress and at egress,
/// tc_veth_ingress, tc_veth_egress, tc_vxlan_egress, XDP programs.
fn attached(snapshot: &str) -> [usize; 6] {
    [
        "Ingress:tc_observe",
        "Egress:tc_observe",
        "Ingress:tc_veth_ingress",
        "Egress:tc_veth_egress",
        "Egress:tc_vxlan_egress",
        "prog/xdp id",
    ]
    .map(|h| snapshot.matches(h).count())
}

#[test]
fn sigterm_leaves_the_node_as_it_was() {
    require_root();
    let l = Lab::up(&lab::run_prefix("ts"), 2).unwrap();
    let node = l.node(1);
    let before = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    let d = Daemon::start_with(&injector_bin(), node, &["--xdp", "--observe"]).unwrap();
    let during = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    // veths: XDP judges, TC records in, judges out; with --observe, cni0: observe both ways;
    // flannel.1: observe in, judge out.
    assert_eq!(attached(&during), [2, 1, 2, 2, 1, 2], "{during}");
    assert!(
        during.contains("\"DST_V4\"") && during.contains("\"links\""),
        "{during}"
    );
    d.apply(&blackhole("10.42.2.0/24", "5m")).unwrap();
    let socket = d.socket.clone();
    d.stop().unwrap();
    let after = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    assert_eq!(before, after);
    assert!(!socket.exists(), "the API socket is removed");
    assert_eq!(l.ping(l.pod(1, 1), l.pod(2, 1).ip.into(), 3).unwrap(), 3);
    // Without --observe, the default: no observer anywhere (cni0 has nothing attached), and a
    // clean stop leaves the node as it was too.
    let d = Daemon::start(&injector_bin(), node).unwrap();
    let during = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    assert_eq!(attached(&during), [0, 0, 2, 2, 1, 0], "{during}");
    d.stop().unwrap();
    assert_eq!(before, snapshot::node(&node.netns, &node.bpffs()).unwrap());
}
