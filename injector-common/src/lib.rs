//! Types shared by the eBPF programs and userspace: map names, map values, hook ids, the flow hash.
//! Everything is `#[repr(C)]`, `Copy`, without `bool` or implicit padding (sizes asserted below).
//!
//! Classification: four lookups (source address, destination address, source port, destination
//! port) map a prefix to the [`RuleSet`] of rules whose sets contain it (the userspace compiler
//! folds overlapping prefixes, so the longest match is exact). Addresses: host prefixes (/32,
//! /128) in sorted arrays ([`hosts`]), shorter ones in LPM tries; ports in LPM tries. A packet's
//! candidate rules are the intersection of the four lookups with the protocol's mask. Every
//! classification map has two generations (a key byte, or a half of an array): userspace fills
//! the inactive generation, then flips [`ctrl::GEN`] in one write.
#![no_std]

pub mod action;
pub mod dns;
pub mod flow;
pub mod hosts;

pub use action::{Action, Count, FaultCounters, Outcome, stage};

/// Names of the maps in the eBPF object; also the file names of their pins.
pub mod maps {
    /// LPM trie `[gen, a, b, c, d]` -> [`RuleSet`](crate::RuleSet) of rules whose sources contain it.
    pub const SRC_V4: &str = "SRC_V4";
    pub const DST_V4: &str = "DST_V4";
    /// LPM trie `[gen, 16 address bytes]` -> [`RuleSet`](crate::RuleSet).
    pub const SRC_V6: &str = "SRC_V6";
    pub const DST_V6: &str = "DST_V6";
    /// LPM trie `[gen, port_hi, port_lo]` -> [`RuleSet`](crate::RuleSet).
    pub const SPORT: &str = "SPORT";
    pub const DPORT: &str = "DPORT";
    /// Array `gen * MASKS_PER_GEN + mask` -> [`RuleSet`](crate::RuleSet); see [`mask`](crate::mask).
    pub const MASKS: &str = "MASKS";
    /// Array `gen * MAX_RULES + rule` -> [`Rule`](crate::Rule).
    pub const RULES: &str = "RULES";
    /// Array `gen * MAX_FAULTS + slot` -> [`FaultCfg`](crate::FaultCfg).
    pub const FAULTS: &str = "FAULTS";
    /// Array of u64 control words, see [`ctrl`](crate::ctrl).
    pub const CTRL: &str = "CTRL";
    /// Per-CPU array `slot * JudgeHook::COUNT + hook` -> [`FaultCounters`](crate::FaultCounters)
    /// (packets and bytes per [`Outcome`](crate::Outcome)).
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU array indexed by [`Hook`](crate::Hook) -> [`HookStats`](crate::HookStats).
    pub const STATS: &str = "STATS";
    /// Userspace only: hash [`SpecKey`](crate::SpecKey) -> one part of a daemon record (a
    /// fault's JSON, a generation's manifest), so a restarted daemon adopts the faults it finds
    /// pinned. No program reads it.
    pub const SPECS: &str = "SPECS";
    /// Array of full-length (host) prefixes, per generation sorted and searched by halving
    /// (see [`hosts`](crate::hosts)): [`hosts::V4`](crate::hosts::V4) or
    /// [`hosts::V6`](crate::hosts::V6) entries. Such an entry's set already holds every shorter
    /// prefix covering it, so a hit is the answer; on a miss the trie (shorter prefixes only) is
    /// asked.
    pub const SRC_HOST_V4: &str = "SRC_HOST_V4";
    pub const DST_HOST_V4: &str = "DST_HOST_V4";
    pub const SRC_HOST_V6: &str = "SRC_HOST_V6";
    pub const DST_HOST_V6: &str = "DST_HOST_V6";
    /// Array `gen * hosts::SETS_PER_GEN + i` -> [`RuleSet`](crate::RuleSet): the distinct
    /// rule sets the host maps' entries name by index.
    pub const HOST_SETS: &str = "HOST_SETS";
    /// Hash ifindex -> 1: the pod veths whose XDP program judges the early stage (drops), with
    /// `--xdp` (empty without). `tc_veth_ingress` asks it about its own interface and records
    /// the answer with the packet for the egress hook (see [`ctrl::EARLY`](crate::ctrl::EARLY)).
    /// Egress asked it for every packet, with the bridge and the TC-judging veths in it too,
    /// before the record carried the answer.
    pub const XDP_IFACES: &str = "XDP_IFACES";
    /// Hash [`dns::Key`](crate::dns::Key) (generation, exact or suffix, length, hash of a
    /// question name) -> u64 set of the DNS faults that answer for it (bit: the fault's DNS
    /// index, [`flag::DNS_INDEX_MASK`](crate::flag::DNS_INDEX_MASK)).
    pub const DNS_NAMES: &str = "DNS_NAMES";
    /// Every map, in pin order.
    pub const ALL: [&str; 20] = [
        SRC_V4,
        DST_V4,
        SRC_V6,
        DST_V6,
        SRC_HOST_V4,
        DST_HOST_V4,
        SRC_HOST_V6,
        DST_HOST_V6,
        HOST_SETS,
        SPORT,
        DPORT,
        MASKS,
        RULES,
        FAULTS,
        CTRL,
        COUNTERS,
        STATS,
        SPECS,
        XDP_IFACES,
        DNS_NAMES,
    ];
}

