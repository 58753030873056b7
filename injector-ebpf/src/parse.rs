//! Packet parsing shared by every hook: Ethernet, up to two VLAN tags, IPv4 (options, fragments),
//! IPv6 (extension header chain, fragments), TCP/UDP ports. Anything it does not understand yields
//! `None`, and the caller passes the packet untouched (fail open).
//!
//! Header layouts and constants come from `network-types`; it has no IPv6 extension headers, so
//! those (`ExtHdr`) are defined here. The other headers are read whole: a truncated one fails.

use aya_ebpf::programs::{TcContext, XdpContext};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

pub const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
pub const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub const IPPROTO_UDP: u8 = IpProto::Udp as u8;
pub const IPPROTO_ICMPV6: u8 = IpProto::Ipv6Icmp as u8;
const IPPROTO_HOPOPTS: u8 = IpProto::HopOpt as u8;
const IPPROTO_ROUTING: u8 = IpProto::Ipv6Route as u8;
const IPPROTO_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const IPPROTO_AH: u8 = IpProto::Ah as u8;
const IPPROTO_DSTOPTS: u8 = IpProto::Ipv6Opts as u8;

// EtherTypes as they sit in the packet (network-types keeps them in network byte order), so a
// raw field compares without a byte swap.
pub const ETH_P_IP: u16 = EtherType::Ipv4 as u16;
pub const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;

/// Most IPv6 extension headers walked; a chain of exactly this many is parsed, a longer one is
/// given up on (the packet passes).
const MAX_EXT_HEADERS: usize = 6;

/// The start of an IPv6 extension header (RFC 8200 section 4; AH: RFC 4302), which is all the
/// walk needs: the next header's type, then the length (hop-by-hop, routing and destination
/// options: in 8-byte units not counting the first 8; AH: in 4-byte units minus 2), or for a
/// fragment header (always 8 bytes) a reserved byte and then the offset. network-types 0.2 has no
/// extension header types, hence this one. Only these 4 bytes are read (on XDP a wider read costs a
/// load per byte); a header cut short after them fails at the next read, except a non-first
/// fragment's, after which nothing is read.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next_hdr: u8,
    hdr_ext_len: u8,
    frag_off: [u8; 2],
}

/// Bytes of a packet, read at an offset. Reads past the end fail instead of faulting.
pub trait Bytes {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
    /// [`Bytes::read`] of a header the parser walks, on the path of every packet;
    /// [`LinearTc`] reads these from the linear data where it can.
    #[inline(always)]
    fn header<T: Copy>(&self, off: usize) -> Option<T> {
        self.read(off)
    }
    /// The segments the packet becomes on the wire (a GSO packet: several); 1 by default.
    #[inline(always)]
    fn gso_segs(&self) -> u32 {
        1
    }
    /// Copies up to `buf.len()` bytes from `off` (fewer at the packet's end) into `buf`: how
    /// many. Only TC reads this way (DNS names); elsewhere `None`.
    #[inline(always)]
    fn read_into<const N: usize>(&self, _off: usize, _buf: &mut [u8; N]) -> Option<usize> {
        None
    }
}

impl Bytes for TcContext {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        // bpf_skb_load_bytes: bounds-checked by the kernel, also reads non-linear data.
        self.load::<T>(off).ok()
    }

    #[inline(always)]
    fn gso_segs(&self) -> u32 {
        // SAFETY: reading a context field (0 for a packet that is not GSO).
        unsafe { (*self.skb.skb).gso_segs }.max(1)
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, off: usize, buf: &mut [u8; N]) -> Option<usize> {
        // Not aya's load_bytes: the verifier needs the length proved to lie in 1..=N. A test of
        // `n == 0` does not do it: LLVM turns it into one of `len == off`, which bounds nothing,
        // and 6.1 loses a bound learned on a register its spilled copy had. Arithmetic does
        // (N is a power of two): n in 1..=N is kept, 0 becomes N, which the helper then refuses
        // (the packet lacks those bytes).
        let n = (self.len() as usize).checked_sub(off)?.min(N);
        let n = (n.wrapping_sub(1) & (N - 1)) + 1;
        // SAFETY: `n` bytes into a buffer of `N >= n`; the helper checks the packet's bounds.
        let r = unsafe {
            aya_ebpf::helpers::bpf_skb_load_bytes(
                self.skb.skb.cast(),
                off as u32,
                buf.as_mut_ptr().cast(),
                n as u32,
            )
        };
        (r == 0).then_some(n)
    }
}

