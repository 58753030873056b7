//! Part 6, bandwidth: TCP under a 10mbit rate fault, injector next to what a user would pick.
//! On this host (no fq: the daemon polices) against iptables hashlimit in byte mode in the
//! sending pod's OUTPUT (no tbf here either); in the VM (fq: paced) against tc tbf as the root
//! qdisc of the device the fault is judged at. iperf3 with the first second left out.

use anyhow::Result;
use injector_tests::{
    cmd,
    daemon::Daemon,
    lab::{Lab, Pod},
    perf,
};

use super::{
    Ctx,
    report::{Row, Section},
};

/// The fault, from `a` to `b`.
fn fault(a: &Pod, b: &Pod) -> String {
    format!(
        r#"[{{"name":"bw","from":["{}"],"to":["{}"],"rate":"10mbit","for":"10m"}}]"#,
        a.ip, b.ip
    )
}

/// TCP goodput (Mbit/s) from `a` to `b` for `secs`, the first second left out.
fn tcp(a: &Pod, b: &Pod, secs: u32) -> Result<f64> {
    perf::iperf_with(
        &a.netns,
        &b.netns,
        &b.ip.to_string(),
        secs + 1,
        &["-O", "1"],
    )
}

/// TCP from `a` to `b` under the alternative (`alt(true)` sets it up, `alt(false)` removes it,
/// also when the measurement failed), then under the fault on `d1`; a row of the two.
fn row(
    d1: &Daemon,
    (a, b, secs): (&Pod, &Pod, u32),
    path: &str,
    alt: impl Fn(bool) -> Result<()>,
    (goal, met): (&str, fn(f64) -> bool),
) -> Result<Row> {
    alt(true)?;
    let theirs = tcp(a, b, secs);
    alt(false)?;
    let theirs = theirs?;
    d1.apply(&fault(a, b))?;
    let ours = tcp(a, b, secs);
    d1.clear()?;
    let ours = ours?;
    Ok(Row::new(
        format!("TCP, {path}"),
        format!("{ours:.2}"),
        format!("{theirs:.2}"),
    )
    .ratio(ours / theirs)
    .goal(goal, met(ours)))
}

/// A 10 Mbit/s hashlimit drop in `a`'s OUTPUT for traffic to `b` (on or off). Its byte mode
/// refuses a burst under a second at the rate.
fn hashlimit(a: &Pod, b: &Pod, on: bool) -> Result<()> {
    let dst = format!("{}/32", b.ip);
    let rule = [
        if on { "-A" } else { "-D" },
        "OUTPUT",
        "-d",
        &dst,
        "-m",
        "hashlimit",
        "--hashlimit-above",
        "1250kb/s",
        "--hashlimit-burst",
        "1280kb",
        "--hashlimit-mode",
        "dstip",
        "--hashlimit-name",
        "benchrate",
        "-j",
        "DROP",
    ];
    cmd::in_ns(&a.netns, "iptables", &rule).map(drop)
}

/// Policed, on this host.
pub fn run(ctx: &Ctx, l: &Lab) -> Result<Section> {
    let secs = ctx.iperf_secs + 1;
    let d1 = Daemon::start(&ctx.bin, l.node(1))?;
    let a = l.pod(1, 1);
    let mut sec = Section::new(
        "6. Bandwidth, policed (this host has no fq): TCP under 10mbit (iperf3, Mbit/s)",
        "iptables hashlimit",
    );
    for (b, path) in [(l.pod(1, 2), "same node"), (l.pod(2, 1), "cross node")] {
        let met = |ours: f64| (9.0..=10.2).contains(&ours);
        let goal = ("9.0-10.2 (the rate: 9.64)", met as fn(f64) -> bool);
        let alt = |on| hashlimit(a, b, on);
        sec.rows.push(row(&d1, (a, b, secs), path, alt, goal)?);
    }
    sec.notes.push(format!(
        "The rate counts IP bytes: a full 1450-byte segment carries 1398 bytes of TCP payload \
         (96.4%), so 9.64 Mbit/s of goodput is the rate exactly. Policing drops a GSO packet \
         whole; injector's default bucket is 256 KiB, hashlimit's byte mode refuses less than a \
         second at the rate (1280kb), which lets it run over the rate in a short measurement. \
         Ratio = injector / hashlimit (closer to 9.64 is better, not higher). {secs} s per \
         measurement after a first second left out."
    ));
    d1.stop()?;
    Ok(sec)
}

/// Paced, in the VM (`bench-vm`), next to tbf on the device the fault is judged at.
pub fn in_vm(ctx: &Ctx, l: &Lab, d1: &Daemon) -> Result<Section> {
    let secs = if ctx.quick { 2 } else { 4 };
    let n1 = l.node(1).netns.as_str();
    let a = l.pod(1, 1);
    let mut sec = Section::new(
        "7. Bandwidth, paced (VM, virtual time): TCP under 10mbit (iperf3, Mbit/s)",
        "tc tbf",
    );
    let (b, c) = (l.pod(1, 2), l.pod(2, 1));
    let paths = [
        (b, b.host_veth.as_str(), "same node"),
        (c, "flannel.1", "cross node"),
    ];
    // Quick: one path (each measurement is minutes of emulation).
    for &(to, dev, path) in &paths[..if ctx.quick { 1 } else { 2 }] {
        let tbf = |on: bool| {
            let mut args = vec!["-n", n1, "qdisc", if on { "add" } else { "del" }];
            args.extend(["dev", dev, "root"]);
            if on {
                args.extend([
                    "tbf", "rate", "10mbit", "burst", "256kb", "latency", "200ms",
                ]);
            }
            cmd::run("tc", &args).map(drop)
        };
        let met = |ours: f64| (9.5..=10.2).contains(&perf::tcp_ip_mbits(ours));
        let goal = ("9.5-10.2 of IP bytes", met as fn(f64) -> bool);
        sec.rows.push(row(d1, (a, to, secs), path, tbf, goal)?);
    }
    sec.notes.push(format!(
        "tbf rate 10mbit burst 256kb latency 200ms, as the root qdisc of the destination veth \
         (same node) or flannel.1 (cross node); injector's fault paces with EDT into fq with the \
         same bucket and a 200 ms queue. tbf counts Ethernet headers too (14 bytes more a \
         packet), injector IP bytes. {secs} s per measurement after a first second left out."
    ));
    Ok(sec)
}
