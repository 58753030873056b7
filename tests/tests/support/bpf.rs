//! The judging programs loaded for BPF_PROG_TEST_RUN, with their maps pinned in a directory of the
//! run (removed on drop, also when a test panics half-way), armed, and run on crafted packets.

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
use injector_common::{JudgeHook, Outcome, ctrl, programs};
use injector_tests::{lab::run_prefix, require_root};

/// The run's pin directory, removed on drop.
pub struct PinDir(pub PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub maps: Maps,
    /// Dropped last, after the programs and maps.
    _dir: PinDir,
}

/// What a TC program did with a packet.
pub struct TcRun {
    pub verdict: u32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
    /// `__sk_buff.tstamp` after the run (the EDT stamp of a delayed packet).
    pub tstamp: u64,
}

impl Loaded {
    /// Loads every program of the object, maps pinned under `/sys/fs/bpf/<tag><run>`; armed,
    /// with a heartbeat that holds for an hour.
    pub fn new(tag: &str) -> Loaded {
        require_root();
        let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/{}", run_prefix(tag))));
        std::fs::create_dir_all(&dir.0).unwrap();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&dir.0)
            .load(injector::EBPF_OBJECT)
            .unwrap();
        for p in [
            programs::TC_VETH_EGRESS,
            programs::TC_OVERLAY_EGRESS,
            programs::TC_VETH_INGRESS,
            programs::TC_OBSERVE,
        ] {
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
        Loaded {
            ebpf,
            maps,
            _dir: dir,
        }
    }

    /// Where the maps are pinned.
    pub fn pins(&self) -> &std::path::Path {
        &self._dir.0
    }

    /// Installs the faults of `json` (a fault list, each valid), slots in list order, as the
    /// daemon would.
    pub fn install(&mut self, json: &str) {
        let specs: Vec<FaultSpec> = serde_json::from_str(json).unwrap();
        let faults: Vec<_> = specs.iter().map(|s| s.validate("").unwrap()).collect();
        let names: Vec<&str> = faults.iter().map(|f| f.name.as_str()).collect();
        let slots = assign_slots(&Default::default(), &names).unwrap();
        let img = compile(&plan_at(&faults, &slots, monotonic_ns())).unwrap();
        self.maps.install(&img, &slots).unwrap();
    }

    /// Runs TC program `prog` once on `pkt`, with a zeroed `__sk_buff` context. `None`: the
    /// kernel's test run refuses the packet (EINVAL: an untagged IPv4 or IPv6 frame shorter than
    /// the IP header, which no TC hook sees either).
    pub fn tc(&self, prog: &str, pkt: &[u8]) -> Option<TcRun> {
        let p: &SchedClassifier = self.ebpf.program(prog).unwrap().try_into().unwrap();
        let ctx_in = vec![0u8; size_of::<__sk_buff>()];
        let mut ctx = vec![0u8; size_of::<__sk_buff>()];
        let mut data = vec![0u8; pkt.len() + 256];
        let r = match p.test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut data),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx),
            repeat: 1,
            ..Default::default()
        }) {
            Ok(r) => r,
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EINVAL) && short_ip(pkt) =>
            {
                return None;
            }
            Err(e) => panic!("{prog}: test run failed on {pkt:02x?}: {e:?}"),
        };
        data.truncate(r.data_size_out as usize);
        let t = offset_of!(__sk_buff, tstamp);
        Some(TcRun {
            verdict: r.return_value,
            data,
            tstamp: u64::from_ne_bytes(ctx[t..t + 8].try_into().unwrap()),
        })
    }

    /// Runs TC program `prog` once on a packet the test run takes: the verdict and the packet as
    /// it left.
    pub fn run(&self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        let r = self
            .tc(prog, pkt)
            .unwrap_or_else(|| panic!("{prog}: the test run refused the packet"));
        (r.verdict, r.data)
    }

    /// Packets fault `slot` counted as `o` at the two egress hooks.
    pub fn counted(&self, slot: u32, o: Outcome) -> u64 {
        [JudgeHook::VethEgress, JudgeHook::OverlayEgress]
            .into_iter()
            .map(|jh| self.maps.fault_counters(slot, jh).unwrap().packets(o))
            .sum()
    }

    /// Runs the XDP program once on `pkt`: its verdict.
    pub fn xdp(&self, pkt: &[u8]) -> u32 {
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
}

/// An untagged IPv4 or IPv6 frame shorter than its IP header.
fn short_ip(pkt: &[u8]) -> bool {
    match (pkt[12], pkt[13]) {
        (0x08, 0x00) => pkt.len() < 14 + 20,
        (0x86, 0xdd) => pkt.len() < 14 + 40,
        _ => false,
    }
}
