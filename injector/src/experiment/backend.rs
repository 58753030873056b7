//! Where an experiment's faults go: node daemons through their API ([`super::daemons`]) or the
//! cluster as NetworkFaults ([`super::cluster`]); the runner sees only this.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::file::{Step, StepFault};

/// Packets matched, dropped, delayed: one fault's counters summed over hooks and nodes.
pub type Counts = [u64; 3];

/// When a node no longer held any fault of the experiment, as the runner saw it.
#[derive(Clone, Debug)]
pub struct NodeRemoved {
    /// A daemon's socket or address, or a node's name.
    pub node: String,
    /// `None`: not seen within the limit.
    pub at: Option<Instant>,
}

pub trait Backend: Send + Sync {
    /// The daemons or the cluster, for the report.
    fn labels(&self) -> Vec<String>;
    /// Everything answers and is armed; no fault of these names exists yet.
    fn check(&self, names: &[String]) -> Result<(), String>;
    /// Every step's faults as the target would take them, applying nothing (the dry run).
    fn validate(&self, steps: &[Step]) -> Result<(), String>;
    /// The network namespace of pod `namespace/name` on this host (a probe's `pod`).
    fn pod_netns(&self, pod: &str) -> Result<String, String>;
    /// Adds (or replaces, by name) `faults`, each living `lifetime` from now; all or nothing
    /// per target. Returns the faults as sent.
    fn apply(&self, faults: &[StepFault], lifetime: Duration) -> Result<Vec<StepFault>, String>;
    /// Removes these faults everywhere at once; returns when every removal was answered, with
    /// the errors (a fault already gone is fine).
    fn remove(&self, names: &[String]) -> (Instant, Vec<String>);
    /// The counters of these faults, summed over nodes.
    fn counters(&self, names: &[String]) -> BTreeMap<String, Counts>;
    /// After [`remove`](Self::remove) answered at `removed`: per node, when it no longer held
    /// any of these faults (waits up to `limit`).
    fn nodes_removed(
        &self,
        names: &[String],
        removed: Instant,
        limit: Duration,
    ) -> Vec<NodeRemoved>;
}