/// A TC packet whose parsed headers are read from the linear data directly where they lie there,
/// as a packet's headers nearly always do, through the helper otherwise. bpf_skb_load_bytes is a
/// call and a memcpy per header, four per IPv4 packet: in a BPF_PROG_TEST_RUN under perf here,
/// ~60 of the ~180 ns that judging a packet that matches no fault took (the calls' return thunks
/// included). Only the early stage's judge (`tc_veth_ingress`) reads so: in the two egress
/// judges the extra branches per header took 6.1's verifier past its million instructions
/// (753k -> over 1M for tc_vxlan_egress; 6.18: 214k -> 247k).
pub struct LinearTc<'a>(pub &'a TcContext);

impl Bytes for LinearTc<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.read(off)
    }

    #[inline(always)]
    fn header<T: Copy>(&self, off: usize) -> Option<T> {
        let (start, end) = (self.0.data(), self.0.data_end());
        // At least two bytes checked: for one, LLVM turns `p + 1 <= end` into `p < end`, from
        // which the verifier learns no range (a one-byte read at the linear data's last byte
        // takes the helper). The offset bound lets the verifier prove the access.
        let need = if core::mem::size_of::<T>() < 2 {
            2
        } else {
            core::mem::size_of::<T>()
        };
        if off <= 512 && start + off + need <= end {
            // SAFETY: within the linear data, checked just above; an unaligned read.
            return Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) });
        }
        self.0.read(off)
    }

    #[inline(always)]
    fn gso_segs(&self) -> u32 {
        self.0.gso_segs()
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, off: usize, buf: &mut [u8; N]) -> Option<usize> {
        self.0.read_into(off, buf)
    }
}

impl Bytes for XdpContext {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let start = self.data();
        let end = self.data_end();
        // Bound the offset so the verifier can prove the access; larger offsets are not headers.
        if off > 512 {
            return None;
        }
        let p = start + off;
        if p + core::mem::size_of::<T>() > end {
            return None;
        }
        // SAFETY: in bounds of the packet, checked just above; unaligned read.
        Some(unsafe { core::ptr::read_unaligned(p as *const T) })
    }
}

/// What the classifier needs of a packet.
#[derive(Clone, Copy)]
pub struct Flow {
    pub v6: bool,
    /// IPv4 in the first 4 bytes (rest zero), or IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    /// Ports are known: TCP/UDP and not a non-first fragment.
    pub has_ports: bool,
    pub sport: u16,
    pub dport: u16,
    /// Where the IP header starts (after Ethernet and VLAN tags).
    pub l3_off: u16,
    /// Where the L4 header starts; 0 for a non-first fragment (it has none).
    pub l4_off: u16,
}

/// Where a packet's headers are and what they are: what acting on a judged packet needs (the
/// rest it reads again; the judging path's stack is kept small).
#[derive(Clone, Copy)]
pub struct Layout {
    pub v6: bool,
    pub proto: u8,
    pub l3_off: u16,
    /// 0 for a non-first fragment.
    pub l4_off: u16,
}

impl Flow {
    #[inline(always)]
    pub fn layout(&self) -> Layout {
        Layout {
            v6: self.v6,
            proto: self.proto,
            l3_off: self.l3_off,
            l4_off: self.l4_off,
        }
    }
}

/// Ports of a TCP or UDP header at `off`, unless the packet is a non-first fragment (no header).
#[inline(always)]
fn l4<B: Bytes>(pkt: &B, flow: &mut Flow, off: usize, first_fragment: bool) -> Option<()> {
    if !first_fragment {
        return Some(());
    }
    flow.l4_off = off as u16;
    let (sport, dport) = match flow.proto {
        IPPROTO_TCP => {
            let h = pkt.header::<TcpHdr>(off)?;
            (u16::from_be_bytes(h.source), u16::from_be_bytes(h.dest))
        }
        IPPROTO_UDP => {
            let h = pkt.header::<UdpHdr>(off)?;
            (h.src_port(), h.dst_port())
        }
        _ => return Some(()),
    };
    flow.sport = sport;
    flow.dport = dport;
    flow.has_ports = true;
    Some(())
}

