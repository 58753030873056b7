//! A real Kubernetes API server per run (etcd + kube-apiserver on loopback, TLS, static tokens, RBAC)
//! and the lab registered in it as Nodes and Pods, with the lab playing kubelet; torn down on Drop.
//!
//! The binary comes from `scripts/build-kube-apiserver.sh` (Debian's `kubernetes` source, cached
//! per source version). Everything of a run lives in `/tmp/<prefix>-cluster` (certs, tokens,
//! kubeconfigs, etcd data, logs, pid files), so `down(prefix)` can clean up what a `keep()`
//! left running, and `Drop` (also on a panic) kills both processes and removes the directory.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::lab::{self, Lab};

/// The identity with every right (group `system:masters`).
pub const ADMIN: &str = "admin";
/// The daemon's identity: the service account user RBAC will bind to the daemon's ClusterRole.
pub const DAEMON: &str = "injector";
/// The user name of [`DAEMON`], as a pod's service-account token would authenticate.
pub const DAEMON_USER: &str = "system:serviceaccount:injector:injector";
/// The Service range; `kubernetes` gets its first address, kube-dns [`DNS_SERVICE_IP`].
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// Where the kube-dns EndpointSlice points by default: an address in node1's pod subnet that no
/// lab pod has ([`Cluster::set_endpoints`] points it elsewhere, e.g. at a lab pod).
pub const DNS_ENDPOINT_IP: &str = "10.42.1.250";
/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGER: &str = "injector-tests";

/// One static token identity of the API server (`--token-auth-file`).
#[derive(Debug, Clone)]
pub struct Identity {
    /// Short name: its kubeconfig is `kubeconfig-<name>`.
    pub name: String,
    /// The user name RBAC sees.
    pub user: String,
    pub groups: Vec<String>,
    /// A random bearer token, new per run.
    pub token: String,
}

impl Identity {
    pub fn new(name: &str, user: &str, groups: &[&str]) -> Identity {
        Identity {
            name: name.to_string(),
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            token: random_hex(16),
        }
    }
}

/// [`ADMIN`] (system:masters) and [`DAEMON`] (the daemon's service account user, no rights until
/// a binding grants them).
pub fn default_identities() -> Vec<Identity> {
    vec![
        Identity::new(ADMIN, "admin", &["system:masters"]),
        Identity::new(
            DAEMON,
            DAEMON_USER,
            &["system:serviceaccounts", "system:serviceaccounts:injector"],
        ),
    ]
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `scripts/build-kube-apiserver.sh [args]`; the path it prints last, and its exit code.
fn build_script(args: &[&str], quiet: bool) -> Result<(Option<i32>, PathBuf)> {
    let script = workspace_root().join("scripts/build-kube-apiserver.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(if quiet {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .output()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or_default().trim().to_string();
    if !matches!(out.status.code(), Some(0 | 3)) || path.is_empty() {
        bail!(
            "{} {} failed ({}): {}",
            script.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((out.status.code(), PathBuf::from(path)))
}

/// The kube-apiserver binary: `$INJECTOR_KUBE_APISERVER`, or the one cached for the current
/// Debian source version. Fails with the fix (`cargo xtask cluster build`) when not built yet.
pub fn kube_apiserver_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("INJECTOR_KUBE_APISERVER") {
        return Ok(PathBuf::from(p));
    }
    match build_script(&["--check"], true)? {
        (Some(0), path) => Ok(path),
        (_, path) => bail!(
            "{} is not built: run `cargo xtask cluster build` (about 5 minutes, once per machine; `cargo xtask test` does it)",
            path.display()
        ),
    }
}

/// Builds kube-apiserver into the cache unless it is there (about 5 minutes once; then a no-op);
/// returns its path.
pub fn build_kube_apiserver() -> Result<PathBuf> {
    build_script(&[], false).map(|(_, p)| p)
}

/// etcd, from Debian's `etcd-server`.
pub fn etcd_bin() -> Result<PathBuf> {
    let p = PathBuf::from("/usr/bin/etcd");
    ensure!(
        p.exists(),
        "/usr/bin/etcd not found: apt-get install etcd-server (bash scripts/bootstrap.sh does)"
    );
    Ok(p)
}

/// Where a run keeps everything: `/tmp/<prefix>-cluster`.
pub fn state_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}-cluster"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a free loopback port")?
        .local_addr()?
        .port())
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run openssl (apt-get install openssl; bash scripts/bootstrap.sh does)")?;
    ensure!(
        out.status.success(),
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// CA, serving cert for 127.0.0.1/localhost/kubernetes.default.svc, service-account key.
fn make_pki(pki: &Path) -> Result<()> {
    std::fs::create_dir_all(pki)?;
    let days = "3650";
    openssl(
        pki,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            days,
            "-subj",
            "/CN=injector-test-ca",
        ],
    )?;
    openssl(
        pki,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
    )?;
    std::fs::write(
        pki.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        pki,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            days,
            "-extfile",
            "ext.cnf",
        ],
    )?;
    openssl(pki, &["genrsa", "-out", "sa.key", "2048"])
}

