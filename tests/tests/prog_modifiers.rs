//! Bursty loss, reorder, pulse, loss with delay and rate through BPF_PROG_TEST_RUN: the
//! Gilbert-Elliott chain at its deterministic ends (and restarted for a new fault in the slot),
//! its mean loss and mean burst over 100k packets, a pulse judged from the fault image's start
//! time inside and outside the on-window, a delay's reorder share sent unstamped, a delay's
//! loss; a rate policed (the bucket, then drops) and paced (each packet stamped one cost after
//! the one before, GSO segments' headers counted, dropped beyond the queue); IPv4 and IPv6. On
//! one CPU (the chain is per CPU), in a network namespace of the test
//! whose loopback the program is attached to (clones of delayed packets go there).

#[expect(dead_code, reason = "shared packet builders; this file uses some")]
mod support;

use std::{mem::offset_of, path::PathBuf};

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions, tc},
};
use aya_ebpf_bindings::bindings::__sk_buff;
use injector::{
    fault::{
        compile::{Image, assign_slots, compile, plan_at},
        spec::FaultSpec,
    },
    kernel::{Maps, monotonic_ns, programs as progs},
};
use injector_common::{FaultCounters, JudgeHook, Outcome, ctrl, programs};
use injector_tests::cpu::on_cpu0;
use injector_tests::{
    cmd,
    lab::run_prefix,
    require_root,
    stats::{self, Bursts},
    traffic::enter,
};
use support::packets::{UDP, simple};

const OK: u32 = 0; // TC_ACT_OK
const SHOT: u32 = 2; // TC_ACT_SHOT
/// Handed to fq as a clone: the original gets TC_ACT_REDIRECT (to ifindex 0, freed as sent).
const HANDED_OVER: u32 = 7;
const VETH: &str = programs::TC_VETH_EGRESS;
const ALWAYS: u64 = 1 << 32;
const SEC: u64 = 1_000_000_000;

/// The run's pin directory and network namespace, removed on drop: also when loading panics
/// half-way.
struct Scratch {
    dir: PathBuf,
    netns: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = cmd::run("ip", &["netns", "del", &self.netns]);
    }
}

struct Bpf {
    ebpf: Ebpf,
    maps: Maps,
    names: Vec<String>,
    _scratch: Scratch,
}

/// Loads the programs, installs `json`'s faults after `edit` changed their image (kernel terms
/// that validation refuses, start times), and attaches the veth program to this namespace's
/// loopback. Call from the thread that runs the test ([`on_cpu0`]).
fn load(tag: &str, json: &str, edit: impl FnOnce(&mut Image, u64)) -> Bpf {
    require_root();
    let prefix = run_prefix(tag);
    let scratch = Scratch {
        dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}")),
        netns: format!("{prefix}-mod"),
    };
    cmd::run("ip", &["netns", "add", &scratch.netns]).unwrap();
    std::fs::create_dir_all(&scratch.dir).unwrap();
    let mut ebpf = progs::loader(&scratch.dir, true)
        .load(injector::EBPF_OBJECT)
        .unwrap();
    let prog: &mut SchedClassifier = ebpf.program_mut(VETH).unwrap().try_into().unwrap();
    prog.load().unwrap();
    let mut maps = Maps::take(&mut ebpf).unwrap();
    maps.set_ctrl(ctrl::ARMED, 1).unwrap();
    maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()).unwrap();
    maps.set_ctrl(ctrl::GRACE_NS, 3_600 * SEC).unwrap();
    let mut b = Bpf {
        ebpf,
        maps,
        names: vec![],
        _scratch: scratch,
    };
    b.install(json, edit);
    enter(&b._scratch.netns).unwrap();
    cmd::run("ip", &["-n", &b._scratch.netns, "link", "set", "lo", "up"]).unwrap();
    let _ = tc::qdisc_add_clsact("lo");
    let p: &mut SchedClassifier = b.ebpf.program_mut(VETH).unwrap().try_into().unwrap();
    p.attach("lo", TcAttachType::Egress).unwrap();
    b
}

