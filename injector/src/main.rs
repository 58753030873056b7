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
    /// Drop every packet to a destination prefix until a deadline.
    AddDrop {
        /// Destination IP or CIDR, e.g. 10.42.2.7 or 10.42.2.0/24.
        #[arg(long)]
        to: String,
        /// Lifetime: the kernel ignores the entry after it (250ms, 30s, 5m, 1h; at most 24h).
        #[arg(long = "for", default_value = "5m")]
        lifetime: String,
    },
    /// Remove a drop entry.
    RmDrop {
        #[arg(long)]
        to: String,
    },
    /// Print the entries and the per-hook counters.
    Stats,
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
        } => {
            init_logs(log_json);
            if let Some(ns) = netns {
                injector::netns::enter(&ns)?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(daemon::run(daemon::Config {
                bpffs,
                patterns: ifaces,
            }))
        }
        Cmd::Local { bpffs, cmd } => match cmd {
            LocalCmd::AddDrop { to, lifetime } => {
                let to = parse::cidr("--to", &to)?;
                let d = parse::duration(
                    "--for",
                    &lifetime,
                    (Duration::from_millis(1), "1ms"),
                    (Duration::from_secs(86400), "24h"),
                )?;
                local::add_drop(&bpffs, to, d)
            }
            LocalCmd::RmDrop { to } => local::rm_drop(&bpffs, parse::cidr("--to", &to)?),
            LocalCmd::Stats => local::stats(&bpffs),
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