fn tokens_csv(ids: &[Identity]) -> String {
    ids.iter().fold(String::new(), |mut s, id| {
        let _ = writeln!(
            s,
            "{},{},{},\"{}\"",
            id.token,
            id.user,
            id.name,
            id.groups.join(",")
        );
        s
    })
}

fn kubeconfig_yaml(url: &str, ca: &Path, id: &Identity) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: injector\n  cluster:\n    server: {url}\n    certificate-authority: {}\n\
         users:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: injector\n    user: {name}\n\
         current-context: {name}\n",
        ca.display(),
        name = id.name,
        token = id.token,
    )
}

/// One spawned server process: killed (and reaped) on stop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C meant for `cargo xtask cluster up` leaves it be.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
        Ok(Proc { name, child, log })
    }

    /// Fails with the end of its log if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "{} exited ({st}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }

    fn kill(&mut self) {
        // Its data is thrown away with the run: no need for a graceful stop (SIGTERM takes 4-5 s).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `GET path` over plain HTTP: true on a 200.
fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut resp = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut resp).is_ok()
        && resp.starts_with("HTTP/1.")
        && resp.split_whitespace().nth(1) == Some("200")
}

/// A tokio runtime of our own, so the library's calls are plain functions that work from sync
/// tests and from async ones (each call blocks on a scoped thread, never inside the caller's runtime).
struct Rt(tokio::runtime::Runtime);

impl Rt {
    fn new() -> Result<Rt> {
        Ok(Rt(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building a tokio runtime")?))
    }

    fn block_on<F: Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| self.0.block_on(f))
                .join()
                .expect("the future panicked")
        })
    }
}

/// etcd and kube-apiserver of one run, on loopback ports chosen for it.
pub struct ApiServer {
    pub prefix: String,
    /// `/tmp/<prefix>-cluster`.
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    pub identities: Vec<Identity>,
    procs: Vec<Proc>,
    keep: bool,
}

impl ApiServer {
    /// Starts etcd, then kube-apiserver (TLS, `identities` as static tokens, RBAC), writes a
    /// kubeconfig per identity, and returns once `/readyz` answers. On error, what was started is
    /// stopped and the directory removed.
    pub fn start(prefix: &str, identities: Vec<Identity>) -> Result<ApiServer> {
        ensure!(
            identities.iter().any(|i| i.name == ADMIN),
            "the identities need one named {ADMIN:?}: the library registers the lab with it"
        );
        let kas = kube_apiserver_bin()?;
        let etcd = etcd_bin()?;
        let dir = state_dir(prefix);
        ensure!(
            !dir.exists(),
            "{} exists: a cluster {prefix} is up or was left behind; `cargo xtask cluster down --prefix {prefix}` removes it",
            dir.display()
        );
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut api = ApiServer {
            prefix: prefix.to_string(),
            url: format!("https://127.0.0.1:{port}"),
            port,
            dir,
            identities,
            procs: Vec::new(),
            keep: false,
        };
        api.boot(&etcd, &kas)
            .with_context(|| format!("starting the API server of {prefix}"))?;
        Ok(api)
    }

