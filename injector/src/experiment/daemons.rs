//! The daemons an experiment drives, through their API: apply a step's faults on all of them,
//! remove the experiment's faults from all of them at once, and sum the faults' counters.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use injector_common::Outcome;

use super::{
    backend::{Backend, Counts, NodeRemoved},
    file::{Step, StepFault},
};
use crate::{
    api::{FaultView, Status},
    client::Endpoint,
    fault::spec::FaultSpec,
};

pub struct Daemons {
    pub eps: Vec<Endpoint>,
}

fn label(ep: &Endpoint) -> String {
    match ep {
        Endpoint::Unix(p) => p.display().to_string(),
        Endpoint::Tcp { addr, .. } => addr.clone(),
    }
}

impl Daemons {
    /// `f` on every daemon at once (one thread each); the results in order.
    fn each<T: Send>(&self, f: impl Fn(&Endpoint) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let hs: Vec<_> = self.eps.iter().map(|ep| s.spawn(|| f(ep))).collect();
            hs.into_iter()
                .map(|h| h.join().expect("daemon call panicked"))
                .collect()
        })
    }

    fn call(ep: &Endpoint, method: &str, path: &str, body: Option<&str>) -> Result<String, String> {
        let r = ep.request(method, path, body).map_err(|e| e.to_string())?;
        if (200..300).contains(&r.status) {
            Ok(r.body)
        } else {
            Err(format!(
                "{} ({method} {path}): {}",
                label(ep),
                r.error_message()
            ))
        }
    }
}

impl Backend for Daemons {
    fn labels(&self) -> Vec<String> {
        self.eps.iter().map(label).collect()
    }

    /// Every daemon answers; none holds a fault of these names already.
    fn check(&self, names: &[String]) -> Result<(), String> {
        for r in self.each(|ep| {
            let st: Status = serde_json::from_str(&Self::call(ep, "GET", "/v1/status", None)?)
                .map_err(|e| format!("{}: status: {e}", label(ep)))?;
            if !st.armed {
                return Err(format!(
                    "{}: the daemon is disarmed (`injector abort` ran); `injector arm` first",
                    label(ep)
                ));
            }
            if let Some(f) = st.faults.iter().find(|f| names.contains(&f.name)) {
                return Err(format!(
                    "{}: a fault named '{}' exists already; remove it (`injector fault rm {}`) or rename the experiment's",
                    label(ep),
                    f.name,
                    f.name
                ));
            }
            Ok(())
        }) {
            r?;
        }
        Ok(())
    }

    /// The file's faults were validated by the daemons' own checks when it was read.
    fn validate(&self, _steps: &[Step]) -> Result<(), String> {
        Ok(())
    }

    fn pod_netns(&self, pod: &str) -> Result<String, String> {
        Err(format!(
            "pod {pod}: pods are found through the cluster (targets: kubernetes)"
        ))
    }

    /// Adds (or replaces, by name) `faults` on every daemon. All or nothing per daemon; when one
    /// refuses, the caller removes the experiment's faults everywhere.
    fn apply(&self, faults: &[StepFault], lifetime: Duration) -> Result<Vec<StepFault>, String> {
        let mut sent = faults.to_vec();
        let mut specs: Vec<FaultSpec> = Vec::new();
        for f in &mut sent {
            f.set_lifetime(lifetime);
            match f {
                StepFault::Node(f) => specs.push(f.clone()),
                StepFault::Kube(f) => {
                    return Err(format!(
                        "{} is a NetworkFault: it goes through the cluster (targets: kubernetes)",
                        f.name
                    ));
                }
            }
        }
        let body = serde_json::to_string(&specs).map_err(|e| e.to_string())?;
        for r in self.each(|ep| Self::call(ep, "POST", "/v1/faults?replace=true", Some(&body))) {
            r?;
        }
        Ok(sent)
    }

    /// Deletes these faults by name on every daemon at once (one thread per daemon and name); a
    /// fault already gone is fine. Returns when every delete has answered, with the errors.
    fn remove(&self, names: &[String]) -> (Instant, Vec<String>) {
        let errs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = self
                .eps
                .iter()
                .flat_map(|ep| names.iter().map(move |n| (ep, n)))
                .map(|(ep, n)| {
                    s.spawn(
                        move || match ep.request("DELETE", &format!("/v1/faults/{n}"), None) {
                            Ok(r) if (200..300).contains(&r.status) || r.status == 404 => None,
                            Ok(r) => {
                                Some(format!("{}: delete {n}: {}", label(ep), r.error_message()))
                            }
                            Err(e) => Some(format!("delete {n}: {e}")),
                        },
                    )
                })
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .collect()
        });
        (Instant::now(), errs)
    }

    /// The counters of these faults, summed over every daemon (a daemon that fails is skipped).
    fn counters(&self, names: &[String]) -> BTreeMap<String, Counts> {
        let mut sum: BTreeMap<String, Counts> = BTreeMap::new();
        for list in self.each(|ep| {
            Self::call(ep, "GET", "/v1/faults", None)
                .ok()
                .and_then(|b| serde_json::from_str::<Vec<FaultView>>(&b).ok())
                .unwrap_or_default()
        }) {
            for f in list.iter().filter(|f| names.contains(&f.name)) {
                let c = sum.entry(f.name.clone()).or_default();
                c[0] += f.total(Outcome::Matched);
                c[1] += f.total(Outcome::Dropped);
                c[2] += f.total(Outcome::Delayed);
            }
        }
        sum
    }

    /// A daemon's delete answers after the fault is out of its maps: every daemon had removed
    /// them when [`remove`](Self::remove) returned.
    fn nodes_removed(
        &self,
        _names: &[String],
        removed: Instant,
        _limit: Duration,
    ) -> Vec<NodeRemoved> {
        self.labels()
            .into_iter()
            .map(|node| NodeRemoved {
                node,
                at: Some(removed),
            })
            .collect()
    }
}
