//! Part 4, apply and abort latency: from the call to the first affected packet, and from the call to
//! traffic restored, seen by a probe stream (one UDP probe every 20 us) between two pods. The
//! alternative: `ip netns exec <pod> iptables/ipset ...` as Chaos Mesh's partition runs it.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use injector_tests::{
    cmd,
    daemon::Daemon,
    lab::{Lab, Pod},
    perf::{ProbeStream, Probes, median},
};

use super::{
    Ctx, Event, faults,
    report::{Row, Section},
    timed,
};

const PORT: u16 = 9020;
const GAP: Duration = Duration::from_micros(20);
const HOLD: Duration = Duration::from_millis(30);

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Api,
    Cli,
    ChaosMesh,
    OneRule,
}

/// Runs the commands one after the other, each as its own `ip netns exec` process.
fn exec_all(ns: &str, cmds: &[Vec<String>]) -> Result<()> {
    for c in cmds {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        cmd::in_ns(ns, args[0], &args[1..])?;
    }
    Ok(())
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn one(d: &Daemon, a: &Pod, b: &Pod, way: Way) -> Result<Event<Way>> {
    let (src, dst) = (a.ip.to_string(), b.ip.to_string());
    let fault = format!(
        r#"[{{"name":"probe","from":["{src}"],"to":["{dst}"],"proto":"udp","dport":["{PORT}"],"blackhole":true,"for":"10m"}}]"#
    );
    let socket = d.socket.to_string_lossy().to_string();
    let cli = |args: &[&str]| -> Result<()> {
        let st = Command::new(&d.bin)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(st.success(), "injector {}: {st}", args.join(" "));
        Ok(())
    };
    let port = PORT.to_string();
    let chaos_apply = [
        words("ipset create bench-probe hash:net"),
        words(&format!("ipset add bench-probe {dst}/32")),
        words("iptables -N BENCH-PROBE"),
        words("iptables -A OUTPUT -j BENCH-PROBE"),
        words(&format!(
            "iptables -A BENCH-PROBE -p udp --dport {port} -m set --match-set bench-probe dst -j DROP"
        )),
    ];
    let chaos_abort = [
        words("iptables -D OUTPUT -j BENCH-PROBE"),
        words("iptables -F BENCH-PROBE"),
        words("iptables -X BENCH-PROBE"),
        words("ipset destroy bench-probe"),
    ];
    let rule = format!("OUTPUT -d {dst}/32 -p udp --dport {port} -j DROP");
    let apply = match way {
        Way::Api => timed(|| faults::call_ok(&d.socket, "POST", "/v1/faults", &fault).map(drop))?,
        Way::Cli => timed(|| {
            cli(&[
                "fault",
                "add",
                "probe",
                "--from",
                &src,
                "--to",
                &dst,
                "--proto",
                "udp",
                "--dport",
                &port,
                "--blackhole",
                "--for",
                "10m",
            ])
        })?,
        Way::ChaosMesh => timed(|| exec_all(&a.netns, &chaos_apply))?,
        Way::OneRule => timed(|| exec_all(&a.netns, &[words(&format!("iptables -A {rule}"))]))?,
    };
    std::thread::sleep(HOLD);
    let abort = match way {
        Way::Api => timed(|| faults::call_ok(&d.socket, "POST", "/v1/abort", "").map(drop))?,
        Way::Cli => timed(|| cli(&["abort"]))?,
        Way::ChaosMesh => timed(|| exec_all(&a.netns, &chaos_abort))?,
        Way::OneRule => timed(|| exec_all(&a.netns, &[words(&format!("iptables -D {rule}"))]))?,
    };
    std::thread::sleep(HOLD);
    if matches!(way, Way::Api | Way::Cli) {
        // An abort disarms; removing the faults makes the next apply a fresh one.
        faults::call_ok(&d.socket, "DELETE", "/v1/faults", "")?;
    }
    Ok(Event { way, apply, abort })
}

/// (apply latency, abort: call start to restored, abort: return to restored, apply call
/// duration), in µs.
fn analyse(p: &Probes, e: &Event<Way>) -> Result<(f64, f64, f64, f64)> {
    let lost = p
        .first_after(e.apply.0, false)
        .ok_or_else(|| anyhow::anyhow!("no probe was lost after the apply"))?;
    // In full effect once the call returned, until the abort.
    let (n, got) = p.arrived_between(e.apply.1 + 2_000_000, e.abort.0);
    ensure!(
        n > 100 && got == 0,
        "{got} of {n} probes passed a fault in effect"
    );
    let back = p
        .first_after(e.abort.0, true)
        .ok_or_else(|| anyhow::anyhow!("traffic never came back after the abort"))?;
    let (n, got) = p.arrived_between(back + 2_000_000, e.abort.1 + HOLD.as_nanos() as u64 / 2);
    ensure!(
        got * 100 >= n * 99,
        "after the abort only {got} of {n} probes arrived"
    );
    let us = |x: i64| x as f64 / 1e3;
    Ok((
        us(lost as i64 - e.apply.0 as i64),
        us(back as i64 - e.abort.0 as i64),
        us(back as i64 - e.abort.1 as i64),
        us(e.apply.1 as i64 - e.apply.0 as i64),
    ))
}

pub fn run(ctx: &Ctx, l: &Lab) -> Result<Section> {
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let d = Daemon::start(&ctx.bin, l.node(1))?;
    let ways = [Way::Api, Way::Cli, Way::ChaosMesh, Way::OneRule];
    let stream = ProbeStream::start(&a.netns, &b.netns, SocketAddr::new(b.ip.into(), PORT), GAP)?;
    std::thread::sleep(Duration::from_millis(50));
    let mut events = Vec::new();
    let started = Instant::now();
    // What any process costs here under the same load (item 6's floor): `true`, and this
    // binary printing its version (its start without a request).
    let (mut start_true, mut start_ours) = (Vec::new(), Vec::new());
    let spawn = |prog: &std::path::Path, args: &[&str]| -> Result<f64> {
        let t = Instant::now();
        let st = Command::new(prog)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()?;
        ensure!(st.success(), "{}: {st}", prog.display());
        Ok(t.elapsed().as_secs_f64() * 1e6)
    };
    for round in 0..ctx.latency_rounds {
        for k in 0..ways.len() {
            let w = ways[(k + round as usize) % ways.len()];
            events.push(one(&d, a, b, w)?);
        }
        start_true.push(spawn(std::path::Path::new("true"), &[])?);
        start_ours.push(spawn(&d.bin, &["--version"])?);
    }
    let probes = stream.finish()?;
    d.stop()?;
    let mut per: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); ways.len()];
    for e in &events {
        let i = ways.iter().position(|w| *w == e.way).expect("way");
        per[i].push(analyse(&probes, e)?);
    }
    let med = |i: usize, f: fn(&(f64, f64, f64, f64)) -> f64| {
        median(&per[i].iter().map(f).collect::<Vec<_>>())
    };
    let max = |i: usize, f: fn(&(f64, f64, f64, f64)) -> f64| {
        per[i].iter().map(f).fold(f64::MIN, f64::max)
    };
    let ms = |us: f64| format!("{:.2} ms", us / 1e3);
    let mut sec = Section::new(
        "4. Apply and abort latency",
        "ip netns exec <pod> ipset/iptables",
    );
    for (oi, oname) in [(0, "API call"), (1, "CLI (`injector fault add` / `abort`)")] {
        for (ai, aname) in [
            (2, "Chaos Mesh partition (5 commands)"),
            (3, "one iptables rule (best case)"),
        ] {
            let (ours, alt) = (med(oi, |x| x.0), med(ai, |x| x.0));
            let r = alt / ours;
            sec.rows.push(
                Row::new(
                    format!("apply, call to first dropped packet: {oname} vs {aname}"),
                    format!(
                        "{} (max {}; the call returns after {})",
                        ms(ours),
                        ms(max(oi, |x| x.0)),
                        ms(med(oi, |x| x.3))
                    ),
                    format!(
                        "{} (max {}; the commands return after {})",
                        ms(alt),
                        ms(max(ai, |x| x.0)),
                        ms(med(ai, |x| x.3))
                    ),
                )
                .ratio(r)
                .goal(">= 5x", r >= 5.0),
            );
        }
    }
    sec.rows.push(Row::new(
        "a process start alone, same load: `true` / `injector --version` (the CLI's floor)",
        format!(
            "{} / {} (the CLI call returns after {})",
            ms(median(&start_true)),
            ms(median(&start_ours)),
            ms(med(1, |x| x.3))
        ),
        "",
    ));
    for (oi, oname) in [(0, "API call"), (1, "CLI")] {
        let (ours, alt) = (med(oi, |x| x.1), med(2, |x| x.1));
        sec.rows.push(
            Row::new(
                format!(
                    "abort, call to traffic restored: {oname} vs Chaos Mesh recover (4 commands)"
                ),
                format!("{} (max {})", ms(ours), ms(max(oi, |x| x.1))),
                format!("{} (max {})", ms(alt), ms(max(2, |x| x.1))),
            )
            .ratio(alt / ours),
        );
        let after = max(oi, |x| x.2);
        sec.rows.push(
            Row::new(
                format!(
                    "abort, call returned to traffic restored: {oname} (worst of {})",
                    per[oi].len()
                ),
                if after <= 0.0 {
                    "restored before the call returned".into()
                } else {
                    ms(after)
                },
                "",
            )
            .goal("< 1 ms", after < 1000.0),
        );
    }
    sec.notes.push(format!(
        "A probe every {:?} from {} to {} (same node; resolution {:?}); per way the median (and \
         worst) of {} rounds, ways interleaved, {:.0} s in all. Apply = from the start of the \
         call to the send time of the first dropped probe; the fault is then checked to drop \
         every probe until the abort. The API call is an HTTP request on the daemon's Unix \
         socket, as a controller makes it; the CLI adds a process start. Chaos Mesh's partition \
         runs ipset create/add and iptables -N/-A/-A in the pod's netns (recover: -D/-F/-X, \
         ipset destroy), each a process as its chaos-daemon runs them. tc is not compared on \
         this host: its kernel has no prio, netem or gact to build Chaos Mesh's tc tree.",
        GAP,
        a.name,
        b.name,
        GAP,
        ctx.latency_rounds,
        started.elapsed().as_secs_f64()
    ));
    Ok(sec)
}
