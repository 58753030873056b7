//! The programs run through BPF_PROG_TEST_RUN on crafted packets, with faults compiled and installed
//! by the same code the daemon uses: the verdict for each match dimension and action, IPv4 and IPv6,
//! the safety switches, where each hook judges, and that malformed packets pass untouched.

#[expect(dead_code, reason = "shared packet builders; this file uses some")]
mod support;

use std::{mem::offset_of, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use aya_ebpf_bindings::bindings::__sk_buff;
use injector::{
    fault::{
        compile::{assign_slots, compile, plan_at},
        spec::FaultSpec,
    },
    kernel::{Maps, monotonic_ns},
};
use injector_common::{FaultCounters, Hook, JudgeHook, MAX_FAULTS, Outcome, ctrl, flow, programs};
use injector_tests::cpu::on_cpu0;
use injector_tests::{lab::run_prefix, require_root, stats};
use support::packets::*;

const OK: u32 = 0; // TC_ACT_OK
const SHOT: u32 = 2; // TC_ACT_SHOT
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const VETH: &str = programs::TC_VETH_EGRESS;
const OVERLAY: &str = programs::TC_OVERLAY_EGRESS;
const INGRESS: &str = programs::TC_VETH_INGRESS;
/// The pod's veth: a test run's packet enters through lo (ifindex 1), so that is the interface
/// the ingress hook records a packet's entry through (early.rs).
const POD: u32 = 1;
/// The bridge, as the daemon names it in `ctrl::BRIDGE_IFINDEX` (set by `load`): what a pod
/// sends to be routed enters the host's IP stack through it.
const BRIDGE: u32 = 6;
/// An uplink: nothing of ours judged what enters through it.
const UPLINK: u32 = 9;

/// The object loaded with its maps pinned in a directory of this test (removed on drop), and the
/// faults of `json` installed.
struct Bpf {
    ebpf: Ebpf,
    maps: Maps,
    /// Dropped last, after the programs and maps.
    _dir: PinDir,
    names: Vec<String>,
}

/// The run's pin directory, removed on drop: also when loading panics half-way.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(json: &str) -> Bpf {
    require_root();
    let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/{}", run_prefix("ptr"))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir.0)
        .load(injector::EBPF_OBJECT)
        .unwrap();
    for p in [VETH, OVERLAY, INGRESS, programs::TC_OBSERVE] {
        let prog: &mut SchedClassifier = ebpf.program_mut(p).unwrap().try_into().unwrap();
        prog.load().unwrap();
    }
    let x: &mut Xdp = ebpf
        .program_mut(programs::XDP_VETH)
        .unwrap()
        .try_into()
        .unwrap();
    x.load().unwrap();
    let mut maps = Maps::take(&mut ebpf).unwrap();
    maps.set_ctrl(ctrl::ARMED, 1).unwrap();
    maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()).unwrap();
    maps.set_ctrl(ctrl::GRACE_NS, 3_600_000_000_000).unwrap();
    // As the daemon runs by default: drops judged at the pod veths' TC ingress.
    maps.set_ctrl(ctrl::EARLY, ctrl::EARLY_TC).unwrap();
    maps.set_ctrl(ctrl::BRIDGE_IFINDEX, BRIDGE.into()).unwrap();
    let mut b = Bpf {
        ebpf,
        maps,
        _dir: dir,
        names: vec![],
    };
    b.install(json);
    b
}

impl Bpf {
    fn install(&mut self, json: &str) {
        let specs: Vec<FaultSpec> = serde_json::from_str(json).unwrap();
        let faults: Vec<_> = specs.iter().map(|s| s.validate("").unwrap()).collect();
        self.names = faults.iter().map(|f| f.name.clone()).collect();
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let slots = assign_slots(&Default::default(), &names).unwrap();
        let img = compile(&plan_at(&faults, &slots, monotonic_ns())).unwrap();
        self.maps.install(&img, &slots).unwrap();
    }

    /// Runs a TC program `repeat` times on an skb whose context has `field` (an offset into
    /// `__sk_buff`) set to `value`; returns the verdict and the context after the run.
    fn tc_ctx(
        &self,
        prog: &str,
        pkt: &[u8],
        field: usize,
        value: u32,
        repeat: u32,
    ) -> (u32, Vec<u8>) {
        let p: &SchedClassifier = self.ebpf.program(prog).unwrap().try_into().unwrap();
        let mut ctx_in = vec![0u8; size_of::<__sk_buff>()];
        ctx_in[field..field + 4].copy_from_slice(&value.to_ne_bytes());
        let mut ctx_out = vec![0u8; size_of::<__sk_buff>()];
        let mut out = vec![0u8; pkt.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..Default::default()
        };
        let r = p
            .test_run(opts)
            .unwrap_or_else(|e| panic!("{prog}: test run failed: {e:?}"));
        (r.return_value, ctx_out)
    }

    /// Runs a TC program; returns (verdict, tstamp after the run). `iif`: the skb's ingress ifindex.
    fn tc(&self, prog: &str, pkt: &[u8], iif: u32, repeat: u32) -> (u32, u64) {
        let (v, ctx) = self.tc_ctx(
            prog,
            pkt,
            offset_of!(__sk_buff, ingress_ifindex),
            iif,
            repeat,
        );
        let t = offset_of!(__sk_buff, tstamp);
        (v, u64::from_ne_bytes(ctx[t..t + 8].try_into().unwrap()))
    }

    fn veth(&self, pkt: &[u8]) -> u32 {
        self.tc(VETH, pkt, 0, 1).0
    }

    fn xdp(&self, pkt: &[u8]) -> u32 {
        let p: &Xdp = self
            .ebpf
            .program(programs::XDP_VETH)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; pkt.len() + 512];
        p.test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .unwrap()
        .return_value
    }

    fn counters(&self, name: &str, hook: JudgeHook) -> FaultCounters {
        let slot = self.names.iter().position(|n| n == name).unwrap() as u32;
        self.maps.fault_counters(slot, hook).unwrap()
    }
}

