//! Load and measurement for the benchmarks (and the VM tests): iperf3 between pods, a sendmmsg
//! UDP flood, a paced probe stream that records which probes arrived, round-trip times, CPU time
//! from /proc/stat and per-program run time from `bpf_stats`.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{SchedClassifier, TcAttachType};

use crate::{
    cmd, snapshot,
    traffic::{in_netns, monotonic_ns},
};

/// iperf3 (TCP) from `from_ns` to `to_ip` in `to_ns` for `secs`: received Mbit/s (0 if it failed).
pub fn iperf(from_ns: &str, to_ns: &str, to_ip: &str, secs: u32) -> Result<f64> {
    iperf_with(from_ns, to_ns, to_ip, secs, &[])
}

/// As [`iperf`], with more client options (`-P 2`: two flows, the sum; `-O 1`: the first
/// second left out).
pub fn iperf_with(
    from_ns: &str,
    to_ns: &str,
    to_ip: &str,
    secs: u32,
    extra: &[&str],
) -> Result<f64> {
    let mut server = Command::new("ip")
        .args(["netns", "exec", to_ns, "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run iperf3 (scripts/bootstrap.sh installs it)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            from_ns,
            "iperf3",
            "-c",
            to_ip,
            "-t",
            &secs.to_string(),
            "-J",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out?.stdout).unwrap_or_default();
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6)
}

/// The IP traffic (Mbit/s) that carries `payload` Mbit/s of full TCP segments in the lab (what a
/// rate fault counts): 1450 IP bytes (the pods' MTU) for 1398 of payload (20 bytes of IP, 32 of
/// TCP with timestamps).
pub fn tcp_ip_mbits(payload: f64) -> f64 {
    payload * 1450.0 / 1398.0
}

/// CPU time spent by every CPU outside idle and iowait so far (user, nice, system, irq, softirq),
/// in ns, from the first line of /proc/stat.
pub fn cpu_busy_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if f.len() < 7 {
        bail!("unexpected /proc/stat line: {line}");
    }
    // user nice system idle iowait irq softirq
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    // SAFETY: no arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(busy * 1_000_000_000 / hz)
}

/// What a flood did: datagrams handed to the kernel (accepted or refused with an error such as
/// EPERM from an OUTPUT DROP rule), of them refused, and CPU time of the whole machine meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub packets: u64,
    pub refused: u64,
    pub cpu_ns: u64,
    pub wall_ns: u64,
}

impl Flood {
    /// Packets per CPU-second.
    pub fn per_cpu_second(&self) -> f64 {
        self.packets as f64 / (self.cpu_ns.max(1) as f64 / 1e9)
    }
}

/// From `netns`, UDP datagrams of `len` bytes to `dst` as fast as one thread can, 64 per
/// `sendmmsg` call, for `dur`.
pub fn flood(netns: &str, dst: SocketAddr, len: usize, dur: Duration) -> Result<Flood> {
    in_netns(netns, move || {
        let sock = UdpSocket::bind(("0.0.0.0", 0))?;
        sock.connect(dst)?;
        const BATCH: usize = 64;
        let payload = vec![0x5au8; len];
        let mut iov: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: all-zero is a valid mmsghdr (null name, no control).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let (mut packets, mut refused) = (0u64, 0u64);
        let cpu0 = cpu_busy_ns()?;
        let start = Instant::now();
        while start.elapsed() < dur {
            let mut off = 0;
            while off < BATCH {
                // SAFETY: msgs[off..] are valid headers pointing at `payload`, alive for the call.
                let n = unsafe {
                    libc::sendmmsg(
                        sock.as_raw_fd(),
                        msgs[off..].as_mut_ptr(),
                        (BATCH - off) as u32,
                        0,
                    )
                };
                if n > 0 {
                    packets += n as u64;
                    off += n as usize;
                } else {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        // Refused by a local rule, or no buffer: the datagram was handled.
                        Some(libc::EPERM) | Some(libc::ENOBUFS) | Some(libc::ECONNREFUSED) => {
                            packets += 1;
                            refused += 1;
                            off += 1;
                        }
                        Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                        _ => return Err(e.into()),
                    }
                }
            }
        }
        let wall_ns = start.elapsed().as_nanos() as u64;
        let cpu_ns = cpu_busy_ns()? - cpu0;
        Ok(Flood {
            packets,
            refused,
            cpu_ns,
            wall_ns,
        })
    })
}

/// A UDP socket bound in `netns` on `port` that is never read: datagrams to it are delivered and
/// then dropped at its full receive buffer, with no ICMP sent back.
pub fn sink(netns: &str, port: u16) -> Result<UdpSocket> {
    in_netns(netns, move || Ok(UdpSocket::bind(("0.0.0.0", port))?))
}

