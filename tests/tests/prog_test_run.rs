//! The TC programs run through BPF_PROG_TEST_RUN on crafted packets: the verdict for each match,
//! and that malformed or unknown packets pass untouched (fail open), with the counters to prove it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Map, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use injector::kernel::monotonic_ns;
use injector_common::{Hook, HookStats, Target, maps, programs};
use injector_tests::{lab::run_prefix, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// The eBPF object loaded with its maps pinned in a directory of this test; removed on drop.
struct Loaded {
    ebpf: Ebpf,
    dir: std::path::PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load() -> Loaded {
    require_root();
    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", run_prefix("ptr")));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .load(injector::EBPF_OBJECT)
        .unwrap();
    for p in [programs::TC_INGRESS, programs::TC_EGRESS] {
        let prog: &mut SchedClassifier = ebpf.program_mut(p).unwrap().try_into().unwrap();
        prog.load().unwrap();
    }
    Loaded { ebpf, dir }
}

fn put(l: &mut Loaded, cidr: &str, deadline_ns: u64) {
    let (a, len) = cidr.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let t = Target {
        deadline_ns,
        fault_id: 1,
        _pad: 0,
    };
    match a.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => {
            let mut m: LpmTrie<&mut MapData, [u8; 4], Target> =
                l.ebpf.map_mut(maps::DST_V4).unwrap().try_into().unwrap();
            m.insert(&Key::new(len, a.octets()), t, 0).unwrap();
        }
        IpAddr::V6(a) => {
            let mut m: LpmTrie<&mut MapData, [u8; 16], Target> =
                l.ebpf.map_mut(maps::DST_V6).unwrap().try_into().unwrap();
            m.insert(&Key::new(len, a.octets()), t, 0).unwrap();
        }
    }
}

fn stats(l: &Loaded, hook: Hook) -> HookStats {
    let m: PerCpuArray<&MapData, HookStats> = match l.ebpf.map(maps::STATS).unwrap() {
        m @ Map::PerCpuArray(_) => m.try_into().unwrap(),
        _ => panic!("STATS is not a per-CPU array"),
    };
    let mut sum = HookStats::default();
    for v in m.get(&(hook as u32), 0).unwrap().iter() {
        sum.add(v);
    }
    sum
}

fn run(l: &Loaded, prog: &str, pkt: &[u8], name: &str) -> u32 {
    let p: &SchedClassifier = l.ebpf.program(prog).unwrap().try_into().unwrap();
    let mut out = vec![0u8; pkt.len() + 256];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{prog}: {name}: test run failed: {e:?}"));
    r.return_value
}

// --- crafted packets -------------------------------------------------------------------------

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

fn eth(ethertype: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&MAC_B);
    v.extend_from_slice(&MAC_A);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

fn vlan(outer: u16, inner: u16, vid: u16) -> Vec<u8> {
    let mut v = eth(outer);
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&inner.to_be_bytes());
    v
}

