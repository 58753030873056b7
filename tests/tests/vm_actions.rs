//! Reject, duplicate and delay together on Debian 12's 6.1 kernel (sch_fq, no TCX), in the VM:
//! a connect to a rejected port is refused, and a duplicated packet that is also delayed arrives
//! twice, both copies held by fq. Ignored on the host (no fq); run by `cargo xtask vm test`
//! (part of `cargo xtask test`) in real time, so only minima are asserted.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use injector_tests::{
    cmd,
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root,
    traffic::in_netns,
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
