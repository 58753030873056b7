//! Crafted packets for BPF_PROG_TEST_RUN: Ethernet, VLAN tags, IPv4 (options, fragments), IPv6
//! (extension headers, fragments), TCP/UDP/ICMP. Checksums are not filled: nothing checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

pub fn eth(ethertype: u16) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 0xb, 0x02, 0, 0, 0, 0, 0xa];
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// Ethernet with 802.1Q (or 802.1ad outer + 802.1Q inner when `qinq`).
pub fn eth_vlan(inner: u16, qinq: bool) -> Vec<u8> {
    let mut v = eth(if qinq { 0x88a8 } else { 0x8100 });
    if qinq {
        v.extend_from_slice(&[0, 5, 0x81, 0x00]);
    }
    v.extend_from_slice(&[0, 7]);
    v.extend_from_slice(&inner.to_be_bytes());
    v
}

/// L4 header: ports for TCP/UDP (8 bytes), type/code for ICMP.
pub fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    match proto {
        TCP | UDP => {
            let mut v = sport.to_be_bytes().to_vec();
            v.extend_from_slice(&dport.to_be_bytes());
            v.extend_from_slice(&[0; 16]);
            v
        }
        _ => vec![8, 0, 0, 0, 0, 1, 0, 1],
    }
}

pub struct V4 {
    pub ihl: u8,
    /// (more fragments, offset in 8-byte units)
    pub frag: (bool, u16),
}

pub const PLAIN: V4 = V4 {
    ihl: 5,
    frag: (false, 0),
};

pub fn ipv4(src: &str, dst: &str, proto: u8, opts: V4, payload: Vec<u8>) -> Vec<u8> {
    let hl = usize::from(opts.ihl.max(5)) * 4;
    let mut h = vec![0u8; hl];
    h[0] = 0x40 | opts.ihl;
    h[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
    let frag = (u16::from(opts.frag.0) << 13) | opts.frag.1;
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    h[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
    h.extend(payload);
    h
}

/// IPv6 with extension headers `ext` (each: (type, bytes)) before the L4 `proto`.
pub fn ipv6(src: &str, dst: &str, ext: &[(u8, Vec<u8>)], proto: u8, payload: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = ext.get(i + 1).map(|e| e.0).unwrap_or(proto);
        body.extend(b);
    }
    body.extend(payload);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h[6] = ext.first().map(|e| e.0).unwrap_or(proto);
    h[7] = 64;
    h[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    h[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    h.extend(body);
    h
}

/// An IPv6 options header (hop-by-hop or destination options) of `8 * (1 + n)` bytes.
pub fn v6_opts(n: u8) -> Vec<u8> {
    let mut v = vec![0u8; 8 * (1 + usize::from(n))];
    v[1] = n;
    v[2] = 1; // PadN
    v[3] = (v.len() - 4) as u8;
    v
}

/// An IPv6 fragment header at `offset` (8-byte units).
pub fn v6_frag(offset: u16, more: bool) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    v[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    v
}

/// An Ethernet frame carrying a TCP/UDP/ICMP packet between two addresses of one family.
pub fn simple(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    match src.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => [
            eth(0x0800),
            ipv4(src, dst, proto, PLAIN, l4(proto, sport, dport)),
        ]
        .concat(),
        IpAddr::V6(_) => {
            let p = if proto == ICMP { ICMPV6 } else { proto };
            [eth(0x86dd), ipv6(src, dst, &[], p, l4(p, sport, dport))].concat()
        }
    }
}

/// A UDP header (length filled, checksum 0x1234) and `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(payload);
    h
}

/// An Ethernet frame from `src` to `dst` (same family) carrying `l4` of `proto`.
pub fn frame(src: &str, dst: &str, proto: u8, l4: Vec<u8>) -> Vec<u8> {
    match src.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => [eth(0x0800), ipv4(src, dst, proto, PLAIN, l4)].concat(),
        IpAddr::V6(_) => [eth(0x86dd), ipv6(src, dst, &[], proto, l4)].concat(),
    }
}

/// RFC 1071: the ones'-complement sum of big-endian 16-bit words, folded.
pub fn sum(bytes: &[u8]) -> u32 {
    let mut s: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// A checksum over `bytes` (with their checksum field) is right when the sum is all ones.
pub fn assert_csum(what: &str, pseudo: &[u8], bytes: &[u8]) {
    let s = sum(&[pseudo, bytes].concat());
    assert_eq!(s, 0xffff, "{what}: checksum wrong (sum {s:#06x})");
}

pub fn pseudo4(ip: &[u8], proto: u8, len: usize) -> Vec<u8> {
    [&ip[12..20], &[0, proto], &(len as u16).to_be_bytes()[..]].concat()
}

pub fn pseudo6(ip: &[u8], next: u8, len: usize) -> Vec<u8> {
    [
        &ip[8..40],
        &(len as u32).to_be_bytes()[..],
        &[0, 0, 0, next],
    ]
    .concat()
}
