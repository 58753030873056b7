//! Bursty loss and pulse with real traffic on the two-node lab. Sequence-numbered UDP probes,
//! each carrying its send time: over 100k probes a 5% loss in bursts of 4 shows its loss ratio
//! and mean burst length within the bounds of the Gilbert chain (independent loss would give
//! bursts of 1/(1-p)), same-node and cross-node, every missing probe a counted drop; a pulsing
//! blackhole drops exactly the probes sent inside its on-windows (the windows' edges given a
//! small tolerance), goes on pulsing after the daemon is SIGKILLed, and stops at its deadline.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use injector::kernel::Maps;
use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod},
    require_root,
    stats::{self, Bursts},
    traffic::{in_netns, monotonic_ns, snmp},
};

const PORT: u16 = 7200;

/// A probe stream under way; [`Stream::finish`] waits for it.
struct Stream {
    sender: std::thread::JoinHandle<anyhow::Result<Vec<(u64, u64)>>>,
    receiver: std::thread::JoinHandle<Vec<bool>>,
    done: Arc<AtomicBool>,
}

/// Starts `n` probes at `pps` from `a` to `b` (UDP port [`PORT`]), each carrying its sequence
/// number, the sender bound to CPU 0 (a bursty loss's chain is per CPU). A receiver in `b`
/// takes them as they come.
fn start(a: &Pod, b: &Pod, n: u32, pps: u32) -> Stream {
    let rx = in_netns(&b.netns, || Ok(UdpSocket::bind(("0.0.0.0", PORT))?)).unwrap();
    // Room for a stall of the receiving thread on a busy machine (SO_RCVBUFFORCE: root).
    let size: libc::c_int = 32 << 20;
    // SAFETY: setting an int socket option on our own socket.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&rx),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE");
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got = vec![false; n as usize];
            let mut buf = [0u8; 64];
            let mut idle_since: Option<Instant> = None;
            loop {
                if let Ok(len) = rx.recv(&mut buf) {
                    assert_eq!(len, 4, "a probe is its sequence number");
                    let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    got[seq as usize] = true;
                    idle_since = None;
                } else if done.load(Ordering::Relaxed) {
                    let t = *idle_since.get_or_insert_with(Instant::now);
                    if t.elapsed() > Duration::from_millis(500) {
                        return got;
                    }
                }
            }
        })
    };
    let dst = SocketAddr::new(IpAddr::V4(b.ip), PORT);
    let netns = a.netns.clone();
    let sender = std::thread::spawn(move || {
        in_netns(&netns, move || {
            // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            }
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            let period = Duration::from_nanos(1_000_000_000 / u64::from(pps));
            let begin = Instant::now();
            let mut sent = Vec::with_capacity(n as usize);
            for seq in 0..n {
                let due = begin + period * seq;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let before = monotonic_ns();
                s.send_to(&seq.to_be_bytes(), dst)?;
                sent.push((before, monotonic_ns()));
            }
            Ok(sent)
        })
    });
    Stream {
        sender,
        receiver,
        done,
    }
}

impl Stream {
    /// Per probe: when it was sent (CLOCK_MONOTONIC ns before and after the send call, which
    /// takes it through the judging hook on the sender's node) and whether it arrived.
    fn finish(self) -> Vec<((u64, u64), bool)> {
        let sent = self.sender.join().expect("the sender panicked").unwrap();
        self.done.store(true, Ordering::Relaxed);
        let got = self.receiver.join().expect("the receiver panicked");
        sent.into_iter().zip(got).collect()
    }
}

/// 100k probes through a 5% loss in bursts of 4 from `a` to `b`: the loss ratio and the mean
/// burst within the chain's bounds, and every missing probe a drop the fault counted.
fn bursty(l: &Lab, a: &Pod, b: &Pod) {
    let fault = format!(
        r#"[{{"name":"bursty","from":["{}"],"to":["{}"],"proto":"udp","dport":["{PORT}"],"loss":"5%","burst":"4","for":"5m"}}]"#,
        a.ip, b.ip
    );
    let d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    // Neighbours resolved first: nothing queued behind ARP is lost.
    assert_eq!(l.ping(a, b.ip.into(), 2).unwrap(), 2);
    d1.apply(&fault).unwrap();
    d2.apply(&fault).unwrap();
    let full = snmp(&b.netns, "Udp", "RcvbufErrors");
    let probes = start(a, b, 100_000, 10_000).finish();
    let full = snmp(&b.netns, "Udp", "RcvbufErrors") - full;
    let bursts = Bursts::of(probes.iter().map(|(_, got)| !got));
    eprintln!(
        "{} -> {}: {} of {} lost ({:.4}), mean burst {:.3} over {} bursts (independent: {:.3})",
        a.name,
        b.name,
        bursts.lost,
        bursts.packets,
        bursts.loss(),
        bursts.mean_burst(),
        bursts.bursts,
        1.0 / 0.95
    );
    let dropped = d1.counted("bursty", "dropped") + d2.counted("bursty", "dropped");
    assert_eq!(
        dropped, bursts.lost,
        "every missing probe is a drop of the fault (nothing else lost them; the receiver's \
         buffer overflowed {full} times)"
    );
    stats::assert_gilbert(&bursts, 0.05, 4.0, &format!("{} -> {}", a.name, b.name));
    let table = d1.cli_ok(&["fault", "ls"], "").unwrap();
    assert!(
        table.contains("loss 5% burst 4") && table.contains("DROPPED"),
        "{table}"
    );
}

