//! Unit tests of the plugin's pure parts: selectors, targets and modes as typed, a NetworkFault
//! from flags (errors naming the flag), apply's documents, and the tables.

use std::{collections::BTreeMap, time::SystemTime};

use clap::Parser as _;

use super::{
    apply,
    args::{Cli, Cmd, FaultCmd},
    fault::{build, flag_of},
    target::{Parsed, parse_mode, parse_selector, parse_target},
    view::{ls_table, view},
};
use crate::k8s::{
    InjectorNode, NetworkFault,
    control::{InjectorNodeSpec, NodeFault, NodeReport},
    resource::{
        HoldingNodes, LabelSelector, Mode, NetworkFaultStatus, Operator, Phase, Requirement,
        SelectedPods, ServiceRef,
    },
};

fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn selectors_parse_as_kubectl_writes_them() {
    let s = parse_selector(
        "--from",
        "app=a,tier in (x, y),!canary,env!=prod,zone notin (z1),gpu,b==c",
    )
    .unwrap();
    assert_eq!(
        s.match_labels,
        BTreeMap::from([("app".into(), "a".into()), ("b".into(), "c".into())])
    );
    assert_eq!(
        s.match_expressions,
        vec![
            req("tier", Operator::In, &["x", "y"]),
            req("canary", Operator::DoesNotExist, &[]),
            req("env", Operator::NotIn, &["prod"]),
            req("zone", Operator::NotIn, &["z1"]),
            req("gpu", Operator::Exists, &[]),
        ]
    );
    assert_eq!(
        parse_selector("--from", "").unwrap(),
        LabelSelector::default()
    );
    let bad = |s: &str| parse_selector("--to", s).unwrap_err().to_string();
    assert!(bad("app=a,,b=c").starts_with("--to: '' in 'app=a,,b=c': an empty requirement"));
    assert!(bad("app=a,app=b").contains("'app' is also a: no pod has both; write app in (a,b)"));
    assert!(
        bad("tier in x,y").contains("the values go in parentheses"),
        "{}",
        bad("tier in x,y")
    );
    assert!(bad("tier in ()").contains("list at least one value"));
    assert!(bad("replicas>2").contains("Gt/Lt"));
    assert!(
        bad("app checkout").contains("write key=value"),
        "{}",
        bad("app checkout")
    );
}

#[test]
fn targets_are_services_cidrs_any_or_selectors() {
    let t = |v: &str| parse_target("--to", v).unwrap();
    assert_eq!(
        t("svc/payments-db"),
        Parsed::Service {
            name: "payments-db".into(),
            namespace: None
        }
    );
    assert_eq!(
        t("svc/bank/ledger"),
        Parsed::Service {
            name: "ledger".into(),
            namespace: Some("bank".into())
        }
    );
    assert_eq!(
        t("10.0.0.0/8, 192.168.1.7"),
        Parsed::Cidrs(vec!["10.0.0.0/8".into(), "192.168.1.7".into()])
    );
    assert_eq!(
        t("fd00:42::/64"),
        Parsed::Cidrs(vec!["fd00:42::/64".into()])
    );
    assert_eq!(t("any"), Parsed::Any);
    assert!(matches!(t("app=checkout"), Parsed::Pods(s) if s.match_labels["app"] == "checkout"));
    let e = parse_target("--to", "svc/a/b/c").unwrap_err().to_string();
    assert!(
        e.starts_with("--to: 'svc/a/b/c': write svc/NAME or svc/NAMESPACE/NAME"),
        "{e}"
    );
}

#[test]
fn modes_parse() {
    assert_eq!(parse_mode("--to-mode", "all").unwrap(), (Mode::All, None));
    assert_eq!(parse_mode("--to-mode", "one").unwrap(), (Mode::One, None));
    assert_eq!(
        parse_mode("--to-mode", "fixed=2").unwrap(),
        (Mode::Fixed, Some(2))
    );
    assert_eq!(
        parse_mode("--to-mode", "percent=30%").unwrap(),
        (Mode::Percent, Some(30))
    );
    let e = |v: &str| parse_mode("--from-mode", v).unwrap_err().to_string();
    assert!(e("some").starts_with("--from-mode: 'some': use all, one, fixed=N"));
    assert!(e("fixed").contains("needs a value"));
    assert!(e("percent=2.5").contains("'2.5' is not a whole number"));
}

fn add(args: &str) -> Result<NetworkFault, String> {
    let argv = std::iter::once("kubectl-injector")
        .chain(["fault", "add"])
        .map(String::from)
        .chain(shell_split(args));
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let Cmd::Fault {
        cmd: FaultCmd::Add(a),
    } = cli.cmd
    else {
        unreachable!()
    };
    build(&a, "shop")
}

