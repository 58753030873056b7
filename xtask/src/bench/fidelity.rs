//! Part 5, delay fidelity, in the VM on virtual time (this host has no sch_fq or netem): one-way error
//! percentiles of a 50 ms delay at 1k and 10k packets/s, injector (EDT + fq) vs netem on the same
//! device, and TCP throughput under the delay vs netem. `run` boots the VM and reads the section
//! `in_vm` prints.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Result, bail};
use injector_tests::{
    cmd,
    daemon::Daemon,
    lab::{self, Lab},
    perf::{self, percentile},
    stats::percentile_ci,
    traffic::{Schedule, one_way},
};

use super::{
    Ctx,
    report::{Row, Section},
};

const MARK: &str = "BENCH-SECTION ";
const DELAY_NS: u64 = 50_000_000;

/// Boots the VM with -icount and runs `xtask bench-vm` in it; returns its sections (delay
/// fidelity, then paced bandwidth) and the guest kernel's version.
pub fn run(ctx: &Ctx) -> Result<(Vec<Section>, String)> {
    let vm = crate::vm::setup()?;
    let xtask = crate::self_exe()?;
    let cmd = format!(
        "{} bench-vm{}",
        xtask.display(),
        if ctx.quick { " --quick" } else { "" }
    );
    eprintln!("+ [vm {}, icount] {cmd}", vm.kver);
    let (rc, out) = crate::vm::run(&vm, &cmd, true, Duration::from_secs(1800))?;
    let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix(MARK)).collect();
    if rc != 0 || lines.is_empty() {
        print!("{out}");
        bail!("the VM part failed or printed no result (exit {rc})");
    }
    let sections = lines
        .into_iter()
        .map(Section::from_json)
        .collect::<Result<_>>()?;
    Ok((sections, vm.kver.clone()))
}

struct Errors {
    lost: usize,
    early: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    /// 95% confidence intervals of p99 and p99.9 ([`percentile_ci`]).
    p99_ci: (f64, f64),
    p999_ci: (f64, f64),
    max: f64,
}

/// Errors (µs) of one-way latencies against `offset_ns`.
fn errors(v: &[Option<u64>], offset_ns: u64) -> Errors {
    let mut e: Vec<f64> = v
        .iter()
        .flatten()
        .map(|x| (*x as f64 - offset_ns as f64) / 1e3)
        .collect();
    e.sort_by(f64::total_cmp);
    Errors {
        lost: v.iter().filter(|x| x.is_none()).count(),
        early: e.iter().filter(|x| **x < 0.0).count(),
        p50: percentile(&e, 50.0),
        p99: percentile(&e, 99.0),
        p999: percentile(&e, 99.9),
        p99_ci: percentile_ci(&e, 99.0),
        p999_ci: percentile_ci(&e, 99.9),
        max: e.last().copied().unwrap_or(f64::NAN),
    }
}

/// A confidence interval, `[lo, hi]`; an end the sample cannot bound is shown as such.
fn ci((lo, hi): (f64, f64)) -> String {
    let end = |x: f64| {
        if x.is_finite() {
            format!("{x:.1}")
        } else {
            "∞".into()
        }
    };
    format!("[{}, {}]", end(lo), end(hi))
}

fn show(e: &Errors) -> String {
    format!(
        "p50 {:.1} / p99 {:.1} {} / p99.9 {:.1} {} / max {:.1} us; {} lost, {} early",
        e.p50,
        e.p99,
        ci(e.p99_ci),
        e.p999,
        ci(e.p999_ci),
        e.max,
        e.lost,
        e.early
    )
}

/// Whether this run tells injector's p99 from netem's: only when their 95% intervals are apart.
fn p99_against(ours: &Errors, theirs: &Errors) -> String {
    let (o, t) = (ours.p99_ci, theirs.p99_ci);
    let verdict = if o.1 < t.0 {
        "below netem's (the 95% intervals apart)"
    } else if o.0 > t.1 {
        "above netem's (the 95% intervals apart)"
    } else {
        "not told apart from netem's in this run (the 95% intervals overlap)"
    };
    format!(
        "injector's p99 {verdict}; the ratio lies in [{:.2}, {:.2}]x",
        t.0 / o.1,
        t.1 / o.0
    )
}