#[test]
fn bursty_loss_same_node_has_its_loss_and_burst_length() {
    require_root();
    let l = Lab::up(&lab::run_prefix("bl1"), 2).unwrap();
    bursty(&l, l.pod(1, 1), l.pod(1, 2));
}

#[test]
fn bursty_loss_cross_node_has_its_loss_and_burst_length() {
    require_root();
    let l = Lab::up(&lab::run_prefix("bl2"), 1).unwrap();
    bursty(&l, l.pod(1, 1), l.pod(2, 1));
}

/// Where a probe sent at `t` stands with a fault that started at `start`, acts `on` of every
/// `period` and ends at `deadline`: `Some(dropped)`, or `None` within `edge` of a window's edge.
fn expected(t: u64, start: u64, on: u64, period: u64, deadline: u64, edge: u64) -> Option<bool> {
    let near = |x: u64| t.abs_diff(x) < edge;
    if near(start) || near(deadline) {
        return None;
    }
    if t < start || t >= deadline {
        return Some(false);
    }
    let into = (t - start) % period;
    if into < edge || on.abs_diff(into) < edge || period - into < edge {
        return None;
    }
    Some(into < on)
}

#[test]
fn a_pulse_drops_only_in_its_on_windows_and_goes_on_after_sigkill_until_the_deadline() {
    require_root();
    let l = Lab::up(&lab::run_prefix("pul"), 2).unwrap();
    let (a, b) = (l.pod(1, 1), l.pod(1, 2));
    let mut d = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    // 1 s of every 2 s; the deadline (6.5 s) cuts the fourth on-window in half.
    let (on, period, life) = (1_000_000_000u64, 2_000_000_000u64, 6_500_000_000u64);
    let stream = start(a, b, 9_000, 1_000);
    std::thread::sleep(Duration::from_millis(500));
    d.apply(&format!(
        r#"[{{"name":"pulse","to":["{}"],"proto":"udp","blackhole":true,"pulse":"1s/2s","for":"6500ms"}}]"#,
        b.ip
    ))
    .unwrap();
    // The fault's windows count from its planned start, which the daemon fixes before the
    // transaction that installs it commits: a probe sent between the two may pass (seen: 4
    // probes 2-5 ms after the start on a loaded machine). Probes from then until the call
    // returned are not checked.
    let applied = monotonic_ns();
    let faults = Maps::open_pinned(Path::new(&l.node(1).bpffs()))
        .unwrap()
        .live_faults()
        .unwrap();
    assert_eq!(faults.len(), 1);
    let (start_ns, deadline_ns) = (faults[0].1.start_ns, faults[0].1.deadline_ns);
    assert_eq!(deadline_ns - start_ns, life);
    // Into the second on-window: the daemon dies; no one is left to keep the beat.
    std::thread::sleep(Duration::from_millis(2_300));
    let killed = monotonic_ns();
    d.signal_and_wait(libc::SIGKILL).unwrap();
    let probes = stream.finish();
    let edge = 2_000_000; // 2 ms
    let (mut checked, mut wrong) = (0, vec![]);
    // Dropped probes per on-window (0..4), after the kill for the last two.
    let mut per_window = [0u32; 4];
    for (seq, &((t, t_end), got)) in probes.iter().enumerate() {
        // Judged somewhere in the send call: a probe whose call spans an edge is not checked.
        let at = |t| expected(t, start_ns, on, period, deadline_ns, edge);
        let (Some(dropped), Some(same)) = (at(t), at(t_end)) else {
            continue;
        };
        if dropped != same
            || (start_ns..applied).contains(&t)
            || (start_ns..applied).contains(&t_end)
        {
            continue;
        }
        checked += 1;
        if dropped == got {
            wrong.push((seq, t.wrapping_sub(start_ns) as i64 / 1_000_000, got));
        }
        if !got && t > start_ns {
            per_window[(((t - start_ns) / period) as usize).min(3)] += 1;
        }
    }
    eprintln!(
        "pulse 1s/2s for 6.5 s: {checked} probes checked, {} wrong; dropped per on-window: \
         {per_window:?}; killed {} ms after the start",
        wrong.len(),
        (killed - start_ns) / 1_000_000
    );
    assert!(
        wrong.is_empty(),
        "probes (seq, ms after the start, arrived) on the wrong side of the pulse: {:?}",
        &wrong[..wrong.len().min(20)]
    );
    assert!(checked > 8_000, "{checked} probes checked");
    assert!(killed > start_ns + period && killed < start_ns + period + on);
    // About 1000 a window, 500 in the last (cut by the deadline), after the kill for the third
    // and fourth.
    assert!(
        per_window[..3].iter().all(|&n| n > 900) && per_window[3] > 400 && per_window[3] < 600,
        "{per_window:?}"
    );
}
