//! The cluster as an experiment's target (`targets: kubernetes`): each step's faults become
//! NetworkFaults named `<fault>-<run>`, labelled `injector.dev/experiment-run=<run>`, server-side
//! applied (a fault of the next step with the same name is edited in place: the daemons replace
//! its parts in one transaction, no gap); all of them deleted at once by that label; the counters
//! and the per-node removal read from the InjectorNode reports.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};

use super::{
    backend::{Backend, Counts, NodeRemoved},
    file::{Step, StepFault, as_for},
    kfault::KubeFault,
    probe::pod,
};
use crate::{
    cli::Failure,
    k8s::{InjectorNode, NetworkFault, validate},
    kubectl::{args::ConnArgs, conn::Conn},
};

/// The field manager of the runner's writes.
pub const MANAGER: &str = "injector-experiment";
/// The label every NetworkFault of a run carries: its run id.
pub const RUN_LABEL: &str = "injector.dev/experiment-run";
/// The label with the experiment's name (when it is a valid label value).
pub const EXPERIMENT_LABEL: &str = "injector.dev/experiment";

pub struct Cluster {
    conn: Conn,
    rt: tokio::runtime::Handle,
    /// Stops the runtime's thread on drop.
    _stop: tokio::sync::oneshot::Sender<()>,
    pub run: String,
    experiment: String,
    /// Fault name -> (namespace, creationTimestamp) of what this run created.
    created: Mutex<BTreeMap<String, (String, SystemTime)>>,
}

/// A run id: 8 hex digits of the time and the process id.
pub fn run_id() -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t
        .to_le_bytes()
        .iter()
        .chain(&std::process::id().to_le_bytes())
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

/// `v` when it is a label value (the resource's own check), else nothing.
fn label_value(v: &str) -> Option<String> {
    (!v.is_empty() && validate::label_value("", v).is_ok()).then(|| v.to_string())
}

impl Cluster {
    /// Connects as kubectl would (--kubeconfig, $KUBECONFIG, ~/.kube/config, --context, -n; in a
    /// pod its service account), on a runtime thread of its own.
    pub fn connect(a: &ConnArgs, experiment: &str, run: String) -> Result<Cluster, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure(1, format!("starting the runtime: {e}")))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            })
        });
        let a = a.clone();
        let conn = call(&handle, async move { Conn::new(&a).await })?;
        Ok(Cluster {
            conn,
            rt: handle,
            _stop: stop,
            run,
            experiment: experiment.to_string(),
            created: Mutex::new(BTreeMap::new()),
        })
    }

    fn call<F: Future + Send + 'static>(&self, f: F) -> F::Output
    where
        F::Output: Send + 'static,
    {
        call(&self.rt, f)
    }

    /// The resource's name for fault `name`.
    pub fn resource(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    /// The namespaces the faults of `steps` go to.
    pub fn namespaces(&self, steps: &[Step]) -> BTreeSet<String> {
        steps
            .iter()
            .flat_map(|s| &s.faults)
            .filter_map(|f| kube(f).ok())
            .map(|f| self.namespace(f))
            .collect()
    }

    fn namespace(&self, f: &KubeFault) -> String {
        f.namespace
            .clone()
            .unwrap_or_else(|| self.conn.namespace.clone())
    }

    /// The NetworkFault of `f` with its labels, and `duration` as given.
    fn object(&self, f: &KubeFault, ns: &str) -> NetworkFault {
        let mut labels = BTreeMap::from([(RUN_LABEL.to_string(), self.run.clone())]);
        if let Some(e) = label_value(&self.experiment) {
            labels.insert(EXPERIMENT_LABEL.to_string(), e);
        }
        let mut nf = NetworkFault::new(&self.resource(&f.name), f.spec.clone());
        nf.metadata.namespace = Some(ns.to_string());
        nf.metadata.labels = Some(labels);
        nf
    }

    fn api(&self, ns: &str) -> Api<NetworkFault> {
        Api::namespaced(self.conn.client.clone(), ns)
    }

    fn error(&self, e: kube::Error) -> String {
        self.conn.error(e).1
    }

    fn reports(&self) -> Result<Vec<InjectorNode>, String> {
        let api: Api<InjectorNode> = Api::all(self.conn.client.clone());
        self.call(async move { api.list(&ListParams::default()).await })
            .map(|l| l.items)
            .map_err(|e| format!("reading the InjectorNode reports: {}", self.error(e)))
    }

    /// `namespace/resource` -> fault name, for what this run created.
    fn keys(&self, names: &[String]) -> BTreeMap<String, String> {
        let created = self.created.lock().expect("not poisoned");
        names
            .iter()
            .filter_map(|n| {
                created
                    .get(n)
                    .map(|(ns, _)| (format!("{ns}/{}", self.resource(n)), n.clone()))
            })
            .collect()
    }
}

