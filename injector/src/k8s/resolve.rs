//! Turning a NetworkFault and the objects it selects (pods, namespaces, Services, EndpointSlices)
//! into node-level [`FaultSpec`]s: pure, so every node computes the same list from the same objects.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::fault::spec::{FaultSpec, FieldError, MAX_LIFETIME};

use super::resource::{NetworkFault, NetworkFaultSpec, Phase, Target};
use super::select::{blast, pod_ips, rank, select_pods};
use super::validate::{Side, fe};

/// The objects a resolution reads: what the daemon's watches (see [`NetworkFault::watches`])
/// hold. Objects outside what a fault selects are ignored, so one World can serve every fault.
#[derive(Clone, Copy, Debug, Default)]
pub struct World<'a> {
    pub pods: &'a [Pod],
    pub namespaces: &'a [Namespace],
    pub services: &'a [Service],
    pub endpoint_slices: &'a [EndpointSlice],
}

/// What a NetworkFault means on a node at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// Pending (nothing to install yet), Running or Ended.
    pub phase: Phase,
    /// The node-level faults, named [`fault_name`]; each `lifetime` runs to `deadline` from `now`
    /// (so compare two resolutions' faults without it). Empty when Pending or Ended.
    pub faults: Vec<FaultSpec>,
    /// Every selected pod as `namespace/name`, sorted (both sides, after `mode`).
    pub selected: Vec<String>,
    /// creationTimestamp: the start of the lifetime on every node.
    pub start: SystemTime,
    /// start + spec.duration.
    pub deadline: SystemTime,
}

/// The node-level fault name of part `part` of resource `namespace/name`: `namespace.name`, then
/// `namespace.name_1`, ... (`_` is in no Kubernetes name, so no two resources share one). Longer
/// than FaultSpec's 63 characters, the base is cut and a hash of the whole is added.
pub fn fault_name(namespace: &str, name: &str, part: usize) -> String {
    let base = format!("{namespace}.{name}");
    let suffix = if part == 0 {
        String::new()
    } else {
        format!("_{part}")
    };
    if base.len() + suffix.len() <= 63 {
        return base + &suffix;
    }
    let hash = rank(0, "name", &base) as u32;
    let keep = 63 - 9 - suffix.len();
    format!("{}_{hash:08x}{suffix}", &base[..keep])
}

/// The lifetime's start and end: creationTimestamp, set by the API server once, the same for
/// every node (a status field would need one writer before any node could act).
pub fn lifetime(nf: &NetworkFault) -> Result<(SystemTime, SystemTime), FieldError> {
    let start = nf
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(t.0))
        .ok_or_else(|| {
            fe(
                "metadata.creationTimestamp",
                "missing: resolve resources read from the API server, which sets it",
            )
        })?;
    let d = crate::parse::duration(
        "spec.duration",
        &nf.spec.duration,
        (Duration::from_millis(1), "1ms"),
        (MAX_LIFETIME, "24h"),
    )
    .map_err(|e| {
        fe(
            "spec.duration",
            e.to_string()
                .trim_start_matches("spec.duration: ")
                .to_string(),
        )
    })?;
    Ok((start, start + d))
}

/// Resolves `nf` against `world` at `now`: validates it, selects pods (labels, namespaces,
/// mode), maps Services to their endpoints and target ports, and builds the node-level faults.
/// Errors name `spec.<field>` with the value and the fix, as [`NetworkFaultSpec::validate`].
pub fn resolve(
    nf: &NetworkFault,
    world: &World,
    now: SystemTime,
) -> Result<Resolution, FieldError> {
    nf.spec.validate()?;
    let (start, deadline) = lifetime(nf)?;
    let ns = nf.metadata.namespace.clone().unwrap_or_default();
    let name = nf.metadata.name.clone().unwrap_or_default();
    let mut selected = BTreeSet::new();
    let cx = Cx {
        spec: &nf.spec,
        own_ns: &ns,
        world,
    };
    let from = cx.side("from", nf.spec.from.as_ref(), &mut selected)?;
    let to = cx.side("to", nf.spec.to.as_ref(), &mut selected)?;
    let selected: Vec<String> = selected.into_iter().collect();
    let left = deadline.duration_since(now).unwrap_or_default();
    let left_ms = left.as_millis();
    if left_ms == 0 {
        return Ok(Resolution {
            phase: Phase::Ended,
            faults: vec![],
            selected,
            start,
            deadline,
        });
    }
    let life = format!("{left_ms}ms");
    let mut faults = vec![];
    for f in &from {
        for t in &to {
            if !families_meet(&f.cidrs, &t.cidrs)
                || f.proto.is_some() && t.proto.is_some() && f.proto != t.proto
            {
                continue; // no packet can match this pair
            }
            let fault = nf
                .spec
                .node_fault(&fault_name(&ns, &name, faults.len()), f, t, &life);
            NetworkFaultSpec::judge(&fault)?;
            faults.push(fault);
        }
    }
    let phase = if faults.is_empty() {
        Phase::Pending
    } else {
        Phase::Running
    };
    Ok(Resolution {
        phase,
        faults,
        selected,
        start,
        deadline,
    })
}

/// Whether two address lists (empty: any) share a family.
fn families_meet(a: &[String], b: &[String]) -> bool {
    let fam = |l: &[String]| {
        (
            l.is_empty() || l.iter().any(|c| !c.contains(':')),
            l.is_empty() || l.iter().any(|c| c.contains(':')),
        )
    };
    let ((a4, a6), (b4, b6)) = (fam(a), fam(b));
    (a4 && b4) || (a6 && b6)
}

/// What resolving one side needs.
pub(super) struct Cx<'a> {
    pub spec: &'a NetworkFaultSpec,
    pub own_ns: &'a str,
    pub world: &'a World<'a>,
}

impl Cx<'_> {
    /// One side as node-level sides (several for a Service whose ports differ by protocol or
    /// slice; none when it selects nothing, which must not become "any").
    fn side(
        &self,
        at: &str,
        t: Option<&Target>,
        selected: &mut BTreeSet<String>,
    ) -> Result<Vec<Side>, FieldError> {
        let Some(t) = t else {
            return Ok(vec![Side::default()]);
        };
        if let Some(sel) = &t.pods {
            let w = self.world;
            let pods = select_pods(sel, self.own_ns, w.pods, w.namespaces);
            let pods = blast(t, self.spec.seed, at, pods, |p| {
                p.metadata.uid.clone().unwrap_or_default()
            });
            let mut cidrs: Vec<String> = pods.iter().flat_map(|p| pod_ips(p)).collect();
            cidrs.sort();
            cidrs.dedup();
            selected.extend(pods.iter().map(|p| {
                let m = &p.metadata;
                format!(
                    "{}/{}",
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default()
                )
            }));
            return Ok(if cidrs.is_empty() {
                vec![]
            } else {
                vec![Side {
                    cidrs,
                    ports: t.ports.clone(),
                    ..Side::default()
                }]
            });
        }
        if let Some(s) = &t.service {
            return self.service(at, t, s, selected);
        }
        Ok(vec![Side {
            cidrs: t.cidrs.clone().unwrap_or_default(),
            except: t.except.clone(),
            ports: t.ports.clone(),
            proto: None,
        }])
    }
}
