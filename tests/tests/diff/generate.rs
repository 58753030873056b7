//! Deterministic generators for the differential run: fault sets drawn from the addresses, ports
//! and actions the packets use (so that they match), and structure-aware packets: Ethernet with
//! 0-3 VLAN tags, IPv4 with options and fragments, IPv6 with extension header chains, TCP, UDP,
//! ICMP and other protocols, malformed fields, truncation at any length, and random bytes.

use injector_tests::rng::Rng;
use serde_json::{Value, json};

/// The addresses both sides draw from: pods of two nodes, a multicast and a broadcast address.
const V4: [[u8; 4]; 7] = [
    [10, 42, 1, 2],
    [10, 42, 1, 3],
    [10, 42, 2, 7],
    [10, 42, 2, 8],
    [10, 43, 0, 1],
    [224, 0, 0, 5],
    [255, 255, 255, 255],
];
const V6: [&str; 6] = [
    "fd00:42:1::2",
    "fd00:42:1::3",
    "fd00:42:2::7",
    "fd00:42:2::8",
    "fd00:43::1",
    "ff02::1",
];
const PORTS: [u16; 8] = [53, 80, 443, 5432, 8000, 8080, 8081, 40000];

fn v4(r: &mut Rng) -> [u8; 4] {
    if r.chance(0.1) {
        r.bytes(4).try_into().unwrap()
    } else {
        *r.pick(&V4)
    }
}

fn v6(r: &mut Rng) -> [u8; 16] {
    if r.chance(0.1) {
        r.bytes(16).try_into().unwrap()
    } else {
        r.pick(&V6).parse::<std::net::Ipv6Addr>().unwrap().octets()
    }
}

fn port(r: &mut Rng) -> u16 {
    if r.chance(0.2) {
        r.u64() as u16
    } else {
        *r.pick(&PORTS)
    }
}

/// An address of the pool as bits, and its family's width.
fn pooled(r: &mut Rng, v6: bool) -> (u128, u32) {
    if v6 {
        let a: std::net::Ipv6Addr = r.pick(&V6).parse().unwrap();
        (u128::from(a), 128)
    } else {
        (u128::from(u32::from_be_bytes(*r.pick(&V4))), 32)
    }
}

fn text((bits, width): (u128, u32), len: u32) -> String {
    if width == 32 {
        format!("{}/{len}", std::net::Ipv4Addr::from(bits as u32))
    } else {
        format!("{}/{len}", std::net::Ipv6Addr::from(bits))
    }
}

/// A CIDR around an address of the pool (host bits cleared, as validation requires).
fn cidr(r: &mut Rng) -> ((u128, u32), u32) {
    let v6 = r.chance(0.5);
    let (bits, w) = pooled(r, v6);
    let len = if v6 {
        *r.pick(&[128, 128, 64, 48, 32])
    } else {
        *r.pick(&[32, 32, 24, 16, 8])
    };
    let net = if len == 0 {
        0
    } else {
        bits >> (w - len) << (w - len)
    };
    ((net, w), len)
}

fn cidrs(r: &mut Rng, p_none: f64) -> Vec<((u128, u32), u32)> {
    if r.chance(p_none) {
        return vec![];
    }
    (0..1 + r.below(2)).map(|_| cidr(r)).collect()
}

/// An exception inside one of `set` (validation refuses others): a host of the pool inside
/// it, when one is (a few draws), or any host of the pool when `set` is any.
fn except(r: &mut Rng, set: &[((u128, u32), u32)]) -> Vec<String> {
    if r.chance(0.8) {
        return vec![];
    }
    for _ in 0..8 {
        let v6 = r.chance(0.5);
        let (bits, w) = pooled(r, v6);
        let inside = set.iter().any(|&((net, sw), len)| {
            sw == w && (len == 0 || bits >> (w - len) == net >> (w - len)) && len < w
        });
        if set.is_empty() || inside {
            return vec![text((bits, w), w)];
        }
    }
    vec![]
}

fn ports(r: &mut Rng, p_none: f64) -> Vec<String> {
    if r.chance(p_none) {
        return vec![];
    }
    (0..1 + r.below(2))
        .map(|_| match r.below(4) {
            0 => "8000-8080".to_string(),
            1 => "1-1023".to_string(),
            _ => port(r).to_string(),
        })
        .collect()
}

