//! The injector end to end on a real API server (tests/src/k8s.rs): deploy/'s CRDs and RBAC, a
//! daemon per lab node reconciling NetworkFaults as the daemon identity, and real traffic.
//! Label selectors across nodes as pods come and go, `mode: fixed` picking the same pod on
//! every node, a Service fault on its target port only, the end of a fault by deletion and by
//! its deadline while the API server is gone (and no duplicates after it is back), refused
//! resources, and the cluster-wide abort. Every asynchronous effect is polled with a deadline.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::ensure;
use injector_tests::{
    cluster::{ClusterOptions, PodMeta},
    k8s::{Deployed, all_addrs, comparable, condition, network_fault, owned, pod_ips},
    lab::{self, Pod},
    poll::{SETTLE, until},
    require_root, stats,
    traffic::{Servers, tcp_connects},
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const NS: &str = "shop";

/// client (n1p1) and batch (n1p2) on node1, server (n2p1) and db (n2p2) on node2, all in `shop`.
fn up(tag: &str) -> Deployed {
    require_root();
    let opts = ClusterOptions::default()
        .pod("n1p1", PodMeta::new(NS, &[("app", "client")]))
        .pod("n1p2", PodMeta::new(NS, &[("app", "batch")]))
        .pod("n2p1", PodMeta::new(NS, &[("app", "server")]))
        .pod("n2p2", PodMeta::new(NS, &[("app", "db")]));
    Deployed::up(&lab::run_prefix(tag), opts).expect("a cluster with the injector")
}

/// The lab pods: (client, batch, server, db).
fn pods(k: &Deployed) -> (Pod, Pod, Pod, Pod) {
    let l = &k.cluster.lab;
    let p = |n, i| l.pod(n, i).clone();
    (p(1, 1), p(1, 2), p(2, 1), p(2, 2))
}

/// A spec from the pods labelled `app=from` to those labelled `app=to`, with `more` fields.
fn between(from: &str, to: &str, more: Value) -> Value {
    let mut spec = json!({"from": {"pods": {"matchLabels": {"app": from}}},
                          "to": {"pods": {"matchLabels": {"app": to}}}});
    spec.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    spec
}

/// Pings answered of `count` from `a` to `b` (10 ms apart).
fn ping(k: &Deployed, a: &Pod, b: &Pod, count: u32) -> u32 {
    k.cluster.lab.ping(a, b.ip.into(), count).unwrap()
}

#[test]
fn label_selectors_follow_pods_across_nodes_and_a_fixed_pick_is_the_same_everywhere() {
    let mut k = up("k8sel");
    let (client, batch, server, db) = pods(&k);

    // 10% loss on ICMP from the client (node1) to the server (node2).
    let loss = network_fault(
        NS,
        "loss",
        between("client", "server", json!({"loss": "10%", "proto": "icmp"})),
    );
    k.apply(&loss).unwrap();
    k.wait_owned(
        "shop/loss",
        "from the client's to the server's addresses",
        |f| {
            ensure!(all_addrs(f, "from") == pod_ips(&client), "from");
            ensure!(all_addrs(f, "to") == pod_ips(&server), "to");
            Ok(())
        },
    );
    let n = 5000;
    let lost = n - k
        .cluster
        .lab
        .ping_fast(&client, server.ip.into(), n)
        .unwrap();
    stats::assert_binomial(lost.into(), n.into(), 0.1, "client -> server, loss 10%");
    assert_eq!(ping(&k, &client, &db, 50), 50, "to a pod without the label");
    assert_eq!(
        ping(&k, &batch, &server, 50),
        50,
        "from a pod without the label"
    );
    let st = k.wait_status(NS, "loss", "Running on 2 nodes, 2 pods", |s| {
        ensure!(s["phase"] == "Running" && s["selected"]["count"] == 2);
        ensure!(s["nodes"]["count"] == 2);
        Ok(())
    });
    assert_eq!(st["selected"]["pods"], json!(["shop/n1p1", "shop/n2p1"]));
    for c in ["Valid", "Ready"] {
        assert_eq!(condition(&st, c).expect(c)["status"], "True", "{st:#}");
    }
    // Judged once, on the sender's node: node1 reports every request, node2 none.
    k.until("the node reports' counters", SETTLE, || {
        let (r1, r2) = (
            k.reported("node1", "shop/loss")?,
            k.reported("node2", "shop/loss")?,
        );
        ensure!(r1["matched"] == n && r1["dropped"] == lost, "node1: {r1}");
        ensure!(r2["matched"] == 0, "node2: {r2}");
        Ok(())
    });
    // What a user sees: `kubectl injector get` sums the nodes' reports.
    let out = std::process::Command::new(injector_tests::kubectl_injector_bin())
        .arg("--kubeconfig")
        .arg(k.cluster.kubeconfig(injector_tests::cluster::ADMIN))
        .args(["get", "loss", "-n", NS, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl injector get: {out:?}");
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["counters"]["matched"], n, "{view:#}");
    assert_eq!(view["counters"]["dropped"], lost, "{view:#}");
    assert_eq!(view["nodes"], 2, "{view:#}");
    k.delete_network_fault(NS, "loss").unwrap();
    k.wait_removed("shop/loss");

    // A blackhole: a pod labelled app=server added while it runs is hit; deleted, it leaves.
    let bh = network_fault(
        NS,
        "bh",
        between("client", "server", json!({"blackhole": true})),
    );
    k.apply(&bh).unwrap();
    k.wait_installed("shop/bh");
    assert_eq!(ping(&k, &client, &server, 3), 0, "blackholed");
    let added = k
        .cluster
        .add_pod(2, PodMeta::new(NS, &[("app", "server")]))
        .unwrap();
    k.wait_owned("shop/bh", "the added pod among the targets", |f| {
        ensure!(all_addrs(f, "to") == &pod_ips(&server) | &pod_ips(&added));
        Ok(())
    });
    assert_eq!(ping(&k, &client, &added, 3), 0, "the added pod is hit");
    assert_eq!(
        ping(&k, &client, &db, 3),
        3,
        "a pod without the label is not"
    );
    k.cluster.remove_pod(2, &added.name).unwrap();
    k.wait_owned("shop/bh", "the deleted pod's addresses gone", |f| {
        ensure!(all_addrs(f, "to") == pod_ips(&server));
        Ok(())
    });
    k.delete_network_fault(NS, "bh").unwrap();
    k.wait_removed("shop/bh");

    // mode fixed, value 1, over two server pods on two nodes: the same one on both daemons.
    let second = k
        .cluster
        .add_pod(1, PodMeta::new(NS, &[("app", "server")]))
        .unwrap();
    let mut spec = between("client", "server", json!({"blackhole": true}));
    spec["to"]["mode"] = json!("fixed");
    spec["to"]["value"] = json!(1);
    k.apply(&network_fault(NS, "one", spec)).unwrap();
    let per_node = k.wait_owned("shop/one", "one server pod, the same on both", |f| {
        let to = all_addrs(f, "to");
        ensure!(
            to == pod_ips(&server) || to == pod_ips(&second),
            "to: {to:?}"
        );
        Ok(())
    });
    let specs = comparable(&per_node);
    assert_eq!(
        specs[0], specs[1],
        "identical node-level faults on both nodes"
    );
    let (hit, spared) = if all_addrs(&per_node[0], "to") == pod_ips(&server) {
        (&server, &second)
    } else {
        (&second, &server)
    };
    assert_eq!(ping(&k, &client, hit, 3), 0, "the picked pod {}", hit.name);
    assert_eq!(ping(&k, &client, spared, 3), 3, "the other {}", spared.name);
}

#[test]
fn a_service_fault_hits_its_endpoints_on_the_target_port_only() {
    let k = up("k8svc");
    let (client, _, backend, neighbour) = pods(&k);
    let _servers = Servers::start(&backend.netns, &[], &[8080, 9090]).unwrap();
    k.apply(&json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "namespace": NS},
                    "spec": {"selector": {"app": "server"},
                             "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}))
        .unwrap();
    k.cluster
        .set_endpoints(NS, "web", &[backend.ip.into()], &[("http", "TCP", 8080)])
        .unwrap();
    let at = |port| SocketAddr::new(backend.ip.into(), port);
    let (short, long) = (Duration::from_secs(1), Duration::from_secs(3));
    assert!(
        tcp_connects(&client.netns, at(8080), long).unwrap(),
        "before"
    );

    let down = json!({"to": {"service": {"name": "web"}}, "blackhole": true});
    k.apply(&network_fault(NS, "web-down", down)).unwrap();
    k.wait_owned("shop/web-down", "tcp to the endpoint's 8080", |f| {
        ensure!(!f.is_empty(), "not installed");
        for part in f {
            ensure!(part["spec"]["proto"] == "tcp", "proto");
            ensure!(part["spec"]["dport"] == json!(["8080"]), "dport");
        }
        ensure!(all_addrs(f, "to").contains(&IpAddr::from(backend.ip)), "to");
        Ok(())
    });
    for (from, which) in [(&client, "cross-node"), (&neighbour, "same-node")] {
        assert!(
            !tcp_connects(&from.netns, at(8080), short).unwrap(),
            "{which}: the target port is blackholed"
        );
        assert!(
            tcp_connects(&from.netns, at(9090), long).unwrap(),
            "{which}: another port of the same pod is not"
        );
    }
}

#[test]
fn deletion_and_the_deadline_end_a_fault_everywhere_even_with_the_api_server_gone() {
    let mut k = up("k8end");
    let (client, batch, server, db) = pods(&k);
    let both_ways = json!({"blackhole": true, "bothWays": true});
    // Pings both ways: the requests are judged on node1, then on node2.
    let both = |k: &Deployed| (ping(k, &client, &server, 3), ping(k, &server, &client, 3));

    // Deleting the resource ends the effect on both nodes.
    let bh = network_fault(NS, "bh", between("client", "server", both_ways.clone()));
    k.apply(&bh).unwrap();
    k.wait_installed("shop/bh");
    assert_eq!(both(&k), (0, 0), "blackholed both ways");
    k.delete_network_fault(NS, "bh").unwrap();
    k.wait_removed("shop/bh");
    assert_eq!(both(&k), (3, 3), "deleted: traffic back both ways");

    // A short fault ends at its deadline while the API server is gone; a long one runs on.
    let long = json!({"blackhole": true, "duration": "10m"});
    k.apply(&network_fault(NS, "long", between("batch", "db", long)))
        .unwrap();
    let mut short = both_ways.clone();
    short["duration"] = json!("10s");
    k.apply(&network_fault(
        NS,
        "short",
        between("client", "server", short),
    ))
    .unwrap();
    let long_before = comparable(&k.wait_installed("shop/long"));
    k.wait_installed("shop/short");
    // Still within its 10 s: it blocks (this check takes about 2 s).
    assert_eq!(both(&k), (0, 0), "the short fault runs");
    k.cluster.api.stop().unwrap();
    k.until(
        "the short fault ended on both nodes without the API server",
        SETTLE + Duration::from_secs(10),
        || {
            for d in &k.daemons {
                let left = owned(d, "shop/short")?;
                ensure!(left.is_empty(), "{} holds {left:#?}", d.node);
            }
            ensure!(both(&k) == (3, 3), "traffic still blocked");
            Ok(())
        },
    );
    assert_eq!(ping(&k, &batch, &db, 3), 0, "the long fault runs on");

    // Back: the daemons resync, with nothing twice and the ended fault not reinstalled.
    k.cluster.api.restart().unwrap();
    let later = network_fault(
        NS,
        "later",
        between("client", "db", json!({"blackhole": true})),
    );
    k.apply(&later).unwrap();
    // kube-rs watchers back off up to 30 s while the API server is gone.
    let resync = SETTLE + Duration::from_secs(40);
    k.wait_owned_for("shop/later", "installed after the restart", resync, |f| {
        ensure!(!f.is_empty(), "not installed");
        Ok(())
    });
    assert_eq!(
        comparable(&k.wait_installed("shop/long")),
        long_before,
        "the long fault as it was"
    );
    for n in 1..=2 {
        let faults = k.faults(n).unwrap();
        let resources: Vec<&str> = faults
            .iter()
            .map(|f| f["resource"].as_str().unwrap_or("(none)"))
            .collect();
        let want = long_before[usize::from(n - 1)].len() + k.owned(n, "shop/later").unwrap().len();
        assert_eq!(faults.len(), want, "node{n}: {resources:?}");
        let names: BTreeSet<&str> = faults.iter().filter_map(|f| f["name"].as_str()).collect();
        assert_eq!(names.len(), faults.len(), "node{n}: a name twice");
    }
    assert_eq!(ping(&k, &client, &db, 3), 0, "the new fault works");
    k.wait_phase(NS, "short", "Ended");
}

#[test]
fn refused_resources_name_their_field_and_install_nothing() {
    let k = up("k8bad");
    // The schema refuses what it can say.
    let too_much = network_fault(
        NS,
        "too-much",
        between("client", "server", json!({"loss": "150%"})),
    );
    let err = format!("{:#}", k.cluster.create(&too_much).unwrap_err());
    assert!(err.contains("spec.loss"), "{err}");
    assert!(k.network_fault(NS, "too-much").unwrap().is_none());

    // What it cannot (jitter above the delay) is admitted, then refused by the daemons.
    let jitter = json!({"delay": "10ms", "jitter": "20ms"});
    k.apply(&network_fault(
        NS,
        "jittery",
        between("client", "server", jitter),
    ))
    .unwrap();
    let st = k.wait_phase(NS, "jittery", "Failed");
    let valid = condition(&st, "Valid").expect("a Valid condition");
    assert_eq!(valid["status"], "False", "{st:#}");
    let msg = valid["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("spec.jitter"), "{msg}");

    // A good one after it is installed on both nodes: both have seen the bad one by then.
    let good = network_fault(
        NS,
        "good",
        between("client", "server", json!({"loss": "5%"})),
    );
    k.apply(&good).unwrap();
    k.wait_installed("shop/good");
    for n in 1..=2 {
        let faults = k.faults(n).unwrap();
        assert!(
            faults.iter().all(|f| f["resource"] == "shop/good"),
            "node{n} holds only the good fault: {faults:#?}"
        );
    }
}

#[test]
fn a_cluster_wide_abort_ends_running_faults_and_later_ones_run() {
    let k = up("k8abort");
    let (client, _, server, _) = pods(&k);
    let both = |k: &Deployed| (ping(k, &client, &server, 3), ping(k, &server, &client, 3));
    let bh = json!({"blackhole": true, "bothWays": true});
    k.apply(&network_fault(
        NS,
        "bh",
        between("client", "server", bh.clone()),
    ))
    .unwrap();
    k.wait_installed("shop/bh");
    assert_eq!(both(&k), (0, 0), "blackholed both ways");

    // Through the plugin, as a user aborts: it writes `abort.at` = now in whole seconds (as
    // creationTimestamp has them), at or after `at`.
    let at = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    k.abort("k8s_lab: abort everything").unwrap();
    k.wait_removed("shop/bh");
    assert_eq!(both(&k), (3, 3), "aborted: traffic back on both nodes");
    k.wait_phase(NS, "bh", "Aborted");

    // A fault created after the abort runs: its creationTimestamp must be past `at`.
    until("the clock two seconds past the abort", SETTLE, || {
        ensure!(Timestamp::now() >= at + SignedDuration::from_secs(2));
        Ok(())
    });
    k.apply(&network_fault(NS, "after", between("client", "server", bh)))
        .unwrap();
    k.wait_installed("shop/after");
    assert_eq!(both(&k), (0, 0), "the later fault blackholes");
    k.wait_phase(NS, "after", "Running");
    let bh = k.network_fault(NS, "bh").unwrap().expect("bh");
    assert_eq!(bh["status"]["phase"], "Aborted", "stays aborted");
    for n in 1..=2 {
        assert!(k.owned(n, "shop/bh").unwrap().is_empty(), "node{n}");
    }
}
