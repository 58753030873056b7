//! The `injector` binary: `injector daemon` (the node agent) and the CLI that talks to it.
//!
//! Exit codes: 0 done; 1 the daemon refused the request (bad input, conflict, not found) or a
//! local failure; 2 bad command-line usage; 3 the daemon cannot be reached.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use injector::{
    DEFAULT_BPFFS, DEFAULT_SOCKET,
    attach::Roles,
    client::{ClientError, Endpoint},
    daemon, ifaces, local, parse,
};

#[derive(Parser)]
#[command(
    name = "injector",
    version,
    about = "eBPF network fault injector for Kubernetes workers"
)]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "INJECTOR_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Reach the daemon over TCP instead (HOST:PORT); needs --token-file.
    #[arg(long, global = true, env = "INJECTOR_ADDR")]
    addr: Option<String>,
    /// File holding the bearer token for --addr.
    #[arg(long, global = true, env = "INJECTOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node agent: load the programs, attach to pod interfaces, serve the API and metrics.
    Daemon(Box<DaemonArgs>),
    /// Manage faults.
    Fault {
        #[command(subcommand)]
        cmd: FaultCmd,
    },
    /// Disarm every fault at once (one map write); `injector arm` or a new fault re-arms.
    Abort,
    /// Re-arm the faults after an abort.
    Arm,
    /// The daemon's status: kernel features, interfaces, faults with remaining time.
    Status,
    /// A daemon's pinned maps on this node, directly (works when the daemon does not).
    Local {
        /// bpffs directory of the daemon.
        #[arg(long, default_value = DEFAULT_BPFFS, global = true)]
        bpffs: PathBuf,
        #[command(subcommand)]
        cmd: LocalCmd,
    },
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// bpffs directory for this instance's pins (one per daemon).
    #[arg(long, default_value = DEFAULT_BPFFS)]
    bpffs: PathBuf,
    /// Interface name pattern to attach to (repeatable; `*` and `?` wildcards).
    #[arg(long = "iface", default_values_t = ifaces::DEFAULT_PATTERNS.map(String::from))]
    ifaces: Vec<String>,
    /// The bridge of the pod veths (its hooks only count).
    #[arg(long, default_value = "cni0")]
    bridge: String,
    /// The overlay device towards other nodes (judges traffic leaving for them).
    #[arg(long, default_value = "flannel.1")]
    overlay: String,
    /// Also judge drop/blackhole in XDP on the pod veths (the cheapest drop).
    #[arg(long)]
    xdp: bool,
    /// Faults lapse when the daemon's heartbeat is older than this (e.g. 30s).
    #[arg(long, default_value = "30s")]
    grace: String,
    /// Also serve the API on TCP at this address; requires --api-token-file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Bearer token (at least 16 characters) for --listen.
    #[arg(long, requires = "listen")]
    api_token_file: Option<PathBuf>,
    /// Where /metrics, /healthz and /readyz are served ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:9464")]
    metrics_addr: String,
    /// A destination no fault may touch unless forced, besides the node's own addresses
    /// (repeatable): CIDR or CIDR=why, e.g. 10.43.0.10/32=cluster-dns.
    #[arg(long = "protect")]
    protect: Vec<String>,
    /// Packets per second one device's fq must hold for the longest delay (sizes its limit).
    #[arg(long, default_value_t = 100_000)]
    fq_max_pps: u32,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Enter this network namespace first (a name under /run/netns, or a path). Unlike
    /// `ip netns exec` it keeps the host's /sys, so the pins land in the host's bpffs.
    #[arg(long)]
    netns: Option<String>,
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Add the faults of a JSON file (`-` for stdin): a fault, a list, or {"faults": [...]}.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: String,
        /// Allow faults that reach protected targets.
        #[arg(long)]
        force: bool,
        /// Replace faults of the same name instead of refusing them.
        #[arg(long)]
        replace: bool,
    },
    /// List the faults with their counters.
    Ls,
    /// Show one fault.
    Get { name: String },
    /// Delete faults by name, or all of them.
    Rm {
        names: Vec<String>,
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
}

#[derive(Subcommand)]
enum LocalCmd {
    /// Print the counters straight from the pinned maps.
    Stats,
    /// Disarm every fault with one write to the pinned maps, without the daemon.
    Abort,
}

/// A failure, with the exit code it maps to.
struct Failure(u8, String);

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure(1, format!("{e:#}"))
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = if matches!(e, ClientError::Unreachable { .. }) {
            3
        } else {
            1
        };
        Failure(code, e.to_string())
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
}

