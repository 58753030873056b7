//! The daemon's Kubernetes side (`--node-name`): watches NetworkFaults, what they select and the
//! cluster-wide control object, resolves them (the pure `k8s::resolve`) and makes the node's
//! fault set match through the same transactions as the API; protects the API server and DNS.
//!
//! Nothing here is needed for a fault to end: every part carries its kernel deadline (from the
//! resource's creationTimestamp), so with the API server gone faults run on and end on time.

mod handover;
mod lease;
mod report;
mod selection;
mod watched;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use injector_common::ctrl;
use kube::{
    Api, Client, ResourceExt as _,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};
use tracing::{info, warn};

pub use self::handover::successor;
use self::{
    lease::Leader,
    selection::Selection,
    watched::{Pace, Poke, Watched},
};
use super::{
    carve::Protected,
    core::Shared,
    faultset::AddOptions,
    sync::{Desired, Synced},
};
use crate::{
    fault::spec::FieldError,
    k8s::{InjectorControl, NetworkFault, Resolution, Watch, control::CONTROL_NAME, resolve},
    kernel::monotonic_ns,
    parse::Cidr,
};

/// `injector daemon --node-name ...`: where and how the daemon meets the API server.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// This node's name (the downward API's `spec.nodeName`).
    pub node_name: String,
    /// A kubeconfig file; `None`: the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Where the status writer's Lease lives (the daemon's own namespace, its pod's).
    pub lease_namespace: String,
    /// The daemon's pod (the downward API's `metadata.name`): on SIGTERM, whether its DaemonSet
    /// stays decides between handing over and a clean stop ([`successor`]).
    pub pod_name: Option<String>,
    /// How often the node report (InjectorNode) is written.
    pub report_interval: Duration,
}

/// A client from the kubeconfig file, or the in-cluster service account.
pub async fn client(cfg: &KubeConfig) -> Result<Client> {
    let config = match &cfg.kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .with_context(|| format!("--kubeconfig: reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig: {}", p.display()))?
        }
        None => kube::Config::incluster().context(
            "no --kubeconfig and not in a pod (KUBERNETES_SERVICE_HOST unset): \
             pass --kubeconfig, or run it as the DaemonSet in deploy/",
        )?,
    };
    Ok(crate::kube_client::build(config)?)
}

