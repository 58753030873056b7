//! `injector experiment run` with Kubernetes targets (`targets: kubernetes`) on a real API server
//! (tests/src/k8s.rs: deploy/'s CRDs and RBAC, a daemon per lab node reconciling NetworkFaults),
//! run as a user who has only deploy/experimenter-rbac.yaml's rights in namespace `shop`, with a
//! real HTTP service in pod web (node2) under a client's load (pod load, node1) and an HTTP probe
//! from inside pod `shop/client` (node1): a hypothesis that holds under 1% loss on the pods
//! labelled app=web, a ramp to a blackhole aborted with every NetworkFault gone and traffic back
//! on both nodes (times measured), the runner SIGKILLed mid-step (the kernel deadline ends its
//! faults; the resources stay listable by the run's label), Ctrl-C deleting every NetworkFault of
//! the run, a ramp of the blast radius (one pod, then all, the same on both nodes), and bad files refused with nothing created (the API listed), including one the API
//! server's dry run refuses.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::ensure;
use injector_tests::{
    cluster::{ADMIN, ClusterOptions, Identity, PodMeta},
    injector_bin,
    k8s::{Deployed, all_addrs, pod_ips},
    lab::{self, Pod},
    poll::until,
    require_root,
    web::{HttpLoad, HttpServer, answers},
};
use serde_json::{Value, json};

const NS: &str = "shop";
const PORT: u16 = 8080;
/// The identity that runs the experiments: user alice in group injector:experimenters.
const RUNNER: &str = "experimenter";
const RUN_LABEL: &str = "injector.dev/experiment-run";

struct Setup {
    k: Deployed,
    _server: HttpServer,
    /// Artifacts (files, reports), kept: target/experiment-k8s-lab/<test>.
    dir: PathBuf,
}

/// client (n1p1) and load (n1p2) on node1, web (n2p1) and db (n2p2) on node2, all in `shop`;
/// daemons writing their InjectorNode reports every second (the experiment's counters come
/// from them); the runner's RoleBinding in `shop` to deploy/'s `injector-experimenter`.
fn setup(tag: &str) -> Setup {
    require_root();
    let opts = ClusterOptions::default()
        .pod("n1p1", PodMeta::new(NS, &[("app", "client")]))
        .pod("n1p2", PodMeta::new(NS, &[("app", "load")]))
        .pod("n2p1", PodMeta::new(NS, &[("app", "web")]))
        .pod("n2p2", PodMeta::new(NS, &[("app", "db")]))
        .identity(Identity::new(RUNNER, "alice", &["injector:experimenters"]));
    let k = Deployed::up_daemons(
        &lab::run_prefix(tag),
        opts,
        &injector_bin(),
        &["--report-interval", "1s"],
    )
    .expect("a cluster with the injector");
    k.apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "experimenters", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "injector-experimenter"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                      "name": "injector:experimenters"}],
    }))
    .unwrap();
    k.until(
        "RBAC lets the runner create NetworkFaults in shop",
        Duration::from_secs(20),
        || {
            let out = k.cluster.kubectl(
                RUNNER,
                &[
                    "auth",
                    "can-i",
                    "create",
                    "networkfaults.injector.dev",
                    "-n",
                    NS,
                ],
                None,
            )?;
            ensure!(out.stdout.trim() == "yes", "{}", out.text());
            Ok(())
        },
    );
    k.until(
        "both nodes' InjectorNode reports",
        Duration::from_secs(20),
        || {
            for n in ["node1", "node2"] {
                ensure!(k.node_report(n)?.is_some(), "no report of {n}");
            }
            Ok(())
        },
    );
    let server = HttpServer::start(&k.cluster.lab.pod(2, 1).netns, PORT).unwrap();
    let dir = injector_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("experiment-k8s-lab")
        .join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    Setup {
        k,
        _server: server,
        dir,
    }
}

impl Setup {
    fn pod(&self, n: u8, i: u8) -> &Pod {
        self.k.cluster.lab.pod(n, i)
    }

    fn web(&self) -> SocketAddr {
        SocketAddr::new(self.pod(2, 1).ip.into(), PORT)
    }