/// Names of the programs in the eBPF object.
pub mod programs {
    /// Judges faults at the last egress hop towards a local pod (host veth egress).
    pub const TC_VETH_EGRESS: &str = "tc_veth_egress";
    /// Judges faults at the last egress hop towards another node (flannel.1 egress).
    pub const TC_OVERLAY_EGRESS: &str = "tc_vxlan_egress";
    /// Judges the early stage (drops) where a pod's packets enter the node: its host veth's TC
    /// ingress, the earliest TC point (no skb-to-XDP conversion). Default; `--xdp` replaces it.
    pub const TC_VETH_INGRESS: &str = "tc_veth_ingress";
    /// Counts what a hook sees, judges nothing (cni0, flannel.1 ingress; veth ingress with `--xdp`).
    pub const TC_OBSERVE: &str = "tc_observe";
    /// Drop/blackhole fast path at the sending pod's host veth (XDP).
    pub const XDP_VETH: &str = "xdp_veth";
}

/// Indices into the [`maps::CTRL`] array. Each is one u64, written atomically on its own.
pub mod ctrl {
    /// Bit 0: the active generation (0 or 1) of every classification map. Bit 1
    /// ([`GEN_ANY`]): that generation holds at least one rule, so packets are worth parsing.
    /// One word, so the programs never see a generation with the wrong emptiness.
    pub const GEN: u32 = 0;
    /// See [`GEN`].
    pub const GEN_ANY: u64 = 2;
    /// GEN bits 2-5: the active generation's trie of shorter (non-host) prefixes holds entries,
    /// per address map; without, a host-map miss is final and the trie is not asked.
    pub const GEN_TRIE_DST_V4: u64 = 4;
    pub const GEN_TRIE_SRC_V4: u64 = 8;
    pub const GEN_TRIE_DST_V6: u64 = 16;
    pub const GEN_TRIE_SRC_V6: u64 = 32;
    /// GEN bit 6: the active generation holds a fault whose action sends clones through the
    /// device it judges at (`Action::clones`); only then do the programs look for them.
    pub const GEN_CLONES: u64 = 64;
    /// GEN bit 7: the active generation holds a DNS fault: only then are UDP payloads read as
    /// DNS answers and their question names hashed.
    pub const GEN_DNS: u64 = 128;
    /// GEN bit 8: the active generation holds no fault of the early stage (`stage::EARLY`): a
    /// hook that judges only that stage passes packets without parsing them. Bits say "none" so
    /// that a word written by an earlier version (without them) means "judge everything".
    pub const GEN_EARLY_NONE: u64 = 256;
    /// GEN bit 9: the active generation holds no fault of the egress stage (`stage::EGRESS`).
    pub const GEN_EGRESS_NONE: u64 = 512;
    /// GEN bits 32-63: how many changes were flipped in (wrapping), so that two words are equal
    /// only for the same state of the rules. The generation bit and the flags alone repeat (two
    /// changes flip the generation back), and the programs keep answers under the word they
    /// were found with: the destination misses each CPU remembers (injector-ebpf's
    /// `classify::destination_misses`) and the ingress record's (`early::mark`).
    pub const GEN_SEQ_SHIFT: u32 = 32;
    /// 1: faults are live. 0: every fault is off (abort), in one write.
    pub const ARMED: u32 = 1;
    /// CLOCK_MONOTONIC ns of the daemon's last heartbeat.
    pub const HEARTBEAT_NS: u32 = 2;
    /// Faults lapse when the heartbeat is older than this (ns).
    pub const GRACE_NS: u32 = 3;
    /// ifindex of the overlay device (flannel.1): packets that entered through it were judged on
    /// their sender's node and are not judged again at veth egress.
    pub const OVERLAY_IFINDEX: u32 = 4;
    /// Where the early stage (drop, blackhole) of a local pod's packets is judged: one of
    /// [`EARLY_AT_EGRESS`], [`EARLY_XDP`], [`EARLY_TC`].
    pub const EARLY: u32 = 5;
    /// Nowhere before egress: every egress hook judges every stage (a word of 0: the state of
    /// a fresh map).
    pub const EARLY_AT_EGRESS: u64 = 0;
    /// By XDP on the sender's veth (`--xdp`). `tc_veth_ingress` there then only records the
    /// packet for egress, as with [`EARLY_TC`].
    pub const EARLY_XDP: u64 = 1;
    /// By `tc_veth_ingress` on the sender's veth (the default). That program records, per CPU,
    /// the packet's addresses, protocol and ports; the egress hook reached by the same packet
    /// (in the same call chain: bridge forwarding or IP forwarding) compares: unchanged, it
    /// judges only the egress stage; changed by the host's NAT (a Service VIP translated to a
    /// pod), every stage, on the addresses the packet carries now (injector-ebpf's early.rs).
    pub const EARLY_TC: u64 = 2;
    /// The skb->mark bit a delayed packet's clone carries between `bpf_clone_redirect` and the
    /// judging program that lets it through (`daemon --clone-mark`; 0: none). Only a label for
    /// hooks ahead of ours: the clone is recognised by a per-CPU token, not by the mark.
    pub const CLONE_MARK: u32 = 6;
    /// 1: rate faults pace (EDT stamps held by fq: the node has both); 0: they police (drop
    /// what is above the rate). Set by the daemon at start from the kernel's features.
    pub const RATE_PACE: u32 = 7;
    /// ifindex of the bridge (cni0): a packet a pod sends to be routed (to another node, to the
    /// node) enters the host's IP stack through it after its veth's ingress recorded it, so the
    /// egress hook it reaches takes the record as its own for a packet that entered through the
    /// bridge or the veth that recorded it (early.rs), through nothing else.
    pub const BRIDGE_IFINDEX: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// Rule sets are 512-bit: a fault is one rule, or two when it applies both ways.
pub const MAX_RULES: u32 = 512;
/// Faults (counter slots) per node.
pub const MAX_FAULTS: u32 = 256;
/// DNS faults per node: each has a bit of the u64 that [`maps::DNS_NAMES`] gives a name (its
/// DNS index, in [`flag::DNS_INDEX_MASK`], given per generation by the compiler).
pub const MAX_DNS_FAULTS: u32 = 64;
/// Most prefixes per classification trie (both generations together).
pub const MAX_PREFIXES: u32 = 256 * 1024;
/// Most bytes of one record in [`maps::SPECS`] (a fault's JSON).
pub const SPEC_RECORD: usize = 64 * 1024;
/// Bytes of one part of a [`maps::SPECS`] record. A record takes as many parts as its bytes need
/// (part 0 starts with a [`SPEC_HEADER`]), so a change copies what its records hold: a value of
/// the whole 64 KiB each made 256 one-line faults copy 16 MiB. 4032: meant to keep an element,
/// with the kernel's header (~40 B, from the 6.x source; not measured) and the 8-byte key, within
/// one 4 KiB allocation.
pub const SPEC_PART: usize = 4032;
/// Bytes at the start of part 0: the record's length (u32), the CRC-32 of its bytes (u32) and
/// when it was written (u64, `CLOCK_MONOTONIC` ns); all little-endian.
pub const SPEC_HEADER: usize = 16;
/// Most parts of one record.
pub const SPEC_PARTS: u32 = (SPEC_RECORD + SPEC_HEADER).div_ceil(SPEC_PART) as u32;
/// Most records in [`maps::SPECS`]: two sets of fault records (during a change, the old set's and
/// the new one's), a manifest per generation, and the daemon's own records (two copies each).
pub const SPEC_RECORDS: u32 = 2 * MAX_FAULTS + 8;
/// Most entries (parts) in [`maps::SPECS`].
pub const SPEC_KEYS: u32 = SPEC_RECORDS * SPEC_PARTS;

/// Key of one part of a record in [`maps::SPECS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecKey {
    /// The record.
    pub id: u32,
    /// The part, from 0.
    pub part: u32,
}

