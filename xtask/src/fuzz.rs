//! `cargo xtask fuzz`: the libFuzzer targets of fuzz/ (cargo fuzz, on the machine's nightly
//! toolchain), each for a while, from the seeds in fuzz/corpus/<target>/ (what a run finds that
//! widens coverage is kept there, under target/fuzz/corpus, not in the tree). A crash stops the run
//! and leaves its input in fuzz/artifacts/<target>/ for a regression case.
//!
//! First, target `kernel`: the differential fuzzing of the judging programs against the
//! reference model (tests/tests/prog_diff.rs), as long a run as the time allows, with a fresh
//! seed (`cargo xtask test` runs it short, with a fixed one).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, sh};

pub const TARGETS: [&str; 4] = ["fault_specs", "values", "experiment_file", "network_fault"];
const KERNEL: &str = "kernel";
/// Packets a second the differential run judges on this kind of machine (debug build, TC and
/// XDP, counters read back after each): ~9000 measured; sized below that.
const KERNEL_PACKETS_PER_SEC: u64 = 6000;

pub fn run(secs: u64, only: Option<&str>) -> Result<()> {
    if only.is_none() || only == Some(KERNEL) {
        kernel(secs)?;
        if only.is_some() {
            return Ok(());
        }
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        sh("cargo", &["install", "--locked", "cargo-fuzz"])?;
    }
    let targets: Vec<&str> = match only {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "--target: unknown target {t:?}; use one of {KERNEL}, {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let time = format!("-max_total_time={secs}");
    for t in targets {
        // The seeds (in the tree), and a working corpus under target/ that the run grows.
        let work = root().join("target/fuzz/corpus").join(t);
        std::fs::create_dir_all(&work)?;
        let seeds = root().join("fuzz/corpus").join(t);
        let (work, seeds) = (work.display().to_string(), seeds.display().to_string());
        eprintln!("xtask: fuzz {t} for {secs} s");
        sh(
            "cargo",
            &[
                "+nightly",
                "fuzz",
                "run",
                t,
                &work,
                &seeds,
                "--",
                &time,
                "-max_len=4096",
            ],
        )
        .with_context(|| {
            format!("fuzz target {t}: a crash (its input is in fuzz/artifacts/{t}/)")
        })?;
    }
    Ok(())
}

/// The differential run: packets for about `secs`, seeded from the clock (printed; replay with
/// `INJECTOR_DIFF_SEED`). A disagreement fails it and prints the case for
/// tests/tests/diff/cases.json.
fn kernel(secs: u64) -> Result<()> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let packets = (secs * KERNEL_PACKETS_PER_SEC).to_string();
    eprintln!("xtask: fuzz {KERNEL}: {packets} packets, seed {seed}");
    let ok = Command::new("cargo")
        .args([
            "test",
            "-p",
            "injector-tests",
            "--test",
            "prog_diff",
            "--",
            "--nocapture",
        ])
        .env("INJECTOR_DIFF_PACKETS", &packets)
        .env("INJECTOR_DIFF_SEED", seed.to_string())
        .current_dir(root())
        .status()?
        .success();
    if !ok {
        bail!("fuzz {KERNEL}: the programs and the model disagree (cases above; seed {seed})");
    }
    Ok(())
}
