//! A step's fault with Kubernetes targets (`targets: kubernetes`): a NetworkFault's spec written
//! in place (pods, Services, CIDRs, `mode`, every action) plus its `name` and optional
//! `namespace`, checked by the resource's own validation with the field renamed to the file's
//! path (`spec.to.pods` -> `steps[2].faults[0].to.pods`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file::{ferr, typed};
use crate::{
    fault::spec::FieldError,
    k8s::{NetworkFaultSpec, crd, validate::dns_label},
    kubectl::{apply::unknown_fields, fault::check_name},
};

/// One NetworkFault of a step: created as `<name>-<run id>` in `namespace` (default: the
/// cluster connection's), labelled with the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeFault {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `duration` is set by the experiment: the end of the step plus the margin.
    pub spec: NetworkFaultSpec,
}

impl KubeFault {
    /// `loss 1%`, `blackhole`, ... (the plugin's words).
    pub fn action_text(&self) -> String {
        self.spec.action_spec().action_text()
    }
}

/// The NetworkFault spec's schema (from the CRD), to refuse fields it does not know.
fn spec_schema() -> Value {
    let crd = serde_json::to_value(crd()).expect("the CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// `spec.to.pods` -> `<at>.to.pods`; `spec` -> `<at>`.
fn renamed(at: &str, e: FieldError) -> FieldError {
    let field = match e.field.strip_prefix("spec") {
        Some(rest) => format!("{at}{rest}"),
        None => format!("{at}.{}", e.field),
    };
    ferr(field, e.msg)
}

/// One fault of a step, written as `{name, namespace?, <NetworkFault spec fields>}` without
/// `duration`; `at` is its path (`steps[1].faults[0]`). The duration is `lifetime` for now (the
/// runner sets it from the resource's creation).
pub(crate) fn kube_fault(at: &str, v: Value, lifetime: &str) -> Result<KubeFault, FieldError> {
    let Value::Object(mut o) = v else {
        return Err(ferr(
            at,
            "a fault is a mapping: {name: ..., to: {pods: {matchLabels: {app: web}}}, loss: 1%}",
        ));
    };
    let name = match o.remove("name") {
        Some(Value::String(n)) => n,
        _ => {
            return Err(ferr(
                format!("{at}.name"),
                "give the fault a name (e.g. web)",
            ));
        }
    };
    check_name(&format!("{at}.name"), &name).map_err(|e| {
        let (f, m) = e.split_once(": ").unwrap_or((at, &e));
        ferr(f, m)
    })?;
    if name.len() > 40 {
        return Err(ferr(
            format!("{at}.name"),
            format!("'{name}': at most 40 characters (the run id is added)"),
        ));
    }
    let namespace = match o.remove("namespace") {
        None => None,
        Some(Value::String(ns)) => Some(ns),
        Some(other) => {
            return Err(ferr(
                format!("{at}.namespace"),
                format!("'{other}': a namespace's name"),
            ));
        }
    };
    if o.contains_key("duration") {
        return Err(ferr(
            format!("{at}.duration"),
            "set by the experiment (the end of the step plus deadline_margin); remove it",
        ));
    }
    let mut unknown = Vec::new();
    let v = Value::Object(o);
    unknown_fields(at, &v, &spec_schema(), &mut unknown);
    if let Some(u) = unknown.first() {
        let (f, m) = u.split_once(": ").unwrap_or((at, u));
        return Err(ferr(f, m));
    }
    let mut spec: NetworkFaultSpec = typed(at, v)?;
    spec.duration = lifetime.to_string();
    spec.validate().map_err(|e| renamed(at, e))?;
    let kf = KubeFault {
        name,
        namespace,
        spec,
    };
    if let Some(ns) = &kf.namespace {
        dns_label(&format!("{at}.namespace"), ns)?;
    }
    Ok(kf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<KubeFault, String> {
        let v: Value = serde_saphyr::from_str(yaml).unwrap();
        kube_fault("steps[2].faults[0]", v, "12000ms").map_err(|e| e.to_string())
    }

    #[test]
    fn a_network_fault_spec_is_read_in_place() {
        let f = parse(
            "{name: web, namespace: shop, from: {pods: {matchLabels: {app: client}}}, to: {service: {name: web}, ports: [http], mode: percent, value: 50}, loss: 1%}",
        )
        .unwrap();
        assert_eq!(f.name, "web");
        assert_eq!(f.namespace.as_deref(), Some("shop"));
        assert_eq!(f.spec.duration, "12000ms");
        assert_eq!(f.spec.loss.as_deref(), Some("1%"));
        assert_eq!(f.action_text(), "loss 1%");
        let to = f.spec.to.unwrap();
        assert_eq!(to.mode, crate::k8s::resource::Mode::Percent);
        assert_eq!(to.value, Some(50));
    }

    #[test]
    fn errors_name_the_path_in_the_file_with_the_resources_messages() {
        let cases = [
            (
                "{name: web, to: {pods: {matchLabels: {'a b': x}}}, loss: 1%}",
                "steps[2].faults[0].to.pods.matchLabels: 'a b' is not a label key",
            ),
            (
                "{name: web, to: {pods: {}, mode: percent, value: 150}, loss: 1%}",
                "steps[2].faults[0].to.value: '150': percent takes 1 to 100",
            ),
            (
                "{name: web, to: {cidrs: [10.42.2.2/24]}, loss: 1%}",
                "steps[2].faults[0].to.cidrs: '10.42.2.2/24' has host bits set",
            ),
            (
                "{name: web, to: {pods: {}}, loss: 150%}",
                "steps[2].faults[0].loss: '150%': must be between 0% and 100%",
            ),
            (
                "{name: web, to: {pods: {}}, delay: 10ms, jitter: 20ms}",
                "steps[2].faults[0].jitter: '20ms' must be between 0s and the delay",
            ),
            (
                "{name: web, to: {pods: {}, colour: red}, loss: 1%}",
                "steps[2].faults[0].to.colour: unknown field; steps[2].faults[0].to takes",
            ),
            (
                "{name: web, to: {pods: {}}, loss: 1%, duration: 1m}",
                "steps[2].faults[0].duration: set by the experiment",
            ),
            (
                "{name: Web, to: {pods: {}}, loss: 1%}",
                "steps[2].faults[0].name: 'Web' is not a resource name",
            ),
            (
                "{name: web, namespace: Shop, to: {pods: {}}, loss: 1%}",
                "steps[2].faults[0].namespace: 'Shop' is not a name; use 1-63 of a-z",
            ),
            (
                "{name: web, to: {pods: {}, service: {name: db}}, loss: 1%}",
                "steps[2].faults[0].to: pods and service given",
            ),
            (
                "{name: web, to: {pods: {}}, loss: 1%, blackhole: true}",
                "steps[2].faults[0].blackhole: a fault has one action (or loss with delay) and loss is given too",
            ),
            (
                "{name: web, to: {pods: {}, mode: some}, loss: 1%}",
                "steps[2].faults[0].to.mode: unknown variant `some`",
            ),
        ];
        for (yaml, want) in cases {
            let e = parse(yaml).unwrap_err();
            assert!(e.starts_with(want), "{yaml}: want '{want}...', got '{e}'");
        }
    }
}
