//! The reference the kernel programs are compared with: what a judging hook must do with a packet,
//! read from the faults as validated (`Fault`: CIDRs, port ranges, protocol, action), not from
//! the image the compiler writes for the kernel, and written from the documented rules (README,
//! docs/modifiers.md), not from the eBPF code: plain slices, addresses as `IpAddr`, CIDR
//! containment, every rule of every fault tried in turn. Only outcomes that are certain are
//! modelled: probabilities of 0 or 1, delays without jitter.

use std::net::IpAddr;

use injector::{
    fault::{
        action::Action,
        loss::Loss,
        spec::{Fault, PortRange, Proto},
    },
    parse::Cidr,
};
use injector_common::{FaultCounters, JudgeHook, MAX_MATCHES_PER_PACKET, Outcome, Reply};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// What the parser must find in a packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow {
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol (after the IPv6 extension headers walked).
    pub proto: u8,
    /// Source and destination port: TCP and UDP, not in a non-first fragment.
    pub ports: Option<(u16, u16)>,
    pub l3: usize,
    /// Where the upper-layer header starts; `None` in a non-first fragment.
    pub l4: Option<usize>,
}

/// The bytes a hook can read: all of them at TC; at XDP, reads starting past offset 512 are
/// refused (the bound the verifier needs; deeper headers are not headers we look at).
struct Pkt<'a> {
    b: &'a [u8],
    xdp: bool,
}

impl Pkt<'_> {
    fn get(&self, off: usize, n: usize) -> Option<&[u8]> {
        if self.xdp && off > 512 {
            return None;
        }
        self.b.get(off..off.checked_add(n)?)
    }
    fn u8(&self, off: usize) -> Option<u8> {
        self.get(off, 1).map(|b| b[0])
    }
    fn u16(&self, off: usize) -> Option<u16> {
        self.get(off, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// IPv6 extension headers that are walked (RFC 8200 4.1, and AH); others end the chain.
fn extension(h: u8) -> bool {
    matches!(h, 0 | 43 | 44 | 51 | 60)
}

/// Parses an Ethernet frame as the judging hooks must: up to two VLAN tags (802.1Q or 802.1ad),
/// IPv4 with options, IPv6 with up to six extension headers; TCP and UDP ports when the packet is
/// a first fragment. `None`: not IP, or malformed or cut short where a header must be read.
pub fn parse(b: &[u8], xdp: bool) -> Option<Flow> {
    let p = Pkt { b, xdp };
    p.get(0, 14)?;
    let mut ether = p.u16(12)?;
    let mut l3 = 14;
    for _ in 0..2 {
        if ether == 0x8100 || ether == 0x88a8 {
            p.get(l3, 4)?;
            ether = p.u16(l3 + 2)?;
            l3 += 4;
        }
    }
    let (flow, first_fragment, l4) = match ether {
        0x0800 => {
            let h = p.get(l3, 20)?;
            let ihl = usize::from(h[0] & 0xf) * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return None;
            }
            p.u8(l3 + ihl - 1)?;
            let src: [u8; 4] = h[12..16].try_into().unwrap();
            let dst: [u8; 4] = h[16..20].try_into().unwrap();
            let offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            let flow = Flow {
                v6: false,
                src: src.into(),
                dst: dst.into(),
                proto: h[9],
                ports: None,
                l3,
                l4: None,
            };
            (flow, offset == 0, l3 + ihl)
        }
        0x86dd => {
            let h = p.get(l3, 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let src: [u8; 16] = h[8..24].try_into().unwrap();
            let dst: [u8; 16] = h[24..40].try_into().unwrap();
            let mut flow = Flow {
                v6: true,
                src: src.into(),
                dst: dst.into(),
                proto: h[6],
                ports: None,
                l3,
                l4: None,
            };
            let mut at = l3 + 40;
            let mut walked = 0;
            while extension(flow.proto) {
                if walked == 6 {
                    return None; // a longer chain than is walked
                }
                walked += 1;
                let e = p.get(at, 4)?;
                let this = flow.proto;
                flow.proto = e[0];
                at += match this {
                    44 if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 => {
                        // A non-first fragment: what follows is data.
                        return Some(flow);
                    }
                    44 => 8,
                    51 => (usize::from(e[1]) + 2) * 4,
                    _ => (usize::from(e[1]) + 1) * 8,
                };
            }
            (flow, true, at)
        }
        _ => return None,
    };
    let mut flow = flow;
    if first_fragment {
        flow.l4 = Some(l4);
        flow.ports = match flow.proto {
            TCP => {
                let h = p.get(l4, 20)?;
                Some((
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                ))
            }
            UDP => {
                let h = p.get(l4, 8)?;
                Some((
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                ))
            }
            _ => None,
        };
    }
    Some(flow)
}

/// A fault as installed, with what the clock says of it.
pub struct Installed {
    pub fault: Fault,
    /// Past its deadline.
    pub expired: bool,
    /// Before its start.
    pub pending: bool,
}

/// What a hook must do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Turned into a reply to its sender.
    Reject,
    /// Delivered changed: held this long, sent twice, one payload bit flipped in
    /// `corrupt` (offset, length of the payload).
    Change {
        delay_ns: u64,
        duplicate: bool,
        corrupt: Option<(usize, usize)>,
    },
}

/// The verdict, each fault's counters at this hook, and the hook's statistics that depend on
/// the packet (whether it was parsed, expired faults matched).
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub counters: Vec<FaultCounters>,
    pub unparsed: bool,
    pub expired: u64,
}