const FAULTS: &str = r#"[
  {"name":"db","from":["10.42.1.0/24"],"to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"blackhole":true,"for":"1h"},
  {"name":"udp-range","to":["10.42.2.8"],"proto":"udp","dport":["8000-8080"],"blackhole":true,"for":"1h"},
  {"name":"sport","to":["10.42.2.9"],"proto":"tcp","sport":["1000-1999"],"blackhole":true,"for":"1h"},
  {"name":"icmp","to":["10.42.2.10"],"proto":"icmp","blackhole":true,"for":"1h"},
  {"name":"v6","from":["fd00:42:1::/64"],"to":["fd00:42:2::7"],"proto":"tcp","dport":["443"],"blackhole":true,"for":"1h"},
  {"name":"both","from":["10.42.1.20"],"to":["10.42.2.20"],"both_ways":true,"blackhole":true,"for":"1h"},
  {"name":"expired","to":["10.42.2.30"],"blackhole":true,"for":"1ms"},
  {"name":"dry","to":["10.42.2.31"],"blackhole":true,"dry_run":true,"for":"1h"},
  {"name":"delay","to":["10.42.2.40"],"delay":"50ms","for":"1h"},
  {"name":"noports","to":["10.42.2.50"],"blackhole":true,"for":"1h"},
  {"name":"v6-udp","to":["fd00:42:2::/64"],"proto":"udp","blackhole":true,"for":"1h"},
  {"name":"nested-wide","to":["10.42.4.0/24"],"proto":"udp","blackhole":true,"for":"1h"},
  {"name":"nested-narrow","to":["10.42.4.128/25"],"proto":"tcp","blackhole":true,"for":"1h"}
]"#;

struct Case {
    name: &'static str,
    pkt: Vec<u8>,
    want: u32,
}

fn c(name: &'static str, pkt: Vec<u8>, want: u32) -> Case {
    Case { name, pkt, want }
}

fn v4frag(dst: &str, proto: u8, frag: (bool, u16), payload: Vec<u8>) -> Vec<u8> {
    [
        eth(0x0800),
        ipv4("10.42.1.2", dst, proto, V4 { ihl: 5, frag }, payload),
    ]
    .concat()
}

fn cases() -> Vec<Case> {
    let s = simple;
    let v6 = |ext: &[(u8, Vec<u8>)], dport| {
        [
            eth(0x86dd),
            ipv6(
                "fd00:42:1::2",
                "fd00:42:2::7",
                ext,
                TCP,
                l4(TCP, 40000, dport),
            ),
        ]
        .concat()
    };
    vec![
        // Addresses, protocol and destination port.
        c(
            "tcp to db:5432",
            s("10.42.1.2", "10.42.2.7", TCP, 40000, 5432),
            SHOT,
        ),
        c(
            "tcp to db:5433",
            s("10.42.1.2", "10.42.2.7", TCP, 40000, 5433),
            OK,
        ),
        c(
            "tcp to db:5432 from outside the source set",
            s("10.42.3.2", "10.42.2.7", TCP, 40000, 5432),
            OK,
        ),
        c(
            "udp to db:5432 (protocol differs)",
            s("10.42.1.2", "10.42.2.7", UDP, 40000, 5432),
            OK,
        ),
        // Port ranges, both ends inclusive.
        c(
            "udp to :8000",
            s("10.42.1.2", "10.42.2.8", UDP, 1, 8000),
            SHOT,
        ),
        c(
            "udp to :8080",
            s("10.42.1.2", "10.42.2.8", UDP, 1, 8080),
            SHOT,
        ),
        c(
            "udp to :8081",
            s("10.42.1.2", "10.42.2.8", UDP, 1, 8081),
            OK,
        ),
        c(
            "udp to :7999",
            s("10.42.1.2", "10.42.2.8", UDP, 1, 7999),
            OK,
        ),
        c(
            "tcp from :1500",
            s("10.42.1.2", "10.42.2.9", TCP, 1500, 80),
            SHOT,
        ),
        c(
            "tcp from :2000",
            s("10.42.1.2", "10.42.2.9", TCP, 2000, 80),
            OK,
        ),
        // Protocols.
        c(
            "icmp to the icmp fault",
            s("10.42.1.2", "10.42.2.10", ICMP, 0, 0),
            SHOT,
        ),
        c(
            "tcp to the icmp fault",
            s("10.42.1.2", "10.42.2.10", TCP, 1, 2),
            OK,
        ),
        // IPv6, with extension headers and fragments.
        c("v6 tcp :443", v6(&[], 443), SHOT),
        c("v6 tcp :80", v6(&[], 80), OK),
        c(
            "v6 tcp :443 from outside the source set",
            s("fd00:42:3::2", "fd00:42:2::7", TCP, 1, 443),
            OK,
        ),
        c(
            "v6 hop-by-hop + dest-opts + tcp :443",
            v6(&[(0, v6_opts(0)), (60, v6_opts(1))], 443),
            SHOT,
        ),
        c(
            "v6 first fragment, tcp :443",
            v6(&[(44, v6_frag(0, true))], 443),
            SHOT,
        ),
        c(
            "v6 non-first fragment (no ports)",
            v6(&[(44, v6_frag(100, false))], 443),
            OK,
        ),
        c(
            "v6 chain longer than walked",
            v6(
                &[
                    (0, v6_opts(0)),
                    (60, v6_opts(0)),
                    (60, v6_opts(0)),
                    (60, v6_opts(0)),
                    (60, v6_opts(0)),
                    (60, v6_opts(0)),
                    (60, v6_opts(0)),
                ],
                443,
            ),
            OK,
        ),
        c(
            "v6 udp into the /64",
            s("fd00:42:1::2", "fd00:42:2::99", UDP, 1, 2),
            SHOT,
        ),
        c(
            "v6 icmpv6 into the /64 (udp only)",
            s("fd00:42:1::2", "fd00:42:2::99", ICMP, 0, 0),
            OK,
        ),
        // Direction: both ways.
        c(
            "both: forward",
            s("10.42.1.20", "10.42.2.20", UDP, 1, 2),
            SHOT,
        ),
        c(
            "both: reverse",
            s("10.42.2.20", "10.42.1.20", TCP, 2, 1),
            SHOT,
        ),
        c(
            "both: other pair",
            s("10.42.1.20", "10.42.2.21", UDP, 1, 2),
            OK,
        ),
        // Lifetime, dry run.
        c(
            "past its deadline",
            s("10.42.1.2", "10.42.2.30", UDP, 1, 2),
            OK,
        ),
        c("dry run", s("10.42.1.2", "10.42.2.31", UDP, 1, 2), OK),
        // IPv4 options and fragments.
        c(
            "ipv4 options (IHL 8), tcp to db:5432",
            [
                eth(0x0800),
                ipv4(
                    "10.42.1.2",
                    "10.42.2.7",
                    TCP,
                    V4 {
                        ihl: 8,
                        frag: (false, 0),
                    },
                    l4(TCP, 1, 5432),
                ),
            ]
            .concat(),
            SHOT,
        ),
        c(
            "ipv4 first fragment to db:5432",
            v4frag("10.42.2.7", TCP, (true, 0), l4(TCP, 1, 5432)),
            SHOT,
        ),
        c(
            "ipv4 non-first fragment to db (no ports)",
            v4frag("10.42.2.7", TCP, (false, 185), vec![0; 24]),
            OK,
        ),
        c(
            "ipv4 non-first fragment to a fault without ports",
            v4frag("10.42.2.50", UDP, (true, 185), vec![0; 24]),
            SHOT,
        ),
        // VLAN tags.
        c(
            "802.1Q tcp to db:5432",
            [
                eth_vlan(0x0800, false),
                ipv4("10.42.1.2", "10.42.2.7", TCP, PLAIN, l4(TCP, 1, 5432)),
            ]
            .concat(),
            SHOT,
        ),
        c(
            "802.1ad+802.1Q v6 tcp :443",
            [
                eth_vlan(0x86dd, true),
                ipv6("fd00:42:1::2", "fd00:42:2::7", &[], TCP, l4(TCP, 1, 443)),
            ]
            .concat(),
            SHOT,
        ),
        // Nested prefixes of different faults: the longest match carries both.
        c(
            "nested: udp into the /25",
            s("10.42.1.2", "10.42.4.200", UDP, 1, 2),
            SHOT,
        ),
        c(
            "nested: tcp into the /25",
            s("10.42.1.2", "10.42.4.200", TCP, 1, 2),
            SHOT,
        ),
        c(
            "nested: tcp outside the /25",
            s("10.42.1.2", "10.42.4.20", TCP, 1, 2),
            OK,
        ),
    ]
}

