//! The `injector` binary: `injector daemon` (the node agent) and the CLI that talks to it.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser as _;
use injector::{
    cli::{
        self, Failure,
        args::{Cli, Cmd, DaemonArgs},
    },
    daemon,
    kernel::attach::Roles,
    parse,
};

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
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
        injector::net::netns::enter(ns)?;
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
        clone_mark: a.clone_mark,
    }))
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
    // The CLI behaves like other Unix tools in a pipeline (`injector fault ls | head`): a closed
    // pipe ends it quietly. (The daemon keeps Rust's default of ignoring SIGPIPE.)
    // SAFETY: setting a signal disposition before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("injector: {msg}");
            ExitCode::from(code)
        }
    }
}