/// Runs the reconciler until the daemon stops (it is a task of the daemon's runtime).
pub fn spawn(shared: Shared, fixed: Vec<Protected>, cfg: KubeConfig, client: Client) {
    tokio::spawn(async move {
        // The EndpointSlice version is asked once; until the API server answers, nothing changes.
        let slices = loop {
            match Selection::slice_resource(&client).await {
                Ok(r) => break r,
                Err(e) => {
                    warn!(error = %e, "API server unreachable; faults run on to their deadlines");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let poke = Arc::new(Poke::default());
        let mut r = Reconciler {
            faults: Watched::start(
                Api::all(client.clone()),
                watcher::Config::default(),
                poke.clone(),
                Pace::Prompt,
            ),
            control: Watched::start(
                Api::all(client.clone()),
                watcher::Config::default().fields(&format!("metadata.name={CONTROL_NAME}")),
                poke.clone(),
                Pace::Prompt,
            ),
            selection: Selection::new(client.clone(), poke.clone(), slices),
            leader: Leader::new(
                client.clone(),
                &cfg.lease_namespace,
                &cfg.node_name,
                Duration::from_secs(15),
            ),
            shared,
            fixed,
            cfg,
            client,
            results: BTreeMap::new(),
            refused: BTreeMap::new(),
            abort_seen: None,
            reported: None,
            report_owed: None,
            leading: false,
            holders: BTreeMap::new(),
        };
        info!(node = %r.cfg.node_name, "watching NetworkFaults");
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let owed = r.report_owed.map(tokio::time::Instant::from_std);
            let owed = async move {
                match owed {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = owed => {
                    r.publish(false).await;
                }
                prompt = poke.wait() => {
                    // Selected objects come in bursts (a pod and its slice): take them together.
                    // 2 ms: a pod's slice follows within a millisecond or two; a longer wait
                    // only delays every fault (5 ms before). A NetworkFault, the InjectorControl
                    // and a completed list are acted on at once.
                    if !prompt {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    // A fault waiting for its new watches is installed on the poke of their
                    // list: the writes to the API server (the node report, the statuses) wait
                    // until then instead of holding that poke up by their round trips (or for
                    // the next tick, if the list never comes: a watch the RBAC refuses).
                    if !r.reconcile() {
                        r.publish(false).await;
                    }
                }
                _ = tick.tick() => {
                    r.reconcile();
                    r.publish(true).await;
                }
            }
        }
    });
}

struct Reconciler {
    faults: Watched<NetworkFault>,
    control: Watched<InjectorControl>,
    selection: Selection,
    leader: Leader,
    shared: Shared,
    /// The node's addresses and the operator's `--protect`.
    fixed: Vec<Protected>,
    cfg: KubeConfig,
    client: Client,
    /// The last resolution of each resource (`namespace/name`), for its status.
    results: BTreeMap<String, (NetworkFault, Result<Resolution, FieldError>, bool)>,
    /// Resources this node refused to install, and why (for the node report).
    refused: BTreeMap<String, String>,
    /// The last abort instant acted on.
    abort_seen: Option<SystemTime>,
    /// When the node report was last written.
    reported: Option<Instant>,
    /// A change came within a second of the last report: write it then (not at the next tick).
    report_owed: Option<Instant>,
    leading: bool,
    /// Which nodes hold which resource, from their reports (read by the status writer).
    holders: BTreeMap<String, BTreeSet<String>>,
}

fn resource_key(nf: &NetworkFault) -> String {
    format!("{}/{}", nf.namespace().unwrap_or_default(), nf.name_any())
}

impl Reconciler {
    /// Makes the node's fault set what the resources say now. True when something waits for
    /// a watch's first list (the reconcile its poke brings completes it).
    fn reconcile(&mut self) -> bool {
        if !self.faults.ready() {
            return true;
        }
        let nfs = self.faults.objects();
        let namespaces = self.selection.namespaces();
        let per_fault: Vec<Vec<Watch>> = nfs.iter().map(|nf| nf.watches(&namespaces)).collect();
        let mut want: BTreeSet<Watch> = selection::guard_watches().into_iter().collect();
        want.extend(per_fault.iter().flatten().cloned());
        self.selection.set(&want);
        if !self.selection.ready(&selection::guard_watches()) || !self.control.ready() {
            return true; // the guarded addresses are not known yet: change nothing
        }
        let objects = self.selection.objects();
        let world = objects.world();
        let now = SystemTime::now();
        let abort = self.abort_at();
        let mut desired = Vec::new();
        let mut keep = BTreeSet::new();
        let mut aborted_set = BTreeSet::new();
        self.results.clear();
        for (nf, ws) in nfs.iter().zip(&per_fault) {
            let key = resource_key(nf);
            let aborted = abort.is_some_and(|a| {
                nf.creation_timestamp()
                    .is_none_or(|t| SystemTime::from(t.0) <= a)
            });
            // An aborted resource goes whether or not its watches have listed.
            if !aborted && !self.selection.ready(ws) {
                keep.insert(key);
                continue;
            }
            let result = resolve(nf, &world, now);
            if aborted {
                aborted_set.insert(key.clone());
            } else if let Ok(res) = &result {
                desired.extend(res.faults.iter().map(|spec| Desired {
                    resource: key.clone(),
                    spec: spec.clone(),
                }));
            }
            self.results.insert(key, (nf.clone(), result, aborted));
        }
        let protected = self.protected(&world);
        let mut guard = self.shared.lock();
        let c = &mut *guard;
        c.protected = protected;
        if let Some(at) = abort.filter(|a| Some(*a) != self.abort_seen) {
            let mono = monotonic_ns()
                .saturating_sub(now.duration_since(at).unwrap_or_default().as_nanos() as u64);
            match c.faults.abort(&mut c.maps, mono, &aborted_set) {
                Ok(gone) if gone.is_empty() => {}
                Ok(gone) => {
                    warn!(at = %crate::k8s::status::rfc3339(at), faults = ?gone, "cluster-wide abort")
                }
                Err(e) => warn!(error = %e, "cluster-wide abort: removing faults"),
            }
            self.abort_seen = Some(at);
        }
        let opts = AddOptions {
            force: false,
            replace: true,
            delay: c.delay_support(),
            protected: &c.protected,
        };
        match c
            .faults
            .sync(&mut c.maps, desired, &keep, opts, monotonic_ns())
        {
            Ok(s) => {
                if s.changed() {
                    log_sync(&s);
                    c.sync_fq();
                    if !s.added.is_empty() {
                        // As a new fault from the API does: applying is a deliberate act.
                        let _ = c.maps.set_ctrl(ctrl::ARMED, 1);
                    }
                }
                self.refused = s.refused.into_iter().collect();
            }
            Err(e) => warn!(error = %e, "installing the NetworkFaults (the old set runs on)"),
        }
        !keep.is_empty()
    }

    /// When the last cluster-wide abort happened, if any.
    fn abort_at(&self) -> Option<SystemTime> {
        let ctl = self.control.objects().into_iter().next()?;
        let at = ctl.spec.abort?.at;
        match at.parse::<k8s_openapi::jiff::Timestamp>() {
            Ok(t) => Some(SystemTime::from(t)),
            Err(e) => {
                warn!(at, error = %e, "InjectorControl spec.abort.at is not RFC 3339; ignored");
                None
            }
        }
    }

    /// The fixed protected targets, plus the guarded Services' addresses and endpoints.
    fn protected(&self, world: &crate::k8s::World) -> Vec<Protected> {
        let mut out = self.fixed.clone();
        let mut add = |ip: &str, why: String| {
            if let Ok(net) = crate::parse::cidr("protected", ip) {
                let net = Cidr {
                    addr: net.addr,
                    len: if net.addr.is_ipv4() { 32 } else { 128 },
                };
                if !out.iter().any(|p| p.net == net) {
                    out.push(Protected {
                        cidr: net.to_string(),
                        why,
                        net,
                    });
                }
            }
        };
        for (ns, name, what) in selection::GUARDED {
            for s in world
                .services
                .iter()
                .filter(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
            {
                let spec = s.spec.clone().unwrap_or_default();
                for ip in spec
                    .cluster_ips
                    .unwrap_or_default()
                    .iter()
                    .chain(&spec.cluster_ip)
                {
                    add(ip, format!("{what} ({ns}/{name})"));
                }
            }
            let label = crate::k8s::select::SERVICE_NAME_LABEL;
            for sl in world.endpoint_slices.iter().filter(|sl| {
                sl.namespace().as_deref() == Some(ns)
                    && sl.labels().get(label).map(String::as_str) == Some(name)
            }) {
                for ep in &sl.endpoints {
                    for ip in &ep.addresses {
                        add(ip, format!("{what} endpoint ({ns}/{name})"));
                    }
                }
            }
        }
        out
    }

    /// The node report (on change, at most once a second, and every report interval) and,
    /// by the Lease holder, the NetworkFaults' status.
    async fn publish(&mut self, tick: bool) {
        let now = SystemTime::now();
        let due = self
            .reported
            .is_none_or(|t| t.elapsed() >= self.cfg.report_interval);
        let soon = self
            .reported
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due || (!tick && soon) {
            let rep = report::node_report(&self.shared.lock(), &self.refused, now);
            match report::write_report(&self.client, &self.cfg.node_name, &rep).await {
                Ok(()) => {
                    self.reported = Some(Instant::now());
                    self.report_owed = None;
                }
                Err(e) => {
                    // The ticks retry (every report interval), not a loop of owed writes.
                    self.report_owed = None;
                    warn!(error = %e, "writing the InjectorNode report");
                }
            }
        } else if !tick {
            // A change within a second of the last write: written when the second is over.
            self.report_owed = self.reported.map(|t| t + Duration::from_secs(1));
        }
        if tick {
            match self.leader.hold().await {
                Ok(l) if l != self.leading => {
                    info!(leading = l, "NetworkFault status writer");
                    self.leading = l;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "status writer's Lease");
                    self.leading = false;
                }
            }
        }
        if !self.leading {
            return;
        }
        if tick {
            // The reports are read on the tick only: one list per interval, whatever the events.
            let fresh = self.cfg.report_interval * 3;
            match report::holders(&self.client, now, fresh).await {
                Ok(h) => self.holders = h,
                Err(e) => warn!(error = %e, "reading the InjectorNode reports"),
            }
        }
        for (key, (nf, result, aborted)) in &self.results {
            let holders = self.holders.get(key);
            if let Err(e) =
                report::write_status(&self.client, nf, result, *aborted, holders, now).await
            {
                warn!(resource = %key, error = %e, "writing NetworkFault status");
            }
        }
    }
}

fn log_sync(s: &Synced) {
    info!(added = ?s.added, replaced = ?s.replaced, removed = ?s.removed, "NetworkFaults installed");
    for (r, why) in &s.refused {
        warn!(resource = %r, why, "NetworkFault refused on this node");
    }
}