    fn boot(&mut self, etcd: &Path, kas: &Path) -> Result<()> {
        let dir = self.dir.clone();
        let pki = dir.join("pki");
        make_pki(&pki)?;
        std::fs::write(pki.join("tokens.csv"), tokens_csv(&self.identities))?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = [
            "--name=injector".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=injector={peer_url}"),
            "--unsafe-no-fsync".to_string(),
        ]
        .into();
        self.procs
            .push(Proc::spawn("etcd", etcd, &etcd_args, &dir)?);
        self.wait("etcd /health", Duration::from_secs(20), |_| {
            Ok(http_ok(client_port, "/health"))
        })?;
        let p = |f: &str| pki.join(f).display().to_string();
        let kas_args: Vec<String> = vec![
            format!("--etcd-servers={client_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.key")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=RBAC".into(),
            // No controller-manager creates the `default` service account.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // The advertise address is loopback: the `kubernetes` EndpointSlice is ours.
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", p("")),
        ];
        self.procs
            .push(Proc::spawn("kube-apiserver", kas, &kas_args, &dir)?);
        for id in &self.identities {
            std::fs::write(
                self.kubeconfig(&id.name),
                kubeconfig_yaml(&self.url, &pki.join("ca.crt"), id),
            )?;
        }
        let rt = Rt::new()?;
        let client = rt.block_on(self.client(ADMIN))?;
        self.wait("kube-apiserver /readyz", Duration::from_secs(90), |_| {
            let req = http::Request::get("/readyz").body(Vec::new())?;
            Ok(rt
                .block_on(client.request_text(req))
                .is_ok_and(|t| t == "ok"))
        })
    }

    /// Polls `ready` every 50 ms until true, failing when a process exits or after `limit`.
    fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        mut ready: impl FnMut(&mut Self) -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            for p in &mut self.procs {
                p.check_alive()?;
            }
            if ready(self)? {
                return Ok(());
            }
            if start.elapsed() > limit {
                let logs = self
                    .procs
                    .iter()
                    .map(|p| format!("{}:\n{}", p.log.display(), log_tail(&p.log, 10)))
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!("{what} not ready after {limit:?}; the logs end:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The kubeconfig of identity `name` (for `kubectl --kubeconfig` and kube-rs).
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{name}"))
    }

    pub fn identity(&self, name: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.name == name)
    }

    /// A kube-rs client as identity `name`, built in the caller's runtime.
    pub async fn client(&self, name: &str) -> Result<Client> {
        let path = self.kubeconfig(name);
        let kc = Kubeconfig::read_from(&path)
            .with_context(|| format!("reading {} (is {name:?} an identity?)", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", path.display()))?;
        Client::try_from(config).with_context(|| format!("a client from {}", path.display()))
    }

    /// Pids of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Leaves both processes and the directory when this value is dropped (`cluster up`).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "cluster {}: removing {}: {e}",
                self.prefix,
                self.dir.display()
            );
        }
    }
}

/// Where a lab pod goes in the API: its namespace and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl PodMeta {
    pub fn new(namespace: &str, labels: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            namespace: namespace.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// The default placement: namespace `shop` with `app=checkout` (n1p1), `app=cart` (n1p2),
/// `app=payments` (n2p1); `bank` with `app=ledger` (n2p2); any other pod `shop`, `app=<name>`.
pub fn default_meta(pod: &lab::Pod) -> PodMeta {
    match pod.name.as_str() {
        "n1p1" => PodMeta::new("shop", &[("app", "checkout")]),
        "n1p2" => PodMeta::new("shop", &[("app", "cart")]),
        "n2p1" => PodMeta::new("shop", &[("app", "payments")]),
        "n2p2" => PodMeta::new("bank", &[("app", "ledger")]),
        other => PodMeta::new("shop", &[("app", other)]),
    }
}

/// How [`Cluster::up`] builds a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub pods_per_node: u8,
    pub identities: Vec<Identity>,
    /// Placement of lab pods by name (`n1p1`); the others get [`default_meta`].
    pub pods: BTreeMap<String, PodMeta>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            pods_per_node: 2,
            identities: default_identities(),
            pods: BTreeMap::new(),
        }
    }
}

