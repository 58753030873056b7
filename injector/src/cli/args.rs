//! The command line: every subcommand and flag of the one `injector` binary.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    DEFAULT_BPFFS, DEFAULT_SOCKET,
    daemon::{Config, reconcile::KubeConfig},
    fault::spec::FaultSpec,
    kernel::attach::Roles,
    net::ifaces,
    parse,
};

const EXAMPLES: &str = "\
Examples:
  injector fault add checkout-db --from 10.42.1.0/24 --to 10.42.2.7 --proto tcp --dport 5432 \\
      --delay 100ms --jitter 10ms --for 5m
  injector fault add lossy --to 10.42.2.0/24 --loss 5% --flows 20% --seed 7 --both-ways
  injector fault add refuse-db --to 10.42.2.7 --proto tcp --dport 5432 --reject   # fast failure
  injector fault add dup --to 10.42.2.0/24 --duplicate 5%   # or --corrupt 1%; one action a fault
  injector fault add bursty --to 10.42.2.7 --loss 5% --burst 4        # losses in bursts of 4 on average
  injector fault add slow --to 10.42.2.7 --loss 1% --delay 50ms --reorder 25%   # loss and delay combine
  injector fault add flap --to 10.42.2.7 --blackhole --pulse 10s/30s --for 10m  # 10 s of every 30 s
  injector apply -f faults.yaml            # several faults, YAML or JSON (`-f -`: stdin)
  injector fault ls -o table               # or -o json / -o yaml
  injector top                             # live counters and rates per fault
  injector abort                           # every fault off, one map write
  injector experiment run -f exp.yaml --daemon /run/n1.sock --daemon /run/n2.sock
  injector experiment run -f k8s-exp.yaml --kubeconfig ~/.kube/config -n shop   # targets: kubernetes
  injector status --addr 10.0.0.5:7070 --token-file /etc/injector/token";

