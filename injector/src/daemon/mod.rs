//! `injector daemon`: loads the programs, pins maps and links under one bpffs directory per
//! instance, adopts what a previous instance left pinned, attaches to the selected interfaces by
//! role and follows netlink for new and vanished ones, serves the API and the metrics, keeps the
//! heartbeat the kernel checks, and on SIGTERM/SIGINT removes everything it added, unless it runs
//! as a DaemonSet pod whose DaemonSet stays (then it hands the node over to the next pod:
//! `reconcile::successor`). After a SIGKILL or a hand-over the pinned links and maps keep the
//! faults running until their deadlines, or until the heartbeat is older than the grace period.

pub mod api;
pub mod carve;
pub mod config;
pub mod core;
pub mod faultset;
pub mod fq;
pub mod health;
mod links;
pub mod metrics;
pub mod reconcile;
pub mod records;
pub mod serve;
pub mod sync;

use std::{io, net::SocketAddr, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
};
use injector_common::{ctrl, maps, programs};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::mpsc,
    task::JoinSet,
};
use tracing::{info, warn};

pub use self::config::Config;
use self::{
    api::ApiState,
    carve::Protected,
    core::{Core, Features, Shared},
    faultset::FaultSet,
    health::Listeners,
};
use crate::{
    kernel::{Maps, attach, features, monotonic_ns},
    net::{ifaces, netwatch::LinkEvent},
    parse::Cidr,
};

