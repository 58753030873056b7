//! The experiment file (YAML or JSON) and its validated form: hypothesis, probes, steps of faults
//! (explicit and ramped), abort rules, recovery. Errors name the field path, the value and the fix.

use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    kfault::{KubeFault, kube_fault},
    probe::{Probe, ProbeSpec},
    ramp::RampSpec,
    rules::{Rule, RuleSpec},
};
use crate::fault::spec::{FaultSpec, FieldError};

/// The file as written. Unknown fields are refused at every level.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// A short name for the report's title (default: the file's name).
    #[serde(default)]
    pub name: Option<String>,
    /// What the faults are: `nodes` (node-level faults sent to daemons, the default) or
    /// `kubernetes` (NetworkFault specs, created in the cluster).
    #[serde(default)]
    pub targets: Targets,
    /// What should stay true while the faults run, in words.
    pub hypothesis: String,
    /// Default time between two runs of a probe (default 1s).
    #[serde(default)]
    pub probe_interval: Option<String>,
    /// The probes that measure the steady state: before, during every step, and after.
    pub steady_state: Vec<Value>,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// Steps generated from one fault and a list of magnitudes (after `steps`).
    #[serde(default)]
    pub ramp: Option<RampSpec>,
    /// When to stop and remove every fault (default: any probe failing 3 times in a row).
    #[serde(default)]
    pub abort_when: Option<Vec<RuleSpec>>,
    /// How long the steady state has to come back after the faults are gone (default 30s).
    #[serde(default)]
    pub recovery: Option<String>,
    /// Each fault's kernel deadline: the end of its step plus this (default 5s).
    #[serde(default)]
    pub deadline_margin: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub duration: String,
    /// Faults as `injector apply` takes them, without `for` (the experiment sets it).
    pub faults: Vec<Value>,
}

/// Where an experiment's faults go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Targets {
    /// Node-level faults (CIDRs, ports), sent to each daemon's API.
    #[default]
    Nodes,
    /// NetworkFaults (pods, Services, CIDRs, `mode`), created in the cluster.
    Kubernetes,
}

/// One fault of a step: node-level, or a NetworkFault.
#[expect(
    clippy::large_enum_variant,
    reason = "a step holds a few faults; boxing buys nothing"
)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepFault {
    Node(FaultSpec),
    Kube(KubeFault),
}

impl StepFault {
    pub fn name(&self) -> &str {
        match self {
            StepFault::Node(f) => &f.name,
            StepFault::Kube(f) => &f.name,
        }
    }

    /// `loss 1%`, `blackhole`, `delay 10ms`, ...
    pub fn action_text(&self) -> String {
        match self {
            StepFault::Node(f) => f.action_text(),
            StepFault::Kube(f) => f.action_text(),
        }
    }

    /// Its kernel lifetime: `for` of a node-level fault, `duration` of a NetworkFault.
    pub fn lifetime(&self) -> &str {
        match self {
            StepFault::Node(f) => &f.lifetime,
            StepFault::Kube(f) => &f.spec.duration,
        }
    }

    pub fn set_lifetime(&mut self, d: Duration) {
        match self {
            StepFault::Node(f) => f.lifetime = as_for(d),
            StepFault::Kube(f) => f.spec.duration = as_for(d),
        }
    }

    /// The node-level fault (tests of node-level files).
    #[cfg(test)]
    pub fn node(&self) -> &FaultSpec {
        match self {
            StepFault::Node(f) => f,
            StepFault::Kube(f) => panic!("{} is a NetworkFault", f.name),
        }
    }
}

/// One step of the plan: its faults run together for `duration`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: String,
    pub duration: Duration,
    /// Validated; the lifetime is set when the step starts (time left in the step + the margin).
    pub faults: Vec<StepFault>,
}

/// A validated experiment: everything checked before anything starts.
#[derive(Clone, Debug)]
pub struct Experiment {
    pub name: String,
    pub targets: Targets,
    pub hypothesis: String,
    pub probes: Vec<Probe>,
    pub steps: Vec<Step>,
    pub rules: Vec<Rule>,
    pub recovery: Duration,
    pub margin: Duration,
    /// The file as read (YAML turned JSON), kept in the report.
    pub source: Value,
}

impl Experiment {
    /// Every fault name of every step, once each.
    pub fn fault_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for f in self.steps.iter().flat_map(|s| &s.faults) {
            if !v.iter().any(|n| n == f.name()) {
                v.push(f.name().to_string());
            }
        }
        v
    }
}

pub(crate) fn ferr(field: impl Into<String>, msg: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        msg: msg.into(),
    }
}

/// `at` + serde's path of the error (`steps[2].faults[0]` + `.loss`).
fn join(at: &str, path: &str) -> String {
    match (at, path) {
        (a, ".") | (a, "") => a.to_string(),
        ("", p) => p.to_string(),
        (a, p) if p.starts_with('[') => format!("{a}{p}"),
        (a, p) => format!("{a}.{p}"),
    }
}

/// Deserializes `v` as `T`; an error names `at` plus the path inside.
pub(crate) fn typed<T: DeserializeOwned>(at: &str, v: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = join(at, &path);
        let msg = e.into_inner().to_string();
        if field.is_empty() {
            ferr("(file)", msg)
        } else {
            ferr(field, msg)
        }
    })
}

