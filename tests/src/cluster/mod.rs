//! A real Kubernetes API server per run (etcd + kube-apiserver on loopback, TLS, static tokens, RBAC)
//! and the lab registered in it as Nodes and Pods, with the lab playing kubelet; torn down on Drop.
//!
//! The binary comes from `scripts/build-k8s.sh` (Debian's `kubernetes` source, cached
//! per source version). Everything of a run lives in `/tmp/<prefix>-cluster` (certs, tokens,
//! kubeconfigs, etcd data, logs, pid files), so `down(prefix)` can clean up what a `keep()`
//! left running, and `Drop` (also on a panic) kills every process and removes the directory.
//! The API server is `https://127.0.0.1:PORT` on the host and inside every lab node (forwarded,
//! [`forward`]): one kubeconfig per identity serves a test, kubectl and a node's daemon.
//!
//! - [`apiserver`]: etcd and kube-apiserver, stopped and restarted at will;
//! - [`forward`]: the forwarders into the nodes; [`pki`]: identities, certificates, kubeconfigs;
//! - [`procs`]: the run's processes and directory (`down`, `status`);
//! - [`objects`]: what the lab becomes in the API; [`kubectl`]: running kubectl as an identity;
//! - [`dynamic`]: any object as JSON (apply, create, get, delete).

mod apiserver;
mod dynamic;
mod forward;
mod kubectl;
mod objects;
mod pki;
mod procs;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::json;

pub use apiserver::{
    ApiServer, build_k8s, build_kube_apiserver, etcd_bin, k8s_bins, kube_apiserver_bin,
};
pub use kubectl::{Kubectl, kubectl};
pub use pki::{Identity, default_identities};
pub use procs::{down, running_pid, spawn_kept, state_dir, status};

pub(crate) use apiserver::{Rt, workspace_root};
pub use objects::ensure_kubernetes_service;
use objects::{create_dns_service, create_pod, ensure_namespace, register_node};

use crate::lab::{self, Lab};

/// The identity with every right (group `system:masters`).
pub const ADMIN: &str = "admin";
/// The daemon's identity: the service account user deploy/rbac.yaml binds to the daemon's
/// ClusterRole and Lease Role ([`Cluster::install_injector`]).
pub const DAEMON: &str = "injector";
/// The user name of [`DAEMON`], as a pod's service-account token would authenticate.
pub const DAEMON_USER: &str = "system:serviceaccount:injector:injector";
/// The Service range; `kubernetes` gets its first address, kube-dns [`DNS_SERVICE_IP`].
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// Where the kube-dns EndpointSlice points by default: an address in node1's pod subnet that no
/// lab pod has ([`Cluster::set_endpoints`] points it elsewhere, e.g. at a lab pod).
pub const DNS_ENDPOINT_IP: &str = "10.42.1.250";
/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGER: &str = "injector-tests";
/// What [`Cluster::install_injector`] applies from deploy/: no DaemonSet (no kubelet runs it
/// here; tests start the daemons themselves), no metrics Service.
const INSTALL: [&str; 4] = [
    "namespace.yaml",
    "crd/injector.yaml",
    "rbac.yaml",
    "experimenter-rbac.yaml",
];

/// Where a lab pod goes in the API: its namespace and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl PodMeta {
    pub fn new(namespace: &str, labels: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            namespace: namespace.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// The default placement: namespace `shop` with `app=checkout` (n1p1), `app=cart` (n1p2),
/// `app=payments` (n2p1); `bank` with `app=ledger` (n2p2); any other pod `shop`, `app=<name>`.
pub fn default_meta(pod: &lab::Pod) -> PodMeta {
    match pod.name.as_str() {
        "n1p1" => PodMeta::new("shop", &[("app", "checkout")]),
        "n1p2" => PodMeta::new("shop", &[("app", "cart")]),
        "n2p1" => PodMeta::new("shop", &[("app", "payments")]),
        "n2p2" => PodMeta::new("bank", &[("app", "ledger")]),
        other => PodMeta::new("shop", &[("app", other)]),
    }
}

/// How [`Cluster::up`] builds a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub pods_per_node: u8,
    pub identities: Vec<Identity>,
    /// Placement of lab pods by name (`n1p1`); the others get [`default_meta`].
    pub pods: BTreeMap<String, PodMeta>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            pods_per_node: 2,
            identities: default_identities(),
            pods: BTreeMap::new(),
        }
    }
}

impl ClusterOptions {
    /// Adds an identity (e.g. one with no rights, to see RBAC refuse it).
    pub fn identity(mut self, id: Identity) -> Self {
        self.identities.push(id);
        self
    }

