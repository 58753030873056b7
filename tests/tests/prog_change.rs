//! Duplicate and corrupt through BPF_PROG_TEST_RUN: the decisions at probability 0, 100% and a
//! share (against the binomial bound), a duplicate's clone passing our program once, unjudged,
//! and a corrupted packet differing from the original in exactly one payload bit, its checksums
//! as they were. In a network namespace of the test: clones go to its loopback.

#[expect(dead_code, reason = "shared packet builders; this file uses some")]
mod support;

use std::{os::fd::AsRawFd, path::PathBuf};

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions, tc},
};
use injector::{
    fault::{
        compile::{assign_slots, compile, plan_at},
        spec::FaultSpec,
    },
    kernel::{Maps, monotonic_ns, programs as progs},
};
use injector_common::{FaultCounters, Hook, JudgeHook, Outcome, ctrl, programs};
use injector_tests::{cmd, lab::run_prefix, require_root, stats, traffic::enter};
use support::packets::{PLAIN, TCP, UDP, eth, ipv4, ipv6, l4};

const OK: u32 = 0; // TC_ACT_OK
/// The original of a clone handed to fq: TC_ACT_REDIRECT (to ifindex 0, freed as sent).
const HANDED_OVER: u32 = 7;
const VETH: &str = programs::TC_VETH_EGRESS;

/// Slots in order: dup (100%), dup30, dup0 (threshold set to 0 after compiling), cor, cor30,
/// cor0, and a 50 ms delay with a 100% duplicate on one destination.
const FAULTS: &str = r#"[
  {"name":"dup","to":["10.42.2.1"],"duplicate":"100%","for":"1h"},
  {"name":"dup30","to":["10.42.2.2"],"duplicate":"30%","for":"1h"},
  {"name":"dup0","to":["10.42.2.3"],"duplicate":"100%","for":"1h"},
  {"name":"cor","to":["10.42.2.4","fd00:42:2::4"],"corrupt":"100%","for":"1h"},
  {"name":"cor30","to":["10.42.2.5"],"corrupt":"30%","for":"1h"},
  {"name":"cor0","to":["10.42.2.6"],"corrupt":"100%","for":"1h"},
  {"name":"both-dup","to":["10.42.2.7"],"duplicate":"100%","for":"1h"},
  {"name":"both-delay","to":["10.42.2.7"],"delay":"50ms","for":"1h"}
]"#;

struct Bpf {
    ebpf: Ebpf,
    maps: Maps,
    dir: PathBuf,
    netns: String,
}

impl Drop for Bpf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = cmd::run("ip", &["netns", "del", &self.netns]);
    }
}