/// Most rules one packet is judged by (the lowest-numbered matching rules win).
pub const MAX_MATCHES_PER_PACKET: u32 = 8;
/// Most entries in [`maps::DNS_NAMES`] (both generations).
pub const MAX_DNS_KEYS: u32 = 2 * MAX_DNS_FAULTS * dns::MAX_NAMES_PER_FAULT as u32;
/// Most interfaces in [`maps::XDP_IFACES`] (pod veths of one node).
pub const MAX_XDP_IFACES: u32 = 4096;

/// Indices of the masks in [`maps::MASKS`], per generation.
pub mod mask {
    pub const TCP: u32 = 0;
    pub const UDP: u32 = 1;
    /// ICMP and ICMPv6.
    pub const ICMP: u32 = 2;
    /// Any other protocol.
    pub const OTHER: u32 = 3;
    /// Rules without port ranges: the only ones a packet without ports (ICMP, non-first fragment,
    /// other protocols) can match.
    pub const NO_PORTS: u32 = 4;
    pub const PER_GEN: u32 = 8;
}

/// Words of a [`RuleSet`].
pub const RULE_WORDS: usize = (MAX_RULES / 64) as usize;

/// A set of rules, one bit each (`rule r` is bit `r % 64` of word `r / 64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleSet(pub [u64; RULE_WORDS]);

