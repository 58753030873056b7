//! A real Kubernetes cluster of one or two nodes on this machine, as a user's k3s-like workers
//! are: Debian's containerd (its own root, state and socket under the run's directory), etcd and
//! kube-apiserver ([`crate::cluster::ApiServer`], with service accounts admitted),
//! kube-controller-manager, kube-scheduler, kubelet and kube-proxy (iptables mode) built from
//! Debian's `kubernetes` source by scripts/build-k8s.sh, and the CNI bridge plugin: every pod
//! kubelet starts gets a host-side `veth*` on its node's `cni0` (node `n`: 10.88.`n-1`.0/24),
//! where the DaemonSet's daemon attaches. Pods reach the API server as in any cluster:
//! `kubernetes.default` at 10.96.0.1:443 through kube-proxy's rules, with their service
//! account's token.
//!
//! Node 1 is the host's own namespaces; node 2 ([`second`]) has a network namespace, a mount
//! namespace and a cgroup root of its own, and the two are joined by flannel's VXLAN (`flannel.1`).
//!
//! Everything of a run is in `/tmp/<prefix>-cluster` (pid files and logs, as
//! [`crate::cluster`]'s processes); what it changes on the host is recorded first and put back
//! by [`down`] ([`host`]), which also stops pods the way kubelet does (CNI DEL), so a node
//! leaves the machine as it found it. One node at a time: kubelet's ports are fixed.

pub mod host;
pub mod images;
pub mod second;
pub mod workload;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;

use crate::{
    cluster::{
        self, ADMIN, ApiServer, Kubectl, Rt, default_identities, ensure_kubernetes_service,
        k8s_bins, kubectl, running_pid, set_endpoints, spawn_kept, state_dir,
    },
    cmd::run,
};

pub(crate) use crate::cluster::workspace_root;

/// What a node runs, built by scripts/build-k8s.sh (in this order in [`k8s_bins`]'s answer).
pub const COMPONENTS: [&str; 6] = [
    "kube-apiserver",
    "kubelet",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-proxy",
    "pause",
];
/// The pods' addresses on every node (kube-proxy's `--cluster-cidr`); node `n` has [`pod_cidr`].
pub const POD_CIDR: &str = "10.88.0.0/16";
pub const BRIDGE: &str = "cni0";
/// The `kubernetes` Service's ClusterIP (the first of [`cluster::SERVICE_CIDR`]).
pub const KUBERNETES_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// kubelet's fixed ports: the API server's exec/logs port and its healthz.
const KUBELET_PORT: u16 = 10250;
const KUBELET_HEALTHZ: u16 = 10248;
const KUBE_PROXY_HEALTHZ: u16 = 10256;

/// Node `n`'s pod network (1 or 2): the bridge plugin's host-local range there, flannel's lease.
pub fn pod_cidr(n: u8) -> String {
    format!("10.88.{}.0/24", n - 1)
}

/// Address `host` of node `n`'s pod network (`.0` on flannel.1, `.1` on cni0: the pods' gateway).
pub fn pod_gateway(n: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, n - 1, host)
}

/// Builds every component into the cache unless it is there (about 10 minutes once on 2 cores).
pub fn build() -> Result<Vec<PathBuf>> {
    cluster::build_k8s(&COMPONENTS)
}

/// Node `n`'s name in the API (`<prefix>-node`, `<prefix>-node2`).
pub fn node_name(prefix: &str, n: u8) -> String {
    if n == 1 {
        format!("{prefix}-node")
    } else {
        format!("{prefix}-node{n}")
    }
}

/// One kubelet of the run with its containerd and kube-proxy: node 1 in the host's namespaces,
/// node 2 in its own ([`second`]).
#[derive(Clone, Debug)]
pub struct Member {
    /// 1 or 2.
    pub n: u8,
    /// Its name in the API.
    pub name: String,
    /// containerd's, kubelet's and CNI's state: the run's directory, or [`second::dir`].
    root: PathBuf,
}

