//! The kubectl plugin (`target/debug/kubectl-injector`) against a real kube-apiserver: fault add
//! creates the NetworkFault the flags say, bad flags are named and create nothing, ls/get show
//! every node's counters, apply is all or nothing, rm deletes, abort writes InjectorControl
//! `cluster`; and kubectl itself finds it on PATH as `kubectl injector`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
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
        let (o, e) = (&self.stdout, &self.stderr);
        write!(f, "exit {}\n--- stdout\n{o}--- stderr\n{e}", self.code)
    }
}

/// Words of a command line: spaces split, single quotes group (`--from 'tier in (a,b)'`).
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (vec![], String::new(), false);
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => out.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.extend((!cur.is_empty()).then_some(cur));
    out
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
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

struct T {
    c: Cluster,
    kc: PathBuf,
}

impl T {
    /// `kubectl-injector --kubeconfig <kc> LINE` (printed with its output, for the log).
    fn with(&self, kc: &Path, line: &str, stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(kubectl_injector_bin());
        cmd.arg("--kubeconfig").arg(kc).args(words(line));
        let o = run(cmd, stdin);
        eprintln!("$ kubectl injector {line}\n{}{}", o.stdout, o.stderr);
        o
    }

    fn ok(&self, line: &str) -> Out {
        let o = self.with(&self.kc, line, None);
        assert_eq!(o.code, 0, "{line}: {o}");
        o
    }

    /// Exits `code` saying `want` on stderr.
    fn fails(&self, line: &str, stdin: Option<&str>, code: i32, want: &str) {
        let o = self.with(&self.kc, line, stdin);
        assert!(
            o.code == code && o.stderr.contains(want),
            "{line}: want exit {code} and {want:?}: {o}"
        );
    }

    fn kubectl(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kc).args(args);
        run(cmd, None)
    }

    fn faults(&self) -> Vec<String> {
        let list = self
            .c
            .block_on(self.api().list(&Default::default()))
            .expect("list");
        let mut v: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|f| f.metadata.name)
            .collect();
        v.sort();
        v
    }

    fn api(&self) -> Api<NetworkFault> {
        Api::namespaced(self.c.client(), "shop")
    }

    /// An InjectorNode report by hand, as a node's daemon would write it.
    fn report(&self, node: &str, matched: u64) {
        let api: Api<InjectorNode> = Api::all(self.c.client());
        let obj = InjectorNode::new(
            node,
            InjectorNodeSpec {
                node_name: node.into(),
            },
        );
        self.c
            .block_on(api.create(&PostParams::default(), &obj))
            .expect("InjectorNode");
        let faults = json!([{"resource": "shop/slow-dns", "parts": 1, "matched": matched,
            "passed": 0, "dropped": 0, "delayed": matched}]);
        let status = json!({"status": {"updated": "2025-01-01T00:00:00Z", "armed": true,
            "faultCount": 1, "faults": faults}});
        let pp = PatchParams::default();
        self.c
            .block_on(api.patch_status(node, &pp, &Patch::Merge(&status)))
            .expect("report");
    }
}

fn row(o: &Out, n: usize) -> Vec<String> {
    let line = o.stdout.lines().nth(n).unwrap_or_default();
    line.split_whitespace().map(String::from).collect()
}

const ADD: &str = "fault add slow-dns -n shop --from 'app=checkout,tier in (web,api),!canary' \
    --to svc/kube-system/kube-dns --to-ports dns --to-mode one --delay 100ms --jitter 10ms \
    --for 10m --seed 7";

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
    let t = T { c, kc };
    let install = "install the CRDs with `kubectl injector crd | kubectl apply -f -`";
    t.fails(
        "ls -n shop",
        None,
        1,
        &format!("has no injector.dev resources: {install}"),
    );
    let crds = format!("{}/../deploy/crd/injector.yaml", env!("CARGO_MANIFEST_DIR"));
    let o = t.kubectl(&["apply", "--server-side", "-f", &crds]);
    assert_eq!(o.code, 0, "CRDs: {o}");
    for crd in ["networkfaults", "injectorcontrols", "injectornodes"] {
        let crd = format!("crd/{crd}.injector.dev");
        let o = t.kubectl(&["wait", "--for=condition=Established", &crd, "--timeout=30s"]);
        assert_eq!(o.code, 0, "{crd} established: {o}");
    }
    add(&t);
    ls_and_get(&t);
    apply_and_rm(&t);
    through_kubectl(&t);
    abort(&t);
    unreachable(&t);
}

