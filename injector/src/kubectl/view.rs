//! What `ls` and `get` show of a NetworkFault: its action and match in the user's words, time left,
//! and the counters of every node's InjectorNode report; as tables or as JSON/YAML views.

use std::time::SystemTime;

use injector_common::Outcome;

use crate::fault::action::outcome_columns;
use serde::Serialize;

use crate::{
    cli::output::{columns, duration},
    fault::spec::FaultSpec,
    k8s::{
        InjectorNode, NetworkFault,
        resolve::lifetime,
        resource::{LabelSelector, Mode, Phase, PodSelector, Target},
    },
};

/// Packets per outcome, summed over a fault's node-level parts.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub matched: u64,
    pub passed: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub rejected: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub reordered: u64,
}

impl Counters {
    pub fn get(&self, o: Outcome) -> u64 {
        match o {
            Outcome::Matched => self.matched,
            Outcome::Passed => self.passed,
            Outcome::Dropped => self.dropped,
            Outcome::Delayed => self.delayed,
            Outcome::Rejected => self.rejected,
            Outcome::Duplicated => self.duplicated,
            Outcome::Corrupted => self.corrupted,
            Outcome::Reordered => self.reordered,
        }
    }

    fn add(&mut self, o: &Counters) {
        for (a, b) in [
            (&mut self.matched, o.matched),
            (&mut self.passed, o.passed),
            (&mut self.dropped, o.dropped),
            (&mut self.delayed, o.delayed),
            (&mut self.rejected, o.rejected),
            (&mut self.duplicated, o.duplicated),
            (&mut self.corrupted, o.corrupted),
            (&mut self.reordered, o.reordered),
        ] {
            *a += b;
        }
    }
}