/// Round trips of `count` datagrams, one at a time, from `netns` to a UDP echo server at `dst`
/// (see [`Servers`](crate::traffic::Servers)): each in ns; a lost one is left out.
pub fn udp_rtts(netns: &str, dst: SocketAddr, count: u32) -> Result<Vec<u64>> {
    in_netns(netns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0))?;
        s.connect(dst)?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut out = Vec::with_capacity(count as usize);
        let mut buf = [0u8; 16];
        for i in 0..count {
            let t = monotonic_ns();
            s.send(&i.to_le_bytes())?;
            // Wait for this probe's echo; a late echo of an earlier one is skipped.
            while let Ok(n) = s.recv(&mut buf) {
                if n == 4 && buf[..4] == i.to_le_bytes() {
                    out.push(monotonic_ns() - t);
                    break;
                }
            }
        }
        Ok(out)
    })
}

/// A paced stream of sequence-numbered UDP probes from one pod to another (or on several such
/// paths, taken in turn by one sender thread), recording each probe's send time and whether it
/// arrived: what an apply or an abort changed, and when.
pub struct ProbeStream {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<Result<Vec<Vec<u64>>>>>,
    receivers: Vec<JoinHandle<Vec<bool>>>,
}

/// The send time of every probe (monotonic ns) and whether it arrived.
pub struct Probes {
    pub sent_ns: Vec<u64>,
    pub arrived: Vec<bool>,
}

/// Receives probes on `rx` until told to stop (and a few idle timeouts more): which arrived.
fn receive(rx: UdpSocket, stop: Arc<AtomicBool>) -> Vec<bool> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    let mut idle = 0;
    loop {
        match rx.recv(&mut buf) {
            Ok(8) => {
                let seq = u64::from_le_bytes(buf[..8].try_into().expect("8")) as usize;
                if seq >= got.len() {
                    got.resize(seq + 1, false);
                }
                got[seq] = true;
                idle = 0;
            }
            _ if stop.load(Ordering::Relaxed) => {
                idle += 1;
                if idle > 4 {
                    return got;
                }
            }
            _ => {}
        }
    }
}

/// Waits until monotonic time `next`: spinning the last 200 µs (so a short gap's resolution is
/// the gap, not the timer slack), sleeping before that (so a long gap costs no CPU).
fn wait_until(next: u64) {
    let now = monotonic_ns();
    if next > now + 200_000 {
        std::thread::sleep(Duration::from_nanos(next - now - 150_000));
    }
    while monotonic_ns() < next {
        std::hint::spin_loop();
    }
}

impl ProbeStream {
    /// Starts sending from `from_ns` to `dst` (received in `to_ns`) every `gap`.
    pub fn start(from_ns: &str, to_ns: &str, dst: SocketAddr, gap: Duration) -> Result<Self> {
        Self::start_paths(&[(from_ns, to_ns, dst)], gap)
    }

    /// Starts one stream per path `(from_ns, to_ns, dst)`: one sender thread sends a probe every
    /// `gap`, on each path in turn (so each path sees one every `gap` × paths).
    pub fn start_paths(paths: &[(&str, &str, SocketAddr)], gap: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::new();
        let mut txs = Vec::new();
        for &(from, to, dst) in paths {
            let rx = in_netns(to, move || Ok(UdpSocket::bind(("0.0.0.0", dst.port()))?))?;
            rx.set_read_timeout(Some(Duration::from_millis(50)))?;
            // Room for ~100 ms of probes, so a receiver descheduled for a while loses none.
            let size: libc::c_int = 16 << 20;
            // SAFETY: setsockopt with a valid fd and an int option value.
            unsafe {
                libc::setsockopt(
                    rx.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let stop = stop.clone();
            receivers.push(std::thread::spawn(move || receive(rx, stop)));
            // A socket stays in the namespace it was made in: one thread sends on every path.
            let tx = in_netns(from, move || {
                let s = UdpSocket::bind(("0.0.0.0", 0))?;
                s.connect(dst)?;
                Ok(s)
            })?;
            txs.push(tx);
        }
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<Vec<Vec<u64>>> {
                let mut sent: Vec<Vec<u64>> =
                    txs.iter().map(|_| Vec::with_capacity(1 << 16)).collect();
                let gap = gap.as_nanos() as u64;
                let mut next = monotonic_ns();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    wait_until(next);
                    let seq = sent[i].len() as u64;
                    sent[i].push(monotonic_ns());
                    // EPERM from an OUTPUT DROP rule is a lost probe, not an error.
                    let _ = txs[i].send(&seq.to_le_bytes());
                    next += gap;
                    i = (i + 1) % txs.len();
                }
                Ok(sent)
            })
        };
        Ok(ProbeStream {
            stop,
            sender: Some(sender),
            receivers,
        })
    }

    /// Stops sending, waits for stragglers, and returns what happened to every probe (of the
    /// first path).
    pub fn finish(self) -> Result<Probes> {
        Ok(self.finish_paths()?.remove(0))
    }

    /// As [`finish`](Self::finish), per path in the order given.
    pub fn finish_paths(mut self) -> Result<Vec<Probes>> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .expect("sender")
            .join()
            .map_err(|_| anyhow::anyhow!("probe sender panicked"))??;
        let mut out = Vec::new();
        for (sent_ns, rx) in sent.into_iter().zip(std::mem::take(&mut self.receivers)) {
            let mut arrived = rx
                .join()
                .map_err(|_| anyhow::anyhow!("probe receiver panicked"))?;
            arrived.resize(sent_ns.len(), false);
            out.push(Probes { sent_ns, arrived });
        }
        Ok(out)
    }
}

