//! `injector daemon`: loads the programs, pins maps and links under one bpffs directory per
//! instance, adopts what a previous instance left pinned, attaches to the selected interfaces by
//! role and follows netlink for new and vanished ones, serves the API and the metrics, keeps the
//! heartbeat the kernel checks, and on SIGTERM/SIGINT removes everything it added. After a SIGKILL
//! the pinned links and maps keep the faults running until their deadlines, or until the
//! heartbeat is older than the grace period.

pub mod api;
pub mod core;
pub mod faultset;
pub mod fq;
pub mod metrics;
pub mod records;

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aya::programs::{SchedClassifier, Xdp};
use injector_common::{ctrl, maps, programs};
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::{
    core::{Core, Features, Shared},
    faultset::{FaultSet, Protected},
};
use crate::{
    kernel::{
        Maps,
        attach::{self, Roles},
        features, monotonic_ns,
    },
    net::{
        ifaces,
        netwatch::{self, LinkEvent},
    },
    parse::Cidr,
};

pub struct Config {
    /// bpffs directory holding this instance's pins.
    pub bpffs: PathBuf,
    /// Interface name patterns to attach to.
    pub patterns: Vec<String>,
    pub roles: Roles,
    /// Faults lapse when the heartbeat is older than this.
    pub grace: Duration,
    /// The API's Unix socket (mode 0600).
    pub socket: PathBuf,
    /// An API listener on TCP, with the bearer token read from `token_file`.
    pub listen: Option<(SocketAddr, PathBuf)>,
    /// Where /metrics, /healthz, /readyz are served.
    pub metrics: Option<SocketAddr>,
    /// Protected destinations besides the node's own addresses: (CIDR, why).
    pub protect: Vec<(Cidr, String)>,
    /// Packets per second an fq must hold for the longest delay.
    pub fq_max_pps: u32,
    /// The skb->mark bit a delayed packet's clone carries on its way to fq (0: none).
    pub clone_mark: u32,
}