fn call<F: Future + Send + 'static>(rt: &tokio::runtime::Handle, f: F) -> F::Output
where
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .expect("the runtime's thread runs until the Cluster is dropped")
}

fn kube(f: &StepFault) -> Result<&KubeFault, String> {
    match f {
        StepFault::Kube(k) => Ok(k),
        StepFault::Node(n) => Err(format!(
            "{} is a node-level fault: it goes to daemons (targets: nodes)",
            n.name
        )),
    }
}

/// Whole milliseconds, rounded up.
fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_micros().div_ceil(1000) as u64)
}

impl Backend for Cluster {
    fn labels(&self) -> Vec<String> {
        vec![format!(
            "{} (context {}, namespace {})",
            self.conn.server, self.conn.context, self.conn.namespace
        )]
    }

    /// The API server answers, the CRDs are there and at least one daemon reports.
    fn check(&self, _names: &[String]) -> Result<(), String> {
        let reports = self.reports()?;
        if reports.is_empty() {
            return Err(format!(
                "no InjectorNode report in {}: no daemon reconciles NetworkFaults there (injector daemon --node-name, deploy/)",
                self.conn.server
            ));
        }
        if let Some(n) = reports
            .iter()
            .find(|n| n.status.as_ref().is_some_and(|s| !s.armed))
        {
            return Err(format!(
                "node {} reports its faults disarmed (an abort is in progress); try again in a moment",
                n.name_any()
            ));
        }
        Ok(())
    }

    /// A server-side dry run of every step's NetworkFaults: the schema, admission, RBAC and the
    /// namespace as the API server sees them; nothing is created.
    fn validate(&self, steps: &[Step]) -> Result<(), String> {
        for (k, s) in steps.iter().enumerate() {
            for f in &s.faults {
                let f = kube(f)?;
                let ns = self.namespace(f);
                let nf = self.object(f, &ns);
                let (api, name) = (self.api(&ns), self.resource(&f.name));
                let pp = PatchParams::apply(MANAGER).force().dry_run();
                self.call(async move { api.patch(&name, &pp, &Patch::Apply(&nf)).await })
                    .map_err(|e| {
                        format!(
                            "step {} ({}), fault {}: the API server refuses NetworkFault {ns}/{}: {}",
                            k + 1,
                            s.name,
                            f.name,
                            self.resource(&f.name),
                            self.error(e)
                        )
                    })?;
            }
        }
        Ok(())
    }

    fn pod_netns(&self, p: &str) -> Result<String, String> {
        let (ns, name) = p.split_once('/').unwrap_or(("", p));
        let api: Api<Pod> = Api::namespaced(self.conn.client.clone(), ns);
        let name = name.to_string();
        let got = self
            .call(async move { api.get_opt(&name).await })
            .map_err(|e| format!("pod {p}: {}", self.error(e)))?;
        let pod = got.ok_or_else(|| format!("pod {p}: no such pod"))?;
        pod::netns(&pod)
    }

    /// Each fault server-side applied: created with `duration` = `lifetime` + 1 s (the
    /// creationTimestamp is whole seconds, at or before now), or, for a name the run created
    /// before, edited with `duration` = its age + `lifetime`: the deadline is the step's end plus
    /// the margin on every node either way.
    fn apply(&self, faults: &[StepFault], lifetime: Duration) -> Result<Vec<StepFault>, String> {
        let mut sent = Vec::new();
        for f in faults {
            let mut f = kube(f)?.clone();
            let ns = self.namespace(&f);
            let known = self
                .created
                .lock()
                .expect("not poisoned")
                .get(&f.name)
                .cloned();
            let d = match known {
                Some((_, created)) => {
                    SystemTime::now()
                        .duration_since(created)
                        .unwrap_or_default()
                        + lifetime
                }
                None => lifetime + Duration::from_secs(1),
            };
            f.spec.duration = as_for(ceil_ms(d));
            f.namespace = Some(ns.clone());
            let nf = self.object(&f, &ns);
            let (api, name) = (self.api(&ns), self.resource(&f.name));
            let pp = PatchParams::apply(MANAGER).force();
            let got = self
                .call(async move { api.patch(&name, &pp, &Patch::Apply(&nf)).await })
                .map_err(|e| {
                    format!(
                        "NetworkFault {ns}/{}: {}",
                        self.resource(&f.name),
                        self.error(e)
                    )
                })?;
            let created = got
                .metadata
                .creation_timestamp
                .map(|t| SystemTime::from(t.0))
                .unwrap_or_else(SystemTime::now);
            self.created
                .lock()
                .expect("not poisoned")
                .insert(f.name.clone(), (ns, created));
            sent.push(StepFault::Kube(f));
        }
        Ok(sent)
    }

