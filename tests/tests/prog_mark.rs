//! The clone mark through BPF_PROG_TEST_RUN: a packet that carries the `--clone-mark` bit before
//! it reaches us is judged like any other and keeps its mark; a delayed packet's original is
//! handed over (a redirect to no device, freed as sent); and the clone itself, sent to a device our program is attached to, passes it
//! once, unjudged, and leaves with exactly the mark its original had.

#[expect(dead_code)] // shared with prog_test_run, which uses all of it
mod support;

use std::{mem::offset_of, os::fd::AsRawFd, path::PathBuf, time::Duration};

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions, tc},
};
use aya_ebpf_bindings::bindings::__sk_buff;
use injector::{
    fault::{
        compile::{assign_slots, compile, plan_at},
        spec::FaultSpec,
    },
    kernel::{Maps, monotonic_ns, programs as progs},
};
use injector_common::{Hook, JudgeHook, Outcome, ctrl, programs};
use injector_tests::{cmd, lab::run_prefix, require_root, traffic::enter};
use support::packets::*;

const OK: u32 = 0; // TC_ACT_OK
const SHOT: u32 = 2; // TC_ACT_SHOT
/// The original of a clone handed to fq: TC_ACT_REDIRECT (to ifindex 0, freed as sent).
const HANDED_OVER: u32 = 7;
const VETH: &str = programs::TC_VETH_EGRESS;
const OVERLAY: &str = programs::TC_OVERLAY_EGRESS;
const BIT: u32 = progs::DEFAULT_CLONE_MARK;

const FAULTS: &str = r#"[
  {"name":"bh","to":["10.42.2.7"],"blackhole":true,"for":"1h"},
  {"name":"delay","to":["10.42.2.40"],"delay":"50ms","for":"1h"}
]"#;

/// A network namespace of this test (the test runs: clones go to its loopback), the object
/// loaded with its maps pinned in a directory of this test; both removed on drop.
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

