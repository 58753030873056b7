//! Resolution: pod IPs (IPv4 and IPv6), Service endpoints on target ports, CIDRs, any; one
//! deadline from creationTimestamp; names; an empty selection installs nothing; the status.

use crate::fault::spec::FaultSpec;
use crate::k8s::fixture::{at, fault, namespace, pod};
use crate::k8s::{Phase, World, fault_name, resolve};

fn pods() -> Vec<k8s_openapi::api::core::v1::Pod> {
    vec![
        pod("shop", "web1", &[("app", "web")], &["10.42.1.2"]),
        pod(
            "shop",
            "web2",
            &[("app", "web")],
            &["10.42.2.2", "fd00:42:2::2"],
        ),
        pod("shop", "db1", &[("app", "db")], &["10.42.1.3"]),
        pod("shop", "db2", &[("app", "db")], &["10.42.2.3"]),
    ]
}

#[test]
fn pods_to_pods_is_one_fault_from_their_addresses_until_the_one_deadline() {
    let nf = fault(
        "shop",
        "web-db",
        "{from: {pods: {matchLabels: {app: web}}}, to: {pods: {matchLabels: {app: db}}, ports: ['5432']},
          proto: tcp, loss: 10%, flows: 50%, seed: 7, bothWays: true, duration: 10m, dryRun: true}",
    );
    let pods = pods();
    let world = World {
        pods: &pods,
        ..World::default()
    };
    let r = resolve(&nf, &world, at(60)).unwrap();
    assert_eq!(r.phase, Phase::Running);
    assert_eq!(r.deadline, at(600));
    assert_eq!(
        r.faults,
        vec![FaultSpec {
            name: "shop.web-db".into(),
            from: vec![
                "10.42.1.2".into(),
                "10.42.2.2".into(),
                "fd00:42:2::2".into()
            ],
            to: vec!["10.42.1.3".into(), "10.42.2.3".into()],
            proto: Some("tcp".into()),
            dport: vec!["5432".into()],
            both_ways: true,
            loss: Some("10%".into()),
            flows: Some("50%".into()),
            seed: 7,
            lifetime: "540000ms".into(),
            dry_run: true,
            ..FaultSpec::default()
        }]
    );
    assert_eq!(
        r.selected,
        ["shop/db1", "shop/db2", "shop/web1", "shop/web2"]
    );
    // Later, and on another node: the same deadline, less lifetime.
    assert_eq!(
        resolve(&nf, &world, at(599)).unwrap().faults[0].lifetime,
        "1000ms"
    );
    let ended = resolve(&nf, &world, at(600)).unwrap();
    assert_eq!((ended.phase, ended.faults.len()), (Phase::Ended, 0));
}

#[test]
fn selecting_no_pod_installs_nothing_never_any() {
    let nf = fault(
        "shop",
        "f",
        "{to: {pods: {matchLabels: {app: nothing}}}, blackhole: true}",
    );
    let pods = pods();
    let r = resolve(
        &nf,
        &World {
            pods: &pods,
            ..World::default()
        },
        at(1),
    )
    .unwrap();
    assert_eq!(
        (r.phase, r.faults.len(), r.selected.len()),
        (Phase::Pending, 0, 0)
    );
    // From pods that have no address yet, to anything: still nothing.
    let unscheduled = vec![pod("shop", "new", &[("app", "web")], &[])];
    let nf = fault(
        "shop",
        "g",
        "{from: {pods: {matchLabels: {app: web}}}, blackhole: true}",
    );
    let r = resolve(
        &nf,
        &World {
            pods: &unscheduled,
            ..World::default()
        },
        at(1),
    )
    .unwrap();
    assert_eq!(r.faults, vec![]);
}

#[test]
fn cidrs_except_and_any_pass_through_and_families_that_cannot_meet_are_skipped() {
    let nf = fault(
        "shop",
        "f",
        "{from: {any: true, except: [10.42.1.0/24]}, to: {cidrs: [10.43.0.0/16, 'fd00:43::/64'], except: [10.43.0.1]}, blackhole: true}",
    );
    let r = resolve(&nf, &World::default(), at(0)).unwrap();
    let f = &r.faults[0];
    assert_eq!(
        (f.from.clone(), f.from_except.clone()),
        (vec![], vec!["10.42.1.0/24".to_string()])
    );
    assert_eq!(f.to, ["10.43.0.0/16", "fd00:43::/64"]);
    assert_eq!(f.to_except, ["10.43.0.1"]);
    // IPv6-only pods towards an IPv4 CIDR: no fault (no packet could match), not an error.
    let v6 = vec![pod("shop", "a", &[("app", "a")], &["fd00::5"])];
    let nf = fault(
        "shop",
        "g",
        "{from: {pods: {matchLabels: {app: a}}}, to: {cidrs: [10.0.0.0/8]}, blackhole: true}",
    );
    let r = resolve(
        &nf,
        &World {
            pods: &v6,
            ..World::default()
        },
        at(0),
    )
    .unwrap();
    assert_eq!((r.phase, r.faults.len()), (Phase::Pending, 0));
}

