//! The `injector` binary: `injector daemon` (the node agent) and the CLI subcommands.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use injector::{DEFAULT_BPFFS, daemon, ifaces, local, parse};

#[derive(Parser)]
#[command(
    name = "injector",
    version,
    about = "eBPF network fault injector for Kubernetes workers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node agent: load the programs, attach to pod interfaces, keep the maps pinned.
    Daemon {
        /// bpffs directory for this instance's pins (one per daemon).
        #[arg(long, default_value = DEFAULT_BPFFS)]
        bpffs: PathBuf,
        /// Interface name pattern to attach to (repeatable; `*` and `?` wildcards).
        #[arg(long = "iface", default_values_t = ifaces::DEFAULT_PATTERNS.map(String::from))]
        ifaces: Vec<String>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
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
        /// Enter this network namespace first (a name under /run/netns, or a path). Unlike
        /// `ip netns exec` it keeps the host's /sys, so the pins land in the host's bpffs.
        #[arg(long)]
        netns: Option<String>,
    },
    /// Edit a running daemon's pinned maps on this node directly (first-light interface).
    Local {
        /// bpffs directory of the daemon.
        #[arg(long, default_value = DEFAULT_BPFFS, global = true)]
        bpffs: PathBuf,
        #[command(subcommand)]
        cmd: LocalCmd,
    },
}

#[derive(Subcommand)]
enum LocalCmd {
    /// Replace the whole fault set with the faults of a JSON file (`-` for stdin), atomically.
    Apply {
        #[arg(short = 'f', long = "file")]
        file: String,
    },
    /// Remove every fault.
    Clear,
    /// Disarm every fault in one write (`apply` re-arms).
    Abort,
    /// Print the faults' counters per hook and the per-hook counters.
    Stats {
        /// Label slots with the names in this fault file.
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Daemon {
            bpffs,
            ifaces,
            log_json,
            netns,
            bridge,
            overlay,
            xdp,
            grace,
        } => {
            init_logs(log_json);
            if let Some(ns) = netns {
                injector::netns::enter(&ns)?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let grace = parse::duration(
                "--grace",
                &grace,
                (Duration::from_secs(1), "1s"),
                (Duration::from_secs(3600), "1h"),
            )?;
            rt.block_on(daemon::run(daemon::Config {
                bpffs,
                patterns: ifaces,
                bridge,
                overlay,
                xdp,
                grace,
            }))
        }
        Cmd::Local { bpffs, cmd } => match cmd {
            LocalCmd::Apply { file } => local::apply(&bpffs, &file),
            LocalCmd::Clear => local::clear(&bpffs),
            LocalCmd::Abort => local::abort(&bpffs),
            LocalCmd::Stats { file } => local::stats(&bpffs, file.as_deref()),
        },
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("injector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
