//! The injector deployed on a lab cluster, as the Kubernetes end-to-end tests drive it: deploy/'s
//! namespace, CRDs and RBAC installed, and in each lab node a daemon reconciling NetworkFaults
//! (`--node-name`, `--kubeconfig`) as the daemon identity, so RBAC is real, through the node's
//! forwarder. Resources are JSON (the library does not depend on the `injector` crate); what
//! each daemon holds is read through its local API, which needs no API server.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    cluster::{Cluster, ClusterOptions, DAEMON},
    daemon::Daemon,
    injector_bin,
    lab::Pod,
    poll::{SETTLE, until_with},
};

/// The API group and version of NetworkFault, InjectorControl and InjectorNode.
pub const API_VERSION: &str = "injector.dev/v1alpha1";
/// The one InjectorControl's name.
pub const CONTROL: &str = "cluster";

/// A NetworkFault `namespace/name` with `spec`.
pub fn network_fault(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "NetworkFault",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// The addresses of side `from` or `to` of a node-level fault (as `fault ls -o json` shows it),
/// prefix lengths dropped.
pub fn addrs(fault: &Value, side: &str) -> BTreeSet<IpAddr> {
    fault["spec"][side]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|c| c.split('/').next()?.parse().ok())
        .collect()
}

/// The addresses of side `side` over all of `faults` (the parts of one resource).
pub fn all_addrs(faults: &[Value], side: &str) -> BTreeSet<IpAddr> {
    faults.iter().flat_map(|f| addrs(f, side)).collect()
}

/// A node-level fault's name and spec without its lifetime (`for`), which each node computes at
/// its own now: equal on every node for the same resource.
pub fn without_lifetime(fault: &Value) -> Value {
    let mut spec = fault["spec"].clone();
    if let Some(o) = spec.as_object_mut() {
        o.remove("for");
    }
    json!({"name": fault["name"], "resource": fault["resource"], "spec": spec})
}

/// Each node's faults (e.g. of one resource) without their lifetimes, by name: equal lists
/// mean the nodes hold the same faults.
pub fn comparable(per_node: &[Vec<Value>]) -> Vec<Vec<Value>> {
    per_node
        .iter()
        .map(|fs| {
            let mut v: Vec<Value> = fs.iter().map(without_lifetime).collect();
            v.sort_by_key(|f| f["name"].as_str().unwrap_or_default().to_string());
            v
        })
        .collect()
}

/// A lab pod's addresses, IPv4 and IPv6, as a fault's sides hold them.
pub fn pod_ips(p: &Pod) -> BTreeSet<IpAddr> {
    [IpAddr::from(p.ip), IpAddr::from(p.ip6)].into()
}

/// Condition `type_` of a status (`Valid`, `Ready`).
pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The node-level faults daemon `d` holds (`injector fault ls -o json`).
pub fn node_faults(d: &Daemon) -> Result<Vec<Value>> {
    let out = d.cli_ok(&["fault", "ls", "-o", "json"], "")?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("fault ls: {out}"))?;
    match v {
        Value::Array(a) => Ok(a),
        other => bail!("fault ls -o json is not a list: {other}"),
    }
}

/// The node-level faults of daemon `d` that resource `namespace/name` owns (`"resource"`).
pub fn owned(d: &Daemon, resource: &str) -> Result<Vec<Value>> {
    Ok(node_faults(d)?
        .into_iter()
        .filter(|f| f["resource"] == resource)
        .collect())
}

/// A cluster with the injector installed and a daemon in every node.
pub struct Deployed {
    /// One per lab node, node1's first. Dropped before the cluster.
    pub daemons: Vec<Daemon>,
    pub cluster: Cluster,
}

impl Deployed {
    /// [`Cluster::up`], [`Cluster::install_injector`], then in each node `injector daemon
    /// --node-name <node> --kubeconfig <the DAEMON kubeconfig>`. Everything is torn down on
    /// drop, also when this fails half-way.
    pub fn up(prefix: &str, opts: ClusterOptions) -> Result<Deployed> {
        Self::up_with(prefix, opts, &injector_bin())
    }

    /// As [`up`](Self::up), with the daemons of `bin` (e.g. a release build).
    pub fn up_with(prefix: &str, opts: ClusterOptions, bin: &std::path::Path) -> Result<Deployed> {
        Self::up_daemons(prefix, opts, bin, &[])
    }

