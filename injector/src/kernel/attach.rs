//! Attaching the programs to an interface by its role, pinning the links (so they outlive a
//! SIGKILL), adopting the pinned links of a previous instance by swapping the program inside them
//! (no gap, nothing attached twice), and detaching on a clean stop.

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::programs::{
    SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifierLink},
    xdp::XdpLink,
};
use injector_common::programs;
use serde::{Deserialize, Serialize};

use crate::kernel::features;

/// What an interface is to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A pod's host veth: drops judged at ingress (TC, or XDP with `--xdp`), the rest at egress.
    PodVeth,
    /// The bridge (cni0): observed only, with `--observe`; nothing attached without.
    Bridge,
    /// The overlay (flannel.1): judged at egress, observed at ingress with `--observe`.
    Overlay,
}

impl Role {
    /// As the API writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Role::PodVeth => "pod_veth",
            Role::Bridge => "bridge",
            Role::Overlay => "overlay",
        }
    }
}

pub struct Roles {
    pub bridge: String,
    pub overlay: String,
    pub xdp: bool,
    /// `tc_observe` on the bridge (both ways) and the overlay's ingress: counters of what the
    /// node forwards (`injector_hook_packets{hook="observe"}`), at the price of one more program
    /// run per packet at each (three for a packet between nodes; bench part 1). Off by default.
    pub observe: bool,
}

