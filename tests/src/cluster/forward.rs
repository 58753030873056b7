//! The API server at the same URL inside every lab node, like the local API load balancer a k3s
//! agent runs on 127.0.0.1: kube-apiserver listens on the host's loopback, which a node's netns
//! cannot reach, so
//!
//! - on the host, `socat UNIX-LISTEN:<dir>/apiserver.sock,fork,mode=600
//!   TCP:127.0.0.1:PORT,nodelay`, and
//! - in each node, `ip netns exec <netns> socat TCP-LISTEN:PORT,bind=127.0.0.1,fork,reuseaddr,nodelay
//!   UNIX-CONNECT:<dir>/apiserver.sock` (a path socket is reached from any netns).
//!
//! `nodelay` on both TCP ends: socat copies each read as a write, so a client's TLS Finished and
//! its first request reach the API server as two small writes, and with Nagle on socat's socket
//! the second waited for the delayed ACK of the first (~40 ms on every new connection, measured
//! in `cargo xtask bench --only cluster`); no such hop exists in a cluster.
//!
//! So `https://127.0.0.1:PORT` is the API server on the host and in every node: one kubeconfig
//! serves both, and the serving certificate (for 127.0.0.1) stays valid. TLS runs end to end;
//! socat only copies bytes. The forwarders are processes of the run like etcd (`socat.host`,
//! `socat.<node>` in [`super::procs`]).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::{
    apiserver::{ApiServer, http_status},
    procs::Proc,
};

fn socat() -> Result<PathBuf> {
    let p = PathBuf::from("/usr/bin/socat");
    anyhow::ensure!(
        p.exists(),
        "/usr/bin/socat not found: apt-get install socat (bash scripts/bootstrap.sh does)"
    );
    Ok(p)
}

impl ApiServer {
    /// The host end of the forwarders: a unix socket that connects to kube-apiserver.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("apiserver.sock")
    }

    /// Starts the host end (`socat.host`) and waits for its socket.
    pub(super) fn forward_host(&mut self) -> Result<()> {
        let sock = self.socket();
        let args = vec![
            format!("UNIX-LISTEN:{},fork,mode=600", sock.display()),
            format!("TCP:127.0.0.1:{},nodelay", self.port),
        ];
        let p = Proc::spawn("socat.host", &socat()?, &args, &self.dir)?;
        self.procs.push(p);
        self.wait(
            &format!("the forwarder's socket {}", sock.display()),
            Duration::from_secs(10),
            |_| Ok(sock.exists()),
        )
    }

    /// Makes the API server reachable at [`url`](Self::url) inside network namespace `netns`
    /// (its `lo` must be up, as the lab's nodes have it): starts `socat.<name>` there and waits
    /// until a request through it reaches kube-apiserver.
    pub fn forward_into(&mut self, name: &str, netns: &str) -> Result<()> {
        let args = vec![
            "netns".to_string(),
            "exec".into(),
            netns.into(),
            socat()?.display().to_string(),
            format!(
                "TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr,nodelay",
                self.port
            ),
            format!("UNIX-CONNECT:{}", self.socket().display()),
        ];
        let p = Proc::spawn(&format!("socat.{name}"), Path::new("ip"), &args, &self.dir)?;
        self.procs.push(p);
        let netns = netns.to_string();
        self.wait(
            &format!("the API server through the forwarder in {netns}"),
            Duration::from_secs(10),
            |api| Ok(api.reachable_from(&netns)),
        )
        .with_context(|| format!("forwarding the API server into {netns}"))
    }

    /// Whether kube-apiserver answers at 127.0.0.1:PORT from inside `netns` (or the host's netns
    /// for `""`): a plain HTTP request must reach a TLS server, which answers 400 ("Client sent
    /// an HTTP request to an HTTPS server"). False while the API server is stopped.
    pub fn reachable_from(&self, netns: &str) -> bool {
        let port = self.port;
        let probe = move || Ok(http_status(port, "/readyz") == Some(400));
        if netns.is_empty() {
            return probe().unwrap_or(false);
        }
        crate::traffic::in_netns(netns, probe).unwrap_or(false)
    }
}