    /// The file's head: Kubernetes targets, and the probe from inside pod shop/n1p1 (client).
    fn head(&self, name: &str, hypothesis: &str) -> String {
        format!(
            r#"name: {name}
targets: kubernetes
hypothesis: {hypothesis}
probe_interval: 500ms
steady_state:
  - name: front
    pod: {NS}/n1p1
    http: {{url: "http://{web}/", status: 200, requests: 2, timeout: 1500ms, max_latency: 1400ms}}
"#,
            web = self.web()
        )
    }

    fn command(&self, name: &str, yaml: &str, extra: &[&str]) -> (Command, PathBuf) {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let report = self.dir.join(name);
        let mut c = Command::new(injector_bin());
        c.args(["experiment", "run", "-f"])
            .arg(&file)
            .arg("--kubeconfig")
            .arg(self.k.cluster.kubeconfig(RUNNER))
            .args(["-n", NS, "--report"])
            .arg(&report)
            .args(extra);
        (c, report)
    }

    fn run(&self, name: &str, yaml: &str, extra: &[&str]) -> (Output, PathBuf) {
        let (mut c, report) = self.command(name, yaml, extra);
        let out = c.output().unwrap();
        eprintln!(
            "--- injector experiment run {name}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, report)
    }

    /// The NetworkFaults of every namespace (as the admin), those of run `run` if given.
    fn network_faults(&self, run: Option<&str>) -> Vec<Value> {
        let sel = run.map(|r| format!("{RUN_LABEL}={r}"));
        let mut args = vec!["get", "networkfaults", "-A", "-o", "json"];
        if let Some(s) = &sel {
            args.extend(["-l", s.as_str()]);
        }
        let out = self.k.cluster.kubectl(ADMIN, &args, None).unwrap();
        assert!(out.ok, "{}", out.text());
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Per node, the node-level faults that come from run `run`'s NetworkFaults.
    fn held(&self, run: &str) -> Vec<Vec<Value>> {
        (1..=2)
            .map(|n| {
                self.k
                    .faults(n)
                    .unwrap()
                    .into_iter()
                    .filter(|f| {
                        f["resource"]
                            .as_str()
                            .is_some_and(|r| r.ends_with(&format!("-{run}")))
                    })
                    .collect()
            })
            .collect()
    }
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path.with_extension("json")).unwrap()).unwrap()
}

fn run_id(r: &Value) -> String {
    r["run"].as_str().expect("the report's run id").to_string()
}

/// The pods labelled app=web, port 8080, TCP: the fault every experiment here starts from.
const TO_WEB: &str = r#"to: {pods: {matchLabels: {app: web}}, ports: ["8080"]}, proto: tcp"#;

#[test]
fn a_hypothesis_that_holds_under_one_percent_loss_on_pods_chosen_by_label() {
    let s = setup("xkh");
    let load = HttpLoad::start(&s.pod(1, 2).netns, s.web(), 4);
    let yaml = format!(
        "{}steps:\n  - name: loss 1%\n    duration: 8s\n    faults: [{{name: web, {TO_WEB}, loss: 1%}}]\nabort_when: [{{probe: front, failures_in_a_row: 3}}]\nrecovery: 10s\ndeadline_margin: 2s\n",
        s.head(
            "held",
            "the web pods answer their clients while 1% of the packets to them are lost"
        )
    );
    let (out, path) = s.run("held", &yaml, &[]);
    let (ok, failed) = load.counts();
    drop(load);
    eprintln!("load during the run: {ok} answered, {failed} failed");
    assert!(out.status.success(), "exit {}", out.status);
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "held", "{}", r["verdict"]);
    assert_eq!(r["targets"], "kubernetes");
    let run = run_id(&r);
    let sent = &r["steps"][0]["faults"][0];
    assert_eq!(sent["name"], "web");
    assert_eq!(sent["namespace"], NS);
    assert_eq!(sent["spec"]["to"]["pods"]["matchLabels"]["app"], "web");
    // The probe ran from inside pod shop/n1p1: its netns, found from the Pod object.
    assert_eq!(
        r["probes"][0]["netns"],
        format!("/run/netns/{}", s.pod(1, 1).netns)
    );
    let samples = r["faults"][0]["samples"].as_array().unwrap();
    let max = |k: &str| {
        samples
            .iter()
            .filter_map(|c| c[k].as_u64())
            .max()
            .unwrap_or(0)
    };
    let (matched, dropped) = (max("matched"), max("dropped"));
    eprintln!(
        "MEASURED: fault web (from the InjectorNode reports): {matched} matched, {dropped} dropped ({:.2}%)",
        100.0 * dropped as f64 / matched.max(1) as f64
    );
    assert!(matched > 100, "counters from the node reports: {samples:?}");
    assert!(ok > 100, "the load ran: {ok} answered");
    // Removed at the end: no resource of the run, nothing on either node.
    assert!(s.network_faults(Some(&run)).is_empty());
    assert_eq!(s.held(&run), [vec![], vec![]] as [Vec<Value>; 2]);
    let nodes = r["recovery"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(
        nodes.iter().all(|n| n["removed_s"].is_number()),
        "{nodes:?}"
    );
    // `experiment report` renders the same page from the JSON (NetworkFaults read back).
    let again = s.dir.join("held-again.html");
    let out = Command::new(injector_bin())
        .args(["experiment", "report"])
        .arg(path.with_extension("json"))
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(path.with_extension("html")).unwrap()
    );
}