/// What a fault does, with certain outcomes only: no probabilities but 100%, no jitter.
fn action(r: &mut Rng) -> Value {
    let d = json!(format!("{}ms", 1 + r.below(50)));
    match r.below(9) {
        0 => json!({"blackhole": true}),
        1 => json!({"loss": "100%"}),
        2 | 3 => json!({"delay": d}),
        4 => json!({"delay": d, "loss": "100%"}),
        5 => json!({"delay": d, "reorder": "100%"}),
        6 => {
            let mut a = json!({"reject": true});
            if r.chance(0.6) {
                a["reject_with"] =
                    json!(r.pick(&["tcp-reset", "icmp-port", "icmp-host", "icmp-admin"]));
            }
            a
        }
        7 => json!({"duplicate": "100%"}),
        _ => json!({"corrupt": "100%"}),
    }
}

/// A fault spec as a user would write it; it may not validate (the run counts those).
pub fn fault(r: &mut Rng, name: &str) -> Value {
    let mut f = action(r);
    f["name"] = json!(name);
    f["for"] = json!("1h");
    let proto = if r.chance(0.6) {
        Some(*r.pick(&["tcp", "udp", "icmp", "any"]))
    } else {
        None
    };
    if let Some(p) = proto {
        f["proto"] = json!(p);
    }
    let (from, to) = (cidrs(r, 0.4), cidrs(r, 0.3));
    // Ports exist only with tcp or udp (validation refuses them elsewhere: now and then tried).
    let ported = matches!(proto, Some("tcp" | "udp")) || r.chance(0.03);
    let (sport, dport) = if ported {
        (ports(r, 0.7), ports(r, 0.3))
    } else {
        (vec![], vec![])
    };
    let text_of = |v: &[((u128, u32), u32)]| -> Vec<String> {
        v.iter().map(|&(a, len)| text(a, len)).collect()
    };
    for (field, v) in [
        ("from_except", except(r, &from)),
        ("to_except", except(r, &to)),
        ("from", text_of(&from)),
        ("to", text_of(&to)),
        ("sport", sport),
        ("dport", dport),
    ] {
        if !v.is_empty() {
            f[field] = json!(v);
        }
    }
    if r.chance(0.2) {
        f["both_ways"] = json!(true);
    }
    if r.chance(0.1) {
        f["dry_run"] = json!(true);
    }
    f
}

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

/// An upper-layer header and payload for `proto`.
fn upper(r: &mut Rng, proto: u8) -> Vec<u8> {
    let n = *r.pick(&[0, 0, 1, 7, 8, 20, 64]);
    let payload = r.bytes(n);
    let mut h = match proto {
        6 => {
            let doff = if r.chance(0.9) { 5 } else { r.below(16) as u8 };
            let mut h = [be16(port(r)), be16(port(r))].concat();
            h.extend(r.bytes(8)); // sequence, acknowledgement
            h.push(doff << 4);
            // Flags: a RST now and then (a reset is never answered).
            h.push(if r.chance(0.15) {
                0x04
            } else {
                r.byte() & !0x04
            });
            h.extend(r.bytes(6));
            h.extend(r.bytes(usize::from(doff.saturating_sub(5)) * 4));
            h
        }
        17 => {
            let mut h = [be16(port(r)), be16(port(r))].concat();
            h.extend(be16(8 + payload.len() as u16));
            h.extend(r.bytes(2));
            h
        }
        1 | 58 => {
            // Echo requests mostly; errors now and then (never answered).
            let t = match r.below(4) {
                0 => r.byte(),
                1 => *r.pick(&[3, 11, 1, 4]),
                _ => *r.pick(&[8, 128]),
            };
            let mut h = vec![t, r.byte()];
            h.extend(r.bytes(6));
            h
        }
        _ => vec![],
    };
    h.extend(payload);
    h
}

fn proto(r: &mut Rng, v6: bool) -> u8 {
    match r.below(10) {
        0..=3 => 6,
        4..=6 => 17,
        7 => {
            if v6 {
                58
            } else {
                1
            }
        }
        8 => *r.pick(&[1, 58, 47, 132]),
        _ => r.byte(),
    }
}

