//! Part 1, idle tax: what attached programs with MAX_FAULTS (256) faults that match nothing (10k
//! prefixes) cost pod-to-pod traffic, against no program at all. Rounds alternate the two so drift hits both.

use std::net::SocketAddr;

use anyhow::Result;
use injector_common::MAX_FAULTS;
use injector_tests::{
    daemon::Daemon,
    lab::{Lab, Pod},
    perf::{self, median},
    traffic::Servers,
};

use super::{
    Ctx, faults,
    report::{Row, Section},
};

const ECHO: u16 = 9007;

struct Sample {
    mbps: f64,
    rtt_p50_us: f64,
    rtt_p99_us: f64,
}

fn measure(ctx: &Ctx, a: &Pod, to: &Pod) -> Result<Sample> {
    let mbps = perf::iperf(&a.netns, &to.netns, &to.ip.to_string(), ctx.iperf_secs)?;
    let mut rtts: Vec<f64> =
        perf::udp_rtts(&a.netns, SocketAddr::new(to.ip.into(), ECHO), ctx.rtt_count)?
            .into_iter()
            .map(|ns| ns as f64 / 1e3)
            .collect();
    rtts.sort_by(f64::total_cmp);
    Ok(Sample {
        mbps,
        rtt_p50_us: perf::percentile(&rtts, 50.0),
        rtt_p99_us: perf::percentile(&rtts, 99.0),
    })
}

pub fn run(ctx: &Ctx, l: &Lab) -> Result<Section> {
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let _echo_b = Servers::start(&b.netns, &[ECHO], &[])?;
    let _echo_c = Servers::start(&c.netns, &[ECHO], &[])?;
    let set = faults::non_matching(10_000, 32, "idle");
    let paths = [(b, "same node"), (c, "cross node")];
    // [path][attached] -> samples
    let mut s: Vec<[Vec<Sample>; 2]> = vec![[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for round in 0..ctx.rounds {
        for attached in [round % 2 == 1, round % 2 == 0] {
            let daemons = if attached {
                let d = [
                    Daemon::start(&ctx.bin, l.node(1))?,
                    Daemon::start(&ctx.bin, l.node(2))?,
                ];
                for x in &d {
                    faults::call_ok(&x.socket, "POST", "/v1/faults", &set)?;
                }
                Some(d)
            } else {
                None
            };
            for (i, (to, _)) in paths.iter().enumerate() {
                s[i][usize::from(attached)].push(measure(ctx, a, to)?);
            }
            if let Some(d) = daemons {
                for x in d {
                    x.stop()?;
                }
            }
        }
    }
    let mut sec = Section::new(
        &format!(
            "1. Idle tax: {MAX_FAULTS} faults that match nothing (10k prefixes) vs no program"
        ),
        "no program (baseline)",
    );
    for (i, (_, path)) in paths.iter().enumerate() {
        let m = |att: usize, f: fn(&Sample) -> f64| {
            median(&s[i][att].iter().map(f).collect::<Vec<_>>())
        };
        // Each round's own ratio (its attached sample over its baseline), to show the noise.
        let spread = |f: fn(&Sample) -> f64, invert: bool| {
            let r: Vec<f64> = s[i][0]
                .iter()
                .zip(&s[i][1])
                .map(|(b, o)| if invert { f(b) / f(o) } else { f(o) / f(b) })
                .collect();
            let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("rounds {lo:.2}-{hi:.2}x")
        };
        let (base, ours) = (m(0, |x| x.mbps), m(1, |x| x.mbps));
        let r = ours / base;
        sec.rows.push(
            Row::new(
                format!("TCP throughput, {path} (iperf3, Mbit/s)"),
                format!("{ours:.0} ({})", spread(|x| x.mbps, false)),
                format!("{base:.0}"),
            )
            .ratio(r)
            .goal(">= 0.97", r >= 0.97),
        );
        let (base, ours) = (m(0, |x| x.rtt_p50_us), m(1, |x| x.rtt_p50_us));
        let r = base / ours;
        sec.rows.push(
            Row::new(
                format!("UDP round trip p50, {path} (us)"),
                format!("{ours:.1} ({})", spread(|x| x.rtt_p50_us, true)),
                format!("{base:.1}"),
            )
            .ratio(r)
            .goal(">= 0.97", r >= 0.97),
        );
        let (base, ours) = (m(0, |x| x.rtt_p99_us), m(1, |x| x.rtt_p99_us));
        sec.rows.push(
            Row::new(
                format!("UDP round trip p99, {path} (us)"),
                format!("{ours:.1}"),
                format!("{base:.1}"),
            )
            .ratio(base / ours),
        );
    }
    sec.notes.push(format!(
        "Medians of {} rounds, alternating; each round {} s of iperf3 and {} one-at-a-time UDP \
         round trips per path. \"Attached\" = a daemon in each node (programs on cni0, every veth \
         and flannel.1) with {MAX_FAULTS} blackhole faults (the most a node takes) whose 10,000 \
         /32 destinations (random in 10.0.0.0/8 outside the lab's 10.42.0.0/16) match none of \
         this traffic. Ratio = injector / baseline for throughput, baseline / injector for \
         latency (> 1: no tax).",
        ctx.rounds, ctx.iperf_secs, ctx.rtt_count
    ));
    Ok(sec)
}