/// fault add: the NetworkFault the flags say; bad flags named, nothing created.
fn add(t: &T) {
    let o = t.ok(ADD);
    let said = "networkfault.injector.dev/slow-dns created in namespace shop: delay 100ms±10ms";
    assert!(o.stdout.contains(said), "{o}");
    let got = t.c.block_on(t.api().get("slow-dns")).expect("read back");
    let labels = LabelSelector {
        match_labels: BTreeMap::from([("app".into(), "checkout".into())]),
        match_expressions: serde_json::from_value(json!([
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ]))
        .unwrap(),
    };
    let from = PodSelector {
        labels,
        ..Default::default()
    };
    let svc = ServiceRef {
        name: "kube-dns".into(),
        namespace: Some("kube-system".into()),
    };
    let want = NetworkFaultSpec {
        from: Some(Target {
            pods: Some(from),
            ..Default::default()
        }),
        to: Some(Target {
            service: Some(svc),
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
    let fields = got.metadata.managed_fields.unwrap_or_default();
    let managers: Vec<String> = fields.into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["kubectl-injector"]);

    for (flags, want) in [
        (
            "--to app=payments --loss 150%",
            "--loss: '150%': must be between 0% and 100%",
        ),
        (
            "--jitter 20ms --delay 10ms",
            "--jitter: '20ms' must be between 0s and the delay",
        ),
        (
            "--to 10.42.2.7/24 --blackhole",
            "--to: '10.42.2.7/24' has host bits set; did you mean 10.42.2.0/24?",
        ),
        (
            "--to app=payments --to-mode half --blackhole",
            "--to-mode: 'half': use all, one",
        ),
        (
            "--to 'app in (a' --blackhole",
            "--to: 'app in (a' in 'app in (a': the values go in parentheses",
        ),
    ] {
        t.fails(&format!("fault add bad -n shop {flags}"), None, 1, want);
    }
    t.fails(
        "fault add x --loss",
        None,
        2,
        "a value is required for '--loss <LOSS>'",
    );
    let taken = "NAME: a NetworkFault 'slow-dns' exists in namespace shop; delete it first (kubectl injector rm slow-dns -n shop) or choose another name";
    t.fails("fault add slow-dns -n shop --blackhole", None, 1, taken);
    let no_ns = "-n: namespace 'nosuchns' does not exist";
    t.fails("fault add nowhere -n nosuchns --blackhole", None, 1, no_ns);
    let o = t.ok("fault add printed -n shop --to any --loss 1% --print");
    assert!(
        o.stdout.contains("kind: NetworkFault") && o.stdout.contains("any: true"),
        "{o}"
    );
    assert_eq!(t.faults(), ["slow-dns"], "nothing but the good one created");
}

/// ls and get, with counters from two nodes' reports, before and after a status is written.
fn ls_and_get(t: &T) {
    t.report("node1", 100);
    t.report("node2", 40);
    let o = t.ok("ls -n shop");
    let r = row(&o, 1);
    assert_eq!(r[..3], ["slow-dns", "-", "delay"], "{o}");
    assert_eq!(
        r[r.len() - 2..],
        ["140", "140"],
        "MATCHED, DELAYED (the delay fault's columns): {o}"
    );
    assert!(
        r.iter().any(|c| c.starts_with("9m") || c == "10m00s"),
        "time left: {o}"
    );
    let o = t.ok("ls -A -o wide");
    let (head, n1, n2) = (row(&o, 0), row(&o, 1), row(&o, 2));
    assert_eq!(head[..3], ["NAMESPACE", "NAME", "NODE"], "{o}");
    assert!(head.contains(&"MATCH".to_string()), "{o}");
    assert_eq!(
        (n1[..3].join(" "), n1.last()),
        ("shop slow-dns node1".into(), Some(&"100".into()))
    );
    assert_eq!(
        (n2[2].as_str(), n2.last().map(String::as_str)),
        ("node2", Some("40")),
        "{o}"
    );
    let matcher = "app=checkout,tier in (api,web),!canary -> svc/kube-system/kube-dns:dns (one)";
    assert!(o.stdout.contains(matcher), "{o}");
    let o = t.ok("ls -n shop -o json");
    let v: Value = serde_json::from_str(&o.stdout).expect("ls -o json");
    assert_eq!(
        (&v[0]["counters"]["delayed"], &v[0]["perNode"][1]["node"]),
        (&json!(140), &json!("node2"))
    );
    let o = t.ok("get slow-dns -n shop");
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
    // A status as the daemons write it. (A condition's message is never "": this 1.20 API
    // server refuses an empty string in any custom resource field as "null".)
    let status = json!({"status": {
        "phase": "Running", "selected": {"count": 1, "pods": ["shop/n1p1"]},
        "nodes": {"count": 2, "names": ["node1", "node2"]},
        "conditions": [
            {"type": "Valid", "status": "True", "reason": "Valid", "message": "valid"},
            {"type": "Ready", "status": "True", "reason": "Installed",
             "message": "1 node-level fault(s) on every node"},
        ],
    }});
    let pp = PatchParams::default();
    t.c.block_on(
        t.api()
            .patch_status("slow-dns", &pp, &Patch::Merge(&status)),
    )
    .expect("NetworkFault status");
    let o = t.ok("ls -n shop");
    assert_eq!(
        row(&o, 1)[..6],
        ["slow-dns", "Running", "delay", "100ms±10ms", "1", "2"],
        "{o}"
    );
    let o = t.ok("get slow-dns -n shop");
    for want in [
        "Phase:     Running",
        "Selected:  1: shop/n1p1",
        "Nodes:     2: node1, node2",
        "Ready  True    Installed",
        "1 node-level fault(s) on every node",
    ] {
        assert!(o.stdout.contains(want), "want {want:?}: {o}");
    }
    let o = t.ok("get slow-dns -n shop -o yaml");
    let v: Value = serde_saphyr::from_str(&o.stdout).expect("get -o yaml");
    assert_eq!(v["resource"]["spec"]["delay"], "100ms", "{o}");
    assert!(
        v["resource"]["metadata"].get("managedFields").is_none(),
        "{o}"
    );
    let missing = "no NetworkFault 'nope' in namespace shop";
    t.fails("get nope -n shop", None, 1, missing);
}

/// apply: a bad second document applies none; good ones are created, unchanged, configured.
/// rm: all or nothing by name.
fn apply_and_rm(t: &T) {
    let bad = TWO_DOCS.replace("LOSS", "150%");
    let why = "document 2 (shop/ap-two): spec.loss: '150%': must be between 0% and 100%";
    t.fails("apply -n shop -f -", Some(&bad), 1, why);
    assert_eq!(t.faults(), ["slow-dns"]);
    let file = t.c.api.dir.join("faults.yaml");
    std::fs::write(&file, TWO_DOCS.replace("LOSS", "5%")).unwrap();
    let line = format!("apply -n shop -f {}", file.display());
    let o = t.ok(&line);
    assert!(
        o.stdout.contains("ap-one created") && o.stdout.contains("ap-two created"),
        "{o}"
    );
    assert_eq!(t.faults(), ["ap-one", "ap-two", "slow-dns"]);
    assert!(t.ok(&line).stdout.contains("ap-one unchanged"));
    let o = t.with(
        &t.kc,
        "apply -n shop -f -",
        Some(&TWO_DOCS.replace("LOSS", "7%")),
    );
    assert!(o.code == 0 && o.stdout.contains("ap-two configured"), "{o}");
    let two = t.c.block_on(t.api().get("ap-two")).unwrap();
    assert_eq!(two.spec.loss.as_deref(), Some("7%"));

    t.fails(
        "rm ap-one missing -n shop",
        None,
        1,
        "no NetworkFault 'missing'",
    );
    assert_eq!(t.faults(), ["ap-one", "ap-two", "slow-dns"]);
    let o = t.ok("rm ap-one -n shop");
    assert!(
        o.stdout
            .contains("networkfault.injector.dev/ap-one deleted"),
        "{o}"
    );
    assert_eq!(t.faults(), ["ap-two", "slow-dns"]);
}

/// kubectl finds the plugin on PATH; KUBECONFIG and the context's namespace are honoured.
fn through_kubectl(t: &T) {
    let bin_dir = kubectl_injector_bin().parent().unwrap().to_path_buf();
    let kc_shop = t.c.api.dir.join("kubeconfig-shop");
    let text = std::fs::read_to_string(&t.kc).unwrap();
    let in_shop = "    user: admin\n    namespace: shop\n";
    std::fs::write(&kc_shop, text.replace("    user: admin\n", in_shop)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |line: &str| {
        let mut cmd = Command::new("kubectl");
        cmd.env("PATH", &path)
            .env("KUBECONFIG", &kc_shop)
            .arg("injector")
            .args(words(line));
        let o = run(cmd, None);
        eprintln!(
            "$ kubectl injector {line} (through kubectl)\n{}{}",
            o.stdout, o.stderr
        );
        o
    };
    let o = kubectl("ls");
    assert!(
        o.code == 0 && o.stdout.contains("ap-two") && o.stdout.contains("slow-dns"),
        "{o}"
    );
    let o = kubectl("fault add via-kubectl --to app=payments --loss 1% --for 1m");
    assert_eq!(o.code, 0, "{o}");
    assert!(t.faults().contains(&"via-kubectl".to_string()));
    let o = kubectl("fault add bad --loss 150%");
    assert!(o.code == 1 && o.stderr.contains("--loss: '150%'"), "{o}");
    let o = Command::new("kubectl")
        .env("PATH", &path)
        .args(["plugin", "list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("kubectl-injector"),
        "plugin list"
    );
    t.ok("rm --all -n shop");
    assert!(t.faults().is_empty());
}

/// abort: InjectorControl `cluster` created, then updated.
fn abort(t: &T) {
    let ctl: Api<InjectorControl> = Api::all(t.c.client());
    let before = SystemTime::now() - Duration::from_secs(1);
    let o = t.ok("abort --reason kubectl_lab");
    assert!(
        o.stdout
            .contains("injectorcontrol.injector.dev/cluster: abort at"),
        "{o}"
    );
    assert!(
        o.stdout.contains("is ended on every node by its daemon"),
        "{o}"
    );
    let first =
        t.c.block_on(ctl.get("cluster"))
            .expect("InjectorControl cluster");
    let abort = first.spec.abort.expect("spec.abort");
    let at: SystemTime = abort
        .at
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .into();
    assert!(at >= before && at <= SystemTime::now(), "{}", abort.at);
    assert_eq!(abort.reason, "kubectl_lab");
    std::thread::sleep(Duration::from_millis(1100));
    t.ok("abort");
    let second =
        t.c.block_on(ctl.get("cluster"))
            .unwrap()
            .spec
            .abort
            .unwrap();
    assert!(
        second.at > abort.at && second.reason.is_empty(),
        "{second:?}"
    );
}

/// Where it cannot go: a wrong context, a server that is not there.
fn unreachable(t: &T) {
    let known = "--context: no context 'nope' in the kubeconfig; it has: admin";
    t.fails("ls --context nope", None, 1, known);
    let dead = t.c.api.dir.join("kubeconfig-dead");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let text = std::fs::read_to_string(&t.kc).unwrap();
    std::fs::write(
        &dead,
        text.replace(&t.c.api.url, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let start = Instant::now();
    let o = t.with(&dead, "ls", None);
    let want = format!("cannot reach the API server https://127.0.0.1:{port} (context admin)");
    assert!(o.code == 1 && o.stderr.contains(&want), "{o}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
