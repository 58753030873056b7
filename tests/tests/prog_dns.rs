//! DNS faults through BPF_PROG_TEST_RUN: answers whose question names a fault's name (exactly,
//! in any case) or lies under a fault's suffix are rewritten to the fault's RCODE with the
//! answer, authority and additional counts zeroed and the UDP checksum still right (verified
//! here, IPv4 and IPv6, and a UDP checksum of 0 left 0), or dropped; other names, queries,
//! other ports and names the kernel must not read (a compression pointer, a name past the
//! packet's end) pass untouched.

#[path = "support/bpf.rs"]
#[expect(dead_code, reason = "the shared loader; this file runs TC only")]
mod bpf;
#[expect(dead_code, reason = "shared packet builders; this file uses some")]
mod support;

use bpf::Loaded;
use injector_common::{Outcome, programs};
use support::packets::{UDP, assert_csum, frame, pseudo4, pseudo6, udp};

const OK: u32 = 0; // TC_ACT_OK
const SHOT: u32 = 2; // TC_ACT_SHOT
const NX: &str = "10.42.2.7";
const NX6: &str = "fd00:42:2::7";
const SF: &str = "10.42.2.8";
const SF6: &str = "fd00:42:2::8";
const GONE: &str = "10.42.2.9";
const RESOLVER: &str = "10.42.1.53";
const RESOLVER6: &str = "fd00:42:1::53";

const FAULTS: &str = r#"[
  {"name":"nx","to":["10.42.2.7","fd00:42:2::7"],"dns":"nxdomain","dns_name":["db.prod.svc.cluster.local"],"for":"1h"},
  {"name":"sf","to":["10.42.2.8","fd00:42:2::8"],"dns":"servfail","dns_name":[".svc.cluster.local","other.example"],"for":"1h"},
  {"name":"gone","to":["10.42.2.9"],"dns":"drop","dns_name":["gone.example"],"for":"1h"}
]"#;

fn load() -> Loaded {
    let mut b = Loaded::new("pdns");
    b.install(FAULTS);
    b
}

/// A name in wire form, with the root's zero.
fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for l in name.split('.') {
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    w
}

/// A DNS message: header (`flags`, one question, one answer, one additional OPT record),
/// `qname` (wire form) for A IN, an A record by compression pointer, and the OPT record.
fn message(flags: u16, qname: &[u8]) -> Vec<u8> {
    let mut m = vec![0xbe, 0xef];
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1]);
    m.extend_from_slice(qname);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 42, 3, 3]);
    m.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    m
}

