//! A Service as a fault's side: its ready endpoints (EndpointSlices) on the target ports of the
//! Service ports named, grouped by protocol and port set; `mode` picks among endpoint pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;

use crate::fault::spec::FieldError;

use super::resolve::Cx;
use super::resource::{ServiceRef, Target};
use super::select::{SERVICE_NAME_LABEL, blast};
use super::validate::{Side, fe};

impl Cx<'_> {
    pub(super) fn service(
        &self,
        at: &str,
        t: &Target,
        s: &ServiceRef,
        selected: &mut BTreeSet<String>,
    ) -> Result<Vec<Side>, FieldError> {
        let ns = s.namespace.as_deref().unwrap_or(self.own_ns);
        let Some(svc) = self.world.services.iter().find(|v| {
            v.metadata.namespace.as_deref() == Some(ns)
                && v.metadata.name.as_deref() == Some(&s.name)
        }) else {
            return Ok(vec![]); // not there (yet): nothing selected
        };
        let wanted = self.service_ports(at, t, ns, svc)?;
        let portless = matches!(self.spec.proto.as_deref(), Some("icmp" | "icmpv6" | "any"));
        // Endpoints by pod (UID, or address without a targetRef): addresses and port groups.
        let mut eps: BTreeMap<String, Endpoint> = BTreeMap::new();
        for sl in self.world.endpoint_slices.iter().filter(|sl| {
            sl.metadata.namespace.as_deref() == Some(ns)
                && sl
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    == Some(&s.name)
                && sl.address_type != "FQDN"
        }) {
            let mut group: Vec<(String, String)> = sl
                .ports
                .iter()
                .flatten()
                .filter(|p| {
                    wanted.contains(&(
                        p.name.clone().unwrap_or_default(),
                        proto_of(p.protocol.as_deref()),
                    ))
                })
                .filter_map(|p| Some((proto_of(p.protocol.as_deref()), p.port?.to_string())))
                .collect();
            if portless {
                group.clear();
            } else if group.is_empty() {
                continue;
            }
            for e in sl
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            {
                let r = e.target_ref.as_ref();
                let key = r
                    .and_then(|r| r.uid.clone())
                    .unwrap_or_else(|| e.addresses.join(","));
                let ep = eps.entry(key).or_default();
                if let Some(r) = r.filter(|r| r.kind.as_deref() == Some("Pod")) {
                    ep.pod = Some(format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or(ns),
                        r.name.as_deref().unwrap_or_default()
                    ));
                }
                for a in &e.addresses {
                    ep.groups
                        .entry(group.clone())
                        .or_default()
                        .insert(a.clone());
                }
            }
        }
        let eps = blast(
            t,
            self.spec.seed,
            at,
            eps.into_iter().collect(),
            |(k, _)| k.clone(),
        );
        // One node-level side per (protocol, ports) group, over every endpoint in it.
        let mut sides: BTreeMap<(Option<String>, Vec<String>), BTreeSet<String>> = BTreeMap::new();
        for (_, ep) in eps {
            selected.extend(ep.pod);
            for (group, addrs) in ep.groups {
                let mut by_proto: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
                if group.is_empty() {
                    by_proto.insert(None, vec![]);
                }
                for (proto, port) in group {
                    by_proto.entry(Some(proto)).or_default().push(port);
                }
                for (proto, ports) in by_proto {
                    sides
                        .entry((proto, ports))
                        .or_default()
                        .extend(addrs.iter().cloned());
                }
            }
        }
        Ok(sides
            .into_iter()
            .map(|((proto, ports), addrs)| Side {
                cidrs: addrs.into_iter().collect(),
                except: vec![],
                ports,
                proto,
            })
            .collect())
    }

    /// The (service port name, protocol) pairs `t.ports` names (all the Service's by default),
    /// narrowed to `spec.proto`; EndpointSlices carry these names with the target ports.
    fn service_ports(
        &self,
        at: &str,
        t: &Target,
        ns: &str,
        svc: &Service,
    ) -> Result<BTreeSet<(String, String)>, FieldError> {
        let ports: Vec<_> = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .collect();
        let has = || {
            ports
                .iter()
                .map(|p| match &p.name {
                    Some(n) if !n.is_empty() => format!("{} ({n})", p.port),
                    _ => p.port.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let name = &t
            .service
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut wanted = BTreeSet::new();
        for w in &t.ports {
            let found: Vec<_> = ports
                .iter()
                .filter(|p| p.name.as_deref() == Some(w.as_str()) || p.port.to_string() == *w)
                .collect();
            if found.is_empty() {
                return Err(fe(
                    format!("spec.{at}.ports"),
                    format!(
                        "'{w}': Service {ns}/{name} has no such port; it has {}",
                        has()
                    ),
                ));
            }
            wanted.extend(found.iter().map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    proto_of(p.protocol.as_deref()),
                )
            }));
        }
        if t.ports.is_empty() {
            wanted.extend(ports.iter().map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    proto_of(p.protocol.as_deref()),
                )
            }));
        }
        // Faults match tcp and udp ports only (an SCTP port is left alone).
        let (want, usable): (&str, &[&str]) = match self.spec.proto.as_deref() {
            Some("tcp") => ("tcp", &["tcp"]),
            Some("udp") => ("udp", &["udp"]),
            _ => ("tcp or udp", &["tcp", "udp"]),
        };
        wanted.retain(|(_, p)| usable.contains(&p.as_str()));
        if wanted.is_empty() && !ports.is_empty() {
            return Err(fe(
                "spec.proto",
                format!(
                    "Service {ns}/{name} has no {want} port among {}; name one of them or set proto",
                    has()
                ),
            ));
        }
        Ok(wanted)
    }
}

/// A Service endpoint: its pod and its addresses per port group.
#[derive(Default)]
struct Endpoint {
    pod: Option<String>,
    groups: BTreeMap<Vec<(String, String)>, BTreeSet<String>>,
}

/// A Kubernetes protocol (`TCP`, default) as FaultSpec writes it (`tcp`).
fn proto_of(p: Option<&str>) -> String {
    p.unwrap_or("TCP").to_ascii_lowercase()
}