/// Malformed or foreign packets: all pass, all counted as unparsed. (The kernel's test run refuses
/// untagged IPv4/IPv6 frames shorter than the IP header, so truncation hides behind a VLAN tag.)
fn malformed() -> Vec<Case> {
    let db = || ipv4("10.42.1.2", "10.42.2.7", TCP, PLAIN, l4(TCP, 1, 5432));
    vec![
        c(
            "ipv4 IHL 4",
            [eth(0x0800), {
                let mut p = db();
                p[0] = 0x44;
                p
            }]
            .concat(),
            OK,
        ),
        c(
            "ipv4 IHL 15, options missing",
            [eth(0x0800), {
                let mut p = db()[..20].to_vec();
                p[0] = 0x4f;
                p
            }]
            .concat(),
            OK,
        ),
        c(
            "ipv4 header saying version 6",
            [eth(0x0800), {
                let mut p = db();
                p[0] = 0x65;
                p
            }]
            .concat(),
            OK,
        ),
        c(
            "ipv4 cut before the destination",
            [eth_vlan(0x0800, false), db()[..12].to_vec()].concat(),
            OK,
        ),
        c(
            "tcp cut before the ports",
            [eth_vlan(0x0800, false), db()[..22].to_vec()].concat(),
            OK,
        ),
        c(
            "ipv6 cut before the destination",
            [
                eth_vlan(0x86dd, false),
                ipv6("fd00:42:1::2", "fd00:42:2::7", &[], TCP, l4(TCP, 1, 443))[..30].to_vec(),
            ]
            .concat(),
            OK,
        ),
        c(
            "ipv6 extension header cut short",
            [
                eth_vlan(0x86dd, false),
                ipv6(
                    "fd00:42:1::2",
                    "fd00:42:2::7",
                    &[(0, v6_opts(3))],
                    TCP,
                    vec![],
                )[..44]
                    .to_vec(),
            ]
            .concat(),
            OK,
        ),
        c(
            "802.1Q tag cut short",
            eth_vlan(0x0800, false)[..16].to_vec(),
            OK,
        ),
        c("unknown EtherType", [eth(0x88b5), vec![0; 40]].concat(), OK),
        c("ARP", [eth(0x0806), vec![0; 28]].concat(), OK),
    ]
}

#[test]
fn each_match_dimension_and_action_gives_the_right_verdict() {
    let b = load(FAULTS);
    std::thread::sleep(std::time::Duration::from_millis(5)); // "expired" is past its deadline
    for (prog, jh) in [
        (VETH, JudgeHook::VethEgress),
        (OVERLAY, JudgeHook::OverlayEgress),
    ] {
        for k in cases() {
            assert_eq!(b.tc(prog, &k.pkt, 0, 1).0, k.want, "{prog}: {}", k.name);
        }
        // Counters: the dry-run fault matched and passed; the expired one was counted as such.
        let dry = b.counters("dry", jh);
        assert_eq!(
            (
                dry.packets(Outcome::Matched),
                dry.packets(Outcome::Passed),
                dry.packets(Outcome::Dropped)
            ),
            (1, 1, 0),
            "{prog}"
        );
        let db = b.counters("db", jh);
        assert_eq!(
            db.packets(Outcome::Dropped),
            4,
            "{prog}: db drops (plain, options, first fragment, VLAN)"
        );
        assert_eq!(
            db.get(Outcome::Dropped).bytes,
            db.get(Outcome::Matched).bytes
        );
        assert_eq!(b.counters("expired", jh).packets(Outcome::Matched), 0);
    }
    assert_eq!(b.maps.stats(Hook::VethEgress).unwrap().expired_packets, 1);
    assert_eq!(
        b.maps.stats(Hook::OverlayEgress).unwrap().expired_packets,
        1
    );
}

