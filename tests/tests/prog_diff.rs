//! Differential fuzzing of the kernel path (issue 15 item 1): random fault sets, compiled and
//! installed by the daemon's code, and structure-aware random packets run through the judging
//! programs with BPF_PROG_TEST_RUN (TC veth egress and XDP), each compared with a plain
//! userspace reference (`diff/model.rs`) that reads the faults as validated, not the compiled
//! image: the verdict, every fault's counters at that hook, the hook's statistics, the delay
//! stamped and the packet's bytes must agree for every packet.
//!
//! Random draws are made certain (probabilities of 100%, no jitter) so the comparison is exact.
//! The saved regression cases (`diff/cases.json`, one per disagreement ever found) run first.
//! `INJECTOR_DIFF_PACKETS` (default 100000) and `INJECTOR_DIFF_SEED` (default fixed) size and
//! seed the random part; `cargo xtask fuzz` runs a long one with a fresh seed.

#[path = "support/bpf.rs"]
#[expect(
    dead_code,
    reason = "the shared loader; this file installs its own way"
)]
mod bpf;
mod diff;

use std::time::Instant;

use bpf::Loaded;
use diff::{
    generate,
    model::{self, Installed, Verdict},
};
use injector::{
    fault::{
        compile::{assign_slots, compile, plan_at},
        spec::FaultSpec,
    },
    kernel::monotonic_ns,
};
use injector_common::{Hook, JudgeHook, programs};
use injector_tests::rng::Rng;
use serde_json::{Value, json};

const TC_OK: u32 = 0;
const TC_SHOT: u32 = 2;
const TC_REDIRECT: u32 = 7;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PACKETS_PER_SET: usize = 250;

/// A fault set and what the clock says of each fault (past its deadline, before its start).
struct Set {
    specs: Vec<Value>,
    expired: Vec<bool>,
    pending: Vec<bool>,
}

/// Installs the faults of `set` that validate (in `set`'s order): the model's view of them.
fn install(b: &mut Loaded, set: &Set) -> Vec<Installed> {
    let mut faults = vec![];
    let mut marks = vec![];
    for (i, v) in set.specs.iter().enumerate() {
        let Ok(spec) = serde_json::from_value::<FaultSpec>(v.clone()) else {
            continue;
        };
        match spec.validate("") {
            Ok(f) => {
                faults.push(f);
                marks.push((set.expired[i], set.pending[i]));
            }
            Err(e) if std::env::var_os("INJECTOR_DIFF_REFUSED").is_some() => {
                eprintln!("refused: {e}")
            }
            Err(_) => {}
        }
    }
    let names: Vec<&str> = faults.iter().map(|f| f.name.as_str()).collect();
    let slots = assign_slots(&Default::default(), &names).unwrap();
    let now = monotonic_ns();
    let mut planned = plan_at(&faults, &slots, now);
    for (p, &(expired, pending)) in planned.iter_mut().zip(&marks) {
        if expired {
            p.deadline_ns = now;
        }
        if pending {
            p.start_ns = now + 3_600_000_000_000;
        }
    }
    let img = compile(&planned).unwrap();
    b.maps.install(&img, &slots).unwrap();
    assert_eq!(slots, (0..faults.len() as u32).collect::<Vec<_>>());
    faults
        .into_iter()
        .zip(marks)
        .map(|(fault, (expired, pending))| Installed {
            fault,
            expired,
            pending,
        })
        .collect()
}

/// One hook's counters of every installed fault, and its statistics.
fn observe(b: &Loaded, n: usize, jh: JudgeHook, hook: Hook) -> (Vec<[u64; 16]>, [u64; 3]) {
    let counters = (0..n as u32)
        .map(|slot| {
            let c = b.maps.fault_counters(slot, jh).unwrap();
            let mut v = [0; 16];
            for (i, o) in injector_common::Outcome::ALL.iter().enumerate() {
                v[2 * i] = c.get(*o).packets;
                v[2 * i + 1] = c.get(*o).bytes;
            }
            v
        })
        .collect();
    let s = b.maps.stats(hook).unwrap();
    (
        counters,
        [s.seen_packets, s.unparsed_packets, s.expired_packets],
    )
}

fn delta(
    after: &(Vec<[u64; 16]>, [u64; 3]),
    before: &(Vec<[u64; 16]>, [u64; 3]),
) -> (Vec<[u64; 16]>, [u64; 3]) {
    let counters = after
        .0
        .iter()
        .zip(&before.0)
        .map(|(a, b)| std::array::from_fn(|i| a[i] - b[i]))
        .collect();
    (counters, std::array::from_fn(|i| after.1[i] - before.1[i]))
}

