//! The two cluster-scoped companions of NetworkFault: `InjectorControl` (the cluster-wide abort
//! every daemon watches) and `InjectorNode` (one per node, its daemon's report: what it holds).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one control object's name: `kubectl injector abort` writes it, every daemon watches it.
pub const CONTROL_NAME: &str = "cluster";

/// Cluster-wide control. One object, named [`CONTROL_NAME`]. An abort ends, on every node, every
/// fault that exists when it is written: NetworkFaults created at or before `abort.at` are never
/// installed again (phase Aborted), and each daemon clears its node-level faults. Faults created
/// afterwards run as usual: an abort is a one-shot stop, not a lock.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "injector.dev",
    version = "v1alpha1",
    kind = "InjectorControl",
    plural = "injectorcontrols",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Aborted", type_ = "date", json_path = ".spec.abort.at"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.abort.reason")
)]
#[serde(rename_all = "camelCase")]
pub struct InjectorControlSpec {
    /// The last cluster-wide abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Abort {
    /// When (RFC 3339): every fault created at or before this instant is ended.
    #[schemars(length(min = 1))]
    pub at: String,
    /// Why, for the people reading it later.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A node daemon's report, written by that daemon alone (so writes grow with nodes in number of
/// objects, never on one object): the faults it holds, their counters, and what it refused.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "injector.dev",
    version = "v1alpha1",
    kind = "InjectorNode",
    plural = "injectornodes",
    status = "NodeReport",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Faults", type_ = "integer", json_path = ".status.faultCount"),
    printcolumn(name = "Armed", type_ = "boolean", json_path = ".status.armed"),
    printcolumn(name = "Updated", type_ = "date", json_path = ".status.updated")
)]
#[serde(rename_all = "camelCase")]
pub struct InjectorNodeSpec {
    /// The Node this report is about (also the object's name). No schema default: the 1.20 API
    /// server refuses an empty-string default.
    pub node_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// When the daemon wrote it (RFC 3339).
    pub updated: String,
    /// Whether the node's faults are armed (false between an abort and the next change).
    #[serde(default)]
    pub armed: bool,
    /// How many NetworkFaults the node holds.
    #[serde(default)]
    pub fault_count: u32,
    /// Per NetworkFault: its node-level parts and their counters summed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<NodeFault>,
    /// NetworkFaults this node could not install, and why (e.g. delay on a kernel without fq).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<NodeError>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFault {
    /// `namespace/name` of the NetworkFault.
    pub resource: String,
    /// Node-level faults it became here.
    pub parts: u32,
    pub matched: u64,
    pub passed: u64,
    pub dropped: u64,
    pub delayed: u64,
    #[serde(default)]
    pub rejected: u64,
    #[serde(default)]
    pub duplicated: u64,
    #[serde(default)]
    pub corrupted: u64,
    #[serde(default)]
    pub reordered: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeError {
    /// `namespace/name` of the NetworkFault.
    pub resource: String,
    /// The field, the value and the fix.
    pub message: String,
}