/// Removes the map pins this instance made, and the directory if it is then empty.
pub fn remove_pins(dir: &Path) {
    let _ = std::fs::remove_dir(attach::links_dir(dir));
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

fn protected(cfg: &Config) -> Vec<Protected> {
    let mut out: Vec<Protected> = ifaces::addresses()
        .into_iter()
        .map(|a| {
            let len = if a.is_ipv4() { 32 } else { 128 };
            Protected {
                cidr: format!("{a}/{len}"),
                why: "node address".into(),
                net: Cidr { addr: a, len },
            }
        })
        .collect();
    out.extend(cfg.protect.iter().map(|(c, why)| Protected {
        cidr: c.to_string(),
        why: why.clone(),
        net: *c,
    }));
    out
}

/// Binds the API socket; a leftover file with nobody listening is replaced, a live one is refused.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "--socket: another daemon is serving {}; stop it or choose another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn run(cfg: Config) -> Result<()> {
    // Everything that can be refused is checked before anything is loaded or attached.
    let token = match &cfg.listen {
        Some((_, f)) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("--token-file: cannot read {}", f.display()))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                bail!(
                    "--token-file: the token in {} is {} characters; use at least 16",
                    f.display(),
                    t.len()
                );
            }
            Some(t)
        }
        None => None,
    };
    let api_listener = bind_socket(&cfg.socket)?;
    let tcp_api = match &cfg.listen {
        Some((a, _)) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("--listen: binding {a}"))?,
        ),
        None => None,
    };
    let metrics_listener = match cfg.metrics {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("--metrics-addr: binding {a}"))?,
        ),
        None => None,
    };

    std::fs::create_dir_all(attach::links_dir(&cfg.bpffs)).with_context(|| {
        format!(
            "creating the pin directory {} (is bpffs mounted on /sys/fs/bpf?)",
            cfg.bpffs.display()
        )
    })?;
    let adopted = maps::ALL.iter().any(|m| cfg.bpffs.join(m).exists());
    let feats = Features {
        tcx: features::tcx(),
        fq: features::fq(),
        btf: features::btf(),
        edt_stamp: features::edt_stamp(),
    };
    info!(
        tcx = feats.tcx,
        fq = feats.fq,
        btf = feats.btf,
        edt_stamp = feats.edt_stamp,
        "kernel features"
    );
    let mut ebpf = crate::kernel::programs::loader(&cfg.bpffs, feats.edt_stamp)
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
    if !adopted {
        // Created just now: empty, so clearing needs no walk of the host maps.
        maps.created_empty();
    }

    maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns())?;
    maps.set_ctrl(ctrl::GRACE_NS, cfg.grace.as_nanos() as u64)?;
    maps.set_ctrl(ctrl::XDP, u64::from(cfg.roles.xdp))?;
    maps.set_ctrl(ctrl::CLONE_MARK, u64::from(cfg.clone_mark))?;
    let faults = if adopted {
        let (set, dropped) = FaultSet::adopt(&mut maps, monotonic_ns())?;
        info!(faults = set.len(), dropped = ?dropped, "adopted the faults of a previous instance");
        set
    } else {
        maps.set_ctrl(ctrl::ARMED, 1)?;
        FaultSet::default()
    };

    // Subscribe before listing, so a link that appears in between is not missed.
    let (tx, mut links) = mpsc::unbounded_channel();
    netwatch::spawn(tx).context("subscribing to netlink link events")?;
    let mut ifs = BTreeMap::new();
    let mut attach_errors = 0;
    let mut clsact_owned: std::collections::BTreeSet<String> =
        records::own(&maps, records::key::CLSACT).unwrap_or_default();
    for (index, name) in ifaces::list().context("listing interfaces")? {
        if ifaces::selected(&cfg.patterns, &name) {
            let st = attach::attach(
                &mut ebpf,
                &cfg.bpffs,
                &cfg.roles,
                index,
                &name,
                clsact_owned.contains(&name),
            );
            if st.added_clsact {
                clsact_owned.insert(name.clone());
            }
            log_attach(&name, &st);
            attach_errors += u64::from(st.error.is_some());
            ifs.insert(name, st);
        }
    }
    let keep: Vec<PathBuf> = ifs
        .values()
        .flat_map(|s: &attach::IfaceStatus| s.pins.clone())
        .collect();
    let stale = attach::remove_stale_pins(&cfg.bpffs, &keep);
    if stale > 0 {
        info!(
            links = stale,
            "detached pinned links of interfaces that are gone"
        );
    }
    maps.set_ctrl(
        ctrl::OVERLAY_IFINDEX,
        u64::from(ifs.get(&cfg.roles.overlay).map_or(0, |s| s.ifindex)),
    )?;
    let xdp: Vec<u32> = ifs
        .values()
        .filter(|s| s.xdp_judged(&cfg.roles))
        .map(|s| s.ifindex)
        .collect();
    maps.sync_xdp_ifaces(&xdp)
        .context("recording the interfaces XDP judges")?;

    let shared = Shared::new(Core {
        maps,
        faults,
        ifaces: ifs,
        attach_errors,
        ready: true,
        protected: protected(&cfg),
        features: feats,
        bpffs: cfg.bpffs.display().to_string(),
        fq: Default::default(),
        fq_max_pps: cfg.fq_max_pps,
        clsact_owned,
    });
    shared.lock().save_clsact();
    {
        let mut c = shared.lock();
        if adopted {
            fq::adopt(&mut c);
        }
        fq::sync(&mut c);
    }
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn({
        let r = api::router(shared.clone());
        async move { axum::serve(api_listener, r).await }
    });
    if let (Some(l), Some(t)) = (tcp_api, token) {
        let r = api::router_with_token(shared.clone(), t);
        servers.spawn(async move { axum::serve(l, r).await });
    }
    if let Some(l) = metrics_listener {
        let r = metrics::router(shared.clone());
        servers.spawn(async move { axum::serve(l, r).await });
    }
    {
        let c = shared.lock();
        info!(bpffs = %cfg.bpffs.display(), socket = %cfg.socket.display(), interfaces = c.ifaces.len(), faults = c.faults.len(), adopted, xdp = cfg.roles.xdp, "daemon ready");
    }

    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => { r?; break; }
            _ = beat.tick() => tick(&shared, &mut ebpf, &cfg),
            Some(ev) = links.recv() => on_link(&shared, &mut ebpf, &cfg, ev),
            Some(r) = servers.join_next() => warn!(result = ?r, "a listener stopped"),
        }
    }

    info!("stopping: detaching programs, removing pins, restoring qdiscs");
    servers.abort_all();
    drop(links);
    let mut c = shared.lock();
    fq::restore_all(&mut c);
    for (name, st) in std::mem::take(&mut c.ifaces) {
        for e in attach::detach(&name, &st) {
            warn!(iface = %name, error = %e, "detach");
        }
    }
    drop(c);
    drop(shared);
    drop(ebpf);
    remove_pins(&cfg.bpffs);
    let _ = std::fs::remove_file(&cfg.socket);
    info!("stopped");
    Ok(())
}