impl Bpf {
    /// Compiles `json` at now, lets `edit` change the image (and see now), installs it.
    fn install(&mut self, json: &str, edit: impl FnOnce(&mut Image, u64)) {
        let specs: Vec<FaultSpec> = serde_json::from_str(json).unwrap();
        let faults: Vec<_> = specs.iter().map(|s| s.validate("").unwrap()).collect();
        self.names = faults.iter().map(|f| f.name.clone()).collect();
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let slots = assign_slots(&Default::default(), &names).unwrap();
        let now = monotonic_ns();
        let mut img = compile(&plan_at(&faults, &slots, now)).unwrap();
        edit(&mut img, now);
        self.maps.install(&img, &slots).unwrap();
    }

    /// Runs the veth program `repeat` times on `pkt`; returns the verdict and the skb's tstamp
    /// after the run (0: not stamped).
    fn run(&self, pkt: &[u8], repeat: u32) -> (u32, u64) {
        self.run_gso(pkt, repeat, 0)
    }

    /// As [`run`](Self::run), the packet a GSO packet of `gso_segs` segments (0: not GSO).
    fn run_gso(&self, pkt: &[u8], repeat: u32, gso_segs: u32) -> (u32, u64) {
        let p: &SchedClassifier = self.ebpf.program(VETH).unwrap().try_into().unwrap();
        let mut ctx_in = vec![0u8; size_of::<__sk_buff>()];
        let g = offset_of!(__sk_buff, gso_segs);
        ctx_in[g..g + 4].copy_from_slice(&gso_segs.to_ne_bytes());
        let mut ctx_out = vec![0u8; size_of::<__sk_buff>()];
        let mut out = vec![0u8; pkt.len() + 256];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test run failed: {e:?}"));
        let t = offset_of!(__sk_buff, tstamp);
        (
            r.return_value,
            u64::from_ne_bytes(ctx_out[t..t + 8].try_into().unwrap()),
        )
    }

    fn counters(&self, name: &str) -> FaultCounters {
        let slot = self.names.iter().position(|n| n == name).unwrap() as u32;
        self.maps
            .fault_counters(slot, JudgeHook::VethEgress)
            .unwrap()
    }

    fn slot(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }
}

fn udp(dst: &str) -> Vec<u8> {
    let src = if dst.contains(':') {
        "fd00:42:1::2"
    } else {
        "10.42.1.2"
    };
    simple(src, dst, UDP, 4000, 5000)
}

/// Verdicts of `n` packets to `dst`, one run each.
fn verdicts(b: &Bpf, dst: &str, n: usize) -> Vec<u32> {
    let pkt = udp(dst);
    (0..n).map(|_| b.run(&pkt, 1).0).collect()
}

#[test]
fn the_loss_chain_at_its_deterministic_ends_and_restarted_for_a_new_fault() {
    on_cpu0(|| {
        let json = r#"[
          {"name":"alt","to":["10.42.2.1","fd00:42:2::1"],"loss_model":"ge:50%,50%","for":"1h"},
          {"name":"never","to":["10.42.2.2"],"loss_model":"ge:50%,50%","for":"1h"},
          {"name":"stick","to":["10.42.2.3"],"loss_model":"ge:50%,50%","for":"1h"}
        ]"#;
        let ends = |img: &mut Image, _| {
            // alternate: p = r = 1, every bad packet lost, no good one.
            img.faults[0].ge.p = ALWAYS;
            img.faults[0].ge.r = ALWAYS;
            img.faults[0].ge.loss_bad = ALWAYS;
            img.faults[0].ge.loss_good = 0;
            // never: p = 0, the chain stays good, where nothing is lost.
            img.faults[1].ge.p = 0;
            img.faults[1].ge.loss_bad = ALWAYS;
            img.faults[1].ge.loss_good = 0;
            // stick: p = 1, r = 0: one good packet, then bad for ever.
            img.faults[2].ge = img.faults[0].ge;
            img.faults[2].ge.r = 0;
        };
        let mut b = load("pm1", json, ends);
        for dst in ["10.42.2.1", "fd00:42:2::1"] {
            assert_eq!(
                verdicts(&b, dst, 8),
                [OK, SHOT, OK, SHOT, OK, SHOT, OK, SHOT],
                "{dst}: p = r = 1 alternates from the good state"
            );
        }
        let c = b.counters("alt");
        assert_eq!(
            (c.packets(Outcome::Dropped), c.packets(Outcome::Passed)),
            (8, 8)
        );
        assert_eq!(verdicts(&b, "10.42.2.2", 1000), [OK; 1000], "p = 0");
        assert_eq!(b.counters("never").packets(Outcome::Dropped), 0);
        let v = verdicts(&b, "10.42.2.3", 100);
        assert_eq!((v[0], &v[1..]), (OK, &[SHOT; 99][..]), "p = 1, r = 0");
        // The same faults again, applied anew (a new start time): each chain begins good.
        b.install(json, ends);
        assert_eq!(verdicts(&b, "10.42.2.3", 2), [OK, SHOT], "restarted good");
        assert_eq!(verdicts(&b, "10.42.2.1", 2), [OK, SHOT], "restarted good");
    });
}