impl Member {
    /// Its processes' names: `kubelet`, `kubelet.node2`.
    fn proc_name(&self, program: &str) -> String {
        if self.n == 1 {
            program.to_string()
        } else {
            format!("{program}.node{}", self.n)
        }
    }

    /// Where the host reaches its hostNetwork ports (the DaemonSet pod's metrics).
    pub fn address(&self) -> Ipv4Addr {
        if self.n == 1 {
            Ipv4Addr::LOCALHOST
        } else {
            second::NODE_IP
        }
    }

    /// The network namespace its pods' host-side veths and its `cni0` are in (`None`: the host's).
    pub fn netns(&self, prefix: &str) -> Option<String> {
        (self.n != 1).then(|| second::netns(prefix))
    }
}

/// A running cluster of one or two nodes; [`down`] on drop unless [`keep`](Self::keep)ed.
pub struct Node {
    pub prefix: String,
    /// Node 1's name.
    pub name: String,
    /// Every node, node 1 first.
    pub nodes: Vec<Member>,
    /// `/tmp/<prefix>-cluster`.
    pub dir: PathBuf,
    /// The images imported into every containerd, by reference.
    pub images: Vec<String>,
    keep: bool,
}

fn containerd_sock(dir: &Path) -> PathBuf {
    dir.join("run/containerd.sock")
}

fn ctr(dir: &Path, args: &[&str]) -> Result<String> {
    let sock = containerd_sock(dir).display().to_string();
    let mut all = vec!["-a", sock.as_str(), "-n", "k8s.io"];
    all.extend_from_slice(args);
    run("ctr", &all)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Polls `ready` every 100 ms for `limit`; the error names `what` and the last failure.
fn wait(what: &str, limit: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what}: not within {limit:?} {last}")
}

impl Node {
    /// Starts a one-node cluster ([`up_with`](Self::up_with) 1).
    pub fn up(prefix: &str) -> Result<Node> {
        Self::up_with(prefix, 1)
    }

    /// Starts `nodes` (1 or 2) nodes: API server, controller-manager, scheduler, and per node
    /// containerd with the images ([`images`]), kubelet and kube-proxy; returns once every node
    /// is Ready and `kubernetes.default` answers at its ClusterIP from each. Refuses (changing
    /// nothing) when a `cni0` or the run's directory exists; on any later error, tears down what
    /// it started.
    pub fn up_with(prefix: &str, nodes: u8) -> Result<Node> {
        ensure!(
            (1..=2).contains(&nodes),
            "nodes: {nodes} is not supported; use 1 or 2 (node 2 has namespaces of its own, see node::second)"
        );
        // SAFETY: no arguments.
        ensure!(
            unsafe { libc::geteuid() } == 0,
            "a node needs root (containerd, kubelet, cni0, mounts): run it as root"
        );
        let bins = k8s_bins(&COMPONENTS)?;
        ensure!(
            !link_exists(BRIDGE),
            "a {BRIDGE} exists on this machine: a node (or another CNI) runs; `cargo xtask node down` stops ours"
        );
        ensure!(
            !state_dir(prefix).exists(),
            "{} exists: a node or cluster {prefix} is up or was left behind; `cargo xtask node down --prefix {prefix}` removes it",
            state_dir(prefix).display()
        );
        let dir = state_dir(prefix);
        let mut node = Node {
            prefix: prefix.to_string(),
            name: node_name(prefix, 1),
            nodes: (1..=nodes)
                .map(|n| Member {
                    n,
                    name: node_name(prefix, n),
                    root: if n == 1 {
                        dir.clone()
                    } else {
                        second::dir(&dir)
                    },
                })
                .collect(),
            dir,
            images: Vec::new(),
            keep: false,
        };
        node.boot(&bins)
            .with_context(|| format!("starting node {}", node.name))?;
        Ok(node)
    }