#[test]
fn malformed_packets_pass_untouched_and_are_counted() {
    let b = load(FAULTS);
    for k in malformed() {
        let mut out = vec![0u8; k.pkt.len() + 256];
        let p: &SchedClassifier = b.ebpf.program(VETH).unwrap().try_into().unwrap();
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(&k.pkt),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.return_value, k.want, "{}", k.name);
        assert_eq!(
            &out[..r.data_size_out as usize],
            &k.pkt[..],
            "{}: packet changed",
            k.name
        );
        assert_eq!(b.xdp(&k.pkt), XDP_PASS, "xdp: {}", k.name);
    }
    let s = b.maps.stats(Hook::VethEgress).unwrap();
    assert_eq!(s.unparsed_packets, malformed().len() as u64);
    assert_eq!(s.seen_packets, malformed().len() as u64);
}

/// With no fault installed a packet is counted and passed without being parsed (the idle path):
/// malformed frames are not even looked at; installing a fault makes the hook parse again, and
/// removing it stops that.
#[test]
fn with_no_fault_installed_nothing_is_parsed() {
    let mut b = load("[]");
    let bad = &malformed()[0].pkt;
    assert_eq!(b.veth(bad), OK);
    let s = b.maps.stats(Hook::VethEgress).unwrap();
    assert_eq!(
        (s.seen_packets, s.unparsed_packets),
        (1, 0),
        "idle: not parsed"
    );
    b.install(FAULTS);
    assert_eq!(b.veth(bad), OK);
    let s = b.maps.stats(Hook::VethEgress).unwrap();
    assert_eq!(
        (s.seen_packets, s.unparsed_packets),
        (2, 1),
        "a fault installed: parsed"
    );
    b.install("[]");
    assert_eq!(b.veth(bad), OK);
    let s = b.maps.stats(Hook::VethEgress).unwrap();
    assert_eq!(
        (s.seen_packets, s.unparsed_packets),
        (3, 1),
        "removed again: not parsed"
    );
}

#[test]
fn delay_stamps_an_edt_delivery_time() {
    let b = load(
        r#"[{"name":"d","to":["10.42.2.40"],"delay":"50ms","for":"1h"},
                     {"name":"j","to":["10.42.2.41"],"delay":"50ms","jitter":"10ms","for":"1h"}]"#,
    );
    let before = monotonic_ns();
    let (v, t) = b.tc(VETH, &simple("10.42.1.2", "10.42.2.40", UDP, 1, 2), 0, 1);
    let after = monotonic_ns();
    // Test-run skbs carry a (dummy) socket, so the stamped packet is handed to fq as a clone
    // without one and the original is freed by a redirect to no device (see hand_to_fq in the
    // eBPF crate; the clone and its mark: tests/tests/prog_mark.rs).
    assert_eq!(
        v, 7,
        "handed to fq as a clone (TC_ACT_REDIRECT to ifindex 0)"
    );
    assert!(
        t >= before + 50_000_000 && t <= after + 50_000_000,
        "tstamp {t} not now+50ms ({before}..{after})"
    );
    assert_eq!(
        b.counters("d", JudgeHook::VethEgress)
            .packets(Outcome::Delayed),
        1
    );
    // Jitter: uniform in [40, 60] ms, counted from the program's clock read, which lies
    // between `before` and `after`: the bounds are exact however long this thread waits for a
    // CPU (a CI run under load saw 1.9 ms between a read before the run and the program's).
    let (mut lo, mut hi) = (u64::MAX, 0);
    for _ in 0..400 {
        let before = monotonic_ns();
        let (_, t) = b.tc(VETH, &simple("10.42.1.2", "10.42.2.41", UDP, 1, 2), 0, 1);
        let after = monotonic_ns();
        assert!(
            t >= before + 40_000_000 && t <= after + 60_000_000,
            "tstamp {t} not now+50ms+-10ms ({before}..{after})"
        );
        // The delay's least possible and greatest possible value.
        lo = lo.min(t.saturating_sub(after));
        hi = hi.max(t - before);
    }
    // 400 uniform draws: the extremes land within 1 ms of the ends (each miss has p = 0.95^400).
    assert!(
        lo < 41_000_000 && hi > 59_000_000,
        "spread {lo}..{hi} too narrow for +-10ms"
    );
    // XDP cannot delay: it passes.
    assert_eq!(
        b.xdp(&simple("10.42.1.2", "10.42.2.40", UDP, 1, 2)),
        XDP_PASS
    );
}

#[test]
fn loss_probability_is_what_was_asked() {
    let b = load(r#"[{"name":"l","to":["10.42.2.60"],"loss":"30%","for":"1h"}]"#);
    let n = 20_000u64;
    b.tc(
        VETH,
        &simple("10.42.1.2", "10.42.2.60", UDP, 1, 2),
        0,
        n as u32,
    );
    assert_judged_once_with_loss(&b, "l", n, 0.3);
}

/// Each of `n` packets counted once by fault `name`, dropped with probability `p`.
fn assert_judged_once_with_loss(b: &Bpf, name: &str, n: u64, p: f64) {
    let c = b.counters(name, JudgeHook::VethEgress);
    assert_eq!(c.packets(Outcome::Matched), n, "counted once per packet");
    assert_eq!(c.packets(Outcome::Dropped) + c.packets(Outcome::Passed), n);
    stats::assert_binomial(c.packets(Outcome::Dropped), n, p, "dropped");
}

/// A both-ways fault whose `from` and `to` overlap matches a packet by both of its rules: it is
/// still judged once (loss 30%, not 1 - 0.7^2 = 51%), counted once, and delays once.
#[test]
fn a_both_ways_fault_matching_by_both_rules_is_judged_once() {
    let b = load(
        r#"[{"name":"bw","from":["10.42.1.2","10.42.1.3"],"to":["10.42.1.2","10.42.1.3"],"both_ways":true,"loss":"30%","for":"1h"},
            {"name":"bwd","from":["10.42.1.4","10.42.1.5"],"to":["10.42.1.4","10.42.1.5"],"both_ways":true,"delay":"50ms","for":"1h"}]"#,
    );
    let n = 20_000u64;
    b.tc(
        VETH,
        &simple("10.42.1.2", "10.42.1.3", UDP, 1, 2),
        0,
        n as u32,
    );
    // Judged twice, ~10200 of 20000 would drop.
    assert_judged_once_with_loss(&b, "bw", n, 0.3);
    let now = monotonic_ns();
    let (_, t) = b.tc(VETH, &simple("10.42.1.4", "10.42.1.5", UDP, 1, 2), 0, 1);
    let d = t.saturating_sub(now);
    assert!(
        (50_000_000..60_000_000).contains(&d),
        "delay {d} ns: 50 ms expected once, not twice"
    );
    assert_eq!(
        b.counters("bwd", JudgeHook::VethEgress)
            .packets(Outcome::Delayed),
        1
    );
}

