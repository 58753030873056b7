//! The report's model: what an experiment measured, as the JSON schema `injector.experiment/v1`
//! (documented in docs/experiments.md), and how the runner fills it in as events arrive.

pub mod html;
pub mod json;
mod svg;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    backend::Counts,
    file::{Experiment, StepFault, Targets},
    probe::{Probe, Sample},
};

pub const SCHEMA: &str = "injector.experiment/v1";

/// Every time in the report (`*_s`) is seconds since the experiment started (its first probe run).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub name: String,
    pub hypothesis: String,
    /// Wall clock at the start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the runner finished.
    pub ended_s: f64,
    /// The daemons' sockets or addresses; with Kubernetes targets, the cluster.
    pub daemons: Vec<String>,
    /// `nodes` or `kubernetes` (absent in reports before it: nodes).
    #[serde(default)]
    pub targets: Targets,
    /// With Kubernetes targets: the run id, the value of every NetworkFault's
    /// `injector.dev/experiment-run` label (and the suffix of its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub dry_run: bool,
    pub verdict: Verdict,
    pub steps: Vec<StepRecord>,
    pub probes: Vec<ProbeRecord>,
    pub faults: Vec<FaultRecord>,
    /// Present when an abort rule held.
    pub abort: Option<Abort>,
    pub recovery: Recovery,
    /// The experiment file as read (YAML as JSON).
    pub experiment: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    /// The steady state held through every step and came back within `recovery`.
    Held,
    /// An abort rule held at `step`, or the steady state did not come back.
    Rejected,
    /// The steady state did not hold before, or a daemon refused: no fault was applied.
    NotStarted,
    /// Ctrl-C.
    Interrupted,
    /// `--dry-run`: the file is valid and the steady state holds; nothing was applied.
    DryRun,
    /// A daemon failed mid-way (its error in `reason`); the faults were removed.
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub result: Conclusion,
    /// 1-based step where it was decided, if during one.
    pub step: Option<usize>,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based.
    pub index: usize,
    pub name: String,
    pub planned_s: f64,
    /// Absent for steps that never started.
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
    /// As sent (`for`, or a NetworkFault's `duration`: to the step's end plus the margin).
    pub faults: Vec<StepFault>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub name: String,
    /// `http`, `prometheus`, `command`.
    pub kind: String,
    /// In words: `>= 80% get 200 in <= 500ms`.
    pub threshold: String,
    /// The unit of `value` (`% ok`, `exit code`, empty for a query).
    pub unit: String,
    /// The threshold lines: a value must stay `>= min` / `<= max`.
    pub limits: Vec<Limit>,
    pub interval_s: f64,
    pub netns: Option<String>,
    pub samples: Vec<SampleRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Limit {
    pub value: f64,
    /// `min` or `max`.
    pub kind: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleRecord {
    /// When the run started.
    pub t_s: f64,
    pub took_ms: f64,
    /// `before`, `step`, `recovery`.
    pub phase: String,
    /// 1-based step, for `step` samples.
    pub step: Option<usize>,
    pub value: Option<f64>,
    pub ok: bool,
    pub latency_ms: Option<f64>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRecord {
    pub name: String,
    /// Counters summed over hooks and daemons, read about once a second.
    pub samples: Vec<CounterRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CounterRecord {
    pub t_s: f64,
    pub matched: u64,
    pub dropped: u64,
    pub delayed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Abort {
    /// The rule, in words.
    pub rule: String,
    pub probe: String,
    /// 1-based.
    pub step: usize,
    /// The start of the first failing run of the streak that made the rule hold.
    pub first_failure_s: f64,
    /// The breach: the end of the run that made the rule hold.
    pub breach_s: f64,
    /// Every delete answered on every daemon.
    pub removed_s: f64,
    pub removal_ms: f64,
    /// Traffic restored: the end of the first passing run of the breaching probe, run afresh
    /// right after the removal and again until it passes.
    pub restored_s: Option<f64>,
    /// From the breach to traffic restored.
    pub restore_ms: Option<f64>,
    /// Deletes that failed (the kernel deadline still ends those faults).
    pub errors: Vec<String>,
    /// Per node: from the breach to when it no longer held a fault of the experiment.
    #[serde(default)]
    pub nodes: Vec<NodeAbort>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeAbort {
    pub node: String,
    /// Null: not seen within the recovery time.
    pub removed_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRemoval {
    /// A daemon's socket or address, or a node's name.
    pub node: String,
    /// When it no longer held a fault of the experiment (a daemon: its deletes answered; a
    /// Kubernetes node: its InjectorNode report listed none); null: not within `within_s`.
    pub removed_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recovery {
    pub within_s: f64,
    /// When the experiment's faults were removed (after the last step, or at an abort).
    pub removed_s: Option<f64>,
    /// When every probe had passed again after the removal; absent: not within `within_s`.
    pub recovered_s: Option<f64>,
    /// Per node, when it no longer held a fault of the experiment.
    #[serde(default)]
    pub nodes: Vec<NodeRemoval>,
}

impl Report {
    pub fn new(
        exp: &Experiment,
        daemons: Vec<String>,
        started_unix_ms: u64,
        dry_run: bool,
    ) -> Report {
        Report {
            schema: SCHEMA.into(),
            name: exp.name.clone(),
            hypothesis: exp.hypothesis.clone(),
            started_unix_ms,
            ended_s: 0.0,
            daemons,
            targets: exp.targets,
            run: None,
            dry_run,
            verdict: Verdict {
                result: Conclusion::NotStarted,
                step: None,
                reason: String::new(),
            },
            steps: exp
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepRecord {
                    index: i + 1,
                    name: s.name.clone(),
                    planned_s: s.duration.as_secs_f64(),
                    start_s: None,
                    end_s: None,
                    faults: s.faults.clone(),
                })
                .collect(),
            probes: exp.probes.iter().map(probe_record).collect(),
            faults: exp
                .fault_names()
                .into_iter()
                .map(|name| FaultRecord {
                    name,
                    samples: Vec::new(),
                })
                .collect(),
            abort: None,
            recovery: Recovery {
                within_s: exp.recovery.as_secs_f64(),
                removed_s: None,
                recovered_s: None,
                nodes: Vec::new(),
            },
            experiment: exp.source.clone(),
        }
    }

    /// Records a probe's run; `t`/`took` already relative.
    pub fn sample(&mut self, s: &Sample, t_s: f64, phase: &str, step: Option<usize>) {
        self.probes[s.probe].samples.push(SampleRecord {
            t_s,
            took_ms: s.end.saturating_duration_since(s.start).as_secs_f64() * 1e3,
            phase: phase.into(),
            step,
            value: s.out.value,
            ok: s.out.ok,
            latency_ms: s.out.latency_ms,
            detail: s.out.detail.clone(),
        });
    }

    pub fn counters(&mut self, t_s: f64, c: &BTreeMap<String, Counts>) {
        for f in &mut self.faults {
            if let Some(v) = c.get(&f.name) {
                f.samples.push(CounterRecord {
                    t_s,
                    matched: v[0],
                    dropped: v[1],
                    delayed: v[2],
                });
            }
        }
    }
}

fn probe_record(p: &Probe) -> ProbeRecord {
    ProbeRecord {
        name: p.name.clone(),
        kind: p.kind_name().into(),
        threshold: p.threshold(),
        unit: p.unit().into(),
        limits: p
            .limits()
            .into_iter()
            .map(|(value, min)| Limit {
                value,
                kind: if min { "min" } else { "max" }.into(),
            })
            .collect(),
        interval_s: p.interval.as_secs_f64(),
        netns: p.netns.clone(),
        samples: Vec::new(),
    }
}

/// Per-second rates between consecutive counter reads (a fault replaced by the next step starts
/// from zero: a drop in a counter counts from zero).
pub fn rates(samples: &[CounterRecord], pick: fn(&CounterRecord) -> u64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].t_s > w[0].t_s)
        .map(|w| {
            let (a, b) = (pick(&w[0]), pick(&w[1]));
            let d = if b >= a { b - a } else { b };
            (w[1].t_s, d as f64 / (w[1].t_s - w[0].t_s))
        })
        .collect()
}

#[cfg(test)]
mod tests;
