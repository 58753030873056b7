//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.
//! Unprivileged first (fmt, clippy, unit tests), then as root the lab and BPF tests on this host,
//! then the tests that need sch_fq in a stock kernel under QEMU, then the benchmarks in quick mode
//! (a smoke test that every part runs; its numbers are not results).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Result, bail, ensure};

use crate::{bootstrap, root, sh, vm};

pub fn run(unprivileged_only: bool) -> Result<()> {
    bootstrap()?;
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // Unit tests of every crate: pure logic, no privileges.
    sh("cargo", &["test", "--workspace", "--lib", "--bins"])?;
    if unprivileged_only {
        eprintln!("xtask: skipped the privileged tests (--unprivileged)");
        return Ok(());
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the privileged tests (lab, BPF_PROG_TEST_RUN, VM) need root: run `sudo -E cargo xtask test`, or pass --unprivileged"
        );
    }
    // The tests run the built binary (injector_tests::injector_bin). Built as a new user builds
    // it: the whole workspace, then the CLI must answer (the eBPF crate's host stub once shared
    // its name and could replace it with a silent no-op).
    sh("cargo", &["build", "--workspace"])?;
    cli_answers()?;
    // The tests' binary carries the crash points (inert unless a test arms one); a user's
    // build never does.
    sh(
        "cargo",
        &["build", "-p", "injector", "--features", "failpoints"],
    )?;
    // The image test (image_lab) puts the release binary in the image; the benchmarks at the
    // end build it anyway.
    sh("cargo", &["build", "--release", "-p", "injector"])?;
    // The cluster tests run a real kube-apiserver, node_lab a real node (kubelet, kube-proxy,
    // scheduler, controller-manager): built once per machine (~10 min), then cached.
    crate::node::ensure_built()?;
    sh(
        "cargo",
        &[
            "test",
            "-p",
            "injector-tests",
            "--tests",
            "--",
            "--test-threads=2",
        ],
    )?;
    vm_tests(None)?;
    // The benchmarks, short: every part runs and produces its table (not a result).
    crate::bench::run(true, &[], None)
}

/// `target/debug/injector --version` prints the version (not the empty eBPF host stub).
fn cli_answers() -> Result<()> {
    let bin = root().join("target/debug/injector");
    let out = Command::new(&bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("injector {}", env!("CARGO_PKG_VERSION"));
    ensure!(
        out.status.success() && text.trim() == want,
        "{} --version printed {:?} (exit {:?}), expected {want:?}: is the CLI replaced by another bin of that name?",
        bin.display(),
        text.trim(),
        out.status.code()
    );
    Ok(())
}

/// The built test executable of `tests/tests/<name>.rs`.
fn test_executable(name: &str) -> Result<String> {
    let out = Command::new("cargo")
        .args([
            "test",
            "-p",
            "injector-tests",
            "--test",
            name,
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "building the {name} tests failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            v["executable"]
                .as_str()
                .filter(|e| e.contains(name))
                .map(String::from)
        })
        .ok_or_else(|| anyhow::anyhow!("no executable for the {name} tests"))
}

/// Real delay needs sch_fq, which this host's kernel lacks: those tests (`#[ignore]`d on the host)
/// run in a stock Debian kernel under QEMU, the `rt_` ones in real time, the `icount_` ones on
/// virtual time where precision can be asserted; on 6.1 (bookworm), with vm_actions.rs (reject,
/// duplicate, reorder) in real time and prog_parse.rs's verifier budget. On 5.10 (bullseye, no
/// `bpf_skb_set_tstamp`) one short real-time run of tests/tests/vm_5_10.rs: the programs without
/// the EDT stamp load, drop, blackhole, reject and duplicate work, delay is refused. On 6.12 (bookworm-backports, TCX):
/// the real-time delay and action tests, but the one about the netlink path. On each, the attach
/// path follows the kernel (clsact before 6.6, TCX from 6.6). `kernels`: only those; None: the
/// ones CI runs (5.10 and 6.1; 6.12 on demand).
pub fn vm_tests(kernels: Option<&[vm::Kernel]>) -> Result<()> {
    use vm::Kernel::{Backports, Bookworm, Bullseye};
    // (kernel, test file, name filter, --skip, icount, only the `#[ignore]`d tests). prog_parse's
    // verifier test is not ignored (it runs on the host too): on 6.1 it checks what the verifier
    // walks there against that kernel's budget (6.1 prunes less than 6.4 and later).
    let runs: &[(vm::Kernel, &str, &str, &str, bool, bool)] = &[
        (Bullseye, "vm_5_10", "", "", false, true),
        (Bullseye, "vm_delay", "rt_the_attach_path", "", false, true),
        (Bookworm, "prog_parse", "every_program", "", false, false),
        (Bookworm, "vm_delay", "rt_", "", false, true),
        (Bookworm, "vm_actions", "", "", false, true),
        (Bookworm, "vm_delay", "icount_", "", true, true),
        (
            Backports,
            "vm_delay",
            "rt_",
            "kernel_without_tcx",
            false,
            true,
        ),
        (Backports, "vm_actions", "", "", false, true),
    ];
    for &(k, file, filter, skip, icount, ignored) in runs {
        let wanted = match kernels {
            Some(ks) => ks.contains(&k),
            None => k != Backports,
        };
        if !wanted {
            continue;
        }
        let vm = vm::setup_kernel(k)?;
        let exe = test_executable(file)?;
        let skip = if skip.is_empty() {
            String::new()
        } else {
            format!(" --skip {skip}")
        };
        let ignored = if ignored { " --ignored" } else { "" };
        let cmd = format!("{exe}{ignored} --nocapture --test-threads=1 {filter}{skip}");
        eprintln!(
            "+ [vm {}{}] {cmd}",
            vm.kver,
            if icount { ", icount" } else { "" }
        );
        let (rc, out) = vm::run(&vm, &cmd, icount, Duration::from_secs(900))?;
        print!("{out}");
        if rc != 0 {
            bail!(
                "the VM tests ({file} {filter}*, kernel {}) failed (exit {rc})",
                vm.label
            );
        }
    }
    Ok(())
}