/// The outcome columns: matched, then the outcomes of the listed faults' actions.
fn shown_outcomes(views: &[&FaultView]) -> Vec<Outcome> {
    let specs: Vec<FaultSpec> = views
        .iter()
        .map(|f| f.resource.spec.action_spec())
        .collect();
    outcome_columns(&specs)
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct NodeCounters {
    pub node: String,
    pub parts: u32,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct NodeError {
    pub node: String,
    pub message: String,
}

/// One NetworkFault as `ls`/`get` show it (and print with `-o json|yaml`).
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FaultView {
    pub namespace: String,
    pub name: String,
    pub phase: Option<Phase>,
    pub action: String,
    #[serde(rename = "match")]
    pub matcher: String,
    pub selected: Option<u32>,
    pub nodes: Option<u32>,
    /// status.deadline, else creationTimestamp + duration (RFC 3339).
    pub deadline: Option<String>,
    pub left_seconds: Option<f64>,
    /// Summed over `perNode`.
    pub counters: Counters,
    pub per_node: Vec<NodeCounters>,
    pub node_errors: Vec<NodeError>,
    pub resource: NetworkFault,
}

/// The action in the node CLI's words (`loss 10%`, `delay 100ms±10ms`, `blackhole`).
pub fn action_text(nf: &NetworkFault) -> String {
    nf.spec.action_spec().action_text()
}

fn selector_text(s: &LabelSelector) -> String {
    s.to_query().unwrap_or_else(|| "*".into())
}

fn pods_text(p: &PodSelector) -> String {
    let ns = match &p.namespace_selector {
        Some(sel) => format!("[{}]/", selector_text(sel)),
        None if p.namespaces.is_empty() => String::new(),
        None if p.namespaces.len() == 1 => format!("{}/", p.namespaces[0]),
        None => format!("{{{}}}/", p.namespaces.join(",")),
    };
    format!("{ns}{}", selector_text(&p.labels))
}

/// A side as typed: `app=checkout`, `bank/app=ledger`, `svc/payments-db:5432 (one)`,
/// `10.0.0.0/8 except 10.0.0.1`, `any`.
pub fn side_text(t: Option<&Target>) -> String {
    let Some(t) = t else {
        return "any".into();
    };
    let mut s = if let Some(p) = &t.pods {
        pods_text(p)
    } else if let Some(svc) = &t.service {
        match &svc.namespace {
            Some(ns) => format!("svc/{ns}/{}", svc.name),
            None => format!("svc/{}", svc.name),
        }
    } else if let Some(c) = &t.cidrs {
        c.join(",")
    } else {
        "any".into()
    };
    if !t.ports.is_empty() {
        s += &format!(":{}", t.ports.join(","));
    }
    if !t.except.is_empty() {
        s += &format!(" except {}", t.except.join(","));
    }
    match (t.mode, t.value) {
        (Mode::One, _) => s += " (one)",
        (Mode::Fixed, Some(n)) => s += &format!(" (fixed {n})"),
        (Mode::Percent, Some(n)) => s += &format!(" ({n}%)"),
        _ => {}
    }
    s
}

/// `app=checkout -> svc/payments-db tcp` (`<->` both ways).
pub fn match_text(nf: &NetworkFault) -> String {
    let s = &nf.spec;
    let arrow = if s.both_ways { "<->" } else { "->" };
    let mut m = format!(
        "{} {arrow} {}",
        side_text(s.from.as_ref()),
        side_text(s.to.as_ref())
    );
    if let Some(p) = &s.proto {
        m += &format!(" {p}");
    }
    m
}

/// The view of `nf` with the counters the `nodes` reports hold for it, at `now`.
pub fn view(nf: &NetworkFault, nodes: &[InjectorNode], now: SystemTime) -> FaultView {
    let namespace = nf.metadata.namespace.clone().unwrap_or_default();
    let name = nf.metadata.name.clone().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let status = nf.status.as_ref();
    let deadline = status
        .and_then(|s| s.deadline.as_deref())
        .and_then(|d| d.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(SystemTime::from)
        .or_else(|| lifetime(nf).ok().map(|l| l.1));
    let left_seconds = deadline.map(|d| match d.duration_since(now) {
        Ok(left) => left.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    });
    let (mut per_node, mut node_errors, mut counters) = (vec![], vec![], Counters::default());
    for n in nodes {
        let node = match n.spec.node_name.as_str() {
            "" => n.metadata.name.clone().unwrap_or_default(),
            named => named.to_string(),
        };
        let Some(report) = &n.status else { continue };
        for f in report.faults.iter().filter(|f| f.resource == key) {
            let c = Counters {
                matched: f.matched,
                passed: f.passed,
                dropped: f.dropped,
                delayed: f.delayed,
                rejected: f.rejected,
                duplicated: f.duplicated,
                corrupted: f.corrupted,
                reordered: f.reordered,
            };
            counters.add(&c);
            per_node.push(NodeCounters {
                node: node.clone(),
                parts: f.parts,
                counters: c,
            });
        }
        for e in report.errors.iter().filter(|e| e.resource == key) {
            node_errors.push(NodeError {
                node: node.clone(),
                message: e.message.clone(),
            });
        }
    }
    per_node.sort_by(|a, b| a.node.cmp(&b.node));
    FaultView {
        namespace,
        name,
        phase: status.and_then(|s| s.phase),
        action: action_text(nf),
        matcher: match_text(nf),
        selected: status.and_then(|s| s.selected.as_ref()).map(|s| s.count),
        nodes: status.and_then(|s| s.nodes.as_ref()).map(|n| n.count),
        deadline: deadline.map(crate::k8s::status::rfc3339),
        left_seconds,
        counters,
        per_node,
        node_errors,
        resource: {
            // As kubectl shows objects: without the bookkeeping of server-side apply.
            let mut r = nf.clone();
            r.metadata.managed_fields = None;
            r
        },
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn phase_text(p: Option<Phase>) -> String {
    opt(p.map(|p| format!("{p:?}")))
}

fn left_text(v: &FaultView) -> String {
    match v.left_seconds {
        None => "-".into(),
        Some(s) if s <= 0.0 => "ended".into(),
        Some(s) => duration(s),
    }
}

/// `ls`: a row per fault (`wide`: per fault and node, with the match); NAMESPACE with `-A`.
pub fn ls_table(views: &[FaultView], all_namespaces: bool, wide: bool) -> String {
    let outcomes = shown_outcomes(&views.iter().collect::<Vec<_>>());
    let mut head: Vec<String> = vec![];
    if all_namespaces {
        head.push("NAMESPACE".into());
    }
    head.push("NAME".into());
    if wide {
        head.push("NODE".into());
    }
    head.extend(["PHASE", "ACTION"].map(String::from));
    if wide {
        head.push("MATCH".into());
    }
    head.extend(["SELECTED", "NODES", "LEFT"].map(String::from));
    head.extend(outcomes.iter().map(|o| o.column().to_string()));
    let mut rows = vec![head];
    for v in views {
        let per: Vec<(String, Option<Counters>)> = if !wide {
            let c = (!v.per_node.is_empty()).then_some(v.counters);
            vec![(String::new(), c)]
        } else if v.per_node.is_empty() {
            vec![("-".into(), None)]
        } else {
            v.per_node
                .iter()
                .map(|n| (n.node.clone(), Some(n.counters)))
                .collect()
        };
        for (node, c) in per {
            let mut row = vec![];
            if all_namespaces {
                row.push(v.namespace.clone());
            }
            row.push(v.name.clone());
            if wide {
                row.push(node);
            }
            row.extend([phase_text(v.phase), v.action.clone()]);
            if wide {
                row.push(v.matcher.clone());
            }
            row.extend([opt(v.selected), opt(v.nodes), left_text(v)]);
            row.extend(outcomes.iter().map(|&o| opt(c.map(|c| c.get(o)))));
            rows.push(row);
        }
    }
    columns(&rows)
}

/// `get`: the fault described for people.
pub fn get_text(v: &FaultView) -> String {
    let nf = &v.resource;
    let s = &nf.spec;
    let mut lines: Vec<(String, String)> = vec![
        ("Name".into(), v.name.clone()),
        ("Namespace".into(), v.namespace.clone()),
        ("Phase".into(), phase_text(v.phase)),
        ("Action".into(), v.action.clone()),
        ("From".into(), side_text(s.from.as_ref())),
        ("To".into(), side_text(s.to.as_ref())),
    ];
    let mut extra = vec![];
    if let Some(p) = &s.proto {
        extra.push(format!("proto {p}"));
    }
    if s.both_ways {
        extra.push("both ways".into());
    }
    if let Some(f) = &s.flows {
        extra.push(format!("flows {f} (seed {})", s.seed));
    } else if s.seed != 0 {
        extra.push(format!("seed {}", s.seed));
    }
    if !extra.is_empty() {
        lines.push(("Options".into(), extra.join(", ")));
    }
    let ends = match (&v.deadline, v.left_seconds) {
        (Some(d), Some(l)) if l > 0.0 => format!(", ends {d} ({} left)", duration(l)),
        (Some(d), _) => format!(", ended {d}"),
        _ => String::new(),
    };
    lines.push(("Lifetime".into(), format!("{}{ends}", s.duration)));
    let status = nf.status.as_ref();
    match status {
        None => lines.push((
            "Status".into(),
            "none yet: no injector daemon has written it".into(),
        )),
        Some(st) => {
            if let Some(sel) = &st.selected {
                let listed = if sel.pods.is_empty() {
                    String::new()
                } else {
                    format!(": {}", sel.pods.join(", "))
                };
                lines.push(("Selected".into(), format!("{}{listed}", sel.count)));
            }
            if let Some(n) = &st.nodes {
                let listed = if n.names.is_empty() {
                    String::new()
                } else {
                    format!(": {}", n.names.join(", "))
                };
                lines.push(("Nodes".into(), format!("{}{listed}", n.count)));
            }
        }
    }
    let width = lines.iter().map(|l| l.0.len()).max().unwrap_or(0) + 2;
    let mut out: String = lines
        .iter()
        .map(|(k, val)| format!("{:<width$}{val}\n", format!("{k}:")))
        .collect();
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if !conditions.is_empty() {
        let mut rows = vec![
            ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(conditions.iter().map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                opt(c.last_transition_time.clone()),
                c.message.clone(),
            ]
        }));
        out += "Conditions:\n";
        out += &indent(&columns(&rows));
    }
    out += &counters_table(v);
    for e in &v.node_errors {
        out += &format!("Refused on {}: {}\n", e.node, e.message);
    }
    out
}

fn counters_table(v: &FaultView) -> String {
    if v.per_node.is_empty() {
        return "Counters: no node reports this fault (yet)\n".into();
    }
    let outcomes = shown_outcomes(&[v]);
    let mut head = vec!["NODE".to_string(), "PARTS".into()];
    head.extend(outcomes.iter().map(|o| o.column().to_string()));
    let mut rows = vec![head];
    for n in &v.per_node {
        let mut row = vec![n.node.clone(), n.parts.to_string()];
        row.extend(outcomes.iter().map(|&o| n.counters.get(o).to_string()));
        rows.push(row);
    }
    if v.per_node.len() > 1 {
        let mut row = vec!["total".to_string(), String::new()];
        row.extend(outcomes.iter().map(|&o| v.counters.get(o).to_string()));
        rows.push(row);
    }
    format!("Counters:\n{}", indent(&columns(&rows)))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