#[test]
fn flow_percentage_hits_the_same_flows_both_ways_and_follows_the_seed() {
    let json = |seed: u32| {
        format!(
            r#"[{{"name":"f","to":["10.42.2.70"],"from":["10.42.1.2"],"both_ways":true,"proto":"udp","flows":"30%","seed":{seed},"blackhole":true,"for":"1h"}}]"#
        )
    };
    let mut b = load(&json(7));
    let ep = |a: &str, port| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&a.parse::<std::net::Ipv4Addr>().unwrap().octets());
        flow::Endpoint { addr, port }
    };
    let mut hit = Vec::new();
    for sport in 20000..22000u16 {
        let fwd = b.veth(&simple("10.42.1.2", "10.42.2.70", UDP, sport, 53));
        let rev = b.veth(&simple("10.42.2.70", "10.42.1.2", UDP, 53, sport));
        assert_eq!(fwd, rev, "both directions of flow :{sport} judged alike");
        let predicted = flow::ppm(&ep("10.42.1.2", sport), &ep("10.42.2.70", 53), UDP, 7) < 300_000;
        assert_eq!(fwd == SHOT, predicted, "flow :{sport}");
        hit.push(fwd == SHOT);
    }
    let n = hit.iter().filter(|h| **h).count();
    // 30% of 2000 flows: mean 600, sd 20.5; 99.9% bound +-68.
    assert!(n.abs_diff(600) <= 68, "{n} of 2000 flows hit");
    // Same seed again: the same flows. Another seed: another set.
    b.install(&json(7));
    let again: Vec<bool> = (20000..22000u16)
        .map(|p| b.veth(&simple("10.42.1.2", "10.42.2.70", UDP, p, 53)) == SHOT)
        .collect();
    assert_eq!(again, hit);
    b.install(&json(8));
    let other: Vec<bool> = (20000..22000u16)
        .map(|p| b.veth(&simple("10.42.1.2", "10.42.2.70", UDP, p, 53)) == SHOT)
        .collect();
    assert_ne!(other, hit);
}

#[test]
fn safety_switches_turn_every_fault_off() {
    let mut b = load(FAULTS);
    let db = simple("10.42.1.2", "10.42.2.7", TCP, 40000, 5432);
    assert_eq!(b.veth(&db), SHOT);
    // Abort: one word.
    b.maps.set_ctrl(ctrl::ARMED, 0).unwrap();
    assert_eq!(b.veth(&db), OK);
    assert_eq!(b.xdp(&db), XDP_PASS);
    b.maps.set_ctrl(ctrl::ARMED, 1).unwrap();
    assert_eq!(b.veth(&db), SHOT);
    // A heartbeat older than the grace period: faults lapse.
    b.maps.set_ctrl(ctrl::GRACE_NS, 1_000_000_000).unwrap();
    b.maps
        .set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns() - 2_000_000_000)
        .unwrap();
    let lapsed = || b.maps.stats(Hook::VethEgress).unwrap().lapsed_packets;
    let before = lapsed();
    assert_eq!(b.veth(&db), OK);
    // Counted lapsed: the packets a fault's selectors match (the clock is read for those only).
    let other = simple("10.42.1.2", "10.42.3.3", TCP, 40000, 5432);
    assert_eq!(b.veth(&other), OK);
    assert_eq!(lapsed(), before + 1);
    b.maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()).unwrap();
    assert_eq!(b.veth(&db), SHOT);
    // Removing the fault set.
    b.install("[]");
    assert_eq!(b.veth(&db), OK);
}

#[test]
fn each_packet_is_judged_at_one_hook() {
    // The TC ingress program's record is per CPU (early.rs): its runs and egress's on one CPU.
    on_cpu0(each_packet_is_judged_at_one_hook_on_one_cpu);
}

