//! Reject with real traffic on the two-node lab: a TCP connect to a rejected port is refused, an
//! established connection is reset, a connected UDP socket is refused, with each reply kind's
//! error, IPv4 and IPv6 (IPv6 within a node: the lab models no flannel-v6.1), same-node and
//! cross-node, and with `--xdp`. Errors are asserted by kind: a timeout is an error of its own.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Result;
use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod},
    require_root, stats,
    traffic::in_netns,
};

/// Long enough that only a lost reply can use it up: a refusal comes back in microseconds.
const WAIT: Duration = Duration::from_secs(5);

/// A TCP listener that keeps what it accepts open (reading and discarding), and a UDP echo
/// server, on `port` of every address of a pod (IPv4 and IPv6). Stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(netns: &str, port: u16) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let tcp = in_netns(netns, move || Ok(TcpListener::bind(("::", port))?))?;
        let udp = in_netns(netns, move || Ok(UdpSocket::bind(("::", port))?))?;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let s1 = stop.clone();
        let t1 = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !s1.load(Ordering::Relaxed) {
                if let Ok((c, _)) = tcp.accept() {
                    let _ = c.set_nonblocking(true);
                    held.push(c);
                }
                for c in &mut held {
                    let _ = c.read(&mut buf);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let s2 = stop.clone();
        let t2 = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        Ok(Server {
            stop,
            threads: vec![t1, t2],
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP connect from `netns`: Ok, or the error's kind.
fn connect(netns: &str, dst: SocketAddr) -> Result<Result<(), ErrorKind>> {
    in_netns(netns, move || {
        Ok(TcpStream::connect_timeout(&dst, WAIT)
            .map(drop)
            .map_err(|e| e.kind()))
    })
}

/// A connected UDP socket from `netns` sends one datagram and reads: Ok (the echo), or the
/// error's kind.
fn udp_exchange(netns: &str, dst: SocketAddr) -> Result<Result<(), ErrorKind>> {
    in_netns(netns, move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let s = UdpSocket::bind(bind)?;
        s.connect(dst)?;
        s.set_read_timeout(Some(WAIT))?;
        s.send(b"ping")?;
        let mut buf = [0u8; 16];
        Ok(s.recv(&mut buf).map(drop).map_err(|e| e.kind()))
    })
}

fn daemons(l: &Lab, extra: &[&str], faults: &str) -> (Daemon, Daemon) {
    let d1 = Daemon::start_with(&injector_bin(), l.node(1), extra).unwrap();
    let d2 = Daemon::start_with(&injector_bin(), l.node(2), extra).unwrap();
    d1.apply(faults).unwrap();
    d2.apply(faults).unwrap();
    (d1, d2)
}

fn ip(p: &Pod, v6: bool) -> IpAddr {
    if v6 { p.ip6.into() } else { p.ip.into() }
}

/// Rejected TCP and UDP to `b`'s port 7000 from `a` (`v6`: over IPv6): connect refused,
/// datagram refused; port 7001 untouched; each rejection counted once on `a`'s node at `hook`,
/// never on the other node.
fn refused(l: &Lab, a: &Pod, b: &Pod, v6: bool, extra: &[&str], hook: &str) {
    let dst = ip(b, v6);
    let _srv = Server::start(&b.netns, 7000).unwrap();
    let _srv2 = Server::start(&b.netns, 7001).unwrap();
    let at = |port| SocketAddr::new(dst, port);
    assert_eq!(
        connect(&a.netns, at(7000)).unwrap(),
        Ok(()),
        "before the fault"
    );
    assert_eq!(
        udp_exchange(&a.netns, at(7000)).unwrap(),
        Ok(()),
        "before the fault"
    );
    let faults = format!(
        r#"[{{"name":"rej","from":["{}"],"to":["{dst}"],"dport":["7000"],"proto":"tcp","reject":true,"for":"5m"}},
            {{"name":"rej-udp","from":["{}"],"to":["{dst}"],"dport":["7000"],"proto":"udp","reject":true,"for":"5m"}}]"#,
        ip(a, v6),
        ip(a, v6)
    );
    let (d1, d2) = daemons(l, extra, &faults);
    let (mine, other) = if a.node == 1 { (&d1, &d2) } else { (&d2, &d1) };
    for _ in 0..3 {
        assert_eq!(
            connect(&a.netns, at(7000)).unwrap(),
            Err(ErrorKind::ConnectionRefused),
            "{} -> {dst}: TCP connect to a rejected port",
            a.name
        );
        assert_eq!(
            udp_exchange(&a.netns, at(7000)).unwrap(),
            Err(ErrorKind::ConnectionRefused),
            "{} -> {dst}: UDP to a rejected port",
            a.name
        );
    }
    assert_eq!(
        connect(&a.netns, at(7001)).unwrap(),
        Ok(()),
        "port 7001 untouched"
    );
    assert_eq!(
        udp_exchange(&a.netns, at(7001)).unwrap(),
        Ok(()),
        "port 7001 untouched"
    );
    let s = mine.local(&["stats"]).unwrap();
    assert_eq!(
        stats::fault(&s, "rej", hook, "rejected"),
        3,
        "one SYN each:\n{s}"
    );
    assert_eq!(stats::fault(&s, "rej-udp", hook, "rejected"), 3, "{s}");
    let o = other.local(&["stats"]).unwrap();
    for f in ["rej", "rej-udp"] {
        for h in ["veth_egress", "overlay_egress", "veth_ingress"] {
            assert_eq!(
                stats::fault(&o, f, h, "matched"),
                0,
                "judged on the other node:\n{o}"
            );
        }
    }
}

#[test]
fn rejected_tcp_and_udp_are_refused_same_node_v4_and_v6() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rs"), 2).unwrap();
    refused(&l, l.pod(1, 1), l.pod(1, 2), false, &[], "veth_egress");
    drop(l);
    let l = Lab::up(&lab::run_prefix("r6"), 2).unwrap();
    refused(&l, l.pod(1, 1), l.pod(1, 2), true, &[], "veth_egress");
}

#[test]
fn rejected_tcp_and_udp_are_refused_cross_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rx"), 2).unwrap();
    refused(&l, l.pod(1, 1), l.pod(2, 1), false, &[], "overlay_egress");
}