fn endpoint(cli: &Cli) -> Result<Endpoint, Failure> {
    match &cli.addr {
        None => Ok(Endpoint::Unix(cli.socket.clone())),
        Some(addr) => {
            let f = cli.token_file.as_ref().ok_or_else(|| {
                Failure(
                    2,
                    "--addr: a TCP daemon needs --token-file FILE with its bearer token".into(),
                )
            })?;
            let token = std::fs::read_to_string(f).map_err(|e| {
                Failure(1, format!("--token-file: cannot read {}: {e}", f.display()))
            })?;
            Ok(Endpoint::Tcp {
                addr: addr.clone(),
                token: token.trim().to_string(),
            })
        }
    }
}

/// One API call; prints the JSON body on success, fails with the daemon's message otherwise.
fn call(ep: &Endpoint, method: &str, path: &str, body: Option<&str>) -> Result<(), Failure> {
    let r = ep.request(method, path, body)?;
    if (200..300).contains(&r.status) {
        let pretty = serde_json::from_str::<serde_json::Value>(&r.body)
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or(r.body);
        println!("{pretty}");
        Ok(())
    } else {
        Err(Failure(1, r.error_message()))
    }
}

fn read_input(path: &str) -> Result<String, Failure> {
    use std::io::Read as _;
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure(1, format!("-f -: reading stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure(1, format!("-f: cannot read {path}: {e}")))
    }
}

fn daemon_main(a: DaemonArgs, socket: PathBuf) -> anyhow::Result<()> {
    init_logs(a.log_json);
    let grace = parse::duration(
        "--grace",
        &a.grace,
        (Duration::from_secs(1), "1s"),
        (Duration::from_secs(3600), "1h"),
    )?;
    let metrics = match a.metrics_addr.as_str() {
        "off" => None,
        m => Some(m.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!("--metrics-addr: '{m}' is not HOST:PORT (e.g. 0.0.0.0:9464) or off")
        })?),
    };
    let protect = a
        .protect
        .iter()
        .map(|p| {
            let (c, why) = p.split_once('=').unwrap_or((p, "configured"));
            Ok((parse::cidr("--protect", c)?, why.to_string()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let listen = match (a.listen, a.api_token_file) {
        (Some(l), Some(t)) => Some((l, t)),
        (Some(_), None) => anyhow::bail!(
            "--listen: a TCP API needs --api-token-file FILE (a bearer token of at least 16 characters)"
        ),
        _ => None,
    };
    if let Some(ns) = &a.netns {
        injector::netns::enter(ns)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(daemon::Config {
        bpffs: a.bpffs,
        patterns: a.ifaces,
        roles: Roles {
            bridge: a.bridge,
            overlay: a.overlay,
            xdp: a.xdp,
        },
        grace,
        socket,
        listen,
        metrics,
        protect,
        fq_max_pps: a.fq_max_pps,
    }))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::Daemon(_) => unreachable!("handled in main"),
        Cmd::Local { bpffs, cmd } => match cmd {
            LocalCmd::Stats => Ok(local::stats(bpffs)?),
            LocalCmd::Abort => Ok(local::abort(bpffs)?),
        },
        Cmd::Fault { cmd } => {
            let ep = endpoint(&cli)?;
            match cmd {
                FaultCmd::Apply {
                    file,
                    force,
                    replace,
                } => {
                    let body = read_input(file)?;
                    // Checked here too, so a typo fails before the daemon is asked.
                    injector::fault::spec::parse_list(&body)
                        .map_err(|e| Failure(1, format!("-f {file}: {e}")))?;
                    call(
                        &ep,
                        "POST",
                        &format!("/v1/faults?force={force}&replace={replace}"),
                        Some(&body),
                    )
                }
                FaultCmd::Ls => call(&ep, "GET", "/v1/faults", None),
                FaultCmd::Get { name } => call(&ep, "GET", &format!("/v1/faults/{name}"), None),
                FaultCmd::Rm { names, all } => {
                    if *all {
                        return call(&ep, "DELETE", "/v1/faults", None);
                    }
                    if names.is_empty() {
                        return Err(Failure(
                            2,
                            "fault rm: name the faults to delete, or --all".into(),
                        ));
                    }
                    names
                        .iter()
                        .try_for_each(|n| call(&ep, "DELETE", &format!("/v1/faults/{n}"), None))
                }
            }
        }
        Cmd::Abort => call(&endpoint(&cli)?, "POST", "/v1/abort", None),
        Cmd::Arm => call(&endpoint(&cli)?, "POST", "/v1/arm", None),
        Cmd::Status => call(&endpoint(&cli)?, "GET", "/v1/status", None),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Daemon(_) = cli.cmd {
        let Cmd::Daemon(a) = cli.cmd else {
            unreachable!()
        };
        return match daemon_main(*a, cli.socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("injector daemon: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("injector: {msg}");
            ExitCode::from(code)
        }
    }
}