#[test]
fn bursty_loss_has_its_mean_loss_and_mean_burst_over_100k_packets() {
    on_cpu0(|| {
        let b = load(
            "pm2",
            r#"[{"name":"b","to":["10.42.2.1","fd00:42:2::1"],"loss":"20%","burst":"4","for":"1h"}]"#,
            |_, _| {},
        );
        let n = 100_000;
        for dst in ["10.42.2.1", "fd00:42:2::1"] {
            let before = b.counters("b").packets(Outcome::Dropped);
            let lost: Vec<bool> = verdicts(&b, dst, n).iter().map(|&v| v == SHOT).collect();
            let bursts = Bursts::of(lost.iter().copied());
            eprintln!(
                "{dst}: loss {:.4}, mean burst {:.3} ({} bursts)",
                bursts.loss(),
                bursts.mean_burst(),
                bursts.bursts
            );
            stats::assert_gilbert(&bursts, 0.2, 4.0, dst);
            assert_eq!(
                b.counters("b").packets(Outcome::Dropped) - before,
                bursts.lost,
                "{dst}: every drop counted"
            );
        }
    });
}

#[test]
fn a_pulse_acts_only_inside_its_on_windows_from_the_fault_start() {
    on_cpu0(|| {
        // 10 s of every 30 s; the image's start times put the faults where the test wants.
        let json = r#"[
          {"name":"in","to":["10.42.2.1","fd00:42:2::1"],"blackhole":true,"pulse":"10s/30s","for":"1h"},
          {"name":"out","to":["10.42.2.2","fd00:42:2::2"],"blackhole":true,"pulse":"10s/30s","for":"1h"},
          {"name":"again","to":["10.42.2.3"],"blackhole":true,"pulse":"10s/30s","for":"1h"},
          {"name":"d-in","to":["10.42.2.4"],"delay":"50ms","pulse":"10s/30s","for":"1h"},
          {"name":"d-out","to":["10.42.2.5"],"delay":"50ms","pulse":"10s/30s","for":"1h"},
          {"name":"r-out","to":["10.42.2.6"],"reject":true,"pulse":"10s/30s","for":"1h"}
        ]"#;
        let b = load("pm3", json, |img, now| {
            for (slot, ago) in [(0, 5), (1, 15), (2, 35), (3, 5), (4, 25), (5, 12)] {
                img.faults[slot].start_ns = now - ago * SEC;
            }
        });
        assert!(b.slot("r-out") == 5 && b.slot("in") == 0);
        for dst in ["10.42.2.1", "fd00:42:2::1"] {
            assert_eq!(b.run(&udp(dst), 1).0, SHOT, "{dst}: 5 s into a period: on");
        }
        for dst in ["10.42.2.2", "fd00:42:2::2"] {
            assert_eq!(
                b.run(&udp(dst), 1),
                (OK, 0),
                "{dst}: 15 s into a period: off"
            );
        }
        assert_eq!(
            b.run(&udp("10.42.2.3"), 1).0,
            SHOT,
            "5 s into the second period: on"
        );
        let before = monotonic_ns();
        let (v, t) = b.run(&udp("10.42.2.4"), 1);
        assert!(
            v == HANDED_OVER && t >= before + 50_000_000,
            "a delay in its on-window is stamped: {v}, {t}"
        );
        assert_eq!(
            b.run(&udp("10.42.2.5"), 1),
            (OK, 0),
            "a delay off: not stamped"
        );
        assert_eq!(
            b.run(&udp("10.42.2.6"), 1),
            (OK, 0),
            "a reject off: delivered"
        );
        for (name, outcome, n) in [
            ("in", Outcome::Dropped, 2),
            ("out", Outcome::Passed, 2),
            ("again", Outcome::Dropped, 1),
            ("d-in", Outcome::Delayed, 1),
            ("d-out", Outcome::Passed, 1),
            ("r-out", Outcome::Passed, 1),
        ] {
            let c = b.counters(name);
            assert_eq!(
                (c.packets(Outcome::Matched), c.packets(outcome)),
                (n, n),
                "{name}"
            );
        }
    });
}

