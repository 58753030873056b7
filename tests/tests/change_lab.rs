//! Duplicate and corrupt with real traffic on the two-node lab: sequence-numbered UDP probes
//! show the duplicate and loss shares within the binomial bound, the receiver's own checksum
//! counters show that a corrupted packet reached it and was discarded (or that a packet whose
//! checksum the sender had left to the device was dropped in its place, never delivered), and
//! a TCP transfer completes with every byte intact under each; same-node and cross-node.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod},
    require_root, stats,
    traffic::{in_netns, snmp},
};

fn daemons(l: &Lab, faults: &str) -> (Daemon, Daemon) {
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    d1.apply(faults).unwrap();
    d2.apply(faults).unwrap();
    (d1, d2)
}

/// What one probe datagram carries: its sequence number, then bytes derived from it.
fn probe(seq: u32) -> Vec<u8> {
    let mut m = seq.to_be_bytes().to_vec();
    m.extend((0..60u32).map(|i| (seq.wrapping_mul(31).wrapping_add(i * 7)) as u8));
    m
}

/// `n` probes from `a` to `b` (UDP port 7100), paced, received as they come into a socket buffer
/// with room for all; returns how often each arrived. Every datagram that arrives must be intact,
/// and none may be lost to a full receive buffer.
fn probes(a: &Pod, b: &Pod, n: u32) -> Vec<u32> {
    let rx = in_netns(&b.netns, || Ok(UdpSocket::bind(("0.0.0.0", 7100))?)).unwrap();
    // Room for every probe (~1 KiB of buffer each): a receiver thread starved by a loaded
    // machine must not lose any, or the losses would not be the fault's.
    let room: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&rx),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const room).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = vec![0u32; n as usize];
        let mut buf = [0u8; 256];
        // Until nothing came for 500 ms (the sender is done by then).
        while let Ok(len) = rx.recv(&mut buf) {
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert!(seq < n, "a probe with sequence number {seq}");
            assert_eq!(buf[..len], probe(seq)[..], "probe {seq} arrived changed");
            got[seq as usize] += 1;
        }
        got
    });
    let rcvbuf_before = snmp(&b.netns, "Udp", "RcvbufErrors");
    let dst = SocketAddr::new(IpAddr::V4(b.ip), 7100);
    in_netns(&a.netns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        for seq in 0..n {
            s.send_to(&probe(seq), dst)?;
            if seq % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    })
    .unwrap();
    let got = receiver.join().expect("the receiver panicked");
    assert_eq!(
        snmp(&b.netns, "Udp", "RcvbufErrors") - rcvbuf_before,
        0,
        "no probe lost to a full receive buffer"
    );
    got
}

/// A 10% duplicate from `a` to `b`: 4000 probes, each arrives once or twice, the twice within
/// the binomial bound of 10%, exactly as counted; none lost.
fn duplicate(l: &Lab, a: &Pod, b: &Pod) {
    let faults = format!(
        r#"[{{"name":"dup","from":["{}"],"to":["{}"],"proto":"udp","dport":["7100"],"duplicate":"10%","for":"5m"}}]"#,
        a.ip, b.ip
    );
    let (d1, _d2) = daemons(l, &faults);
    let n = 4000;
    let got = probes(a, b, n);
    assert!(
        got.iter().all(|c| (1..=2).contains(c)),
        "each probe once or twice"
    );
    let twice = got.iter().filter(|c| **c == 2).count() as u64;
    stats::assert_binomial(twice, u64::from(n), 0.1, "probes received twice");
    assert_eq!(
        d1.counted("dup", "duplicated"),
        twice,
        "counted as duplicated"
    );
    assert_eq!(
        d1.counted("dup", "matched"),
        u64::from(n),
        "judged once each"
    );
}

#[test]
fn duplicates_are_a_binomial_share_same_node_and_cross_node() {
    require_root();
    let l = Lab::up(&lab::run_prefix("ds"), 2).unwrap();
    duplicate(&l, l.pod(1, 1), l.pod(1, 2));
    drop(l);
    let l = Lab::up(&lab::run_prefix("dx"), 2).unwrap();
    duplicate(&l, l.pod(1, 1), l.pod(2, 1));
}

