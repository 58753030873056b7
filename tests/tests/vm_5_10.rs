//! On Debian 11's 5.10 kernel (no `bpf_skb_set_tstamp`, no TCX), in the VM: the daemon loads the
//! programs without the EDT stamp, drop and blackhole work with real traffic in the lab, reject
//! refuses a connect and duplicate sends each datagram twice, a rate is policed (no EDT to pace
//! with), and a delay fault is refused by the API naming the field and the reason. Ignored on the host; run by `cargo xtask vm test
//! --kernel 5.10` (part of `cargo xtask test`), one short real-time run.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab},
    require_root,
    traffic::in_netns,
};

#[test]
#[ignore = "needs a kernel without bpf_skb_set_tstamp: runs in the VM (cargo xtask vm test --kernel 5.10)"]
fn old_kernel_drops_and_blackholes_and_refuses_delay() {
    require_root();
    assert!(
        !injector::kernel::features::edt_stamp(),
        "this test is about a kernel without bpf_skb_set_tstamp (5.18+)"
    );
    let l = Lab::up(&lab::run_prefix("v5"), 2).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let (a, b, c, e) = (l.pod(1, 1), l.pod(1, 2), l.pod(2, 1), l.pod(2, 2));

    let st: serde_json::Value =
        serde_json::from_str(&d1.cli_ok(&["status", "-o", "json"], "").unwrap()).unwrap();
    assert_eq!(st["features"]["edt_stamp"], false, "{st}");
    assert_eq!(st["features"]["tcx"], false, "{st}");
    for (name, i) in st["interfaces"].as_object().expect("interfaces") {
        assert!(i["error"].is_null(), "{name}: {}", i["error"]);
    }
    let log = d1.log_text();
    assert!(!log.contains("attach failed"), "{log}");

    // A delay fault: refused, naming the field and the reason; nothing installed.
    let delay = format!(
        r#"[{{"name":"d","from":["{}"],"to":["{}"],"delay":"50ms","for":"5m"}}]"#,
        a.ip, b.ip
    );
    let err = d1.apply(&delay).unwrap_err().to_string();
    eprintln!("delay refused: {err}");
    for want in [
        "faults[0].delay: this kernel (5.10",
        "lacks bpf_skb_set_tstamp (5.18+): delay cannot be stamped",
        "use loss or blackhole, or a kernel >= 5.18",
    ] {
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    assert!(!d1.cli_ok(&["fault", "ls"], "").unwrap().contains("d "));

    // Blackhole across nodes (judged at flannel.1 egress on node1), loss same-node (at b's veth).
    let faults = format!(
        r#"[{{"name":"bh","from":["{a}"],"to":["{c}"],"blackhole":true,"for":"5m"}},
            {{"name":"loss","from":["{a}"],"to":["{b}"],"proto":"icmp","loss":"30%","for":"5m"}}]"#,
        a = a.ip,
        b = b.ip,
        c = c.ip
    );
    d1.apply(&faults).unwrap();
    d2.apply(&faults).unwrap();
    assert_eq!(l.ping(a, c.ip.into(), 5).unwrap(), 0, "blackholed");
    assert_eq!(l.ping(a, e.ip.into(), 5).unwrap(), 5, "another pair is not");
    let n = 300;
    let got = l.ping(a, b.ip.into(), n).unwrap();
    eprintln!("30% loss, {n} pings a -> b: {got} answered");
    // Binomial(300, 0.7): mean 210, sd 7.9; 99.9% within +-26 (a little more for the emulator).
    assert!(
        (180..=236).contains(&got),
        "{got} of {n} answered with 30% loss"
    );
    d1.clear().unwrap();
    d2.clear().unwrap();
    assert_eq!(l.ping(a, c.ip.into(), 3).unwrap(), 3, "gone with the fault");

    // Reject (the reply built in place and redirected into the judging device's ingress) and
    // duplicate (a clone, recognised by the per-CPU token without the EDT stamp), cross-node.
    let _tcp = in_netns(&c.netns, || Ok(TcpListener::bind(("0.0.0.0", 7000))?)).unwrap();
    let udp = in_netns(&c.netns, || Ok(UdpSocket::bind(("0.0.0.0", 7001))?)).unwrap();
    let faults = format!(
        r#"[{{"name":"rej","to":["{c}"],"proto":"tcp","dport":["7000"],"reject":true,"for":"5m"}},
            {{"name":"dup","to":["{c}"],"proto":"udp","dport":["7001"],"duplicate":"100%","for":"5m"}}]"#,
        c = c.ip
    );
    d1.apply(&faults).unwrap();
    d2.apply(&faults).unwrap();
    let to = SocketAddr::new(c.ip.into(), 7000);
    let refused = in_netns(&a.netns, move || {
        Ok(TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| e.kind()))
    })
    .unwrap();
    assert_eq!(
        refused.err(),
        Some(ErrorKind::ConnectionRefused),
        "rejected"
    );
    let to = SocketAddr::new(c.ip.into(), 7001);
    in_netns(&a.netns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        for i in 0..10u8 {
            s.send_to(&[i], to)?;
        }
        Ok(())
    })
    .unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = 0;
    let mut buf = [0u8; 8];
    while udp.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 20, "each datagram twice");
    d1.clear().unwrap();
    d2.clear().unwrap();

    // A rate, policed here: 8kbit (1000 bytes/s) with a 1500-byte bucket passes two datagrams
    // of 1028 IP bytes sent back to back (the second runs 1.03 s ahead of the rate, within the
    // bucket's 1.5 s), then drops until the rate catches up.
    let faults = format!(
        r#"[{{"name":"bw","to":["{c}"],"proto":"udp","dport":["7001"],"rate":"8kbit","rate_burst":"1500b","for":"5m"}}]"#,
        c = c.ip
    );
    let reply = d1.apply(&faults).unwrap();
    assert!(reply.contains("rate: policed"), "{reply}");
    in_netns(&a.netns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        for _ in 0..10 {
            s.send_to(&[0u8; 1000], to)?;
        }
        Ok(())
    })
    .unwrap();
    let mut got = 0;
    let mut buf = [0u8; 1500];
    while udp.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 2, "the bucket's two datagrams, the rest policed");
    d1.clear().unwrap();
    d1.stop().unwrap();
    d2.stop().unwrap();
}
