//! Bandwidth on the two-node lab, policed (this host has no fq, so the daemon polices; the VM
//! tests pace): a UDP flood far above the rate gets through no more than the rate over the flood's
//! time plus the bucket (GCRA's bound), and the fault drops the rest, counted; a TCP transfer
//! under the policer completes intact and no faster than the rate allows; same-node and
//! cross-node. The reply to `fault add` says the rate is policed. What the policer delivers
//! (its share of the rate) is measured in `cargo xtask bench`, not asserted here.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod},
    perf, require_root,
    traffic::in_netns,
};

/// 10mbit in bytes a second, and the default bucket.
const RATE: f64 = 1_250_000.0;
const BUCKET: f64 = 256.0 * 1024.0;
/// IP and UDP headers of an IPv4 datagram.
const UDP_HDRS: usize = 28;

/// Both nodes' daemons with a 10mbit fault from `a` to `b`; the CLI's reply on node 1.
fn daemons(l: &Lab, a: &Pod, b: &Pod) -> (Daemon, Daemon, String) {
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let (from, to) = (format!("{}/32", a.ip), format!("{}/32", b.ip));
    let args = [
        "fault", "add", "bw", "--from", &from, "--to", &to, "--rate", "10mbit", "--for", "5m",
    ];
    let reply = d1.cli_ok(&args, "").unwrap();
    d2.cli_ok(&args, "").unwrap();
    (d1, d2, reply)
}

/// A flood of 1000-byte datagrams from `a` to `b` for 2 s: no more than the rate over the flood's
/// time plus the bucket arrives (a one-packet margin per CPU for the schedule's unlocked update),
/// and what the fault dropped is what did not arrive.
fn flood(d: &Daemon, a: &Pod, b: &Pod) {
    const LEN: usize = 1000;
    let rx = in_netns(&b.netns, || Ok(UdpSocket::bind(("0.0.0.0", 7200))?)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while rx.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let dst = SocketAddr::new(IpAddr::V4(b.ip), 7200);
    let started = Instant::now();
    let f = perf::flood(&a.netns, dst, LEN, Duration::from_secs(2)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let got = receiver.join().expect("the receiver panicked");
    let ip_bytes = (got * (LEN + UDP_HDRS) as u64) as f64;
    let bound = RATE * secs + BUCKET + 2.0 * (LEN + UDP_HDRS) as f64;
    eprintln!(
        "flood: {} sent, {got} arrived: {:.2} Mbit/s over {secs:.2} s (bound {:.2})",
        f.packets,
        ip_bytes * 8.0 / secs / 1e6,
        bound * 8.0 / secs / 1e6
    );
    assert!(got > 0, "some of the flood arrives");
    assert!(
        ip_bytes <= bound,
        "{ip_bytes} IP bytes arrived in {secs:.2} s: more than the rate and the bucket allow ({bound})"
    );
    let dropped = d.counted("bw", "dropped");
    assert!(dropped > 0, "the fault dropped what was above the rate");
    let passed = d.counted("bw", "passed");
    assert!(
        passed >= got,
        "every datagram that arrived was passed by the fault: {passed} passed, {got} arrived"
    );
}

/// 3 MB over TCP from `a` to `b`: every byte arrives intact, no sooner than the rate allows
/// (minus the bucket).
fn transfer(a: &Pod, b: &Pod) {
    const SIZE: usize = 3 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
    let want = data.clone();
    let listener = in_netns(&b.netns, || Ok(TcpListener::bind(("0.0.0.0", 7201))?)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::with_capacity(SIZE);
        s.read_to_end(&mut got).unwrap();
        got
    });
    let dst = SocketAddr::new(IpAddr::V4(b.ip), 7201);
    let started = Instant::now();
    in_netns(&a.netns, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))?;
        s.write_all(&data)?;
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    })
    .unwrap();
    let got = server.join().expect("the server panicked");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        got == want,
        "the transfer arrived intact ({} bytes)",
        got.len()
    );
    let fastest = (SIZE as f64 - BUCKET) / RATE;
    eprintln!(
        "transfer: {SIZE} bytes in {secs:.2} s: {:.2} Mbit/s of payload",
        SIZE as f64 * 8.0 / secs / 1e6
    );
    assert!(
        secs >= fastest,
        "{SIZE} bytes in {secs:.2} s: faster than 10mbit allows ({fastest:.2} s)"
    );
}

fn policed(l: &Lab, a: &Pod, b: &Pod) {
    let (d1, _d2, reply) = daemons(l, a, b);
    assert!(
        reply.contains("rate: policed"),
        "the reply says the rate is policed here: {reply}"
    );
    flood(&d1, a, b);
    transfer(a, b);
}

#[test]
fn a_policed_rate_holds_a_flood_to_the_rate_and_a_transfer_completes_same_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rs"), 2).unwrap();
    policed(&l, l.pod(1, 1), l.pod(1, 2));
}

#[test]
fn a_policed_rate_holds_a_flood_to_the_rate_and_a_transfer_completes_cross_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("rx"), 2).unwrap();
    policed(&l, l.pod(1, 1), l.pod(2, 1));
}