    /// Every fault of the run: one delete-collection by the run's label per namespace, at once.
    /// Some of them: one delete each.
    fn remove(&self, names: &[String]) -> (Instant, Vec<String>) {
        let created = self.created.lock().expect("not poisoned").clone();
        let all = created.keys().all(|n| names.contains(n));
        let mut calls = Vec::new();
        if all {
            let namespaces: BTreeSet<String> = created.values().map(|(ns, _)| ns.clone()).collect();
            for ns in namespaces {
                let api = self.api(&ns);
                let lp = ListParams::default().labels(&format!("{RUN_LABEL}={}", self.run));
                calls.push((
                    format!("delete the run's NetworkFaults in {ns}"),
                    Box::pin(async move {
                        api.delete_collection(&DeleteParams::default(), &lp)
                            .await
                            .map(drop)
                    })
                        as std::pin::Pin<Box<dyn Future<Output = kube::Result<()>> + Send>>,
                ));
            }
        } else {
            for n in names {
                let Some((ns, _)) = created.get(n) else {
                    continue;
                };
                let api = self.api(ns);
                let name = self.resource(n);
                calls.push((
                    format!("delete NetworkFault {ns}/{name}"),
                    Box::pin(async move {
                        match api.delete(&name, &DeleteParams::default()).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                            Err(e) => Err(e),
                        }
                    }),
                ));
            }
        }
        let (what, futs): (Vec<String>, Vec<_>) = calls.into_iter().unzip();
        let results = self.call(futures::future::join_all(futs));
        let errors = what
            .iter()
            .zip(results)
            .filter_map(|(w, r)| r.err().map(|e| format!("{w}: {}", self.error(e))))
            .collect();
        let done = Instant::now();
        if !all {
            let mut c = self.created.lock().expect("not poisoned");
            for n in names {
                c.remove(n);
            }
        }
        (done, errors)
    }

    /// Summed over the InjectorNode reports (each written by its daemon on a change, at most once
    /// a second, and every report interval: 10 s by default).
    fn counters(&self, names: &[String]) -> BTreeMap<String, Counts> {
        let keys = self.keys(names);
        let mut sum: BTreeMap<String, Counts> = BTreeMap::new();
        for n in self.reports().unwrap_or_default() {
            for f in n.status.iter().flat_map(|s| &s.faults) {
                if let Some(name) = keys.get(&f.resource) {
                    let c = sum.entry(name.clone()).or_default();
                    c[0] += f.matched;
                    c[1] += f.dropped;
                    c[2] += f.delayed;
                }
            }
        }
        sum
    }

    /// Polls the InjectorNode reports every 50 ms until none lists a NetworkFault of the run:
    /// per node, when the runner first saw its report without them (the report is written
    /// after the node's fault set changed, so this is when the node had removed them, plus the
    /// report's write and this read).
    fn nodes_removed(
        &self,
        names: &[String],
        _removed: Instant,
        limit: Duration,
    ) -> Vec<NodeRemoved> {
        let keys = self.keys(names);
        let end = Instant::now() + limit;
        let mut seen: BTreeMap<String, Option<Instant>> = BTreeMap::new();
        loop {
            if let Ok(reports) = self.reports() {
                let now = Instant::now();
                for n in reports {
                    let holds = n
                        .status
                        .iter()
                        .flat_map(|s| &s.faults)
                        .any(|f| keys.contains_key(&f.resource));
                    let e = seen.entry(n.name_any()).or_insert(None);
                    if !holds && e.is_none() {
                        *e = Some(now);
                    }
                }
            }
            if (!seen.is_empty() && seen.values().all(Option::is_some)) || Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen.into_iter()
            .map(|(node, at)| NodeRemoved { node, at })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_eight_hex_digits_and_label_values_are_checked() {
        let id = run_id();
        assert_eq!(id.len(), 8);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(label_value("web-loss").as_deref(), Some("web-loss"));
        assert_eq!(label_value("web loss"), None);
        assert_eq!(label_value(&"x".repeat(64)), None);
        assert_eq!(
            ceil_ms(Duration::from_micros(1_500_001)),
            Duration::from_millis(1501)
        );
    }
}