fn ipv4(r: &mut Rng) -> Vec<u8> {
    let p = proto(r, false);
    let ihl = if r.chance(0.85) { 5 } else { r.below(16) as u8 };
    let body = upper(r, p);
    let opts = r.bytes(usize::from(ihl.saturating_sub(5)) * 4);
    let total = 20 + opts.len() + body.len();
    let version = if r.chance(0.97) { 4 } else { r.below(16) as u8 };
    // Fragments: first (offset 0, more), non-first, or none.
    let frag: u16 = match r.below(8) {
        0 => 0x2000,
        1 => (1 + r.below(0x1fff) as u16) | if r.chance(0.5) { 0x2000 } else { 0 },
        _ => 0x4000,
    };
    let len = if r.chance(0.9) {
        total as u16
    } else {
        r.u64() as u16
    };
    let mut h = vec![version << 4 | ihl, 0];
    h.extend(be16(len));
    h.extend(r.bytes(2));
    h.extend(be16(frag));
    h.push(64);
    h.push(p);
    h.extend([0, 0]);
    h.extend(v4(r));
    h.extend(v4(r));
    [h, opts, body].concat()
}

fn ipv6(r: &mut Rng) -> Vec<u8> {
    let n_ext = match r.below(10) {
        0..=5 => 0,
        6..=8 => 1 + r.below(3),
        _ => 4 + r.below(4),
    };
    let exts: Vec<u8> = (0..n_ext).map(|_| *r.pick(&[0, 43, 44, 51, 60])).collect();
    let last = proto(r, true);
    let mut chain = vec![];
    for (i, &e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(last);
        match e {
            44 => {
                let off: u16 = if r.chance(0.7) {
                    0
                } else {
                    1 + r.below(0x1fff) as u16
                };
                chain.extend([next, 0]);
                chain.extend(be16(off << 3 | u16::from(r.chance(0.5))));
                chain.extend(r.bytes(4));
            }
            51 => {
                let len = r.below(4) as u8; // (len + 2) * 4 bytes
                chain.extend([next, len]);
                chain.extend(r.bytes((usize::from(len) + 2) * 4 - 2));
            }
            _ => {
                // (len + 1) * 8 bytes; now and then long enough to take the next header past
                // the 512 bytes XDP reads.
                let len = if r.chance(0.05) {
                    60 + r.below(4)
                } else {
                    r.below(3)
                } as u8;
                chain.extend([next, len]);
                chain.extend(r.bytes((usize::from(len) + 1) * 8 - 2));
            }
        }
    }
    let first = exts.first().copied().unwrap_or(last);
    let body = upper(r, last);
    let payload_len = chain.len() + body.len();
    let version = if r.chance(0.97) { 6 } else { r.below(16) as u8 };
    let mut h = vec![version << 4, 0, 0, 0];
    h.extend(be16(if r.chance(0.9) {
        payload_len as u16
    } else {
        r.u64() as u16
    }));
    h.push(first);
    h.push(64);
    h.extend(v6(r));
    h.extend(v6(r));
    [h, chain, body].concat()
}

/// One packet for BPF_PROG_TEST_RUN (at least an Ethernet header's 14 bytes, as it requires).
pub fn packet(r: &mut Rng) -> Vec<u8> {
    if r.chance(0.03) {
        let n = 14 + r.below(120);
        return r.bytes(n);
    }
    let mut p = r.bytes(12); // MACs
    let inner = match r.below(20) {
        0 => r.u64() as u16,
        1 => 0x0806,
        2..=10 => 0x0800,
        _ => 0x86dd,
    };
    let tags = match r.below(10) {
        0..=6 => 0,
        7 | 8 => 1 + r.below(2),
        _ => 3,
    };
    for _ in 0..tags {
        p.extend(be16(*r.pick(&[0x8100, 0x88a8])));
        p.extend(r.bytes(2)); // TCI
    }
    p.extend(be16(inner));
    match inner {
        0x0800 => p.extend(ipv4(r)),
        0x86dd => p.extend(ipv6(r)),
        _ => {
            let n = r.below(64);
            p.extend(r.bytes(n))
        }
    }
    if r.chance(0.25) && p.len() > 14 {
        let n = 14 + r.below(p.len() - 14);
        p.truncate(n);
    }
    p
}
