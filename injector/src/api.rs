//! The API's request and response bodies, defined once: the daemon (`daemon/api.rs`) serializes
//! them, the CLI (`cli/`, `client.rs`) deserializes them. The JSON is what the lab tests read.

use std::collections::{BTreeMap, BTreeSet};

use injector_common::{FaultCounters, Outcome};
use serde::{Deserialize, Serialize};

use crate::{fault::spec::FaultSpec, kernel::attach::Role};

/// A fault as `GET /v1/faults` and `GET /v1/faults/NAME` show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultView {
    pub name: String,
    pub slot: u32,
    /// Within its lifetime now.
    pub active: bool,
    pub remaining_s: f64,
    /// Applied over a protected target with `force=true`.
    pub forced: bool,
    /// Protected targets carved out of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carved: Vec<Carved>,
    /// The NetworkFault (`namespace/name`) this fault is a part of; absent: the local API's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub spec: FaultSpec,
    /// By judging hook (`veth_egress`, `overlay_egress`, `veth_ingress`).
    pub counters: BTreeMap<String, FaultCounters>,
}

impl FaultView {
    /// Packets of one outcome, summed over the hooks.
    pub fn total(&self, o: Outcome) -> u64 {
        self.counters.values().map(|c| c.packets(o)).sum()
    }
}

/// `GET /v1/faults/NAME` is one fault, `GET /v1/faults` a list: the CLI reads either.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultViews {
    Many(Vec<FaultView>),
    One(Box<FaultView>),
}

impl FaultViews {
    pub fn into_vec(self) -> Vec<FaultView> {
        match self {
            FaultViews::Many(v) => v,
            FaultViews::One(f) => vec![*f],
        }
    }
}

/// `POST /v1/faults`: 201 with the names created, and per fault the protected targets carved out
/// of it (only faults that had any).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub created: Vec<String>,
    #[serde(default)]
    pub carved: BTreeMap<String, Vec<Carved>>,
    /// With a rate fault among them: how this node keeps rates (paced or policed, and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_mode: Option<String>,
}

/// A protected target carved out of a fault: an exception added to its `field` (`to` or `from`).
/// Also what the daemon stores in the fault's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carved {
    pub field: String,
    pub cidr: String,
    pub why: String,
}

/// `DELETE /v1/faults/NAME`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: Vec<String>,
}

/// `DELETE /v1/faults`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cleared {
    pub deleted_count: usize,
}

/// `POST /v1/abort`, `POST /v1/arm`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Armed {
    pub armed: bool,
}

/// Any 4xx/5xx: the message names the field, the value and the fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub bpffs: String,
    /// What /readyz answers: programs attached, maps pinned, API serving.
    pub ready: bool,
    /// Why it is not ready (empty when ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    pub armed: bool,
    pub heartbeat_age_ms: u64,
    pub grace_s: f64,
    pub features: Features,
    pub interfaces: BTreeMap<String, Interface>,
    pub attach_errors: u64,
    pub fq: Fq,
    pub protected: Vec<ProtectedTarget>,
    pub faults: Vec<FaultBrief>,
}

/// What this kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub tcx: bool,
    pub fq: bool,
    pub btf: bool,
    /// `bpf_skb_set_tstamp` (5.18+): the programs stamp EDT delivery times; without, no delay.
    #[serde(default)]
    pub edt_stamp: bool,
}

/// One interface the daemon covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub ifindex: u32,
    pub role: Role,
    /// `tc_ingress:prog`, `tc_egress:prog`, `xdp:prog`.
    pub hooks: Vec<String>,
    /// Hooks taken over from a previous instance's pinned links.
    pub adopted: usize,
    pub error: Option<String>,
    /// Drops of packets entering here were judged at ingress (TC, or XDP with `--xdp`), so
    /// egress hooks leave the faults judged there alone.
    #[serde(default)]
    pub early_judged: bool,
}

/// The fq qdiscs of delay faults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fq {
    /// Devices whose root fq the daemon installed.
    pub installed: BTreeSet<String>,
    /// Devices where delay cannot work, and why.
    pub not_usable: BTreeMap<String, String>,
}

/// A destination no fault may reach unless forced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedTarget {
    pub cidr: String,
    pub why: String,
}

/// A fault in the status: its name and time left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultBrief {
    pub name: String,
    pub remaining_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fault_or_a_list_is_read() {
        let one = r#"{"name":"a","slot":0,"active":true,"remaining_s":1.5,"forced":false,
            "spec":{"name":"a","blackhole":true,"for":"1m"},
            "counters":{"veth_egress":{"matched":{"packets":2,"bytes":9},"dropped":{"packets":2,"bytes":9}}}}"#;
        let v: FaultViews = serde_json::from_str(one).unwrap();
        let v = v.into_vec();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].total(Outcome::Dropped), 2);
        assert!(v[0].carved.is_empty());
        let many: FaultViews = serde_json::from_str(&format!("[{one},{one}]")).unwrap();
        assert_eq!(many.into_vec().len(), 2);
    }

    #[test]
    fn a_reply_without_carved_reads_as_none_carved() {
        let c: Created = serde_json::from_str(r#"{"created":["a"]}"#).unwrap();
        assert_eq!(c.created, ["a"]);
        assert!(c.carved.is_empty());
    }
}
