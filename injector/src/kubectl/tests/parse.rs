//! Selectors, targets and modes as users type them: kubectl's label selector syntax, svc/,
//! CIDRs and any; all, one, fixed=N, percent=P; and the errors of each.

use std::collections::BTreeMap;

use crate::k8s::resource::{LabelSelector, Mode, Operator, Requirement};
use crate::kubectl::target::{Parsed, parse_mode, parse_selector, parse_target};

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