impl RuleSet {
    pub const EMPTY: RuleSet = RuleSet([0; RULE_WORDS]);

    #[inline(always)]
    fn zip(self, o: RuleSet, f: impl Fn(u64, u64) -> u64) -> RuleSet {
        let mut out = self;
        for (w, o) in out.0.iter_mut().zip(o.0) {
            *w = f(*w, o);
        }
        out
    }

    #[inline(always)]
    pub fn and(self, o: RuleSet) -> RuleSet {
        self.zip(o, |a, b| a & b)
    }

    #[inline(always)]
    pub fn or(self, o: RuleSet) -> RuleSet {
        self.zip(o, |a, b| a | b)
    }

    /// The rules of `self` not in `o`.
    #[inline(always)]
    pub fn minus(self, o: RuleSet) -> RuleSet {
        self.zip(o, |a, b| a & !b)
    }

    #[inline(always)]
    pub fn is_empty(self) -> bool {
        self.0.iter().fold(0, |a, w| a | w) == 0
    }

    pub fn with(mut self, rule: u32) -> RuleSet {
        self.0[(rule / 64) as usize] |= 1 << (rule % 64);
        self
    }

    pub fn contains(self, rule: u32) -> bool {
        self.0[(rule / 64) as usize] & (1 << (rule % 64)) != 0
    }

    /// Removes and returns the lowest rule in the set (see [`pop_lowest`]).
    pub fn pop_lowest(&mut self) -> Option<u32> {
        let summary = (0..RULE_WORDS).fold(0, |s, i| s | nonempty_bit(self.0[i], self.0[i], i));
        let w = core::cell::Cell::from_mut(&mut self.0[..]).as_slice_of_cells();
        pop_lowest(summary, |i| w[i].get(), |i, v| w[i].set(v)).map(|(r, _)| r)
    }
}

/// Bit `i` (< 64) set when the word `w` is not 0: `w` and `again` are two reads of the same word.
/// The kernel reads it twice from map memory (volatile), so the compiler cannot see `w | -w`
/// and turn it into a comparison: BPF has no set-on-condition, a comparison is a branch, and a
/// branch per word makes the verifier walk what follows once per combination of empty and
/// non-empty words (with eight words, the judging loop went past its 1M instructions).
#[inline(always)]
pub fn nonempty_bit(w: u64, again: u64, i: usize) -> u64 {
    ((w | again.wrapping_neg()) >> 63) << i
}

/// Removes the lowest rule of the [`RuleSet`] whose word `i` is `word(i)` (`i` in
/// `0..RULE_WORDS`; `set(i, v)` writes it) and whose non-empty words are the bits of `summary`
/// ([`nonempty_bit`]): the rule and the summary after. The kernel's judging loop pops a packet's
/// candidates from map memory with it (`injector-ebpf`'s classify.rs). The word is found from
/// the summary without a branch ([`bit_index`] of its lowest bit) and read at that index.
#[inline(always)]
pub fn pop_lowest(
    summary: u64,
    word: impl Fn(usize) -> u64,
    set: impl Fn(usize, u64),
) -> Option<(u32, u64)> {
    if summary == 0 {
        return None;
    }
    let i = bit_index(summary & summary.wrapping_neg()) as usize & (RULE_WORDS - 1);
    let w = word(i);
    let low = w & w.wrapping_neg();
    let rest = w & !low;
    set(i, rest);
    let summary = if rest == 0 {
        summary & !(1 << i)
    } else {
        summary
    };
    Some((i as u32 * 64 + bit_index(low), summary))
}