fn addr_in(set: &[Cidr], except: &[Cidr], a: IpAddr) -> bool {
    let host = Cidr {
        addr: a,
        len: if a.is_ipv4() { 32 } else { 128 },
    };
    (set.is_empty() || set.iter().any(|c| c.contains(&host)))
        && !except.iter().any(|c| c.contains(&host))
}

fn port_in(ranges: &[PortRange], p: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| (r.lo..=r.hi).contains(&p))
}

/// Whether `flow` goes the fault's way (`reverse`: the way back of a both-ways fault).
fn goes(f: &Fault, flow: &Flow, reverse: bool) -> bool {
    let (from, from_x, to, to_x, sport, dport) = if reverse {
        (
            &f.to,
            &f.to_except,
            &f.from,
            &f.from_except,
            &f.dport,
            &f.sport,
        )
    } else {
        (
            &f.from,
            &f.from_except,
            &f.to,
            &f.to_except,
            &f.sport,
            &f.dport,
        )
    };
    let proto = match f.proto {
        Proto::Any => true,
        Proto::Tcp => flow.proto == TCP,
        Proto::Udp => flow.proto == UDP,
        Proto::Icmp => flow.proto == ICMP || flow.proto == ICMPV6,
    };
    let ports = match flow.ports {
        Some((s, d)) => port_in(sport, s) && port_in(dport, d),
        // Without ports only a fault that names none matches.
        None => sport.is_empty() && dport.is_empty(),
    };
    proto && ports && addr_in(from, from_x, flow.src) && addr_in(to, to_x, flow.dst)
}

/// 0 or 1 as a certainty; the generator makes no other probabilities.
fn certain(p: f64) -> bool {
    assert!(
        p == 0.0 || p == 1.0,
        "the model knows certain outcomes only: {p}"
    );
    p == 1.0
}

fn lost(l: &Option<Loss>) -> bool {
    match l {
        None => false,
        Some(Loss::Random(p)) => certain(*p),
        Some(Loss::Bursty(_)) => panic!("the model has no bursty loss"),
    }
}

