//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.
//! Unprivileged first (fmt, clippy, unit tests), then the privileged lab and BPF tests as root.

use anyhow::{Result, bail};

use crate::{bootstrap, sh};

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
            "the privileged tests (lab, BPF_PROG_TEST_RUN) need root: run `sudo -E cargo xtask test`, or pass --unprivileged"
        );
    }
    // The tests run the built binary (injector_tests::injector_bin).
    sh("cargo", &["build", "-p", "injector"])?;
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
    Ok(())
}
