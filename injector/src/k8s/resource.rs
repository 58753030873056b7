//! The `NetworkFault` custom resource (`injector.dev/v1alpha1`): its spec and status types, whose
//! derived OpenAPI schema (with the patterns and enums below) is the CRD in deploy/crd/.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A share from 0% to 100% as people write it: `5%`, `0.1%`, `100%`. Every string it accepts
/// [`crate::fault::spec::percent`] parses; `0%` for loss is refused there.
pub const PERCENT_PATTERN: &str = r"^ *(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?|\.[0-9]+) *%$";
/// A duration as [`crate::parse::duration`] reads it: `250ms`, `30s`, `5m`, `1h30m`, `1.5s`.
/// `ge:p,r[,h[,k]]`, percentages.
pub const LOSS_MODEL_PATTERN: &str = r"^ *ge:[0-9. %,]+$";
/// `ON/PERIOD`: two durations.
pub const PULSE_PATTERN: &str =
    r"^ *([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+ */ *([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+ *$";
/// A mean burst length in packets.
pub const BURST_PATTERN: &str = r"^ *[0-9]+(\.[0-9]+)? *$";
/// A rate in tc's bit units: `10mbit` (case as users write it).
pub const RATE_PATTERN: &str = r"^ *[0-9]+(\.[0-9]+)? *([kKmMgGtT])?[bB][iI][tT] *$";
/// A size in tc's byte units: `32kb`.
pub const SIZE_PATTERN: &str = r"^ *[0-9]+(\.[0-9]+)? *([kKmMgG][bB]?|[bB])? *$";
pub const DURATION_PATTERN: &str = r"^ *([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+ *$";
/// A port, a range (`8000-8080`) or, for a Service, a port's name (`http`: a letter at least,
/// no '-' at either end).
pub const PORT_PATTERN: &str =
    r"^([0-9]{1,5}(-[0-9]{1,5})?|([a-z0-9]+-)*[a-z0-9]*[a-z][a-z0-9]*(-[a-z0-9]+)*)$";

