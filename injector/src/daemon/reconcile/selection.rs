//! The watches of what the faults select (pods by label per namespace, namespaces, Services and
//! their EndpointSlices), started as faults come and stopped [`LINGER`] after the last one that
//! needed them went, and the World they make.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};

use super::watched::{Pace, Poke, Watched};
use crate::k8s::{Watch, WatchKind};

/// The Services every fault leaves alone (and their endpoints): the API server and cluster DNS.
pub const GUARDED: [(&str, &str, &str); 2] = [
    ("default", "kubernetes", "the API server"),
    ("kube-system", "kube-dns", "cluster DNS"),
];

enum Sel {
    Pod(Watched<Pod>),
    Namespace(Watched<Namespace>),
    Service(Watched<Service>),
    Slice(Watched<DynamicObject>),
}

impl Sel {
    fn ready(&self) -> bool {
        match self {
            Sel::Pod(w) => w.ready(),
            Sel::Namespace(w) => w.ready(),
            Sel::Service(w) => w.ready(),
            Sel::Slice(w) => w.ready(),
        }
    }
}

/// The objects the resolution reads, owned (a [`crate::k8s::World`] borrows them).
#[derive(Default)]
pub struct Objects {
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

impl Objects {
    pub fn world(&self) -> crate::k8s::World<'_> {
        crate::k8s::World {
            pods: &self.pods,
            namespaces: &self.namespaces,
            services: &self.services,
            endpoint_slices: &self.endpoint_slices,
        }
    }
}

/// How long a watch no fault needs any more is kept running. A NetworkFault whose selectors are
/// watched already is installed from the local stores within milliseconds of its event; one with
/// new selectors waits for their list first (one round trip on the daemon's HTTP/2 connection,
/// from the watch cache: 4-18 ms on the lab's loaded API server, logged at debug as "listed").
/// The next fault on the same pods is the common case: a ramp's next step, an experiment run
/// again, a fault deleted and made anew. Bounded: one watch per selector used in the last
/// [`LINGER`].
pub const LINGER: Duration = Duration::from_secs(600);

/// Whether a watch stays: wanted now, or unwanted for less than [`LINGER`] (`unused_since` is
/// when it stopped being wanted; reset when it is wanted again).
fn stays(unused_since: &mut Option<Instant>, wanted: bool, now: Instant) -> bool {
    if wanted {
        *unused_since = None;
        return true;
    }
    now.duration_since(*unused_since.get_or_insert(now)) < LINGER
}

struct Kept {
    sel: Sel,
    /// Since when no fault needs it.
    unused_since: Option<Instant>,
}

pub struct Selection {
    client: Client,
    poke: Arc<Poke>,
    /// EndpointSlices as the API server serves them: discovery.k8s.io/v1, or v1beta1 (1.20).
    slices: ApiResource,
    watches: BTreeMap<Watch, Kept>,
}

/// The watches that keep the guarded Services and their endpoints in view.
pub fn guard_watches() -> Vec<Watch> {
    GUARDED
        .iter()
        .flat_map(|(ns, name, _)| {
            [
                Watch {
                    kind: WatchKind::Service,
                    namespace: Some(ns.to_string()),
                    labels: None,
                    fields: Some(format!("metadata.name={name}")),
                },
                Watch {
                    kind: WatchKind::EndpointSlice,
                    namespace: Some(ns.to_string()),
                    labels: Some(format!("{}={name}", crate::k8s::select::SERVICE_NAME_LABEL)),
                    fields: None,
                },
            ]
        })
        .collect()
}

impl Selection {
    pub fn new(client: Client, poke: Arc<Poke>, slices: ApiResource) -> Self {
        Selection {
            client,
            poke,
            slices,
            watches: BTreeMap::new(),
        }
    }

    /// The EndpointSlice version the API server serves: v1 from Kubernetes 1.21, else v1beta1.
    pub async fn slice_resource(client: &Client) -> kube::Result<ApiResource> {
        let v1 = client
            .list_api_group_resources("discovery.k8s.io/v1")
            .await
            .map(|l| l.resources.iter().any(|r| r.name == "endpointslices"));
        let version = if matches!(v1, Ok(true)) {
            "v1"
        } else {
            // Tells an unreachable server from a missing version.
            client.apiserver_version().await?;
            "v1beta1"
        };
        let gvk = GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice");
        Ok(ApiResource::from_gvk_with_plural(&gvk, "endpointslices"))
    }

    /// Runs the watches `want` names: new ones started; ones no longer named kept for
    /// [`LINGER`], then stopped.
    pub fn set(&mut self, want: &BTreeSet<Watch>) {
        let now = Instant::now();
        self.watches
            .retain(|w, k| stays(&mut k.unused_since, want.contains(w), now));
        for w in want {
            if !self.watches.contains_key(w) {
                let sel = self.start(w);
                self.watches.insert(
                    w.clone(),
                    Kept {
                        sel,
                        unused_since: None,
                    },
                );
            }
        }
    }

