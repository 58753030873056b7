//! Test objects as the API server returns them (built from JSON through k8s-openapi's own
//! deserializers): pods, namespaces, Services, EndpointSlices and NetworkFaults.

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::NetworkFault;

/// The creationTimestamp of every fixture NetworkFault.
pub const CREATED: &str = "2026-01-01T00:00:00Z";

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture deserializes")
}

fn labels(l: &[(&str, &str)]) -> Value {
    l.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
}

/// A running pod with these labels and addresses (none: not yet scheduled).
pub fn pod(ns: &str, name: &str, l: &[(&str, &str)], ips: &[&str]) -> Pod {
    let ips: Vec<Value> = ips.iter().map(|i| json!({"ip": i})).collect();
    from(json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}"), "labels": labels(l)},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ips.first().map(|i| i["ip"].clone()), "podIPs": ips},
    }))
}

pub fn namespace(name: &str, l: &[(&str, &str)]) -> Namespace {
    from(json!({"metadata": {"name": name, "labels": labels(l)}}))
}

/// A Service with ports `(name, port, targetPort, protocol)`.
pub fn service(ns: &str, name: &str, ports: &[(&str, i32, i32, &str)]) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, t, pr)| json!({"name": n, "port": p, "targetPort": t, "protocol": pr}))
        .collect();
    from(json!({"metadata": {"namespace": ns, "name": name}, "spec": {"ports": ports}}))
}

/// An EndpointSlice of Service `svc`: ports `(name, targetPort, protocol)`, endpoints
/// `(address, pod name, ready)`.
pub fn slice(
    ns: &str,
    svc: &str,
    family: &str,
    ports: &[(&str, i32, &str)],
    eps: &[(&str, &str, bool)],
) -> EndpointSlice {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr}))
        .collect();
    let eps: Vec<Value> = eps
        .iter()
        .map(|(a, pod, ready)| {
            json!({"addresses": [a], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": format!("uid-{ns}-{pod}")}})
        })
        .collect();
    from(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-{family}"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family, "ports": ports, "endpoints": eps,
    }))
}

/// A NetworkFault `ns/name` with this spec (YAML, as a user writes it), created at [`CREATED`].
pub fn fault(ns: &str, name: &str, spec: &str) -> NetworkFault {
    let spec: Value = serde_saphyr::from_str(spec).expect("fixture spec is YAML");
    from(json!({
        "apiVersion": "injector.dev/v1alpha1", "kind": "NetworkFault",
        "metadata": {"namespace": ns, "name": name, "uid": "nf-uid", "generation": 1,
                     "creationTimestamp": CREATED},
        "spec": spec,
    }))
}

/// [`CREATED`] plus `secs`.
pub fn at(secs: u64) -> std::time::SystemTime {
    let t: k8s_openapi::jiff::Timestamp = CREATED.parse().expect("a timestamp");
    std::time::SystemTime::from(t) + std::time::Duration::from_secs(secs)
}