/// Call from the thread that runs the test: it enters a namespace of its own.
fn load(tag: &str) -> Bpf {
    require_root();
    let prefix = run_prefix(tag);
    let netns = format!("{prefix}-mark");
    cmd::run("ip", &["netns", "add", &netns]).unwrap();
    let dir = PathBuf::from(format!("/sys/fs/bpf/{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ebpf = progs::loader(&dir, true)
        .load(injector::EBPF_OBJECT)
        .unwrap();
    for p in [VETH, OVERLAY] {
        let prog: &mut SchedClassifier = ebpf.program_mut(p).unwrap().try_into().unwrap();
        prog.load().unwrap();
    }
    let mut maps = Maps::take(&mut ebpf).unwrap();
    maps.set_ctrl(ctrl::ARMED, 1).unwrap();
    maps.set_ctrl(ctrl::HEARTBEAT_NS, monotonic_ns()).unwrap();
    maps.set_ctrl(ctrl::GRACE_NS, 3_600_000_000_000).unwrap();
    maps.set_ctrl(ctrl::CLONE_MARK, u64::from(BIT)).unwrap();
    let specs: Vec<FaultSpec> = serde_json::from_str(FAULTS).unwrap();
    let faults: Vec<_> = specs.iter().map(|s| s.validate("").unwrap()).collect();
    let slots = assign_slots(&Default::default(), &["bh", "delay"]).unwrap();
    let img = compile(&plan_at(&faults, &slots, monotonic_ns())).unwrap();
    maps.install(&img, &slots).unwrap();
    let b = Bpf {
        ebpf,
        maps,
        dir,
        netns,
    };
    enter(&b.netns).unwrap();
    cmd::run("ip", &["-n", &b.netns, "link", "set", "lo", "up"]).unwrap();
    b
}

impl Bpf {
    /// Runs `prog` once on an skb carrying `mark` (and, as every test-run skb, a dummy socket);
    /// returns the verdict and the original's mark after the run.
    fn run(&self, prog: &str, pkt: &[u8], mark: u32) -> (u32, u32) {
        let p: &SchedClassifier = self.ebpf.program(prog).unwrap().try_into().unwrap();
        let m = offset_of!(__sk_buff, mark);
        let mut ctx_in = vec![0u8; size_of::<__sk_buff>()];
        ctx_in[m..m + 4].copy_from_slice(&mark.to_ne_bytes());
        let mut ctx_out = vec![0u8; size_of::<__sk_buff>()];
        let mut out = vec![0u8; pkt.len() + 256];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat: 1,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{prog}: test run failed: {e:?}"));
        (
            r.return_value,
            u32::from_ne_bytes(ctx_out[m..m + 4].try_into().unwrap()),
        )
    }

    fn counters(&self, slot: u32) -> injector_common::FaultCounters {
        self.maps
            .fault_counters(slot, JudgeHook::VethEgress)
            .unwrap()
    }
}

fn blackholed() -> Vec<u8> {
    simple("10.42.1.2", "10.42.2.7", TCP, 40000, 5432)
}

fn delayed() -> Vec<u8> {
    simple("10.42.1.2", "10.42.2.40", UDP, 1, 2)
}

fn untouched() -> Vec<u8> {
    simple("10.42.1.2", "10.42.2.99", UDP, 1, 2)
}

/// Runs `f` on a thread of its own (it moves into the test's network namespace).
fn on_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().expect("test thread panicked");
}

#[test]
fn a_foreign_packet_with_the_clone_bit_is_judged_and_keeps_its_mark() {
    on_thread(|| {
        let mut b = load("pm1");
        // It passes a hook that judges it as any packet: unmatched, it keeps every bit.
        assert_eq!(b.run(VETH, &untouched(), BIT | 0x4000), (OK, BIT | 0x4000));
        assert_eq!(b.run(OVERLAY, &untouched(), BIT), (OK, BIT));
        // Matched by a blackhole, it is dropped (it is not taken for our clone and waved through).
        assert_eq!(b.run(VETH, &blackholed(), BIT), (SHOT, BIT));
        assert_eq!(b.counters(0).packets(Outcome::Dropped), 1);
        // With another configured bit (the old default 0x10000000, in Calico's range) the same.
        b.maps.set_ctrl(ctrl::CLONE_MARK, 0x1000_0000).unwrap();
        assert_eq!(
            b.run(VETH, &untouched(), 0x1000_0000),
            (OK, 0x1000_0000),
            "a packet marked by someone else keeps the mark"
        );
        assert_eq!(b.run(VETH, &blackholed(), 0x1000_0000).0, SHOT);
    });
}

#[test]
fn a_delayed_original_is_stolen_and_its_clone_passes_once_with_the_original_mark() {
    on_thread(|| {
        let mut b = load("pm2");
        // The clone goes to the skb's device, this namespace's loopback: attach there, so the
        // clone meets the program again, as it meets it on a pod's veth.
        let _ = tc::qdisc_add_clsact("lo");
        let p: &mut SchedClassifier = b.ebpf.program_mut(VETH).unwrap().try_into().unwrap();
        p.attach("lo", TcAttachType::Egress).unwrap();
        for mark in [0, 0x4000, BIT | 0x4000] {
            let before = b.counters(1).packets(Outcome::Delayed);
            let seen = b.maps.stats(Hook::VethEgress).unwrap().seen_packets;
            let with_bit = MarkTap::new(mark | BIT);
            let exact = MarkTap::new(mark);
            let (verdict, after) = b.run(VETH, &delayed(), mark);
            assert_eq!(
                (verdict, after),
                (HANDED_OVER, mark),
                "the original is handed over (not SHOT) with its mark"
            );
            assert_eq!(
                b.counters(1).packets(Outcome::Delayed),
                before + 1,
                "mark {mark:#x}: judged once (the clone is not judged again)"
            );
            assert_eq!(
                b.maps.stats(Hook::VethEgress).unwrap().seen_packets,
                seen + 1,
                "mark {mark:#x}: the clone passed unjudged and uncounted"
            );
            assert!(
                exact.count() >= 1,
                "mark {mark:#x}: the clone left with its original's mark"
            );
            if mark & BIT == 0 {
                assert_eq!(
                    with_bit.count(),
                    0,
                    "mark {mark:#x}: the clone bit was removed before it left"
                );
            }
        }
    });
}

/// A packet socket on this namespace's loopback that receives only skbs whose mark is `mark`
/// (a classic BPF filter on `SKF_AD_MARK`), to see which mark a clone left with.
struct MarkTap(std::os::fd::OwnedFd);

impl MarkTap {
    fn new(mark: u32) -> MarkTap {
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
            const SKF_AD_MARK: u32 = 20;
            let ops = [
                libc::sock_filter {
                    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                    jt: 0,
                    jf: 0,
                    k: (libc::SKF_AD_OFF as u32).wrapping_add(SKF_AD_MARK),
                },
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: mark,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: 0xffff,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
            ];
            let prog = libc::sock_fprog {
                len: ops.len() as u16,
                filter: ops.as_ptr() as *mut _,
            };
            let r = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &prog as *const _ as *const libc::c_void,
                size_of::<libc::sock_fprog>() as u32,
            );
            assert_eq!(
                r,
                0,
                "SO_ATTACH_FILTER: {}",
                std::io::Error::last_os_error()
            );
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
            MarkTap(fd)
        }
    }

    /// Packets received so far (both directions on loopback count).
    fn count(&self) -> usize {
        std::thread::sleep(Duration::from_millis(50));
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
