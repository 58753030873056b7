//! Packet parsing shared by every hook: Ethernet, up to two VLAN tags, IPv4 (options, fragments),
//! IPv6 (extension header chain, fragments), TCP/UDP ports. Anything it does not understand yields
//! `None`, and the caller passes the packet untouched (fail open).

use aya_ebpf::programs::{TcContext, XdpContext};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// Most IPv6 extension headers walked before giving up (and passing the packet).
const MAX_EXT_HEADERS: usize = 6;

/// Bytes of a packet, read at an offset. Reads past the end fail instead of faulting.
pub trait Bytes {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

impl Bytes for TcContext {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        // bpf_skb_load_bytes: bounds-checked by the kernel, also reads non-linear data.
        self.load::<T>(off).ok()
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
}

#[inline(always)]
fn l4<B: Bytes>(pkt: &B, flow: &mut Flow, off: usize, first_fragment: bool) -> Option<()> {
    if first_fragment && (flow.proto == IPPROTO_TCP || flow.proto == IPPROTO_UDP) {
        let ports = pkt.read::<[u8; 4]>(off)?;
        flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
        flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
        flow.has_ports = true;
    }
    Some(())
}

#[inline(always)]
fn ipv4<B: Bytes>(pkt: &B, off: usize) -> Option<Flow> {
    let h = pkt.read::<[u8; 20]>(off)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    // Version 4 and a header of at least 20 bytes, all of it present.
    if h[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    pkt.read::<u8>(off + ihl - 1)?;
    let mut flow = Flow {
        v6: false,
        src: [0; 16],
        dst: [0; 16],
        proto: h[9],
        has_ports: false,
        sport: 0,
        dport: 0,
    };
    flow.src[..4].copy_from_slice(&h[12..16]);
    flow.dst[..4].copy_from_slice(&h[16..20]);
    let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    l4(pkt, &mut flow, off + ihl, frag_offset == 0)?;
    Some(flow)
}

#[inline(always)]
fn ipv6<B: Bytes>(pkt: &B, off: usize) -> Option<Flow> {
    let h = pkt.read::<[u8; 40]>(off)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut flow = Flow {
        v6: true,
        src: [0; 16],
        dst: [0; 16],
        proto: h[6],
        has_ports: false,
        sport: 0,
        dport: 0,
    };
    flow.src.copy_from_slice(&h[8..24]);
    flow.dst.copy_from_slice(&h[24..40]);
    let mut off = off + 40;
    let mut first_fragment = true;
    let mut done = false;
    for _ in 0..MAX_EXT_HEADERS {
        match flow.proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let e = pkt.read::<[u8; 2]>(off)?;
                flow.proto = e[0];
                off += (usize::from(e[1]) + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let e = pkt.read::<[u8; 4]>(off)?;
                flow.proto = e[0];
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    first_fragment = false;
                }
                off += 8;
            }
            IPPROTO_AH => {
                let e = pkt.read::<[u8; 2]>(off)?;
                flow.proto = e[0];
                off += (usize::from(e[1]) + 2) * 4;
            }
            _ => {
                done = true;
                break;
            }
        }
    }
    if !done {
        // A longer chain than we walk: give up, pass the packet.
        return None;
    }
    l4(pkt, &mut flow, off, first_fragment)?;
    Some(flow)
}

/// Parses an Ethernet frame; `None` for anything that is not IPv4/IPv6 or is malformed.
#[inline(always)]
pub fn parse<B: Bytes>(pkt: &B) -> Option<Flow> {
    let mut off = ETH_HLEN;
    let mut proto = u16::from_be(pkt.read::<u16>(off - 2)?);
    // 802.1ad outer tag, then 802.1Q inner tag; each is 4 bytes: TCI, then the next EtherType.
    for _ in 0..2 {
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = u16::from_be(pkt.read::<u16>(off + 2)?);
            off += 4;
        }
    }
    match proto {
        ETH_P_IP => ipv4(pkt, off),
        ETH_P_IPV6 => ipv6(pkt, off),
        _ => None,
    }
}
