//! Part 3, drop cost: a UDP flood from one pod to another dropped by a blackhole fault (TC, or XDP
//! with `--xdp`) vs the same match as iptables + ipset DROP in a pod's netns, as Chaos Mesh's
//! partition does it (OUTPUT of the source pod for direction "to", INPUT of the target for
//! "from"). Measured as packets per CPU-second of the whole machine.

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use injector_tests::{
    cmd,
    daemon::Daemon,
    lab::{Lab, Pod},
    perf::{self, Flood, median},
};

use super::{
    Ctx,
    report::{Row, Section},
};

const PORT: u16 = 9010;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Delivered,
    Tc,
    Xdp,
    IptablesInput,
    IptablesOutput,
}

impl Way {
    const ALL: [Way; 5] = [
        Way::Delivered,
        Way::Tc,
        Way::Xdp,
        Way::IptablesInput,
        Way::IptablesOutput,
    ];
}

/// UDP datagrams delivered to sockets in `netns` so far (queued or refused for a full buffer).
fn udp_delivered(netns: &str) -> Result<u64> {
    let snmp = cmd::in_ns(netns, "cat", &["/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    let get = |k: &str| -> u64 {
        names
            .split_whitespace()
            .position(|n| n == k)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(get("InDatagrams") + get("RcvbufErrors"))
}

/// Chaos Mesh's partition rules in `pod`'s netns: an ipset holding `peer`, and a chain jumped to
/// from `chain` (INPUT or OUTPUT) that drops UDP to PORT from/to the set.
fn iptables_partition(pod: &Pod, peer: &Pod, chain: &str) -> Result<()> {
    let (set, dir) = if chain == "INPUT" {
        ("bench-src", "src")
    } else {
        ("bench-dst", "dst")
    };
    let own = format!("BENCH-{chain}");
    let ns = pod.netns.as_str();
    cmd::in_ns(ns, "ipset", &["create", set, "hash:net"])?;
    cmd::in_ns(ns, "ipset", &["add", set, &format!("{}/32", peer.ip)])?;
    cmd::in_ns(ns, "iptables", &["-N", &own])?;
    cmd::in_ns(ns, "iptables", &["-A", chain, "-j", &own])?;
    let port = PORT.to_string();
    cmd::in_ns(
        ns,
        "iptables",
        &[
            "-A",
            &own,
            "-p",
            "udp",
            "--dport",
            &port,
            "-m",
            "set",
            "--match-set",
            set,
            dir,
            "-j",
            "DROP",
        ],
    )?;
    Ok(())
}

fn iptables_clear(pod: &Pod, chain: &str) -> Result<()> {
    let own = format!("BENCH-{chain}");
    let set = if chain == "INPUT" {
        "bench-src"
    } else {
        "bench-dst"
    };
    let ns = pod.netns.as_str();
    cmd::in_ns(ns, "iptables", &["-D", chain, "-j", &own])?;
    cmd::in_ns(ns, "iptables", &["-F", &own])?;
    cmd::in_ns(ns, "iptables", &["-X", &own])?;
    cmd::in_ns(ns, "ipset", &["destroy", set])?;
    Ok(())
}

/// One flood from `a` to `b` dropped (or not) the `way` given; the daemon runs on `a`'s node,
/// where injector judges the packet.
fn one(ctx: &Ctx, l: &Lab, a: &Pod, b: &Pod, way: Way) -> Result<Flood> {
    let fault = format!(
        r#"[{{"name":"flood","from":["{}"],"to":["{}"],"proto":"udp","dport":["{PORT}"],"blackhole":true,"for":"10m"}}]"#,
        a.ip, b.ip
    );
    let daemon = match way {
        Way::Tc | Way::Xdp => {
            let extra: &[&str] = if way == Way::Xdp { &["--xdp"] } else { &[] };
            let d = Daemon::start_with(&ctx.bin, l.node(a.node), extra)?;
            d.apply(&fault)?;
            Some(d)
        }
        Way::IptablesInput => {
            iptables_partition(b, a, "INPUT")?;
            None
        }
        Way::IptablesOutput => {
            iptables_partition(a, b, "OUTPUT")?;
            None
        }
        Way::Delivered => None,
    };
    let before = udp_delivered(&b.netns)?;
    let f = perf::flood(&a.netns, SocketAddr::new(b.ip.into(), PORT), 64, ctx.flood);
    let delivered = udp_delivered(&b.netns)? - before;
    match way {
        Way::IptablesInput => iptables_clear(b, "INPUT")?,
        Way::IptablesOutput => iptables_clear(a, "OUTPUT")?,
        _ => {}
    }
    if let Some(d) = daemon {
        d.stop()?;
    }
    let f = f?;
    if way == Way::Delivered {
        ensure!(
            delivered >= f.packets * 9 / 10,
            "baseline flood: {delivered} of {} delivered",
            f.packets
        );
    } else {
        ensure!(
            delivered <= f.packets / 1000,
            "a dropping flood delivered {delivered} of {}",
            f.packets
        );
    }
    Ok(f)
}

pub fn run(ctx: &Ctx, l: &Lab) -> Result<Section> {
    let b = l.pod(1, 2);
    let _sink = perf::sink(&b.netns, PORT)?;
    let mut sec = Section::new(
        "3. Drop cost: UDP flood dropped, packets per CPU-second",
        "iptables + ipset DROP in the pod's netns",
    );
    for (a, path) in [(l.pod(1, 1), "same node"), (l.pod(2, 1), "cross node")] {
        let mut s: Vec<Vec<Flood>> = vec![Vec::new(); Way::ALL.len()];
        for round in 0..ctx.rounds {
            for k in 0..Way::ALL.len() {
                // Rotate the order each round so drift does not favour one way.
                let i = (k + round as usize) % Way::ALL.len();
                s[i].push(one(ctx, l, a, b, Way::ALL[i])?);
            }
        }
        rows(&mut sec, &s, path);
        if path == "same node" {
            let refused = s[4].iter().map(|f| f.refused).sum::<u64>();
            let total = s[4].iter().map(|f| f.packets).sum::<u64>();
            sec.notes.push(format!(
                "One sender thread floods 64-byte UDP datagrams with sendmmsg, 64 per call, for \
                 {:?} per run, from {} (same node) or {} (cross node, through flannel.1) to {}; \
                 CPU = busy time of all CPUs from /proc/stat over the run (sender, softirq, \
                 everything, on both nodes); median of {} runs per way, order rotated per round. \
                 Every dropping run is checked to deliver nothing to {}'s sockets (UDP MIB). The \
                 OUTPUT rule refuses datagrams inside the sender's own stack: the application \
                 gets EPERM ({refused} of {total} sends failed here), which no network fault \
                 does; the INPUT rule and injector drop silently.",
                ctx.flood,
                l.pod(1, 1).name,
                l.pod(2, 1).name,
                b.name,
                ctx.rounds,
                b.name,
            ));
        }
    }
    Ok(sec)
}

fn rows(sec: &mut Section, s: &[Vec<Flood>], path: &str) {
    let pcs = |i: usize| median(&s[i].iter().map(Flood::per_cpu_second).collect::<Vec<_>>());
    let pps = |i: usize| {
        median(
            &s[i]
                .iter()
                .map(|f| f.packets as f64 / (f.wall_ns as f64 / 1e9))
                .collect::<Vec<_>>(),
        )
    };
    let k = |x: f64| format!("{:.0}k", x / 1e3);
    let show = |i: usize| format!("{} pkt/CPU-s ({} pkt/s)", k(pcs(i)), k(pps(i)));
    for (name, oi) in [("TC blackhole (default)", 1), ("XDP blackhole (--xdp)", 2)] {
        for (alt_name, ai) in [
            ("INPUT of the target pod (direction from)", 3),
            ("OUTPUT of the source pod (direction to)", 4),
        ] {
            let r = pcs(oi) / pcs(ai);
            sec.rows.push(
                Row::new(format!("{path}: {name} vs {alt_name}"), show(oi), show(ai))
                    .ratio(r)
                    .goal(">= 1.5x", r >= 1.5),
            );
        }
    }
    sec.rows.push(Row::new(
        format!("{path}: reference, no fault, delivered to a socket"),
        show(0),
        "",
    ));
}
