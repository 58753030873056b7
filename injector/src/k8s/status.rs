//! A NetworkFault's status from a resolution: phase, the bounded list of selected pods, the
//! lifetime, and the `Valid`/`Ready` conditions (a refusal names the field, the value and the fix).

use std::time::SystemTime;

use crate::fault::spec::FieldError;

use super::MAX_LISTED;
use super::resolve::{Resolution, lifetime};
use super::resource::{Condition, NetworkFault, NetworkFaultStatus, Phase, SelectedPods};

/// RFC 3339 in UTC, seconds (as the API server writes times).
pub fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| {
            t.round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(t)
                .to_string()
        })
        .unwrap_or_default()
}

impl NetworkFault {
    /// The status to write for `result` (a [`super::resolve`] of this resource) at `now`. The same
    /// objects give the same status on every node, so whichever daemon writes it writes the same
    /// thing; `aborted` is the cluster-wide abort. A condition keeps its lastTransitionTime while
    /// its status stays.
    pub fn status_for(
        &self,
        result: &Result<Resolution, FieldError>,
        aborted: bool,
        now: SystemTime,
    ) -> NetworkFaultStatus {
        let life = lifetime(self).ok();
        let (phase, valid, ready, selected) = match result {
            Err(e) => (
                Phase::Failed,
                cond("Valid", false, "InvalidSpec", e.to_string()),
                cond(
                    "Ready",
                    false,
                    "InvalidSpec",
                    "refused: see the Valid condition",
                ),
                None,
            ),
            Ok(r) => {
                let phase = if aborted { Phase::Aborted } else { r.phase };
                let (ok, reason, msg) = match phase {
                    Phase::Running => (
                        true,
                        "Installed",
                        format!("{} node-level fault(s) on every node", r.faults.len()),
                    ),
                    Phase::Pending => (
                        false,
                        "NothingSelected",
                        "no selected pod or endpoint has an address yet".to_string(),
                    ),
                    Phase::Ended => (
                        false,
                        "DeadlinePassed",
                        "the deadline passed; delete the resource or create it anew".to_string(),
                    ),
                    Phase::Aborted => (
                        false,
                        "Aborted",
                        "disarmed by a cluster-wide abort".to_string(),
                    ),
                    Phase::Failed => (
                        false,
                        "Failed",
                        "refused: see the Valid condition".to_string(),
                    ),
                };
                let selected = SelectedPods {
                    count: r.selected.len() as u32,
                    pods: r.selected.iter().take(MAX_LISTED).cloned().collect(),
                };
                (
                    phase,
                    cond("Valid", true, "Valid", "the spec is valid"),
                    cond("Ready", ok, reason, msg),
                    Some(selected),
                )
            }
        };
        let old = self
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let generation = self.metadata.generation;
        let conditions = [valid, ready]
            .into_iter()
            .map(|mut c| {
                c.observed_generation = generation;
                c.last_transition_time = old
                    .iter()
                    .find(|o| o.type_ == c.type_ && o.status == c.status)
                    .and_then(|o| o.last_transition_time.clone())
                    .or_else(|| Some(rfc3339(now)));
                c
            })
            .collect();
        NetworkFaultStatus {
            phase: Some(phase),
            start_time: life.map(|l| rfc3339(l.0)),
            deadline: life.map(|l| rfc3339(l.1)),
            observed_generation: generation,
            selected,
            nodes: self.status.as_ref().and_then(|s| s.nodes.clone()),
            conditions,
        }
    }
}

fn cond(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: None,
        observed_generation: None,
    }
}
