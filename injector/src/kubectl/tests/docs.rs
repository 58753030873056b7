//! apply's documents (every one checked, none returned unless all are good) and the ls tables
//! with counters from InjectorNode reports.

use std::time::SystemTime;

use super::build::add;
use crate::k8s::{
    InjectorNode, NetworkFault,
    control::{InjectorNodeSpec, NodeFault, NodeReport},
    resource::{HoldingNodes, NetworkFaultStatus, Phase, SelectedPods},
};
use crate::kubectl::{
    apply,
    view::{get_text, ls_table, view},
};

const GOOD: &str = "apiVersion: injector.dev/v1alpha1\nkind: NetworkFault\nmetadata: {name: a}\nspec:\n  to: {pods: {matchLabels: {app: x}}}\n  loss: 5%\n";

#[test]
fn apply_reads_every_document_and_refuses_all_on_one_error() {
    let two = format!(
        "{GOOD}---\napiVersion: injector.dev/v1alpha1\nkind: NetworkFault\nmetadata: {{name: b, namespace: bank}}\nspec: {{blackhole: true}}\n"
    );
    let v = apply::parse("f.yaml", &two, "shop", false).unwrap();
    let names: Vec<_> = v
        .iter()
        .map(|nf| {
            format!(
                "{}/{}",
                nf.metadata.namespace.as_deref().unwrap(),
                nf.metadata.name.as_deref().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["shop/a", "bank/b"]);
    let bad = format!(
        "{GOOD}---\n{}",
        GOOD.replace("name: a", "name: c").replace("5%", "150%")
    );
    let e = apply::parse("f.yaml", &bad, "shop", false).unwrap_err();
    assert!(
        e.contains("document 2 (shop/c): spec.loss: '150%': must be between 0% and 100%"),
        "{e}"
    );
    let e = apply::parse("f.yaml", &GOOD.replace("loss:", "los:"), "shop", false).unwrap_err();
    assert!(
        e.contains("document 1 (shop/a): spec.los: unknown field; spec takes "),
        "{e}"
    );
    let e = apply::parse(
        "f.yaml",
        &GOOD.replace("app: x", "app: x}, matchLabel: {a: b"),
        "shop",
        false,
    )
    .unwrap_err();
    assert!(e.contains("spec.to.pods.matchLabel: unknown field"), "{e}");
    let e = apply::parse("f.yaml", &two, "shop", true).unwrap_err();
    assert!(
        e.contains("document 2 (bank/b): its namespace is bank, and -n says shop"),
        "{e}"
    );
    let e = apply::parse("f.yaml", &format!("{GOOD}---\n{GOOD}"), "shop", false).unwrap_err();
    assert!(e.contains("shop/a is in f.yaml twice"), "{e}");
    let e = apply::parse(
        "f.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
        "shop",
        false,
    )
    .unwrap_err();
    assert!(
        e.contains("document 1: Service v1: this applies NetworkFaults"),
        "{e}"
    );
    let json =
        serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(GOOD).unwrap()).unwrap();
    assert_eq!(
        apply::parse("-", &format!("[{json}]"), "shop", false)
            .unwrap()
            .len(),
        1
    );
}

fn fault(name: &str, phase: Phase) -> NetworkFault {
    let mut nf = add(&format!(
        "{name} --from app=checkout --to svc/db --loss 10%"
    ))
    .unwrap();
    nf.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap(),
    ));
    nf.status = Some(NetworkFaultStatus {
        phase: Some(phase),
        selected: Some(SelectedPods {
            count: 2,
            pods: vec![],
        }),
        nodes: Some(HoldingNodes {
            count: 2,
            names: vec![],
        }),
        ..Default::default()
    });
    nf
}

fn node(name: &str, faults: &[(&str, u64, u64)]) -> InjectorNode {
    let mut n = InjectorNode::new(
        name,
        InjectorNodeSpec {
            node_name: name.into(),
        },
    );
    n.status = Some(NodeReport {
        faults: faults
            .iter()
            .map(|&(r, matched, dropped)| NodeFault {
                resource: r.into(),
                parts: 1,
                matched,
                dropped,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    n
}

#[test]
fn tables_show_counters_per_fault_and_per_node() {
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_060);
    let nodes = [
        node("node1", &[("shop/a", 100, 10)]),
        node("node2", &[("shop/a", 50, 5), ("shop/zz", 1, 1)]),
    ];
    let views = [
        view(&fault("a", Phase::Running), &nodes, now),
        view(&fault("b", Phase::Pending), &nodes, now),
    ];
    assert_eq!(views[0].deadline.as_deref(), Some("1970-01-12T13:51:40Z"));
    let t = ls_table(&views, false, false);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME", "PHASE", "ACTION", "SELECTED", "NODES", "LEFT", "MATCHED", "DROPPED"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "a", "Running", "loss", "10%", "2", "2", "4m00s", "150", "15"
        ]
    );
    assert!(
        lines[2].ends_with("-  -") || lines[2].split_whitespace().rev().take(2).all(|c| c == "-"),
        "{t}"
    );
    let w = ls_table(&views, true, true);
    let rows: Vec<Vec<&str>> = w
        .lines()
        .map(|l| {
            l.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect()
        })
        .collect();
    assert_eq!(rows[0][..4], ["NAMESPACE", "NAME", "NODE", "PHASE"]);
    assert_eq!(rows[1][..3], ["shop", "a", "node1"]);
    assert!(
        rows[1].contains(&"app=checkout -> svc/db") && rows[1].ends_with(&["100", "10"]),
        "{w}"
    );
    assert_eq!(rows[2][..3], ["shop", "a", "node2"]);
    assert_eq!(rows[3][..3], ["shop", "b", "-"]);
    assert_eq!(rows.len(), 4, "{w}");
    let text = get_text(&views[0]);
    assert!(
        text.contains("Action:    loss 10%") && text.contains("total"),
        "{text}"
    );
}