#[test]
fn mode_fixed_one_picks_the_same_pod_on_every_node() {
    let nf = fault(
        "shop",
        "f",
        "{from: {pods: {matchLabels: {app: web}}}, to: {pods: {matchLabels: {app: db}}, mode: fixed, value: 1}, loss: 10%}",
    );
    let mut pods = pods();
    let node1 = resolve(
        &nf,
        &World {
            pods: &pods,
            ..World::default()
        },
        at(0),
    )
    .unwrap();
    pods.reverse();
    let node2 = resolve(
        &nf,
        &World {
            pods: &pods,
            ..World::default()
        },
        at(0),
    )
    .unwrap();
    assert_eq!(node1.faults, node2.faults);
    assert_eq!(node1.faults[0].to.len(), 1);
    assert_eq!(node1.selected.len(), 3);
}

#[test]
fn namespaces_by_selector_and_names_resolve_across_namespaces() {
    let pods = vec![
        pod("a", "p", &[("app", "x")], &["10.0.1.1"]),
        pod("b", "p", &[("app", "x")], &["10.0.2.1"]),
        pod("c", "p", &[("app", "x")], &["10.0.3.1"]),
    ];
    let nss = vec![
        namespace("a", &[("env", "t")]),
        namespace("b", &[("env", "t")]),
        namespace("c", &[]),
    ];
    let world = World {
        pods: &pods,
        namespaces: &nss,
        ..World::default()
    };
    let to = |s: &str| {
        resolve(&fault("a", "f", s), &world, at(0)).unwrap().faults[0]
            .to
            .clone()
    };
    assert_eq!(
        to("{to: {pods: {namespaceSelector: {matchLabels: {env: t}}}}, blackhole: true}"),
        ["10.0.1.1", "10.0.2.1"]
    );
    assert_eq!(
        to("{to: {pods: {namespaces: [c]}}, blackhole: true}"),
        ["10.0.3.1"]
    );
    assert_eq!(to("{to: {pods: {}}, blackhole: true}"), ["10.0.1.1"]);
}

#[test]
fn names_are_deterministic_valid_and_hashed_when_long() {
    assert_eq!(fault_name("shop", "db", 0), "shop.db");
    assert_eq!(fault_name("shop", "db", 2), "shop.db_2");
    let long = "x".repeat(60);
    let (a, b) = (fault_name("shop", &long, 0), fault_name("shop", &long, 11));
    assert_eq!((a.len(), b.len()), (63, 63));
    assert_eq!(&a[..54], &format!("shop.{long}")[..54]);
    assert_ne!(
        fault_name("shop", &format!("{long}a"), 0),
        fault_name("shop", &format!("{long}b"), 0)
    );
    for n in [a, b] {
        let f = FaultSpec {
            name: n.clone(),
            blackhole: true,
            lifetime: "1m".into(),
            ..FaultSpec::default()
        };
        assert!(f.validate("").is_ok(), "{n}");
    }
}

#[test]
fn the_status_says_phase_selection_lifetime_and_the_refused_field() {
    let many: Vec<_> = (0..30)
        .map(|i| {
            pod(
                "shop",
                &format!("p{i:02}"),
                &[("app", "web")],
                &[&format!("10.42.1.{i}")],
            )
        })
        .collect();
    let nf = fault(
        "shop",
        "f",
        "{to: {pods: {matchLabels: {app: web}}}, loss: 5%, duration: 1m}",
    );
    let world = World {
        pods: &many,
        ..World::default()
    };
    let st = nf.status_for(&resolve(&nf, &world, at(5)), false, at(5));
    assert_eq!(st.phase, Some(Phase::Running));
    assert_eq!(st.start_time.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(st.deadline.as_deref(), Some("2026-01-01T00:01:00Z"));
    let sel = st.selected.clone().unwrap();
    assert_eq!(
        (sel.count, sel.pods.len(), sel.pods[0].as_str()),
        (30, 20, "shop/p00")
    );
    assert_eq!(st.conditions[1].reason, "Installed");
    // Written again later by another node: the same transition time.
    let mut nf2 = nf.clone();
    nf2.status = Some(st.clone());
    let again = nf2.status_for(&resolve(&nf2, &world, at(9)), false, at(9));
    assert_eq!(again, st);
    assert_eq!(
        nf.status_for(&resolve(&nf, &world, at(5)), true, at(5))
            .phase,
        Some(Phase::Aborted)
    );
    let bad = fault("shop", "f", "{to: {any: true}, delay: 10ms, jitter: 20ms}");
    let st = bad.status_for(&resolve(&bad, &world, at(5)), false, at(5));
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(st.conditions[0].type_, "Valid");
    assert_eq!(st.conditions[0].status, "False");
    assert_eq!(
        st.conditions[0].message,
        "spec.jitter: '20ms' must be between 0s and the delay"
    );
}