/// Index of the single set bit in `b`: the number of bits below it, counted without a branch
/// (BPF has no count-trailing-zeros). Branch-free on purpose: a binary search's six branches on
/// an unknown value split the verifier's walk of the judging loop into up to 64 paths per rule
/// popped, each with its own constant index (measured: ~5% of the egress judges' verified
/// instructions, on 6.1 and 6.18).
#[inline(always)]
pub fn bit_index(b: u64) -> u32 {
    let x = b.wrapping_sub(1);
    let x = x - ((x >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// One rule: a fault in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The fault's slot (counters and [`FaultCfg`]).
    pub slot: u32,
    pub _pad: u32,
}

/// Fault flags.
pub mod flag {
    /// Count what the fault would do; touch nothing.
    pub const DRY_RUN: u32 = 1;
    /// Bits 8-11: a reject fault's [`Reply`](crate::Reply).
    pub const REPLY_SHIFT: u32 = 8;
    pub const REPLY_MASK: u32 = 0xf << REPLY_SHIFT;
    /// The loss follows the Gilbert-Elliott model in [`FaultCfg::ge`](crate::FaultCfg::ge).
    pub const GE: u32 = 1 << 12;
    /// Bits 24-29: a DNS fault's bit in the sets of [`maps::DNS_NAMES`](crate::maps::DNS_NAMES)
    /// (below [`MAX_DNS_FAULTS`](crate::MAX_DNS_FAULTS); slots go up to 255).
    pub const DNS_INDEX_SHIFT: u32 = 24;
    pub const DNS_INDEX_MASK: u32 = 0x3f << DNS_INDEX_SHIFT;
}

/// What a reject fault answers with (`--reject-with`), in [`FaultCfg::flags`]. ICMP codes are
/// those of destination unreachable (ICMP type 3, ICMPv6 type 1).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// By protocol: a TCP reset for TCP, ICMP port unreachable for the rest.
    Auto = 0,
    /// RST (RFC 9293 3.10.7.1): ECONNREFUSED on connect, ECONNRESET on a connection.
    TcpReset = 1,
    /// Port unreachable (ICMP code 3, ICMPv6 code 4): ECONNREFUSED.
    IcmpPort = 2,
    /// Host (ICMP code 1) / address (ICMPv6 code 3) unreachable: EHOSTUNREACH (on connect; a
    /// UDP socket hears of it only with IP_RECVERR, Linux counts it a soft error for IPv4).
    IcmpHost = 3,
    /// Communication administratively prohibited (ICMP code 13, ICMPv6 code 1): EHOSTUNREACH
    /// (IPv4) / EACCES (IPv6).
    IcmpAdmin = 4,
}

impl Reply {
    pub const ALL: [Reply; 5] = [
        Reply::Auto,
        Reply::TcpReset,
        Reply::IcmpPort,
        Reply::IcmpHost,
        Reply::IcmpAdmin,
    ];

    #[inline(always)]
    pub const fn from_flags(flags: u32) -> Reply {
        match (flags & flag::REPLY_MASK) >> flag::REPLY_SHIFT {
            1 => Reply::TcpReset,
            2 => Reply::IcmpPort,
            3 => Reply::IcmpHost,
            4 => Reply::IcmpAdmin,
            _ => Reply::Auto,
        }
    }

    pub const fn flags(self) -> u32 {
        (self as u32) << flag::REPLY_SHIFT
    }

    /// The `--reject-with` word (`Auto` has none: it is the flag left out).
    pub const fn name(self) -> &'static str {
        match self {
            Reply::Auto => "auto",
            Reply::TcpReset => "tcp-reset",
            Reply::IcmpPort => "icmp-port",
            Reply::IcmpHost => "icmp-host",
            Reply::IcmpAdmin => "icmp-admin",
        }
    }

    /// The reply a packet of IP protocol `proto` gets: `Auto` resolved, and a reset for a
    /// protocol other than TCP (validation refuses it; a program must not trust that) made
    /// port unreachable.
    #[inline(always)]
    pub const fn for_proto(self, proto: u8) -> Reply {
        match (self, proto == 6) {
            (Reply::Auto, true) => Reply::TcpReset,
            (Reply::Auto, false) | (Reply::TcpReset, false) => Reply::IcmpPort,
            (r, _) => r,
        }
    }

    /// ICMP destination unreachable code (IPv4, then IPv6).
    #[inline(always)]
    pub const fn icmp_codes(self) -> (u8, u8) {
        match self {
            Reply::IcmpHost => (1, 3),
            Reply::IcmpAdmin => (13, 1),
            _ => (3, 4),
        }
    }
}

/// A fault as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCfg {
    /// CLOCK_MONOTONIC ns after which the fault does nothing. 0: the slot is empty.
    pub deadline_ns: u64,
    /// CLOCK_MONOTONIC ns before which the fault does nothing.
    pub start_ns: u64,
    pub delay_ns: u64,
    /// Uniform jitter: the delay is `delay_ns - jitter_ns + rand(2 * jitter_ns + 1)`.
    pub jitter_ns: u64,
    /// The action's probability as a threshold: drop, duplicate or corrupt when
    /// `bpf_get_prandom_u32() < threshold`; `1 << 32` always.
    pub threshold: u64,
    /// Flows hit, in parts per million of flows (by [`flow::hash`]); 1_000_000 = every flow.
    pub flow_ppm: u32,
    pub seed: u32,
    /// An [`Action`] discriminant.
    pub action: u32,
    /// [`flag`] bits.
    pub flags: u32,
    /// Delay faults: the share of packets sent at once, without the delay, as a threshold (as
    /// netem's reorder: later packets overtake the delayed ones). 0: none.
    pub reorder: u64,
    /// Pulse: the fault acts in the first `pulse_on_ns` of every `pulse_period_ns` from
    /// `start_ns` ([`FaultCfg::pulse_on`]); period 0: always.
    pub pulse_on_ns: u64,
    pub pulse_period_ns: u64,
    /// Bursty loss ([`flag::GE`]): the Gilbert-Elliott model's parameters; else `threshold` is
    /// the loss (drop and blackhole; a delay fault's loss, 0 without).
    pub ge: Ge,
    /// Rate faults: bytes per second (IP bytes, headers included, every segment of a GSO
    /// packet counted); 0 otherwise.
    pub rate: u64,
    /// Rate faults: the bucket (`rate_burst`) as time at the rate: how far ahead of its
    /// schedule the traffic may run in a burst (GCRA's tolerance).
    pub rate_burst_ns: u64,
}

