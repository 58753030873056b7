//! The action table: what a fault can do ([`Action`]), where in the path each action may be
//! judged ([`stage`]), and what is counted per fault and hook ([`Outcome`], [`FaultCounters`]).
//! Kernel, compiler, API, CLI and metrics all derive their names, columns and labels from here.

/// What a fault does to a packet it selects. The discriminant is what `FaultCfg::action` holds.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Drop with probability `threshold / 2^32`, or by the Gilbert-Elliott model (`flag::GE`).
    Drop = 1,
    /// Drop everything, silently (`threshold = 2^32`).
    Blackhole = 2,
    /// Hold until now + delay +- jitter (EDT: needs fq on the egress device); a `reorder`
    /// share is sent at once instead, and a loss (`threshold`, or bursty) may drop first.
    Delay = 3,
    /// Answer the sender at once instead of delivering: a TCP reset or an ICMP/ICMPv6
    /// destination unreachable (the kind in `FaultCfg::flags`, see `crate::Reply`).
    Reject = 4,
    /// Send with probability `threshold / 2^32` a second copy (a clone) as well.
    Duplicate = 5,
    /// Flip one random bit of the payload with probability `threshold / 2^32`, checksums left
    /// as they were, so the receiver's stack discards the packet.
    Corrupt = 6,
    /// Bandwidth: the fault's matched traffic, all CPUs together, leaves at `FaultCfg::rate`
    /// bytes per second: paced (EDT: held in fq until its departure time) where the node has fq
    /// (`ctrl::RATE_PACE`), else policed (a packet above the rate is dropped).
    Rate = 7,
    /// DNS: an answer (UDP, by default from port 53) whose question name is one of the fault's
    /// (`maps::DNS_NAMES`) is rewritten to an error RCODE, dropped or delayed, as
    /// `crate::dns::Answer` in `FaultCfg::flags` says.
    Dns = 8,
}

/// Where an action can be applied, as a bit set: a judging hook declares the stages it judges,
/// and every packet meets each stage once on the sender's node.
pub mod stage {
    /// At the first judging point a packet meets: XDP on the sender's veth with `--xdp`, else the
    /// last egress hop. Actions that only decide the packet's fate (drop).
    pub const EARLY: u32 = 1;
    /// Only at the last egress hop, a TC hook: actions that need the qdisc (EDT delay) or the
    /// skb (reject redirects a reply, duplicate sends a clone, corrupt rewrites in place).
    pub const EGRESS: u32 = 2;
    pub const ALL: u32 = EARLY | EGRESS;
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Drop,
        Action::Blackhole,
        Action::Delay,
        Action::Reject,
        Action::Duplicate,
        Action::Corrupt,
        Action::Rate,
        Action::Dns,
    ];

    pub const fn from_u32(v: u32) -> Option<Action> {
        match v {
            1 => Some(Action::Drop),
            2 => Some(Action::Blackhole),
            3 => Some(Action::Delay),
            4 => Some(Action::Reject),
            5 => Some(Action::Duplicate),
            6 => Some(Action::Corrupt),
            7 => Some(Action::Rate),
            8 => Some(Action::Dns),
            _ => None,
        }
    }

    /// The name users see (table output, `top`).
    pub const fn name(self) -> &'static str {
        match self {
            Action::Drop => "loss",
            Action::Blackhole => "blackhole",
            Action::Delay => "delay",
            Action::Reject => "reject",
            Action::Duplicate => "duplicate",
            Action::Corrupt => "corrupt",
            Action::Rate => "rate",
            Action::Dns => "dns",
        }
    }

    /// The stage that judges this action (see [`stage`]).
    pub const fn stage(self) -> u32 {
        match self {
            Action::Drop | Action::Blackhole => stage::EARLY,
            Action::Delay
            | Action::Reject
            | Action::Duplicate
            | Action::Corrupt
            | Action::Rate
            | Action::Dns => stage::EGRESS,
        }
    }

    /// Whether the action sends clones of packets through the egress device they are judged
    /// at (delay hands a packet to fq as a clone, duplicate sends one), which the judging
    /// program must recognise and let pass (`ctrl::GEN_CLONES`); a paced rate fault holds
    /// packets as delay does, and so does a DNS fault that delays answers.
    pub const fn clones(self) -> bool {
        matches!(
            self,
            Action::Delay | Action::Duplicate | Action::Rate | Action::Dns
        )
    }

    /// What a packet the action is applied to counts as.
    pub const fn outcome(self) -> Outcome {
        match self {
            Action::Drop | Action::Blackhole => Outcome::Dropped,
            Action::Delay => Outcome::Delayed,
            // Paced: held until its departure time; policed (or beyond the queue) it is dropped.
            Action::Rate => Outcome::Delayed,
            // An answer turned into an error; a DNS fault's drop or delay counts as dropped or
            // delayed.
            Action::Reject | Action::Dns => Outcome::Rejected,
            Action::Duplicate => Outcome::Duplicated,
            Action::Corrupt => Outcome::Corrupted,
        }
    }
}

