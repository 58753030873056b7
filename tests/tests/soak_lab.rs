//! The soak (issue 15 item 5), on demand: `cargo xtask soak [--minutes 30]`, never in CI.
//!
//! Both lab nodes, a daemon on each. For the whole run: a fault added and the oldest removed
//! every 100 ms (on each node in turn, through the API: the CLI, as users change faults), pods
//! created and deleted on both nodes, ICMP traffic between the lab's own pods (no fault ever
//! targets ICMP: every ping must be answered), and, each minute, node 1's daemon killed
//! (SIGKILL) and restarted. Each minute, before the kill and after the restart, on both nodes:
//! kernel == records == API. Node 2's daemon lives through the whole run: its RSS and fds are
//! sampled each minute and must stay flat. At the end the nodes look as they did before.
//!
//! `INJECTOR_SOAK_SECS` sets the length (default 1800); `INJECTOR_SOAK_PARTS` (a comma list of
//! `faults`, `churn`, `restart`; default all) leaves parts out, to find what a failure needs.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use injector_tests::{
    daemon::Daemon,
    injector_bin,
    lab::{self, Lab, Pod, delete_pod},
    proc::{fds, rss_kib},
    require_root, snapshot,
};

/// Faults alive at once per node.
const WINDOW: u64 = 8;
/// Churned pods' numbers cycle through these (the lab's own pods are 1 and 2).
const CHURN_SLOTS: std::ops::Range<u8> = 10..250;
const CHURN_ALIVE: usize = 6;

/// Fault `k` of a node: UDP to one of the lab's pods, an action that varies with `k`.
fn fault(l: &Lab, k: u64) -> String {
    let pod = l.pod(1 + (k % 2) as u8, 1 + (k / 2 % 2) as u8);
    let action = match k % 5 {
        0 => r#""loss":"5%""#,
        1 => r#""blackhole":true"#,
        2 => r#""reject":true"#,
        3 => r#""duplicate":"10%""#,
        _ => r#""corrupt":"1%""#,
    };
    format!(
        r#"[{{"name":"soak-{k}","to":["{}"],"proto":"udp","dport":["{}"],{action},"for":"10m"}}]"#,
        pod.ip,
        9000 + k % 100
    )
}

/// kernel == records == API on daemon `d`: the faults the pinned maps hold, by their records'
/// names, are those the API lists, and there is one record per fault.
fn consistent(d: &Daemon, when: &str) {
    let (kernel, records) = d.kernel_faults();
    let api = d.api_faults();
    let names = |v: &[(String, f64)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&kernel),
        names(&api),
        "{when}: kernel and API disagree on {}",
        d.node
    );
    assert_eq!(
        records as usize,
        api.len(),
        "{when}: records and API disagree on {}",
        d.node
    );
}

