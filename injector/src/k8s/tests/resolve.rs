//! Resolution: pod IPs (IPv4 and IPv6), Service endpoints on target ports, CIDRs, any; one
//! deadline from creationTimestamp; names; an empty selection installs nothing; the status.

use crate::fault::spec::FaultSpec;
use crate::k8s::fixture::{at, fault, namespace, pod, service, slice};
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

fn db_world() -> (
    Vec<k8s_openapi::api::core::v1::Service>,
    Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
) {
    let svc = vec![
        service(
            "shop",
            "db",
            &[
                ("postgres", 5432, 15432, "TCP"),
                ("metrics", 9100, 19100, "TCP"),
                ("dns", 53, 1053, "UDP"),
            ],
        ),
        service("other", "db", &[("postgres", 5432, 5432, "TCP")]),
    ];
    let slices = vec![
        slice(
            "shop",
            "db",
            "IPv4",
            &[
                ("postgres", 15432, "TCP"),
                ("metrics", 19100, "TCP"),
                ("dns", 1053, "UDP"),
            ],
            &[
                ("10.42.1.3", "db1", true),
                ("10.42.2.3", "db2", true),
                ("10.42.2.9", "db3", false),
            ],
        ),
        slice(
            "shop",
            "db",
            "IPv6",
            &[("postgres", 15432, "TCP")],
            &[("fd00:42:2::3", "db2", true)],
        ),
        slice(
            "other",
            "db",
            "IPv4",
            &[("postgres", 5432, "TCP")],
            &[("10.42.9.9", "x", true)],
        ),
    ];
    (svc, slices)
}

#[test]
fn a_service_is_its_ready_endpoints_on_the_target_ports_of_the_named_service_ports() {
    let (svc, slices) = db_world();
    let world = World {
        services: &svc,
        endpoint_slices: &slices,
        ..World::default()
    };
    let to = |spec: &str| {
        resolve(&fault("shop", "f", spec), &world, at(0))
            .map(|r| {
                r.faults
                    .iter()
                    .map(|f| {
                        (
                            f.name.clone(),
                            f.proto.clone(),
                            f.to.clone(),
                            f.dport.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let tcp = Some("tcp".to_string());
    // By name and by service port number: the target port, on every ready endpoint, both families.
    let want = vec![(
        "shop.f".to_string(),
        tcp.clone(),
        s(&["10.42.1.3", "10.42.2.3", "fd00:42:2::3"]),
        s(&["15432"]),
    )];
    assert_eq!(
        to("{to: {service: {name: db}, ports: [postgres]}, blackhole: true}"),
        Ok(want.clone())
    );
    assert_eq!(
        to("{to: {service: {name: db}, ports: ['5432']}, blackhole: true}"),
        Ok(want)
    );
    // Every port by default, a fault per protocol (and per port set), named in order.
    assert_eq!(
        to("{to: {service: {name: db}}, blackhole: true}"),
        Ok(vec![
            (
                "shop.f".into(),
                tcp.clone(),
                s(&["fd00:42:2::3"]),
                s(&["15432"])
            ),
            (
                "shop.f_1".into(),
                tcp.clone(),
                s(&["10.42.1.3", "10.42.2.3"]),
                s(&["15432", "19100"])
            ),
            (
                "shop.f_2".into(),
                Some("udp".into()),
                s(&["10.42.1.3", "10.42.2.3"]),
                s(&["1053"])
            ),
        ])
    );
    assert_eq!(
        to("{to: {service: {name: db}}, proto: udp, blackhole: true}")
            .unwrap()
            .len(),
        1
    );
    // ICMP to a Service: its endpoints, no ports.
    assert_eq!(
        to("{to: {service: {name: db}}, proto: icmp, blackhole: true}"),
        Ok(vec![(
            "shop.f".into(),
            Some("icmp".into()),
            s(&["10.42.1.3", "10.42.2.3", "fd00:42:2::3"]),
            vec![]
        )])
    );
    assert_eq!(
        to("{to: {service: {name: db, namespace: other}}, blackhole: true}").unwrap()[0].2,
        s(&["10.42.9.9"])
    );
    assert_eq!(
        to("{to: {service: {name: db}, ports: [http]}, blackhole: true}"),
        Err("spec.to.ports: 'http': Service shop/db has no such port; it has 5432 (postgres), 9100 (metrics), 53 (dns)".into())
    );
    assert_eq!(
        to("{to: {service: {name: db}, ports: [dns]}, proto: tcp, blackhole: true}"),
        Err("spec.proto: Service shop/db has no tcp port among 5432 (postgres), 9100 (metrics), 53 (dns); name one of them or set proto".into())
    );
    // Not there yet: nothing.
    assert_eq!(
        to("{to: {service: {name: nope}}, blackhole: true}"),
        Ok(vec![])
    );
}

#[test]
fn mode_applies_to_a_service_s_endpoint_pods_too() {
    let (svc, slices) = db_world();
    let world = World {
        services: &svc,
        endpoint_slices: &slices,
        ..World::default()
    };
    let nf = fault(
        "shop",
        "f",
        "{to: {service: {name: db}, ports: [postgres], mode: one}, blackhole: true, seed: 3}",
    );
    let r = resolve(&nf, &world, at(0)).unwrap();
    assert_eq!(r.selected.len(), 1);
    let f = &r.faults[0];
    // db2 has two addresses: chosen, both are in; else db1's one.
    let want: &[&str] = if r.selected[0] == "shop/db2" {
        &["10.42.2.3", "fd00:42:2::3"]
    } else {
        &["10.42.1.3"]
    };
    let all: Vec<&String> = r.faults.iter().flat_map(|f| &f.to).collect();
    assert_eq!(all, want.iter().collect::<Vec<_>>(), "{f:?}");
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
