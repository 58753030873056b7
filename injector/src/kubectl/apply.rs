//! `apply -f`: NetworkFault documents read (YAML streams, JSON, Lists), checked against the CRD's
//! schema and the resource's validation by document, then server-side applied all or nothing.

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::Value;

use super::{MANAGER, conn::Conn, fault::check_name};
use crate::{
    cli::Failure,
    k8s::{NetworkFault, crd},
};

const API_VERSION: &str = "injector.dev/v1alpha1";

/// The documents of `text` (YAML with `---`, or JSON; `kind: List` unfolded), in order.
fn documents(src: &str, text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = if text.trim_start().starts_with(['{', '[']) {
        match serde_json::from_str(text).map_err(|e| format!("{src}: not JSON: {e}"))? {
            Value::Array(items) => items,
            one => vec![one],
        }
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or_default().to_string();
            format!("{src}: not YAML: {}", first.trim_start_matches("error: "))
        })?
    };
    Ok(docs
        .into_iter()
        .flat_map(
            |d| match (d.get("kind").and_then(Value::as_str), d.get("items")) {
                (Some("List"), Some(Value::Array(items))) => items.clone(),
                _ => vec![d],
            },
        )
        .filter(|d| !d.is_null())
        .collect())
}

/// Fields of `v` the schema does not know (the API server would drop them without a word).
pub(crate) fn unknown_fields(path: &str, v: &Value, schema: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in m {
                    match props.get(k) {
                        Some(s) => unknown_fields(&format!("{path}.{k}"), sub, s, out),
                        None => {
                            let known: Vec<&str> = props.keys().map(String::as_str).collect();
                            out.push(format!(
                                "{path}.{k}: unknown field; {path} takes {}",
                                known.join(", ")
                            ));
                        }
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (k, sub) in m {
                    unknown_fields(&format!("{path}.{k}"), sub, s, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, sub) in items.iter().enumerate() {
                    unknown_fields(&format!("{path}[{i}]"), sub, s, out);
                }
            }
        }
        _ => {}
    }
}

/// Reads every NetworkFault of `text` (`src` names it in messages) for `namespace` (`explicit`:
/// given with -n, so a document's own namespace must agree). Every document is checked; the
/// errors of all of them come back together, and none is returned unless all are good.
pub fn parse(
    src: &str,
    text: &str,
    namespace: &str,
    explicit: bool,
) -> Result<Vec<NetworkFault>, String> {
    let crd = serde_json::to_value(crd()).expect("the CRD serializes");
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let docs = documents(src, text)?;
    if docs.is_empty() {
        return Err(format!("{src}: no documents"));
    }
    let (mut faults, mut errors) = (vec![], vec![]);
    for (i, d) in docs.into_iter().enumerate() {
        let at = format!("document {}", i + 1);
        match one(&at, d, spec_schema, namespace, explicit) {
            Ok(nf) => faults.push(nf),
            Err(e) => errors.push(e),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for nf in &faults {
        let key = format!(
            "{}/{}",
            nf.metadata.namespace.as_deref().unwrap_or_default(),
            nf.metadata.name.as_deref().unwrap_or_default()
        );
        if !seen.insert(key.clone()) {
            errors.push(format!("{key} is in {src} twice; keep one"));
        }
    }
    if errors.is_empty() {
        Ok(faults)
    } else {
        Err(format!(
            "{src}: nothing applied:\n  {}",
            errors.join("\n  ")
        ))
    }
}

fn one(
    at: &str,
    d: Value,
    spec_schema: &Value,
    namespace: &str,
    explicit: bool,
) -> Result<NetworkFault, String> {
    let kind = d.get("kind").and_then(Value::as_str).unwrap_or("(no kind)");
    let version = d
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("(no apiVersion)");
    if kind != "NetworkFault" || version != API_VERSION {
        return Err(format!(
            "{at}: {kind} {version}: this applies NetworkFaults ({API_VERSION}); use kubectl apply for other kinds"
        ));
    }
    let mut nf: NetworkFault =
        serde_json::from_value(d.clone()).map_err(|e| format!("{at}: {e}"))?;
    let name = nf.metadata.name.clone().unwrap_or_default();
    check_name(&format!("{at}: metadata.name"), &name)?;
    let ns = match nf.metadata.namespace.as_deref() {
        Some(own) if explicit && own != namespace => {
            return Err(format!(
                "{at} ({own}/{name}): its namespace is {own}, and -n says {namespace}; remove one of them"
            ));
        }
        Some(own) => own.to_string(),
        None => namespace.to_string(),
    };
    let at = format!("{at} ({ns}/{name})");
    let mut unknown = vec![];
    if let Some(spec) = d.get("spec") {
        unknown_fields("spec", spec, spec_schema, &mut unknown);
    }
    if let Some(u) = unknown.first() {
        return Err(format!("{at}: {u}"));
    }
    nf.spec.validate().map_err(|e| format!("{at}: {e}"))?;
    let m = &mut nf.metadata;
    *m = kube::api::ObjectMeta {
        name: Some(name),
        namespace: Some(ns),
        labels: m.labels.take(),
        annotations: m.annotations.take(),
        ..Default::default()
    };
    nf.status = None;
    Ok(nf)
}

/// Server-side applies `faults` as [`MANAGER`]: a server dry run of every one first (so the API
/// server's refusal of any, e.g. a missing namespace, applies none), then each for real.
pub async fn apply(conn: &Conn, faults: &[NetworkFault], force: bool) -> Result<(), Failure> {
    let mut pp = PatchParams::apply(MANAGER);
    if force {
        pp = pp.force();
    }
    let api = |nf: &NetworkFault| -> (Api<NetworkFault>, String) {
        let ns = nf.metadata.namespace.as_deref().unwrap_or_default();
        let name = nf.metadata.name.clone().unwrap_or_default();
        (Api::namespaced(conn.client.clone(), ns), name)
    };
    let refused = |nf: &NetworkFault, e: kube::Error, applied: &str| {
        let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
        let Failure(code, msg) = conn.error(e);
        let hint = if conflict {
            "; --force-conflicts takes the fields over"
        } else {
            ""
        };
        Failure(
            code,
            format!(
                "{}/{}: {msg}{hint} ({applied})",
                nf.metadata.namespace.as_deref().unwrap_or_default(),
                nf.metadata.name.as_deref().unwrap_or_default()
            ),
        )
    };
    for nf in faults {
        let (a, name) = api(nf);
        a.patch(&name, &pp.clone().dry_run(), &Patch::Apply(nf))
            .await
            .map_err(|e| refused(nf, e, "nothing applied"))?;
    }
    for (i, nf) in faults.iter().enumerate() {
        let (a, name) = api(nf);
        let before = a.get_opt(&name).await.map_err(|e| conn.error(e))?;
        let after = a
            .patch(&name, &pp, &Patch::Apply(nf))
            .await
            .map_err(|e| refused(nf, e, &format!("{i} of {} applied before it", faults.len())))?;
        let what = match before {
            None => "created",
            Some(b) if b.metadata.resource_version == after.metadata.resource_version => {
                "unchanged"
            }
            Some(_) => "configured",
        };
        println!(
            "networkfault.injector.dev/{name} {what} (namespace {})",
            nf.metadata.namespace.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}
