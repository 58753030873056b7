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
use k8s_openapi::{
    api::{apps::v1::DaemonSet, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
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
    let Some(owner) = controller(&p) else {
        return Ok(Err(format!("pod {namespace}/{pod} has no DaemonSet")));
    };
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let ds = sets
        .get_opt(&owner.name)
        .await
        .with_context(|| format!("get daemonset {namespace}/{}", owner.name))?;
    Ok(verdict(namespace, &owner, ds.as_ref()))
}

/// The DaemonSet controlling `pod`, if one does.
fn controller(pod: &Pod) -> Option<OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "DaemonSet" && o.controller == Some(true))
        .cloned()
}

/// Whether the pod's DaemonSet (`owner`, as the API server has it now: `ds`) brings a next pod.
fn verdict(
    namespace: &str,
    owner: &OwnerReference,
    ds: Option<&DaemonSet>,
) -> Result<String, String> {
    let name = &owner.name;
    match ds {
        None => Err(format!("DaemonSet {namespace}/{name} is gone")),
        Some(d) if d.metadata.deletion_timestamp.is_some() => {
            Err(format!("DaemonSet {namespace}/{name} is being deleted"))
        }
        // Deleted and made again under the same name: not the set this pod belongs to.
        Some(d) if d.metadata.uid.as_deref() != Some(owner.uid.as_str()) => Err(format!(
            "DaemonSet {namespace}/{name} is another one than the pod's"
        )),
        Some(_) => Ok(format!(
            "DaemonSet {namespace}/{name} stays: its next pod adopts"
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn pod(owners: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "injector-x", "ownerReferences": owners}}),
        )
        .unwrap()
    }

    fn ds(uid: &str, deleting: bool) -> DaemonSet {
        let mut d: DaemonSet =
            serde_json::from_value(json!({"metadata": {"name": "injector", "uid": uid}})).unwrap();
        if deleting {
            d.metadata.deletion_timestamp = Some(Time(Default::default()));
        }
        d
    }

    fn owner_ref(kind: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": "apps/v1", "kind": kind, "name": "injector", "uid": "u1",
               "controller": controller})
    }

    #[test]
    fn only_a_controlling_daemonset_counts() {
        assert!(controller(&pod(json!([owner_ref("ReplicaSet", true)]))).is_none());
        assert!(controller(&pod(json!([owner_ref("DaemonSet", false)]))).is_none());
        assert!(controller(&pod(json!(null))).is_none());
        let o = controller(&pod(json!([
            owner_ref("ReplicaSet", false),
            owner_ref("DaemonSet", true)
        ])))
        .unwrap();
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("DaemonSet", "u1"));
    }

    #[test]
    fn hands_over_only_to_the_same_living_daemonset() {
        let o = controller(&pod(json!([owner_ref("DaemonSet", true)]))).unwrap();
        assert!(verdict("injector", &o, Some(&ds("u1", false))).is_ok());
        let no = |d: Option<&DaemonSet>, why: &str| {
            let e = verdict("injector", &o, d).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        no(None, "is gone");
        no(Some(&ds("u1", true)), "being deleted");
        no(Some(&ds("u2", false)), "another one");
    }
}