/// A paced rate fault drops a packet that would wait longer than this for its departure (as
/// tbf's `latency`): the queue a rate fault may build, whatever the sender does.
pub const RATE_QUEUE_NS: u64 = 200_000_000;

/// One rate fault's schedule, shared by every CPU (the programs' `RATE_STATE`, indexed by
/// slot): GCRA's theoretical arrival time of the next packet. It belongs to the fault that
/// started at `start_ns`: a new fault in the slot begins with a full bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub start_ns: u64,
    pub tat_ns: u64,
}

impl RateState {
    /// Admits a packet costing `cost_ns` (its bytes at the rate) at `now` under a tolerance of
    /// `burst_ns`, for the fault that started at `start_ns`: `Some(wait)` (ns until it conforms;
    /// 0: at once) and the schedule advanced, or `None` (dropped, schedule unchanged) when it
    /// would wait at all (`pace == false`: policing) or longer than `RATE_QUEUE_NS` (pacing).
    #[inline(always)]
    pub fn admit(
        &mut self,
        start_ns: u64,
        now: u64,
        cost_ns: u64,
        burst_ns: u64,
        pace: bool,
    ) -> Option<u64> {
        let tat = if self.start_ns == start_ns {
            self.tat_ns
        } else {
            0
        };
        let base = if tat > now { tat } else { now };
        let wait = (base - now).saturating_sub(burst_ns);
        if (!pace && wait > 0) || wait > RATE_QUEUE_NS {
            return None;
        }
        self.start_ns = start_ns;
        self.tat_ns = base + cost_ns;
        Some(wait)
    }
}

impl FaultCfg {
    /// Whether the fault's pulse is in an on-window at `now` (always, without a pulse): the
    /// first `pulse_on_ns` of each `pulse_period_ns` counted from `start_ns`.
    #[inline(always)]
    pub fn pulse_on(&self, now: u64) -> bool {
        self.pulse_period_ns == 0
            || now.wrapping_sub(self.start_ns) % self.pulse_period_ns < self.pulse_on_ns
    }
}

/// A Gilbert-Elliott loss model, as thresholds against a 32-bit random number (`1 << 32`:
/// always, 0: never), per packet: a packet is lost with the loss of the state it finds (good or
/// bad), then the state changes with the state's transition chance. The parameters are netem's
/// gemodel's: `p` = P(good -> bad), `r` = P(bad -> good), and the losses `1 - h` (bad state) and
/// `1 - k` (good state). State per fault per CPU (the programs' `GE_STATE` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ge {
    pub p: u64,
    pub r: u64,
    /// Loss in the bad state: `1 - h`.
    pub loss_bad: u64,
    /// Loss in the good state: `1 - k`.
    pub loss_good: u64,
}

impl Ge {
    /// One packet: whether it is lost in state `bad`, and the state after it, from two random
    /// numbers (loss, transition).
    #[inline(always)]
    pub fn step(&self, bad: bool, r_loss: u32, r_move: u32) -> (bool, bool) {
        let (loss, change) = if bad {
            (self.loss_bad, self.r)
        } else {
            (self.loss_good, self.p)
        };
        (
            u64::from(r_loss) < loss,
            bad != (u64::from(r_move) < change),
        )
    }
}

/// The Gilbert-Elliott state of one fault on one CPU (the programs' per-CPU `GE_STATE`, indexed
/// by slot). It belongs to the fault that started at `start_ns`: a new fault in the slot finds
/// another start and begins in the good state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeState {
    pub start_ns: u64,
    /// 1: bad.
    pub bad: u64,
}

/// Hooks that judge faults; the second index of [`maps::COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JudgeHook {
    VethEgress = 0,
    OverlayEgress = 1,
    /// The sending pod's host veth, ingress: TC (`tc_veth_ingress`) or XDP (`xdp_veth`).
    VethIngress = 2,
}

impl JudgeHook {
    pub const COUNT: u32 = 3;
    pub const ALL: [JudgeHook; 3] = [
        JudgeHook::VethEgress,
        JudgeHook::OverlayEgress,
        JudgeHook::VethIngress,
    ];

