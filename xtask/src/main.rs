//! `cargo xtask`: the project's own commands. `test` runs every check CI runs; `demo` runs the
//! main job on the lab; `lab up|down|status` drives the two-node lab by hand.

mod demo;
mod test;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use injector_tests::lab;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks to build and test (idempotent).
    Bootstrap,
    /// Every check CI runs: fmt, clippy, unit tests, privileged lab and BPF tests.
    Test {
        /// Only the unprivileged checks (fmt, clippy, unit tests).
        #[arg(long)]
        unprivileged: bool,
    },
    /// The main job: lab up, daemons on both nodes, a drop between two pods shown, all torn down.
    Demo,
    /// The two-node flannel lab in network namespaces.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab and leave it up.
    Up {
        #[arg(long, default_value = "lab")]
        prefix: String,
        #[arg(long, default_value_t = 2)]
        pods: u8,
    },
    /// Tear the lab down: processes, namespaces, links, bpffs pins.
    Down {
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// Show what of the lab exists.
    Status {
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
}

/// The workspace root (xtask's parent directory).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, inheriting stdio; fails unless it exits 0.
pub fn sh(prog: &str, args: &[&str]) -> Result<()> {
    eprintln!("+ {prog} {}", args.join(" "));
    let st = Command::new(prog)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {prog}"))?;
    if !st.success() {
        bail!("`{prog} {}` failed: {st}", args.join(" "));
    }
    Ok(())
}

pub fn bootstrap() -> Result<()> {
    sh("bash", &["scripts/bootstrap.sh"])
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Bootstrap => bootstrap(),
        Cmd::Test { unprivileged } => test::run(unprivileged),
        Cmd::Demo => demo::run(),
        Cmd::Lab { cmd } => match cmd {
            LabCmd::Up { prefix, pods } => {
                bootstrap()?;
                if !lab::namespaces(&prefix)?.is_empty() {
                    bail!(
                        "lab {prefix} is already up; `cargo xtask lab down --prefix {prefix}` first"
                    );
                }
                let l = lab::Lab::up(&prefix, pods)?;
                print!("{}", lab::status(&prefix)?);
                l.keep();
                Ok(())
            }
            LabCmd::Down { prefix } => {
                lab::down(&prefix)?;
                print!("{}", lab::status(&prefix)?);
                Ok(())
            }
            LabCmd::Status { prefix } => {
                print!("{}", lab::status(&prefix)?);
                Ok(())
            }
        },
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
