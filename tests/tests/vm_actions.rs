//! Reject, duplicate, reorder, delay and DNS delay on Debian 12's 6.1 kernel (sch_fq, no TCX), in the VM:
//! a connect to a rejected port is refused, a duplicated packet that is also delayed arrives
//! twice, both copies held by fq, and a delay's reorder share arrives at once, overtaking the
//! delayed packets sent before it; a DNS fault holds the answers for its names. Ignored on the host (no fq); run by `cargo xtask vm test`
//! (part of `cargo xtask test`) in real time, so only minima are asserted: EDT never releases a
//! packet early, so a probe faster than the delay was not delayed.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use injector_tests::{
    cmd,
    daemon::Daemon,
    dns, injector_bin,
    lab::{self, Lab},
    require_root, stats,
    traffic::{Schedule, in_netns, one_way},
};

#[test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm test)"]
fn reject_refuses_and_a_delayed_duplicate_arrives_twice_late() {
    require_root();
    assert!(
        injector::kernel::features::fq(),
        "this kernel has no sch_fq"
    );
    let l = Lab::up(&lab::run_prefix("va"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let (a, b, c) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1));
    let _tcp = in_netns(&c.netns, || Ok(TcpListener::bind(("0.0.0.0", 7000))?)).unwrap();
    let faults = format!(
        r#"[{{"name":"rej","to":["{c}"],"proto":"tcp","dport":["7000"],"reject":true,"for":"5m"}},
            {{"name":"dup","from":["{a}"],"to":["{b}"],"proto":"icmp","duplicate":"100%","for":"5m"}},
            {{"name":"slow","from":["{a}"],"to":["{b}"],"proto":"icmp","delay":"50ms","for":"5m"}}]"#,
        a = a.ip,
        b = b.ip,
        c = c.ip
    );
    for d in [&d1, &d2] {
        d.apply(&faults).unwrap();
    }
    let to = SocketAddr::new(c.ip.into(), 7000);
    let refused = in_netns(&a.netns, move || {
        Ok(TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| e.kind()))
    })
    .unwrap();
    assert_eq!(
        refused.err(),
        Some(ErrorKind::ConnectionRefused),
        "rejected cross-node"
    );
    // Pings a -> b: each request duplicated and delayed, so each is answered twice (ping marks
    // the second DUP!), both after at least 50 ms. Ping ends at its 10th first reply, before the
    // last duplicate comes.
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            &a.netns,
            "ping",
            "-n",
            "-c",
            "10",
            "-i",
            "0.1",
            "-W",
            "2",
            &b.ip.to_string(),
        ],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let dups = text.lines().filter(|l| l.contains("DUP!")).count();
    eprintln!("{text}");
    assert!(
        dups >= 9 && times.len() == 10 + dups,
        "each reply twice:\n{text}"
    );
    assert!(
        times.iter().all(|t| *t >= 50.0),
        "every copy held 50 ms: {times:?}"
    );
}