/// A network fault between Kubernetes targets: packets from `from` to `to` lose, blackhole,
/// wait, are rejected, duplicated or corrupted, until one deadline on every node: the resource's
/// creationTimestamp + `duration`.
#[expect(
    clippy::duplicated_attributes,
    reason = "two printcolumns are both dates"
)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "injector.dev",
    version = "v1alpha1",
    kind = "NetworkFault",
    plural = "networkfaults",
    shortname = "nf",
    namespaced,
    status = "NetworkFaultStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Selected",
        type_ = "integer",
        json_path = ".status.selected.count"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes.count"),
    printcolumn(name = "Deadline", type_ = "string", json_path = ".status.deadline"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFaultSpec {
    /// Where the packets come from; default: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Target>,
    /// Where they go; default: anywhere. Its `ports` are destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Target>,
    /// tcp, udp, icmp (ICMP and ICMPv6) or any. Default: a Service target's own protocols, else any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["tcp", "udp", "icmp", "icmpv6", "any"]))]
    pub proto: Option<String>,
    /// Also the reverse direction (to -> from, ports swapped).
    #[serde(default)]
    pub both_ways: bool,
    /// Drop this share of packets: 5%, 0.01%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PERCENT_PATTERN))]
    pub loss: Option<String>,
    /// Losses come in bursts of this mean length (packets, >= 1): a Gilbert-Elliott model with
    /// the mean loss of `loss`: 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(BURST_PATTERN))]
    pub burst: Option<String>,
    /// Instead of `loss`: the Gilbert-Elliott model itself, ge:p,r[,h[,k]] in percent as netem's
    /// gemodel (p = P(good->bad), r = P(bad->good), h/k = P(delivered) in bad/good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(LOSS_MODEL_PATTERN))]
    pub loss_model: Option<String>,
    /// Drop every packet, silently.
    #[serde(default)]
    pub blackhole: bool,
    /// Hold packets this long: 100ms (at most 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub delay: Option<String>,
    /// Uniform +- jitter around the delay, at most the delay: 10ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub jitter: Option<String>,
    /// Send this share of a delay's packets at once, without the delay (netem's reorder): 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PERCENT_PATTERN))]
    pub reorder: Option<String>,
    /// Answer the sender at once instead of delivering: a TCP reset for TCP, ICMP port
    /// unreachable for the rest (see rejectWith).
    #[serde(default)]
    pub reject: bool,
    /// The answer: tcp-reset (proto tcp only), icmp-port, icmp-host or icmp-admin; default by
    /// protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["tcp-reset", "icmp-port", "icmp-host", "icmp-admin"]))]
    pub reject_with: Option<String>,
    /// Send this share of packets twice: 5%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PERCENT_PATTERN))]
    pub duplicate: Option<String>,
    /// Flip one random payload bit in this share of packets, checksums left as they were (the
    /// receiver discards them): 1%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PERCENT_PATTERN))]
    pub corrupt: Option<String>,
    /// Let the matched traffic through at this rate, in aggregate: 10mbit (tc's units, 8kbit to
    /// 100gbit). Paced in fq where the node has it, else policed (above the rate dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(RATE_PATTERN))]
    pub rate: Option<String>,
    /// The rate's bucket: bytes that may leave at once after a pause: 32kb (default 256kb, or
    /// 10 ms at the rate if more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(SIZE_PATTERN))]
    pub rate_burst: Option<String>,
    /// Answer DNS questions for dnsNames with this instead of the resolver's answer: nxdomain,
    /// servfail, refused, drop (the client times out and retries) or delay (with delay). Acts
    /// on answers over UDP from port 53 (or from.ports) to the pods in `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["nxdomain", "servfail", "refused", "drop", "delay"]))]
    pub dns: Option<String>,
    /// The names a dns fault answers for: payments.default.svc.cluster.local, or
    /// .svc.cluster.local for every name under it (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub dns_names: Vec<String>,
    /// Act only ON of every PERIOD from the fault's start, with any action: 10s/30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PULSE_PATTERN))]
    pub pulse: Option<String>,
    /// Hit only this share of flows (connections), chosen by a seeded hash: 20%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PERCENT_PATTERN))]
    pub flows: Option<String>,
    /// Seed of the flow choice and of `mode`'s pod choice (same seed, same flows and pods).
    #[serde(default)]
    pub seed: u32,
    /// Lifetime from the resource's creation (one deadline on every node): 30s, 5m, 1h (at most 24h).
    #[serde(default = "default_duration")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub duration: String,
    /// Count what the fault would hit; touch nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_duration() -> String {
    "5m".into()
}

/// One side of a fault: exactly one of `pods`, `service`, `cidrs` or `any`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Pods by labels, in the resource's namespace unless `namespaces`/`namespaceSelector` say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodSelector>,
    /// A Service: its endpoints (EndpointSlices), on its target ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// IPv4/IPv6 CIDRs (or addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub cidrs: Option<Vec<String>>,
    /// Every address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any: bool,
    /// CIDRs inside `cidrs` (or `any`) left alone, as NetworkPolicy's `ipBlock.except`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// Ports or ranges (`5432`, `8000-8080`); for a Service also its port names or numbers,
    /// mapped to the target ports. On `to` destination ports, on `from` source ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(PORT_PATTERN)))]
    pub ports: Vec<String>,
    /// Blast radius over the selected pods: all (default), one, fixed (`value` pods) or percent
    /// (`value`% of them, rounded up), chosen by a seeded hash of pod UIDs.
    #[serde(default, skip_serializing_if = "Mode::is_all")]
    pub mode: Mode,
    /// The `fixed` count (1 or more) or the `percent` share (1-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub value: Option<u32>,
}

/// Blast radius over a side's selected pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    All,
    One,
    Fixed,
    Percent,
}

impl Mode {
    pub fn is_all(&self) -> bool {
        *self == Mode::All
    }
}

/// Pods by label selector, in namespaces by name or by their labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    #[serde(flatten)]
    pub labels: LabelSelector,
    /// These namespaces (default: the resource's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces by their labels (`{}`: every namespace); not with `namespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions` together; `{}`: everything).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// `key In (a, b)`, `key NotIn (...)`, `key Exists`, `key DoesNotExist`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A Service by name; its namespace defaults to the resource's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the resource does now. Written by the reconciler; the same on every node, so it does
/// not grow with nodes (per-node counters are in each daemon's metrics).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFaultStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The start of the lifetime: the resource's creationTimestamp (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// startTime + duration: when the kernel ends the fault on every node (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The pods the fault selects (after `mode`), both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<SelectedPods>,
    /// The nodes whose daemon holds the fault (from their InjectorNode reports; written by the
    /// one status writer, so a node joining is one write, never one write per node per change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<HoldingNodes>,
    /// `Valid` (False with the field and the fix when refused) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The nodes that hold a fault: the count and the first [`crate::k8s::MAX_LISTED`] names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldingNodes {
    pub count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing to install yet (no selected pod has an address).
    Pending,
    /// Installed on the nodes until the deadline.
    Running,
    /// The deadline passed.
    Ended,
    /// Refused: see the `Valid` condition.
    Failed,
    /// Disarmed by a cluster-wide abort.
    Aborted,
}

/// Selected pods: the count and the first [`crate::k8s::MAX_LISTED`] as `namespace/name`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectedPods {
    pub count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<String>,
}

/// A condition as Kubernetes writes them (metav1.Condition's fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    pub reason: String,
    /// For a refused spec: `spec.<field>: <value and fix>`. No schema default: the 1.20 API
    /// server refuses an empty-string default here (measured: "default: Invalid value").
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