#[test]
fn a_reorder_share_goes_unstamped_and_a_delay_loses_first() {
    on_cpu0(|| {
        let json = r#"[
          {"name":"all","to":["10.42.2.1","fd00:42:2::1"],"delay":"50ms","reorder":"100%","for":"1h"},
          {"name":"none","to":["10.42.2.2","fd00:42:2::2"],"delay":"50ms","reorder":"0%","for":"1h"},
          {"name":"quarter","to":["10.42.2.3"],"delay":"50ms","reorder":"25%","for":"1h"},
          {"name":"lost","to":["10.42.2.4","fd00:42:2::4"],"loss":"100%","delay":"50ms","for":"1h"},
          {"name":"some","to":["10.42.2.5"],"loss":"30%","delay":"50ms","for":"1h"},
          {"name":"bursty","to":["10.42.2.6"],"loss":"20%","burst":"4","delay":"50ms","for":"1h"}
        ]"#;
        let b = load("pm4", json, |_, _| {});
        for dst in ["10.42.2.1", "fd00:42:2::1"] {
            assert_eq!(b.run(&udp(dst), 1), (OK, 0), "{dst}: reorder 100%: at once");
        }
        for dst in ["10.42.2.2", "fd00:42:2::2"] {
            let before = monotonic_ns();
            let (v, t) = b.run(&udp(dst), 1);
            assert!(
                v == HANDED_OVER && t >= before + 50_000_000,
                "{dst}: reorder 0%: delayed ({v}, {t})"
            );
        }
        let c = b.counters("all");
        assert_eq!(
            (c.packets(Outcome::Reordered), c.packets(Outcome::Delayed)),
            (2, 0)
        );
        let c = b.counters("none");
        assert_eq!(
            (c.packets(Outcome::Reordered), c.packets(Outcome::Delayed)),
            (0, 2)
        );
        let n = 20_000u64;
        b.run(&udp("10.42.2.3"), n as u32);
        let c = b.counters("quarter");
        assert_eq!(
            c.packets(Outcome::Reordered) + c.packets(Outcome::Delayed),
            n
        );
        stats::assert_binomial(c.packets(Outcome::Reordered), n, 0.25, "reordered");
        for dst in ["10.42.2.4", "fd00:42:2::4"] {
            assert_eq!(
                b.run(&udp(dst), 1),
                (SHOT, 0),
                "{dst}: loss 100% with delay"
            );
        }
        assert_eq!(b.counters("lost").packets(Outcome::Dropped), 2);
        b.run(&udp("10.42.2.5"), n as u32);
        let c = b.counters("some");
        assert_eq!(c.packets(Outcome::Dropped) + c.packets(Outcome::Delayed), n);
        stats::assert_binomial(c.packets(Outcome::Dropped), n, 0.3, "lost before the delay");
        let lost: Vec<bool> = verdicts(&b, "10.42.2.6", 100_000)
            .iter()
            .map(|&v| {
                assert!(v == SHOT || v == HANDED_OVER, "dropped or delayed: {v}");
                v == SHOT
            })
            .collect();
        stats::assert_gilbert(&Bursts::of(lost), 0.2, 4.0, "bursty loss with delay");
    });
}

/// A rate of `per_s` bytes a second in the image (below what validation allows, so a packet
/// costs tens of ms), with a bucket of `burst_bytes`.
fn slow_rate(img: &mut Image, per_s: u64, burst_bytes: u64) {
    for f in &mut img.faults {
        f.rate = per_s;
        f.rate_burst_ns = burst_bytes * SEC / per_s;
    }
}

