//! Packet parsing shared by every hook: Ethernet, up to two VLAN tags, IPv4/IPv6 destination.
//! Anything it does not understand yields `None`, and the caller passes the packet untouched.

use aya_ebpf::programs::TcContext;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

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

/// The destination address of an IP packet, in network byte order.
#[derive(Clone, Copy)]
pub enum Dst {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// Finds the IP destination of an Ethernet frame, or `None` for anything else or anything malformed.
#[inline(always)]
pub fn destination<B: Bytes>(pkt: &B) -> Option<Dst> {
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
        ETH_P_IP => {
            let vihl = pkt.read::<u8>(off)?;
            // Version 4 and a header of at least 20 bytes; otherwise it is not an IPv4 header.
            if vihl >> 4 != 4 || vihl & 0x0f < 5 {
                return None;
            }
            // The whole header, options included, must be there.
            pkt.read::<u8>(off + usize::from(vihl & 0x0f) * 4 - 1)?;
            Some(Dst::V4(pkt.read::<[u8; 4]>(off + 16)?))
        }
        ETH_P_IPV6 => {
            if pkt.read::<u8>(off)? >> 4 != 6 {
                return None;
            }
            Some(Dst::V6(pkt.read::<[u8; 16]>(off + 24)?))
        }
        _ => None,
    }
}
