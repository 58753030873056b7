//! What a node tells the cluster: its `InjectorNode` report (the NetworkFaults it holds, their
//! counters, what it refused), written by its daemon alone; and the NetworkFault status the
//! Lease holder writes (the same on every node, plus which nodes hold the fault).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use injector_common::{JudgeHook, action::Outcome, ctrl};
use kube::{
    Api, Client, ResourceExt as _,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::super::core::Core;
use crate::{
    fault::spec::FieldError,
    k8s::{
        InjectorNode, MAX_LISTED, NetworkFault, NodeReport, Resolution,
        control::{NodeError, NodeFault},
        resource::HoldingNodes,
        status::rfc3339,
    },
};

const MANAGER: &str = "injector-daemon";

/// The node's report from what it runs: parts and counters per resource, the refusals.
pub fn node_report(c: &Core, refused: &BTreeMap<String, String>, now: SystemTime) -> NodeReport {
    let mut faults: BTreeMap<String, NodeFault> = BTreeMap::new();
    for e in c.faults.iter() {
        let Some(r) = &e.record.resource else {
            continue;
        };
        let f = faults.entry(r.clone()).or_insert_with(|| NodeFault {
            resource: r.clone(),
            ..NodeFault::default()
        });
        f.parts += 1;
        for jh in JudgeHook::ALL {
            if let Ok(n) = c.maps.fault_counters(e.slot, jh) {
                f.matched += n.packets(Outcome::Matched);
                f.passed += n.packets(Outcome::Passed);
                f.dropped += n.packets(Outcome::Dropped);
                f.delayed += n.packets(Outcome::Delayed);
                f.rejected += n.packets(Outcome::Rejected);
                f.duplicated += n.packets(Outcome::Duplicated);
                f.corrupted += n.packets(Outcome::Corrupted);
                f.reordered += n.packets(Outcome::Reordered);
            }
        }
    }
    NodeReport {
        updated: rfc3339(now),
        armed: c.maps.ctrl(ctrl::ARMED).is_ok_and(|a| a == 1),
        fault_count: faults.len() as u32,
        faults: faults.into_values().collect(),
        errors: refused
            .iter()
            .map(|(r, m)| NodeError {
                resource: r.clone(),
                message: m.clone(),
            })
            .collect(),
    }
}

/// Writes this node's report (creating its object the first time).
pub async fn write_report(client: &Client, node: &str, report: &NodeReport) -> kube::Result<()> {
    let api: Api<InjectorNode> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    let obj = json!({
        "apiVersion": "injector.dev/v1alpha1", "kind": "InjectorNode",
        "metadata": {"name": node}, "spec": {"nodeName": node},
    });
    if api.get_opt(node).await?.is_none() {
        api.patch(node, &pp, &Patch::Apply(&obj)).await?;
    }
    let status = json!({
        "apiVersion": "injector.dev/v1alpha1", "kind": "InjectorNode",
        "metadata": {"name": node}, "status": report,
    });
    api.patch_status(node, &pp, &Patch::Apply(&status)).await?;
    Ok(())
}

/// Which nodes hold which resource, from the reports written within `fresh` of `now`.
pub async fn holders(
    client: &Client,
    now: SystemTime,
    fresh: std::time::Duration,
) -> kube::Result<BTreeMap<String, BTreeSet<String>>> {
    let api: Api<InjectorNode> = Api::all(client.clone());
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in api.list(&Default::default()).await? {
        let Some(st) = &n.status else { continue };
        let updated = st
            .updated
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now.duration_since(updated).unwrap_or_default() > fresh {
            continue;
        }
        for f in &st.faults {
            out.entry(f.resource.clone())
                .or_default()
                .insert(n.name_any());
        }
    }
    Ok(out)
}

/// Writes `nf`'s status when it differs from what is stored.
pub async fn write_status(
    client: &Client,
    nf: &NetworkFault,
    result: &Result<Resolution, FieldError>,
    aborted: bool,
    holders: Option<&BTreeSet<String>>,
    now: SystemTime,
) -> kube::Result<bool> {
    let mut st = nf.status_for(result, aborted, now);
    let h = holders.cloned().unwrap_or_default();
    st.nodes = Some(HoldingNodes {
        count: h.len() as u32,
        names: h.iter().take(MAX_LISTED).cloned().collect(),
    });
    if nf.status.as_ref() == Some(&st) {
        return Ok(false);
    }
    let api: Api<NetworkFault> =
        Api::namespaced(client.clone(), &nf.namespace().unwrap_or_default());
    api.patch_status(
        &nf.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": st })),
    )
    .await?;
    Ok(true)
}
