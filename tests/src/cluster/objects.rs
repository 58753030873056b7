//! The objects the lab becomes in the API server (the library plays kubelet and the control
//! plane's controllers): namespaces, Nodes, Pods with their status, the `kubernetes` and
//! `kube-dns` Services.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{DNS_SERVICE_IP, MANAGER, PodMeta};
use crate::lab;

/// Fails when an API call did, naming the call.
pub(super) fn ok_or_conflict<T>(r: kube::Result<T>, what: &str) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| what.to_string()),
    }
}

pub(super) async fn ensure_namespace(
    client: &Client,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels}});
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
        .await
        .with_context(|| format!("applying namespace {name}"))?;
    Ok(())
}

pub(super) async fn register_node(client: &Client, node: &lab::Node) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let obj: Node = serde_json::from_value(json!({
        "metadata": {"name": node.name, "labels": {
            "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating Node {}", node.name))?;
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": node.underlay_ip.to_string()},
                      {"type": "Hostname", "address": node.name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "the lab plays kubelet"}],
        "nodeInfo": {"kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                     "osImage": "injector lab (network namespaces)", "operatingSystem": "linux",
                     "architecture": go_arch(), "containerRuntimeVersion": "netns://",
                     "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("setting the status of Node {}", node.name))?;
    Ok(())
}

/// This machine's architecture as Kubernetes names it (GOARCH).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The `kubernetes` Service: the API server creates it shortly after start; created here if not.
pub async fn ensure_kubernetes_service(client: &Client) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if api.get_opt("kubernetes").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    }))?;
    ok_or_conflict(
        api.create(&PostParams::default(), &svc).await,
        "creating Service default/kubernetes",
    )
}

pub(super) async fn create_dns_service(client: &Client) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": DNS_SERVICE_IP, "selector": {"k8s-app": "kube-dns"}, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
    }))?;
    ok_or_conflict(
        api.create(&PostParams::default(), &svc).await,
        "creating Service kube-system/kube-dns",
    )
}

pub(super) async fn create_pod(
    client: &Client,
    node: &lab::Node,
    pod: &lab::Pod,
    meta: &PodMeta,
) -> Result<()> {
    ensure_namespace(client, &meta.namespace, &BTreeMap::new()).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &meta.namespace);
    let obj: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod.name, "labels": meta.labels,
                     "annotations": {"lab.injector.dev/netns": pod.netns}},
        "spec": {"nodeName": node.name, "containers": [{"name": "main", "image": "lab/netns"}]},
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .context("creating the Pod")?;
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = json!({"status": {
        "phase": "Running",
        "hostIP": node.underlay_ip.to_string(),
        "podIP": pod.ip.to_string(),
        "podIPs": [{"ip": pod.ip.to_string()}, {"ip": pod.ip6.to_string()}],
        "startTime": now,
        "containerStatuses": [{"name": "main", "image": "lab/netns", "imageID": "", "ready": true,
                               "started": true, "restartCount": 0,
                               "state": {"running": {"startedAt": now}}}],
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                       {"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
    }});
    api.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("setting the Pod's status (Running, podIP, podIPs)")?;
    Ok(())
}