    /// As [`up_with`](Self::up_with), each daemon with `extra` arguments too (e.g.
    /// `--report-interval 1s`).
    pub fn up_daemons(
        prefix: &str,
        opts: ClusterOptions,
        bin: &std::path::Path,
        extra: &[&str],
    ) -> Result<Deployed> {
        let cluster = Cluster::up(prefix, opts)?;
        cluster.install_injector()?;
        let kc = cluster.kubeconfig(DAEMON);
        let kc = kc.to_str().context("a UTF-8 kubeconfig path")?;
        let daemons = cluster
            .lab
            .nodes
            .iter()
            .map(|n| {
                let mut args = vec!["--node-name", &n.name, "--kubeconfig", kc];
                args.extend_from_slice(extra);
                Daemon::start_with(bin, n, &args)
                    .with_context(|| format!("starting the daemon of {}", n.name))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Deployed { daemons, cluster })
    }

    /// [`poll::until`](crate::poll::until), its panic message ending with the daemons' logs.
    pub fn until<T>(&self, what: &str, limit: Duration, check: impl FnMut() -> Result<T>) -> T {
        until_with(what, limit, check, || self.logs(40))
    }

    /// The last `lines` lines of each daemon's log.
    pub fn logs(&self, lines: usize) -> String {
        self.daemons
            .iter()
            .map(|d| {
                let text = d.log_text();
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!(
                    "== the daemon of {} ({}):\n{tail}\n",
                    d.node,
                    d.log.display()
                )
            })
            .collect()
    }

    /// The daemon of node `n` (1-based).
    pub fn daemon(&self, n: u8) -> &Daemon {
        &self.daemons[usize::from(n - 1)]
    }

    /// The node-level faults daemon `n` holds (see [`node_faults`]).
    pub fn faults(&self, n: u8) -> Result<Vec<Value>> {
        node_faults(self.daemon(n))
    }

    /// The node-level faults of daemon `n` that resource `namespace/name` owns.
    pub fn owned(&self, n: u8, resource: &str) -> Result<Vec<Value>> {
        owned(self.daemon(n), resource)
    }

    /// Polls until on every node the faults `resource` owns pass `check` (whose error says what
    /// is wrong), up to [`SETTLE`]; returns them, per node.
    pub fn wait_owned(
        &self,
        resource: &str,
        what: &str,
        check: impl Fn(&[Value]) -> Result<()>,
    ) -> Vec<Vec<Value>> {
        self.wait_owned_for(resource, what, SETTLE, check)
    }

    /// As [`wait_owned`](Self::wait_owned), up to `limit`.
    pub fn wait_owned_for(
        &self,
        resource: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&[Value]) -> Result<()>,
    ) -> Vec<Vec<Value>> {
        self.until(&format!("{resource}: {what}"), limit, || {
            let mut all = Vec::new();
            for d in &self.daemons {
                let owned = owned(d, resource)?;
                check(&owned).with_context(|| format!("on {}: {owned:#?}", d.node))?;
                all.push(owned);
            }
            Ok(all)
        })
    }

    /// Polls until `resource` is installed on every node (at least one node-level fault).
    pub fn wait_installed(&self, resource: &str) -> Vec<Vec<Value>> {
        self.wait_owned(resource, "installed on every node", |f| {
            anyhow::ensure!(!f.is_empty(), "not installed");
            Ok(())
        })
    }

    /// Polls until no node holds a fault of `resource`.
    pub fn wait_removed(&self, resource: &str) {
        self.wait_owned(resource, "removed from every node", |f| {
            anyhow::ensure!(f.is_empty(), "still installed");
            Ok(())
        });
    }

    /// Creates or updates `obj` (server-side apply as the admin).
    pub fn apply(&self, obj: &Value) -> Result<()> {
        self.cluster.apply(obj)
    }

    /// NetworkFault `namespace/name` as JSON, if it exists.
    pub fn network_fault(&self, namespace: &str, name: &str) -> Result<Option<Value>> {
        self.cluster
            .get(API_VERSION, "NetworkFault", namespace, name)
    }

    pub fn delete_network_fault(&self, namespace: &str, name: &str) -> Result<()> {
        self.cluster
            .delete(API_VERSION, "NetworkFault", namespace, name)
    }

    /// Polls until NetworkFault `namespace/name`'s status passes `check`; returns the status.
    pub fn wait_status(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> Result<()>,
    ) -> Value {
        self.until(&format!("{namespace}/{name}: {what}"), SETTLE, || {
            let nf = self
                .network_fault(namespace, name)?
                .context("no such NetworkFault")?;
            let status = nf.get("status").cloned().unwrap_or(Value::Null);
            check(&status).with_context(|| format!("status: {status:#}"))?;
            Ok(status)
        })
    }

    /// Polls until NetworkFault `namespace/name` has phase `phase`; returns the status.
    pub fn wait_phase(&self, namespace: &str, name: &str, phase: &str) -> Value {
        self.wait_status(namespace, name, &format!("phase {phase}"), |s| {
            anyhow::ensure!(s["phase"] == phase, "phase {}", s["phase"]);
            Ok(())
        })
    }

    /// `kubectl injector abort --reason REASON`, as a user aborts every fault of the cluster
    /// (the plugin writes InjectorControl `cluster`'s `spec.abort.at` = now, whole seconds).
    pub fn abort(&self, reason: &str) -> Result<()> {
        let out = std::process::Command::new(crate::kubectl_injector_bin())
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig(crate::cluster::ADMIN))
            .args(["abort", "--reason", reason])
            .output()
            .context("running kubectl-injector")?;
        if !out.status.success() {
            bail!(
                "kubectl injector abort: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The `.status.faults[]` entry of `resource` (`namespace/name`) in node `node`'s
    /// InjectorNode report; an error saying what is there instead when there is none.
    pub fn reported(&self, node: &str, resource: &str) -> Result<Value> {
        let report = self.node_report(node)?.unwrap_or(Value::Null);
        report["faults"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["resource"] == resource).cloned())
            .with_context(|| format!("{node} reports no {resource}: {report:#}"))
    }

    /// The `.status` of node `node`'s InjectorNode report, if written.
    pub fn node_report(&self, node: &str) -> Result<Option<Value>> {
        Ok(self
            .cluster
            .get(API_VERSION, "InjectorNode", "", node)?
            .and_then(|o| o.get("status").cloned()))
    }
}