#[test]
fn a_ramp_to_a_blackhole_is_aborted_with_every_network_fault_gone_on_both_nodes() {
    let s = setup("xkr");
    let load = HttpLoad::start(&s.pod(1, 2).netns, s.web(), 4);
    let yaml = format!(
        "{}ramp:\n  duration: 6s\n  fault: {{name: web, {TO_WEB}}}\n  loss: [1%, blackhole]\nabort_when: [{{probe: front, failures_in_a_row: 2}}]\nrecovery: 10s\ndeadline_margin: 2s\n",
        s.head(
            "ramp",
            "the web pods answer while more and more of the packets to them are lost"
        )
    );
    let (out, path) = s.run("ramp", &yaml, &[]);
    drop(load);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "rejected", "{}", r["verdict"]);
    assert_eq!(r["verdict"]["step"], 2, "{}", r["verdict"]);
    let run = run_id(&r);
    let a = &r["abort"];
    let nodes: Vec<(String, Option<f64>)> = a["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap().into(), n["removed_ms"].as_f64()))
        .collect();
    eprintln!(
        "MEASURED: breach at {:.2} s; the run's NetworkFaults deleted (API answered) {:.1} ms after it; per node, no fault left (InjectorNode report seen) after {nodes:?} ms; traffic restored (probe from shop/n1p1) {:?} ms after it",
        a["breach_s"].as_f64().unwrap(),
        a["removal_ms"].as_f64().unwrap(),
        a["restore_ms"].as_f64()
    );
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().all(|(_, t)| t.is_some()), "{nodes:?}");
    assert!(a["restore_ms"].as_f64().is_some(), "the probe passed again");
    // Step 2 edited the step-1 resource in place: one NetworkFault, web-<run>.
    assert_eq!(r["steps"][1]["faults"][0]["spec"]["blackhole"], true);
    assert!(s.network_faults(Some(&run)).is_empty());
    assert_eq!(s.held(&run), [vec![], vec![]] as [Vec<Value>; 2]);
    assert!(answers(&s.pod(1, 1).netns, s.web()), "node1 -> web again");
    assert!(answers(&s.pod(2, 2).netns, s.web()), "node2 -> web again");
    let html = std::fs::read_to_string(path.with_extension("html")).unwrap();
    assert!(html.contains("Hypothesis rejected at step 2") && html.contains("id=\"abort-nodes\""));
    assert!(html.contains(&format!("injector.dev/experiment-run={run}")));
}