/// The part measured inside the VM (`cargo xtask bench-vm`): prints one section line.
pub fn in_vm(ctx: &Ctx) -> Result<()> {
    if std::env::var_os("INJECTOR_VM_ICOUNT").is_none() {
        bail!("bench-vm runs inside the VM with -icount (cargo xtask bench starts it)");
    }
    // The guest's one CPU runs everything, and a kernel thread holding it delays the receiving
    // thread whatever the path: khugepaged, collapsing memory into huge pages in the guest's
    // first minutes, ran 2.1 then 1.3 ms at a stretch (sched_switch traced, the daemon stopped),
    // and the probes received meanwhile were counted 0.3-1.9 ms late. That was the rare ~1.8 ms
    // "stall" of earlier runs, in whichever run (netem's or injector's) it fell. Off in this
    // throwaway guest, where nothing needs huge pages.
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    if let Err(e) = std::fs::write(thp, "never") {
        eprintln!("bench-vm: cannot turn transparent huge pages off ({thp}: {e}); stalls may show");
    }
    let l = Lab::up(&lab::run_prefix("bv"), 2)?;
    let d1 = Daemon::start(&ctx.bin, l.node(1))?;
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let n1 = l.node(1).netns.clone();
    let dst = SocketAddr::new(b.ip.into(), 9000);
    let secs = if ctx.quick { 0.5 } else { 3.0 };
    let mut sec = Section::new(
        "5. Delay fidelity (VM, virtual time): 50 ms, error = one-way latency - 50 ms",
        "tc netem",
    );
    let fault = |to: &str| {
        format!(
            r#"[{{"name":"delay","from":["{}"],"to":["{to}"],"delay":"50ms","for":"10m"}}]"#,
            a.ip
        )
    };
    let netem = |dev: &str, on: bool| -> Result<()> {
        let mut args = vec![
            "-n",
            &n1,
            "qdisc",
            if on { "add" } else { "del" },
            "dev",
            dev,
            "root",
        ];
        if on {
            args.extend(["netem", "delay", "50ms", "limit", "100000"]);
        }
        cmd::run("tc", &args).map(drop)
    };
    let schedules = [
        (Schedule::Even, ""),
        (Schedule::Poisson(0x5eed), ", sent at random times"),
    ];
    for (pps, (schedule, how)) in [1000u32, 10_000]
        .into_iter()
        .flat_map(|p| schedules.map(|s| (p, s)))
    {
        let count = (f64::from(pps) * secs) as u32;
        // Probes go on for 100 ms after the measured ones (see the note on the tail).
        let tail = pps / 10;
        let probe = || -> Result<Vec<Option<u64>>> {
            let mut v = one_way(&a.netns, &b.netns, dst, count + tail, pps, 16, schedule)?;
            v.truncate(count as usize);
            Ok(v)
        };
        let base = errors(&probe()?, 0);
        netem(&b.host_veth, true)?;
        let theirs = probe();
        netem(&b.host_veth, false)?;
        let theirs = errors(&theirs?, DELAY_NS);
        d1.apply(&fault(&b.ip.to_string()))?;
        let ours = probe();
        d1.clear()?;
        let ours = errors(&ours?, DELAY_NS);
        let ok = ours.lost == 0 && ours.early == 0;
        sec.rows.push(
            Row::new(
                format!("{pps} pkt/s{how}, same node, {count} probes over 16 flows"),
                show(&ours),
                show(&theirs),
            )
            .ratio(theirs.p99 / ours.p99)
            .goal("none lost or early", ok),
        );
        sec.notes.push(format!(
            "At {pps} pkt/s{how}: {}. The path itself, with no delay, measures p50 {:.1} / p99 \
             {:.1} us.",
            p99_against(&ours, &theirs),
            base.p50,
            base.p99
        ));
    }
    let iperf_secs = if ctx.quick { 2 } else { 5 };
    for (to, dev, path) in [
        (b, b.host_veth.as_str(), "same node"),
        (c, "flannel.1", "cross node"),
    ] {
        netem(dev, true)?;
        let theirs = perf::iperf(&a.netns, &to.netns, &to.ip.to_string(), iperf_secs);
        netem(dev, false)?;
        let theirs = theirs?;
        d1.apply(&fault(&to.ip.to_string()))?;
        let ours = perf::iperf(&a.netns, &to.netns, &to.ip.to_string(), iperf_secs);
        d1.clear()?;
        let ours = ours?;
        let r = ours / theirs;
        sec.rows.push(
            Row::new(
                format!("TCP throughput under 50 ms, {path} (iperf3, Mbit/s)"),
                format!("{ours:.1}"),
                format!("{theirs:.1}"),
            )
            .ratio(r)
            .goal(">= 0.9 of netem", r >= 0.9),
        );
    }
    sec.notes.push(format!(
        "QEMU TCG with -icount shift=0,sleep=off: the guest's clock is its instruction count, the \
         same for both sides and unaffected by the host's load. Probes are UDP datagrams \
         carrying their send time, {secs} s per rate, paced by the sender: every 1/rate, or at \
         random times (exponential gaps, the rate on average), which sample every phase: with \
         even sends and 50 ms a whole number of periods, every held probe comes due while the \
         guest's one CPU sends a later one, and waits for that send to reach the qdisc (longer \
         through injector's judging, stamp and clone than to netem's enqueue). netem runs as the \
         root qdisc of the same device the fault is judged at (the destination veth; flannel.1 \
         across nodes), limit 100000. The sender goes on for 100 ms past the measured probes: \
         when it stops, the idle one-CPU guest releases each held packet ~100 us late, for \
         netem and injector alike (measured: p99 45 ms at 10k pkt/s for both), an emulator \
         artifact and not the delay's. Transparent huge pages are off in the guest: khugepaged \
         held its one CPU for 1-2 ms at a time in its first minutes, and the probes received \
         meanwhile counted late (the rare ~1.8 ms stall of earlier runs, for either side). \
         Ratio = netem's p99 error / injector's (> 1: injector is tighter); for TCP, injector / \
         netem over {iperf_secs} s of iperf3. In brackets: a distribution-free 95% confidence \
         interval of the percentile (order statistics at the binomial ranks; ∞: too few probes \
         to bound it), so that two runs' percentiles are compared with their sampling noise."
    ));
    println!("{MARK}{}", sec.to_json());
    let bw = super::rate::in_vm(ctx, &l, &d1)?;
    println!("{MARK}{}", bw.to_json());
    d1.stop()?;
    Ok(())
}
