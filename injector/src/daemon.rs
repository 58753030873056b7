//! `injector daemon`: loads the programs, pins maps and links under one bpffs directory per
//! instance, attaches to the selected interfaces by role, keeps the heartbeat the kernel checks,
//! and on SIGTERM/SIGINT removes everything it added. After SIGKILL the pinned links and maps keep
//! the faults running until their deadlines, or until the heartbeat is older than the grace period.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode, links::FdLink, tc},
};
use injector_common::{ctrl, maps, programs};
use tracing::{info, warn};

use crate::{
    features, ifaces,
    kernel::{Maps, monotonic_ns},
};

pub struct Config {
    /// bpffs directory holding this instance's pins.
    pub bpffs: PathBuf,
    /// Interface name patterns to attach to.
    pub patterns: Vec<String>,
    /// The bridge of the pod veths (count only).
    pub bridge: String,
    /// The overlay device towards other nodes.
    pub overlay: String,
    /// Judge drop/blackhole in XDP on the pod veths.
    pub xdp: bool,
    /// Faults lapse when the heartbeat is older than this.
    pub grace: Duration,
}

/// What the daemon attached to one interface.
#[derive(Debug)]
pub struct Attached {
    pub name: String,
    /// We added a clsact qdisc (netlink path, kernels without TCX) and must remove it on stop.
    pub added_clsact: bool,
    /// Link pins (TCX, XDP) to remove on a clean stop.
    pub pins: Vec<PathBuf>,
}

#[derive(Clone, Copy)]
enum Hook {
    Tc(&'static str, TcAttachType),
    Xdp(&'static str),
}

fn hooks_for(cfg: &Config, name: &str) -> Vec<Hook> {
    use TcAttachType::{Egress, Ingress};
    if name == cfg.overlay {
        vec![
            Hook::Tc(programs::TC_OBSERVE, Ingress),
            Hook::Tc(programs::TC_OVERLAY_EGRESS, Egress),
        ]
    } else if name == cfg.bridge {
        vec![
            Hook::Tc(programs::TC_OBSERVE, Ingress),
            Hook::Tc(programs::TC_OBSERVE, Egress),
        ]
    } else {
        let mut v = vec![
            Hook::Tc(programs::TC_OBSERVE, Ingress),
            Hook::Tc(programs::TC_VETH_EGRESS, Egress),
        ];
        if cfg.xdp {
            v.push(Hook::Xdp(programs::XDP_VETH));
        }
        v
    }
}

fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

fn attach_one(ebpf: &mut aya::Ebpf, cfg: &Config, name: &str) -> Result<Attached> {
    let mut a = Attached {
        name: name.to_string(),
        added_clsact: false,
        pins: Vec::new(),
    };
    let tcx = features::tcx();
    if !tcx {
        match tc::qdisc_add_clsact(name) {
            Ok(()) => a.added_clsact = true,
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("adding clsact to {name}")),
        }
    }
    for h in hooks_for(cfg, name) {
        let (prog, what, fd_link): (&str, String, Option<FdLink>) = match h {
            Hook::Tc(prog, at) => {
                let p: &mut SchedClassifier = ebpf
                    .program_mut(prog)
                    .context("program missing")?
                    .try_into()?;
                let id = p
                    .attach(name, at)
                    .with_context(|| format!("attaching {prog} to {name} {at:?}"))?;
                // TCX links can be pinned (they then outlive us); netlink filters outlive us anyway.
                let link = if tcx {
                    Some(p.take_link(id)?.try_into()?)
                } else {
                    None
                };
                (prog, format!("{at:?}").to_lowercase(), link)
            }
            Hook::Xdp(prog) => {
                let p: &mut Xdp = ebpf
                    .program_mut(prog)
                    .context("program missing")?
                    .try_into()?;
                let id = p
                    .attach(name, XdpMode::default())
                    .with_context(|| format!("attaching {prog} to {name}"))?;
                (prog, "xdp".to_string(), Some(p.take_link(id)?.try_into()?))
            }
        };
        if let Some(l) = fd_link {
            // bpffs refuses '.' in names (reserved for its own files): flannel.1 -> flannel_1.
            let pin =
                links_dir(&cfg.bpffs).join(format!("{}-{what}-{prog}", name.replace('.', "_")));
            let pinned = l
                .pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            // The pin holds the link; our fd may go.
            drop(pinned);
            a.pins.push(pin);
        }
    }
    Ok(a)
}

/// Removes the link pins under `dir/links`: each removal detaches that program.
fn remove_link_pins(bpffs: &Path) -> usize {
    let dir = links_dir(bpffs);
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    let _ = std::fs::remove_dir(&dir);
    n
}

/// Removes the map pins this instance made, and the directory if it is then empty.
pub fn remove_pins(dir: &Path) {
    remove_link_pins(dir);
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

fn ifindex(name: &str) -> u32 {
    ifaces::list()
        .ok()
        .and_then(|l| l.into_iter().find(|(_, n)| n == name).map(|(i, _)| i))
        .unwrap_or(0)
}

pub async fn run(cfg: Config) -> Result<()> {
    std::fs::create_dir_all(links_dir(&cfg.bpffs)).with_context(|| {
        format!(
            "creating the pin directory {} (is bpffs mounted on /sys/fs/bpf?)",
            cfg.bpffs.display()
        )
    })?;
    let adopted = maps::ALL.iter().any(|m| cfg.bpffs.join(m).exists());
    info!(
        tcx = features::tcx(),
        fq = features::fq(),
        btf = features::btf(),
        "kernel features"
    );
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&cfg.bpffs)
        .load(crate::EBPF_OBJECT)
        .context("loading the eBPF object")?;
    for prog in [
        programs::TC_VETH_EGRESS,
        programs::TC_OVERLAY_EGRESS,
        programs::TC_OBSERVE,
    ] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .context("program missing")?
            .try_into()?;
        p.load().with_context(|| format!("verifying {prog}"))?;
    }
    let x: &mut Xdp = ebpf
        .program_mut(programs::XDP_VETH)
        .context("program missing")?
        .try_into()?;
    x.load().context("verifying xdp_veth")?;
    let mut maps = Maps::take(&mut ebpf)?;

