//! `cargo xtask fuzz`: the libFuzzer targets of fuzz/ (cargo fuzz, on the machine's nightly
//! toolchain), each for a while, from the seeds in fuzz/corpus/<target>/ (what a run finds that
//! widens coverage is kept there, under target/fuzz/corpus, not in the tree). A crash stops the run
//! and leaves its input in fuzz/artifacts/<target>/ for a regression case.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, sh};

pub const TARGETS: [&str; 4] = ["fault_specs", "values", "experiment_file", "network_fault"];

pub fn run(secs: u64, only: Option<&str>) -> Result<()> {
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
            "--target: unknown target {t:?}; use one of {}",
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