impl ClusterOptions {
    /// Adds an identity (e.g. one with no rights, to see RBAC refuse it).
    pub fn identity(mut self, id: Identity) -> Self {
        self.identities.push(id);
        self
    }

    /// Places lab pod `name` (e.g. `n1p1`) in `meta`'s namespace with its labels.
    pub fn pod(mut self, name: &str, meta: PodMeta) -> Self {
        self.pods.insert(name.to_string(), meta);
        self
    }
}

/// The lab plus the API server: nodes as Node objects, pods as Running Pod objects.
pub struct Cluster {
    /// Dropped first: the API server goes before the lab.
    pub api: ApiServer,
    pub lab: Lab,
    /// Lab pod name -> its placement, for every pod registered.
    pub pods: BTreeMap<String, PodMeta>,
    client: Client,
    rt: Rt,
}

impl Cluster {
    /// Builds the lab, starts the API server, registers both nodes, every pod (Running, with its
    /// IPv4 and IPv6 address), the `kubernetes` and kube-dns Services with EndpointSlices.
    pub fn up(prefix: &str, opts: ClusterOptions) -> Result<Cluster> {
        let lab = Lab::up(prefix, opts.pods_per_node)?;
        let api = ApiServer::start(prefix, opts.identities)?;
        let rt = Rt::new()?;
        let client = rt.block_on(api.client(ADMIN))?;
        let mut c = Cluster {
            api,
            lab,
            pods: BTreeMap::new(),
            client,
            rt,
        };
        c.register(&opts.pods)
            .with_context(|| format!("registering lab {prefix} in its API server"))?;
        Ok(c)
    }

    fn register(&mut self, placement: &BTreeMap<String, PodMeta>) -> Result<()> {
        for node in self.lab.nodes.clone() {
            self.block_on(register_node(&self.client, &node))?;
        }
        let port = i32::from(self.api.port);
        self.block_on(ensure_kubernetes_service(&self.client))?;
        self.set_endpoints(
            "default",
            "kubernetes",
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            &[("https", "TCP", port)],
        )?;
        self.block_on(create_dns_service(&self.client))?;
        self.set_endpoints(
            "kube-system",
            "kube-dns",
            &[DNS_ENDPOINT_IP.parse()?],
            &[
                ("dns", "UDP", 53),
                ("dns-tcp", "TCP", 53),
                ("metrics", "TCP", 9153),
            ],
        )?;
        let pods: Vec<lab::Pod> = self.lab.nodes.iter().flat_map(|n| n.pods.clone()).collect();
        for pod in pods {
            let meta = placement
                .get(&pod.name)
                .cloned()
                .unwrap_or_else(|| default_meta(&pod));
            self.register_pod(&pod, meta)?;
        }
        Ok(())
    }