    // A previous instance killed without cleanup left its links pinned: replace them.
    let stale = remove_link_pins(&cfg.bpffs);
    if stale > 0 {
        info!(links = stale, "detached the links of a previous instance");
    }
    std::fs::create_dir_all(links_dir(&cfg.bpffs))?;

    let now = monotonic_ns();
    maps.set_ctrl(ctrl::HEARTBEAT_NS, now)?;
    maps.set_ctrl(ctrl::GRACE_NS, cfg.grace.as_nanos() as u64)?;
    maps.set_ctrl(ctrl::OVERLAY_IFINDEX, u64::from(ifindex(&cfg.overlay)))?;
    maps.set_ctrl(ctrl::XDP, u64::from(cfg.xdp))?;
    if !adopted {
        maps.set_ctrl(ctrl::ARMED, 1)?;
    }

    let mut attached = Vec::new();
    for (_, name) in ifaces::list().context("listing interfaces")? {
        if !ifaces::selected(&cfg.patterns, &name) {
            continue;
        }
        match attach_one(&mut ebpf, &cfg, &name) {
            Ok(a) => {
                info!(iface = %name, links = a.pins.len(), "attached");
                attached.push(a);
            }
            Err(e) => warn!(iface = %name, error = format!("{e:#}"), "attach failed"),
        }
    }
    info!(bpffs = %cfg.bpffs.display(), interfaces = attached.len(), adopted, xdp = cfg.xdp, "daemon ready");

    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => { r?; break; }
            _ = beat.tick() => {
                if let Err(e) = maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()) {
                    warn!(error = %e, "heartbeat write failed");
                }
            }
        }
    }
    info!("stopping: detaching programs and removing pins");
    remove_link_pins(&cfg.bpffs);
    drop(maps);
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