pub(crate) use crate::fault::spec::duration;

/// `1.5s` -> `1500ms`: the `for` the daemon is sent (millisecond resolution).
pub fn as_for(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// One fault of a step as `targets` says (without `for`/`duration`): `at` is its path
/// (`steps[1].faults[0]`).
pub(crate) fn fault(
    targets: Targets,
    at: &str,
    v: Value,
    lifetime: Duration,
) -> Result<StepFault, FieldError> {
    match targets {
        Targets::Nodes => node_fault(at, v, lifetime).map(StepFault::Node),
        Targets::Kubernetes => kube_fault(at, v, &as_for(lifetime)).map(StepFault::Kube),
    }
}

/// One node-level fault of a step, written without `for`.
fn node_fault(at: &str, v: Value, lifetime: Duration) -> Result<FaultSpec, FieldError> {
    let mut v = v;
    let Some(o) = v.as_object_mut() else {
        return Err(ferr(
            at,
            "a fault is a mapping: {name: ..., to: [...], loss: 1%}",
        ));
    };
    if o.contains_key("for") {
        return Err(ferr(
            format!("{at}.for"),
            "set by the experiment (the end of the step plus deadline_margin); remove it",
        ));
    }
    o.insert("for".into(), Value::String(as_for(lifetime)));
    let spec: FaultSpec = typed(at, v)?;
    spec.validate(&format!("{at}."))?;
    Ok(spec)
}

const MAX_TOTAL: Duration = Duration::from_secs(24 * 3600);

/// Reads and checks an experiment: YAML or JSON text; `label` names the file in the default name.
pub fn load(label: &str, text: &str) -> Result<Experiment, FieldError> {
    let source: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ferr("(file)", format!("not JSON: {e}")))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or_default().to_string();
            ferr(
                "(file)",
                format!("not YAML: {}", first.trim_start_matches("error: ")),
            )
        })?
    };
    let file: ExperimentFile = typed("", source.clone())?;
    let name = file.name.clone().unwrap_or_else(|| {
        let base = label.rsplit('/').next().unwrap_or(label);
        base.split('.').next().unwrap_or(base).to_string()
    });
    if file.hypothesis.trim().is_empty() {
        return Err(ferr("hypothesis", "say what should stay true, in words"));
    }
    let interval = match &file.probe_interval {
        None => Duration::from_secs(1),
        Some(v) => duration(
            "probe_interval",
            v,
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(3600), "1h"),
        )?,
    };
    if file.steady_state.is_empty() {
        return Err(ferr(
            "steady_state",
            "give at least one probe (http, prometheus or command)",
        ));
    }
    let mut probes: Vec<Probe> = Vec::new();
    for (i, v) in file.steady_state.iter().enumerate() {
        let at = format!("steady_state[{i}]");
        let spec: ProbeSpec = typed(&at, v.clone())?;
        let p = spec.validate(&at, interval, file.targets)?;
        if probes.iter().any(|q| q.name == p.name) {
            return Err(ferr(
                format!("{at}.name"),
                format!("'{}' is used by another probe; names must differ", p.name),
            ));
        }
        probes.push(p);
    }
    let margin = match &file.deadline_margin {
        None => Duration::from_secs(5),
        Some(v) => duration(
            "deadline_margin",
            v,
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(600), "10m"),
        )?,
    };
    let mut steps = Vec::new();
    for (i, s) in file.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        let d = duration(
            &format!("{at}.duration"),
            &s.duration,
            (Duration::from_secs(1), "1s"),
            (MAX_TOTAL, "24h"),
        )?;
        if s.faults.is_empty() {
            return Err(ferr(format!("{at}.faults"), "give at least one fault"));
        }
        let mut faults: Vec<StepFault> = Vec::new();
        for (j, f) in s.faults.iter().enumerate() {
            let fat = format!("{at}.faults[{j}]");
            let spec = fault(file.targets, &fat, f.clone(), d + margin)?;
            if faults.iter().any(|g| g.name() == spec.name()) {
                return Err(ferr(
                    format!("{fat}.name"),
                    format!("'{}' appears twice in this step", spec.name()),
                ));
            }
            faults.push(spec);
        }
        let name = s.name.clone().unwrap_or_else(|| {
            faults
                .iter()
                .map(StepFault::action_text)
                .collect::<Vec<_>>()
                .join(", ")
        });
        steps.push(Step {
            name,
            duration: d,
            faults,
        });
    }
    if let Some(r) = &file.ramp {
        steps.extend(r.expand(file.targets, "ramp", margin)?);
    }
    if steps.is_empty() {
        return Err(ferr(
            "steps",
            "give steps, a ramp, or both: nothing would be injected",
        ));
    }
    let total: Duration = steps.iter().map(|s| s.duration).sum();
    if total > MAX_TOTAL {
        return Err(ferr("steps", "the steps last more than 24h in all"));
    }
    let rules = super::rules::validate(file.abort_when.as_deref(), &probes)?;
    let recovery = match &file.recovery {
        None => Duration::from_secs(30),
        Some(v) => duration(
            "recovery",
            v,
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(3600), "1h"),
        )?,
    };
    Ok(Experiment {
        name,
        targets: file.targets,
        hypothesis: file.hypothesis,
        probes,
        steps,
        rules,
        recovery,
        margin,
        source,
    })
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
