//! Services: ready endpoints from EndpointSlices (both families) on the target ports of the
//! Service ports named or numbered, a fault per protocol and port set, mode over endpoint pods.

use crate::k8s::fixture::{at, fault, service, slice};
use crate::k8s::{World, resolve};

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