#[derive(Parser)]
#[command(name = "injector", version, about = "eBPF network fault injector for Kubernetes workers", after_help = EXAMPLES)]
pub struct Cli {
    /// The daemon's API socket (where `injector daemon` serves it, and where the CLI asks).
    #[arg(long, global = true, env = "INJECTOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// How a CLI command reaches a daemon over TCP: flags of the commands that talk to the API
/// only (global within each, so `injector fault ls --addr ...` works), never of `daemon`.
#[derive(Args, Clone, Debug, Default)]
pub struct ClientArgs {
    /// Reach the daemon over TCP instead of --socket (HOST:PORT); needs --token-file.
    #[arg(long, global = true, env = "INJECTOR_ADDR")]
    pub addr: Option<String>,
    /// File holding the bearer token for --addr.
    #[arg(long, global = true, env = "INJECTOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Clone, Copy)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the node agent: load the programs, attach to pod interfaces, serve the API and metrics.
    Daemon(Box<DaemonArgs>),
    /// Manage faults one by one.
    Fault {
        #[command(subcommand)]
        cmd: FaultCmd,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Add the faults of a YAML or JSON file (`-f -` for stdin): a list, {faults: [...]}, or one.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Allow faults that reach protected targets.
        #[arg(long)]
        force: bool,
        /// Replace faults of the same name instead of refusing them.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Disarm every fault at once (one map write); `injector arm` or a new fault re-arms.
    Abort {
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Re-arm the faults after an abort.
    Arm {
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// The daemon's status: kernel features, interfaces, faults with remaining time.
    Status {
        #[command(flatten)]
        out: OutputArg,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// A live view of every fault's counters and rates, refreshed in place.
    Top {
        /// Time between refreshes.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u32>,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Chaos experiments: a hypothesis, steady-state probes, ramped faults, automatic abort, a
    /// report (docs/experiments.md).
    Experiment {
        #[command(subcommand)]
        cmd: ExperimentCmd,
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Shell completions: `injector completions bash > /etc/bash_completion.d/injector`.
    Completions { shell: clap_complete::Shell },
    /// Print the NetworkFault CRD (YAML): `injector crd | kubectl apply -f -`.
    Crd,
    /// A daemon's pinned maps on this node, directly (works when the daemon does not).
    Local {
        /// bpffs directory of the daemon.
        #[arg(long, default_value = DEFAULT_BPFFS, global = true)]
        bpffs: PathBuf,
        #[command(subcommand)]
        cmd: LocalCmd,
    },
}

impl Cmd {
    /// The TCP flags of a command that talks to the daemon's API; `None` for the others.
    pub fn client(&self) -> Option<&ClientArgs> {
        match self {
            Cmd::Fault { conn, .. }
            | Cmd::Apply { conn, .. }
            | Cmd::Abort { conn, .. }
            | Cmd::Arm { conn, .. }
            | Cmd::Status { conn, .. }
            | Cmd::Top { conn, .. }
            | Cmd::Experiment { conn, .. } => Some(conn),
            Cmd::Daemon(_) | Cmd::Completions { .. } | Cmd::Crd | Cmd::Local { .. } => None,
        }
    }
}

#[derive(Subcommand)]
pub enum FaultCmd {
    /// Add one fault from flags.
    #[command(after_help = EXAMPLES)]
    Add(Box<AddArgs>),
    /// List the faults with their counters.
    Ls {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show one fault.
    Get {
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Delete faults by name, or all of them.
    Rm {
        names: Vec<String>,
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
}

/// `fault add`: the fault's fields are [`FaultSpec`]'s own (one definition for files, the API and
/// these flags: a new field of the fault model is a new flag with no code here).
#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub spec: FaultSpec,
    /// Allow a fault that reaches protected targets.
    #[arg(long)]
    pub force: bool,
    /// Replace a fault of the same name.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub out: OutputArg,
}

#[derive(Subcommand)]
pub enum ExperimentCmd {
    /// Run an experiment file (YAML or JSON): the steady state before, each step's faults on
    /// every daemon while the probes run, abort when a rule holds, recovery, the report.
    Run {
        /// The experiment file, YAML or JSON (`-`: stdin).
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Check the file, the daemons and the steady state; start nothing.
        #[arg(long)]
        dry_run: bool,
        /// A daemon to drive, one per node (repeatable): its socket path, or HOST:PORT with
        /// --token-file. Default: --socket (or --addr).
        #[arg(long = "daemon")]
        daemons: Vec<String>,
        /// The report's path: PATH.json and PATH.html are written.
        #[arg(long, default_value = "experiment-report")]
        report: PathBuf,
        /// With `targets: kubernetes` in the file: the cluster, as kubectl finds it.
        #[command(flatten)]
        cluster: crate::kubectl::args::ConnArgs,
    },
    /// Render the HTML report again from its JSON.
    Report {
        file: PathBuf,
        /// Where the HTML goes (default: FILE with .html).
        #[arg(short = 'o', long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum LocalCmd {
    /// Print the counters straight from the pinned maps.
    Stats,
    /// Disarm every fault with one write to the pinned maps, without the daemon.
    Abort,
}

#[derive(Args)]
pub struct DaemonArgs {
    /// bpffs directory for this instance's pins (one per daemon).
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Interface name pattern to attach to (repeatable; `*` and `?` wildcards).
    #[arg(long = "iface", default_values_t = ifaces::DEFAULT_PATTERNS.map(String::from))]
    pub ifaces: Vec<String>,
    /// The bridge of the pod veths (its hooks only count).
    #[arg(long, default_value = "cni0")]
    pub bridge: String,
    /// The overlay device towards other nodes (judges traffic leaving for them).
    #[arg(long, default_value = "flannel.1")]
    pub overlay: String,
    /// Also judge drop/blackhole in XDP on the pod veths (the cheapest drop).
    #[arg(long)]
    pub xdp: bool,
    /// Also count what the bridge and the overlay's ingress forward (the "observe" hook's
    /// counters): one more program run per packet at each, so off by default.
    #[arg(long)]
    pub observe: bool,
    /// Faults lapse when the daemon's heartbeat is older than this (e.g. 30s).
    #[arg(long, default_value = "30s")]
    pub grace: String,
    /// Also serve the API on TCP at this address; requires --api-token-file.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Bearer token (at least 16 characters) for --listen.
    #[arg(long, requires = "listen")]
    pub api_token_file: Option<PathBuf>,
    /// Where /metrics, /healthz and /readyz are served ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub metrics_addr: String,
    /// A destination no fault may touch unless forced, besides the node's own addresses
    /// (repeatable): CIDR or CIDR=why, e.g. 10.43.0.10/32=cluster-dns.
    #[arg(long = "protect")]
    pub protect: Vec<String>,
    /// Packets per second one device's fq must hold for the longest delay (sizes its limit).
    #[arg(long, default_value_t = 100_000)]
    pub fq_max_pps: u32,
    /// The skb->mark bit a delayed packet's clone carries between its redirect and our egress
    /// program (one bit; 0: none). Pick one your CNI and kube-proxy leave alone.
    #[arg(long, default_value = "0x2000", value_parser = crate::kernel::programs::parse_clone_mark)]
    pub clone_mark: u32,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Enter this network namespace first (a name under /run/netns, or a path). Unlike
    /// `ip netns exec` it keeps the host's /sys, so the pins land in the host's bpffs.
    #[arg(long)]
    pub netns: Option<String>,
    /// This node's name: with it the daemon reconciles NetworkFaults from the API server
    /// (the DaemonSet sets it from the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Reach the API server with this kubeconfig (default: the pod's service account).
    #[arg(long, env = "KUBECONFIG", requires = "node_name")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the status writer's Lease (the daemon's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "injector")]
    pub lease_namespace: String,
    /// The daemon's own pod (the DaemonSet sets it from the downward API's metadata.name): on
    /// SIGTERM, if the pod's DaemonSet stays, the faults are left for its next pod to adopt.
    #[arg(long, env = "POD_NAME", requires = "node_name")]
    pub pod_name: Option<String>,
    /// How often the node's InjectorNode report is written (besides on changes).
    #[arg(long, default_value = "10s")]
    pub report_interval: String,
}

impl DaemonArgs {
    /// The daemon's configuration: every flag checked, the API token read; errors name the flag.
    /// `socket` is the global `--socket` (the CLI's too).
    pub fn config(self, socket: PathBuf) -> anyhow::Result<Config> {
        let grace = parse::duration(
            "--grace",
            &self.grace,
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(3600), "1h"),
        )?;
        let metrics = match self.metrics_addr.as_str() {
            "off" => None,
            m => Some(m.parse::<SocketAddr>().map_err(|_| {
                anyhow!("--metrics-addr: '{m}' is not HOST:PORT (e.g. 0.0.0.0:9464) or off")
            })?),
        };
        let protect = self
            .protect
            .iter()
            .map(|p| {
                let (c, why) = p.split_once('=').unwrap_or((p, "configured"));
                Ok((parse::cidr("--protect", c)?, why.to_string()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listen = match (self.listen, &self.api_token_file) {
            (Some(l), Some(f)) => Some((l, read_token(f)?)),
            (Some(_), None) => bail!(
                "--listen: a TCP API needs --api-token-file FILE (a bearer token of at least 16 characters)"
            ),
            _ => None,
        };
        let kube = match self.node_name {
            Some(node_name) => Some(KubeConfig {
                node_name,
                kubeconfig: self.kubeconfig,
                lease_namespace: self.lease_namespace,
                pod_name: self.pod_name,
                report_interval: parse::duration(
                    "--report-interval",
                    &self.report_interval,
                    (Duration::from_secs(1), "1s"),
                    (Duration::from_secs(3600), "1h"),
                )?,
            }),
            None => None,
        };
        Ok(Config {
            kube,
            bpffs: self.bpffs,
            patterns: self.ifaces,
            roles: Roles {
                bridge: self.bridge,
                overlay: self.overlay,
                xdp: self.xdp,
                observe: self.observe,
            },
            grace,
            socket,
            listen,
            metrics,
            protect,
            fq_max_pps: self.fq_max_pps,
            clone_mark: self.clone_mark,
            log_json: self.log_json,
            netns: self.netns,
        })
    }
}

/// The bearer token of `--api-token-file`: the file's text, trimmed, at least 16 characters.
fn read_token(f: &std::path::Path) -> anyhow::Result<String> {
    let t = crate::secret::read_token("--api-token-file", f).map_err(anyhow::Error::msg)?;
    if t.len() < 16 {
        bail!(
            "--api-token-file: the token in {} is {} characters; use at least 16",
            f.display(),
            t.len()
        );
    }
    Ok(t)
}
