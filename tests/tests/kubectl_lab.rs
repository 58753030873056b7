//! The kubectl plugin (`target/debug/kubectl-injector`) against a real kube-apiserver: fault add
//! creates the NetworkFault the flags say, bad flags are named and create nothing, ls/get show
//! every node's counters, apply is all or nothing, rm deletes, abort writes InjectorControl
//! `cluster`; and kubectl itself finds it on PATH as `kubectl injector`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use injector::k8s::{
    InjectorControl, InjectorNode, NetworkFault,
    control::InjectorNodeSpec,
    resource::{LabelSelector, Mode, NetworkFaultSpec, PodSelector, ServiceRef, Target},
};
use injector_tests::{
    cluster::{Cluster, ClusterOptions},
    kubectl_injector_bin, lab, require_root,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(pipe);
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `kubectl-injector --kubeconfig KC args...`.
fn plugin(kc: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(kubectl_injector_bin());
    cmd.arg("--kubeconfig").arg(kc).args(args);
    let o = run(cmd, stdin);
    eprintln!(
        "$ kubectl injector {}\n{}{}",
        args.join(" "),
        o.stdout,
        o.stderr
    );
    o
}

fn kubectl(kc: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kc).args(args);
    run(cmd, None)
}

fn faults(c: &Cluster, ns: &str) -> Vec<String> {
    let api: Api<NetworkFault> = Api::namespaced(c.client(), ns);
    let mut v: Vec<String> = c
        .block_on(api.list(&Default::default()))
        .expect("list")
        .items
        .into_iter()
        .filter_map(|f| f.metadata.name)
        .collect();
    v.sort();
    v
}

/// An InjectorNode report by hand, as a node's daemon would write it.
fn report(c: &Cluster, node: &str, faults: Value) {
    let api: Api<InjectorNode> = Api::all(c.client());
    let obj = InjectorNode::new(
        node,
        InjectorNodeSpec {
            node_name: node.into(),
        },
    );
    c.block_on(api.create(&PostParams::default(), &obj))
        .expect("create InjectorNode");
    let status = json!({"status": {"updated": "2025-01-01T00:00:00Z", "armed": true, "faultCount": 1, "faults": faults}});
    c.block_on(api.patch_status(node, &PatchParams::default(), &Patch::Merge(&status)))
        .expect("InjectorNode status");
}

const TWO_DOCS: &str = "apiVersion: injector.dev/v1alpha1
kind: NetworkFault
metadata: {name: ap-one}
spec:
  to: {pods: {matchLabels: {app: payments}}}
  loss: 10%
---
apiVersion: injector.dev/v1alpha1
kind: NetworkFault
metadata: {name: ap-two}
spec:
  from: {cidrs: [10.42.1.0/24]}
  loss: LOSS
";