/// What a reject must do with the packet: answer it, drop it silently (no reply may be sent:
/// a non-first fragment, a multicast or broadcast destination, a TCP reset past IPv6 extension
/// headers), or let it pass (it is an error report itself: a RST, an ICMP error).
fn reject(b: &[u8], flow: &Flow, reply: Reply) -> Verdict {
    let Some(l4) = flow.l4 else {
        return Verdict::Drop;
    };
    let error = match flow.proto {
        TCP => b.get(l4 + 13).is_none_or(|f| f & 0x04 != 0),
        ICMP if !flow.v6 => b.get(l4).is_none_or(|t| [3, 4, 5, 11, 12].contains(t)),
        ICMPV6 if flow.v6 => b.get(l4).is_none_or(|t| *t < 128),
        _ => false,
    };
    if error {
        return Verdict::Pass;
    }
    let multicast = match flow.dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.octets()[0] >= 240,
        IpAddr::V6(a) => a.is_multicast(),
    };
    let reset_past_ext =
        reply.for_proto(flow.proto) == Reply::TcpReset && flow.v6 && l4 != flow.l3 + 40;
    if multicast || reset_past_ext {
        Verdict::Drop
    } else {
        Verdict::Reject
    }
}

/// The payload a bit may be flipped in: after the upper-layer header, up to the end the IP
/// header gives (or the packet's end).
fn payload(b: &[u8], flow: &Flow) -> Option<(usize, usize)> {
    let l4 = flow.l4?;
    let start = l4
        + match flow.proto {
            TCP => usize::from(b[l4 + 12] >> 4) * 4,
            UDP | ICMP | ICMPV6 => 8,
            _ => 0,
        };
    let at = |o: usize| usize::from(u16::from_be_bytes([b[o], b[o + 1]]));
    let ip_len = if flow.v6 {
        40 + at(flow.l3 + 4)
    } else {
        at(flow.l3 + 2)
    };
    let end = (flow.l3 + ip_len).min(b.len());
    (end > start).then(|| (start, end - start))
}

