//! The interfaces the daemon covers: attaching every selected one at start, following netlink
//! link events (and a rescan) for new and vanished ones, and keeping `XDP_IFACES` true to them
//! (with `--xdp`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::{Context as _, Result};
use injector_common::ctrl;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Config,
    core::{Core, Shared},
    records,
};
use crate::{
    kernel::{
        Maps,
        attach::{self, IfaceStatus, Role},
    },
    net::{
        ifaces,
        netwatch::{self, LinkEvent},
    },
};

/// What attaching at start found.
pub struct Attached {
    pub ifaces: BTreeMap<String, IfaceStatus>,
    pub attach_errors: u64,
    /// Interfaces whose clsact qdisc an instance of ours created (kernels without TCX).
    pub clsact_owned: BTreeSet<String>,
}

/// Subscribes to link events; done before listing, so a link that appears in between is seen.
pub fn subscribe() -> Result<mpsc::UnboundedReceiver<LinkEvent>> {
    let (tx, rx) = mpsc::unbounded_channel();
    netwatch::spawn(tx).context("subscribing to netlink link events")?;
    Ok(rx)
}

/// Attaches to every selected interface (adopting pinned links), removes the pins of interfaces
/// that are gone, and records the overlay and the XDP-judged interfaces in the maps.
pub fn attach_all(cfg: &Config, ebpf: &mut aya::Ebpf, maps: &mut Maps) -> Result<Attached> {
    let mut clsact_owned: BTreeSet<String> =
        records::own(maps, records::key::CLSACT).unwrap_or_default();
    let mut ifs = BTreeMap::new();
    let mut attach_errors = 0;
    for (index, name) in ifaces::list().context("listing interfaces")? {
        if !ifaces::selected(&cfg.patterns, &name) {
            continue;
        }
        let owned = clsact_owned.contains(&name);
        let st = attach::attach(ebpf, &cfg.bpffs, &cfg.roles, index, &name, owned);
        if st.added_clsact {
            clsact_owned.insert(name.clone());
        }
        log_attach(&name, &st);
        attach_errors += u64::from(st.error.is_some());
        ifs.insert(name, st);
    }
    let keep: Vec<PathBuf> = ifs.values().flat_map(|s| s.pins.clone()).collect();
    let stale = attach::remove_stale_pins(&cfg.bpffs, &keep);
    if stale > 0 {
        info!(
            links = stale,
            "detached pinned links of interfaces that are gone"
        );
    }
    for (role, word) in [
        (&cfg.roles.overlay, ctrl::OVERLAY_IFINDEX),
        (&cfg.roles.bridge, ctrl::BRIDGE_IFINDEX),
    ] {
        maps.set_ctrl(word, u64::from(ifs.get(role).map_or(0, |s| s.ifindex)))?;
    }
    maps.sync_early_ifaces(&attach::xdp_judged(ifs.values(), cfg.roles.xdp))
        .context("recording the interfaces whose XDP judges drops")?;
    Ok(Attached {
        ifaces: ifs,
        attach_errors,
        clsact_owned,
    })
}

/// Makes `XDP_IFACES` match the interfaces covered now.
fn sync_early(c: &mut Core, xdp: bool) {
    let judged = attach::xdp_judged(c.ifaces.values(), xdp);
    if let Err(e) = c.maps.sync_early_ifaces(&judged) {
        // Egress then judges drops XDP judged too (twice), or misses some: say so loudly.
        warn!(error = %e, "recording the interfaces whose XDP judges drops");
    }
}

fn log_attach(name: &str, st: &IfaceStatus) {
    match &st.error {
        // The bridge without --observe.
        None if st.hooks.is_empty() => {
            info!(iface = %name, role = ?st.role, "nothing to attach (counters with --observe)")
        }
        None => {
            info!(iface = %name, role = ?st.role, hooks = st.hooks.len(), adopted = st.adopted, "attached")
        }
        Some(e) => warn!(iface = %name, error = %e, "attach failed"),
    }
}

/// Attaches to links netlink did not report (lost events): every selected one not covered yet.
pub fn rescan(shared: &Shared, ebpf: &mut aya::Ebpf, cfg: &Config) {
    if let Ok(list) = ifaces::list() {
        for (ifindex, name) in list {
            on_link(shared, ebpf, cfg, LinkEvent::New { ifindex, name });
        }
    }
}

pub fn on_link(shared: &Shared, ebpf: &mut aya::Ebpf, cfg: &Config, ev: LinkEvent) {
    match ev {
        LinkEvent::New { ifindex, name } => appeared(shared, ebpf, cfg, ifindex, name),
        LinkEvent::Del { ifindex, name } => vanished(shared, cfg, ifindex, &name),
    }
}

fn appeared(shared: &Shared, ebpf: &mut aya::Ebpf, cfg: &Config, ifindex: u32, name: String) {
    if !ifaces::selected(&cfg.patterns, &name) {
        return;
    }
    let owned = {
        let c = shared.lock();
        if c.ifaces.get(&name).is_some_and(|s| s.ifindex == ifindex) {
            return; // a change of a link we cover
        }
        c.clsact_owned.contains(&name)
    };
    let st = attach::attach(ebpf, &cfg.bpffs, &cfg.roles, ifindex, &name, owned);
    log_attach(&name, &st);
    let mut c = shared.lock();
    if st.added_clsact && c.clsact_owned.insert(name.clone()) {
        c.save_clsact();
    }
    c.attach_errors += u64::from(st.error.is_some());
    let word = match cfg.roles.of(&name) {
        Role::Overlay => Some(ctrl::OVERLAY_IFINDEX),
        Role::Bridge => Some(ctrl::BRIDGE_IFINDEX),
        Role::PodVeth => None,
    };
    if let Some(w) = word
        && let Err(e) = c.maps.set_ctrl(w, u64::from(ifindex))
    {
        warn!(error = %e, iface = %name, "writing the interface's ifindex");
    }
    c.ifaces.insert(name, st);
    sync_early(&mut c, cfg.roles.xdp);
    c.sync_fq();
}

fn vanished(shared: &Shared, cfg: &Config, ifindex: u32, name: &str) {
    let mut c = shared.lock();
    // Only the link we cover: a name can come back with another ifindex.
    if c.ifaces.get(name).is_none_or(|s| s.ifindex != ifindex) {
        return;
    }
    let Some(st) = c.ifaces.remove(name) else {
        return;
    };
    // The kernel detached the programs with the device; drop the pins.
    for e in attach::detach(name, &st) {
        warn!(iface = %name, error = %e, "forgetting");
    }
    if c.clsact_owned.remove(name) {
        c.save_clsact();
    }
    if let Err(e) = c.maps.set_early_iface(ifindex, false) {
        warn!(iface = %name, error = %e, "forgetting the interface judged at ingress");
    }
    sync_early(&mut c, cfg.roles.xdp);
    info!(iface = %name, "interface gone, forgotten");
}