#[test]
fn the_kubectl_plugin_against_a_real_api_server() {
    require_root();
    let c = Cluster::up(&lab::run_prefix("kp"), ClusterOptions::default()).expect("cluster up");
    let kc = c.kubeconfig("admin");
    // Before the CRDs: the message says how to install them.
    let o = plugin(&kc, &["ls", "-n", "shop"], None);
    assert!(
        o.code == 1 && o.stderr.contains("has no injector.dev resources: install the CRDs with `kubectl injector crd | kubectl apply -f -`"),
        "{o}"
    );
    let crds = format!("{}/../deploy/crd/injector.yaml", env!("CARGO_MANIFEST_DIR"));
    let o = kubectl(&kc, &["apply", "--server-side", "-f", &crds]);
    assert_eq!(o.code, 0, "CRDs: {o}");
    for crd in ["networkfaults", "injectorcontrols", "injectornodes"] {
        let o = kubectl(
            &kc,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}.injector.dev"),
                "--timeout=30s",
            ],
        );
        assert_eq!(o.code, 0, "{crd} established: {o}");
    }

    // fault add: the NetworkFault the flags say.
    let o = plugin(
        &kc,
        &[
            "fault",
            "add",
            "slow-dns",
            "-n",
            "shop",
            "--from",
            "app=checkout,tier in (web,api),!canary",
            "--to",
            "svc/kube-system/kube-dns",
            "--to-ports",
            "dns",
            "--to-mode",
            "one",
            "--delay",
            "100ms",
            "--jitter",
            "10ms",
            "--for",
            "10m",
            "--seed",
            "7",
        ],
        None,
    );
    assert_eq!(o.code, 0, "fault add: {o}");
    assert!(
        o.stdout.contains(
            "networkfault.injector.dev/slow-dns created in namespace shop: delay 100ms±10ms"
        ),
        "{o}"
    );
    let api: Api<NetworkFault> = Api::namespaced(c.client(), "shop");
    let got = c.block_on(api.get("slow-dns")).expect("read back");
    let mut labels = LabelSelector::default();
    labels.match_labels = BTreeMap::from([("app".into(), "checkout".into())]);
    labels.match_expressions = serde_json::from_value(json!([
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "canary", "operator": "DoesNotExist"},
    ]))
    .unwrap();
    let want = NetworkFaultSpec {
        from: Some(Target {
            pods: Some(PodSelector {
                labels,
                ..Default::default()
            }),
            ..Default::default()
        }),
        to: Some(Target {
            service: Some(ServiceRef {
                name: "kube-dns".into(),
                namespace: Some("kube-system".into()),
            }),
            ports: vec!["dns".into()],
            mode: Mode::One,
            ..Default::default()
        }),
        delay: Some("100ms".into()),
        jitter: Some("10ms".into()),
        seed: 7,
        duration: "10m".into(),
        ..Default::default()
    };
    assert_eq!(got.spec, want);
    let managers: Vec<String> = got
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["kubectl-injector"]);

    // Bad flags: exit 1, the flag named, nothing created. A taken name: refused with the fix.
    for (args, want) in [
        (
            vec!["--to", "app=payments", "--loss", "150%"],
            "--loss: '150%': must be between 0% and 100%",
        ),
        (
            vec!["--jitter", "20ms", "--delay", "10ms"],
            "--jitter: '20ms' must be between 0s and the delay",
        ),
        (
            vec!["--to", "10.42.2.7/24", "--blackhole"],
            "--to: '10.42.2.7/24' has host bits set; did you mean 10.42.2.0/24?",
        ),
        (
            vec!["--to", "app=payments", "--to-mode", "half", "--blackhole"],
            "--to-mode: 'half': use all, one",
        ),
    ] {
        let mut a = vec!["fault", "add", "bad", "-n", "shop"];
        a.extend(args);
        let o = plugin(&kc, &a, None);
        assert_eq!(o.code, 1, "{o}");
        assert!(o.stderr.contains(want), "want {want:?}: {o}");
    }
    let o = plugin(&kc, &["fault", "add", "x", "--loss"], None);
    assert_eq!(o.code, 2, "usage: {o}");
    assert_eq!(faults(&c, "shop"), ["slow-dns"]);
    let o = plugin(
        &kc,
        &["fault", "add", "slow-dns", "-n", "shop", "--blackhole"],
        None,
    );
    assert_eq!(o.code, 1, "{o}");
    assert!(o.stderr.contains("NAME: a NetworkFault 'slow-dns' exists in namespace shop; delete it first (kubectl injector rm slow-dns -n shop)"), "{o}");
    let o = plugin(
        &kc,
        &["fault", "add", "nowhere", "-n", "nosuchns", "--blackhole"],
        None,
    );
    assert!(
        o.code == 1 && o.stderr.contains("-n: namespace 'nosuchns' does not exist"),
        "{o}"
    );
    // --print sends nothing.
    let o = plugin(
        &kc,
        &[
            "fault", "add", "printed", "-n", "shop", "--to", "any", "--loss", "1%", "--print",
        ],
        None,
    );
    assert!(
        o.code == 0 && o.stdout.contains("kind: NetworkFault") && o.stdout.contains("any: true"),
        "{o}"
    );
    assert_eq!(faults(&c, "shop"), ["slow-dns"]);

    // ls and get, with counters from two nodes' reports.
    report(
        &c,
        "node1",
        json!([{"resource": "shop/slow-dns", "parts": 1, "matched": 100, "passed": 0, "dropped": 0, "delayed": 100}]),
    );
    report(
        &c,
        "node2",
        json!([{"resource": "shop/slow-dns", "parts": 1, "matched": 40, "passed": 0, "dropped": 0, "delayed": 40}]),
    );
    let o = plugin(&kc, &["ls", "-n", "shop"], None);
    assert_eq!(o.code, 0, "{o}");
    let row: Vec<&str> = o
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["slow-dns", "-", "delay"], "{o}");
    assert_eq!(row[row.len() - 3..], ["140", "0", "140"], "{o}");
    assert!(
        row.iter().any(|c| c.starts_with("9m") || c == &"10m00s"),
        "time left: {o}"
    );
    let o = plugin(&kc, &["ls", "-A", "-o", "wide"], None);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE")
            && lines[0].contains("NODE")
            && lines[0].contains("MATCH "),
        "{o}"
    );
    assert!(
        lines[1].starts_with("shop")
            && lines[1].contains("node1")
            && lines[1].trim_end().ends_with("100"),
        "{o}"
    );
    assert!(
        lines[2].contains("node2") && lines[2].trim_end().ends_with("40"),
        "{o}"
    );
    assert!(
        lines[1].contains(
            "app=checkout,tier in (api,web),!canary -> svc/kube-system/kube-dns:dns (one)"
        ),
        "{o}"
    );
    let o = plugin(&kc, &["ls", "-n", "shop", "-o", "json"], None);
    let v: Value = serde_json::from_str(&o.stdout).expect("ls -o json");
    assert_eq!(v[0]["counters"]["delayed"], 140, "{o}");
    assert_eq!(v[0]["perNode"][1]["node"], "node2", "{o}");
    let o = plugin(&kc, &["get", "slow-dns", "-n", "shop"], None);
    assert_eq!(o.code, 0, "{o}");
    for want in [
        "Name:      slow-dns",
        "Action:    delay 100ms±10ms",
        "Lifetime:  10m, ends",
        "node1",
        "total",
        "Status:    none yet",
    ] {
        assert!(o.stdout.contains(want), "want {want:?}: {o}");
    }
    // A status as the daemons write it: phase, selection, nodes, conditions.
    let status = json!({"status": {
        "phase": "Running", "selected": {"count": 1, "pods": ["shop/n1p1"]},
        "nodes": {"count": 2, "names": ["node1", "node2"]},
        "conditions": [
            {"type": "Valid", "status": "True", "reason": "Valid", "message": "valid"},
            {"type": "Ready", "status": "True", "reason": "Installed", "message": "1 node-level fault(s) on every node"},
        ],
    }});
    c.block_on(api.patch_status("slow-dns", &PatchParams::default(), &Patch::Merge(&status)))
        .expect("NetworkFault status");
    let o = plugin(&kc, &["ls", "-n", "shop"], None);
    let row: Vec<&str> = o
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        ["slow-dns", "Running", "delay", "100ms±10ms", "1"],
        "{o}"
    );
    assert_eq!(row[5], "2", "nodes: {o}");
    let o = plugin(&kc, &["get", "slow-dns", "-n", "shop"], None);
    for want in [
        "Phase:     Running",
        "Selected:  1: shop/n1p1",
        "Nodes:     2: node1, node2",
        "Ready  True    Installed",
        "1 node-level fault(s) on every node",
    ] {
        assert!(o.stdout.contains(want), "want {want:?}: {o}");
    }
    let o = plugin(&kc, &["get", "slow-dns", "-n", "shop", "-o", "yaml"], None);
    let v: Value = serde_saphyr::from_str(&o.stdout).expect("get -o yaml");
    assert_eq!(v["resource"]["spec"]["delay"], "100ms", "{o}");
    assert!(
        v["resource"]["metadata"].get("managedFields").is_none(),
        "{o}"
    );
    let o = plugin(&kc, &["get", "nope", "-n", "shop"], None);
    assert!(
        o.code == 1
            && o.stderr
                .contains("no NetworkFault 'nope' in namespace shop"),
        "{o}"
    );

    // apply: the second document is bad, so neither is applied; then both are good.
    let o = plugin(
        &kc,
        &["apply", "-n", "shop", "-f", "-"],
        Some(&TWO_DOCS.replace("LOSS", "150%")),
    );
    assert_eq!(o.code, 1, "{o}");
    assert!(
        o.stderr
            .contains("document 2 (shop/ap-two): spec.loss: '150%': must be between 0% and 100%"),
        "{o}"
    );
    assert_eq!(faults(&c, "shop"), ["slow-dns"]);
    let file = c.api.dir.join("faults.yaml");
    std::fs::write(&file, TWO_DOCS.replace("LOSS", "5%")).unwrap();
    let o = plugin(
        &kc,
        &["apply", "-n", "shop", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(o.code, 0, "{o}");
    assert!(
        o.stdout.contains("ap-one created") && o.stdout.contains("ap-two created"),
        "{o}"
    );
    assert_eq!(faults(&c, "shop"), ["ap-one", "ap-two", "slow-dns"]);
    let o = plugin(
        &kc,
        &["apply", "-n", "shop", "-f", file.to_str().unwrap()],
        None,
    );
    assert!(o.stdout.contains("ap-one unchanged"), "{o}");
    let o = plugin(
        &kc,
        &["apply", "-n", "shop", "-f", "-"],
        Some(&TWO_DOCS.replace("LOSS", "7%")),
    );
    assert!(o.stdout.contains("ap-two configured"), "{o}");
    let two = c.block_on(api.get("ap-two")).unwrap();
    assert_eq!(two.spec.loss.as_deref(), Some("7%"));

    // rm: all or nothing by name, then --all.
    let o = plugin(&kc, &["rm", "ap-one", "missing", "-n", "shop"], None);
    assert!(
        o.code == 1 && o.stderr.contains("no NetworkFault 'missing'"),
        "{o}"
    );
    assert_eq!(faults(&c, "shop"), ["ap-one", "ap-two", "slow-dns"]);
    let o = plugin(&kc, &["rm", "ap-one", "-n", "shop"], None);
    assert!(
        o.code == 0
            && o.stdout
                .contains("networkfault.injector.dev/ap-one deleted"),
        "{o}"
    );
    assert_eq!(faults(&c, "shop"), ["ap-two", "slow-dns"]);

    // kubectl finds the plugin on PATH; KUBECONFIG and the context's namespace are honoured.
    let bin_dir = kubectl_injector_bin().parent().unwrap().to_path_buf();
    let kc_bank = c.api.dir.join("kubeconfig-bank");
    let text = std::fs::read_to_string(&kc).unwrap();
    std::fs::write(
        &kc_bank,
        text.replace(
            "    user: admin\n",
            "    user: admin\n    namespace: shop\n",
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let via_kubectl = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.env("PATH", &path)
            .env("KUBECONFIG", &kc_bank)
            .arg("injector")
            .args(args);
        run(cmd, None)
    };
    let o = via_kubectl(&["ls"]);
    assert_eq!(o.code, 0, "kubectl injector ls: {o}");
    assert!(
        o.stdout.contains("ap-two") && o.stdout.contains("slow-dns"),
        "{o}"
    );
    let o = via_kubectl(&[
        "fault",
        "add",
        "via-kubectl",
        "--to",
        "app=payments",
        "--loss",
        "1%",
        "--for",
        "1m",
    ]);
    assert_eq!(o.code, 0, "{o}");
    assert!(faults(&c, "shop").contains(&"via-kubectl".to_string()));
    let o = via_kubectl(&["fault", "add", "bad", "--loss", "150%"]);
    assert!(o.code == 1 && o.stderr.contains("--loss: '150%'"), "{o}");
    let o = Command::new("kubectl")
        .env("PATH", &path)
        .args(["plugin", "list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("kubectl-injector"),
        "kubectl plugin list"
    );

    let o = plugin(&kc, &["rm", "--all", "-n", "shop"], None);
    assert_eq!(o.code, 0, "{o}");
    assert!(faults(&c, "shop").is_empty());

    // abort: InjectorControl `cluster` created, then updated.
    let ctl: Api<InjectorControl> = Api::all(c.client());
    let before = SystemTime::now() - Duration::from_secs(1);
    let o = plugin(&kc, &["abort", "--reason", "kubectl_lab"], None);
    assert_eq!(o.code, 0, "{o}");
    assert!(
        o.stdout
            .contains("injectorcontrol.injector.dev/cluster: abort at"),
        "{o}"
    );
    let first = c
        .block_on(ctl.get("cluster"))
        .expect("InjectorControl cluster");
    let abort = first.spec.abort.clone().expect("spec.abort");
    let at: SystemTime = abort
        .at
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .into();
    assert!(at >= before && at <= SystemTime::now(), "{}", abort.at);
    assert_eq!(abort.reason, "kubectl_lab");
    std::thread::sleep(Duration::from_millis(1100));
    let o = plugin(&kc, &["abort"], None);
    assert_eq!(o.code, 0, "{o}");
    let second = c.block_on(ctl.get("cluster")).unwrap().spec.abort.unwrap();
    assert!(
        second.at > abort.at && second.reason.is_empty(),
        "{second:?}"
    );

    // Where it cannot go: a wrong context, a server that is not there.
    let o = plugin(&kc, &["ls", "--context", "nope"], None);
    assert!(
        o.code == 1
            && o.stderr
                .contains("--context: no context 'nope' in the kubeconfig; it has: admin"),
        "{o}"
    );
    let dead = c.api.dir.join("kubeconfig-dead");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &dead,
        text.replace(&c.api.url, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let t = Instant::now();
    let o = plugin(&dead, &["ls"], None);
    assert!(
        o.code == 1
            && o.stderr.contains(&format!(
                "cannot reach the API server https://127.0.0.1:{port} (context admin)"
            )),
        "{o}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}