fn each_packet_is_judged_at_one_hook_on_one_cpu() {
    let mut b = load(FAULTS);
    let db = simple("10.42.1.2", "10.42.2.7", TCP, 40000, 5432);
    let delayed = simple("10.42.1.2", "10.42.2.40", UDP, 1, 2);
    // Arrived through flannel.1 (ifindex 77): judged on the sender's node, not at veth egress.
    b.maps.set_ctrl(ctrl::OVERLAY_IFINDEX, 77).unwrap();
    assert_eq!(b.tc(VETH, &db, 77, 1).0, OK);
    assert_eq!(b.tc(VETH, &delayed, 77, 1).1, 0, "not delayed twice");
    assert_eq!(b.maps.stats(Hook::VethEgress).unwrap().skipped_packets, 2);
    assert_eq!(b.tc(VETH, &db, POD, 1).0, SHOT, "from a local pod");
    // With XDP judging drops at the pod veths (POD is one), egress judges them only for traffic
    // that did not enter through one of those (or changed on the way: the TC ingress program
    // records what XDP let through, and whether XDP is on its interface).
    b.maps.set_ctrl(ctrl::EARLY, ctrl::EARLY_XDP).unwrap();
    b.maps.set_early_iface(POD, true).unwrap();
    assert_eq!(b.xdp(&db), XDP_DROP);
    assert_eq!(
        b.tc(INGRESS, &db, 0, 1).0,
        OK,
        "with XDP the TC ingress only records"
    );
    assert_eq!(b.tc(VETH, &db, POD, 1).0, OK, "from a pod: XDP judged it");
    assert_eq!(
        b.tc(OVERLAY, &db, BRIDGE, 1).0,
        OK,
        "from a pod, routed: XDP judged it"
    );
    assert_eq!(
        b.tc(VETH, &db, UPLINK, 1).0,
        SHOT,
        "through an uplink (no XDP there): judged at egress"
    );
    b.maps.set_early_iface(POD, false).unwrap();
    assert_eq!(b.tc(INGRESS, &db, 0, 1).0, OK);
    assert_eq!(b.tc(VETH, &db, POD, 1).0, SHOT, "that veth's XDP gone");
    assert_eq!(b.tc(OVERLAY, &db, BRIDGE, 1).0, SHOT, "routed alike");
    b.maps.set_early_iface(POD, true).unwrap();
    assert_eq!(b.tc(INGRESS, &db, 0, 1).0, OK);
    assert_eq!(
        b.tc(VETH, &db, 0, 1).0,
        SHOT,
        "from the node itself: judged at egress"
    );
    let (_, t) = b.tc(VETH, &delayed, POD, 1);
    assert!(t > monotonic_ns(), "delay is still judged at egress");
    b.install(FAULTS);
    assert_eq!(
        b.counters("db", JudgeHook::VethIngress),
        FaultCounters::default(),
        "counters reset for a new fault set"
    );
}

/// The default: drops judged at the sender's veth TC ingress, which records the packet for the
/// egress hook it reaches next on the same CPU. That hook leaves the drops alone when the packet
/// is unchanged, and judges them when the host's NAT changed it on the way (a Service VIP turned
/// into a pod's address).
#[test]
fn tc_ingress_judges_drops_and_egress_what_nat_changed() {
    require_root();
    on_cpu0(|| {
        let mut b = load(
            r#"[
  {"name":"db","to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"blackhole":true,"for":"1h"},
  {"name":"wide","to":["10.0.0.0/8"],"proto":"udp","blackhole":true,"dry_run":true,"for":"1h"},
  {"name":"delay","to":["10.42.2.40"],"delay":"50ms","for":"1h"}
]"#,
        );
        let matched = |b: &Bpf, f: &str, jh| b.counters(f, jh).packets(Outcome::Matched);
        let db = simple("10.42.1.2", "10.42.2.7", TCP, 40000, 5432);
        assert_eq!(b.tc(INGRESS, &db, 0, 1).0, SHOT, "dropped where it enters");
        assert_eq!(
            b.counters("db", JudgeHook::VethIngress)
                .packets(Outcome::Dropped),
            1
        );
        // To a Service VIP no fault names; translated to db's pod on the way.
        let vip = simple("10.42.1.2", "10.96.0.10", TCP, 40000, 5432);
        assert_eq!(b.tc(INGRESS, &vip, 0, 1).0, OK);
        assert_eq!(
            b.tc(VETH, &db, POD, 1).0,
            SHOT,
            "changed by NAT: its drops are judged at egress, on the pod's address"
        );
        // Unchanged (the TTL aside: routed): the dry-run fault matched at ingress is not judged
        // again.
        let u = simple("10.42.1.2", "10.42.2.60", UDP, 1, 2);
        assert_eq!(b.tc(INGRESS, &u, 0, 1).0, OK);
        let mut routed = u.clone();
        routed[14 + 8] -= 1;
        assert_eq!(b.tc(VETH, &routed, POD, 1).0, OK);
        assert_eq!(matched(&b, "wide", JudgeHook::VethIngress), 1);
        assert_eq!(matched(&b, "wide", JudgeHook::VethEgress), 0, "judged once");
        // Changed by NAT: judged at egress on what it carries now (a fault whose prefixes hold
        // both the VIP and the pod is judged at both).
        let uvip = simple("10.42.1.2", "10.96.0.11", UDP, 1, 2);
        assert_eq!(b.tc(INGRESS, &uvip, 0, 1).0, OK);
        assert_eq!(b.tc(VETH, &u, POD, 1).0, OK);
        assert_eq!(matched(&b, "wide", JudgeHook::VethIngress), 2);
        assert_eq!(matched(&b, "wide", JudgeHook::VethEgress), 1);
        // Another port is another packet.
        assert_eq!(b.tc(INGRESS, &u, 0, 1).0, OK);
        let other_port = simple("10.42.1.2", "10.42.2.60", UDP, 1, 3);
        assert_eq!(b.tc(VETH, &other_port, POD, 1).0, OK);
        assert_eq!(matched(&b, "wide", JudgeHook::VethEgress), 2);
        // Through an interface without the ingress judge (an uplink), or another pod's veth:
        // egress judges it all, whatever this CPU's record says.
        assert_eq!(b.tc(INGRESS, &u, 0, 1).0, OK);
        assert_eq!(b.tc(VETH, &u, UPLINK, 1).0, OK);
        assert_eq!(matched(&b, "wide", JudgeHook::VethEgress), 3);
        assert_eq!(b.tc(VETH, &u, POD + 1, 1).0, OK);
        assert_eq!(matched(&b, "wide", JudgeHook::VethEgress), 4);
        // Routed (through the bridge, to another node): judged once.
        assert_eq!(b.tc(INGRESS, &u, 0, 1).0, OK);
        assert_eq!(b.tc(OVERLAY, &routed, BRIDGE, 1).0, OK);
        assert_eq!(matched(&b, "wide", JudgeHook::VethIngress), 5);
        assert_eq!(
            matched(&b, "wide", JudgeHook::OverlayEgress),
            0,
            "judged once"
        );
        // IPv6 alike.
        b.install(
            r#"[{"name":"v6","to":["fd00:42:2::/64"],"proto":"tcp","blackhole":true,"dry_run":true,"for":"1h"}]"#,
        );
        let six = simple("fd00:42:1::2", "fd00:42:2::7", TCP, 40000, 80);
        assert_eq!(b.tc(INGRESS, &six, 0, 1).0, OK);
        assert_eq!(b.tc(VETH, &six, POD, 1).0, OK);
        assert_eq!(matched(&b, "v6", JudgeHook::VethIngress), 1);
        assert_eq!(matched(&b, "v6", JudgeHook::VethEgress), 0, "judged once");
        let six_nat = simple("fd00:42:1::2", "fd00:42:2::8", TCP, 40000, 80);
        assert_eq!(b.tc(INGRESS, &six, 0, 1).0, OK);
        assert_eq!(b.tc(VETH, &six_nat, POD, 1).0, OK);
        assert_eq!(matched(&b, "v6", JudgeHook::VethEgress), 1);
        b.install(
            r#"[{"name":"db","to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"blackhole":true,"for":"1h"},
                {"name":"delay","to":["10.42.2.40"],"delay":"50ms","for":"1h"}]"#,
        );
        // Delay is judged at egress, also for a packet from a pod.
        let d = simple("10.42.1.2", "10.42.2.40", UDP, 1, 2);
        assert_eq!(b.tc(INGRESS, &d, 0, 1).0, OK);
        let (_, t) = b.tc(VETH, &d, POD, 1);
        assert!(t > monotonic_ns(), "delayed at egress");
        // With no drop-like fault installed the ingress hook does not even parse.
        // An IPv4 header length of 16 bytes: no parser takes it.
        // Its destination (bytes 30-33) is db's: a packet to an address no fault names passes
        // unparsed (below).
        let mut garbled = [eth(0x0800), vec![0; 40]].concat();
        garbled[14] = 0x44;
        garbled[30..34].copy_from_slice(&[10, 42, 2, 7]);
        let unparsed = |b: &Bpf| b.maps.stats(Hook::VethIngress).unwrap().unparsed_packets;
        let before = unparsed(&b);
        assert_eq!(b.tc(INGRESS, &garbled, 0, 1).0, OK);
        assert_eq!(unparsed(&b), before + 1, "parsed while a drop is installed");
        let mut elsewhere = garbled.clone();
        elsewhere[30..34].copy_from_slice(&[10, 9, 9, 9]);
        assert_eq!(b.tc(INGRESS, &elsewhere, 0, 1).0, OK);
        assert_eq!(
            unparsed(&b),
            before + 1,
            "to an address no fault names: not parsed"
        );
        // The ingress hook found that destination in no rule; a change since (another GEN word)
        // makes egress look again: the new fault's delay applies.
        let to_new = simple("10.42.1.2", "10.42.2.41", UDP, 1, 2);
        assert_eq!(b.tc(INGRESS, &to_new, 0, 1).0, OK);
        b.install(
            r#"[{"name":"db","to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"blackhole":true,"for":"1h"},
                {"name":"delay","to":["10.42.2.40","10.42.2.41"],"delay":"50ms","for":"1h"}]"#,
        );
        let (_, t) = b.tc(VETH, &to_new, POD, 1);
        assert!(
            t > monotonic_ns(),
            "delayed: the ingress's miss was of the old faults"
        );
        b.install(r#"[{"name":"delay","to":["10.42.2.40"],"delay":"50ms","for":"1h"}]"#);
        assert_eq!(b.tc(INGRESS, &garbled, 0, 1).0, OK);
        assert_eq!(unparsed(&b), before + 1, "not parsed: no drop installed");
    });
}

