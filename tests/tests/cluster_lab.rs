//! The lab in a real kube-apiserver (tests/src/cluster/): Nodes with their podCIDRs, Running Pods
//! with the lab's addresses, pods added and removed, RBAC refusing a token without rights, all gone after Drop.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

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
    let out = c
        .kubectl(
            cluster::ADMIN,
            &["get", "endpointslices", "-A", "-o", "name"],
            None,
        )
        .unwrap()
        .stdout;
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
    let whoami = c
        .kubectl(cluster::DAEMON, &["auth", "can-i", "list", "pods"], None)
        .unwrap();
    assert_eq!(whoami.stdout.trim(), "no");

    let t = Instant::now();
    drop(c);
    eprintln!("cluster {prefix} down in {:.1?}", t.elapsed());
    assert_nothing_left(&prefix, &pids, &dir);
}

#[test]
fn the_api_server_is_reachable_in_the_nodes_at_the_same_url_and_comes_back_after_a_stop() {
    require_root();
    let prefix = lab::run_prefix("kf");
    let mut c = Cluster::up(&prefix, ClusterOptions::default()).expect("cluster up");
    let dir = c.api.dir.clone();
    let mut pids = c.api.pids();
    let can_i = |c: &Cluster| {
        c.kubectl_in(2, cluster::DAEMON, &["auth", "can-i", "list", "pods"])
            .unwrap()
    };

    // Through node2's forwarder, with the host's kubeconfig: the daemon has no rights yet.
    let out = can_i(&c);
    assert_eq!(out.stdout.trim(), "no", "{}", out.text());
    let st = cluster::status(&prefix).unwrap();
    for name in ["socat.host", "socat.node1", "socat.node2"] {
        assert!(st.contains(&format!("{name}: running")), "{st}");
    }

    // deploy/'s namespace, CRDs and RBAC: the daemon's own bindings give it its rights.
    c.install_injector().expect("install_injector");
    let out = can_i(&c);
    assert!(out.ok && out.stdout.trim() == "yes", "{}", out.text());
    let out = c
        .kubectl_in(
            1,
            cluster::DAEMON,
            &["get", "networkfaults.injector.dev", "-A", "-o", "name"],
        )
        .unwrap();
    assert!(
        out.ok,
        "the daemon lists NetworkFaults from node1: {}",
        out.text()
    );
    let out = c
        .kubectl_in(1, cluster::DAEMON, &["auth", "can-i", "delete", "pods"])
        .unwrap();
    assert_eq!(out.stdout.trim(), "no", "least privilege: {}", out.text());

    // The API server gone: requests through the forwarder fail, on the host too.
    c.api.stop().expect("stop");
    assert!(!c.api.is_running());
    let out = can_i(&c);
    assert!(
        !out.ok && out.stdout.trim() != "yes",
        "with the API server stopped: {}",
        out.text()
    );
    assert!(!c.api.reachable_from(&c.lab.node(2).netns));
    assert!(!c.api.reachable_from(""));
    assert!(
        cluster::status(&prefix)
            .unwrap()
            .contains("kube-apiserver: not running")
    );

    // Back on the same port, with the same certificates, tokens and etcd data.
    c.api.restart().expect("restart");
    let out = can_i(&c);
    assert!(out.ok && out.stdout.trim() == "yes", "{}", out.text());
    pids.extend(c.api.pids());
    pids.sort_unstable();
    pids.dedup();

    // A watch held open through node2's forwarder while everything goes.
    let mut watch = watch_through(&c, 2);
    let socats: Vec<_> = processes_naming(&dir.display().to_string())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("socat"))
        .collect();
    assert!(
        socats.len() >= 5,
        "three forwarders and, for the watch, a child of the host's and of node2's: {socats:?}"
    );

    drop(c);
    let _ = watch.kill();
    let _ = watch.wait();
    assert_nothing_left(&prefix, &pids, &dir);
}

/// `kubectl get pods -A --watch` as the admin inside node `n`, through its forwarder: returns
/// once the watch runs (its first line is printed), holding a connection open.
fn watch_through(c: &Cluster, n: u8) -> Child {
    let mut watch = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.lab.node(n).netns,
            "kubectl",
            "--kubeconfig",
        ])
        .arg(c.kubeconfig(cluster::ADMIN))
        .args(["get", "pods", "-A", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let mut first = String::new();
    BufReader::new(watch.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("NAMESPACE"), "the watch runs: {first}");
    watch
}

#[test]
fn a_kept_cluster_is_shown_by_status_and_removed_by_down() {
    require_root();
    let prefix = lab::run_prefix("kk");
    let c = Cluster::up(&prefix, ClusterOptions::default()).expect("cluster up");
    let (pids, dir, port) = (c.api.pids(), c.api.dir.clone(), c.api.port);
    let mut watch = watch_through(&c, 1);
    c.keep();
    let st = cluster::status(&prefix).unwrap();
    for name in ["etcd", "kube-apiserver", "socat.host", "socat.node1"] {
        assert!(st.contains(&format!("{name}: running")), "{st}");
    }
    assert!(
        st.contains(&format!("TCP-LISTEN:{port},bind=127.0.0.1")),
        "{st}"
    );
    cluster::down(&prefix).expect("down");
    let _ = watch.kill();
    let _ = watch.wait();
    assert_nothing_left(&prefix, &pids, &dir);
    assert!(cluster::status(&prefix).unwrap().contains("down"));
}

/// No process of the run (etcd, kube-apiserver, the forwarders: `pids`, and no process at all
/// whose command line names the run directory, e.g. a forwarder's per-connection child), no run
/// directory (with it the forwarders' socket), no netns of `prefix`.
fn assert_nothing_left(prefix: &str, pids: &[u32], dir: &Path) {
    assert!(
        pids.len() >= 5,
        "etcd, kube-apiserver and the three forwarders: {pids:?}"
    );
    for pid in pids {
        assert!(!running(*pid), "pid {pid} left");
    }
    let naming = processes_naming(&dir.display().to_string());
    assert!(naming.is_empty(), "processes left: {naming:?}");
    assert!(!dir.exists(), "{} left", dir.display());
    assert!(lab::namespaces(prefix).unwrap().is_empty(), "netns left");
}

/// Whether process `pid` exists and is no zombie (the processes of a kept cluster are children
/// of this test, dead but not reaped after `down`).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// (pid, command line) of every process whose command line contains `needle`.
fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (pid != std::process::id() && cmd.contains(needle)).then_some((pid, cmd))
        })
        .collect()
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
