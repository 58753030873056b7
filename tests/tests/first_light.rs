//! First light: `injector daemon` in a lab node attaches the TC program to the pod veths; a drop
//! entry for one destination stops pings to it and only to it; removing it, or its deadline
//! passing, restores traffic; SIGTERM leaves the node exactly as before.

use std::time::{Duration, Instant};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root, snapshot,
};

fn counter(stats: &str, hook: &str, key: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with(&format!("hook {hook} ")))
        .expect("hook line");
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .expect("key")
        .parse()
        .expect("number")
}

#[test]
fn drop_entry_blocks_only_its_destination_until_removed() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tf"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let _d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let (a, b_same, c_cross, d_cross) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1), l.pod(2, 2));
    for to in [b_same, c_cross, d_cross] {
        assert_eq!(
            l.ping(a, to.ip.into(), 3).unwrap(),
            3,
            "baseline to {}",
            to.name
        );
    }

    // Cross-node: node1's daemon drops what n1p1 sends to n2p1.
    d1.local(&["add-drop", "--to", &c_cross.ip.to_string(), "--for", "5m"])
        .unwrap();
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
    let stats = d1.local(&["stats"]).unwrap();
    assert!(counter(&stats, "tc_ingress", "dropped") >= 5, "{stats}");

    d1.local(&["rm-drop", "--to", &c_cross.ip.to_string()])
        .unwrap();
    assert_eq!(
        l.ping(a, c_cross.ip.into(), 3).unwrap(),
        3,
        "restored after removal"
    );

    // Same-node, by prefix, IPv6.
    d1.local(&["add-drop", "--to", "fd00:42:1::3/128"]).unwrap();
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
fn drop_entry_ends_at_its_deadline_in_the_kernel() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tk"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let added = Instant::now();
    d1.local(&["add-drop", "--to", "10.42.1.0/24", "--for", "2s"])
        .unwrap();
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        0,
        "dropped before the deadline"
    );
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(added.elapsed()) + Duration::from_millis(200),
    );
    // Nobody removed the entry: the program ignores it past its deadline.
    let stats = d1.local(&["stats"]).unwrap();
    assert!(stats.contains("entry 10.42.1.0/24"), "{stats}");
    assert_eq!(
        l.ping(a, b.ip.into(), 3).unwrap(),
        3,
        "traffic back after the deadline"
    );
    let stats = d1.local(&["stats"]).unwrap();
    assert!(counter(&stats, "tc_ingress", "expired") >= 3, "{stats}");
}

#[test]
fn sigterm_leaves_the_node_as_it_was() {
    require_root();
    let l = Lab::up(&lab::run_prefix("ts"), 2).unwrap();
    let node = l.node(1);
    let before = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    let d = Daemon::start(&injector_bin(), node).unwrap();
    let during = snapshot::node(&node.netns, &node.bpffs()).unwrap();
    // Attached to both pod veths, cni0 and flannel.1, both directions; maps pinned.
    assert_eq!(during.matches("Ingress:tc_ingress").count(), 4, "{during}");
    assert_eq!(during.matches("Egress:tc_egress").count(), 4, "{during}");
    assert!(during.contains("\"DST_V4\""), "{during}");
    d.local(&["add-drop", "--to", "10.42.2.0/24"]).unwrap();
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
    let before = d.local(&["stats"]).unwrap();
    for (args, msg) in [
        (
            vec!["add-drop", "--to", "10.42.2.7/24"],
            "has host bits set; did you mean 10.42.2.0/24?",
        ),
        (
            vec!["add-drop", "--to", "10.42.2.300"],
            "--to: '10.42.2.300' is not an IP address or CIDR",
        ),
        (
            vec!["add-drop", "--to", "10.42.2.0/24", "--for", "forever"],
            "--for: 'forever' is not a duration",
        ),
        (
            vec!["add-drop", "--to", "10.42.2.0/24", "--for", "48h"],
            "must be between 1ms and 24h",
        ),
        (
            vec!["rm-drop", "--to", "10.42.9.0/24"],
            "no drop entry for 10.42.9.0/24",
        ),
    ] {
        let err = d.local(&args).unwrap_err().to_string();
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(err.contains("exit status: 1"), "{args:?}: {err}");
    }
    assert_eq!(d.local(&["stats"]).unwrap(), before);
}