/// A full node: MAX_FAULTS (256) both-ways faults, so every one of the 512 rules is in use, with
/// 10,240 host prefixes. Each fault's packets are judged by it alone, in both directions, at the
/// lowest and highest slots and rules and across the words of the rule sets (64 rules each); the
/// last fault, matched by both of its rules (510 and 511), is judged once.
/// A destination found in no rule is remembered per CPU under the GEN word it was found with
/// (classify.rs `destination_misses`); a change that names it must end that, also when the
/// change after it brings back the same generation and flags (only the change count in the GEN
/// word, `ctrl::GEN_SEQ_SHIFT`, tells the two words apart).
#[test]
fn a_remembered_miss_ends_with_the_change_that_names_its_destination() {
    require_root();
    on_cpu0(|| {
        let other =
            r#"{"name":"other","to":["10.42.2.8","fd00:42:2::8"],"blackhole":true,"for":"1h"}"#;
        let target =
            r#"{"name":"target","to":["10.42.2.9","fd00:42:2::9"],"blackhole":true,"for":"1h"}"#;
        let mut b = load(&format!("[{other}]"));
        let v4 = simple("10.42.1.2", "10.42.2.9", UDP, 1, 2);
        let v6 = simple("fd00:42:1::2", "fd00:42:2::9", UDP, 1, 2);
        let verdicts =
            |b: &Bpf| [&v4, &v6].map(|p| (b.tc(INGRESS, p, 0, 2).0, b.tc(VETH, p, 0, 2).0));
        assert_eq!(verdicts(&b), [(OK, OK); 2], "named by no fault");
        // A change that does not name it (nothing sent meanwhile), then one that does: the
        // generation and the flags are the first change's again.
        b.install(&format!("[{other}]"));
        b.install(&format!("[{other},{target}]"));
        assert_eq!(verdicts(&b), [(SHOT, SHOT); 2], "named now");
        b.install(&format!("[{other}]"));
        assert_eq!(verdicts(&b), [(OK, OK); 2], "no longer");
    });
}

