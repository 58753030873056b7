//! A probe "from inside a pod" (`pod: namespace/name`, Kubernetes targets): the pod's network
//! namespace on this host, found from its Pod object.
//!
//! - On a real node: the pod's containers run in its sandbox's netns, and each container process
//!   sits in a cgroup named after the pod's UID (`.../kubepods/burstable/pod<uid>/<container>`
//!   with the cgroupfs driver, `kubepods-burstable-pod<uid_with_underscores>.slice` with
//!   systemd's): the first process of this host in such a cgroup gives `/proc/PID/ns/net`. The
//!   runner must run on the pod's node, as root (or with CAP_SYS_ADMIN, for setns).
//! - In the lab (no kubelet, no containers): the Pod object the lab made names its netns in the
//!   annotation [`LAB_NETNS`]; that name under /run/netns is used.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use crate::{
    experiment::file::{Targets, ferr},
    fault::spec::FieldError,
    k8s::validate::dns_label,
    kubectl::fault::check_name,
};

/// The annotation of the lab's Pod objects that names the pod's netns (under /run/netns).
pub const LAB_NETNS: &str = "lab.injector.dev/netns";

/// `namespace/name`, with Kubernetes targets only.
pub fn check(at: &str, p: &str, targets: Targets) -> Result<(), FieldError> {
    if targets != Targets::Kubernetes {
        return Err(ferr(
            at,
            "a pod is found through the cluster: use it with targets: kubernetes, or give netns: NAME",
        ));
    }
    let Some((ns, name)) = p.split_once('/') else {
        return Err(ferr(
            at,
            format!("'{p}': write namespace/name (e.g. shop/client-7d9f)"),
        ));
    };
    dns_label(at, ns)?;
    check_name(at, name).map_err(|e| ferr(at, e.split_once(": ").map_or(e.as_str(), |x| x.1)))
}

/// Whether a `/proc/PID/cgroup` text puts the process in the pod with `uid`.
pub fn in_pod_cgroup(cgroup: &str, uid: &str) -> bool {
    let dashed = format!("pod{uid}");
    let underscored = format!("pod{}", uid.replace('-', "_"));
    cgroup.lines().any(|l| {
        let path = l.splitn(3, ':').nth(2).unwrap_or_default();
        path.split('/')
            .any(|part| part == dashed || part.ends_with(&format!("-{underscored}.slice")))
    })
}

/// The netns path of `pod` on this host, or why there is none.
pub fn netns(pod: &Pod) -> Result<String, String> {
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Err(format!(
            "pod {key} uses the node's network (hostNetwork): probe from the node instead (no pod, no netns)"
        ));
    }
    if let Some(name) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAB_NETNS))
    {
        let path = format!("/run/netns/{name}");
        if Path::new(&path).exists() {
            return Ok(path);
        }
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if !uid.is_empty()
        && let Ok(dir) = std::fs::read_dir("/proc")
    {
        for e in dir.flatten() {
            let pid = e.file_name();
            let Some(pid) = pid
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                && in_pod_cgroup(&cg, uid)
            {
                return Ok(format!("/proc/{pid}/ns/net"));
            }
        }
    }
    let node = spec
        .and_then(|s| s.node_name.clone())
        .unwrap_or_else(|| "no node yet".into());
    Err(format!(
        "pod {key} (uid {uid}, on {node}): no process of it on this host; run the experiment on its node, or probe from a node's netns"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2a4e-9b7d-4c1e-8f00-0123456789ab";

    #[test]
    fn a_container_process_is_found_by_its_pods_cgroup() {
        // cgroup v2, cgroupfs driver.
        assert!(in_pod_cgroup(
            &format!("0::/kubepods/burstable/pod{UID}/0a1b2c\n"),
            UID
        ));
        // cgroup v2, systemd driver.
        assert!(in_pod_cgroup(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f1c2a4e_9b7d_4c1e_8f00_0123456789ab.slice/cri-containerd-0a1b.scope\n",
            UID
        ));
        // cgroup v1: one line per hierarchy.
        assert!(in_pod_cgroup(
            &format!("12:pids:/kubepods/pod{UID}/0a1b\n1:name=systemd:/kubepods/pod{UID}/0a1b\n"),
            UID
        ));
        assert!(!in_pod_cgroup("0::/system.slice/sshd.service\n", UID));
        assert!(!in_pod_cgroup(
            "0::/kubepods/burstable/pod3f1c2a4e-9b7d-4c1e-8f00-0123456789ac/0a1b\n",
            UID
        ));
    }

    #[test]
    fn a_pod_is_named_namespace_slash_name_with_kubernetes_targets() {
        let k = Targets::Kubernetes;
        assert!(check("p", "shop/client-1", k).is_ok());
        let e = check("p", "client-1", k).unwrap_err().to_string();
        assert!(e.starts_with("p: 'client-1': write namespace/name"), "{e}");
        let e = check("p", "Shop/x", k).unwrap_err().to_string();
        assert!(e.starts_with("p: 'Shop' is not a name"), "{e}");
        let e = check("p", "shop/x", Targets::Nodes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("targets: kubernetes"), "{e}");
    }
}
