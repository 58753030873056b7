//! The CRD: the manifest in deploy/ is `injector crd`'s output, the schema is structural and
//! free of what the 1.20 API server refuses, and its patterns accept only what Rust parses.

use serde_json::Value;

use crate::k8s::resource::{DURATION_PATTERN, PERCENT_PATTERN, PORT_PATTERN};
use crate::k8s::{crd, crd_yaml};

#[test]
fn the_manifest_in_deploy_is_the_crd_of_the_types() {
    let file = include_str!("../../../../deploy/crd/injector.yaml");
    assert!(
        file == crd_yaml(),
        "deploy/crd/injector.yaml differs from the types; regenerate it:\n  \
         cargo run -p injector -- crd > deploy/crd/injector.yaml"
    );
}

#[test]
fn no_crd_has_an_empty_string_default() {
    // The 1.20 API server refuses the whole CRD over one ("default: Invalid value").
    let yaml = crd_yaml();
    assert!(
        !yaml.contains("default: ''") && !yaml.contains("default: \"\""),
        "{yaml}"
    );
}

/// Kubernetes' structural-schema rules (and 1.20's limits), checked on every node of the schema.
fn structural(at: &str, s: &Value) {
    let o = s
        .as_object()
        .unwrap_or_else(|| panic!("{at}: not an object"));
    for k in [
        "$ref",
        "x-kubernetes-validations",
        "anyOf",
        "allOf",
        "not",
        "definitions",
    ] {
        assert!(!o.contains_key(k), "{at}: has {k}");
    }
    let typed = o.contains_key("type")
        || o.contains_key("x-kubernetes-int-or-string")
        || o.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(typed, "{at}: no type");
    if o.contains_key("properties") {
        assert_eq!(o["type"], "object", "{at}: properties on a non-object");
        assert!(
            !o.contains_key("additionalProperties"),
            "{at}: properties and additionalProperties"
        );
    }
    // oneOf may only constrain which properties are present.
    for branch in o
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let b = branch.as_object().expect("a branch is an object");
        assert!(b.keys().all(|k| k == "required"), "{at}.oneOf: {branch}");
        for r in b["required"].as_array().expect("required is a list") {
            let r = r.as_str().expect("a name");
            assert!(
                o["properties"].get(r).is_some(),
                "{at}.oneOf: {r} is no property"
            );
        }
    }
    for (k, v) in o
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        structural(&format!("{at}.{k}"), v);
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = o.get(k).filter(|v| v.is_object()) {
            structural(&format!("{at}.{k}"), v);
        }
    }
}

#[test]
fn the_schema_is_structural_namespaced_and_without_cel() {
    let v = serde_json::to_value(crd()).unwrap();
    assert_eq!(v["metadata"]["name"], "networkfaults.injector.dev");
    assert_eq!(v["spec"]["scope"], "Namespaced");
    assert_eq!(v["spec"]["names"]["shortNames"][0], "nf");
    assert!(!v.to_string().contains("selectableFields"));
    let ver = &v["spec"]["versions"][0];
    assert_eq!(ver["name"], "v1alpha1");
    assert!(ver["subresources"]["status"].is_object());
    structural("openAPIV3Schema", &ver["schema"]["openAPIV3Schema"]);
    let spec = &ver["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["loss"]["pattern"], PERCENT_PATTERN);
    assert_eq!(spec["to"]["properties"]["mode"]["enum"][3], "percent");
    for side in ["from", "to"] {
        assert_eq!(spec[side]["oneOf"].as_array().map(Vec::len), Some(4));
        assert!(
            spec[side].get("nullable").is_none(),
            "{side}: a null must be pruned"
        );
    }
}

fn re(p: &str) -> regex::Regex {
    regex::Regex::new(p).unwrap()
}

#[test]
fn what_the_patterns_accept_rust_parses_and_out_of_range_shares_are_refused_by_both() {
    let pct = re(PERCENT_PATTERN);
    for v in [
        "5%", "0.01%", "100%", "100.0%", " 5 %", ".5%", "0%", "99.9999%",
    ] {
        assert!(pct.is_match(v), "{v}");
        assert!(crate::fault::spec::percent("p", v).is_ok(), "{v}");
    }
    for v in ["150%", "100.1%", "5", "-1%", "1e2%", "%", "5%%", "101%"] {
        assert!(!pct.is_match(v), "pattern takes {v}");
    }
    let dur = re(DURATION_PATTERN);
    let any = (std::time::Duration::ZERO, "0s");
    let big = (std::time::Duration::MAX, "max");
    for v in ["100ms", "5m", "1h30m", "1.5s", "250us", "10µs", " 30s "] {
        assert!(dur.is_match(v), "{v}");
        assert!(crate::parse::duration("d", v, any, big).is_ok(), "{v}");
    }
    for v in ["5", "ms", "5 m", "-1s", "1d", "1.s"] {
        assert!(!dur.is_match(v), "pattern takes {v}");
    }
    let port = re(PORT_PATTERN);
    for v in ["5432", "8000-8080", "http", "grpc-web", "h2c", "8080-alt"] {
        assert!(port.is_match(v), "{v}");
    }
    for v in ["-1", "HTTP", "http-", "-http", "1-", "", "123456", "a--"] {
        assert!(!port.is_match(v), "pattern takes {v}");
    }
}