fn expected(m: &model::Judged) -> (Vec<[u64; 16]>, [u64; 3]) {
    let counters = m
        .counters
        .iter()
        .map(|c| {
            let mut v = [0; 16];
            for (i, o) in injector_common::Outcome::ALL.iter().enumerate() {
                v[2 * i] = c.get(*o).packets;
                v[2 * i + 1] = c.get(*o).bytes;
            }
            v
        })
        .collect();
    (counters, [1, u64::from(m.unparsed), m.expired])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The differences between what the programs did with `pkt` and what the model says, as text
/// (empty when they agree), and whether TC could run it (see `Loaded::tc`).
fn compare(b: &Loaded, faults: &[Installed], pkt: &[u8]) -> (bool, Vec<String>) {
    let mut diffs = vec![];
    let n = faults.len();
    // TC, the destination pod's veth egress: every action.
    let m = model::judge(faults, pkt, JudgeHook::VethEgress, false);
    let before = observe(b, n, JudgeHook::VethEgress, Hook::VethEgress);
    let t0 = monotonic_ns();
    let run = b.tc(programs::TC_VETH_EGRESS, pkt);
    let t1 = monotonic_ns();
    let Some(run) = run else {
        return (false, xdp(b, faults, pkt));
    };
    let got = delta(
        &observe(b, n, JudgeHook::VethEgress, Hook::VethEgress),
        &before,
    );
    let want_code = match m.verdict {
        // Test-run skbs carry a (dummy) socket: a delayed packet is handed to fq as a clone
        // and the original freed by a redirect to no device (`clone::hand_to_fq`).
        Verdict::Change { delay_ns, .. } if delay_ns > 0 => TC_REDIRECT,
        Verdict::Pass | Verdict::Change { .. } => TC_OK,
        Verdict::Drop => TC_SHOT,
        Verdict::Reject => TC_REDIRECT,
    };
    if run.verdict != want_code {
        diffs.push(format!(
            "tc verdict {} where the model says {:?} ({want_code})",
            run.verdict, m.verdict
        ));
    }
    if got != expected(&m) {
        diffs.push(format!(
            "tc counters/stats {:?} where the model says {:?}",
            got,
            expected(&m)
        ));
    }
    let delay = match m.verdict {
        Verdict::Change { delay_ns, .. } => delay_ns,
        _ => 0,
    };
    if delay == 0 && run.tstamp != 0 {
        diffs.push(format!("tc stamped {} without a delay", run.tstamp));
    }
    if delay > 0 && !(t0 + delay..=t1 + delay).contains(&run.tstamp) {
        diffs.push(format!(
            "tc stamped {} (now+{}) where the model says a delay of {delay} ns",
            run.tstamp,
            i128::from(run.tstamp) - i128::from(t0)
        ));
    }
    // The bytes: untouched unless a bit is flipped (one, in the payload).
    let kept = matches!(
        m.verdict,
        Verdict::Pass | Verdict::Change { corrupt: None, .. }
    );
    if kept && run.data != pkt {
        diffs.push(format!("tc changed the packet: {}", hex(&run.data)));
    }
    if let Verdict::Change {
        corrupt: Some((at, len)),
        ..
    } = m.verdict
    {
        let flipped: Vec<usize> = (0..pkt.len().min(run.data.len()))
            .filter(|&i| pkt[i] != run.data[i])
            .collect();
        let one_bit =
            flipped.len() == 1 && (pkt[flipped[0]] ^ run.data[flipped[0]]).count_ones() == 1;
        if run.data.len() != pkt.len() || !one_bit || !(at..at + len).contains(&flipped[0]) {
            diffs.push(format!(
                "tc corrupted bytes {flipped:?} where the model says one bit in {at}..{}",
                at + len
            ));
        }
    }
    diffs.extend(ingress(b, faults, pkt));
    diffs.extend(xdp(b, faults, pkt));
    (true, diffs)
}

/// The same for the TC judge at the sending pod's veth ingress: drops only.
fn ingress(b: &Loaded, faults: &[Installed], pkt: &[u8]) -> Vec<String> {
    let mut diffs = vec![];
    let n = faults.len();
    let m = model::judge(faults, pkt, JudgeHook::VethIngress, false);
    let before = observe(b, n, JudgeHook::VethIngress, Hook::VethIngress);
    let Some(run) = b.tc(programs::TC_VETH_INGRESS, pkt) else {
        return diffs;
    };
    let got = delta(
        &observe(b, n, JudgeHook::VethIngress, Hook::VethIngress),
        &before,
    );
    let want = if m.verdict == Verdict::Drop {
        TC_SHOT
    } else {
        TC_OK
    };
    if run.verdict != want {
        diffs.push(format!(
            "tc ingress verdict {} where the model says {:?}",
            run.verdict, m.verdict
        ));
    }
    if got != expected(&m) {
        diffs.push(format!(
            "tc ingress counters/stats {:?} where the model says {:?}",
            got,
            expected(&m)
        ));
    }
    diffs
}

/// The same for XDP, the sending pod's veth: drops only.
fn xdp(b: &Loaded, faults: &[Installed], pkt: &[u8]) -> Vec<String> {
    let mut diffs = vec![];
    let n = faults.len();
    let m = model::judge(faults, pkt, JudgeHook::VethIngress, true);
    let before = observe(b, n, JudgeHook::VethIngress, Hook::VethIngress);
    let v = b.xdp(pkt);
    let got = delta(
        &observe(b, n, JudgeHook::VethIngress, Hook::VethIngress),
        &before,
    );
    let want = if m.verdict == Verdict::Drop {
        XDP_DROP
    } else {
        XDP_PASS
    };
    if v != want {
        diffs.push(format!(
            "xdp verdict {v} where the model says {:?}",
            m.verdict
        ));
    }
    if got != expected(&m) {
        diffs.push(format!(
            "xdp counters/stats {:?} where the model says {:?}",
            got,
            expected(&m)
        ));
    }
    diffs
}

/// A disagreement as a regression case for diff/cases.json.
fn case(set: &Set, pkt: &[u8], why: &[String]) -> Value {
    json!({
        "why": why.join("; "),
        "faults": set.specs,
        "expired": set.expired,
        "pending": set.pending,
        "packet": hex(pkt),
    })
}

fn random_set(r: &mut Rng) -> Set {
    let n = 1 + r.below(6);
    let specs = (0..n)
        .map(|i| generate::fault(r, &format!("f{i}")))
        .collect();
    Set {
        specs,
        expired: (0..n).map(|_| r.chance(0.05)).collect(),
        pending: (0..n).map(|_| r.chance(0.05)).collect(),
    }
}

#[test]
fn the_programs_judge_as_the_reference_model() {
    let mut b = Loaded::new("pdf");
    let mut found = vec![];
    // The saved cases first.
    let saved: Vec<Value> = serde_json::from_str(include_str!("diff/cases.json")).unwrap();
    for c in &saved {
        let set = Set {
            specs: c["faults"].as_array().unwrap().clone(),
            expired: serde_json::from_value(c["expired"].clone()).unwrap(),
            pending: serde_json::from_value(c["pending"].clone()).unwrap(),
        };
        let faults = install(&mut b, &set);
        assert_eq!(
            faults.len(),
            set.specs.len(),
            "a saved case's faults no longer validate (it would test nothing): {}",
            c["why"]
        );
        let pkt = unhex(c["packet"].as_str().unwrap());
        let (_, d) = compare(&b, &faults, &pkt);
        if !d.is_empty() {
            found.push(case(&set, &pkt, &d));
        }
    }
    let packets: usize = std::env::var("INJECTOR_DIFF_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("INJECTOR_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0001_d1ff_5eed);
    let mut r = Rng::new(seed);
    let started = Instant::now();
    let (mut sets, mut faults_n, mut refused, mut done, mut tc_refused) = (0, 0, 0, 0, 0);
    let mut verdicts = std::collections::BTreeMap::<String, u64>::new();
    while done < packets {
        let set = random_set(&mut r);
        let faults = install(&mut b, &set);
        sets += 1;
        faults_n += faults.len();
        refused += set.specs.len() - faults.len();
        assert!(
            sets <= 100 + packets / 10,
            "{sets} fault sets for {done} packets: the generator's faults no longer validate"
        );
        if faults.is_empty() {
            continue;
        }
        for _ in 0..PACKETS_PER_SET.min(packets - done) {
            let pkt = generate::packet(&mut r);
            let (tc, d) = compare(&b, &faults, &pkt);
            tc_refused += u64::from(!tc);
            let v = model::judge(&faults, &pkt, JudgeHook::VethEgress, false).verdict;
            let name = match v {
                Verdict::Change { .. } => "change".to_string(),
                v => format!("{v:?}").to_lowercase(),
            };
            *verdicts.entry(name).or_default() += 1;
            done += 1;
            if !d.is_empty() && found.len() < 50 {
                found.push(case(&set, &pkt, &d));
            }
        }
    }
    eprintln!(
        "prog_diff: seed {seed}: {done} packets through TC and XDP against {sets} fault sets \
         ({faults_n} faults installed, {refused} generated specs refused by validation) in {:.1} s; \
         model verdicts at TC {verdicts:?}; {tc_refused} short IP frames the TC test run \
         refuses (XDP only); {} disagreements",
        started.elapsed().as_secs_f64(),
        found.len()
    );
    for c in &found {
        eprintln!("{c}");
    }
    // A run that never drops, rejects or changes a packet compares nothing worth comparing.
    if packets >= 10_000 {
        for v in ["pass", "drop", "reject", "change"] {
            assert!(
                verdicts.get(v).is_some_and(|&n| n >= 100),
                "only {:?} packets the model calls {v}: the generator has drifted",
                verdicts.get(v)
            );
        }
    }
    assert!(
        found.is_empty(),
        "{} packets judged otherwise than the model (cases above; add them to diff/cases.json)",
        found.len()
    );
}
