//! `injector daemon`: loads the programs, pins the maps under one bpffs directory per instance,
//! attaches to the selected interfaces, and on SIGTERM/SIGINT removes everything it added.

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    programs::{SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use injector_common::{maps, programs};
use tracing::{info, warn};

use crate::ifaces;

pub struct Config {
    /// bpffs directory holding this instance's pins.
    pub bpffs: PathBuf,
    /// Interface name patterns to attach to.
    pub patterns: Vec<String>,
}

/// What the daemon attached to one interface.
#[derive(Debug)]
pub struct Attached {
    pub name: String,
    /// We added a clsact qdisc (netlink path, kernels without TCX) and must remove it on stop.
    pub added_clsact: bool,
}

fn has_tcx() -> bool {
    // TCX links: Linux 6.6 (commit e420bed02507 "bpf: Add fd-based tcx multi-prog infra").
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn attach_one(ebpf: &mut aya::Ebpf, name: &str) -> Result<Attached> {
    let mut added_clsact = false;
    if !has_tcx() {
        match tc::qdisc_add_clsact(name) {
            Ok(()) => added_clsact = true,
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("adding clsact to {name}")),
        }
    }
    for (prog, at) in [
        (programs::TC_INGRESS, TcAttachType::Ingress),
        (programs::TC_EGRESS, TcAttachType::Egress),
    ] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .with_context(|| format!("program {prog} missing from the object"))?
            .try_into()?;
        p.attach(name, at)
            .with_context(|| format!("attaching {prog} to {name}"))?;
    }
    Ok(Attached {
        name: name.to_string(),
        added_clsact,
    })
}

/// Removes the map pins this instance made, and the directory if it is then empty.
pub fn remove_pins(dir: &Path) {
    for name in maps::ALL {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(pin = %dir.join(name).display(), error = %e, "cannot remove pin"),
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "cannot remove the pin directory (not empty?)");
    }
}

pub async fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(&cfg.bpffs).with_context(|| {
        format!(
            "creating the pin directory {} (is bpffs mounted on /sys/fs/bpf?)",
            cfg.bpffs.display()
        )
    })?;
    let adopted = maps::ALL.iter().any(|m| cfg.bpffs.join(m).exists());
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&cfg.bpffs)
        .load(crate::EBPF_OBJECT)
        .context("loading the eBPF object")?;
    for prog in [programs::TC_INGRESS, programs::TC_EGRESS] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .context("program missing")?
            .try_into()?;
        p.load().with_context(|| format!("verifying {prog}"))?;
    }

    let mut attached = Vec::new();
    for (_, name) in ifaces::list().context("listing interfaces")? {
        if !ifaces::selected(&cfg.patterns, &name) {
            continue;
        }
        match attach_one(&mut ebpf, &name) {
            Ok(a) => {
                info!(iface = %name, tcx = has_tcx(), "attached");
                attached.push(a);
            }
            Err(e) => warn!(iface = %name, error = format!("{e:#}"), "attach failed"),
        }
    }
    info!(
        bpffs = %cfg.bpffs.display(),
        interfaces = attached.len(),
        adopted,
        "daemon ready"
    );

    wait_for_stop().await?;
    info!("stopping: detaching programs and removing pins");
    // Dropping the object closes the TCX links (detaching the programs) and the netlink filters.
    drop(ebpf);
    for a in attached.iter().filter(|a| a.added_clsact) {
        if let Err(e) = crate::qdisc::delete_clsact(&a.name) {
            warn!(iface = %a.name, error = %e, "cannot remove the clsact qdisc we added");
        }
    }
    remove_pins(&cfg.bpffs);
    info!("stopped");
    Ok(())
}

async fn wait_for_stop() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    Ok(())
}