    /// Runs a future on the library's runtime from sync or async code (e.g. with [`client`](Self::client)).
    pub fn block_on<F: Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        self.rt.block_on(f)
    }

    /// The admin client, bound to the library's runtime: use it inside [`block_on`](Self::block_on);
    /// from your own runtime, build one with `cluster.api.client(name).await`.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The kubeconfig of identity `name`.
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.api.kubeconfig(name)
    }

    /// Creates namespace `name` with `labels` (and `kubernetes.io/metadata.name`, as clusters
    /// since 1.21 do), or adds `labels` to it.
    pub fn ensure_namespace(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.block_on(ensure_namespace(&self.client, name, labels))
    }

    /// Sets the endpoints of Service `namespace/service` to `ips` with `ports` (name, protocol,
    /// port): the EndpointSlice `<service>` (`discovery.k8s.io/v1beta1`: 1.20 serves no v1) and,
    /// unless an address is loopback (which the Endpoints API refuses), the Endpoints `<service>`.
    pub fn set_endpoints(
        &self,
        namespace: &str,
        service: &str,
        ips: &[IpAddr],
        ports: &[(&str, &str, i32)],
    ) -> Result<()> {
        let ports: Vec<_> = ports
            .iter()
            .map(|(n, proto, p)| json!({"name": n, "protocol": proto, "port": p}))
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1beta1",
            "kind": "EndpointSlice",
            "metadata": {"name": service, "namespace": namespace,
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()],
                                                    "conditions": {"ready": true}}))
                            .collect::<Vec<_>>(),
            "ports": ports,
        });
        let gvk = GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "endpointslices");
        let slices: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        let apply = PatchParams::apply(MANAGER).force();
        self.block_on(slices.patch(service, &apply, &Patch::Apply(&slice)))
            .with_context(|| format!("applying EndpointSlice {namespace}/{service}"))?;
        if ips.iter().any(|ip| ip.is_loopback()) {
            return Ok(());
        }
        let eps = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": service, "namespace": namespace},
            "subsets": [{"addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                         "ports": ports}],
        });
        let endpoints: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        self.block_on(endpoints.patch(service, &apply, &Patch::Apply(&eps)))
            .with_context(|| format!("applying Endpoints {namespace}/{service}"))?;
        Ok(())
    }

    /// Playing kubelet for a new pod: its Pod object on its node, then the status a kubelet
    /// reports (Running, Ready, podIP/podIPs IPv4 and IPv6, hostIP).
    fn register_pod(&mut self, pod: &lab::Pod, meta: PodMeta) -> Result<()> {
        let node = self.lab.node(pod.node).clone();
        self.block_on(create_pod(&self.client, &node, pod, &meta))
            .with_context(|| format!("registering pod {}/{}", meta.namespace, pod.name))?;
        self.pods.insert(pod.name.clone(), meta);
        Ok(())
    }

    /// Adds a lab pod to node `n` (as a CNI ADD) and its Running Pod object in `meta`'s namespace.
    pub fn add_pod(&mut self, n: u8, meta: PodMeta) -> Result<lab::Pod> {
        let pod = self.lab.add_pod(n)?;
        self.register_pod(&pod, meta)?;
        Ok(pod)
    }

    /// Removes lab pod `name` of node `n` as a kubelet does: the Pod object is marked for deletion,
    /// the netns goes (CNI DEL), then the object is deleted.
    pub fn remove_pod(&mut self, n: u8, name: &str) -> Result<()> {
        let meta = self
            .pods
            .get(name)
            .cloned()
            .with_context(|| format!("no registered pod {name}"))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &meta.namespace);
        self.block_on(pods.delete(name, &DeleteParams::default()))
            .with_context(|| format!("deleting pod {}/{name}", meta.namespace))?;
        self.lab.remove_pod(n, name)?;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match self.block_on(pods.delete(name, &now)) {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(e).with_context(|| format!("deleting pod {}/{name}", meta.namespace));
            }
        }
        self.pods.remove(name);
        Ok(())
    }

    /// Leaves the lab, etcd and the API server up (`cargo xtask cluster up`); `down` removes them.
    pub fn keep(mut self) {
        self.api.keep();
        let Cluster { api, lab, .. } = self;
        lab.keep();
        drop(api);
    }
}

/// Fails when an API call did, naming the call.
fn ok_or_conflict<T>(r: kube::Result<T>, what: &str) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| what.to_string()),
    }
}

async fn ensure_namespace(
    client: &Client,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels}});
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
        .await
        .with_context(|| format!("applying namespace {name}"))?;
    Ok(())
}