fn log_attach(name: &str, st: &attach::IfaceStatus) {
    match &st.error {
        None => {
            info!(iface = %name, role = ?st.role, hooks = st.hooks.len(), adopted = st.adopted, "attached")
        }
        Some(e) => warn!(iface = %name, error = %e, "attach failed"),
    }
}

/// Every second: the heartbeat, forgetting ended faults, and a rescan for links netlink missed.
fn tick(shared: &Shared, ebpf: &mut aya::Ebpf, cfg: &Config) {
    {
        let mut guard = shared.lock();
        let c = &mut *guard;
        if let Err(e) = c.maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()) {
            warn!(error = %e, "heartbeat write failed");
        }
        match c.faults.reap(&mut c.maps, monotonic_ns()) {
            Ok(ended) if !ended.is_empty() => {
                info!(faults = ?ended, "faults ended at their deadline")
            }
            Ok(_) => {}
            Err(e) => warn!(error = format!("{e:#}"), "removing ended faults"),
        }
    }
    if let Ok(list) = ifaces::list() {
        for (ifindex, name) in list {
            on_link(shared, ebpf, cfg, LinkEvent::New { ifindex, name });
        }
    }
}

fn on_link(shared: &Shared, ebpf: &mut aya::Ebpf, cfg: &Config, ev: LinkEvent) {
    match ev {
        LinkEvent::New { ifindex, name } => {
            if !ifaces::selected(&cfg.patterns, &name) {
                return;
            }
            if shared
                .lock()
                .ifaces
                .get(&name)
                .is_some_and(|s| s.ifindex == ifindex)
            {
                return; // a change of a link we cover
            }
            let owned = shared.lock().clsact_owned.contains(&name);
            let st = attach::attach(ebpf, &cfg.bpffs, &cfg.roles, ifindex, &name, owned);
            log_attach(&name, &st);
            let mut c = shared.lock();
            if st.added_clsact && c.clsact_owned.insert(name.clone()) {
                c.save_clsact();
            }
            c.attach_errors += u64::from(st.error.is_some());
            if name == cfg.roles.overlay
                && let Err(e) = c.maps.set_ctrl(ctrl::OVERLAY_IFINDEX, u64::from(ifindex))
            {
                warn!(error = %e, "writing the overlay ifindex");
            }
            if st.xdp_judged(&cfg.roles)
                && let Err(e) = c.maps.set_xdp_iface(ifindex, true)
            {
                // Egress then judges this veth's drops too: twice, not never.
                warn!(iface = %name, error = %e, "recording the XDP interface");
            }
            c.ifaces.insert(name, st);
            fq::sync(&mut c);
        }
        LinkEvent::Del { ifindex, name } => {
            let mut c = shared.lock();
            if c.ifaces.get(&name).is_some_and(|s| s.ifindex == ifindex)
                && let Some(st) = c.ifaces.remove(&name)
            {
                // The kernel detached the programs with the device; drop the pins.
                for e in attach::detach(&name, &st) {
                    warn!(iface = %name, error = %e, "forgetting");
                }
                if c.clsact_owned.remove(&name) {
                    c.save_clsact();
                }
                if let Err(e) = c.maps.set_xdp_iface(ifindex, false) {
                    warn!(iface = %name, error = %e, "forgetting the XDP interface");
                }
                info!(iface = %name, "interface gone, forgotten");
            }
        }
    }
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