    fn boot(&mut self, bins: &[PathBuf]) -> Result<()> {
        let [kas, kubelet, scheduler, kcm, proxy, pause] = bins else {
            bail!("scripts/build-k8s.sh printed {} paths", bins.len());
        };
        let t0 = Instant::now();
        let mut api = ApiServer::start_with(
            &self.prefix,
            default_identities(),
            &[
                // Pods get their service account's token (the lab's cluster turns this off).
                "--disable-admission-plugins=".into(),
                "--enable-admission-plugins=ServiceAccount".into(),
                // Reachable at the node's address too: the `kubernetes` Service points there.
                "--bind-address=0.0.0.0".into(),
                // exec and logs dial the kubelet at the node's address, not its name.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ],
        )
        .map_err(|e| e.context(format!("with kube-apiserver {}", kas.display())))?;
        api.keep();
        let dir = self.dir.clone();
        let kc = api.kubeconfig(ADMIN).display().to_string();
        host::record(&dir)?;
        // Nodes have /lib/modules (deploy/'s DaemonSet mounts it to see whether sch_fq is a
        // module); this kernel has no modules and the machine no such directory. An empty one
        // stands in (recorded absent: `down` removes it).
        std::fs::create_dir_all("/lib/modules")?;
        if self.nodes.len() > 1 {
            // Before anything mounts under the run's directory: the second node's mount
            // namespace starts as a copy of the host's.
            second::create(&self.prefix, &dir)?;
            second::join_vxlan(&self.prefix)?;
            // Its kubelet and kube-proxy reach the API server over the underlay; the serving
            // certificate names `kubernetes`.
            let text = std::fs::read_to_string(&kc)?;
            let url = format!("server: {}", api.url);
            ensure!(text.contains(&url), "{kc} has no {url}");
            std::fs::write(
                self.kubeconfig_of(&self.nodes[1]),
                text.replace(
                    &url,
                    &format!(
                        "server: https://{}:{}\n    tls-server-name: kubernetes",
                        second::HOST_IP,
                        api.port
                    ),
                ),
            )?;
        }
        eprintln!("node {}: API server up ({:.1?})", self.name, t0.elapsed());

        std::fs::create_dir_all(dir.join("images"))?;
        let tars = images::build_all(&dir.join("images"), pause)?;
        self.images = tars.iter().map(|(_, r)| r.clone()).collect();
        for m in self.nodes.clone() {
            self.start_containerd(&m, &tars)?;
        }
        eprintln!(
            "node {}: containerd and {} images ({:.1?})",
            self.name,
            self.images.len(),
            t0.elapsed()
        );

        let pki = dir.join("pki");
        let pk = |f: &str| pki.join(f).display().to_string();
        let common = [
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            "--port=0".into(),
            "--leader-elect=false".into(),
        ];
        let mut args = common.to_vec();
        args.extend([
            "--secure-port=10257".into(),
            format!("--service-account-private-key-file={}", pk("sa.key")),
            format!("--root-ca-file={}", pk("ca.crt")),
            format!("--cluster-signing-cert-file={}", pk("ca.crt")),
            format!("--cluster-signing-key-file={}", pk("ca.key")),
            "--use-service-account-credentials=false".into(),
        ]);
        spawn_kept(&self.prefix, "kube-controller-manager", kcm, &args)?;
        let mut args = common.to_vec();
        args.push("--secure-port=10259".into());
        spawn_kept(&self.prefix, "kube-scheduler", scheduler, &args)?;

        for m in &self.nodes {
            self.start_kubelet(m, kubelet)?;
        }
        let mut node_ips = Vec::new();
        for m in &self.nodes {
            let ip = self.wait_ready(m)?;
            eprintln!("node {}: Ready at {ip} ({:.1?})", m.name, t0.elapsed());
            node_ips.push(ip);
        }

        // `kubernetes.default`: the API server at node 1's address (the endpoint reconciler is
        // off in the lab's API server), served at its ClusterIP by each node's kube-proxy.
        let rt = Rt::new()?;
        let client = rt.block_on(api.client(ADMIN))?;
        rt.block_on(async {
            ensure_kubernetes_service(&client).await?;
            set_endpoints(
                &client,
                "default",
                "kubernetes",
                &node_ips[..1],
                &[("https", "TCP", i32::from(api.port))],
            )
            .await
        })?;
        for m in &self.nodes {
            let args = vec![
                format!("--kubeconfig={}", self.kubeconfig_of(m).display()),
                format!("--hostname-override={}", m.name),
                "--proxy-mode=iptables".into(),
                format!("--cluster-cidr={POD_CIDR}"),
                // Leave the host's conntrack sysctls as they are.
                "--conntrack-max-per-core=0".into(),
                "--conntrack-tcp-timeout-established=0".into(),
                "--conntrack-tcp-timeout-close-wait=0".into(),
                "--metrics-bind-address=127.0.0.1:10249".into(),
                format!("--healthz-bind-address=127.0.0.1:{KUBE_PROXY_HEALTHZ}"),
            ];
            self.spawn(m, "kube-proxy", proxy, &args)?;
        }
        for m in &self.nodes {
            let answers = || {
                TcpStream::connect_timeout(
                    &SocketAddr::from((KUBERNETES_IP, 443)),
                    Duration::from_millis(300),
                )
                .is_ok()
            };
            wait(
                &format!(
                    "kubernetes.default at 10.96.0.1:443 from node {} (kube-proxy's rules)",
                    m.name
                ),
                Duration::from_secs(60),
                || match m.netns(&self.prefix) {
                    None => Ok(answers()),
                    Some(ns) => crate::snapshot::in_netns(&ns, answers),
                },
            )
            .map_err(|e| e.context(self.logs_tail(&m.proc_name("kube-proxy"))))?;
        }
        eprintln!(
            "node {}: {} node(s) up in {:.1?}",
            self.name,
            self.nodes.len(),
            t0.elapsed()
        );
        Ok(())
    }

    /// The kubeconfig node `m`'s kubelet and kube-proxy use: the admin's on node 1; on node 2
    /// the same, with the API server at the host's underlay address.
    fn kubeconfig_of(&self, m: &Member) -> PathBuf {
        if m.n == 1 {
            self.kubeconfig()
        } else {
            self.dir.join(format!("kubeconfig-{ADMIN}.node{}", m.n))
        }
    }

    /// Starts `bin args...` as node `m`'s process `program` (in its namespaces).
    fn spawn(&self, m: &Member, program: &str, bin: &Path, args: &[String]) -> Result<PathBuf> {
        let name = m.proc_name(program);
        if m.n == 1 {
            spawn_kept(&self.prefix, &name, bin, args)
        } else {
            second::spawn(&self.prefix, &self.dir, &name, bin, args)
        }
    }

    fn start_containerd(&self, m: &Member, tars: &[(PathBuf, String)]) -> Result<()> {
        let dir = m.root.clone();
        for d in ["run", "containerd/root", "containerd/state", "cni/net.d"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let w = dir.display();
        let config = format!(
            r#"version = 2
root = "{w}/containerd/root"
state = "{w}/containerd/state"
[grpc]
  address = "{w}/run/containerd.sock"
[ttrpc]
  address = "{w}/run/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{w}/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{pause}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # Pod network namespaces pinned under the run's directory, not in /run/netns.
    netns_mounts_under_state_dir = true
    # Machines of this kind lack CAP_SYS_RESOURCE in the bounding set: a sandbox's
    # oom_score_adj of -998 fails runc ("failed to update /proc/self/oom_score_adj"); clamp it.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{w}/cni/net.d"
      max_conf_num = 1
"#,
            pause = images::PAUSE
        );
        std::fs::write(dir.join("containerd/config.toml"), config)?;
        let cni = json!({
            "cniVersion": "0.4.0",
            "name": "injector-node",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false,
                "hairpinMode": true,
                "ipam": {"type": "host-local", "dataDir": format!("{w}/cni/ipam"),
                         "ranges": [[{"subnet": pod_cidr(m.n),
                                      "gateway": pod_gateway(m.n, 1).to_string()}]],
                         "routes": [{"dst": "0.0.0.0/0"}]},
            }],
        });
        std::fs::write(
            dir.join("cni/net.d/10-injector.conflist"),
            serde_json::to_vec_pretty(&cni)?,
        )?;
        self.spawn(
            m,
            "containerd",
            Path::new("/usr/bin/containerd"),
            &[
                "--config".into(),
                dir.join("containerd/config.toml").display().to_string(),
            ],
        )?;
        wait("containerd's socket", Duration::from_secs(20), || {
            Ok(ctr(&dir, &["version"]).is_ok())
        })
        .map_err(|e| e.context(self.logs_tail(&m.proc_name("containerd"))))?;
        for (tar, reference) in tars {
            ctr(&dir, &["images", "import", &tar.display().to_string()])
                .with_context(|| format!("importing {reference} from {}", tar.display()))?;
        }
        Ok(())
    }

