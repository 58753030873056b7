//! etcd and kube-apiserver of one run on the host's loopback (TLS, static tokens, RBAC), stopped
//! and restarted at will, and reachable at the same URL from inside every lab node through
//! [`super::forward`]'s forwarders.

use std::{
    future::Future,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{
    ADMIN, SERVICE_CIDR,
    pki::{Identity, kubeconfig_yaml, make_pki, tokens_csv},
    procs::{Proc, log_tail, state_dir},
};

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `scripts/build-k8s.sh [--check] components...`: the paths it prints (one a component, in
/// order), and its exit code (3: `--check` found one missing).
fn build_script(check: bool, components: &[&str]) -> Result<(Option<i32>, Vec<PathBuf>)> {
    let script = workspace_root().join("scripts/build-k8s.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(check.then_some("--check"))
        .args(components)
        .stderr(if check {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .output()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<PathBuf> = stdout.lines().map(|l| PathBuf::from(l.trim())).collect();
    if !matches!(out.status.code(), Some(0 | 3)) || paths.len() != components.len() {
        bail!(
            "{} {} failed ({}): {}",
            script.display(),
            components.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((out.status.code(), paths))
}

/// The cached binaries of Kubernetes `components` (`kube-apiserver`, `kubelet`, `pause`, ... see
/// scripts/build-k8s.sh) for the current Debian source version. Fails with the fix when one is
/// not built yet.
pub fn k8s_bins(components: &[&str]) -> Result<Vec<PathBuf>> {
    match build_script(true, components)? {
        (Some(0), paths) => Ok(paths),
        (_, paths) => {
            let missing: Vec<String> = paths
                .iter()
                .filter(|p| !p.exists())
                .map(|p| p.display().to_string())
                .collect();
            bail!(
                "{} not built: run `cargo xtask node build` (minutes, once per machine; `cargo xtask test` does it)",
                missing.join(", ")
            )
        }
    }
}

/// Builds `components` into the cache unless they are there (minutes once; then a no-op);
/// returns their paths.
pub fn build_k8s(components: &[&str]) -> Result<Vec<PathBuf>> {
    build_script(false, components).map(|(_, p)| p)
}

/// The kube-apiserver binary: `$INJECTOR_KUBE_APISERVER`, or the one cached for the current
/// Debian source version. Fails with the fix (`cargo xtask cluster build`) when not built yet.
pub fn kube_apiserver_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("INJECTOR_KUBE_APISERVER") {
        return Ok(PathBuf::from(p));
    }
    match build_script(true, &["kube-apiserver"])? {
        (Some(0), mut paths) => Ok(paths.remove(0)),
        (_, paths) => bail!(
            "{} is not built: run `cargo xtask cluster build` (about 5 minutes, once per machine; `cargo xtask test` does it)",
            paths[0].display()
        ),
    }
}

/// Builds kube-apiserver into the cache unless it is there (about 5 minutes once; then a no-op);
/// returns its path.
pub fn build_kube_apiserver() -> Result<PathBuf> {
    build_k8s(&["kube-apiserver"]).map(|mut p| p.remove(0))
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

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a free loopback port")?
        .local_addr()?
        .port())
}

/// The status code of `GET path` over plain HTTP/1.0 to 127.0.0.1:`port`, from the calling
/// thread's network namespace; None when nothing answers.
pub(super) fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    // Whatever came before a timeout or reset is enough: the status line comes first.
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    if !resp.starts_with("HTTP/1.") {
        return None;
    }
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// A tokio runtime of our own, so the library's calls are plain functions that work from sync
/// tests and from async ones (each call blocks on a scoped thread, never inside the caller's runtime).
pub(crate) struct Rt(tokio::runtime::Runtime);

impl Rt {
    pub(crate) fn new() -> Result<Rt> {
        Ok(Rt(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building a tokio runtime")?))
    }

    pub(crate) fn block_on<F: Future + Send>(&self, f: F) -> F::Output
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

/// etcd and kube-apiserver of one run, on loopback ports chosen for it, and the forwarders that
/// make it reachable at the same URL inside the lab's nodes ([`super::forward`]).
pub struct ApiServer {
    pub prefix: String,
    /// `/tmp/<prefix>-cluster`.
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`, on the host and inside every node it was forwarded into.
    pub url: String,
    pub port: u16,
    pub identities: Vec<Identity>,
    /// Started in this order; killed in the reverse order.
    pub(super) procs: Vec<Proc>,
    /// kube-apiserver and its arguments, for [`restart`](Self::restart).
    kas: (PathBuf, Vec<String>),
    keep: bool,
}

/// The name (pid and log files) of the kube-apiserver process.
const KAS: &str = "kube-apiserver";

impl ApiServer {
    /// Starts etcd, then kube-apiserver (TLS, `identities` as static tokens, RBAC), writes a
    /// kubeconfig per identity, and returns once `/readyz` answers, with the host end of the
    /// forwarders listening ([`socket`](Self::socket)). On error, what was started is stopped
    /// and the directory removed.
    pub fn start(prefix: &str, identities: Vec<Identity>) -> Result<ApiServer> {
        Self::start_with(prefix, identities, &[])
    }

    /// [`start`](Self::start) with `extra` arguments, each replacing the default of its name: a
    /// real node's API server admits service accounts, for one.
    pub fn start_with(
        prefix: &str,
        identities: Vec<Identity>,
        extra: &[String],
    ) -> Result<ApiServer> {
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
            kas: (kas, Vec::new()),
            keep: false,
        };
        api.boot(&etcd, extra)
            .with_context(|| format!("starting the API server of {prefix}"))?;
        Ok(api)
    }

    fn boot(&mut self, etcd: &Path, extra: &[String]) -> Result<()> {
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
            Ok(http_status(client_port, "/health") == Some(200))
        })?;
        let p = |f: &str| pki.join(f).display().to_string();
        self.kas.1 = vec![
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
        // A flag in `extra` replaces the default of that name (list flags would append).
        let name = |a: &str| a.split('=').next().unwrap_or(a).to_string();
        let replaced: Vec<String> = extra.iter().map(|a| name(a)).collect();
        self.kas.1.retain(|a| !replaced.contains(&name(a)));
        self.kas.1.extend_from_slice(extra);
        self.spawn_kas()?;
        for id in &self.identities {
            std::fs::write(
                self.kubeconfig(&id.name),
                kubeconfig_yaml(&self.url, &pki.join("ca.crt"), id),
            )?;
        }
        self.wait_ready()?;
        self.forward_host()
    }

    fn spawn_kas(&mut self) -> Result<()> {
        let (bin, args) = &self.kas;
        let p = Proc::spawn(KAS, bin, args, &self.dir)?;
        self.procs.push(p);
        Ok(())
    }

    /// Waits until kube-apiserver's `/readyz` says ok to the admin.
    fn wait_ready(&mut self) -> Result<()> {
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
    pub(super) fn wait(
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

    /// Whether kube-apiserver runs (it does unless [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.procs.iter().any(|p| p.name == KAS)
    }

    /// Kills kube-apiserver (SIGKILL, as a crash or a lost control plane); etcd keeps the data,
    /// the forwarders keep listening (a connection through them is then closed at once).
    pub fn stop(&mut self) -> Result<()> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == KAS)
            .context("kube-apiserver is not running")?;
        self.procs.remove(i).kill();
        Ok(())
    }

    /// Starts kube-apiserver again after [`stop`](Self::stop): same port, certificates, tokens
    /// and etcd; returns once `/readyz` answers.
    pub fn restart(&mut self) -> Result<()> {
        ensure!(
            !self.is_running(),
            "kube-apiserver is running: stop() it first"
        );
        self.spawn_kas()?;
        self.wait_ready()
            .with_context(|| format!("restarting the API server of {}", self.prefix))
    }

    /// The kubeconfig of identity `name` (for `kubectl --kubeconfig` and kube-rs), valid on the
    /// host and inside the lab's nodes.
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

    /// Pids of every process of the run: etcd, kube-apiserver (unless stopped), the forwarders.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Leaves every process and the directory when this value is dropped (`cluster up`).
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