/// `injector daemon`: logs, the network namespace, a single-threaded runtime, then [`run`].
pub fn main(cfg: Config) -> Result<()> {
    init_logs(cfg.log_json);
    if let Some(ns) = &cfg.netns {
        crate::net::netns::enter(ns)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
}

/// The daemon, start to stop: bind, load, adopt, attach, serve, loop, teardown.
pub async fn run(cfg: Config) -> Result<()> {
    // Everything that can be refused is checked before anything is loaded or attached.
    let bound = bind(&cfg).await?;
    // From here on the socket is ours: removed however run ends (a refused start included).
    let _socket = RemoveOnDrop(&cfg.socket);
    // The Kubernetes client too: a bad kubeconfig refuses the start before anything is loaded.
    let kube = match &cfg.kube {
        Some(k) => Some((k.clone(), reconcile::client(k).await?)),
        None => None,
    };
    let mut loaded = load(&cfg)?;
    let faults = adopt(&cfg, &mut loaded)?;
    let events = links::subscribe()?;
    let attached = links::attach_all(&cfg, &mut loaded.ebpf, &mut loaded.maps)?;
    let Loaded {
        mut ebpf,
        maps,
        adopted,
        features,
    } = loaded;
    let fixed = protected(&cfg);
    let shared = Shared::new(Core {
        maps,
        faults,
        ifaces: attached.ifaces,
        attach_errors: attached.attach_errors,
        ready: false,
        protected: fixed.clone(),
        features,
        bpffs: cfg.bpffs.display().to_string(),
        fq: Default::default(),
        fq_max_pps: cfg.fq_max_pps,
        clsact_owned: attached.clsact_owned,
    });
    start_fq(&shared, adopted);
    let servers = spawn_servers(bound, &shared, &cfg);
    if let Some((k, client)) = &kube {
        reconcile::spawn(shared.clone(), fixed, k.clone(), client.clone());
    }
    {
        let mut c = shared.lock();
        c.ready = true;
        info!(bpffs = %cfg.bpffs.display(), socket = %cfg.socket.display(), interfaces = c.ifaces.len(), faults = c.faults.len(), adopted, xdp = cfg.roles.xdp, "daemon ready");
    }
    event_loop(&shared, &mut ebpf, &cfg, events, servers).await?;
    if let Some((k, client)) = &kube {
        match reconcile::successor(client, k).await {
            Ok(why) => {
                // As after a crash: pinned links and maps keep judging; the next pod adopts
                // them, or the heartbeat grace ends the faults if none comes.
                let c = shared.lock();
                info!(faults = c.faults.len(), grace = ?cfg.grace, reason = %why, "stopping: handing the node over, programs and faults left in place");
                return Ok(());
            }
            Err(why) => info!(reason = %why, "no successor"),
        }
    }
    teardown(shared, ebpf, &cfg);
    Ok(())
}

/// Removes a file when dropped.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// The listeners, bound before anything is loaded (a taken address refuses the start).
struct Bound {
    socket: UnixListener,
    tcp: Option<(TcpListener, String)>,
    metrics: Option<TcpListener>,
}

async fn bind(cfg: &Config) -> Result<Bound> {
    let socket = bind_socket(&cfg.socket)?;
    let tcp = match &cfg.listen {
        Some((a, token)) => Some((bind_tcp("--listen", *a).await?, token.clone())),
        None => None,
    };
    let metrics = match cfg.metrics {
        Some(a) => Some(bind_tcp("--metrics-addr", a).await?),
        None => None,
    };
    Ok(Bound {
        socket,
        tcp,
        metrics,
    })
}

async fn bind_tcp(flag: &str, a: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(a)
        .await
        .with_context(|| format!("{flag}: binding {a}; choose a free address"))
}

/// The programs verified and the maps pinned (or opened from the pins of a previous instance).
struct Loaded {
    ebpf: Ebpf,
    maps: Maps,
    /// The maps were pinned already: a previous instance's, with its faults.
    adopted: bool,
    features: Features,
}

fn load(cfg: &Config) -> Result<Loaded> {
    // A previous instance's pins, checked before anything is created or loaded.
    let adopted = maps::ALL.iter().any(|m| cfg.bpffs.join(m).exists());
    if adopted {
        crate::kernel::pins::check(&cfg.bpffs, crate::EBPF_OBJECT)?;
    }
    std::fs::create_dir_all(attach::links_dir(&cfg.bpffs)).with_context(|| {
        format!(
            "--bpffs: creating the pin directory {} (is bpffs mounted on /sys/fs/bpf?)",
            cfg.bpffs.display()
        )
    })?;
    let features = Features {
        tcx: features::tcx(),
        fq: features::fq(),
        btf: features::btf(),
        edt_stamp: features::edt_stamp(),
    };
    info!(
        tcx = features.tcx,
        fq = features.fq,
        btf = features.btf,
        edt_stamp = features.edt_stamp,
        "kernel features"
    );
    let mut ebpf = crate::kernel::programs::loader(&cfg.bpffs, features.edt_stamp)
        .load(crate::EBPF_OBJECT)
        .context("loading the eBPF object")?;
    for prog in [
        programs::TC_VETH_EGRESS,
        programs::TC_OVERLAY_EGRESS,
        programs::TC_VETH_INGRESS,
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
    Ok(Loaded {
        ebpf,
        maps,
        adopted,
        features,
    })
}

/// The control words, and the fault set: a previous instance's (rebuilt from its records) or
/// a new, empty and armed one.
fn adopt(cfg: &Config, l: &mut Loaded) -> Result<FaultSet> {
    l.maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns())?;
    l.maps
        .set_ctrl(ctrl::GRACE_NS, cfg.grace.as_nanos() as u64)?;
    l.maps.set_ctrl(
        ctrl::EARLY,
        if cfg.roles.xdp {
            ctrl::EARLY_XDP
        } else {
            ctrl::EARLY_TC
        },
    )?;
    l.maps
        .set_ctrl(ctrl::CLONE_MARK, u64::from(cfg.clone_mark))?;
    l.maps
        .set_ctrl(ctrl::RATE_PACE, u64::from(l.features.holds()))?;
    if !l.adopted {
        l.maps.set_ctrl(ctrl::ARMED, 1)?;
        return Ok(FaultSet::default());
    }
    // Off the API's path: the first changes then write only the array entries that differ.
    // Without it (a failed read) they write every entry, as before.
    if let Err(e) = l.maps.read_back_arrays() {
        warn!(
            error = format!("{e:#}"),
            "reading back the adopted fault arrays"
        );
    }
    let (set, dropped) = FaultSet::adopt(&mut l.maps, monotonic_ns())?;
    info!(faults = set.len(), dropped = ?dropped, "adopted the faults of a previous instance");
    Ok(set)
}

/// The fq qdiscs: what a previous instance installed, then what the faults need now.
fn start_fq(shared: &Shared, adopted: bool) {
    let mut c = shared.lock();
    c.save_clsact();
    if adopted && let Some(st) = fq::FqState::adopt(&c.maps) {
        c.fq = st;
    }
    c.sync_fq();
}

/// Serves the API (Unix socket, and TCP behind the token) and the metrics, one task each; an API
/// task marks itself stopped in the readiness when it ends.
fn spawn_servers(b: Bound, shared: &Shared, cfg: &Config) -> JoinSet<()> {
    let state = ApiState {
        shared: shared.clone(),
        listeners: Listeners::default(),
        xdp: cfg.roles.xdp,
    };
    let mut servers = JoinSet::new();
    let up = state
        .listeners
        .serving(format!("the API on {}", cfg.socket.display()));
    let r = api::router(state.clone());
    servers.spawn(async move {
        let _up = up;
        serve::serve(b.socket, r).await
    });
    if let Some((l, token)) = b.tcp {
        let at = l
            .local_addr()
            .map_or_else(|_| "TCP".into(), |a| a.to_string());
        let up = state.listeners.serving(format!("the API on {at}"));
        let r = api::router_with_token(state.clone(), token);
        servers.spawn(async move {
            let _up = up;
            serve::serve(l, r).await
        });
    }
    if let Some(l) = b.metrics {
        let r = metrics::router(state);
        servers.spawn(serve::serve(l, r));
    }
    servers
}

/// Until SIGTERM/SIGINT: the heartbeat and a rescan every second, link events as they come.
async fn event_loop(
    shared: &Shared,
    ebpf: &mut Ebpf,
    cfg: &Config,
    mut events: mpsc::UnboundedReceiver<LinkEvent>,
    mut servers: JoinSet<()>,
) -> Result<()> {
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => { r?; break; }
            _ = beat.tick() => {
                heartbeat(shared);
                links::rescan(shared, ebpf, cfg);
            }
            Some(ev) = events.recv() => links::on_link(shared, ebpf, cfg, ev),
            Some(r) = servers.join_next() => warn!(result = ?r, "a listener stopped"),
        }
    }
    servers.abort_all();
    Ok(())
}

/// Every second: the heartbeat the kernel checks, and forgetting faults past their deadline.
fn heartbeat(shared: &Shared) {
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

/// A clean stop: qdiscs restored, programs detached, pins and the socket removed.
fn teardown(shared: Shared, ebpf: Ebpf, cfg: &Config) {
    info!("stopping: detaching programs, removing pins, restoring qdiscs");
    let mut c = shared.lock();
    c.fq.restore_all();
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
fn bind_socket(path: &Path) -> Result<UnixListener> {
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
    // Bound under a temporary name, made 0600, then renamed into place: nobody can connect
    // through a window in which the socket still has the umask's mode.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = Path::new(&tmp);
    let _ = std::fs::remove_file(tmp);
    let l = UnixListener::bind(tmp).with_context(|| format!("binding {}", tmp.display()))?;
    let placed = std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(tmp);
        return Err(e).with_context(|| format!("placing the API socket at {}", path.display()));
    }
    Ok(l)
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
