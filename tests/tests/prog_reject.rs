//! Reject through BPF_PROG_TEST_RUN: each reply the programs build (TCP reset to a SYN and to a
//! segment of a connection, ICMP and ICMPv6 destination unreachable with each code, IPv4 and
//! IPv6) is read back field by field and its checksums are verified here; packets that must not
//! be answered (resets, ICMP errors) pass, and those that cannot be (fragments, multicast) drop.

#[path = "support/bpf.rs"]
#[expect(dead_code, reason = "the shared loader; this file uses part")]
mod bpf;
#[expect(dead_code, reason = "shared packet builders; this file uses some")]
mod support;

use bpf::Loaded;
use injector_common::{Outcome, programs};
use support::packets::{
    ICMP, ICMPV6, PLAIN, TCP, UDP, V4, assert_csum, eth, eth_vlan, frame, ipv4, ipv6, pseudo4,
    pseudo6, sum, udp, v6_frag, v6_opts,
};

const OK: u32 = 0; // TC_ACT_OK
const SHOT: u32 = 2; // TC_ACT_SHOT
const REDIRECT: u32 = 7; // TC_ACT_REDIRECT
const XDP_PASS: u32 = 2;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
/// The MACs `support::packets::eth` writes: destination, then source.
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];

const FAULTS: &str = r#"[
  {"name":"auto","to":["10.42.2.7","fd00:42:2::7"],"reject":true,"for":"1h"},
  {"name":"tcp-icmp","to":["10.42.2.8","fd00:42:2::8"],"proto":"tcp","reject":true,"reject_with":"icmp-port","for":"1h"},
  {"name":"host","to":["10.42.2.9","fd00:42:2::9"],"reject":true,"reject_with":"icmp-host","for":"1h"},
  {"name":"admin","to":["10.42.2.10","fd00:42:2::10"],"reject":true,"reject_with":"icmp-admin","for":"1h"},
  {"name":"mcast","to":["224.0.0.251","ff02::fb"],"reject":true,"for":"1h"}
]"#;

/// The object loaded with its maps pinned in a directory of this test (removed on drop), and
/// `FAULTS` installed.
fn load() -> Loaded {
    let mut b = Loaded::new("prj");
    b.install(FAULTS);
    b
}

