//! Runs an experiment: the steady state before, each step's faults on every daemon (or in the
//! cluster) while the probes run, the abort at once when a rule holds, the removal, the
//! recovery; fills the report.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use super::{
    backend::{Backend, Counts, NodeRemoved},
    events::{Event, on_ctrl_c, poll_counters, unix_ms},
    file::Experiment,
    probe::{self, Probe, Probers, Sample},
    report::{Abort, Conclusion, NodeAbort, NodeRemoval, Report, Verdict},
    rules::Streaks,
    view::{Live, View},
};

struct Run<'a> {
    exp: &'a Experiment,
    t0: Instant,
    rep: Report,
    live: Live,
    view: View,
    rx: mpsc::Receiver<Event>,
    /// Counters of the previous read, for rates.
    prev: Option<(Instant, BTreeMap<String, Counts>)>,
}

impl Run<'_> {
    fn at(&self, i: Instant) -> f64 {
        i.saturating_duration_since(self.t0).as_secs_f64()
    }

    fn record(&mut self, s: &Sample, phase: &str, step: Option<usize>, streak: u32) {
        let t = self.at(s.start);
        self.rep.sample(s, t, phase, step.map(|k| k + 1));
        if !s.out.ok {
            let p = &self.exp.probes[s.probe].name;
            self.view
                .event(&format!("{t:7.1}s  probe {p} failed: {}", s.out.detail));
        }
        self.live.last[s.probe] = Some((s.out.clone(), streak));
    }

    fn counters(&mut self, t: Instant, c: BTreeMap<String, Counts>) {
        let ts = self.at(t);
        self.rep.counters(ts, &c);
        if let Some((pt, pc)) = &self.prev {
            let dt = t.saturating_duration_since(*pt).as_secs_f64().max(1e-3);
            for (n, v) in &c {
                let p = pc.get(n).copied().unwrap_or_default();
                let r = |i: usize| (if v[i] >= p[i] { v[i] - p[i] } else { v[i] }) as f64 / dt;
                self.live.rates.insert(n.clone(), (r(1), r(2)));
            }
        }
        self.live.counters = c.clone();
        self.prev = Some((t, c));
    }

    /// Per node, when it no longer held a fault, into the recovery and the abort.
    fn nodes_removed(&mut self, nodes: &[NodeRemoved]) {
        let at: Vec<Option<f64>> = nodes.iter().map(|n| n.at.map(|t| self.at(t))).collect();
        self.rep.recovery.nodes = nodes
            .iter()
            .zip(&at)
            .map(|(n, t)| NodeRemoval {
                node: n.node.clone(),
                removed_s: *t,
            })
            .collect();
        if let Some(a) = self.rep.abort.as_mut() {
            a.nodes = nodes
                .iter()
                .zip(&at)
                .map(|(n, t)| NodeAbort {
                    node: n.node.clone(),
                    removed_ms: t.map(|t| (t - a.breach_s) * 1e3),
                })
                .collect();
        }
        for (n, t) in nodes.iter().zip(&at) {
            let line = match (t, &self.rep.abort) {
                (Some(t), Some(a)) => format!(
                    "  {}: no fault of the experiment left {:.0} ms after the breach",
                    n.node,
                    (t - a.breach_s) * 1e3
                ),
                (Some(t), None) => {
                    format!("  {}: no fault of the experiment left at {t:.1}s", n.node)
                }
                (None, _) => format!(
                    "  {}: still held a fault of the experiment at the end of recovery",
                    n.node
                ),
            };
            self.view.event(&line);
        }
    }

    fn finish(mut self, result: Conclusion, step: Option<usize>, reason: String) -> Report {
        self.rep.ended_s = self.at(Instant::now());
        self.rep.verdict = Verdict {
            result,
            step,
            reason,
        };
        self.rep
    }
}