    fn start_kubelet(&self, m: &Member, kubelet: &Path) -> Result<()> {
        let w = &m.root;
        let sock = format!("unix://{}", containerd_sock(w).display());
        let mut args: Vec<String> = vec![
            format!("--kubeconfig={}", self.kubeconfig_of(m).display()),
            format!("--hostname-override={}", m.name),
            "--container-runtime=remote".into(),
            format!("--container-runtime-endpoint={sock}"),
            format!("--image-service-endpoint={sock}"),
            format!("--containerd={}", containerd_sock(w).display()),
            "--runtime-request-timeout=2m".into(),
            format!("--root-dir={}", w.join("kubelet").display()),
            format!("--cert-dir={}", w.join("kubelet/pki").display()),
            format!(
                "--volume-plugin-dir={}",
                w.join("kubelet/volume-plugins").display()
            ),
            "--cgroup-driver=cgroupfs".into(),
            "--fail-swap-on=false".into(),
            // kubelet adds no iptables rules of its own (kube-proxy's are cleaned by `down`).
            "--make-iptables-util-chains=false".into(),
            "--read-only-port=0".into(),
            format!("--port={KUBELET_PORT}"),
            "--healthz-bind-address=127.0.0.1".into(),
            format!("--healthz-port={KUBELET_HEALTHZ}"),
            // A full disk on a test machine must not evict the test's pods or delete images
            // nobody can pull again.
            "--image-gc-high-threshold=100".into(),
            "--image-gc-low-threshold=99".into(),
            "--eviction-hard=memory.available<100Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%".into(),
            format!("--pod-infra-container-image={}", images::PAUSE),
            "--cluster-domain=cluster.local".into(),
            "--node-status-update-frequency=2s".into(),
        ];
        if m.n != 1 {
            args.extend([
                format!("--node-ip={}", second::NODE_IP),
                format!("--cgroup-root=/{}", second::cgroup_root(&self.prefix)),
            ]);
        }
        self.spawn(m, "kubelet", kubelet, &args)?;
        Ok(())
    }

