//! `cargo xtask cluster build|up|down|status`: kube-apiserver built into its cache, and the lab
//! with a real API server, deploy/'s CRDs and RBAC and a daemon per node left running for a user
//! to try `kubectl injector` on (state in `/tmp/<prefix>-cluster`).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Subcommand;
use injector_tests::{cluster, lab};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Build kube-apiserver from Debian's kubernetes source into the cache (once; ~5 min).
    Build,
    /// The lab, etcd and kube-apiserver, with the lab's nodes and pods registered, deploy/'s CRDs
    /// and RBAC, and a daemon per node reconciling NetworkFaults; left up.
    Up {
        #[arg(long, default_value = "lab")]
        prefix: String,
        #[arg(long, default_value_t = 2)]
        pods: u8,
        /// Only the cluster: no CRDs, RBAC or daemons.
        #[arg(long)]
        no_injector: bool,
    },
    /// Stop etcd and kube-apiserver, remove the run's directory, tear the lab down.
    Down {
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// Show what of the cluster and its lab exists.
    Status {
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
}

/// Builds kube-apiserver unless cached (after the bootstrap: deb-src lists, Go, etcd).
pub fn ensure_built() -> Result<()> {
    let t = Instant::now();
    let bin = cluster::build_kube_apiserver()?;
    eprintln!(
        "xtask: kube-apiserver {} ({:.1?})",
        bin.display(),
        t.elapsed()
    );
    Ok(())
}

pub fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Build => crate::bootstrap().and_then(|()| ensure_built()),
        ClusterCmd::Up {
            prefix,
            pods,
            no_injector,
        } => {
            crate::bootstrap()?;
            ensure_built()?;
            if !lab::namespaces(&prefix)?.is_empty() || cluster::state_dir(&prefix).exists() {
                bail!(
                    "cluster {prefix} is (partly) up; `cargo xtask cluster down --prefix {prefix}` first"
                );
            }
            let t = Instant::now();
            let opts = cluster::ClusterOptions {
                pods_per_node: pods,
                ..Default::default()
            };
            let c = cluster::Cluster::up(&prefix, opts)?;
            eprintln!("xtask: cluster {prefix} up in {:.1?}", t.elapsed());
            for (name, meta) in &c.pods {
                println!("pod {}/{name} {:?}", meta.namespace, meta.labels);
            }
            println!(
                "kubectl --kubeconfig {} get nodes,pods -A -o wide",
                c.kubeconfig(cluster::ADMIN).display()
            );
            if !no_injector {
                c.install_injector()?;
                start_daemons(&c, &prefix)?;
            }
            let kc = c.kubeconfig(cluster::ADMIN);
            c.keep();
            print!("{}", cluster::status(&prefix)?);
            if !no_injector {
                println!(
                    "try: KUBECONFIG={} PATH={}:$PATH kubectl injector fault add bh -n shop --to app=payments --blackhole --for 2m",
                    kc.display(),
                    crate::root().join("target/debug").display()
                );
            }
            Ok(())
        }
        ClusterCmd::Down { prefix } => {
            cluster::down(&prefix)?;
            print!("{}", cluster::status(&prefix)?);
            Ok(())
        }
        ClusterCmd::Status { prefix } => {
            print!("{}", cluster::status(&prefix)?);
            Ok(())
        }
    }
}

/// A daemon per node, as the DaemonSet runs it (`--node-name`, the service account's
/// kubeconfig), left running as a process of the run: `cluster down` stops it (SIGTERM).
fn start_daemons(c: &cluster::Cluster, prefix: &str) -> Result<()> {
    crate::sh("cargo", &["build", "-p", "injector"])?;
    let bin = crate::root().join("target/debug/injector");
    let dir = cluster::state_dir(prefix);
    for n in &c.lab.nodes {
        let args: Vec<String> = [
            "--socket",
            &dir.join(format!("injector-{}.sock", n.name))
                .display()
                .to_string(),
            "daemon",
            "--netns",
            &n.netns,
            "--bpffs",
            &n.bpffs(),
            "--node-name",
            &n.name,
            "--kubeconfig",
            &c.kubeconfig(cluster::DAEMON).display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let log = cluster::spawn_kept(prefix, &format!("injector.{}", n.name), &bin, &args)?;
        let t = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("daemon ready")
        {
            if t.elapsed() > std::time::Duration::from_secs(30) {
                bail!(
                    "the daemon of {} did not get ready: see {}",
                    n.name,
                    log.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(())
}
