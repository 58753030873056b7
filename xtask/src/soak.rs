//! `cargo xtask soak [--minutes 30]`: the soak of tests/tests/soak_lab.rs (faults changed every
//! 100 ms, pod churn, traffic, node 1's daemon killed and restarted each minute, kernel ==
//! records == API checked each minute, the other daemon's RSS and fds sampled). On demand only:
//! too long for CI.

use std::process::Command;

use anyhow::{Result, ensure};

use crate::{bootstrap, root, sh};

pub fn run(minutes: u64) -> Result<()> {
    ensure!(
        minutes >= 1,
        "--minutes: {minutes}; the soak checks once a minute, give at least 1"
    );
    bootstrap()?;
    sh("cargo", &["build", "-p", "injector"])?;
    let ok = Command::new("cargo")
        .args([
            "test",
            "-p",
            "injector-tests",
            "--test",
            "soak_lab",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("INJECTOR_SOAK_SECS", (minutes * 60).to_string())
        .current_dir(root())
        .status()?
        .success();
    ensure!(ok, "the soak failed (its output above says where)");
    Ok(())
}