/// A TCP header (20 bytes, no options) and `payload`.
fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[8..12].copy_from_slice(&ack.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h[16..18].copy_from_slice(&[0xab, 0xcd]); // whatever the sender left there
    h.extend_from_slice(payload);
    h
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks the Ethernet and IP headers of a reply to `orig` (an untagged frame) and returns the
/// reply's L4 bytes: MACs and addresses swapped, TTL/hop limit 64, lengths and checksums right.
fn ip_of_reply(what: &str, orig: &[u8], out: &[u8], proto: u8) -> Vec<u8> {
    assert_eq!(
        out[0..6],
        SRC_MAC,
        "{what}: destination MAC is the sender's"
    );
    assert_eq!(
        out[6..12],
        DST_MAC,
        "{what}: source MAC is the destination's"
    );
    assert_eq!(out[12..14], orig[12..14], "{what}: EtherType");
    let ip = &out[14..];
    if out[12..14] == [0x08, 0x00] {
        let ihl = usize::from(ip[0] & 0xf) * 4;
        assert_eq!(ip[0] >> 4, 4, "{what}: version");
        assert_eq!(ip[1], 0, "{what}: TOS");
        assert_eq!(
            usize::from(be16(&ip[2..])),
            ip.len(),
            "{what}: total length"
        );
        assert_eq!(be16(&ip[4..]), 0, "{what}: id");
        assert_eq!(ip[8], 64, "{what}: TTL");
        assert_eq!(ip[9], proto, "{what}: protocol");
        assert_eq!(
            ip[12..16],
            orig[30..34],
            "{what}: source is the original destination"
        );
        assert_eq!(
            ip[16..20],
            orig[26..30],
            "{what}: destination is the original source"
        );
        assert_eq!(sum(&ip[..ihl]), 0xffff, "{what}: IPv4 header checksum");
        assert!(
            ip[20..ihl].iter().all(|b| *b == 0),
            "{what}: options blanked"
        );
        ip[ihl..].to_vec()
    } else {
        assert_eq!(be32(ip) >> 28, 6, "{what}: version");
        assert_eq!(
            be32(ip) & 0x0fff_ffff,
            0,
            "{what}: traffic class and flow label"
        );
        assert_eq!(
            usize::from(be16(&ip[4..])),
            ip.len() - 40,
            "{what}: payload length"
        );
        assert_eq!(ip[6], proto, "{what}: next header");
        assert_eq!(ip[7], 64, "{what}: hop limit");
        assert_eq!(
            ip[8..24],
            orig[38..54],
            "{what}: source is the original destination"
        );
        assert_eq!(
            ip[24..40],
            orig[22..38],
            "{what}: destination is the original source"
        );
        ip[40..].to_vec()
    }
}

/// The L4 checksum's pseudo-header of the reply `out` (untagged), for `l4_len` bytes.
fn pseudo(out: &[u8], proto: u8, l4_len: usize) -> Vec<u8> {
    if out[12..14] == [0x08, 0x00] {
        pseudo4(&out[14..], proto, l4_len)
    } else {
        pseudo6(&out[14..], proto, l4_len)
    }
}

/// Rejects `orig` (TCP to a fault that answers with a reset) at both judging programs and
/// checks the reset: ports swapped, `(seq, ack, flags)` as RFC 9293 says, no options, window 0.
fn check_reset(b: &Loaded, what: &str, orig: &[u8], want: (u32, u32, u8)) {
    let l4_at = if orig[12..14] == [0x08, 0x00] {
        14 + usize::from(orig[14] & 0xf) * 4
    } else {
        54
    };
    for prog in [programs::TC_VETH_EGRESS, programs::TC_OVERLAY_EGRESS] {
        let what = format!("{what} ({prog})");
        let (v, out) = b.run(prog, orig);
        assert_eq!(v, REDIRECT, "{what}: sent back");
        let th = ip_of_reply(&what, orig, &out, TCP);
        assert_eq!(th.len(), 20, "{what}: a bare TCP header");
        assert_eq!(th[0..2], orig[l4_at + 2..l4_at + 4], "{what}: source port");
        assert_eq!(th[2..4], orig[l4_at..l4_at + 2], "{what}: destination port");
        assert_eq!(
            (be32(&th[4..]), be32(&th[8..]), th[13]),
            want,
            "{what}: seq, ack, flags"
        );
        assert_eq!(th[12], 5 << 4, "{what}: data offset 5, no options");
        assert_eq!(be16(&th[14..]), 0, "{what}: window");
        assert_eq!(be16(&th[18..]), 0, "{what}: urgent pointer");
        assert_csum(&format!("{what}: TCP"), &pseudo(&out, TCP, 20), &th);
        if out[12..14] == [0x08, 0x00] {
            assert_eq!(be16(&out[20..]), 0x4000, "{what}: DF, no fragment offset");
        }
    }
}

#[test]
fn a_tcp_reset_answers_a_syn_and_a_segment_of_a_connection_v4_and_v6() {
    let b = load();
    for (src, dst) in [("10.42.1.2", "10.42.2.7"), ("fd00:42:1::2", "fd00:42:2::7")] {
        // A SYN: RST|ACK, seq 0, ack = its seq + 1.
        let syn = frame(src, dst, TCP, tcp(40000, 5432, 1000, 0, SYN, &[]));
        check_reset(&b, &format!("{dst}: SYN"), &syn, (0, 1001, RST | ACK));
        // A SYN with data (TCP Fast Open) and FIN: each counts in the acknowledgement.
        let tfo = frame(src, dst, TCP, tcp(40000, 5432, 7, 0, SYN | FIN, &[1; 10]));
        check_reset(
            &b,
            &format!("{dst}: SYN+FIN with 10 bytes"),
            &tfo,
            (0, 7 + 1 + 10 + 1, RST | ACK),
        );
        // A segment of an established connection: RST with seq = its ack, nothing acked.
        let seg = frame(
            src,
            dst,
            TCP,
            tcp(40000, 5432, 5000, 0xfffffff0, ACK, &[7; 100]),
        );
        check_reset(
            &b,
            &format!("{dst}: data segment"),
            &seg,
            (0xfffffff0, 0, RST),
        );
        // Sequence numbers wrap.
        let wrap = frame(src, dst, TCP, tcp(40000, 5432, u32::MAX, 0, SYN, &[]));
        check_reset(
            &b,
            &format!("{dst}: SYN at u32::MAX"),
            &wrap,
            (0, 0, RST | ACK),
        );
    }
    // IPv4 options: the header keeps its length (the TCP header stays where it was), blanked.
    let opts = [
        eth(0x0800),
        ipv4(
            "10.42.1.2",
            "10.42.2.7",
            TCP,
            V4 {
                ihl: 8,
                frag: (false, 0),
            },
            tcp(1, 2, 10, 0, SYN, &[]),
        ),
    ]
    .concat();
    check_reset(&b, "IPv4 options", &opts, (0, 11, RST | ACK));
    assert_eq!(
        b.counted(0, Outcome::Rejected),
        2 * 9,
        "every reset counted as rejected"
    );
}

/// Rejects `orig` at both judging programs with an ICMP/ICMPv6 destination unreachable of
/// `code`, which must quote `quote` bytes of the original from its IP header on.
fn check_unreachable(b: &Loaded, what: &str, orig: &[u8], code: u8, quote: usize) {
    let v6 = orig[12..14] == [0x86, 0xdd];
    let (proto, ty) = if v6 { (ICMPV6, 1) } else { (ICMP, 3) };
    for prog in [programs::TC_VETH_EGRESS, programs::TC_OVERLAY_EGRESS] {
        let what = format!("{what} ({prog})");
        let (v, out) = b.run(prog, orig);
        assert_eq!(v, REDIRECT, "{what}: sent back");
        let icmp = ip_of_reply(&what, orig, &out, proto);
        assert_eq!((icmp[0], icmp[1]), (ty, code), "{what}: type and code");
        assert_eq!(icmp[4..8], [0; 4], "{what}: unused word");
        assert_eq!(icmp.len(), 8 + quote, "{what}: quote length");
        assert_eq!(icmp[8..], orig[14..14 + quote], "{what}: the quote");
        let p = if v6 {
            pseudo(&out, ICMPV6, icmp.len())
        } else {
            vec![]
        };
        assert_csum(&format!("{what}: ICMP"), &p, &icmp);
        if !v6 {
            assert_eq!(be16(&out[20..]), 0, "{what}: no fragment flags");
        }
    }
}

#[test]
fn icmp_and_icmpv6_unreachable_quote_the_packet_with_each_code() {
    let b = load();
    // UDP by default: port unreachable, the IP header and 8 bytes of UDP quoted.
    let u4 = frame("10.42.1.2", "10.42.2.7", UDP, udp(5353, 53, &[9; 40]));
    check_unreachable(&b, "v4 UDP", &u4, 3, 20 + 8);
    let u6 = frame("fd00:42:1::2", "fd00:42:2::7", UDP, udp(5353, 53, &[9; 40]));
    check_unreachable(&b, "v6 UDP", &u6, 4, 40 + 8);
    // An echo request is answered port unreachable too (as iptables' REJECT does).
    let echo = frame(
        "10.42.1.2",
        "10.42.2.7",
        ICMP,
        vec![8, 0, 0, 0, 0, 1, 0, 1, 5, 5, 5, 5],
    );
    check_unreachable(&b, "v4 echo request", &echo, 3, 20 + 8);
    let echo6 = frame(
        "fd00:42:1::2",
        "fd00:42:2::7",
        ICMPV6,
        vec![128, 0, 0, 0, 0, 1, 0, 1],
    );
    check_unreachable(&b, "v6 echo request", &echo6, 4, 40 + 8);
    // TCP answered with ICMP: the whole TCP header is quoted.
    let t4 = frame("10.42.1.2", "10.42.2.8", TCP, tcp(1, 2, 3, 0, SYN, &[]));
    check_unreachable(&b, "v4 TCP, icmp-port", &t4, 3, 20 + 20);
    let t6 = frame(
        "fd00:42:1::2",
        "fd00:42:2::8",
        TCP,
        tcp(1, 2, 3, 0, SYN, &[4; 30]),
    );
    check_unreachable(&b, "v6 TCP, icmp-port", &t6, 4, 40 + 20);
    // Host and administratively prohibited.
    for (dst, code) in [("10.42.2.9", 1), ("10.42.2.10", 13)] {
        let p = frame("10.42.1.2", dst, UDP, udp(1, 2, &[0; 4]));
        check_unreachable(&b, &format!("v4 code {code}"), &p, code, 28);
    }
    for (dst, code) in [("fd00:42:2::9", 3), ("fd00:42:2::10", 1)] {
        let p = frame("fd00:42:1::2", dst, UDP, udp(1, 2, &[0; 4]));
        check_unreachable(&b, &format!("v6 code {code}"), &p, code, 48);
    }
    // IPv4 options and IPv6 extension headers are quoted with the header.
    let o4 = [
        eth(0x0800),
        ipv4(
            "10.42.1.2",
            "10.42.2.7",
            UDP,
            V4 {
                ihl: 7,
                frag: (true, 0),
            },
            udp(1, 2, &[1; 20]),
        ),
    ]
    .concat();
    check_unreachable(&b, "v4 options, first fragment", &o4, 3, 28 + 8);
    let e6 = [
        eth(0x86dd),
        ipv6(
            "fd00:42:1::2",
            "fd00:42:2::7",
            &[(0, v6_opts(1)), (44, v6_frag(0, true))],
            UDP,
            udp(1, 2, &[1; 20]),
        ),
    ]
    .concat();
    check_unreachable(&b, "v6 hop-by-hop + fragment", &e6, 4, 40 + 16 + 8 + 8);
    // A short datagram quotes what there is, in whole words.
    let short = frame("10.42.1.2", "10.42.2.7", 47, vec![1, 2, 3, 4, 5, 6]);
    check_unreachable(&b, "v4 GRE, 6 bytes", &short, 3, 24);
}

#[test]
fn an_802_1q_tag_is_kept_on_the_reply() {
    let b = load();
    let orig = [
        eth_vlan(0x0800, false),
        ipv4("10.42.1.2", "10.42.2.7", UDP, PLAIN, udp(1, 2, &[3; 8])),
    ]
    .concat();
    let (v, out) = b.run(programs::TC_VETH_EGRESS, &orig);
    assert_eq!(v, REDIRECT);
    assert_eq!(out[0..6], SRC_MAC);
    assert_eq!(out[6..12], DST_MAC);
    assert_eq!(out[12..18], orig[12..18], "the tag and the inner EtherType");
    let ip = &out[18..];
    assert_eq!((ip[9], usize::from(be16(&ip[2..]))), (ICMP, ip.len()));
    assert_eq!(ip[20..22], [3, 3]);
    assert_eq!(ip[28..], orig[18..18 + 28], "the quote");
    assert_eq!(sum(&ip[..20]), 0xffff);
    assert_csum("ICMP", &[], &ip[20..]);
}

#[test]
fn resets_and_icmp_errors_pass_and_what_cannot_be_answered_drops() {
    let b = load();
    let pass = [
        (
            "v4 RST",
            frame(
                "10.42.1.2",
                "10.42.2.7",
                TCP,
                tcp(1, 2, 3, 4, RST | ACK, &[]),
            ),
        ),
        (
            "v6 RST",
            frame(
                "fd00:42:1::2",
                "fd00:42:2::7",
                TCP,
                tcp(1, 2, 3, 0, RST, &[]),
            ),
        ),
        (
            "v4 port unreachable",
            frame("10.42.1.2", "10.42.2.7", ICMP, vec![3, 3, 0, 0, 0, 0, 0, 0]),
        ),
        (
            "v4 time exceeded",
            frame(
                "10.42.1.2",
                "10.42.2.7",
                ICMP,
                vec![11, 0, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            "v6 unreachable",
            frame(
                "fd00:42:1::2",
                "fd00:42:2::7",
                ICMPV6,
                vec![1, 4, 0, 0, 0, 0, 0, 0],
            ),
        ),
        (
            "v6 packet too big",
            frame(
                "fd00:42:1::2",
                "fd00:42:2::7",
                ICMPV6,
                vec![2, 0, 0, 0, 0, 0, 5, 0],
            ),
        ),
    ];
    for (what, p) in &pass {
        let (v, out) = b.run(programs::TC_VETH_EGRESS, p);
        assert_eq!((v, &out), (OK, p), "{what}: passes untouched");
    }
    assert_eq!(b.counted(0, Outcome::Passed), pass.len() as u64);
    let silent = [
        (
            "v4 non-first fragment",
            [
                eth(0x0800),
                ipv4(
                    "10.42.1.2",
                    "10.42.2.7",
                    UDP,
                    V4 {
                        ihl: 5,
                        frag: (false, 10),
                    },
                    vec![0; 16],
                ),
            ]
            .concat(),
        ),
        (
            "v6 non-first fragment",
            [
                eth(0x86dd),
                ipv6(
                    "fd00:42:1::2",
                    "fd00:42:2::7",
                    &[(44, v6_frag(10, false))],
                    UDP,
                    vec![0; 16],
                ),
            ]
            .concat(),
        ),
        (
            "v4 multicast",
            frame("10.42.1.2", "224.0.0.251", UDP, udp(5353, 5353, &[0; 8])),
        ),
        (
            "v6 multicast",
            frame("fd00:42:1::2", "ff02::fb", UDP, udp(5353, 5353, &[0; 8])),
        ),
        (
            "v6 TCP with an extension header",
            [
                eth(0x86dd),
                ipv6(
                    "fd00:42:1::2",
                    "fd00:42:2::7",
                    &[(60, v6_opts(0))],
                    TCP,
                    tcp(1, 2, 3, 0, SYN, &[]),
                ),
            ]
            .concat(),
        ),
    ];
    for (what, p) in &silent {
        assert_eq!(
            b.run(programs::TC_VETH_EGRESS, p).0,
            SHOT,
            "{what}: dropped, no reply"
        );
    }
    assert_eq!(
        b.counted(0, Outcome::Rejected) + b.counted(4, Outcome::Rejected),
        silent.len() as u64,
        "counted as rejected"
    );
    // XDP judges only drops: a reject fault leaves it alone.
    let syn = frame("10.42.1.2", "10.42.2.7", TCP, tcp(1, 2, 3, 0, SYN, &[]));
    assert_eq!(b.xdp(&syn), XDP_PASS);
}