    /// The [`stage`]s this hook judges. Egress hooks judge every stage, less what the sender's
    /// veth judged at ingress (see [`ctrl::EARLY`]).
    pub const fn stages(self) -> u32 {
        match self {
            JudgeHook::VethEgress | JudgeHook::OverlayEgress => stage::ALL,
            JudgeHook::VethIngress => stage::EARLY,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            JudgeHook::VethEgress => "veth_egress",
            JudgeHook::OverlayEgress => "overlay_egress",
            JudgeHook::VethIngress => "veth_ingress",
        }
    }
}

/// Where a program runs; the index into [`maps::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    VethEgress = 0,
    OverlayEgress = 1,
    /// The sending pod's host veth, ingress (TC or XDP).
    VethIngress = 2,
    /// Count-only hooks (cni0, flannel.1 ingress; veth ingress with `--xdp`).
    Observe = 3,
}

impl Hook {
    pub const COUNT: u32 = 4;
    pub const ALL: [Hook; 4] = [
        Hook::VethEgress,
        Hook::OverlayEgress,
        Hook::VethIngress,
        Hook::Observe,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::VethEgress => "veth_egress",
            Hook::OverlayEgress => "overlay_egress",
            Hook::VethIngress => "veth_ingress",
            Hook::Observe => "observe",
        }
    }
}

/// Counters of one hook, summed over CPUs at read time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub seen_packets: u64,
    pub seen_bytes: u64,
    /// Packets the parser did not understand (passed untouched).
    pub unparsed_packets: u64,
    /// Packets some fault's selectors matched that were not judged: faults disarmed or the
    /// daemon's heartbeat too old (the clock is read only for packets that match).
    pub lapsed_packets: u64,
    /// Packets skipped because they were judged on another hook or node.
    pub skipped_packets: u64,
    /// Matched rules of faults past their deadline.
    pub expired_packets: u64,
}

impl HookStats {
    pub fn add(&mut self, o: &HookStats) {
        self.seen_packets += o.seen_packets;
        self.seen_bytes += o.seen_bytes;
        self.unparsed_packets += o.unparsed_packets;
        self.lapsed_packets += o.lapsed_packets;
        self.skipped_packets += o.skipped_packets;
        self.expired_packets += o.expired_packets;
    }
}