/// IPv4 header (IHL words, options zero-filled) + 8 bytes of UDP.
fn ipv4(dst: Ipv4Addr, ihl: u8) -> Vec<u8> {
    let hl = usize::from(ihl.max(5)) * 4;
    let mut h = vec![0u8; hl];
    h[0] = 0x40 | ihl;
    h[2..4].copy_from_slice(&((hl + 8) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&[10, 42, 1, 2]);
    h[16..20].copy_from_slice(&dst.octets());
    h.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    h
}

/// IPv6 header + 8 bytes of UDP.
fn ipv6(dst: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&8u16.to_be_bytes());
    h[6] = 17;
    h[7] = 64;
    h[8..24].copy_from_slice(&"fd00:42:1::2".parse::<Ipv6Addr>().unwrap().octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
    h
}

fn cat(a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
    [a, b].concat()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

struct Case {
    name: &'static str,
    pkt: Vec<u8>,
    verdict: u32,
    /// The parser must give up on it (counted as unparsed).
    unparsed: bool,
}

fn cases() -> Vec<Case> {
    let c = |name, pkt, verdict, unparsed| Case {
        name,
        pkt,
        verdict,
        unparsed,
    };
    let dropped = || ipv4(v4("10.42.2.7"), 5);
    vec![
        c(
            "ipv4 to a dropped prefix",
            cat(eth(0x0800), dropped()),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv4 to the prefix's first address",
            cat(eth(0x0800), ipv4(v4("10.42.2.0"), 5)),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv4 just outside the prefix",
            cat(eth(0x0800), ipv4(v4("10.42.3.7"), 5)),
            TC_ACT_OK,
            false,
        ),
        c(
            "ipv4 with options (IHL 7) to a dropped prefix",
            cat(eth(0x0800), ipv4(v4("10.42.2.7"), 7)),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv4 host entry /32 inside a pass range",
            cat(eth(0x0800), ipv4(v4("10.42.4.9"), 5)),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv4 next to the host entry",
            cat(eth(0x0800), ipv4(v4("10.42.4.10"), 5)),
            TC_ACT_OK,
            false,
        ),
        c(
            "802.1Q + ipv4 to a dropped prefix",
            cat(vlan(0x8100, 0x0800, 7), dropped()),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "802.1ad + 802.1Q + ipv4 to a dropped prefix",
            cat(
                cat(vlan(0x88a8, 0x8100, 7), vec![0, 9, 0x08, 0x00]),
                dropped(),
            ),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv6 to a dropped prefix",
            cat(eth(0x86dd), ipv6("fd00:42:2::7".parse().unwrap())),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv6 outside the prefix",
            cat(eth(0x86dd), ipv6("fd00:42:3::7".parse().unwrap())),
            TC_ACT_OK,
            false,
        ),
        c(
            "802.1Q + ipv6 to a dropped prefix",
            cat(
                vlan(0x8100, 0x86dd, 7),
                ipv6("fd00:42:2::7".parse().unwrap()),
            ),
            TC_ACT_SHOT,
            false,
        ),
        c(
            "ipv4 bad IHL 4",
            cat(eth(0x0800), ipv4(v4("10.42.2.7"), 4)),
            TC_ACT_OK,
            true,
        ),
        c(
            "ipv4 header with version 6",
            {
                let mut p = cat(eth(0x0800), dropped());
                p[14] = 0x65;
                p
            },
            TC_ACT_OK,
            true,
        ),
        // The kernel's test run refuses an untagged IPv4/IPv6 frame shorter than the IP header,
        // so truncation is crafted behind an 802.1Q tag (the kernel does not look past it).
        c(
            "ipv4 truncated before the destination",
            cat(vlan(0x8100, 0x0800, 7), dropped()[..12].to_vec()),
            TC_ACT_OK,
            true,
        ),
        c(
            "ipv4 with IHL 15 but no options present",
            {
                let mut p = cat(eth(0x0800), dropped()[..20].to_vec());
                p[14] = 0x4f;
                p
            },
            TC_ACT_OK,
            true,
        ),
        c(
            "ipv6 truncated before the destination",
            cat(
                vlan(0x8100, 0x86dd, 7),
                ipv6("fd00:42:2::7".parse().unwrap())[..30].to_vec(),
            ),
            TC_ACT_OK,
            true,
        ),
        c(
            "802.1Q tag cut short",
            vlan(0x8100, 0x0800, 7)[..16].to_vec(),
            TC_ACT_OK,
            true,
        ),
        c(
            "bare Ethernet header, unknown EtherType",
            eth(0x88b5),
            TC_ACT_OK,
            true,
        ),
        c("ARP", cat(eth(0x0806), vec![0u8; 28]), TC_ACT_OK, true),
        c(
            "ipv4 to a prefix past its deadline",
            cat(eth(0x0800), ipv4(v4("10.42.9.1"), 5)),
            TC_ACT_OK,
            false,
        ),
    ]
}

#[test]
fn verdicts_for_crafted_packets() {
    let mut l = load();
    let far = monotonic_ns() + 600_000_000_000;
    put(&mut l, "10.42.2.0/24", far);
    put(&mut l, "10.42.4.9/32", far);
    put(&mut l, "fd00:42:2::/64", far);
    put(&mut l, "10.42.9.0/24", 1); // expired long ago
    for (prog, hook) in [
        (programs::TC_INGRESS, Hook::TcIngress),
        (programs::TC_EGRESS, Hook::TcEgress),
    ] {
        let cases = cases();
        let mut want = HookStats::default();
        for c in &cases {
            let got = run(&l, prog, &c.pkt, c.name);
            assert_eq!(got, c.verdict, "{prog}: {}", c.name);
            want.seen_packets += 1;
            want.unparsed_packets += u64::from(c.unparsed);
            if c.verdict == TC_ACT_SHOT {
                want.matched_packets += 1;
                want.matched_bytes += c.pkt.len() as u64;
                want.dropped_packets += 1;
                want.dropped_bytes += c.pkt.len() as u64;
            }
        }
        want.expired_packets = 1;
        assert_eq!(stats(&l, hook), want, "{prog} counters");
    }
}

#[test]
fn empty_maps_pass_everything() {
    let l = load();
    for c in cases() {
        assert_eq!(
            run(&l, programs::TC_INGRESS, &c.pkt, c.name),
            TC_ACT_OK,
            "{}",
            c.name
        );
    }
    let s = stats(&l, Hook::TcIngress);
    assert_eq!(s.dropped_packets, 0);
    assert_eq!(s.seen_packets, cases().len() as u64);
}
