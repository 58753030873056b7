//! Whether a stopping daemon hands its node over to the next pod of its DaemonSet, or cleans up.
//!
//! A DaemonSet pod is deleted for two different reasons: to be replaced (`kubectl delete pod`, a
//! rolling update, an eviction), or because injector is being removed (the DaemonSet deleted).
//! Removing every fault on the first would end an experiment because its tooling restarted; keeping
//! them on the second would leave programs on the node. So on SIGTERM a daemon that knows its pod
//! (`POD_NAME`, the downward API) asks the API server about the DaemonSet that owns it: when that
//! DaemonSet exists and is not being deleted, a new pod will come, so the programs, pins and
//! faults stay for it to adopt (as after a crash; the kernel's heartbeat grace ends the faults if
//! none comes). Any other answer, no answer within a few seconds, or no pod name: a clean stop.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Pod};
use kube::{Api, Client};

use super::KubeConfig;

/// How long a stopping daemon waits for the API server before it cleans up instead.
const ASK_FOR: Duration = Duration::from_secs(3);

/// `Ok(why)` when the next pod of the owning DaemonSet takes over; `Err(why not)` otherwise.
pub async fn successor(client: &Client, cfg: &KubeConfig) -> Result<String, String> {
    let Some(pod) = &cfg.pod_name else {
        return Err("no --pod-name (POD_NAME): not known to run as a DaemonSet pod".into());
    };
    match tokio::time::timeout(ASK_FOR, owner_alive(client, &cfg.lease_namespace, pod)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("asking the API server: {e:#}")),
        Err(_) => Err(format!("the API server did not answer within {ASK_FOR:?}")),
    }
}

async fn owner_alive(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Result<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(p) = pods
        .get_opt(pod)
        .await
        .with_context(|| format!("get pod {namespace}/{pod}"))?
    else {
        return Ok(Err(format!("pod {namespace}/{pod} is gone")));
    };
    let Some(owner) = p
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    else {
        return Ok(Err(format!("pod {namespace}/{pod} has no DaemonSet")));
    };
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let ds = sets
        .get_opt(&owner.name)
        .await
        .with_context(|| format!("get daemonset {namespace}/{}", owner.name))?;
    Ok(match ds {
        None => Err(format!("DaemonSet {namespace}/{} is gone", owner.name)),
        Some(d) if d.metadata.deletion_timestamp.is_some() => Err(format!(
            "DaemonSet {namespace}/{} is being deleted",
            owner.name
        )),
        Some(d) if d.metadata.uid.as_deref() != Some(owner.uid.as_str()) => Err(format!(
            "DaemonSet {namespace}/{} is another one than the pod's",
            owner.name
        )),
        Some(_) => Ok(format!(
            "DaemonSet {namespace}/{} stays: its next pod adopts",
            owner.name
        )),
    })
}