async fn register_node(client: &Client, node: &lab::Node) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let obj: Node = serde_json::from_value(json!({
        "metadata": {"name": node.name, "labels": {
            "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating Node {}", node.name))?;
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": node.underlay_ip.to_string()},
                      {"type": "Hostname", "address": node.name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "the lab plays kubelet"}],
        "nodeInfo": {"kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                     "osImage": "injector lab (network namespaces)", "operatingSystem": "linux",
                     "architecture": go_arch(), "containerRuntimeVersion": "netns://",
                     "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("setting the status of Node {}", node.name))?;
    Ok(())
}

/// This machine's architecture as Kubernetes names it (GOARCH).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The `kubernetes` Service: the API server creates it shortly after start; created here if not.
async fn ensure_kubernetes_service(client: &Client) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if api.get_opt("kubernetes").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    }))?;
    ok_or_conflict(
        api.create(&PostParams::default(), &svc).await,
        "creating Service default/kubernetes",
    )
}

async fn create_dns_service(client: &Client) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": DNS_SERVICE_IP, "selector": {"k8s-app": "kube-dns"}, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
    }))?;
    ok_or_conflict(
        api.create(&PostParams::default(), &svc).await,
        "creating Service kube-system/kube-dns",
    )
}

async fn create_pod(
    client: &Client,
    node: &lab::Node,
    pod: &lab::Pod,
    meta: &PodMeta,
) -> Result<()> {
    ensure_namespace(client, &meta.namespace, &BTreeMap::new()).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &meta.namespace);
    let obj: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod.name, "labels": meta.labels,
                     "annotations": {"lab.injector.dev/netns": pod.netns}},
        "spec": {"nodeName": node.name, "containers": [{"name": "main", "image": "lab/netns"}]},
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .context("creating the Pod")?;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = json!({"status": {
        "phase": "Running",
        "hostIP": node.underlay_ip.to_string(),
        "podIP": pod.ip.to_string(),
        "podIPs": [{"ip": pod.ip.to_string()}, {"ip": pod.ip6.to_string()}],
        "startTime": now,
        "containerStatuses": [{"name": "main", "image": "lab/netns", "imageID": "", "ready": true,
                               "started": true, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}}],
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                       {"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
    }});
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("setting the Pod's status (Running, podIP, podIPs)")?;
    Ok(())
}

/// Stops what `cluster up` left of run `prefix` (the processes named by its pid files, the
/// directory) and tears its lab down. Idempotent.
pub fn down(prefix: &str) -> Result<()> {
    let dir = state_dir(prefix);
    let mut pids = Vec::new();
    for name in ["kube-apiserver", "etcd"] {
        if let Some(pid) = running_pid(&dir, name) {
            pids.push(pid);
        }
    }
    crate::proc::terminate_pids(&pids);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    lab::down(prefix)
}

/// The pid in `dir/<name>.pid` if that process is alive and runs `name`.
fn running_pid(dir: &Path, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    String::from_utf8_lossy(argv0)
        .ends_with(name)
        .then_some(pid)
}

/// What of cluster `prefix` runs: its processes, kubeconfigs, and the lab's status.
pub fn status(prefix: &str) -> Result<String> {
    let dir = state_dir(prefix);
    let mut s = String::new();
    if !dir.exists() {
        writeln!(s, "cluster {prefix}: down (no {})", dir.display())?;
    } else {
        writeln!(s, "cluster {prefix}: {}", dir.display())?;
        for name in ["etcd", "kube-apiserver"] {
            match running_pid(&dir, name) {
                Some(pid) => writeln!(s, "   {name}: running, pid {pid}")?,
                None => writeln!(
                    s,
                    "   {name}: not running (log: {}/{name}.log)",
                    dir.display()
                )?,
            }
        }
        let mut kcs: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kubeconfig-"))
            })
            .collect();
        kcs.sort();
        for kc in kcs {
            writeln!(s, "   kubectl --kubeconfig {}", kc.display())?;
        }
    }
    s.push_str(&lab::status(prefix)?);
    Ok(s)
}