/// Runs `exp` against `target` (node daemons, or the cluster); with `dry_run`, only the checks
/// and the steady state before. Never returns with a fault of the experiment left where the
/// target answers.
pub fn run(
    exp: &Experiment,
    target: Arc<dyn Backend>,
    dry_run: bool,
    run: Option<String>,
) -> Report {
    let (tx, rx) = mpsc::channel();
    let mut r = Run {
        exp,
        t0: Instant::now(),
        rep: Report::new(exp, target.labels(), unix_ms(), dry_run),
        live: Live {
            last: vec![None; exp.probes.len()],
            phase: "steady state before the faults".into(),
            ..Live::default()
        },
        view: View::default(),
        rx,
        prev: None,
    };
    r.rep.run = run;
    on_ctrl_c(tx.clone());
    let names = exp.fault_names();
    r.view
        .event(&format!("experiment {}: {}", exp.name, exp.hypothesis));
    if let Err(e) = target.check(&names) {
        return r.finish(Conclusion::NotStarted, None, e);
    }
    // Every step's faults as the target takes them (the API server's dry run), before any starts.
    if let Err(e) = target.validate(&exp.steps) {
        return r.finish(Conclusion::NotStarted, None, e);
    }
    // A probe from inside a pod runs in that pod's netns on this host.
    let mut probes: Vec<Probe> = exp.probes.clone();
    for (i, p) in probes.iter_mut().enumerate() {
        if let Some(pod) = &p.pod {
            match target.pod_netns(pod) {
                Ok(ns) => {
                    r.view
                        .event(&format!("probe {}: pod {pod}'s netns is {ns}", p.name));
                    r.rep.probes[i].netns = Some(ns.clone());
                    p.netns = Some(ns);
                }
                Err(e) => {
                    return r.finish(
                        Conclusion::NotStarted,
                        None,
                        format!("probe {}: {e}", p.name),
                    );
                }
            }
        }
    }

    // Before: one run of every probe, all must pass.
    let sink = tx.clone();
    let probers = Probers::spawn(&probes, move |s| {
        let _ = sink.send(Event::Sample(s));
    });
    probers.kick();
    let mut before = vec![None; exp.probes.len()];
    while before.iter().any(Option::is_none) {
        match r.rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Event::Sample(s)) => {
                r.record(&s, "before", None, u32::from(!s.out.ok));
                before[s.probe] = Some((s.out.ok, s.out.detail.clone()));
            }
            Ok(Event::Interrupt) => {
                return r.finish(
                    Conclusion::Interrupted,
                    None,
                    "stopped before the faults (Ctrl-C)".into(),
                );
            }
            Ok(Event::Counters(..) | Event::Restored(_) | Event::NodesRemoved(_)) => {}
            Err(_) => {
                return r.finish(
                    Conclusion::NotStarted,
                    None,
                    "the probes did not answer in 120 s".into(),
                );
            }
        }
    }
    r.view.draw(exp, &r.live);
    let failed: Vec<String> = before
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match b {
            Some((false, d)) => Some(format!("probe {}: {d}", exp.probes[i].name)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        let why = format!(
            "the steady state does not hold before the faults: {}",
            failed.join("; ")
        );
        return r.finish(Conclusion::NotStarted, None, why);
    }
    if dry_run {
        let why = "the file is valid, every fault is accepted, the target answers and the steady state holds; nothing was started".into();
        return r.finish(Conclusion::DryRun, None, why);
    }

    // The steps.
    let stop_counters = Arc::new(AtomicBool::new(false));
    poll_counters(
        target.clone(),
        names.clone(),
        tx.clone(),
        stop_counters.clone(),
    );
    probers.periodic();
    let mut streaks = Streaks::new(&exp.rules, exp.probes.len());
    let mut first_fail: Vec<Option<Instant>> = vec![None; exp.probes.len()];
    let mut applied: Vec<String> = Vec::new();
    let mut abort: Option<(String, usize, Instant, Instant, usize, String)> = None;
    let (mut interrupted, mut failure) = (None, None);
    'steps: for (k, step) in exp.steps.iter().enumerate() {
        let start = Instant::now();
        let end = start + step.duration;
        r.rep.steps[k].start_s = Some(r.at(start));
        let faults = match target.apply(&step.faults, step.duration + exp.margin) {
            Ok(sent) => sent,
            Err(e) => {
                failure = Some((k, format!("step {}: applying its faults: {e}", k + 1)));
                break;
            }
        };
        r.rep.steps[k].faults = faults.clone();
        let now_names: Vec<String> = faults.iter().map(|f| f.name().to_string()).collect();
        let stale: Vec<String> = applied
            .iter()
            .filter(|n| !now_names.contains(n))
            .cloned()
            .collect();
        if !stale.is_empty() {
            target.remove(&stale);
        }
        applied = now_names;
        r.view.event(&format!(
            "{:7.1}s  step {}/{} {}: {} for {:?}",
            r.at(start),
            k + 1,
            exp.steps.len(),
            step.name,
            faults
                .iter()
                .map(|f| format!("{} {}", f.name(), f.action_text()))
                .collect::<Vec<_>>()
                .join(", "),
            step.duration
        ));
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            r.live.step = Some((k, now - start));
            r.view.draw(exp, &r.live);
            match r
                .rx
                .recv_timeout((end - now).min(Duration::from_millis(250)))
            {
                Ok(Event::Sample(s)) => {
                    let p = s.probe;
                    if !s.out.ok && streaks.failing(p) == 0 {
                        first_fail[p] = Some(s.start);
                    }
                    let rule = streaks.sample(p, s.out.ok).map(|r| r.text.clone());
                    r.record(&s, "step", Some(k), streaks.failing(p));
                    if let Some(rule) = rule {
                        let first = first_fail[p].unwrap_or(s.start);
                        abort = Some((rule, p, first, s.end, k, s.out.detail.clone()));
                        break 'steps;
                    }
                }
                Ok(Event::Counters(t, c)) => r.counters(t, c),
                Ok(Event::Restored(_) | Event::NodesRemoved(_)) => {}
                Ok(Event::Interrupt) => {
                    interrupted = Some(k);
                    break 'steps;
                }
                Err(_) => {}
            }
        }
        r.rep.steps[k].end_s = Some(r.at(Instant::now()));
    }

    // Remove every fault of the experiment, on every daemon, at once.
    let (removed, errors) = target.remove(&names);
    let removed_s = r.at(removed);
    r.rep.recovery.removed_s = Some(removed_s);
    let current = abort
        .as_ref()
        .map(|a| a.4)
        .or(interrupted)
        .or(failure.as_ref().map(|f| f.0));
    if let Some(k) = current {
        r.rep.steps[k].end_s = Some(removed_s);
    }
    if let Some((rule, p, first, breach, k, detail)) = &abort {
        r.view.event(&format!(
            "{removed_s:7.1}s  ABORT at step {}: {rule}; every fault removed {:.1} ms after the breach",
            k + 1,
            removed.saturating_duration_since(*breach).as_secs_f64() * 1e3
        ));
        r.rep.abort = Some(Abort {
            rule: format!("{rule}: {detail}"),
            probe: exp.probes[*p].name.clone(),
            step: k + 1,
            first_failure_s: r.at(*first),
            breach_s: r.at(*breach),
            removed_s,
            removal_ms: removed.saturating_duration_since(*breach).as_secs_f64() * 1e3,
            restored_s: None,
            restore_ms: None,
            errors: errors.clone(),
            nodes: Vec::new(),
        });
    }
    for e in &errors {
        r.view.event(&format!("  {e}"));
    }
    let mut restoring = false;
    if let Some((_, p, ..)) = &abort {
        let tx = tx.clone();
        probe::until_pass(&probes[*p], removed + exp.recovery, move |t| {
            let _ = tx.send(Event::Restored(t));
        });
        restoring = true;
    }
    // Per node, when it no longer held a fault of the experiment (on its own thread: the
    // restore above and the recovery go on meanwhile).
    let mut confirming = true;
    {
        let (d, names, tx, limit) = (target.clone(), names.clone(), tx.clone(), exp.recovery);
        std::thread::spawn(move || {
            let n = d.nodes_removed(&names, removed, limit);
            let _ = tx.send(Event::NodesRemoved(n));
        });
    }

    // Recovery: the steady state must come back within `recovery` (skipped after Ctrl-C).
    probers.kick();
    r.live.step = None;
    r.live.phase = "recovery: waiting for the steady state".into();
    let deadline = removed + exp.recovery;
    let mut since: Vec<bool> = vec![false; exp.probes.len()];
    let mut recovered = None;
    while interrupted.is_none() && (recovered.is_none() || restoring || confirming) {
        r.view.draw(exp, &r.live);
        let now = Instant::now();
        if now >= deadline && !since.is_empty() {
            break;
        }
        match r
            .rx
            .recv_timeout((deadline.saturating_duration_since(now)).min(Duration::from_millis(250)))
        {
            Ok(Event::Sample(s)) => {
                r.record(&s, "recovery", None, u32::from(!s.out.ok));
                if s.start >= removed {
                    since[s.probe] = s.out.ok;
                    if recovered.is_none() && since.iter().all(|&b| b) {
                        recovered = Some(s.end);
                    }
                }
            }
            Ok(Event::Counters(t, c)) => r.counters(t, c),
            Ok(Event::Restored(t)) => {
                restoring = false;
                let t = t.map(|t| t.saturating_duration_since(r.t0).as_secs_f64());
                if let Some(a) = r.rep.abort.as_mut() {
                    a.restored_s = t;
                    a.restore_ms = t.map(|t| (t - a.breach_s) * 1e3);
                }
            }
            Ok(Event::NodesRemoved(n)) => {
                confirming = false;
                r.nodes_removed(&n);
            }
            Ok(Event::Interrupt) => break,
            Err(_) => {}
        }
    }
    stop_counters.store(true, Ordering::Relaxed);
    drop(probers);
    r.rep.recovery.recovered_s = recovered.map(|t| r.at(t));
    if let Some(a) = &r.rep.abort
        && let Some(ms) = a.restore_ms
    {
        r.view.event(&format!(
            "traffic restored {ms:.0} ms after the breach (probe {} passes again)",
            a.probe
        ));
    }
    let last = exp.steps.len();
    let not_back = || {
        let bad: Vec<String> = exp
            .probes
            .iter()
            .enumerate()
            .filter(|(i, _)| !since[*i])
            .map(|(i, p)| {
                let d = r.live.last[i]
                    .as_ref()
                    .map(|(o, _)| o.detail.clone())
                    .unwrap_or_default();
                format!("probe {}: {d}", p.name)
            })
            .collect();
        format!(
            "the steady state did not come back within {:?} of the faults' removal: {}",
            exp.recovery,
            bad.join("; ")
        )
    };
    if let Some(k) = interrupted {
        return r.finish(
            Conclusion::Interrupted,
            Some(k + 1),
            format!(
                "stopped by Ctrl-C during step {}; every fault removed",
                k + 1
            ),
        );
    }
    if let Some((k, e)) = failure {
        return r.finish(Conclusion::Failed, Some(k + 1), e);
    }
    if let Some((rule, _, _, _, k, detail)) = abort {
        let mut why = format!("{rule}: {detail}");
        if recovered.is_none() {
            why += &format!("; and {}", not_back());
        }
        return r.finish(Conclusion::Rejected, Some(k + 1), why);
    }
    if recovered.is_none() {
        let why = not_back();
        return r.finish(Conclusion::Rejected, Some(last), why);
    }
    let back = recovered
        .map(|t| t.saturating_duration_since(removed).as_secs_f64())
        .unwrap_or(0.0);
    let why = format!(
        "no abort rule held through {last} step{}, and the steady state was back {back:.1} s after the faults' removal",
        if last == 1 { "" } else { "s" }
    );
    r.finish(Conclusion::Held, None, why)
}
