//! `kubectl injector`, the kubectl plugin: NetworkFaults from flags or files, listed with every
//! node's counters, deleted, and the cluster-wide abort; in the current kubeconfig context.
//!
//! Exit codes: 0 done; 1 refused (bad flag or field, conflict, not found, API server unreachable);
//! 2 bad command-line usage (clap's).

pub mod apply;
pub mod args;
mod cmd;
pub mod conn;
pub mod fault;
pub mod target;
pub mod view;

#[cfg(test)]
mod tests;

use std::process::ExitCode;

use clap::Parser as _;

use self::args::{Cli, Cmd, FaultCmd};
use crate::cli::Failure;

/// The field manager of every write (create, server-side apply).
pub const MANAGER: &str = "kubectl-injector";

/// The plugin's `main`: parse, run, print the error and map it to the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Quiet in a pipeline (`kubectl injector ls | head`).
    // SAFETY: setting a signal disposition before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("kubectl injector: {msg}");
            ExitCode::from(code)
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(1, format!("starting the runtime: {e}")))?;
    rt.block_on(async {
        match &cli.cmd {
            Cmd::Crd => {
                print!("{}", crate::k8s::crd_yaml());
                Ok(())
            }
            Cmd::Fault {
                cmd: FaultCmd::Add(a),
            } => cmd::add(&cli.conn, a).await,
            Cmd::Ls(a)
            | Cmd::Fault {
                cmd: FaultCmd::Ls(a),
            } => cmd::ls(&cli.conn, a).await,
            Cmd::Get(a)
            | Cmd::Fault {
                cmd: FaultCmd::Get(a),
            } => cmd::get(&cli.conn, a).await,
            Cmd::Rm(a)
            | Cmd::Fault {
                cmd: FaultCmd::Rm(a),
            } => cmd::rm(&cli.conn, a).await,
            Cmd::Apply(a) => {
                let text = crate::cli::read_input(&a.file)?;
                let conn = conn::Conn::new(&cli.conn).await?;
                let src = if a.file == "-" { "stdin" } else { &a.file };
                let faults =
                    apply::parse(src, &text, &conn.namespace, cli.conn.namespace.is_some())
                        .map_err(|e| Failure(1, e))?;
                apply::apply(&conn, &faults, a.force_conflicts).await
            }
            Cmd::Abort(a) => cmd::abort(&cli.conn, a).await,
        }
    })
}