/// Splits at spaces outside single quotes (enough for these tests).
fn shell_split(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (vec![], String::new(), false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn a_fault_from_flags() {
    let nf = add("slow --from app=checkout --to svc/payments-db --to-ports 5432 --delay 100ms --jitter 10ms --for 10m --to-mode one --seed 7").unwrap();
    assert_eq!(nf.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(nf.metadata.name.as_deref(), Some("slow"));
    let s = &nf.spec;
    let from = s.from.as_ref().unwrap().pods.as_ref().unwrap();
    assert_eq!(from.labels.match_labels["app"], "checkout");
    let to = s.to.as_ref().unwrap();
    assert_eq!(
        to.service,
        Some(ServiceRef {
            name: "payments-db".into(),
            namespace: None
        })
    );
    assert_eq!(
        (to.mode, to.ports.clone()),
        (Mode::One, vec!["5432".to_string()])
    );
    assert_eq!(
        (s.delay.as_deref(), s.jitter.as_deref()),
        (Some("100ms"), Some("10ms"))
    );
    assert_eq!((s.duration.as_str(), s.seed), ("10m", 7));

    let nf = add(
        "x --from-ns bank --to 10.42.0.0/16 --to-except 10.42.1.1 --loss 5% --proto TCP --dry-run",
    )
    .unwrap();
    let from = nf.spec.from.unwrap().pods.unwrap();
    assert_eq!(
        (from.namespaces, from.labels),
        (vec!["bank".to_string()], LabelSelector::default())
    );
    assert_eq!(
        nf.spec.to.as_ref().unwrap().except,
        vec!["10.42.1.1".to_string()]
    );
    assert_eq!(nf.spec.proto.as_deref(), Some("tcp"));
    assert!(nf.spec.dry_run);
    let nf = add("y --to-ports 53 --proto udp --blackhole").unwrap();
    assert!(nf.spec.to.unwrap().any && nf.spec.from.is_none());
}

#[test]
fn bad_flags_are_named() {
    let e = |args: &str| add(args).unwrap_err();
    assert_eq!(
        e("x --to app=a --loss 150%"),
        "--loss: '150%': must be between 0% and 100%"
    );
    assert_eq!(
        e("x --delay 10ms --jitter 20ms"),
        "--jitter: '20ms' must be between 0s and the delay"
    );
    assert!(
        e("x --to 10.42.2.7/24 --blackhole").starts_with("--to: '10.42.2.7/24' has host bits set")
    );
    assert!(
        e("x --to app=a --to-mode fixed=0 --blackhole")
            .starts_with("--to-mode: '0': fixed takes 1 or more pods")
    );
    assert!(
        e("x --to 10.0.0.0/8 --to-mode one --blackhole")
            .starts_with("--to-mode: 'one' chooses among pods")
    );
    assert!(
        e("x --to app=a --to-ports 99999 --proto tcp --blackhole")
            .starts_with("--to-ports: '99999'")
    );
    assert!(
        e("x --from app=a --from-except 10.0.0.1 --blackhole")
            .starts_with("--from-except: exceptions apply to cidrs")
    );
    assert!(e("x --to-ns 'Bad' --blackhole").starts_with("--to-ns: 'Bad' is not a name"));
    assert!(e("x --from 'app=Bad Value' --blackhole").starts_with("--from: "));
    assert!(e("x --to svc/db --to-ns bank --blackhole").contains("write svc/NAMESPACE/NAME"));
    assert!(
        e("x --blackhole --loss 5%").starts_with("--loss/--blackhole/--delay: give exactly one of")
    );
    assert!(e("x --loss 5% --for 2d").starts_with("--for: '2d' is not a duration"));
    assert!(e("x --loss 5% --proto sctp").starts_with("--proto: 'sctp'"));
    assert!(e("Bad_Name --loss 5%").starts_with("NAME: 'Bad_Name' is not a resource name"));
    assert!(e("x --to-ns-selector 'env in (a' --loss 5%").starts_with("--to-ns-selector: "));
}

#[test]
fn fields_map_to_flags() {
    for (field, flag) in [
        ("spec.from.pods.matchExpressions[0].key", "--from"),
        ("spec.to.pods.namespaces[1]", "--to-ns"),
        (
            "spec.to.pods.namespaceSelector.matchLabels",
            "--to-ns-selector",
        ),
        ("spec.to.service.name", "--to"),
        ("spec.to.value", "--to-mode"),
        ("spec.from.ports", "--from-ports"),
        ("spec.to.cidrs", "--to"),
        ("spec.duration", "--for"),
        ("spec.bothWays", "--both-ways"),
        ("spec.dryRun", "--dry-run"),
        ("spec.flows", "--flows"),
        ("spec", "--loss/--blackhole/--delay"),
        ("metadata.name", "NAME"),
    ] {
        assert_eq!(flag_of(field), flag, "{field}");
    }
}

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
            "NAME", "PHASE", "ACTION", "SELECTED", "NODES", "LEFT", "MATCHED", "DROPPED", "DELAYED"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "a", "Running", "loss", "10%", "2", "2", "4m00s", "150", "15", "0"
        ]
    );
    assert!(
        lines[2].ends_with("-  -  -")
            || lines[2].split_whitespace().rev().take(3).all(|c| c == "-"),
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
        rows[1].contains(&"app=checkout -> svc/db") && rows[1].ends_with(&["100", "10", "0"]),
        "{w}"
    );
    assert_eq!(rows[2][..3], ["shop", "a", "node2"]);
    assert_eq!(rows[3][..3], ["shop", "b", "-"]);
    assert_eq!(rows.len(), 4, "{w}");
    let text = super::view::get_text(&views[0]);
    assert!(
        text.contains("Action:    loss 10%") && text.contains("total"),
        "{text}"
    );
}