    /// Waits until node `m` reports Ready; its InternalIP.
    fn wait_ready(&self, m: &Member) -> Result<IpAddr> {
        let mut ip = None;
        wait(
            &format!("node {} Ready", m.name),
            Duration::from_secs(120),
            || {
                let out = self.kubectl(&["get", "node", &m.name, "-o", "json"], None)?;
                ensure!(out.ok, "{}", out.text());
                let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
                let ready = v["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                ip = v["status"]["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str()?.parse().ok());
                Ok(ready && ip.is_some())
            },
        )
        .map_err(|e| e.context(self.logs_tail(&m.proc_name("kubelet"))))?;
        ip.context("no InternalIP")
    }

    fn logs_tail(&self, name: &str) -> String {
        let log = self.dir.join(format!("{name}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "the end of {}:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// The admin's kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join(format!("kubeconfig-{ADMIN}"))
    }

    /// kubectl as the admin, with `stdin` if any.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Kubectl> {
        kubectl(&self.kubeconfig(), "", args, stdin)
    }

    /// As [`kubectl`](Self::kubectl), failing with its output unless it succeeds; its stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin)?;
        ensure!(out.ok, "kubectl {}: {}", args.join(" "), out.text());
        Ok(out.stdout)
    }

    /// `kubectl apply -k deploy/` as a user installs injector (the kustomization names the
    /// image this node imported), then waits until the DaemonSet's pod is Ready.
    pub fn install_injector(&self) -> Result<()> {
        let deploy = workspace_root().join("deploy").display().to_string();
        self.kubectl_ok(&["apply", "-k", &deploy], None)?;
        self.daemonset_ready()
    }

