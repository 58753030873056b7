//! The daemon's configuration, checked and resolved from its flags (`DaemonArgs::config` in
//! `cli/args.rs`) before anything is loaded: durations parsed, the API token read.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{kernel::attach::Roles, parse::Cidr};

pub struct Config {
    /// bpffs directory holding this instance's pins.
    pub bpffs: PathBuf,
    /// Interface name patterns to attach to.
    pub patterns: Vec<String>,
    pub roles: Roles,
    /// Faults lapse when the heartbeat is older than this.
    pub grace: Duration,
    /// The API's Unix socket (mode 0600).
    pub socket: PathBuf,
    /// An API listener on TCP, with its bearer token (read from `--api-token-file`).
    pub listen: Option<(SocketAddr, String)>,
    /// Where /metrics, /healthz, /readyz are served.
    pub metrics: Option<SocketAddr>,
    /// Protected destinations besides the node's own addresses: (CIDR, why).
    pub protect: Vec<(Cidr, String)>,
    /// Packets per second an fq must hold for the longest delay.
    pub fq_max_pps: u32,
    /// The skb->mark bit a delayed packet's clone carries on its way to fq (0: none).
    pub clone_mark: u32,
    /// Log as JSON lines.
    pub log_json: bool,
    /// The network namespace to enter first.
    pub netns: Option<String>,
    /// With a node name: reconcile NetworkFaults from the API server.
    pub kube: Option<super::reconcile::KubeConfig>,
}