impl Roles {
    pub fn of(&self, name: &str) -> Role {
        if name == self.overlay {
            Role::Overlay
        } else if name == self.bridge {
            Role::Bridge
        } else {
            Role::PodVeth
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Hook {
    Tc(&'static str, TcAttachType),
    Xdp(&'static str),
}

impl Hook {
    fn label(&self) -> String {
        match self {
            Hook::Tc(p, TcAttachType::Ingress) => format!("tc_ingress:{p}"),
            Hook::Tc(p, _) => format!("tc_egress:{p}"),
            Hook::Xdp(p) => format!("xdp:{p}"),
        }
    }
}

fn hooks(role: Role, xdp: bool, observe: bool) -> Vec<Hook> {
    use TcAttachType::{Egress, Ingress};
    match role {
        Role::Overlay if observe => vec![
            Hook::Tc(programs::TC_OBSERVE, Ingress),
            Hook::Tc(programs::TC_OVERLAY_EGRESS, Egress),
        ],
        Role::Overlay => vec![Hook::Tc(programs::TC_OVERLAY_EGRESS, Egress)],
        Role::Bridge if observe => vec![
            Hook::Tc(programs::TC_OBSERVE, Ingress),
            Hook::Tc(programs::TC_OBSERVE, Egress),
        ],
        Role::Bridge => vec![],
        // The ingress judge last: a veth counts as judged at ingress (`early_judged`) once it
        // is there, and then every hook is. With XDP, the TC ingress program only records the
        // packet for egress (a packet NAT changes on the way is judged again there).
        Role::PodVeth if xdp => vec![
            Hook::Tc(programs::TC_VETH_EGRESS, Egress),
            Hook::Tc(programs::TC_VETH_INGRESS, Ingress),
            Hook::Xdp(programs::XDP_VETH),
        ],
        Role::PodVeth => vec![
            Hook::Tc(programs::TC_VETH_EGRESS, Egress),
            Hook::Tc(programs::TC_VETH_INGRESS, Ingress),
        ],
    }
}

/// What the daemon attached to one interface, for status and for a clean stop.
#[derive(Clone, Debug)]
pub struct IfaceStatus {
    pub ifindex: u32,
    pub role: Role,
    /// `tc_ingress:prog`, `tc_egress:prog`, `xdp:prog`.
    pub hooks: Vec<String>,
    /// Hooks taken over from a previous instance's pinned links.
    pub adopted: usize,
    pub error: Option<String>,
    pub added_clsact: bool,
    pub pins: Vec<PathBuf>,
}

impl IfaceStatus {
    /// A judge of the early stage is attached at this veth's ingress (XDP, or TC ingress; it is
    /// the last hook attached, so all the others are too).
    pub fn judges_early(&self, xdp: bool) -> bool {
        let tc = Hook::Tc(programs::TC_VETH_INGRESS, TcAttachType::Ingress).label();
        self.hooks
            .iter()
            .any(|h| if xdp { h.starts_with("xdp:") } else { *h == tc })
    }
}

/// The interfaces whose entering packets' drops were judged at ingress (TC by default, XDP with
/// `--xdp`), as status reports them (`early_judged`): every pod veth with an ingress judge
/// attached, and the bridge, since what a pod sends to be routed (to another node) enters the
/// host stack through the bridge after its veth judged it, while *every* pod veth has the judge.
/// (The programs learn it per packet: the ingress hook's record says whether it was judged, so
/// a veth without the judge has its packets' drops judged at egress, see injector-ebpf's
/// early.rs.)
pub fn early_judged<'a>(ifaces: impl IntoIterator<Item = &'a IfaceStatus>, xdp: bool) -> Vec<u32> {
    let ifaces: Vec<&IfaceStatus> = ifaces.into_iter().collect();
    let veths = || ifaces.iter().filter(|s| s.role == Role::PodVeth);
    let mut out: Vec<u32> = veths()
        .filter(|s| s.judges_early(xdp))
        .map(|s| s.ifindex)
        .collect();
    if veths().all(|s| s.judges_early(xdp)) {
        out.extend(
            ifaces
                .iter()
                .filter(|s| s.role == Role::Bridge)
                .map(|s| s.ifindex),
        );
    }
    out
}

/// What [`maps::XDP_IFACES`](injector_common::maps::XDP_IFACES) holds: the pod veths whose XDP
/// program judges drops (`--xdp`; none without), which `tc_veth_ingress` asks about its own
/// interface.
pub fn xdp_judged<'a>(ifaces: impl IntoIterator<Item = &'a IfaceStatus>, xdp: bool) -> Vec<u32> {
    if !xdp {
        return Vec::new();
    }
    ifaces
        .into_iter()
        .filter(|s| s.role == Role::PodVeth && s.judges_early(true))
        .map(|s| s.ifindex)
        .collect()
}

pub fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

fn pin_path(bpffs: &Path, iface: &str, h: &Hook) -> PathBuf {
    // bpffs refuses '.' in names (reserved for its own files): flannel.1 -> flannel_1.
    let (what, prog) = match h {
        Hook::Tc(p, TcAttachType::Ingress) => ("ingress", p),
        Hook::Tc(p, _) => ("egress", p),
        Hook::Xdp(p) => ("xdp", p),
    };
    links_dir(bpffs).join(format!("{}-{what}-{prog}", iface.replace('.', "_")))
}

/// Takes over a pinned link: the program inside it is swapped for ours in one step.
fn adopt(ebpf: &mut aya::Ebpf, h: &Hook, pin: &Path) -> Result<bool> {
    let old = match PinnedLink::from_pin(pin) {
        Ok(l) => FdLink::from(l),
        Err(_) => return Ok(false),
    };
    match *h {
        Hook::Tc(prog, _) => {
            let p: &mut SchedClassifier = ebpf
                .program_mut(prog)
                .context("program missing")?
                .try_into()?;
            let link = SchedClassifierLink::try_from(old)?;
            let id = p
                .attach_to_link(link)
                .with_context(|| format!("swapping {prog} into {}", pin.display()))?;
            // The pin still holds the link; closing our handle leaves it attached.
            drop(FdLink::try_from(p.take_link(id)?)?);
        }
        Hook::Xdp(prog) => {
            let p: &mut Xdp = ebpf
                .program_mut(prog)
                .context("program missing")?
                .try_into()?;
            let link = XdpLink::try_from(old)?;
            let id = p
                .attach_to_link(link)
                .with_context(|| format!("swapping {prog} into {}", pin.display()))?;
            drop(FdLink::try_from(p.take_link(id)?)?);
        }
    }
    Ok(true)
}

/// Attaches every hook of `name`'s role (adopting pinned links where they exist).
/// `owned_clsact`: an earlier instance of ours created this interface's clsact qdisc (netlink
/// path), so a clean stop removes it even though this instance found it in place.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    bpffs: &Path,
    roles: &Roles,
    ifindex: u32,
    name: &str,
    owned_clsact: bool,
) -> IfaceStatus {
    let role = roles.of(name);
    let mut st = IfaceStatus {
        ifindex,
        role,
        hooks: vec![],
        adopted: 0,
        error: None,
        added_clsact: false,
        pins: vec![],
    };
    if let Err(e) = attach_inner(ebpf, bpffs, roles, name, owned_clsact, &mut st) {
        st.error = Some(format!("{e:#}"));
    }
    st
}

fn attach_inner(
    ebpf: &mut aya::Ebpf,
    bpffs: &Path,
    roles: &Roles,
    name: &str,
    owned_clsact: bool,
    st: &mut IfaceStatus,
) -> Result<()> {
    let tcx = features::tcx();
    let wanted = hooks(st.role, roles.xdp, roles.observe);
    // A bridge without `--observe`: nothing to attach. With TCX, not even a clsact (a previous
    // instance's observers go with their pins, `remove_stale_pins`); through netlink the clsact
    // is added, or found, to take a previous instance's observer filters out below (they
    // outlive it), and removed on a clean stop if this instance added it.
    if wanted.is_empty() && tcx {
        return Ok(());
    }
    if !tcx {
        match tc::qdisc_add_clsact(name) {
            Ok(()) => st.added_clsact = true,
            // Already there (ours from an earlier instance, or another tool's): aya reports EEXIST
            // as a netlink error ("Exclusivity flag on").
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                st.added_clsact = owned_clsact
            }
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                st.added_clsact = owned_clsact
            }
            Err(e) => return Err(e).with_context(|| format!("adding clsact to {name}")),
        }
        // Netlink filters outlive their process: take out a previous instance's before adding
        // ours, so nothing runs twice (a gap of a few syscalls; TCX swaps without one). All the
        // role's filters, also the observers this instance does not want.
        for h in hooks(st.role, roles.xdp, true) {
            if let Hook::Tc(prog, at) = h {
                match tc::qdisc_detach_program(name, at, prog) {
                    Ok(()) => st.adopted += 1,
                    Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("removing an earlier {prog} from {name}"));
                    }
                }
            }
        }
    }
    for h in wanted {
        let pin = pin_path(bpffs, name, &h);
        if (tcx || matches!(h, Hook::Xdp(_))) && adopt(ebpf, &h, &pin)? {
            st.adopted += 1;
            st.pins.push(pin);
            st.hooks.push(h.label());
            continue;
        }
        let link: Option<FdLink> = match h {
            Hook::Tc(prog, at) => {
                let p: &mut SchedClassifier = ebpf
                    .program_mut(prog)
                    .context("program missing")?
                    .try_into()?;
                let id = p
                    .attach(name, at)
                    .with_context(|| format!("attaching {prog} to {name} {at:?}"))?;
                // TCX links can be pinned (they then outlive us); netlink filters outlive us anyway.
                if tcx {
                    Some(p.take_link(id)?.try_into()?)
                } else {
                    None
                }
            }
            Hook::Xdp(prog) => {
                let p: &mut Xdp = ebpf
                    .program_mut(prog)
                    .context("program missing")?
                    .try_into()?;
                let id = p
                    .attach(name, XdpMode::default())
                    .with_context(|| format!("attaching {prog} to {name}"))?;
                Some(p.take_link(id)?.try_into()?)
            }
        };
        if let Some(l) = link {
            // The pin holds the link from now on; our handle may go.
            drop(
                l.pin(&pin)
                    .with_context(|| format!("pinning {}", pin.display()))?,
            );
            st.pins.push(pin);
        }
        st.hooks.push(h.label());
    }
    Ok(())
}