    /// Waits until injector's DaemonSet has its pod on the node Ready (`rollout status`).
    pub fn daemonset_ready(&self) -> Result<()> {
        self.kubectl_ok(
            &[
                "-n",
                "injector",
                "rollout",
                "status",
                "daemonset/injector",
                "--timeout=120s",
            ],
            None,
        )
        .map(drop)
    }

    /// Leaves the node running when this value is dropped (`cargo xtask node up`).
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// The logs of every process of the run, and the pods' view, for a failed test's message.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        if let Ok(out) = self.kubectl(&["get", "pods,ds", "-A", "-o", "wide"], None) {
            s += &out.text();
        }
        for m in &self.nodes {
            for program in ["kubelet", "containerd", "kube-proxy"] {
                s += &self.logs_tail(&m.proc_name(program));
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = down(&self.prefix)
        {
            eprintln!("node {}: down: {e:#}", self.name);
        }
    }
}

fn stop(dir: &Path, name: &str) {
    if let Some(pid) = running_pid(dir, name) {
        crate::proc::terminate_pids(&[pid]);
    }
}

/// Stops node `prefix` and puts the machine back as it was: its pods deleted through the API
/// while kubelet runs (each torn down as kubelet does: containers stopped, CNI DEL), the
/// components stopped, kube-proxy's rules removed (`kube-proxy --cleanup`), what containerd left
/// killed, mounts under the run's directory unmounted, `cni0` and its ports deleted, the
/// cgroups kubelet made removed, the host's recorded state restored ([`host`]), then the API
/// server, etcd and the directory ([`cluster::down`]). Idempotent; every step is tried, the
/// first error returned.
pub fn down(prefix: &str) -> Result<()> {
    let dir = state_dir(prefix);
    let mut errors: Vec<String> = Vec::new();
    let kc = dir.join(format!("kubeconfig-{ADMIN}"));
    if running_pid(&dir, "kube-apiserver").is_some() && running_pid(&dir, "kubelet").is_some() {
        // DaemonSets first (their pods would come back), then every pod; kubelet stops each.
        for args in [
            &["delete", "daemonsets", "--all", "-A", "--timeout=60s"][..],
            &[
                "delete",
                "pods",
                "--all",
                "-A",
                "--grace-period=5",
                "--timeout=90s",
            ][..],
        ] {
            match kubectl(&kc, "", args, None) {
                Ok(out) if out.ok => {}
                Ok(out) => errors.push(format!("kubectl {}: {}", args.join(" "), out.text())),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    for name in [
        "kubelet",
        "kubelet.node2",
        "kube-proxy",
        "kube-proxy.node2",
        "kube-scheduler",
        "kube-controller-manager",
    ] {
        stop(&dir, name);
    }
    if let Ok(bins) = k8s_bins(&["kube-proxy"]) {
        // Removes the KUBE-* chains and rules; the tables themselves go with host::restore.
        let _ = Command::new(&bins[0]).arg("--cleanup").output();
    }
    for (name, root) in [
        ("containerd", dir.clone()),
        ("containerd.node2", second::dir(&dir)),
    ] {
        if running_pid(&dir, name).is_none() {
            continue;
        }
        // Anything kubelet did not stop (it was gone, or a pod would not go).
        if let Ok(ids) = ctr(&root, &["task", "ls", "-q"]) {
            for id in ids.lines() {
                let _ = ctr(&root, &["task", "kill", "-a", "-s", "KILL", id]);
            }
            std::thread::sleep(Duration::from_millis(300));
            for id in ids.lines() {
                let _ = ctr(&root, &["task", "delete", "-f", id]);
            }
        }
    }
    // containerd's shims outlive it by design: find them by the socket they serve (every
    // node's is under the run's directory).
    let sock = format!("{}/", dir.display());
    let shims: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.starts_with("/usr/bin/containerd-shim") && cmd.contains(&*sock)).then_some(pid)
        })
        .collect();
    stop(&dir, "containerd");
    stop(&dir, "containerd.node2");
    crate::proc::terminate_pids(&shims);
    // The second node's namespaces, links and cgroup root (its mounts first: they are under
    // the run's directory too).
    second::remove(prefix, &dir, &mut errors);
    if dir.exists() {
        // Mounts under the directory (kubelet's root, pod netns pins, shm, rootfs), deepest first.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = dir.display().to_string();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| *m == root || m.starts_with(&format!("{root}/")))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts.dedup();
        for m in mounts {
            let c = std::ffi::CString::new(m).expect("a path without NUL");
            // SAFETY: a valid C string; detach if busy.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0
                && unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0
            {
                errors.push(format!("umount {m}: {}", std::io::Error::last_os_error()));
            }
        }
    }
    if link_exists(BRIDGE) {
        let ports = run("ip", &["-o", "link", "show", "master", BRIDGE]).unwrap_or_default();
        for port in ports.lines().filter_map(|l| l.split(": ").nth(1)) {
            let port = port.split('@').next().unwrap_or(port);
            let _ = run("ip", &["link", "del", port]);
        }
        if let Err(e) = run("ip", &["link", "del", BRIDGE]) {
            errors.push(format!("{e:#}"));
        }
    }
    // The cgroups kubelet (kubepods) and containerd (k8s.io) made, in every hierarchy.
    for h in second::cgroup_hierarchies() {
        for g in ["kubepods", "k8s.io"] {
            let top = h.join(g);
            if top.is_dir() {
                remove_cgroup(&top, &mut errors);
            }
        }
    }
    if let Err(e) = host::restore(&dir) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = cluster::down(prefix) {
        errors.push(format!("{e:#}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("node {prefix} down: {}", errors.join("; "))
    }
}

/// rmdir of a cgroup tree, children first.
fn remove_cgroup(path: &Path, errors: &mut Vec<String>) {
    for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroup(&e.path(), errors);
        }
    }
    if let Err(e) = std::fs::remove_dir(path) {
        errors.push(format!("rmdir {}: {e}", path.display()));
    }
}

/// What of node `prefix` runs: the processes (as [`cluster::status`]), and the node and pods as
/// the API server sees them.
pub fn status(prefix: &str) -> Result<String> {
    let mut s = cluster::status(prefix)?;
    let dir = state_dir(prefix);
    if running_pid(&dir, "kube-apiserver").is_some() {
        let kc = dir.join(format!("kubeconfig-{ADMIN}"));
        let out = kubectl(&kc, "", &["get", "nodes,pods", "-A", "-o", "wide"], None)?;
        s += &out.text();
    }
    s += &format!(
        "{BRIDGE}: {}\n",
        if link_exists(BRIDGE) {
            "present"
        } else {
            "absent (the bridge plugin makes it with the first pod that is not hostNetwork)"
        }
    );
    let ns = second::netns(prefix);
    if Path::new("/run/netns").join(&ns).exists() {
        s += &format!(
            "node 2: network namespace {ns}, underlay {}\n",
            second::NODE_IP
        );
    }
    Ok(s)
}
