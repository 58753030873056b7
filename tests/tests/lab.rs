//! The lab itself: pods reach each other same-node and cross-node (through flannel.1), two runs
//! coexist, and teardown leaves nothing, also when the test panics.

use injector_tests::{
    cmd::ip,
    lab::{self, Lab},
    require_root,
};

fn flannel_tx_packets(netns: &str) -> u64 {
    let s = ip(netns, &["-s", "-o", "link", "show", "flannel.1"]).expect("ip -s link");
    // "... TX: bytes packets ... \    <bytes> <packets> ..." in one line with -o.
    let tx = s.split("TX:").nth(1).expect("TX section");
    let nums: Vec<u64> = tx
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    nums[1]
}

#[test]
fn pods_reach_each_other_same_node_and_cross_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("tl"), 2).unwrap();
    let a = l.pod(1, 1).clone();
    assert_eq!(
        l.ping(&a, l.pod(1, 2).ip.into(), 3).unwrap(),
        3,
        "same node"
    );
    assert_eq!(
        l.ping(&a, l.pod(1, 2).ip6.into(), 3).unwrap(),
        3,
        "same node, IPv6"
    );

    let before = flannel_tx_packets(&l.node(1).netns);
    assert_eq!(
        l.ping(&a, l.pod(2, 1).ip.into(), 5).unwrap(),
        5,
        "cross node"
    );
    assert_eq!(
        l.ping(&a, l.pod(2, 2).ip.into(), 5).unwrap(),
        5,
        "cross node"
    );
    let sent = flannel_tx_packets(&l.node(1).netns) - before;
    assert!(
        sent >= 10,
        "cross-node traffic must leave through flannel.1 (sent {sent})"
    );
}

#[test]
fn two_runs_coexist_and_teardown_leaves_nothing() {
    require_root();
    let host_links = ip("", &["-o", "link", "show"]).unwrap();
    let (p1, p2) = (lab::run_prefix("ta"), lab::run_prefix("tb"));
    {
        let l1 = Lab::up(&p1, 1).unwrap();
        let l2 = Lab::up(&p2, 1).unwrap();
        for l in [&l1, &l2] {
            assert_eq!(l.ping(l.pod(1, 1), l.pod(2, 1).ip.into(), 2).unwrap(), 2);
        }
        assert_eq!(lab::namespaces(&p1).unwrap().len(), 4);
        assert_eq!(lab::namespaces(&p2).unwrap().len(), 4);
    }
    assert!(lab::namespaces(&p1).unwrap().is_empty());
    assert!(lab::namespaces(&p2).unwrap().is_empty());
    assert_eq!(
        ip("", &["-o", "link", "show"]).unwrap(),
        host_links,
        "host links changed"
    );
}

#[test]
fn teardown_happens_when_a_test_panics() {
    require_root();
    let p = lab::run_prefix("tp");
    let r = std::panic::catch_unwind(|| {
        let _l = Lab::up(&p, 1).unwrap();
        assert!(!lab::namespaces(&p).unwrap().is_empty());
        panic!("a failing test");
    });
    assert!(r.is_err());
    assert!(
        lab::namespaces(&p).unwrap().is_empty(),
        "namespaces left after a panic"
    );
}

#[test]
fn down_is_idempotent_and_status_says_down() {
    require_root();
    let p = lab::run_prefix("td");
    lab::Lab::up(&p, 1).unwrap().keep();
    assert!(lab::status(&p).unwrap().contains("4 namespaces"));
    lab::down(&p).unwrap();
    lab::down(&p).unwrap();
    assert!(lab::status(&p).unwrap().contains("down"));
}
