//! Selection: label selectors (matched and as watch strings), namespaces, the seeded blast
//! radius (the same pods on every node, stable while pods churn), and the watches.

use crate::k8s::fixture::{fault, namespace, pod};
use crate::k8s::resource::{Mode, PodSelector, Target};
use crate::k8s::select::{blast, keep, rank, select_pods};
use crate::k8s::{Watch, WatchKind};

fn sel(yaml: &str) -> PodSelector {
    serde_saphyr::from_str(yaml).unwrap()
}

fn names(pods: &[&k8s_openapi::api::core::v1::Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

#[test]
fn labels_expressions_and_namespaces_select_live_pods() {
    let mut done = pod("shop", "done", &[("app", "web")], &["10.42.1.9"]);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut host = pod("shop", "host", &[("app", "web")], &["10.0.0.1"]);
    host.spec.as_mut().unwrap().host_network = Some(true);
    let pods = vec![
        pod(
            "shop",
            "web1",
            &[("app", "web"), ("tier", "a")],
            &["10.42.1.2"],
        ),
        pod(
            "shop",
            "web2",
            &[("app", "web"), ("tier", "b"), ("canary", "1")],
            &["10.42.2.2", "fd00:42:2::2"],
        ),
        pod("shop", "db", &[("app", "db")], &["10.42.1.3"]),
        pod("shop", "web-unscheduled", &[("app", "web")], &[]),
        pod("other", "web3", &[("app", "web")], &["10.42.2.5"]),
        done,
        host,
    ];
    let nss = vec![
        namespace("shop", &[("team", "x")]),
        namespace("other", &[("team", "y")]),
    ];
    let got = |s: &str| names(&select_pods(&sel(s), "shop", &pods, &nss));
    assert_eq!(got("{matchLabels: {app: web}}"), ["web1", "web2"]);
    assert_eq!(
        got("{matchLabels: {app: web}, namespaces: [other]}"),
        ["web3"]
    );
    assert_eq!(
        got("{matchLabels: {app: web}, namespaceSelector: {}}"),
        ["web1", "web2", "web3"]
    );
    assert_eq!(
        got(
            "{matchLabels: {app: web}, namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [x]}]}}"
        ),
        ["web3"]
    );
    assert_eq!(
        got("{matchExpressions: [{key: tier, operator: In, values: [b, c]}]}"),
        ["web2"]
    );
    assert_eq!(
        got(
            "{matchExpressions: [{key: canary, operator: DoesNotExist}, {key: app, operator: Exists}]}"
        ),
        ["web1", "db"]
    );
    assert_eq!(got("{}"), ["web1", "web2", "db"]);
}

#[test]
fn selectors_become_the_api_server_s_query_strings() {
    let s = sel("{matchLabels: {app: web, tier: a}, matchExpressions: [{key: env, operator: NotIn, values: [prod, dev]},
                 {key: canary, operator: DoesNotExist}, {key: x, operator: Exists}, {key: k, operator: In, values: [v]}]}");
    assert_eq!(
        s.labels.to_query().as_deref(),
        Some("app=web,tier=a,env notin (dev,prod),!canary,x,k in (v)")
    );
    assert_eq!(sel("{}").labels.to_query(), None);
}

#[test]
fn the_rank_is_pinned_so_every_version_and_node_picks_the_same_pods() {
    assert_eq!(rank(0, "to", "uid-a"), rank(0, "to", "uid-a"));
    assert_ne!(rank(0, "to", "uid-a"), rank(1, "to", "uid-a"));
    assert_ne!(rank(0, "to", "uid-a"), rank(0, "from", "uid-a"));
    // A change of this value changes which pods running faults hit after an upgrade.
    assert_eq!(
        rank(7, "to", "0b6f8a9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
        0xeff5_82e1_7b07_e1d8
    );
}

#[test]
fn modes_keep_one_a_fixed_count_or_a_rounded_up_share() {
    assert_eq!(keep(Mode::All, None, 7), 7);
    assert_eq!(keep(Mode::One, None, 7), 1);
    assert_eq!(keep(Mode::One, None, 0), 0);
    assert_eq!(keep(Mode::Fixed, Some(3), 7), 3);
    assert_eq!(keep(Mode::Fixed, Some(30), 7), 7);
    assert_eq!(keep(Mode::Percent, Some(30), 7), 3);
    assert_eq!(keep(Mode::Percent, Some(1), 7), 1);
    assert_eq!(keep(Mode::Percent, Some(100), 7), 7);
}

#[test]
fn every_node_picks_the_same_pods_in_any_order_and_churn_moves_only_the_churned() {
    let t = Target {
        mode: Mode::Fixed,
        value: Some(3),
        ..Target::default()
    };
    let uids: Vec<String> = (0..20).map(|i| format!("uid-{i}")).collect();
    let pick = |v: Vec<String>| {
        let mut p = blast(&t, 7, "to", v, Clone::clone);
        p.sort();
        p
    };
    let node1 = pick(uids.clone());
    let node2 = pick(uids.iter().rev().cloned().collect());
    assert_eq!(node1, node2);
    assert_eq!(node1.len(), 3);
    // A pod that is not chosen leaves: the choice stays.
    let gone: Vec<String> = uids
        .iter()
        .filter(|u| !node1.contains(u))
        .skip(2)
        .cloned()
        .collect();
    let fewer: Vec<String> = uids.iter().filter(|u| **u != gone[0]).cloned().collect();
    assert_eq!(pick(fewer), node1);
    // A chosen pod leaves: the other two stay chosen.
    let without: Vec<String> = uids.iter().filter(|u| **u != node1[0]).cloned().collect();
    let after = pick(without);
    assert!(after.contains(&node1[1]) && after.contains(&node1[2]) && !after.contains(&node1[0]));
    // Other seeds choose other pods (the spread is not always the same three).
    let others: std::collections::BTreeSet<Vec<String>> = (0..8)
        .map(|s| {
            let mut p = blast(&t, s, "to", uids.clone(), Clone::clone);
            p.sort();
            p
        })
        .collect();
    assert!(others.len() > 4, "{others:?}");
}

#[test]
fn watches_cover_what_the_fault_selects_and_nothing_else() {
    let nf = fault(
        "shop",
        "f",
        "{from: {pods: {matchLabels: {app: web}, namespaceSelector: {matchLabels: {team: x}}}},
          to: {service: {name: db, namespace: data}}, blackhole: true}",
    );
    let nss = vec![
        namespace("shop", &[("team", "x")]),
        namespace("shop2", &[("team", "x")]),
    ];
    let w = |kind, ns: Option<&str>, labels: Option<&str>, fields: Option<&str>| Watch {
        kind,
        namespace: ns.map(String::from),
        labels: labels.map(String::from),
        fields: fields.map(String::from),
    };
    assert_eq!(
        nf.watches(&nss),
        vec![
            w(WatchKind::Pod, Some("shop"), Some("app=web"), None),
            w(WatchKind::Pod, Some("shop2"), Some("app=web"), None),
            w(WatchKind::Namespace, None, Some("team=x"), None),
            w(
                WatchKind::Service,
                Some("data"),
                None,
                Some("metadata.name=db")
            ),
            w(
                WatchKind::EndpointSlice,
                Some("data"),
                Some("kubernetes.io/service-name=db"),
                None
            ),
        ]
    );
    let cidrs = fault("shop", "g", "{to: {cidrs: [10.0.0.0/8]}, blackhole: true}");
    assert_eq!(cidrs.watches(&[]), vec![]);
    let own = fault("shop", "h", "{to: {pods: {}}, blackhole: true}");
    assert_eq!(
        own.watches(&[]),
        vec![w(WatchKind::Pod, Some("shop"), None, None)]
    );
}