    /// Places lab pod `name` (e.g. `n1p1`) in `meta`'s namespace with its labels.
    pub fn pod(mut self, name: &str, meta: PodMeta) -> Self {
        self.pods.insert(name.to_string(), meta);
        self
    }
}

/// The lab plus the API server: nodes as Node objects, pods as Running Pod objects.
pub struct Cluster {
    /// Dropped first: the API server goes before the lab.
    pub api: ApiServer,
    pub lab: Lab,
    /// Lab pod name -> its placement, for every pod registered.
    pub pods: BTreeMap<String, PodMeta>,
    client: Client,
    rt: Rt,
}

impl Cluster {
    /// Builds the lab, starts the API server, forwards it into both nodes (the same URL there),
    /// registers both nodes, every pod (Running, with its IPv4 and IPv6 address), the
    /// `kubernetes` and kube-dns Services with EndpointSlices.
    pub fn up(prefix: &str, opts: ClusterOptions) -> Result<Cluster> {
        let lab = Lab::up(prefix, opts.pods_per_node)?;
        let mut api = ApiServer::start(prefix, opts.identities)?;
        for node in &lab.nodes {
            api.forward_into(&node.name, &node.netns)?;
        }
        let rt = Rt::new()?;
        let client = rt.block_on(api.client(ADMIN))?;
        let mut c = Cluster {
            api,
            lab,
            pods: BTreeMap::new(),
            client,
            rt,
        };
        c.register(&opts.pods)
            .with_context(|| format!("registering lab {prefix} in its API server"))?;
        Ok(c)
    }

    fn register(&mut self, placement: &BTreeMap<String, PodMeta>) -> Result<()> {
        for node in self.lab.nodes.clone() {
            self.block_on(register_node(&self.client, &node))?;
        }
        let port = i32::from(self.api.port);
        self.block_on(ensure_kubernetes_service(&self.client))?;
        self.set_endpoints(
            "default",
            "kubernetes",
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            &[("https", "TCP", port)],
        )?;
        self.block_on(create_dns_service(&self.client))?;
        self.set_endpoints(
            "kube-system",
            "kube-dns",
            &[DNS_ENDPOINT_IP.parse()?],
            &[
                ("dns", "UDP", 53),
                ("dns-tcp", "TCP", 53),
                ("metrics", "TCP", 9153),
            ],
        )?;
        let pods: Vec<lab::Pod> = self.lab.nodes.iter().flat_map(|n| n.pods.clone()).collect();
        for pod in pods {
            let meta = placement
                .get(&pod.name)
                .cloned()
                .unwrap_or_else(|| default_meta(&pod));
            self.register_pod(&pod, meta)?;
        }
        Ok(())
    }

