//! `cargo xtask`: the project's own commands. `test` runs every check CI runs; `demo` runs the
//! main job on the lab; `lab up|down|status` drives the two-node lab by hand,
//! `cluster up|down|status` the lab with a real API server; `node build|up|down|status` a real
//! Kubernetes node (kubelet, containerd) running the DaemonSet; `image` the node daemon's
//! container image.

mod bench;
mod cluster;
mod demo;
mod demo_k8s;
mod demo_node;
mod fuzz;
mod image;
mod node;
mod soak;
mod test;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail, ensure};
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
    /// The main job: lab up, daemons on both nodes, faults between pods shown, all torn down;
    /// then NetworkFaults on a real API server, and delay in a VM.
    Demo {
        /// Only the Kubernetes part (the lab with a real API server).
        #[arg(long)]
        kubernetes: bool,
        /// Only the real node part (kubelet, containerd, the DaemonSet from deploy/).
        #[arg(long)]
        node: bool,
    },
    /// Benchmarks next to iptables/ipset and tc netem, as ratios, into docs/benchmarks.md.
    Bench {
        /// Short runs, a smoke test (CI); written to target/bench/ instead of docs/.
        #[arg(long)]
        quick: bool,
        /// Only these parts (idle, cost, attach, drop, latency, rate, k8s, fidelity); written to
        /// target/bench/.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Paired rounds of the idle tax, the per-packet costs and the drop cost (default 5, 1
        /// with --quick). Part 1 says how many would resolve its ratio to 1% at the spread it
        /// saw (~150 same-node here: about 25 minutes for that part alone).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rounds: Option<u32>,
    },
    /// The differential fuzzing of the kernel path against its reference model, then the
    /// libFuzzer targets of fuzz/ (cargo fuzz, nightly) over the userspace parsers.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Only this target (kernel, fault_specs, values, experiment_file, network_fault).
        #[arg(long)]
        target: Option<String>,
    },
    /// The soak, on demand: faults changed every 100 ms, pod churn, traffic and a daemon
    /// restart each minute, consistency, memory and fds checked each minute.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// The part of the benchmarks that `bench` runs inside the VM.
    #[command(hide = true)]
    BenchVm {
        #[arg(long)]
        quick: bool,
    },
    /// The delay part of the demo; `demo` runs it inside the VM.
    #[command(hide = true)]
    DemoDelay,
    /// A stock Debian kernel in QEMU (this host has no sch_fq/netem): `vm run -- CMD`.
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// The lab plus a real kube-apiserver (built once into ~/.cache), nodes and pods registered.
    Cluster {
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
    /// A real one-node Kubernetes cluster here (kubelet, containerd, kube-proxy, CNI bridge on
    /// cni0) with injector's DaemonSet from deploy/.
    Node {
        #[command(subcommand)]
        cmd: node::NodeCmd,
    },
    /// The node daemon's container image, localhost/injector:<version>, built with buildah.
    Image {
        /// Put the release build in it (what an image should hold); default: debug.
        #[arg(long)]
        release: bool,
        /// Also write it as a docker-archive (for `ctr -n k8s.io images import FILE`).
        #[arg(long, value_name = "FILE")]
        save: Option<std::path::PathBuf>,
    },
    /// The two-node flannel lab in network namespaces.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Download the distro kernel and build the initramfs (once per kernel).
    Setup {
        #[arg(long, value_enum, default_value = "6.1")]
        kernel: vm::Kernel,
    },
    /// Run the VM tests: without --kernel those `cargo xtask test` runs (5.10 and 6.1); with it
    /// one kernel (5.10, 6.1, 6.12) or all.
    Test {
        #[arg(long, value_parser = vm::parse_kernels)]
        kernel: Option<vm::Kernels>,
    },
    /// Run a shell command in the guest, chrooted into the host's root, in the workspace.
    Run {
        /// The guest kernel: Debian bookworm's 6.1, bullseye's 5.10 or bookworm-backports' 6.12.
        #[arg(long, value_enum, default_value = "6.1")]
        kernel: vm::Kernel,
        /// Virtual time (-icount): deterministic timing, one CPU.
        #[arg(long)]
        icount: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
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
/// This xtask's executable, to run again inside the VM. `cargo xtask test` builds the whole
/// workspace while it runs, which can replace the running binary (its path then reads
/// "... (deleted)"): the rebuilt one, from the same sources, is then used.
pub fn self_exe() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    if exe.exists() {
        return Ok(exe);
    }
    let name = exe
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_else(|| "xtask".into());
    let rebuilt = exe.with_file_name(name);
    ensure!(
        rebuilt.exists(),
        "the xtask binary {} is gone; rerun the command",
        exe.display()
    );
    Ok(rebuilt)
}

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
        Cmd::Demo { kubernetes, node } => demo::run(kubernetes, node),
        Cmd::DemoDelay => demo::delay_in_vm(),
        Cmd::Bench {
            quick,
            only,
            rounds,
        } => bench::run(quick, &only, rounds),
        Cmd::BenchVm { quick } => bench::in_vm(quick),
        Cmd::Fuzz { secs, target } => fuzz::run(secs, target.as_deref()),
        Cmd::Soak { minutes } => soak::run(minutes),
        Cmd::Vm { cmd } => match cmd {
            VmCmd::Setup { kernel } => {
                vm::setup_kernel(kernel).map(|v| println!("{} {}", v.kver, v.kernel.display()))
            }
            VmCmd::Test { kernel } => {
                sh("cargo", &["build", "-p", "injector"])?;
                test::vm_tests(kernel.as_ref().map(|k| k.0.as_slice()))
            }
            VmCmd::Run {
                kernel,
                icount,
                timeout,
                cmd,
            } => {
                let v = vm::setup_kernel(kernel)?;
                let (rc, out) = vm::run(
                    &v,
                    &cmd.join(" "),
                    icount,
                    std::time::Duration::from_secs(timeout),
                )?;
                print!("{out}");
                if rc != 0 {
                    bail!("the command exited {rc} in the VM");
                }
                Ok(())
            }
        },
        Cmd::Cluster { cmd } => cluster::run(cmd),
        Cmd::Node { cmd } => node::run(cmd),
        Cmd::Image { release, save } => image::run(release, save.as_deref()),
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

/// The variables `cargo run` sets for xtask itself. Build scripts of dependencies (ring's) watch
/// some of them, so a `cargo build` started from xtask with them set, and one started from a
/// shell without, rebuild ring -> rustls -> kube -> injector every time the two alternate
/// (measured: 1.5-3 min per switch in release). Children get the shell's environment instead.
fn forget_cargo_run_env() {
    let ours = |k: &str| {
        k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
    };
    let keys: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| ours(k))
        .collect();
    for k in keys {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { std::env::remove_var(k) };
    }
}

fn main() -> ExitCode {
    forget_cargo_run_env();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