#[test]
fn ctrl_c_deletes_every_network_fault_of_the_run() {
    let s = setup("xki");
    let yaml = format!(
        "{}steps:\n  - duration: 30s\n    faults: [{{name: web, {TO_WEB}, blackhole: true}}, {{name: db, to: {{pods: {{matchLabels: {{app: db}}}}}}, proto: icmp, loss: 50%}}]\nabort_when: [{{probe: front, failures_in_a_row: 1000}}]\n",
        s.head("interrupt", "x")
    );
    let (mut c, path) = s.command("interrupt", &yaml, &[]);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    s.k.until(
        "both NetworkFaults on both nodes",
        Duration::from_secs(30),
        || {
            let nfs = s.network_faults(None);
            ensure!(nfs.len() == 2, "{} NetworkFaults", nfs.len());
            let run = nfs[0]["metadata"]["labels"][RUN_LABEL]
                .as_str()
                .unwrap_or_default();
            let h = s.held(run);
            ensure!(h.iter().all(|n| n.len() == 2), "{h:?}");
            Ok(())
        },
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(1));
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "interrupted", "{}", r["verdict"]);
    let run = run_id(&r);
    assert!(s.network_faults(Some(&run)).is_empty());
    s.k.until(
        "no fault of the run on either node",
        Duration::from_secs(10),
        || {
            let h = s.held(&run);
            ensure!(h.iter().all(Vec::is_empty), "{h:?}");
            Ok(())
        },
    );
    assert!(answers(&s.pod(1, 1).netns, s.web()));
}

