//! `cargo xtask bench`: injector next to what users pick today (iptables + ipset, tc netem),
//! measured in the same run on the lab, printed as ratios and written to docs/benchmarks.md.
//! `--quick` is CI's smoke run: every part, short, written under target/ instead.

mod attach;
mod cluster;
mod cost;
mod drop;
mod faults;
mod fidelity;
mod idle;
mod k8s;
mod latency;
mod rate;
mod report;

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use injector_tests::lab::{self, Lab};

use crate::{bootstrap, root, sh};

/// How long and how often each part measures.
pub struct Ctx {
    pub quick: bool,
    pub bin: PathBuf,
    pub rounds: u32,
    pub latency_rounds: u32,
    pub iperf_secs: u32,
    pub rtt_count: u32,
    pub flood: Duration,
}

impl Ctx {
    pub fn new(quick: bool) -> Ctx {
        Ctx {
            quick,
            bin: root().join("target/release/injector"),
            rounds: if quick { 1 } else { 5 },
            latency_rounds: if quick { 2 } else { 10 },
            iperf_secs: if quick { 1 } else { 3 },
            rtt_count: if quick { 2000 } else { 20_000 },
            flood: Duration::from_millis(if quick { 300 } else { 2000 }),
        }
    }
}

/// When a way's apply and abort calls started and returned (monotonic ns): parts 4 and 9.
struct Event<W> {
    way: W,
    apply: (u64, u64),
    abort: (u64, u64),
}

/// Runs `f`; when it started and returned (monotonic ns).
fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<(u64, u64)> {
    let t0 = injector_tests::traffic::monotonic_ns();
    f()?;
    Ok((t0, injector_tests::traffic::monotonic_ns()))
}

const PARTS: [&str; 9] = [
    "idle", "cost", "attach", "drop", "latency", "rate", "k8s", "cluster", "fidelity",
];

/// `rounds`: instead of [`Ctx::new`]'s (`--rounds`).
pub fn run(quick: bool, only: &[String], rounds: Option<u32>) -> Result<()> {
    if let Some(p) = only.iter().find(|p| !PARTS.contains(&p.as_str())) {
        bail!(
            "--only: unknown part {p:?}; use some of {}",
            PARTS.join(",")
        );
    }
    let wanted = |p: &str| only.is_empty() || only.iter().any(|o| o == p);
    bootstrap()?;
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks build a lab and load BPF programs: run as root");
    }
    sh("cargo", &["build", "--release", "-p", "injector"])?;
    // The lab helpers find the binaries next to the running executable (xtask's debug build)
    // unless told: the benchmarks measure the release ones, also for `kubectl injector` (a
    // fresh machine has no debug build of it).
    for (var, bin) in [
        ("INJECTOR_BIN", "injector"),
        ("KUBECTL_INJECTOR_BIN", "kubectl-injector"),
    ] {
        // SAFETY: no other thread exists yet in this process.
        unsafe { std::env::set_var(var, root().join("target/release").join(bin)) };
    }
    let mut ctx = Ctx::new(quick);
    if let Some(r) = rounds {
        ctx.rounds = r;
    }
    let command = format!(
        "cargo xtask bench{}{}",
        if quick { " --quick" } else { "" },
        rounds.map_or(String::new(), |r| format!(" --rounds {r}"))
    );
    let mut sections = Vec::new();
    type Part = fn(&Ctx, &Lab) -> Result<report::Section>;
    let parts: [(&str, Part); 6] = [
        ("idle", idle::run),
        ("cost", cost::run),
        ("attach", attach::run),
        ("drop", drop::run),
        ("latency", latency::run),
        ("rate", rate::run),
    ];
    if parts.iter().any(|(n, _)| wanted(n)) {
        let l = Lab::up(&lab::run_prefix("bench"), 2)?;
        for (name, part) in parts.into_iter().filter(|(n, _)| wanted(n)) {
            eprintln!("xtask: bench: {name}");
            let s = part(&ctx, &l)?;
            println!("{}", s.markdown());
            sections.push(s);
        }
    }
    if wanted("k8s") {
        eprintln!("xtask: bench: k8s");
        crate::cluster::ensure_built()?;
        let s = k8s::run(&ctx)?;
        println!("{}", s.markdown());
        sections.push(s);
    }
    if wanted("cluster") {
        eprintln!("xtask: bench: cluster");
        crate::cluster::ensure_built()?;
        let s = cluster::run(&ctx)?;
        println!("{}", s.markdown());
        sections.push(s);
    }
    let mut vm_kernel = "not run".to_string();
    if wanted("fidelity") {
        eprintln!("xtask: bench: fidelity (VM)");
        let (vm_sections, k) = fidelity::run(&ctx)?;
        for s in vm_sections {
            println!("{}", s.markdown());
            sections.push(s);
        }
        vm_kernel = k;
    }
    let doc = report::document(&sections, &command, &vm_kernel, quick);
    let out = if !only.is_empty() {
        root().join("target/bench/benchmarks-partial.md")
    } else if quick {
        root().join("target/bench/benchmarks-quick.md")
    } else {
        root().join("docs/benchmarks.md")
    };
    std::fs::create_dir_all(out.parent().expect("parent"))?;
    std::fs::write(&out, doc)?;
    eprintln!("xtask: bench: written to {}", out.display());
    Ok(())
}

/// The part of the benchmarks that runs inside the VM.
pub fn in_vm(quick: bool) -> Result<()> {
    fidelity::in_vm(&Ctx::new(quick))
}
