//! Which pods a NetworkFault selects: label selectors (matched here, and as the strings the
//! daemon watches with), namespaces, the blast radius by a seeded hash of pod UIDs, and the watches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::resource::{LabelSelector, Mode, NetworkFault, Operator, PodSelector, Target};

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl LabelSelector {
    /// Whether `labels` satisfy every `matchLabels` pair and every expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let v = labels.get(&r.key);
                match r.operator {
                    Operator::In => v.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => v.is_some(),
                    Operator::DoesNotExist => v.is_none(),
                }
            })
    }

    /// The selector in the API server's syntax (`app=web,tier in (a,b),!canary`); `None` when it
    /// selects everything.
    pub fn to_query(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            let mut values = r.values.clone();
            values.sort();
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

fn labels_of(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

impl PodSelector {
    /// The namespaces it reaches: `namespaces`, those `namespaceSelector` matches, or `own`.
    pub fn namespaces_in(&self, own: &str, all: &[Namespace]) -> Vec<String> {
        let mut v = match &self.namespace_selector {
            Some(sel) => all
                .iter()
                .filter(|n| sel.matches(&labels_of(&n.metadata)))
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
            None if self.namespaces.is_empty() => vec![own.to_string()],
            None => self.namespaces.clone(),
        };
        v.sort();
        v.dedup();
        v
    }
}

/// Whether a pod takes part: it has an address, it has not finished, and it is not on the
/// host's network (its address is the node's: never a fault's target).
pub fn live(p: &Pod) -> bool {
    let (Some(spec), Some(status)) = (&p.spec, &p.status) else {
        return false;
    };
    let done = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    !done && spec.host_network != Some(true) && !pod_ips(p).is_empty()
}

/// A pod's addresses (`status.podIPs`, else `status.podIP`), IPv4 and IPv6.
pub fn pod_ips(p: &Pod) -> Vec<String> {
    let Some(s) = &p.status else {
        return vec![];
    };
    let mut v: Vec<String> = s
        .pod_ips
        .iter()
        .flatten()
        .map(|i| i.ip.clone())
        .chain(s.pod_ip.clone())
        .filter(|i| !i.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The live pods `sel` selects among `pods`, given the resource's namespace.
pub fn select_pods<'a>(
    sel: &PodSelector,
    own_ns: &str,
    pods: &'a [Pod],
    namespaces: &[Namespace],
) -> Vec<&'a Pod> {
    let in_ns = sel.namespaces_in(own_ns, namespaces);
    pods.iter()
        .filter(|p| {
            p.metadata
                .namespace
                .as_ref()
                .is_some_and(|n| in_ns.binary_search(n).is_ok())
        })
        .filter(|p| sel.labels.matches(&labels_of(&p.metadata)))
        .filter(|p| live(p))
        .collect()
}

/// The rank of a pod UID for a side (`from`/`to`) and seed: FNV-1a 64 of `seed (LE) | side | 0 |
/// uid`, finished by splitmix64. Stable across versions and nodes: every daemon ranks the same.
pub fn rank(seed: u32, side: &str, uid: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = seed
        .to_le_bytes()
        .into_iter()
        .chain(side.bytes())
        .chain([0])
        .chain(uid.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// How many of `n` candidates a mode keeps: all, one, `value`, or `value`% rounded up.
pub fn keep(mode: Mode, value: Option<u32>, n: usize) -> usize {
    let v = value.unwrap_or(1) as usize;
    match mode {
        Mode::All => n,
        Mode::One => n.min(1),
        Mode::Fixed => n.min(v),
        Mode::Percent => (n * v.min(100)).div_ceil(100),
    }
}

/// The blast radius: the candidates (identified by `uid`) with the lowest ranks, as many as the
/// mode keeps, in rank order. A pod that comes or goes moves only itself in or out (unless it
/// changes the count), so the choice is stable while pods churn.
pub fn blast<T>(
    t: &Target,
    seed: u32,
    side: &str,
    mut v: Vec<T>,
    uid: impl Fn(&T) -> String,
) -> Vec<T> {
    if t.mode.is_all() {
        return v;
    }
    let k = keep(t.mode, t.value, v.len());
    v.sort_by_cached_key(|x| {
        let u = uid(x);
        (rank(seed, side, &u), u)
    });
    v.truncate(k);
    v
}

/// What a daemon watches for a fault: a kind, a namespace (None: all) and selectors. The set
/// over all faults is what the daemon keeps watches on; nothing watches every pod unless a fault
/// selects every pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watch {
    pub kind: WatchKind,
    pub namespace: Option<String>,
    /// For `ListParams::labels` / `watcher::Config::labels`.
    pub labels: Option<String>,
    /// For `ListParams::fields` / `watcher::Config::fields`.
    pub fields: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WatchKind {
    Pod,
    Namespace,
    Service,
    EndpointSlice,
}

impl NetworkFault {
    /// The watches that see every object this fault's resolution reads: pods per selected
    /// namespace by the pod selector, namespaces by the namespace selector, a Service by name and
    /// its EndpointSlices by label. `namespaces` are the ones the namespace watches returned
    /// (empty when the fault has no namespaceSelector); their change changes the pod watches.
    pub fn watches(&self, namespaces: &[Namespace]) -> Vec<Watch> {
        let own = self.metadata.namespace.clone().unwrap_or_default();
        let mut out = vec![];
        for t in [&self.spec.from, &self.spec.to].into_iter().flatten() {
            if let Some(p) = &t.pods {
                if let Some(ns) = &p.namespace_selector {
                    out.push(Watch {
                        kind: WatchKind::Namespace,
                        namespace: None,
                        labels: ns.to_query(),
                        fields: None,
                    });
                }
                for ns in p.namespaces_in(&own, namespaces) {
                    out.push(Watch {
                        kind: WatchKind::Pod,
                        namespace: Some(ns),
                        labels: p.labels.to_query(),
                        fields: None,
                    });
                }
            }
            if let Some(s) = &t.service {
                let ns = s.namespace.clone().unwrap_or_else(|| own.clone());
                out.push(Watch {
                    kind: WatchKind::Service,
                    namespace: Some(ns.clone()),
                    labels: None,
                    fields: Some(format!("metadata.name={}", s.name)),
                });
                out.push(Watch {
                    kind: WatchKind::EndpointSlice,
                    namespace: Some(ns),
                    labels: Some(format!("{SERVICE_NAME_LABEL}={}", s.name)),
                    fields: None,
                });
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