impl Drop for ProbeStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
        for t in self.receivers.drain(..) {
            let _ = t.join();
        }
    }
}

impl Probes {
    /// The send time of the first probe sent at or after `t` whose fate is `arrived`, in ns.
    pub fn first_after(&self, t: u64, arrived: bool) -> Option<u64> {
        self.sent_ns
            .iter()
            .zip(&self.arrived)
            .find(|(s, a)| **s >= t && **a == arrived)
            .map(|(s, _)| *s)
    }

    /// Probes sent in `[from, to)` and how many of them arrived.
    pub fn arrived_between(&self, from: u64, to: u64) -> (usize, usize) {
        let w: Vec<bool> = self
            .sent_ns
            .iter()
            .zip(&self.arrived)
            .filter(|(s, _)| **s >= from && **s < to)
            .map(|(_, a)| *a)
            .collect();
        (w.len(), w.iter().filter(|a| **a).count())
    }
}

/// Keeps `bpf_stats` (per-program run time and run count) enabled while alive.
pub struct BpfStats(
    #[expect(dead_code, reason = "held: closing it disables the stats")] std::os::fd::OwnedFd,
);

impl BpfStats {
    pub fn enable() -> Result<Self> {
        Ok(BpfStats(
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?,
        ))
    }
}

/// Run time (ns) and run count, summed, of the programs attached through TCX to `hooks`
/// (interface, ingress?) in `netns`, each program once however many hooks it is attached to
/// (bpf_stats are per program, not per attachment).
pub fn tcx_run_stats(netns: &str, hooks: &[(String, bool)]) -> Result<(u64, u64)> {
    Ok(tcx_programs(netns, hooks)?
        .values()
        .fold((0, 0), |(ns, runs), p| (ns + p.ns, runs + p.runs)))
}

/// One program's `bpf_stats` so far.
#[derive(Clone, Debug)]
pub struct ProgStats {
    pub name: String,
    pub ns: u64,
    pub runs: u64,
}

/// The programs attached through TCX to `hooks` in `netns`, by program id.
pub fn tcx_programs(
    netns: &str,
    hooks: &[(String, bool)],
) -> Result<std::collections::BTreeMap<u32, ProgStats>> {
    let hooks = hooks.to_vec();
    snapshot::in_netns(netns, move || {
        let mut out = std::collections::BTreeMap::new();
        for (iface, ingress) in &hooks {
            let at = if *ingress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            let (_, progs) = SchedClassifier::query_tcx(iface, at)
                .with_context(|| format!("querying TCX programs on {iface}"))?;
            for p in progs {
                out.insert(
                    p.id(),
                    ProgStats {
                        name: p.name_as_str().unwrap_or("?").to_string(),
                        ns: p.run_time().as_nanos() as u64,
                        runs: p.run_count(),
                    },
                );
            }
        }
        Ok(out)
    })?
}

/// Percentile `p` (0..=100) of sorted `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The median of `v` (unsorted).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_tell_when_a_fault_took_effect_and_ended() {
        // Probes every 10 ns; 30..=59 lost.
        let p = Probes {
            sent_ns: (0..100).map(|i| i * 10).collect(),
            arrived: (0..100).map(|i| !(30..60).contains(&i)).collect(),
        };
        assert_eq!(p.first_after(0, false), Some(300));
        assert_eq!(p.first_after(300, true), Some(600));
        assert_eq!(p.first_after(1000, true), None);
        assert_eq!(p.arrived_between(250, 350), (10, 5));
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