    fn start(&self, w: &Watch) -> Sel {
        // Lists from the API server's watch cache (resourceVersion=0), as client-go's informers
        // list pods and EndpointSlices for kube-proxy and the CNIs: a consistent list reads
        // etcd (1.26 ms a list against 0.40 ms from the cache, server-side, on the lab's API
        // server, by its request metrics); the watch that follows brings any later change. A
        // relist after an outage may briefly hold an older view, as theirs does. The
        // NetworkFault and InjectorControl watches keep consistent lists: a deleted fault or an
        // abort must never come back.
        let mut cfg = watcher::Config::default().any_semantic();
        if let Some(l) = &w.labels {
            cfg = cfg.labels(l);
        }
        if let Some(f) = &w.fields {
            cfg = cfg.fields(f);
        }
        let c = self.client.clone();
        let ns = w.namespace.as_deref();
        let poke = self.poke.clone();
        match w.kind {
            WatchKind::Pod => Sel::Pod(Watched::start(api(c, ns), cfg, poke, Pace::Batched)),
            WatchKind::Namespace => {
                Sel::Namespace(Watched::start(Api::all(c), cfg, poke, Pace::Batched))
            }
            WatchKind::Service => {
                Sel::Service(Watched::start(api(c, ns), cfg, poke, Pace::Batched))
            }
            WatchKind::EndpointSlice => {
                let a = match ns {
                    Some(ns) => Api::namespaced_with(c, ns, &self.slices),
                    None => Api::all_with(c, &self.slices),
                };
                Sel::Slice(Watched::start_with(
                    a,
                    cfg,
                    poke,
                    Pace::Batched,
                    self.slices.clone(),
                ))
            }
        }
    }

    /// Whether every one of `ws` has listed its objects at least once.
    pub fn ready(&self, ws: &[Watch]) -> bool {
        ws.iter()
            .all(|w| self.watches.get(w).is_some_and(|k| k.sel.ready()))
    }

    /// The namespaces the namespace watches hold (for the faults' namespaceSelectors).
    pub fn namespaces(&self) -> Vec<Namespace> {
        let mut out: BTreeMap<String, Namespace> = BTreeMap::new();
        for k in self.watches.values() {
            if let Sel::Namespace(w) = &k.sel {
                out.extend(w.objects().into_iter().map(|n| (n.name_any(), n)));
            }
        }
        out.into_values().collect()
    }

    /// Every object of every watch, each once.
    pub fn objects(&self) -> Objects {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
        let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
        for k in self.watches.values() {
            match &k.sel {
                Sel::Pod(w) => {
                    pods.extend(w.objects().into_iter().map(|p| (uid_or_name(&p), p)));
                }
                Sel::Service(w) => {
                    services.extend(w.objects().into_iter().map(|o| (key(&o), o)));
                }
                Sel::Slice(w) => {
                    slices.extend(
                        w.objects()
                            .into_iter()
                            .filter_map(|o| Some((key(&o), as_v1(o)?))),
                    );
                }
                Sel::Namespace(_) => {}
            }
        }
        Objects {
            pods: pods.into_values().collect(),
            namespaces: self.namespaces(),
            services: services.into_values().collect(),
            endpoint_slices: slices.into_values().collect(),
        }
    }
}

fn api<K>(c: Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(c, ns),
        None => Api::all(c),
    }
}

fn key<K: kube::Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

fn uid_or_name(p: &Pod) -> String {
    p.uid()
        .unwrap_or_else(|| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
}

/// An EndpointSlice of either served version as the v1 type: the fields the resolution reads
/// (addressType, endpoints' addresses, ready condition and targetRef, ports) are the same.
fn as_v1(o: DynamicObject) -> Option<EndpointSlice> {
    let mut v = serde_json::to_value(&o).ok()?;
    v["apiVersion"] = "discovery.k8s.io/v1".into();
    v["kind"] = "EndpointSlice".into();
    match serde_json::from_value(v) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(slice = %o.name_any(), error = %e, "unreadable EndpointSlice");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwanted_watch_lingers_then_goes_and_wanting_it_again_starts_over() {
        let t0 = Instant::now();
        let mut since = None;
        assert!(stays(&mut since, true, t0));
        assert_eq!(since, None);
        // No longer wanted: kept through LINGER, counted from the first time it was unwanted.
        assert!(stays(&mut since, false, t0));
        assert!(stays(&mut since, false, t0 + LINGER / 2));
        assert!(!stays(&mut since, false, t0 + LINGER));
        // Wanted again before the end: the clock starts over when it is next unwanted.
        let mut since = None;
        assert!(stays(&mut since, false, t0));
        assert!(stays(&mut since, true, t0 + LINGER / 2));
        assert!(stays(&mut since, false, t0 + LINGER));
        assert!(stays(&mut since, false, t0 + LINGER + LINGER / 2));
        assert!(!stays(&mut since, false, t0 + LINGER * 2));
    }
}
