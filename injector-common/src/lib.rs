//! Types shared by the eBPF programs and userspace: map names, map values, hook ids.
//! Everything is `#[repr(C)]`, `Copy`, without `bool` or implicit padding (sizes asserted below).
#![no_std]

/// Names of the maps in the eBPF object; also the file names of their pins.
pub mod maps {
    /// LPM trie: IPv4 destination prefix (network byte order) -> [`Target`](crate::Target).
    pub const DST_V4: &str = "DST_V4";
    /// LPM trie: IPv6 destination prefix (network byte order) -> [`Target`](crate::Target).
    pub const DST_V6: &str = "DST_V6";
    /// Per-CPU array indexed by [`Hook`](crate::Hook): [`HookStats`](crate::HookStats).
    pub const STATS: &str = "STATS";
    /// Every map, in pin order.
    pub const ALL: [&str; 3] = [DST_V4, DST_V6, STATS];
}

/// Names of the programs in the eBPF object.
pub mod programs {
    pub const TC_INGRESS: &str = "tc_ingress";
    pub const TC_EGRESS: &str = "tc_egress";
}

/// Most prefixes one LPM trie holds.
pub const MAX_PREFIXES: u32 = 16 * 1024;

/// Where a program runs; the index into [`maps::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// TC ingress of a device: on a host veth, what the pod sends.
    TcIngress = 0,
    /// TC egress of a device: on a host veth, what the pod receives.
    TcEgress = 1,
}

impl Hook {
    pub const COUNT: u32 = 2;
    pub const ALL: [Hook; Self::COUNT as usize] = [Hook::TcIngress, Hook::TcEgress];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
        }
    }
}

/// What a destination prefix maps to: the fault that owns it and when it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) after which the entry is ignored.
    pub deadline_ns: u64,
    /// Fault id, for counters.
    pub fault_id: u32,
    pub _pad: u32,
}

/// Counters of one hook, summed over CPUs at read time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    /// Every packet the program saw.
    pub seen_packets: u64,
    /// Packets the parser did not understand (passed untouched).
    pub unparsed_packets: u64,
    /// Packets whose destination matched a live entry.
    pub matched_packets: u64,
    pub matched_bytes: u64,
    /// Packets dropped because of a match.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Packets that matched an entry past its deadline, and were passed.
    pub expired_packets: u64,
}

impl HookStats {
    /// Field-wise sum, for folding per-CPU values.
    pub fn add(&mut self, o: &HookStats) {
        self.seen_packets += o.seen_packets;
        self.unparsed_packets += o.unparsed_packets;
        self.matched_packets += o.matched_packets;
        self.matched_bytes += o.matched_bytes;
        self.dropped_packets += o.dropped_packets;
        self.dropped_bytes += o.dropped_bytes;
        self.expired_packets += o.expired_packets;
    }
}

const _: () = assert!(core::mem::size_of::<Target>() == 16);
const _: () = assert!(core::mem::size_of::<HookStats>() == 56);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers with no padding (size asserted above).
    unsafe impl aya::Pod for super::Target {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HookStats {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn stats_add_sums_every_field() {
        let one = HookStats {
            seen_packets: 1,
            unparsed_packets: 2,
            matched_packets: 3,
            matched_bytes: 4,
            dropped_packets: 5,
            dropped_bytes: 6,
            expired_packets: 7,
        };
        let mut sum = one;
        sum.add(&one);
        assert_eq!(sum.seen_packets, 2);
        assert_eq!(sum.expired_packets, 14);
        assert_eq!(sum.matched_bytes, 8);
    }

    #[test]
    fn hook_indices_are_dense() {
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i);
        }
    }
}