#[inline(always)]
fn ipv4<B: Bytes, R>(pkt: &B, off: usize, done: impl FnOnce(Flow) -> R) -> Option<R> {
    let h = pkt.header::<Ipv4Hdr>(off)?;
    let ihl = usize::from(h.ihl());
    // Version 4 and a header of at least 20 bytes, all of it present.
    if h.version() != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    pkt.header::<u8>(off + ihl - 1)?;
    let mut flow = Flow {
        v6: false,
        src: [0; 16],
        dst: [0; 16],
        proto: h.proto,
        has_ports: false,
        sport: 0,
        dport: 0,
        l3_off: off as u16,
        l4_off: 0,
    };
    flow.src[..4].copy_from_slice(&h.src_addr);
    flow.dst[..4].copy_from_slice(&h.dst_addr);
    l4(pkt, &mut flow, off + ihl, h.frag_offset() == 0)?;
    Some(done(flow))
}

#[inline(always)]
fn is_ext_header(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH
    )
}

#[inline(always)]
fn ipv6<B: Bytes, R>(pkt: &B, off: usize, done: impl FnOnce(Flow) -> R) -> Option<R> {
    let h = pkt.header::<Ipv6Hdr>(off)?;
    if h.version() != 6 {
        return None;
    }
    let mut flow = Flow {
        v6: true,
        src: h.src_addr,
        dst: h.dst_addr,
        proto: h.next_hdr,
        has_ports: false,
        sport: 0,
        dport: 0,
        l3_off: off as u16,
        l4_off: 0,
    };
    let mut off = off + Ipv6Hdr::LEN;
    // Walk up to MAX_EXT_HEADERS headers; what follows the last one walked must be upper-layer.
    for _ in 0..MAX_EXT_HEADERS {
        if !is_ext_header(flow.proto) {
            break;
        }
        let e = pkt.header::<ExtHdr>(off)?;
        let len = usize::from(e.hdr_ext_len);
        let this = flow.proto;
        flow.proto = e.next_hdr;
        off += match this {
            IPPROTO_FRAGMENT => {
                // Offset in 8-byte units, above 3 flag bits. A non-first fragment has no ports,
                // and what follows its header is data, not headers: its next header type (the
                // first header of the fragmentable part) is all there is to know of its protocol.
                if u16::from_be_bytes(e.frag_off) >> 3 != 0 {
                    return Some(done(flow));
                }
                8
            }
            IPPROTO_AH => (len + 2) * 4,
            _ => (len + 1) * 8,
        };
    }
    if is_ext_header(flow.proto) {
        // A longer chain than we walk: give up, pass the packet.
        return None;
    }
    l4(pkt, &mut flow, off, true)?;
    Some(done(flow))
}

/// Parses an Ethernet frame; `None` for anything that is not IPv4/IPv6 or is malformed.
#[inline(always)]
pub fn parse<B: Bytes>(pkt: &B) -> Option<Flow> {
    parse_then(pkt, |flow| flow)
}

/// [`parse`], handing the flow to `done` where each way of reading it ends, before those ways
/// join. For a caller that stores the flow (the egress judges, see `verdict::PARSED`): stored
/// after the join, the flow's fields were phis with undefined values from the ways that fail,
/// and LLVM loaded them from stack slots those ways never wrote, which 5.10's verifier refuses
/// ("invalid read from stack"; 6.1 and later allow it).
#[inline(always)]
pub fn parse_then<B: Bytes, R>(pkt: &B, done: impl FnOnce(Flow) -> R) -> Option<R> {
    let mut proto = pkt.header::<EthHdr>(0)?.ether_type;
    let mut off = EthHdr::LEN;
    // 802.1ad outer tag, then 802.1Q inner tag (either type in either place).
    for _ in 0..2 {
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = pkt.header::<VlanHdr>(off)?.ether_type;
            off += VlanHdr::LEN;
        }
    }
    match proto {
        ETH_P_IP => ipv4(pkt, off, done),
        ETH_P_IPV6 => ipv6(pkt, off, done),
        _ => None,
    }
}
