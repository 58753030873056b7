//! The `injector` binary: `injector daemon` (the node agent) and the CLI that talks to it. Parses,
//! dispatches, and maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser as _;
use injector::{
    cli::{
        self, Failure,
        args::{Cli, Cmd},
    },
    daemon,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Daemon(a) = cli.cmd {
        return match a.config(cli.socket).and_then(daemon::main) {
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