#[test]
fn a_policed_rate_passes_its_bucket_then_drops_above_the_rate() {
    on_cpu0(|| {
        let json = r#"[{"name":"r4","to":["10.42.2.1"],"rate":"1mbit","for":"1h"},
                       {"name":"r6","to":["fd00:42:2::1"],"rate":"1mbit","for":"1h"}]"#;
        for (name, dst) in [("r4", "10.42.2.1"), ("r6", "fd00:42:2::1")] {
            let ip_len = (udp(dst).len() - 14) as u64;
            // Ten packets' worth and a half: the first packet and ten more conform at once; the
            // half is slack for the time the runs take.
            // 100 bytes/s: the half packet of slack is a fifth of a second or more, against the
            // time the runs take (also under emulation).
            let mut b = load("pm5", json, |img, _| {
                slow_rate(img, 100, 10 * ip_len + ip_len / 2)
            });
            b.maps.set_ctrl(ctrl::RATE_PACE, 0).unwrap();
            let v = verdicts(&b, dst, 30);
            assert_eq!(
                (&v[..11], &v[11..]),
                (&[OK; 11][..], &[SHOT; 19][..]),
                "{dst}"
            );
            let c = b.counters(name);
            assert_eq!(
                (c.packets(Outcome::Passed), c.packets(Outcome::Dropped)),
                (11, 19),
                "{dst}"
            );
        }
    });
}

#[test]
fn a_paced_rate_stamps_each_packet_one_cost_after_the_last_and_drops_beyond_its_queue() {
    on_cpu0(|| {
        let json = r#"[{"name":"r4","to":["10.42.2.1"],"rate":"1mbit","for":"1h"},
                       {"name":"r6","to":["fd00:42:2::1"],"rate":"1mbit","for":"1h"}]"#;
        for (name, dst) in [("r4", "10.42.2.1"), ("r6", "fd00:42:2::1")] {
            let pkt = udp(dst);
            let ip_len = (pkt.len() - 14) as u64;
            // A rate at which the packet costs 40 ms (far more than the time between two runs,
            // also under emulation), so 4-5 fit in the 200 ms queue.
            let per_s = ip_len * 25;
            let cost = 40_000_000;
            let mut b = load("pm6", json, |img, _| slow_rate(img, per_s, 0));
            b.maps.set_ctrl(ctrl::RATE_PACE, 1).unwrap();
            // The first conforms at once and goes out unstamped.
            assert_eq!(b.run(&pkt, 1), (OK, 0), "{dst}: the first");
            // The next ones wait 1, 2, ... costs from the first; a GSO packet of 2 segments
            // costs its bytes and one more IP and UDP header.
            let (v, t1) = b.run(&pkt, 1);
            assert_eq!(v, HANDED_OVER, "{dst}: the second is held");
            let (v, t2) = b.run_gso(&pkt, 1, 2);
            assert_eq!(v, HANDED_OVER, "{dst}");
            // Stamped from the clock read when stamping, the wait from the one read when
            // judging: the stamps are a cost apart give or take the time in between (~100 ns on
            // this host; 1.1 ms measured in the emulated 6.12 guest while the host was busy).
            let near = |d: u64, want: u64, what: &str| {
                assert!(
                    d.abs_diff(want) < 5_000_000,
                    "{dst}: {what}: {d} ns, want {want}"
                );
            };
            near(t2 - t1, cost, "one cost after the second");
            let hdr = if dst.contains(':') { 48 } else { 28 };
            let (v, t3) = b.run(&pkt, 1);
            assert_eq!(v, HANDED_OVER, "{dst}");
            near(t3 - t2, cost + hdr * SEC / per_s, "the GSO packet's cost");
            // Beyond the 200 ms queue: dropped, and the schedule does not move.
            let queued = (t3 - t1) + 2 * cost;
            let fits = (injector_common::RATE_QUEUE_NS.saturating_sub(queued)) / cost;
            let v = verdicts(&b, dst, fits as usize + 3);
            let held = v.iter().filter(|&&v| v == HANDED_OVER).count();
            let shot = v.iter().filter(|&&v| v == SHOT).count();
            assert!(
                (fits as usize..=fits as usize + 1).contains(&held) && held + shot == v.len(),
                "{dst}: {v:?}, {fits} more fit in the queue"
            );
            let c = b.counters(name);
            assert_eq!(
                (c.packets(Outcome::Delayed), c.packets(Outcome::Dropped)),
                (3 + held as u64, shot as u64),
                "{dst}"
            );
        }
    });
}