/// Call from the thread that runs the test: it enters a namespace of its own, whose loopback
/// the program is attached to (egress), as it is to a pod's veth.
fn load(tag: &str) -> Bpf {
    require_root();
    let prefix = run_prefix(tag);
    let netns = format!("{prefix}-chg");
    cmd::run("ip", &["netns", "add", &netns]).unwrap();
    let dir = PathBuf::from(format!("/sys/fs/bpf/{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ebpf = progs::loader(&dir, true)
        .load(injector::EBPF_OBJECT)
        .unwrap();
    let prog: &mut SchedClassifier = ebpf.program_mut(VETH).unwrap().try_into().unwrap();
    prog.load().unwrap();
    let mut maps = Maps::take(&mut ebpf).unwrap();
    maps.set_ctrl(ctrl::ARMED, 1).unwrap();
    maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()).unwrap();
    maps.set_ctrl(ctrl::GRACE_NS, 3_600_000_000_000).unwrap();
    let specs: Vec<FaultSpec> = serde_json::from_str(FAULTS).unwrap();
    let faults: Vec<_> = specs.iter().map(|s| s.validate("").unwrap()).collect();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let slots = assign_slots(&Default::default(), &names).unwrap();
    let mut img = compile(&plan_at(&faults, &slots, monotonic_ns())).unwrap();
    // Probability 0, which validation refuses (a fault that never acts is a dry run), set in the
    // kernel's own terms.
    img.faults[2].threshold = 0;
    img.faults[5].threshold = 0;
    maps.install(&img, &slots).unwrap();
    let mut b = Bpf {
        ebpf,
        maps,
        dir,
        netns,
    };
    enter(&b.netns).unwrap();
    cmd::run("ip", &["-n", &b.netns, "link", "set", "lo", "up"]).unwrap();
    let _ = tc::qdisc_add_clsact("lo");
    let p: &mut SchedClassifier = b.ebpf.program_mut(VETH).unwrap().try_into().unwrap();
    p.attach("lo", TcAttachType::Egress).unwrap();
    b
}

impl Bpf {
    /// Runs the veth program `repeat` times on `pkt` (each run on the output of the last);
    /// returns the verdict and the packet as it left.
    fn run(&self, pkt: &[u8], repeat: u32) -> (u32, Vec<u8>) {
        let p: &SchedClassifier = self.ebpf.program(VETH).unwrap().try_into().unwrap();
        let mut out = vec![0u8; pkt.len() + 256];
        // The test run's skb is on this namespace's loopback: clones go there.
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test run failed: {e:?}"));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn counters(&self, slot: u32) -> FaultCounters {
        self.maps
            .fault_counters(slot, JudgeHook::VethEgress)
            .unwrap()
    }
}

fn udp_to(dst: &str, payload: usize) -> Vec<u8> {
    let mut l4 = l4(UDP, 4000, 5000);
    l4.truncate(8);
    l4[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    l4[6..8].copy_from_slice(&[0x5a, 0xa5]);
    l4.extend((0..payload).map(|i| i as u8));
    match dst.contains(':') {
        false => [eth(0x0800), ipv4("10.42.1.2", dst, UDP, PLAIN, l4)].concat(),
        true => [eth(0x86dd), ipv6("fd00:42:1::2", dst, &[], UDP, l4)].concat(),
    }
}

/// Runs `f` on a thread of its own (it moves into the test's network namespace).
fn on_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().expect("test thread panicked");
}

#[test]
fn a_duplicate_is_one_clone_that_passes_unjudged() {
    on_thread(|| {
        let b = load("pd1");
        let tap = Tap::new();
        let seen = b.maps.stats(Hook::VethEgress).unwrap().seen_packets;
        let (v, out) = b.run(&udp_to("10.42.2.1", 32), 1);
        assert_eq!(
            (v, &out),
            (OK, &udp_to("10.42.2.1", 32)),
            "the original goes on as it was"
        );
        let c = b.counters(0);
        assert_eq!(
            (c.packets(Outcome::Matched), c.packets(Outcome::Duplicated)),
            (1, 1),
            "judged once: the clone was not judged again"
        );
        assert_eq!(
            b.maps.stats(Hook::VethEgress).unwrap().seen_packets,
            seen + 1,
            "the clone passed before being counted"
        );
        assert!(tap.count() >= 1, "the clone left through the device");
        // With a delay from another fault: both are stamped, the original handed to fq.
        let (v, _) = b.run(&udp_to("10.42.2.7", 32), 1);
        assert_eq!(
            v, HANDED_OVER,
            "delayed and duplicated: the original is handed over"
        );
        assert_eq!(b.counters(6).packets(Outcome::Duplicated), 1);
        assert_eq!(b.counters(7).packets(Outcome::Delayed), 1);
    });
}

#[test]
fn duplicate_at_probability_zero_never_and_at_a_share_binomially() {
    on_thread(|| {
        let b = load("pd2");
        let n = 20_000u64;
        b.run(&udp_to("10.42.2.3", 8), n as u32);
        let c = b.counters(2);
        assert_eq!(
            (c.packets(Outcome::Matched), c.packets(Outcome::Duplicated)),
            (n, 0)
        );
        b.run(&udp_to("10.42.2.2", 8), n as u32);
        let c = b.counters(1);
        assert_eq!(c.packets(Outcome::Matched), n);
        assert_eq!(
            c.packets(Outcome::Duplicated) + c.packets(Outcome::Passed),
            n
        );
        stats::assert_binomial(c.packets(Outcome::Duplicated), n, 0.3, "duplicated");
    });
}

/// The bits in which `a` and `b` differ, as (byte offset, bit).
fn diff_bits(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .flat_map(|(i, (x, y))| {
            let d = x ^ y;
            (0..8)
                .filter(move |k| d & (1 << k) != 0)
                .map(move |k| (i, k))
        })
        .collect()
}

#[test]
fn a_corrupted_packet_differs_in_one_payload_bit_checksums_untouched() {
    on_thread(|| {
        let b = load("pc1");
        let mut places = std::collections::BTreeSet::new();
        for (dst, payload_at) in [("10.42.2.4", 14 + 20 + 8), ("fd00:42:2::4", 14 + 40 + 8)] {
            let orig = udp_to(dst, 100);
            for _ in 0..64 {
                let (v, out) = b.run(&orig, 1);
                assert_eq!(v, OK, "{dst}: delivered");
                let d = diff_bits(&orig, &out);
                assert_eq!(d.len(), 1, "{dst}: exactly one bit flipped: {d:?}");
                let (at, _) = d[0];
                assert!(
                    (payload_at..orig.len()).contains(&at),
                    "{dst}: byte {at} is not in the payload ({payload_at}..{})",
                    orig.len()
                );
                places.insert((dst, at));
            }
        }
        assert!(places.len() > 40, "the bit is chosen at random: {places:?}");
        assert_eq!(b.counters(3).packets(Outcome::Corrupted), 128);
        // A packet with no payload passes untouched, counted as passed.
        let mut syn = l4(TCP, 1, 2);
        syn[12] = 5 << 4;
        let syn = [eth(0x0800), ipv4("10.42.1.2", "10.42.2.4", TCP, PLAIN, syn)].concat();
        assert_eq!(b.run(&syn, 1), (OK, syn.clone()));
        assert_eq!(b.counters(3).packets(Outcome::Passed), 1);
    });
}

#[test]
fn corrupt_at_probability_zero_never_and_at_a_share_binomially() {
    on_thread(|| {
        let b = load("pc2");
        let n = 20_000u64;
        let orig = udp_to("10.42.2.6", 64);
        assert_eq!(b.run(&orig, n as u32), (OK, orig.clone()), "never touched");
        assert_eq!(b.counters(5).packets(Outcome::Corrupted), 0);
        b.run(&udp_to("10.42.2.5", 64), n as u32);
        let c = b.counters(4);
        assert_eq!(c.packets(Outcome::Matched), n);
        assert_eq!(
            c.packets(Outcome::Corrupted) + c.packets(Outcome::Passed),
            n
        );
        stats::assert_binomial(c.packets(Outcome::Corrupted), n, 0.3, "corrupted");
    });
}

/// A packet socket on this namespace's loopback: counts what leaves through it.
struct Tap(std::os::fd::OwnedFd);

impl Tap {
    fn new() -> Tap {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls with valid arguments; the fd is owned at once.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = 1; // lo
            let r = libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            Tap(fd)
        }
    }

    fn count(&self) -> usize {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut n = 0;
        let mut buf = [0u8; 2048];
        // SAFETY: reading into our buffer from our socket.
        while unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        } >= 0
        {
            n += 1;
        }
        n
    }
}