/// Creates and deletes pods on node `n` until `stop`, `CHURN_ALIVE` alive at a time; how many.
fn churn(l: &Lab, n: u8, stop: &AtomicBool) -> u64 {
    let mut alive: VecDeque<Pod> = VecDeque::new();
    let mut made = 0u64;
    let mut slots = CHURN_SLOTS.cycle();
    while !stop.load(Ordering::Relaxed) {
        let pod = Pod::at(&l.prefix, n, slots.next().unwrap());
        l.create_untracked(&pod).unwrap();
        made += 1;
        alive.push_back(pod);
        if alive.len() > CHURN_ALIVE {
            delete_pod(&alive.pop_front().unwrap()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for p in alive {
        delete_pod(&p).unwrap();
    }
    made
}

#[test]
#[ignore = "a soak of INJECTOR_SOAK_SECS (default 1800 s): cargo xtask soak"]
fn soak() {
    require_root();
    let secs: u64 = std::env::var("INJECTOR_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800);
    let parts = std::env::var("INJECTOR_SOAK_PARTS").unwrap_or("faults,churn,restart".into());
    let on = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let l = Lab::up(&lab::run_prefix("sk"), 2).unwrap();
    let mut d1 = Daemon::start(&injector_bin(), l.node(1)).unwrap();
    let d2 = Daemon::start(&injector_bin(), l.node(2)).unwrap();
    let look = |n: u8, d: &Daemon| {
        snapshot::node(&l.node(n).netns, &d.bpffs.display().to_string()).unwrap()
    };
    let before = [look(1, &d1), look(2, &d2)];
    let pid2 = d2.pid().unwrap();
    let mut samples = vec![(0u64, rss_kib(pid2), fds(pid2))];

    let stop = AtomicBool::new(false);
    let (pings, answered) = (AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let (mut changes, mut restarts, mut checks) = (0u64, 0u64, 0u64);
    let (churned, d1) = std::thread::scope(|s| {
        let (churning, l, stop) = (on("churn"), &l, &stop);
        let c1 = s.spawn(move || if churning { churn(l, 1, stop) } else { 0 });
        let c2 = s.spawn(move || if churning { churn(l, 2, stop) } else { 0 });
        s.spawn(|| {
            let pairs = [
                (l.pod(1, 1), l.pod(1, 2)),
                (l.pod(1, 2), l.pod(2, 1)),
                (l.pod(2, 2), l.pod(1, 1)),
            ];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = pairs[i % pairs.len()];
                answered.fetch_add(
                    u64::from(l.ping(from, to.ip.into(), 10).unwrap()),
                    Ordering::Relaxed,
                );
                pings.fetch_add(10, Ordering::Relaxed);
                i += 1;
            }
        });
        let mut k = 0u64;
        let mut next_minute = started + Duration::from_secs(60);
        while Instant::now() < end {
            let tick = Instant::now();
            // One node a tick: add fault k, remove the one WINDOW before it.
            let d = if k.is_multiple_of(2) { &d1 } else { &d2 };
            if on("faults") {
                d.apply(&fault(l, k)).unwrap();
                if k >= 2 * WINDOW {
                    d.cli_ok(&["fault", "rm", &format!("soak-{}", k - 2 * WINDOW)], "")
                        .unwrap();
                }
                changes += 1;
            }
            k += 1;
            if Instant::now() >= next_minute {
                next_minute += Duration::from_secs(60);
                let minute = started.elapsed().as_secs() / 60;
                for d in [&d1, &d2] {
                    consistent(d, &format!("minute {minute}, before the restart"));
                }
                if on("restart") {
                    d1.signal_and_wait(libc::SIGKILL).unwrap();
                    d1 = d1.restart().unwrap();
                    restarts += 1;
                }
                for d in [&d1, &d2] {
                    consistent(d, &format!("minute {minute}, after the restart"));
                }
                checks += 4;
                samples.push((minute, rss_kib(pid2), fds(pid2)));
                eprintln!(
                    "soak: minute {minute}: {changes} changes, {restarts} restarts, pings {}/{}, \
                     node 2 daemon RSS {} KiB, {} fds",
                    answered.load(Ordering::Relaxed),
                    pings.load(Ordering::Relaxed),
                    samples.last().unwrap().1,
                    samples.last().unwrap().2
                );
            }
            if let Some(rest) = Duration::from_millis(100).checked_sub(tick.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        stop.store(true, Ordering::Relaxed);
        ([c1.join().unwrap(), c2.join().unwrap()], d1)
    });
    for d in [&d1, &d2] {
        consistent(d, "at the end");
    }
    let (p, a) = (
        pings.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    let last = *samples.last().unwrap();
    eprintln!(
        "soak: {:.0} s: {changes} fault changes, {restarts} restarts of node 1's daemon, {checks} \
         consistency checks, {} pods churned, pings answered {a}/{p}; node 2's daemon RSS {} -> \
         {} KiB, fds {} -> {} (samples {samples:?})",
        started.elapsed().as_secs_f64(),
        churned[0] + churned[1],
        samples[0].1,
        last.1,
        samples[0].2,
        last.2
    );
    assert_eq!(a, p, "traffic no fault targets must all arrive");
    assert_eq!(last.2, samples[0].2, "node 2's daemon: no fd leaked");
    assert!(
        last.1 < samples[0].1 + 16 * 1024,
        "node 2's daemon: memory bounded"
    );
    // Faults removed, the churned pods gone: each node as it was.
    d1.clear().unwrap();
    d2.clear().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (n, d) in [(1u8, &d1), (2, &d2)] {
        while look(n, d) != before[usize::from(n - 1)] {
            assert!(
                Instant::now() < deadline,
                "node {n} after the soak differs:\nbefore:\n{}\nafter:\n{}",
                before[usize::from(n - 1)],
                look(n, d)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