#[test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm test)"]
fn a_reorder_share_arrives_at_once_and_overtakes_the_delayed() {
    require_root();
    assert!(
        injector::kernel::features::fq(),
        "this kernel has no sch_fq"
    );
    let l = Lab::up(&lab::run_prefix("vr"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let faults = format!(
        r#"[{{"name":"reorder","from":["{}"],"to":["{}"],"proto":"udp","dport":["7300"],"delay":"50ms","reorder":"25%","for":"5m"}}]"#,
        a.ip, b.ip
    );
    for d in [&d1, &d2] {
        d.apply(&faults).unwrap();
    }
    // One flow: fq keeps a flow's packets in their departure-time order, so an undelayed packet
    // leaves ahead of the delayed ones queued before it.
    let (n, pps) = (1000u32, 200u32);
    let lat = one_way(
        &a.netns,
        &b.netns,
        SocketAddr::new(b.ip.into(), 7300),
        n,
        pps,
        1,
        Schedule::Even,
    )
    .unwrap();
    assert!(lat.iter().all(Option::is_some), "none lost");
    let ms: Vec<f64> = lat.iter().map(|l| l.unwrap() as f64 / 1e6).collect();
    let early = ms.iter().filter(|&&m| m < 50.0).count() as u64;
    let s = d1.local(&["stats"]).unwrap();
    let (reordered, delayed) = (
        stats::fault(&s, "reorder", "veth_egress", "reordered"),
        stats::fault(&s, "reorder", "veth_egress", "delayed"),
    );
    // Overtaken: a probe that arrived after the next one (sent 1/pps later) did.
    let gap = 1000.0 / f64::from(pps);
    let overtaken = ms.windows(2).filter(|w| w[1] + gap < w[0]).count();
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "reorder 25% of a 50 ms delay, {n} probes: {early} under 50 ms (counted reordered \
         {reordered}, delayed {delayed}), {overtaken} overtook the probe before; latency p10 \
         {:.1} ms, p50 {:.1} ms, min of the delayed {:.1} ms",
        sorted[n as usize / 10],
        sorted[n as usize / 2],
        ms.iter()
            .filter(|&&m| m >= 50.0)
            .fold(f64::MAX, |a, &b| a.min(b)),
    );
    assert_eq!(reordered + delayed, u64::from(n), "each probe judged once");
    stats::assert_binomial(early, u64::from(n), 0.25, "probes under 50 ms");
    assert!(
        early <= reordered,
        "a probe under 50 ms was not delayed: {early} early, {reordered} reordered"
    );
    // Each reordered probe whose predecessor was delayed overtakes it: about n p (1 - p).
    assert!(
        overtaken as f64 > 0.5 * f64::from(n) * 0.25 * 0.75,
        "{overtaken} probes overtaken"
    );
}

#[test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm test)"]
fn a_dns_delay_holds_its_names_answers_and_no_others() {
    require_root();
    assert!(
        injector::kernel::features::fq(),
        "this kernel has no sch_fq"
    );
    let l = Lab::up(&lab::run_prefix("vdns"), 2).unwrap();
    let (server, near, far) = (l.pod(1, 2), l.pod(1, 1), l.pod(2, 1));
    let _r = dns::Resolver::start(server);
    let s4 = IpAddr::from(server.ip);
    dns::wait_answering(near, s4);
    dns::wait_answering(far, s4);
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let faults = format!(
        r#"[{{"name":"slow-dns","to":["{}","{}"],"dns":"delay","delay":"700ms","dns_name":[".prod.svc.cluster.local"],"for":"5m"}},
            {{"name":"nx","to":["{}","{}"],"dns":"nxdomain","dns_name":["db.payments.svc.cluster.local"],"for":"5m"}}]"#,
        near.ip, far.ip, near.ip, far.ip
    );
    d1.apply(&faults).unwrap();
    d2.apply(&faults).unwrap();
    for from in [near, far] {
        // EDT never releases early: an answer that came sooner than the delay was not held.
        let (status, took) = dns::dig_timed(from, s4, "db.prod.svc.cluster.local");
        assert_eq!(status, dns::ANSWERED, "{}: held, then answered", from.name);
        assert!(
            took >= Duration::from_millis(700),
            "{}: answered after {took:?}, before the 700ms delay",
            from.name
        );
        assert_eq!(
            dns::dig(from, s4, "db.payments.svc.cluster.local"),
            "NXDOMAIN",
            "{}",
            from.name
        );
    }
    let s = d1.local(&["stats"]).unwrap();
    assert_eq!(
        stats::fault(&s, "slow-dns", "veth_egress", "delayed"),
        1,
        "{s}"
    );
    assert_eq!(
        stats::fault(&s, "slow-dns", "overlay_egress", "delayed"),
        1,
        "{s}"
    );
    assert_eq!(stats::fault(&s, "nx", "veth_egress", "rejected"), 1, "{s}");
}
