//! `cargo xtask node build|up|down|status`: a real Kubernetes cluster of one or two nodes on this
//! machine (per node containerd, kubelet, kube-proxy and the CNI bridge on `cni0`, the second in
//! namespaces of its own joined by flannel's VXLAN; a scheduler, a controller-manager and an API
//! server; `injector_tests::node`), with injector installed from deploy/ as a user installs it
//! (`kubectl apply -k deploy/`, the image imported into containerd). State in
//! `/tmp/<prefix>-cluster`; `down` puts the machine back as it was.

use std::time::Instant;

use anyhow::Result;
use clap::Subcommand;
use injector_tests::node;

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Build kubelet, kube-proxy, scheduler, controller-manager, API server and pause from Debian's
    /// kubernetes source into the cache (once; ~10 min on 2 cores).
    Build,
    /// Start the node and install injector from deploy/ (the DaemonSet); left up.
    Up {
        #[arg(long, default_value = "lab")]
        prefix: String,
        /// How many nodes: 1, or 2 (the second in a network and mount namespace of its own).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
        nodes: u8,
        /// Only the nodes: do not apply deploy/.
        #[arg(long)]
        no_injector: bool,
    },
    /// Stop the node: pods deleted through kubelet, every process stopped, the machine restored.
    Down {
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// Show what of the node runs, and its pods.
    Status {
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
}

/// Builds what a node runs unless cached (after the bootstrap: deb-src lists, Go, gcc).
pub fn ensure_built() -> Result<()> {
    let t = Instant::now();
    let bins = node::build()?;
    eprintln!("xtask: node components cached ({:.1?}):", t.elapsed());
    for b in bins {
        eprintln!("   {}", b.display());
    }
    Ok(())
}

pub fn run(cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Build => crate::bootstrap().and_then(|()| ensure_built()),
        NodeCmd::Up {
            prefix,
            nodes,
            no_injector,
        } => {
            crate::bootstrap()?;
            ensure_built()?;
            // The image holds the release binary (scripts/build-image.sh --release).
            crate::sh("cargo", &["build", "--release", "-p", "injector"])?;
            let n = node::Node::up_with(&prefix, nodes)?;
            if !no_injector {
                let t = Instant::now();
                n.install_injector()?;
                eprintln!("xtask: injector's DaemonSet Ready in {:.1?}", t.elapsed());
            }
            let kc = n.kubeconfig();
            n.keep();
            print!("{}", node::status(&prefix)?);
            println!(
                "try: KUBECONFIG={} PATH={}:$PATH kubectl injector ls -A",
                kc.display(),
                crate::root().join("target/debug").display()
            );
            Ok(())
        }
        NodeCmd::Down { prefix } => {
            node::down(&prefix)?;
            print!("{}", node::status(&prefix)?);
            Ok(())
        }
        NodeCmd::Status { prefix } => {
            print!("{}", node::status(&prefix)?);
            Ok(())
        }
    }
}