#[test]
fn a_killed_runner_leaves_faults_that_end_at_their_kernel_deadline() {
    let s = setup("xkk");
    let yaml = format!(
        "{}steps:\n  - duration: 8s\n    faults: [{{name: web, {TO_WEB}, blackhole: true}}]\nabort_when: [{{probe: front, failures_in_a_row: 1000}}]\ndeadline_margin: 2s\n",
        s.head("kill", "a dead runner leaves nothing behind")
    );
    let (mut c, _) = s.command("kill", &yaml, &[]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until the end: the runner writes its events there.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let run = first
        .strip_prefix("run ")
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("the runner's first line names its run: {first}"))
        .to_string();
    s.k.until(
        "the step's fault on both nodes",
        Duration::from_secs(30),
        || {
            let h = s.held(&run);
            ensure!(h.iter().all(|n| !n.is_empty()), "{h:?}");
            Ok(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let left: Vec<f64> = s
        .held(&run)
        .iter()
        .flatten()
        .map(|f| f["remaining_s"].as_f64().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "the faults outlive the runner");
    assert!(
        left.iter().all(|&l| l > 0.0 && l <= 11.0),
        "deadline: the step's 8 s + 2 s margin (+1 s: whole-second creation time): {left:?}"
    );
    assert!(
        !answers(&s.pod(1, 1).netns, s.web()),
        "blackholed while the runner is dead"
    );
    let deadline = left.iter().cloned().fold(0.0, f64::max);
    until(
        "the faults to end at their deadline",
        Duration::from_secs(30),
        || {
            let h = s.held(&run);
            ensure!(h.iter().all(Vec::is_empty), "{h:?}");
            Ok(())
        },
    );
    let gone = killed.elapsed().as_secs_f64();
    eprintln!(
        "MEASURED: the runner was killed with {deadline:.2} s left on its faults; both nodes held none {gone:.2} s after the kill"
    );
    assert!(
        gone >= deadline - 0.5,
        "ended before the deadline: {gone} < {deadline}"
    );
    assert!(
        answers(&s.pod(1, 1).netns, s.web()),
        "traffic back after the deadline"
    );
    // What the dead run left in the API is listed by its label, and removed the same way.
    let left = s.network_faults(Some(&run));
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["metadata"]["name"], format!("web-{run}"));
    let out =
        s.k.cluster
            .kubectl(
                RUNNER,
                &[
                    "delete",
                    "networkfaults",
                    "-n",
                    NS,
                    "-l",
                    &format!("{RUN_LABEL}={run}"),
                ],
                None,
            )
            .unwrap();
    assert!(out.ok, "{}", out.text());
    assert!(s.network_faults(Some(&run)).is_empty());
    drop(stdout);
}

#[test]
fn bad_files_are_refused_with_the_field_path_and_nothing_is_created() {
    let s = setup("xkb");
    let good = format!(
        "{}steps:\n  - {{duration: 2s, faults: [{{name: web, {TO_WEB}, loss: 1%}}]}}\n  - {{duration: 2s, faults: [{{name: web, {TO_WEB}, loss: 5%}}]}}\n",
        s.head("bad", "x")
    );
    let cases = [
        (
            "matchLabels: {app: web}}, ports: [\"8080\"]}, proto: tcp, loss: 5%",
            "matchLabels: {'app x': web}}, ports: [\"8080\"]}, proto: tcp, loss: 5%",
            "steps[1].faults[0].to.pods.matchLabels: 'app x' is not a label key",
        ),
        (
            "loss: 5%",
            "loss: 5%, mode: one",
            "steps[1].faults[0].mode: unknown field; steps[1].faults[0] takes",
        ),
        (
            "pod: shop/n1p1",
            "pod: n1p1",
            "steady_state[0].pod: 'n1p1': write namespace/name",
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from}");
        let (out, _) = s.run("bad", &good.replacen(from, to, 1), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "want '{want}' in: {err}");
        assert!(s.network_faults(None).is_empty());
    }
    // Valid here, refused by the API server's dry run: the runner may not create NetworkFaults
    // in namespace bank (its RoleBinding is in shop). Nothing starts, nothing is created.
    let (out, path) = s.run(
        "forbidden",
        &good.replacen("{name: web,", "{name: web, namespace: bank,", 1),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "not_started", "{}", r["verdict"]);
    let why = r["verdict"]["reason"].as_str().unwrap();
    assert!(
        why.contains("step 1") && why.contains("bank/web-") && why.contains("forbidden"),
        "{why}"
    );
    assert!(r["probes"][0]["samples"].as_array().unwrap().is_empty());
    assert!(s.network_faults(None).is_empty());
    // A dry run of the good file: every step's NetworkFault through the API server's dry run,
    // the steady state checked, nothing created.
    let (out, path) = s.run("dry", &good, &["--dry-run"]);
    assert!(out.status.success());
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "dry_run", "{}", r["verdict"]);
    assert_eq!(r["probes"][0]["samples"][0]["ok"], true);
    assert!(s.network_faults(None).is_empty());
    assert_eq!(s.held(&run_id(&r)), [vec![], vec![]] as [Vec<Value>; 2]);
}

#[test]
fn a_blast_radius_ramp_widens_from_one_pod_to_all_on_every_node() {
    let s = setup("xkp");
    let yaml = format!(
        "{}ramp:\n  duration: 6s\n  fault: {{name: some, to: {{pods: {{matchExpressions: [{{key: app, operator: In, values: [web, db]}}]}}}}, proto: icmp, loss: 1%}}\n  pods: [one, all]\nrecovery: 10s\n",
        s.head(
            "radius",
            "the web pods answer while ICMP to more and more pods is lost"
        )
    );
    let (mut c, path) = s.command("radius", &yaml, &[]);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (web, db) = (pod_ips(s.pod(2, 1)), pod_ips(s.pod(2, 2)));
    // Per node, the addresses the run's parts send to (both nodes the same, or an error).
    let targets = || -> anyhow::Result<BTreeSet<IpAddr>> {
        let nfs = s.network_faults(None);
        ensure!(nfs.len() == 1, "{} NetworkFaults", nfs.len());
        let run = nfs[0]["metadata"]["labels"][RUN_LABEL]
            .as_str()
            .unwrap_or_default();
        let per: Vec<BTreeSet<IpAddr>> = s.held(run).iter().map(|f| all_addrs(f, "to")).collect();
        ensure!(per[0] == per[1], "the nodes differ: {per:?}");
        Ok(per[0].clone())
    };
    let one = s.k.until(
        "step 1: one of the two pods, on both nodes",
        Duration::from_secs(30),
        || {
            let t = targets()?;
            ensure!(t == web || t == db, "{t:?}");
            Ok(t)
        },
    );
    s.k.until(
        "step 2: both pods, on both nodes",
        Duration::from_secs(30),
        || {
            let t = targets()?;
            ensure!(t == web.union(&db).cloned().collect(), "{t:?}");
            Ok(())
        },
    );
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    let r = report(&path);
    assert_eq!(r["verdict"]["result"], "held", "{}", r["verdict"]);
    let names: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["to pods one", "to pods all"]);
    eprintln!("step 1 chose {one:?} on both nodes; step 2 all of web {web:?} and db {db:?}");
    assert!(s.network_faults(None).is_empty());
}
