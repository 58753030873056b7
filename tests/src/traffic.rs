//! Real traffic between lab pods, from threads of the test process that enter a pod's network
//! namespace (sockets belong to the namespace they are created in): UDP echo servers and probes,
//! TCP listeners and connects. Every loop is bounded in count and time.

use std::{
    fs::File,
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Moves the calling thread into `netns`.
pub fn enter(netns: &str) -> Result<()> {
    let path = format!("/run/netns/{netns}");
    let f = File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid fd, for this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside `netns` and waits for it.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = netns.to_string();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {netns} panicked"))?
}

/// UDP and TCP servers in a pod: UDP echoes every datagram, TCP accepts and closes.
/// Stopped and joined on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(netns: &str, udp_ports: &[u16], tcp_ports: &[u16]) -> Result<Servers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in udp_ports {
            let sock = in_netns(netns, move || Ok(UdpSocket::bind(("0.0.0.0", port))?))?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        for &port in tcp_ports {
            let l = in_netns(netns, move || Ok(TcpListener::bind(("0.0.0.0", port))?))?;
            l.set_nonblocking(true)?;
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => drop(s),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        Ok(Servers { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// From `netns`, one UDP flow per source port in `sports` to `dst`: sends a datagram on each and
/// returns, per flow, whether its echo came back within `wait`.
pub fn udp_flows(
    netns: &str,
    dst: SocketAddr,
    sports: Vec<u16>,
    wait: Duration,
) -> Result<Vec<bool>> {
    in_netns(netns, move || {
        let socks = sports
            .iter()
            .map(|p| {
                let s = UdpSocket::bind(("0.0.0.0", *p))?;
                s.set_nonblocking(true)?;
                s.send_to(&p.to_be_bytes(), dst)?;
                // Paced: a burst would overflow the echo server's receive buffer (~270 skbs).
                std::thread::sleep(Duration::from_micros(500));
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut got = vec![false; socks.len()];
        let end = Instant::now() + wait;
        let mut buf = [0u8; 64];
        while Instant::now() < end && got.iter().any(|g| !g) {
            for (i, s) in socks.iter().enumerate() {
                if !got[i] && s.recv(&mut buf).is_ok() {
                    got[i] = true;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(got)
    })
}

/// From `netns`, `count` datagrams to `dst` on one socket; returns how many echoes came back.
pub fn udp_echoes(netns: &str, dst: SocketAddr, count: u32, wait: Duration) -> Result<u32> {
    in_netns(netns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        for i in 0..count {
            s.send_to(&i.to_be_bytes(), dst)?;
        }
        let mut n = 0;
        let end = Instant::now() + wait;
        let mut buf = [0u8; 64];
        while n < count && Instant::now() < end {
            if s.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    })
}

/// From `netns`, whether a TCP connection to `dst` is established within `timeout`.
pub fn tcp_connects(netns: &str, dst: SocketAddr, timeout: Duration) -> Result<bool> {
    in_netns(netns, move || {
        Ok(TcpStream::connect_timeout(&dst, timeout).is_ok())
    })
}

/// An HTTP/1.0 GET to `addr` from inside `netns`, with `accept` as the Accept header; returns the
/// status and the body.
pub fn http_get(netns: &str, addr: SocketAddr, path: &str, accept: &str) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n");
    let raw = in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(raw)
    })?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((status, body.to_string()))
}

pub use injector_common::monotonic_ns;

/// When [`one_way`]'s probes are sent.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// Every 1/pps.
    Even,
    /// At random times, pps on average (exponential gaps: Poisson arrivals, from this seed).
    /// Probes then sample the path at every phase: with an even schedule and a delay of a whole
    /// number of periods, every held probe comes due exactly while a later one is being sent.
    Poisson(u64),
}

/// One-way latencies: `count` UDP probes at `pps` from `from_ns` to `dst` (a receiver bound in
/// `to_ns`), each carrying its send time, sent round-robin from `ports` source ports (distinct
/// flows for fq), on `schedule`. Returns each probe's latency in ns, `None` when it never arrived.
pub fn one_way(
    from_ns: &str,
    to_ns: &str,
    dst: SocketAddr,
    count: u32,
    pps: u32,
    ports: u16,
    schedule: Schedule,
) -> Result<Vec<Option<u64>>> {
    let rx = in_netns(to_ns, move || Ok(UdpSocket::bind(("0.0.0.0", dst.port()))?))?;
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got = vec![None; count as usize];
            let mut buf = [0u8; 64];
            let mut idle_since: Option<Instant> = None;
            loop {
                match rx.recv(&mut buf) {
                    Ok(n) if n >= 12 => {
                        let now = monotonic_ns();
                        let seq = u32::from_le_bytes(buf[..4].try_into().expect("4")) as usize;
                        let sent = u64::from_le_bytes(buf[4..12].try_into().expect("8"));
                        if seq < got.len() {
                            got[seq] = Some(now.saturating_sub(sent));
                        }
                    }
                    _ => {}
                }
                if done.load(Ordering::Relaxed) {
                    let t = *idle_since.get_or_insert_with(Instant::now);
                    if t.elapsed() > Duration::from_secs(3) || got.iter().all(Option::is_some) {
                        return got;
                    }
                }
            }
        })
    };
    let sent = in_netns(from_ns, move || {
        let socks = (0..ports)
            .map(|_| UdpSocket::bind(("0.0.0.0", 0)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let period_ns = 1e9 / f64::from(pps);
        let mut rng = match schedule {
            Schedule::Even => None,
            Schedule::Poisson(seed) => Some(crate::rng::Rng::new(seed)),
        };
        let start = Instant::now();
        let mut at_ns = 0.0f64;
        for seq in 0..count {
            let due = start + Duration::from_nanos(at_ns as u64);
            at_ns += match &mut rng {
                None => period_ns,
                Some(r) => {
                    // Inverse transform: -ln(U) with U uniform in (0, 1].
                    let u = ((r.u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
                    -u.ln() * period_ns
                }
            };
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let mut msg = [0u8; 12];
            msg[..4].copy_from_slice(&seq.to_le_bytes());
            msg[4..].copy_from_slice(&monotonic_ns().to_le_bytes());
            socks[(seq % u32::from(ports)) as usize].send_to(&msg, dst)?;
        }
        Ok(())
    });
    done.store(true, Ordering::Relaxed);
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    sent?;
    Ok(got)
}

/// A counter of /proc/net/snmp in `ns` (e.g. `Udp` `InCsumErrors`).
pub fn snmp(ns: &str, proto: &str, field: &str) -> u64 {
    let text = crate::cmd::in_ns(ns, "cat", &["/proc/net/snmp"]).unwrap();
    let mut rows = text
        .lines()
        .filter(|l| l.starts_with(&format!("{proto}: ")));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|f| f == field)
        .unwrap_or_else(|| panic!("no {proto} {field} in {names}"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}