#[test]
fn with_xdp_reject_is_still_answered_at_the_egress_hook() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rX"), 2).unwrap();
    refused(
        &l,
        l.pod(1, 1),
        l.pod(2, 1),
        false,
        &["--xdp"],
        "overlay_egress",
    );
}

/// A connection established before the fault is reset by the first segment it sends after.
fn reset(l: &Lab, a: &Pod, b: &Pod, v6: bool) {
    let dst = ip(b, v6);
    let _srv = Server::start(&b.netns, 7000).unwrap();
    let to = SocketAddr::new(dst, 7000);
    let mut c = in_netns(&a.netns, move || Ok(TcpStream::connect_timeout(&to, WAIT)?)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"before").unwrap();
    let faults = format!(
        r#"[{{"name":"rst","to":["{dst}"],"dport":["7000"],"proto":"tcp","reject":true,"for":"5m"}}]"#
    );
    let (_d1, _d2) = daemons(l, &[], &faults);
    c.write_all(b"after").unwrap();
    let mut buf = [0u8; 16];
    let got = c.read(&mut buf).map_err(|e| e.kind());
    assert_eq!(
        got,
        Err(ErrorKind::ConnectionReset),
        "{} -> {to}: the established connection is reset",
        a.name
    );
}

#[test]
fn an_established_connection_is_reset_same_node_v4_and_v6_and_cross_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("re"), 2).unwrap();
    reset(&l, l.pod(1, 1), l.pod(1, 2), false);
    drop(l);
    let l = Lab::up(&lab::run_prefix("rE"), 2).unwrap();
    reset(&l, l.pod(1, 1), l.pod(1, 2), true);
    drop(l);
    let l = Lab::up(&lab::run_prefix("rr"), 2).unwrap();
    reset(&l, l.pod(1, 1), l.pod(2, 1), false);
}

/// Each `--reject-with` gives the sender its own error: host unreachable and administratively
/// prohibited fail a connect with EHOSTUNREACH (IPv6's prohibited: EACCES); a reset refuses it.
#[test]
fn each_reply_kind_gives_its_error() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rk"), 2).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let _srv = Server::start(&b.netns, 7000).unwrap();
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let cases: [(&str, bool, ErrorKind); 6] = [
        ("tcp-reset", false, ErrorKind::ConnectionRefused),
        ("icmp-port", false, ErrorKind::ConnectionRefused),
        ("icmp-host", false, ErrorKind::HostUnreachable),
        ("icmp-admin", false, ErrorKind::HostUnreachable),
        ("icmp-host", true, ErrorKind::HostUnreachable),
        ("icmp-admin", true, ErrorKind::PermissionDenied),
    ];
    for (with, v6, want) in cases {
        let dst = ip(b, v6);
        d1.cli_ok(
            &[
                "fault",
                "add",
                "kind",
                "--to",
                &dst.to_string(),
                "--proto",
                "tcp",
                "--dport",
                "7000",
                "--reject",
                "--reject-with",
                with,
                "--replace",
                "--for",
                "5m",
            ],
            "",
        )
        .unwrap();
        assert_eq!(
            connect(&a.netns, SocketAddr::new(dst, 7000)).unwrap(),
            Err(want),
            "--reject-with {with} to {dst}"
        );
    }
}

/// From the node itself (its own stack, not a pod): to a pod on the node the reply goes back in
/// through the pod's veth and up the bridge to the host; to a pod on another node it comes in
/// through flannel.1 and is delivered locally.
#[test]
fn the_node_itself_is_refused_too() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rn"), 2).unwrap();
    let (local, remote) = (l.pod(1, 1), l.pod(2, 1));
    let _s1 = Server::start(&local.netns, 7000).unwrap();
    let _s2 = Server::start(&remote.netns, 7000).unwrap();
    let faults = format!(
        r#"[{{"name":"rej","to":["{}","{}"],"dport":["7000"],"proto":"tcp","reject":true,"for":"5m"}}]"#,
        local.ip, remote.ip
    );
    let (d1, _d2) = daemons(&l, &[], &faults);
    for (p, hook) in [(local, "veth_egress"), (remote, "overlay_egress")] {
        assert_eq!(
            connect(&l.node(1).netns, SocketAddr::new(p.ip.into(), 7000)).unwrap(),
            Err(ErrorKind::ConnectionRefused),
            "node1 -> {}",
            p.name
        );
        let s = d1.local(&["stats"]).unwrap();
        assert_eq!(stats::fault(&s, "rej", hook, "rejected"), 1, "{s}");
    }
}