/// A 10% corrupt on pings from `a` to `b`: ICMP is checksummed by the sender's stack, so the
/// flipped bit reaches `b`, whose ICMP checksum check discards exactly the corrupted requests
/// (its InCsumErrors), and ping loses a binomial share.
fn corrupted_pings(l: &Lab, a: &Pod, b: &Pod) {
    let faults = format!(
        r#"[{{"name":"cor","from":["{}"],"to":["{}"],"proto":"icmp","corrupt":"10%","for":"5m"}}]"#,
        a.ip, b.ip
    );
    let (d1, _d2) = daemons(l, &faults);
    let before = snmp(&b.netns, "Icmp", "InCsumErrors");
    let n = 4000u32;
    let lost = n - l.ping_fast(a, b.ip.into(), n).unwrap();
    let corrupted = d1.counted("cor", "corrupted");
    stats::assert_binomial(u64::from(lost), u64::from(n), 0.1, "pings lost");
    assert_eq!(
        corrupted,
        u64::from(lost),
        "every corrupted request lost a ping"
    );
    assert_eq!(
        snmp(&b.netns, "Icmp", "InCsumErrors") - before,
        corrupted,
        "the receiver discarded each for its checksum"
    );
}

#[test]
fn corrupted_pings_reach_the_receiver_and_fail_its_checksum() {
    require_root();
    let l = Lab::up(&lab::run_prefix("cs"), 2).unwrap();
    corrupted_pings(&l, l.pod(1, 1), l.pod(1, 2));
    drop(l);
    let l = Lab::up(&lab::run_prefix("cx"), 2).unwrap();
    corrupted_pings(&l, l.pod(1, 1), l.pod(2, 1));
}

/// UDP from a pod's socket leaves its checksum to the device (CHECKSUM_PARTIAL through veth):
/// corrupted, it would be delivered as it is. Corrupt drops those instead: a binomial share of
/// the probes is lost, none arrives changed (`probes` checks each), and the receiver's UDP
/// checksum counter does not move.
#[test]
fn corrupted_udp_from_a_local_socket_is_dropped_not_delivered() {
    require_root();
    let l = Lab::up(&lab::run_prefix("cu"), 2).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(2, 1));
    let faults = format!(
        r#"[{{"name":"cor","to":["{}"],"proto":"udp","dport":["7100"],"corrupt":"10%","for":"5m"}}]"#,
        b.ip
    );
    let (d1, _d2) = daemons(&l, &faults);
    let before = snmp(&b.netns, "Udp", "InCsumErrors");
    let n = 4000;
    let got = probes(a, b, n);
    let lost = got.iter().filter(|c| **c == 0).count() as u64;
    stats::assert_binomial(lost, u64::from(n), 0.1, "probes lost");
    assert_eq!(d1.counted("cor", "corrupted"), lost);
    assert_eq!(snmp(&b.netns, "Udp", "InCsumErrors"), before);
}

/// 4 MB over TCP from `a` to `b` under `fault` (its action field): the transfer completes and
/// every byte arrives intact; the fault acted on its share of the judged packets (a GSO packet
/// is judged once, so how many there are depends on the machine's load: the share is checked
/// against the binomial bound of the count, not a fixed number).
fn transfer(l: &Lab, a: &Pod, b: &Pod, action: &str, outcome: &str, p: f64) {
    let faults = format!(
        r#"[{{"name":"f","from":["{}"],"to":["{}"],"proto":"tcp","dport":["7200"],{action},"for":"5m"}}]"#,
        a.ip, b.ip
    );
    let (d1, _d2) = daemons(l, &faults);
    let listener = in_netns(&b.netns, || Ok(TcpListener::bind(("0.0.0.0", 7200))?)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let got = (|| -> std::io::Result<Vec<u8>> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            let mut all = Vec::new();
            s.read_to_end(&mut all)?;
            Ok(all)
        })();
        let _ = tx.send(got);
    });
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let to = SocketAddr::new(IpAddr::V4(b.ip), 7200);
    let sent = data.clone();
    in_netns(&a.netns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(&sent)?;
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    })
    .unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the receiver finished")
        .expect("the receiver read to the end");
    assert_eq!(got.len(), data.len(), "{action}: every byte arrived");
    assert!(got == data, "{action}: the bytes arrived intact");
    let matched = d1.counted("f", "matched");
    assert!(matched > 0, "{action}: the transfer was judged");
    stats::assert_binomial(d1.counted("f", outcome), matched, p, action);
}

#[test]
fn a_tcp_transfer_completes_intact_under_duplicate_and_corrupt() {
    require_root();
    for (tag, cross) in [("ts", false), ("tx", true)] {
        for (action, outcome, p) in [
            (r#""duplicate":"5%""#, "duplicated", 0.05),
            (r#""corrupt":"1%""#, "corrupted", 0.01),
        ] {
            let l = Lab::up(&lab::run_prefix(tag), 2).unwrap();
            let b = if cross { l.pod(2, 1) } else { l.pod(1, 2) };
            transfer(&l, l.pod(1, 1), b, action, outcome, p);
        }
    }
}