/// What one fault did with a packet it matched; the index into [`FaultCounters::by`]. Every matched
/// packet counts as `Matched` and as exactly one other outcome.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Matched = 0,
    /// Matched but let through untouched: probability, flow selection, dry run, not yet started.
    Passed = 1,
    Dropped = 2,
    Delayed = 3,
    /// Turned into the reply to its sender; or dropped where no reply may be sent (a
    /// non-first fragment, a multicast destination, a reply that could not be built). A DNS
    /// answer turned into an error (NXDOMAIN, SERVFAIL, REFUSED).
    Rejected = 4,
    /// Sent twice.
    Duplicated = 5,
    /// Sent with one payload bit flipped; or, when its checksum is not computed yet (a local
    /// sender's `CHECKSUM_PARTIAL` skb, which a local receiver trusts), dropped in its place:
    /// what the receiver would have done.
    Corrupted = 6,
    /// A delay fault's packet sent at once, without the delay (`reorder`): it overtakes the
    /// delayed ones.
    Reordered = 7,
}

impl Outcome {
    pub const COUNT: usize = 8;
    /// Room in [`FaultCounters`]: outcomes can be added without changing the map's value size.
    pub const SLOTS: usize = 8;
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Matched,
        Outcome::Passed,
        Outcome::Dropped,
        Outcome::Delayed,
        Outcome::Rejected,
        Outcome::Duplicated,
        Outcome::Corrupted,
        Outcome::Reordered,
    ];

    /// Label value (`injector_packets_total{action=...}`) and JSON key.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::Passed => "passed",
            Outcome::Dropped => "dropped",
            Outcome::Delayed => "delayed",
            Outcome::Rejected => "rejected",
            Outcome::Duplicated => "duplicated",
            Outcome::Corrupted => "corrupted",
            Outcome::Reordered => "reordered",
        }
    }

    /// Column heading in tables and `top`.
    pub const fn column(self) -> &'static str {
        match self {
            Outcome::Matched => "MATCHED",
            Outcome::Passed => "PASSED",
            Outcome::Dropped => "DROPPED",
            Outcome::Delayed => "DELAYED",
            Outcome::Rejected => "REJECTED",
            Outcome::Duplicated => "DUPLICATED",
            Outcome::Corrupted => "CORRUPTED",
            Outcome::Reordered => "REORDERED",
        }
    }

    pub fn from_name(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// What one fault did at one hook, per [`Outcome`]; per-CPU, summed at read time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    pub by: [Count; Outcome::SLOTS],
}

impl FaultCounters {
    #[inline(always)]
    pub fn count(&mut self, o: Outcome, bytes: u64) {
        let c = &mut self.by[o as usize & (Outcome::SLOTS - 1)];
        c.packets += 1;
        c.bytes += bytes;
    }

    pub fn get(&self, o: Outcome) -> Count {
        self.by[o as usize]
    }

    pub fn packets(&self, o: Outcome) -> u64 {
        self.by[o as usize].packets
    }

    pub fn add(&mut self, o: &FaultCounters) {
        for (a, b) in self.by.iter_mut().zip(o.by.iter()) {
            a.packets += b.packets;
            a.bytes += b.bytes;
        }
    }
}

/// As JSON: `{"matched": {"packets": 3, "bytes": 180}, "dropped": {...}, ...}`, one key per outcome.
#[cfg(feature = "user")]
mod json {
    extern crate std;
    use std::{collections::BTreeMap, string::String};

    use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap as _};

    use super::{Count, FaultCounters, Outcome};

    impl Serialize for FaultCounters {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(Outcome::COUNT))?;
            for o in Outcome::ALL {
                m.serialize_entry(o.name(), &self.get(o))?;
            }
            m.end()
        }
    }

    impl<'de> Deserialize<'de> for FaultCounters {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let m = BTreeMap::<String, Count>::deserialize(d)?;
            let mut c = FaultCounters::default();
            for (k, v) in m {
                // Outcomes of a newer daemon are ignored by an older client.
                if let Some(o) = Outcome::from_name(&k) {
                    c.by[o as usize] = v;
                }
            }
            Ok(c)
        }
    }
}

const _: () = assert!(core::mem::size_of::<FaultCounters>() == 128);
const _: () = assert!(Outcome::COUNT <= Outcome::SLOTS && Outcome::SLOTS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_have_an_outcome() {
        for a in Action::ALL {
            assert_eq!(Action::from_u32(a as u32), Some(a));
            assert_ne!(a.outcome(), Outcome::Matched);
            assert_ne!(a.outcome(), Outcome::Passed);
            assert!(a.stage() != 0 && a.stage() & !stage::ALL == 0);
        }
        assert_eq!(Action::from_u32(0), None);
    }

    #[test]
    fn outcomes_are_dense_and_named_once() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
            assert_eq!(Outcome::from_name(o.name()), Some(*o));
        }
    }
}