const _: () = assert!(core::mem::size_of::<RuleSet>() == 64);
const _: () = assert!(core::mem::size_of::<Rule>() == 8);
const _: () = assert!(core::mem::size_of::<FaultCfg>() == 128);
const _: () = assert!(core::mem::size_of::<RateState>() == 16);
const _: () = assert!(core::mem::size_of::<GeState>() == 16);
const _: () = assert!(core::mem::size_of::<HookStats>() == 48);
const _: () = assert!(MAX_RULES == 64 * RULE_WORDS as u32 && MAX_FAULTS * 2 <= MAX_RULES);
const _: () = assert!(RULE_WORDS.is_power_of_two() && RULE_WORDS <= 64);
const _: () = assert!(MAX_DNS_FAULTS == 64 && flag::DNS_INDEX_MASK >> flag::DNS_INDEX_SHIFT == 63);
const _: () = assert!(flag::DNS_INDEX_MASK & (dns::FLAG_MASK | 0xf << dns::RCODE_SHIFT) == 0);

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns()` reads, so deadlines compare directly
/// (the same in every thread and network namespace of the machine).
#[cfg(feature = "user")]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all): plain `#[repr(C)]` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::RuleSet {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::FaultCfg {}
    unsafe impl aya::Pod for super::GeState {}
    unsafe impl aya::Pod for super::FaultCounters {}
    unsafe impl aya::Pod for super::HookStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateState {}
    // SAFETY: as above (`V6`'s padding is an explicit field).
    unsafe impl aya::Pod for super::hosts::V4 {}
    unsafe impl aya::Pod for super::hosts::V6 {}
    // SAFETY: two u32s, no padding.
    unsafe impl aya::Pod for super::SpecKey {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// A rate of 1000 bytes/s (1 ms a byte), 100-byte packets (100 ms each), a 250 ms bucket.
    const COST: u64 = 100_000_000;
    const BURST: u64 = 250_000_000;

    #[test]
    fn a_policer_lets_the_bucket_through_then_the_rate_and_drops_the_rest() {
        let mut st = RateState::default();
        let t0 = 1_000_000_000;
        // A full bucket at the start: a packet conforms while the schedule runs at most 250 ms
        // ahead: 0, 100 and 200 ms ahead, 3 packets.
        let passed = (0..10)
            .filter(|_| st.admit(7, t0, COST, BURST, false) == Some(0))
            .count();
        assert_eq!(passed, 3);
        // The schedule ran 300 ms ahead; 150 ms later it is 150 ms ahead: two more conform.
        let later = t0 + 150_000_000;
        assert_eq!(st.admit(7, later, COST, BURST, false), Some(0));
        assert_eq!(st.admit(7, later, COST, BURST, false), Some(0));
        assert_eq!(st.admit(7, later, COST, BURST, false), None);
        // At the rate, forever: one packet every 100 ms passes.
        for i in 3..50u64 {
            assert_eq!(
                st.admit(7, t0 + i * COST, COST, BURST, false),
                Some(0),
                "{i}"
            );
        }
        // A new fault in the slot starts with a full bucket.
        assert_eq!(st.admit(8, t0 + 50 * COST, COST, BURST, false), Some(0));
    }

    #[test]
    fn a_pacer_holds_each_packet_until_it_conforms_and_drops_beyond_the_queue() {
        let mut st = RateState::default();
        let t0 = 1_000_000_000;
        let waits: std::vec::Vec<Option<u64>> =
            (0..8).map(|_| st.admit(1, t0, COST, BURST, true)).collect();
        // 3 at once (the bucket), then 50 and 150 ms (within the 200 ms queue), then dropped.
        let ms = |w: Option<u64>| w.map(|w| w / 1_000_000);
        assert_eq!(
            waits.into_iter().map(ms).collect::<std::vec::Vec<_>>(),
            [
                Some(0),
                Some(0),
                Some(0),
                Some(50),
                Some(150),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn bit_index_finds_every_bit() {
        for i in 0..64 {
            assert_eq!(bit_index(1u64 << i), i);
        }
    }

    #[test]
    fn rule_sets_pop_in_order() {
        let want = [0, 3, 64, 127, 130, 200, 256, 383, 448, 510, 511];
        let mut s = want.iter().rev().fold(RuleSet::EMPTY, |s, r| s.with(*r));
        let mut got = std::vec::Vec::new();
        while let Some(r) = s.pop_lowest() {
            got.push(r);
        }
        assert_eq!(got, want);
        assert!(s.is_empty());
        for r in 0..MAX_RULES {
            let mut one = RuleSet::EMPTY.with(r);
            assert_eq!((one.pop_lowest(), one.pop_lowest()), (Some(r), None));
        }
    }

    #[test]
    fn rule_set_algebra() {
        let a = RuleSet::EMPTY.with(1).with(70).with(300);
        let b = RuleSet::EMPTY.with(70).with(2).with(300).with(511);
        assert_eq!(a.and(b), RuleSet::EMPTY.with(70).with(300));
        assert_eq!(
            a.or(b),
            RuleSet::EMPTY.with(1).with(2).with(70).with(300).with(511)
        );
        assert_eq!(b.minus(a), RuleSet::EMPTY.with(2).with(511));
        assert!(a.contains(300) && !a.contains(2) && !a.contains(511));
        assert!(RuleSet::EMPTY.is_empty() && !RuleSet::EMPTY.with(511).is_empty());
    }

    #[test]
    fn replies_round_trip_through_the_flags_and_resolve_by_protocol() {
        for r in Reply::ALL {
            assert_eq!(Reply::from_flags(r.flags() | flag::DRY_RUN), r);
        }
        assert_eq!(Reply::Auto.for_proto(6), Reply::TcpReset);
        assert_eq!(Reply::Auto.for_proto(17), Reply::IcmpPort);
        assert_eq!(Reply::TcpReset.for_proto(17), Reply::IcmpPort);
        assert_eq!(Reply::IcmpAdmin.for_proto(6), Reply::IcmpAdmin);
    }

    #[test]
    fn a_pulse_is_on_in_the_first_part_of_each_period_from_the_start() {
        let mut c = FaultCfg {
            start_ns: 1_000,
            ..Default::default()
        };
        assert!(c.pulse_on(0) && c.pulse_on(u64::MAX), "no pulse: always");
        c.pulse_on_ns = 10;
        c.pulse_period_ns = 30;
        let on: std::vec::Vec<u64> = (1_000..1_070).filter(|t| c.pulse_on(*t)).collect();
        let want: std::vec::Vec<u64> = (1_000..1_010)
            .chain(1_030..1_040)
            .chain(1_060..1_070)
            .collect();
        assert_eq!(on, want);
    }

    #[test]
    fn a_ge_step_loses_by_the_state_it_finds_then_moves() {
        let always = 1 << 32;
        let g = Ge {
            p: 0,
            r: always,
            loss_bad: always,
            loss_good: 0,
        };
        assert_eq!(g.step(false, 0, 0), (false, false), "p = 0: stays good");
        assert_eq!(
            g.step(true, u32::MAX, u32::MAX),
            (true, false),
            "r = 1: one bad packet"
        );
        let g = Ge { p: 1 << 31, ..g };
        assert_eq!(g.step(false, 0, (1 << 31) - 1), (false, true));
        assert_eq!(g.step(false, 0, 1 << 31), (false, false));
    }

    #[test]
    fn hook_indices_are_dense() {
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i);
        }
        for (i, h) in JudgeHook::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i);
        }
    }
}
