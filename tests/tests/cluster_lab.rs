//! The lab in a real kube-apiserver (tests/src/cluster.rs): Nodes with their podCIDRs, Running Pods
//! with the lab's addresses, pods added and removed, RBAC refusing a token without rights, all gone after Drop.

use std::{path::Path, time::Instant};

use injector_tests::{
    cluster::{self, Cluster, ClusterOptions, Identity, PodMeta},
    lab, require_root,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{Api, api::ListParams};

fn pod_ips(p: &Pod) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn cluster_registers_the_lab_plays_kubelet_and_cleans_up() {
    require_root();
    let prefix = lab::run_prefix("kc");
    let t = Instant::now();
    let opts = ClusterOptions::default()
        .identity(Identity::new("nobody", "nobody", &[]))
        .pod(
            "n2p2",
            PodMeta::new("bank", &[("app", "ledger"), ("tier", "db")]),
        );
    let mut c = Cluster::up(&prefix, opts).expect("cluster up");
    eprintln!("cluster {prefix} up in {:.1?}", t.elapsed());
    let (pids, dir) = (c.api.pids(), c.api.dir.clone());
    let client = c.client();

    // Nodes: podCIDR and the underlay address.
    let nodes: Api<Node> = Api::all(client.clone());
    for n in &c.lab.nodes {
        let node = c.block_on(nodes.get(&n.name)).expect("get node");
        let spec = node.spec.expect("node spec");
        assert_eq!(spec.pod_cidr.as_deref(), Some(n.pod_cidr.as_str()));
        let addrs = node.status.and_then(|s| s.addresses).unwrap_or_default();
        assert!(
            addrs
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address == n.underlay_ip.to_string()),
            "{}: {addrs:?}",
            n.name
        );
    }

    // Pods: Running, on their node, with IPv4 and IPv6, found by label selectors.
    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    for (name, app, node) in [("n1p1", "checkout", "node1"), ("n2p1", "payments", "node2")] {
        let list = c
            .block_on(shop.list(&ListParams::default().labels(&format!("app={app}"))))
            .expect("list pods");
        assert_eq!(list.items.len(), 1, "app={app}");
        let p = &list.items[0];
        let lp = c
            .lab
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .find(|p| p.name == name)
            .unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some(name));
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some(node));
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.pod_ip.as_deref(), Some(lp.ip.to_string().as_str()));
        assert_eq!(pod_ips(p), vec![lp.ip.to_string(), lp.ip6.to_string()]);
    }
    let bank: Api<Pod> = Api::namespaced(client.clone(), "bank");
    let ledger = c
        .block_on(bank.list(&ListParams::default().labels("tier=db")))
        .expect("list bank");
    assert_eq!(ledger.items.len(), 1, "the chosen placement of n2p2");

    // The protected Services exist with their EndpointSlices.
    let out = kubectl(
        &c.kubeconfig(cluster::ADMIN),
        &["get", "endpointslices", "-A", "-o", "name"],
    );
    assert!(
        out.contains("endpointslice.discovery.k8s.io/kubernetes"),
        "{out}"
    );
    assert!(
        out.contains("endpointslice.discovery.k8s.io/kube-dns"),
        "{out}"
    );

    // A pod added while it runs is created Running with its address; a removed one is deleted.
    let added = c
        .add_pod(2, PodMeta::new("shop", &[("app", "payments")]))
        .expect("add pod");
    let p = c.block_on(shop.get(&added.name)).expect("the added pod");
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(
        pod_ips(&p),
        vec![added.ip.to_string(), added.ip6.to_string()]
    );
    let payments = c
        .block_on(shop.list(&ListParams::default().labels("app=payments")))
        .expect("list");
    assert_eq!(payments.items.len(), 2);
    c.remove_pod(2, &added.name).expect("remove pod");
    assert!(
        c.block_on(shop.get_opt(&added.name))
            .expect("get")
            .is_none(),
        "deleted"
    );
    assert!(!lab::namespaces(&prefix).unwrap().contains(&added.netns));

    // RBAC is real: a token without bindings is refused.
    let nobody = c
        .block_on(async { c.api.client("nobody").await })
        .expect("client");
    let pods: Api<Pod> = Api::namespaced(nobody, "shop");
    match c.block_on(pods.list(&ListParams::default())) {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("listing pods without rights: {other:?}"),
    }
    let daemon = c
        .block_on(async { c.api.client(cluster::DAEMON).await })
        .expect("client");
    let nss: Api<Namespace> = Api::all(daemon);
    match c.block_on(nss.list(&ListParams::default())) {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "the daemon has no binding yet: {s:?}"),
        other => panic!("listing namespaces as the daemon: {other:?}"),
    }
    let whoami = kubectl(
        &c.kubeconfig(cluster::DAEMON),
        &["auth", "can-i", "list", "pods"],
    );
    assert_eq!(whoami.trim(), "no");

    let t = Instant::now();
    drop(c);
    eprintln!("cluster {prefix} down in {:.1?}", t.elapsed());
    assert_nothing_left(&prefix, &pids, &dir);
}

/// No etcd or kube-apiserver process, no run directory, no netns of `prefix`.
fn assert_nothing_left(prefix: &str, pids: &[u32], dir: &Path) {
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left"
        );
    }
    assert!(!dir.exists(), "{} left", dir.display());
    assert!(lab::namespaces(prefix).unwrap().is_empty(), "netns left");
}

/// `kubectl --kubeconfig KC args...`: its stdout (exit status not checked: `can-i` exits 1 on "no").
fn kubectl(kc: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .output()
        .expect("kubectl (on the machine image)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_panic_with_the_cluster_up_leaves_nothing() {
    require_root();
    let prefix = lab::run_prefix("kp");
    let seen = std::panic::catch_unwind(|| {
        let c = Cluster::up(&prefix, ClusterOptions::default()).expect("cluster up");
        let seen = (c.api.pids(), c.api.dir.clone());
        std::panic::panic_any(seen);
    })
    .expect_err("the closure panics");
    let (pids, dir) = seen
        .downcast_ref::<(Vec<u32>, std::path::PathBuf)>()
        .expect("payload");
    assert_nothing_left(&prefix, pids, dir);
}
