//! `cargo xtask cluster build|up|down|status`: kube-apiserver built into its cache, and the lab
//! with a real API server left running for a user (state in `/tmp/<prefix>-cluster`).

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Subcommand;
use injector_tests::{cluster, lab};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Build kube-apiserver from Debian's kubernetes source into the cache (once; ~5 min).
    Build,
    /// The lab, etcd and kube-apiserver, with the lab's nodes and pods registered; left up.
    Up {
        #[arg(long, default_value = "lab")]
        prefix: String,
        #[arg(long, default_value_t = 2)]
        pods: u8,
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
        ClusterCmd::Up { prefix, pods } => {
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
            c.keep();
            print!("{}", cluster::status(&prefix)?);
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