/// An answer (standard query response, RD and RA set) from port `sport` of the resolver to
/// port 40000 of `dst`, its UDP checksum right (or 0 when `no_csum`).
fn answer(dst: &str, sport: u16, msg: &[u8], no_csum: bool) -> Vec<u8> {
    let v6 = dst.contains(':');
    let src = if v6 { RESOLVER6 } else { RESOLVER };
    let mut p = frame(src, dst, UDP, udp(sport, 40000, msg));
    let (ip, l4) = (14, if v6 { 54 } else { 34 });
    p[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    if !no_csum {
        let len = p.len() - l4;
        let pseudo = if v6 {
            pseudo6(&p[ip..], UDP, len)
        } else {
            pseudo4(&p[ip..], UDP, len)
        };
        let s = support::packets::sum(&[&pseudo[..], &p[l4..]].concat()) as u16;
        p[l4 + 6..l4 + 8].copy_from_slice(&(!s).to_be_bytes());
    }
    p
}

const RESPONSE: u16 = 0x8180;

/// The UDP header's offset in a frame built by [`answer`].
fn l4(pkt: &[u8]) -> usize {
    if pkt[12..14] == [0x86, 0xdd] { 54 } else { 34 }
}

/// Checks a rewritten answer: everything as sent but the RCODE (`rcode`) and the three counts
/// (0), and the UDP checksum right over the new bytes.
fn check_rewritten(what: &str, sent: &[u8], out: &[u8], rcode: u8) {
    let l4 = l4(sent);
    let dns = l4 + 8;
    assert_eq!(out.len(), sent.len(), "{what}: length");
    assert_eq!(
        out[..l4 + 6],
        sent[..l4 + 6],
        "{what}: headers before the checksum"
    );
    assert_eq!(
        u16::from_be_bytes([out[dns + 2], out[dns + 3]]),
        RESPONSE & !0xf | u16::from(rcode),
        "{what}: flags"
    );
    assert_eq!(out[dns + 4..dns + 6], [0, 1], "{what}: one question");
    assert_eq!(
        out[dns + 6..dns + 12],
        [0; 6],
        "{what}: no answer, authority, additional"
    );
    assert_eq!(
        out[dns + 12..],
        sent[dns + 12..],
        "{what}: the rest as sent"
    );
    let ip = &out[14..];
    let pseudo = if l4 == 54 {
        pseudo6(ip, UDP, out.len() - l4)
    } else {
        pseudo4(ip, UDP, out.len() - l4)
    };
    assert_csum(what, &pseudo, &out[l4..]);
}

#[test]
fn matching_answers_get_the_fault_s_rcode_with_a_right_checksum_v4_and_v6() {
    let b = load();
    let veth = programs::TC_VETH_EGRESS;
    for (what, dst, name, rcode, prog) in [
        ("exact v4", NX, "db.prod.svc.cluster.local", 3, veth),
        (
            "exact in capitals v6",
            NX6,
            "DB.Prod.SVC.cluster.local",
            3,
            veth,
        ),
        ("suffix v4", SF, "api.payments.svc.cluster.local", 2, veth),
        (
            "suffix v6 at the overlay",
            SF6,
            "x.y.z.svc.cluster.local",
            2,
            programs::TC_OVERLAY_EGRESS,
        ),
        ("second name v4", SF, "other.example", 2, veth),
    ] {
        let sent = answer(dst, 53, &message(RESPONSE, &wire(name)), false);
        let (v, out) = b.run(prog, &sent);
        assert_eq!(v, OK, "{what}: delivered");
        check_rewritten(what, &sent, &out, rcode);
    }
    // A checksum of 0 (IPv4: none) stays 0.
    let sent = answer(
        NX,
        53,
        &message(RESPONSE, &wire("db.prod.svc.cluster.local")),
        true,
    );
    let (v, out) = b.run(veth, &sent);
    assert_eq!(
        (v, &out[34 + 6..34 + 8]),
        (OK, &[0u8, 0][..]),
        "no checksum stays none"
    );
    assert_eq!(out[42 + 3] & 0xf, 3, "rewritten all the same");
    assert_eq!(
        b.counted(0, Outcome::Rejected),
        3,
        "nx: three answers rewritten"
    );
    assert_eq!(
        b.counted(1, Outcome::Rejected),
        3,
        "sf: three answers rewritten"
    );
}

#[test]
fn other_names_queries_ports_and_unreadable_names_pass_untouched() {
    let b = load();
    let veth = programs::TC_VETH_EGRESS;
    let db = wire("db.prod.svc.cluster.local");
    let mut pointer = wire("db.prod");
    pointer.pop();
    pointer.extend_from_slice(&[0xc0, 12]);
    let mut cut = answer(NX, 53, &message(RESPONSE, &db), false);
    cut.truncate(42 + 12 + 10);
    for (what, pkt) in [
        (
            "another name",
            answer(
                NX,
                53,
                &message(RESPONSE, &wire("web.prod.svc.cluster.local")),
                false,
            ),
        ),
        (
            "a name under an exact one",
            answer(
                NX,
                53,
                &message(RESPONSE, &wire("x.db.prod.svc.cluster.local")),
                false,
            ),
        ),
        (
            "the suffix itself",
            answer(
                SF,
                53,
                &message(RESPONSE, &wire("svc.cluster.local")),
                false,
            ),
        ),
        (
            "a suffix not at a label",
            answer(
                SF,
                53,
                &message(RESPONSE, &wire("xsvc.cluster.local")),
                false,
            ),
        ),
        (
            "a query, not an answer",
            answer(NX, 53, &message(0x0100, &db), false),
        ),
        (
            "another source port",
            answer(NX, 5353, &message(RESPONSE, &db), false),
        ),
        (
            "another destination",
            answer("10.42.2.99", 53, &message(RESPONSE, &db), false),
        ),
        (
            "a compression pointer in the question",
            answer(NX, 53, &message(RESPONSE, &pointer), false),
        ),
        ("a name past the packet's end", cut),
    ] {
        let (v, out) = b.run(veth, &pkt);
        assert_eq!((v, out), (OK, pkt.clone()), "{what}: untouched");
    }
    assert_eq!(b.counted(0, Outcome::Rejected), 0);
}

#[test]
fn a_drop_fault_drops_its_names_answers_only() {
    let b = load();
    let veth = programs::TC_VETH_EGRESS;
    let gone = answer(GONE, 53, &message(RESPONSE, &wire("gone.example")), false);
    assert_eq!(b.run(veth, &gone).0, SHOT);
    let kept = answer(GONE, 53, &message(RESPONSE, &wire("kept.example")), false);
    assert_eq!(b.run(veth, &kept), (OK, kept.clone()));
    assert_eq!(b.counted(2, Outcome::Dropped), 1);
    assert_eq!(b.counted(2, Outcome::Passed), 1);
}

/// DNS faults in slots a u64 of slots cannot reach (after 200 others): their names answer by
/// their DNS index, not their slot.
#[test]
fn dns_faults_in_high_slots_answer_for_their_names() {
    let mut b = Loaded::new("pdnshi");
    let filler: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"name":"x{i}","to":["10.99.{i}.1"],"blackhole":true,"for":"1h"}}"#))
        .collect();
    let faults = FAULTS.trim().trim_start_matches('[').trim_end_matches(']');
    b.install(&format!("[{},{faults}]", filler.join(",")));
    let veth = programs::TC_VETH_EGRESS;
    let sent = answer(
        SF,
        53,
        &message(RESPONSE, &wire("a.svc.cluster.local")),
        false,
    );
    let (v, out) = b.run(veth, &sent);
    assert_eq!(v, OK, "delivered");
    check_rewritten("servfail in slot 201", &sent, &out, 2);
    let gone = answer(GONE, 53, &message(RESPONSE, &wire("gone.example")), false);
    assert_eq!(b.run(veth, &gone).0, SHOT);
    let other = answer(
        GONE,
        53,
        &message(RESPONSE, &wire("db.prod.svc.cluster.local")),
        false,
    );
    assert_eq!(
        b.run(veth, &other),
        (OK, other.clone()),
        "nx's name, gone's pod"
    );
    assert_eq!(b.counted(201, Outcome::Rejected), 1);
    assert_eq!(b.counted(202, Outcome::Dropped), 1);
    assert_eq!(b.counted(202, Outcome::Passed), 1);
    assert_eq!(b.counted(200, Outcome::Rejected), 0);
}