#[test]
fn a_full_node_of_faults_with_ten_thousand_prefixes_matches_exactly() {
    let n = MAX_FAULTS;
    // Fault i owns 10.i.7.1-40, TCP only, both ways; the last one is a dry run between two pods.
    let mut faults: Vec<String> = (0..n - 1)
        .map(|i| {
            let hosts: Vec<String> = (1..=40).map(|h| format!("\"10.{i}.7.{h}\"")).collect();
            format!(
                r#"{{"name":"f{i}","to":[{}],"proto":"tcp","both_ways":true,"blackhole":true,"for":"1h"}}"#,
                hosts.join(",")
            )
        })
        .collect();
    faults.push(format!(
        r#"{{"name":"f{}","from":["10.42.1.2","10.42.1.3"],"to":["10.42.1.2","10.42.1.3"],"both_ways":true,"blackhole":true,"dry_run":true,"for":"1h"}}"#,
        n - 1
    ));
    let b = load(&format!("[{}]", faults.join(",")));
    for i in [0u32, 31, 32, 63, 64, 127, 128, 200, 254] {
        let hit = format!("10.{i}.7.17");
        assert_eq!(
            b.veth(&simple("10.42.1.2", &hit, TCP, 1, 2)),
            SHOT,
            "to {hit}"
        );
        assert_eq!(
            b.veth(&simple(&hit, "10.42.1.2", TCP, 1, 2)),
            SHOT,
            "from {hit}"
        );
        assert_eq!(
            b.veth(&simple("10.42.1.2", &hit, UDP, 1, 2)),
            OK,
            "{hit} udp"
        );
        let miss = format!("10.{i}.7.41");
        assert_eq!(
            b.veth(&simple("10.42.1.2", &miss, TCP, 1, 2)),
            OK,
            "{miss}: not listed"
        );
        let c = b.counters(&format!("f{i}"), JudgeHook::VethEgress);
        assert_eq!(
            (c.packets(Outcome::Matched), c.packets(Outcome::Dropped)),
            (2, 2),
            "f{i}"
        );
    }
    assert_eq!(
        b.veth(&simple("10.42.1.2", "10.42.1.3", UDP, 1, 2)),
        OK,
        "dry run"
    );
    let c = b.counters(&format!("f{}", n - 1), JudgeHook::VethEgress);
    assert_eq!(
        (c.packets(Outcome::Matched), c.packets(Outcome::Passed)),
        (1, 1),
        "judged once by its two rules"
    );
}

/// Many host addresses (the sorted arrays searched by halving, written through a mapping): every
/// address written matches and its neighbours do not, and after the next change (a new
/// generation written, the old one emptied) only the new set does.
#[test]
fn forty_thousand_hosts_written_and_cleared_match_exactly() {
    let set = |tag: &str, third: u32| {
        let faults: Vec<String> = (0..4)
            .map(|i| {
                let hosts: Vec<String> = (0..10_000)
                    .map(|h| format!("\"10.{}.{}.{}\"", 100 + i, third + h / 250, h % 250 + 1))
                    .collect();
                format!(
                    r#"{{"name":"{tag}{i}","to":[{}],"blackhole":true,"for":"1h"}}"#,
                    hosts.join(",")
                )
            })
            .collect();
        format!("[{}]", faults.join(","))
    };
    let mut b = load(&set("a", 0));
    let hit = |b: &Bpf, dst: &str| b.veth(&simple("10.42.1.2", dst, TCP, 1, 2));
    for dst in ["10.100.0.1", "10.101.20.125", "10.103.39.250"] {
        assert_eq!(hit(&b, dst), SHOT, "{dst}");
    }
    assert_eq!(hit(&b, "10.103.40.1"), OK, "not listed");
    // The next set: the third octet moved up by 20 (half the addresses stay, under new faults).
    b.install(&set("b", 20));
    for (dst, want) in [
        ("10.100.0.1", OK),
        ("10.101.19.250", OK),
        ("10.101.20.1", SHOT),
        ("10.103.59.250", SHOT),
    ] {
        assert_eq!(hit(&b, dst), want, "{dst}");
    }
    // The old generation was emptied: only the live one counts its 40k hosts.
    let pin = b._dir.0.join(injector_common::maps::DST_HOST_V4);
    let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(&pin).unwrap()).unwrap();
    let host = injector::kernel::hosts::HostTable::<injector_common::hosts::V4>::new(
        map,
        injector_common::maps::DST_HOST_V4,
    )
    .unwrap();
    let mut counts = [host.len(0), host.len(1)];
    counts.sort();
    assert_eq!(counts, [0, 40_000]);
}

/// Host addresses (/32, /128) live in sorted arrays searched before the trie of shorter
/// prefixes. A host inside a shorter prefix of another fault must match both faults (its entry's
/// rule set carries the covering prefix's rules); an address only the shorter prefix covers comes from the trie;
/// with hosts only, a miss passes without the trie.
#[test]
fn host_addresses_and_covering_prefixes_match_both_ways_v4_and_v6() {
    let mut b = load(
        r#"[{"name":"net","to":["10.50.0.0/16","fd00:50::/32"],"proto":"tcp","blackhole":true,"for":"1h"},
            {"name":"host","to":["10.50.1.1","fd00:50::1:1"],"proto":"udp","blackhole":true,"for":"1h"}]"#,
    );
    for (src, dst, other, outside) in [
        ("10.42.1.2", "10.50.1.1", "10.50.2.2", "10.51.0.1"),
        ("fd00:42:1::2", "fd00:50::1:1", "fd00:50::2:2", "fd00:51::1"),
    ] {
        let mk = |d: &str, proto: u8| simple(src, d, proto, 1, 2);
        assert_eq!(
            b.veth(&mk(dst, TCP)),
            SHOT,
            "{dst} tcp: the covering prefix"
        );
        assert_eq!(b.veth(&mk(dst, UDP)), SHOT, "{dst} udp: the host");
        assert_eq!(
            b.veth(&mk(other, TCP)),
            SHOT,
            "{other} tcp: the prefix, from the trie"
        );
        assert_eq!(b.veth(&mk(other, UDP)), OK, "{other} udp: not the host");
        assert_eq!(b.veth(&mk(outside, TCP)), OK, "{outside}: outside both");
    }
    b.install(r#"[{"name":"host","to":["10.50.1.1","fd00:50::1:1"],"blackhole":true,"for":"1h"}]"#);
    for (src, hit, miss) in [
        ("10.42.1.2", "10.50.1.1", "10.50.1.2"),
        ("fd00:42:1::2", "fd00:50::1:1", "fd00:50::1:2"),
    ] {
        assert_eq!(
            b.veth(&simple(src, hit, TCP, 1, 2)),
            SHOT,
            "{hit}: hosts only"
        );
        assert_eq!(
            b.veth(&simple(src, miss, TCP, 1, 2)),
            OK,
            "{miss}: a miss passes"
        );
    }
}
