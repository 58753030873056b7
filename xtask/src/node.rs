//! `cargo xtask node build|up|down|status`: a real one-node Kubernetes cluster on this machine
//! (containerd, kubelet, kube-proxy, scheduler, controller-manager and an API server, the CNI
//! bridge on `cni0`; `injector_tests::node`), with injector installed from deploy/ as a user
//! installs it (`kubectl apply -k deploy/`, the image imported into containerd). State in
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
        /// Only the node: do not apply deploy/.
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
            no_injector,
        } => {
            crate::bootstrap()?;
            ensure_built()?;
            // The image holds the release binary (scripts/build-image.sh --release).
            crate::sh("cargo", &["build", "--release", "-p", "injector"])?;
            let n = node::Node::up(&prefix)?;
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