/// The destination of the packet's identity as early.rs takes it (an untagged IPv4 or IPv6
/// frame long enough for its addresses, and for the first four bytes after the IP header where
/// TCP or UDP ports would be there), without the parser's checks.
fn identity_dst(b: &[u8]) -> Option<IpAddr> {
    let at = |o: usize, n: usize| b.get(o..o + n);
    match u16::from_be_bytes(at(12, 2)?.try_into().unwrap()) {
        0x0800 => {
            let a: [u8; 4] = at(30, 4)?.try_into().unwrap();
            let proto = b[23];
            let later_fragment = u16::from_be_bytes([b[20], b[21]]) & 0x1fff != 0;
            let l4 = 14 + usize::from(b[14] & 0xf) * 4;
            if (proto == TCP || proto == UDP) && !later_fragment {
                at(l4, 4)?;
            }
            Some(IpAddr::from(a))
        }
        0x86dd => {
            let a: [u8; 16] = at(38, 16)?.try_into().unwrap();
            if b[20] == TCP || b[20] == UDP {
                at(54, 4)?;
            }
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// Whether `d` is a destination of fault `f` (of its way back too, for a both-ways fault),
/// whatever the rest of the packet: what the destination sets the kernel holds say.
fn names_destination(f: &Fault, d: IpAddr) -> bool {
    addr_in(&f.to, &f.to_except, d) || (f.both_ways && addr_in(&f.from, &f.from_except, d))
}

/// Judges packet `b` at hook `jh` against `faults` (in the order they were applied); `xdp`: the
/// hook is the XDP program (it reads headers within 512 bytes only).
pub fn judge(faults: &[Installed], b: &[u8], jh: JudgeHook, xdp: bool) -> Judged {
    let mut out = Judged {
        verdict: Verdict::Pass,
        counters: vec![FaultCounters::default(); faults.len()],
        unparsed: false,
        expired: 0,
    };
    // No fault of the stages this hook judges: the packet is not even parsed.
    if !faults
        .iter()
        .any(|f| f.fault.action.kind().stage() & jh.stages() != 0)
    {
        return out;
    }
    // The TC judges pass a packet whose destination no fault names before parsing it
    // (classify::destination_misses): counted seen, not unparsed.
    if !xdp
        && identity_dst(b).is_some_and(|d| !faults.iter().any(|f| names_destination(&f.fault, d)))
    {
        return out;
    }
    let Some(flow) = parse(b, xdp) else {
        out.unparsed = true;
        return out;
    };
    let bytes = b.len() as u64;
    // The rules the packet matches, in order: each fault's way, then its way back; only so many
    // are looked at per packet.
    let matching = faults
        .iter()
        .enumerate()
        .flat_map(|(i, f)| {
            let ways: &[bool] = if f.fault.both_ways {
                &[false, true]
            } else {
                &[false]
            };
            ways.iter()
                .filter(move |&&r| goes(&f.fault, &flow, r))
                .map(move |_| i)
        })
        .take(MAX_MATCHES_PER_PACKET as usize);
    let mut judged = vec![false; faults.len()];
    let (mut delay_ns, mut duplicate, mut corrupt) = (0, false, None);
    for i in matching {
        if std::mem::replace(&mut judged[i], true) {
            continue;
        }
        let Installed {
            fault: f,
            expired,
            pending,
        } = &faults[i];
        let kind = f.action.kind();
        if kind.stage() & jh.stages() == 0 {
            continue;
        }
        if *expired {
            out.expired += 1;
            continue;
        }
        let c = &mut out.counters[i];
        c.count(Outcome::Matched, bytes);
        if *pending || f.dry_run || f.flows_ppm == 0 {
            c.count(Outcome::Passed, bytes);
            continue;
        }
        assert_eq!(
            f.flows_ppm, 1_000_000,
            "the model selects all flows or none"
        );
        assert!(f.pulse.is_none(), "the model has no pulse");
        let (outcome, stop) = match &f.action {
            Action::Drop(l) => match lost(&Some(*l)) {
                true => (Outcome::Dropped, Some(Verdict::Drop)),
                false => (Outcome::Passed, None),
            },
            Action::Blackhole => (Outcome::Dropped, Some(Verdict::Drop)),
            Action::Delay {
                latency,
                jitter,
                reorder,
                loss,
            } => {
                assert!(jitter.is_zero(), "the model has no jitter");
                if lost(loss) {
                    (Outcome::Dropped, Some(Verdict::Drop))
                } else if certain(*reorder) {
                    (Outcome::Reordered, None)
                } else if flow.l3 != 14 {
                    // A VLAN-tagged frame cannot be held: the kernel stamps IP skbs only.
                    (Outcome::Passed, None)
                } else {
                    delay_ns += latency.as_nanos() as u64;
                    (Outcome::Delayed, None)
                }
            }
            Action::Reject(r) => match reject(b, &flow, *r) {
                Verdict::Pass => (Outcome::Passed, None),
                v => (Outcome::Rejected, Some(v)),
            },
            Action::Duplicate(p) if certain(*p) => {
                duplicate = true;
                (Outcome::Duplicated, None)
            }
            Action::Corrupt(p) if certain(*p) => match payload(b, &flow) {
                Some(at) => {
                    corrupt = Some(at);
                    (Outcome::Corrupted, None)
                }
                None => (Outcome::Passed, None),
            },
            Action::Duplicate(_) | Action::Corrupt(_) => (Outcome::Passed, None),
            Action::Rate(_) | Action::Dns(_) => panic!("the model has no {:?}", kind),
        };
        c.count(outcome, bytes);
        if let Some(v) = stop {
            out.verdict = v;
            return out;
        }
    }
    if delay_ns > 0 || duplicate || corrupt.is_some() {
        out.verdict = Verdict::Change {
            delay_ns,
            duplicate,
            corrupt,
        };
    }
    out
}