    /// Runs a future on the library's runtime from sync or async code (e.g. with [`client`](Self::client)).
    pub fn block_on<F: Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        self.rt.block_on(f)
    }

    /// The admin client, bound to the library's runtime: use it inside [`block_on`](Self::block_on);
    /// from your own runtime, build one with `cluster.api.client(name).await`.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The kubeconfig of identity `name`.
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.api.kubeconfig(name)
    }

    /// `kubectl` as identity `name` on the host, with `stdin` if any (see [`kubectl()`]).
    pub fn kubectl(&self, name: &str, args: &[&str], stdin: Option<&str>) -> Result<Kubectl> {
        kubectl(&self.kubeconfig(name), "", args, stdin)
    }

    /// `kubectl` as identity `name` inside node `n`'s netns, through the forwarder.
    pub fn kubectl_in(&self, n: u8, name: &str, args: &[&str]) -> Result<Kubectl> {
        kubectl(&self.kubeconfig(name), &self.lab.node(n).netns, args, None)
    }

    /// Installs what the daemon needs from deploy/ (not the DaemonSet): the `injector`
    /// namespace, the CRDs of deploy/crd/injector.yaml (NetworkFault, InjectorControl,
    /// InjectorNode), and deploy/rbac.yaml, whose bindings give [`DAEMON`] its rights and no
    /// more. Returns once the CRDs are Established and RBAC grants the daemon its watches.
    pub fn install_injector(&self) -> Result<()> {
        let deploy = workspace_root().join("deploy");
        let files: Vec<String> = INSTALL
            .iter()
            .map(|f| deploy.join(f).display().to_string())
            .collect();
        let mut args = vec!["apply", "--server-side", "--field-manager", MANAGER];
        for f in &files {
            args.extend(["-f", f.as_str()]);
        }
        let out = self.kubectl(ADMIN, &args, None)?;
        ensure!(out.ok, "kubectl {}: {}", args.join(" "), out.text());
        let crds = &files[1];
        let out = self.kubectl(
            ADMIN,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                crds,
            ],
            None,
        )?;
        ensure!(out.ok, "the CRDs of {crds} not Established: {}", out.text());
        // The RBAC authorizer reads bindings from its informers: wait until they are there.
        let start = Instant::now();
        loop {
            let out = self.kubectl(
                DAEMON,
                &["auth", "can-i", "watch", "networkfaults.injector.dev", "-A"],
                None,
            )?;
            if out.stdout.trim() == "yes" {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "after applying {}, {DAEMON_USER} still may not watch NetworkFaults: {}",
                    files[2],
                    out.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates namespace `name` with `labels` (and `kubernetes.io/metadata.name`, as clusters
    /// since 1.21 do), or adds `labels` to it.
    pub fn ensure_namespace(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.block_on(ensure_namespace(&self.client, name, labels))
    }

    /// Sets the endpoints of Service `namespace/service` to `ips` with `ports` (name, protocol,
    /// port): the EndpointSlice `<service>` (`discovery.k8s.io/v1beta1`: 1.20 serves no v1) and,
    /// unless an address is loopback (which the Endpoints API refuses), the Endpoints `<service>`.
    pub fn set_endpoints(
        &self,
        namespace: &str,
        service: &str,
        ips: &[IpAddr],
        ports: &[(&str, &str, i32)],
    ) -> Result<()> {
        self.block_on(set_endpoints(&self.client, namespace, service, ips, ports))
    }

    /// Playing kubelet for a new pod: its Pod object on its node, then the status a kubelet
    /// reports (Running, Ready, podIP/podIPs IPv4 and IPv6, hostIP).
    fn register_pod(&mut self, pod: &lab::Pod, meta: PodMeta) -> Result<()> {
        let node = self.lab.node(pod.node).clone();
        self.block_on(create_pod(&self.client, &node, pod, &meta))
            .with_context(|| format!("registering pod {}/{}", meta.namespace, pod.name))?;
        self.pods.insert(pod.name.clone(), meta);
        Ok(())
    }

    /// Adds a lab pod to node `n` (as a CNI ADD) and its Running Pod object in `meta`'s namespace.
    pub fn add_pod(&mut self, n: u8, meta: PodMeta) -> Result<lab::Pod> {
        let pod = self.lab.add_pod(n)?;
        self.register_pod(&pod, meta)?;
        Ok(pod)
    }

    /// Removes lab pod `name` of node `n` as a kubelet does: the Pod object is marked for deletion,
    /// the netns goes (CNI DEL), then the object is deleted.
    pub fn remove_pod(&mut self, n: u8, name: &str) -> Result<()> {
        let meta = self
            .pods
            .get(name)
            .cloned()
            .with_context(|| format!("no registered pod {name}"))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &meta.namespace);
        self.block_on(pods.delete(name, &DeleteParams::default()))
            .with_context(|| format!("deleting pod {}/{name}", meta.namespace))?;
        self.lab.remove_pod(n, name)?;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match self.block_on(pods.delete(name, &now)) {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(e).with_context(|| format!("deleting pod {}/{name}", meta.namespace));
            }
        }
        self.pods.remove(name);
        Ok(())
    }

    /// Leaves the lab, etcd and the API server up (`cargo xtask cluster up`); `down` removes them.
    pub fn keep(mut self) {
        self.api.keep();
        let Cluster { api, lab, .. } = self;
        lab.keep();
        drop(api);
    }
}

/// Sets the endpoints of Service `namespace/service` to `ips` with `ports` (name, protocol,
/// port): the EndpointSlice `<service>` (`discovery.k8s.io/v1beta1`: 1.20 serves no v1) and,
/// unless an address is loopback (which the Endpoints API refuses), the Endpoints `<service>`.
pub async fn set_endpoints(
    client: &Client,
    namespace: &str,
    service: &str,
    ips: &[IpAddr],
    ports: &[(&str, &str, i32)],
) -> Result<()> {
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, proto, p)| json!({"name": n, "protocol": proto, "port": p}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {"name": service, "namespace": namespace,
                     "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()],
                                                "conditions": {"ready": true}}))
                        .collect::<Vec<_>>(),
        "ports": ports,
    });
    let gvk = GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "endpointslices");
    let slices: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let apply = PatchParams::apply(MANAGER).force();
    slices
        .patch(service, &apply, &Patch::Apply(&slice))
        .await
        .with_context(|| format!("applying EndpointSlice {namespace}/{service}"))?;
    if ips.iter().any(|ip| ip.is_loopback()) {
        return Ok(());
    }
    let eps = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": service, "namespace": namespace},
        "subsets": [{"addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                     "ports": ports}],
    });
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    endpoints
        .patch(service, &apply, &Patch::Apply(&eps))
        .await
        .with_context(|| format!("applying Endpoints {namespace}/{service}"))?;
    Ok(())
}
