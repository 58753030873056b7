//! deploy/ against a real kube-apiserver (tests/src/cluster/): every manifest of the
//! kustomization is accepted (server-side dry run, then applied), and the NetworkFault CRD's
//! schema admits a good resource and refuses a bad one (loss 150%) with the field named.

use injector_tests::{
    cluster::{self, Cluster, ClusterOptions},
    lab, require_root,
};

fn kubectl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let out = c.kubectl(cluster::ADMIN, args, stdin).expect("kubectl");
    (out.ok, out.text())
}

#[test]
fn deploy_is_accepted_and_the_crd_schema_refuses_bad_faults() {
    require_root();
    let c = Cluster::up(&lab::run_prefix("dp"), ClusterOptions::default()).expect("cluster up");
    let deploy = format!("{}/../deploy", env!("CARGO_MANIFEST_DIR"));
    // The namespace and the CRD first: a server-side dry run of namespaced objects needs their
    // namespace, and of a NetworkFault its CRD.
    let (ok, out) = kubectl(
        &c,
        &[
            "apply",
            "--server-side",
            "-f",
            &format!("{deploy}/namespace.yaml"),
            "-f",
            &format!("{deploy}/crd/injector.yaml"),
        ],
        None,
    );
    assert!(ok, "namespace and CRD: {out}");
    let (ok, out) = kubectl(
        &c,
        &[
            "wait",
            "--for=condition=Established",
            "crd/networkfaults.injector.dev",
            "--timeout=30s",
        ],
        None,
    );
    assert!(ok, "CRD established: {out}");
    let (ok, out) = kubectl(&c, &["apply", "-k", &deploy, "--dry-run=server"], None);
    assert!(ok, "dry run of deploy/: {out}");
    let (ok, out) = kubectl(&c, &["apply", "-k", &deploy], None);
    assert!(ok, "apply of deploy/: {out}");
    for kind in [
        "daemonset/injector",
        "serviceaccount/injector",
        "service/injector-metrics",
    ] {
        let (ok, out) = kubectl(&c, &["-n", "injector", "get", kind], None);
        assert!(ok, "{kind}: {out}");
    }
    let fault = |loss: &str| {
        format!(
            "apiVersion: injector.dev/v1alpha1\nkind: NetworkFault\nmetadata: {{name: f{}, namespace: shop}}\nspec:\n  from: {{pods: {{matchLabels: {{app: checkout}}}}}}\n  to: {{pods: {{matchLabels: {{app: payments}}}}}}\n  loss: \"{loss}\"\n  duration: 1m\n",
            loss.trim_end_matches('%')
        )
    };
    let (ok, out) = kubectl(&c, &["apply", "-f", "-"], Some(&fault("10%")));
    assert!(ok, "a good NetworkFault: {out}");
    let (ok, out) = kubectl(&c, &["apply", "-f", "-"], Some(&fault("150%")));
    assert!(
        !ok && out.contains("spec.loss"),
        "loss 150% must be refused by the schema, naming spec.loss: {out}"
    );
    let (ok, out) = kubectl(
        &c,
        &["-n", "shop", "get", "networkfaults", "-o", "name"],
        None,
    );
    assert!(ok && out.contains("f10") && !out.contains("f150"), "{out}");
}