/// Detaches what `st` attached: removing a pin releases its link (the program detaches).
pub fn detach(name: &str, st: &IfaceStatus) -> Vec<String> {
    let mut errors = Vec::new();
    for p in &st.pins {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {e}", p.display()));
        }
    }
    if st.added_clsact
        && let Err(e) = crate::kernel::qdisc::delete_clsact(name)
        && e.raw_os_error() != Some(libc::ENODEV)
    {
        errors.push(format!("removing the clsact qdisc of {name}: {e}"));
    }
    errors
}

/// Removes link pins no current interface owns (left by a previous instance for devices now gone).
pub fn remove_stale_pins(bpffs: &Path, keep: &[PathBuf]) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(links_dir(bpffs)) {
        for e in rd.flatten() {
            if !keep.contains(&e.path()) && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(ifindex: u32, role: Role, hooks: &[&str]) -> IfaceStatus {
        IfaceStatus {
            ifindex,
            role,
            hooks: hooks.iter().map(|h| h.to_string()).collect(),
            adopted: 0,
            error: None,
            added_clsact: false,
            pins: vec![],
        }
    }

    #[test]
    fn roles_are_named_as_serialized() {
        for r in [Role::PodVeth, Role::Bridge, Role::Overlay] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }

    fn labels(role: Role, xdp: bool) -> Vec<String> {
        hooks(role, xdp, false).iter().map(Hook::label).collect()
    }

    #[test]
    fn observers_only_with_observe() {
        for xdp in [false, true] {
            let labels = |role, observe| -> Vec<String> {
                hooks(role, xdp, observe).iter().map(Hook::label).collect()
            };
            assert!(labels(Role::Bridge, false).is_empty());
            assert_eq!(
                labels(Role::Bridge, true),
                ["tc_ingress:tc_observe", "tc_egress:tc_observe"]
            );
            assert_eq!(
                labels(Role::Overlay, false),
                [format!("tc_egress:{}", programs::TC_OVERLAY_EGRESS)]
            );
            assert_eq!(labels(Role::Overlay, true).len(), 2);
            // A pod veth's hooks do not depend on it.
            assert_eq!(labels(Role::PodVeth, false), labels(Role::PodVeth, true));
        }
    }

    #[test]
    fn the_bridge_is_judged_early_only_while_every_pod_veth_judges_at_ingress() {
        let bridge = iface(1, Role::Bridge, &["tc_ingress:tc_observe"]);
        let overlay = iface(2, Role::Overlay, &["tc_egress:tc_overlay_egress"]);
        for xdp in [false, true] {
            let full = labels(Role::PodVeth, xdp);
            let full: Vec<&str> = full.iter().map(String::as_str).collect();
            let (a, b) = (
                iface(10, Role::PodVeth, &full),
                iface(11, Role::PodVeth, &full),
            );
            assert_eq!(early_judged([&bridge, &overlay, &a, &b], xdp), [10, 11, 1]);
            // b's last attach (the ingress judge) failed: its egress hook is there, it is not.
            let mut failed = iface(11, Role::PodVeth, &full[..full.len() - 1]);
            failed.error = Some("attaching the ingress judge to b: ERANGE".into());
            assert_eq!(
                early_judged([&bridge, &overlay, &a, &failed], xdp),
                [10],
                "a veth without the judge: not every packet entering through the bridge was \
                 judged early (xdp: {xdp})"
            );
            // XDP_IFACES: the veths XDP judges at, only those, and none without --xdp.
            let want: &[u32] = if xdp { &[10] } else { &[] };
            assert_eq!(xdp_judged([&bridge, &overlay, &a, &failed], xdp), want);
        }
        // The observer alone judges nothing; with --xdp, the TC ingress program only records.
        let observed = iface(12, Role::PodVeth, &["tc_ingress:tc_observe"]);
        assert!(!observed.judges_early(false) && !observed.judges_early(true));
        let recording = iface(13, Role::PodVeth, &["tc_ingress:tc_veth_ingress"]);
        assert!(recording.judges_early(false) && !recording.judges_early(true));
    }
}
