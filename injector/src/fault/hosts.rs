//! The host tables of a compiled fault set: its full-length prefixes (/32, /128) as the sorted
//! arrays the programs search (`injector_common::hosts`), with their rule sets numbered once for
//! the four maps. Built at compile time so that a set too large for them is refused before
//! anything is written.

use std::collections::HashMap;

use injector_common::{
    RuleSet,
    hosts::{self, V4, V6},
};

use super::compile::{CompileError, Prefix};

/// One generation's host entries and the rule sets they name.
#[derive(Debug, Default)]
pub struct HostTables {
    pub src_v4: Vec<V4>,
    pub dst_v4: Vec<V4>,
    pub src_v6: Vec<V6>,
    pub dst_v6: Vec<V6>,
    /// Indexed by the entries' `set`.
    pub sets: Vec<RuleSet>,
}

/// Numbers distinct rule sets in order of first use. Hashed with aHash, not SipHash: one lookup
/// per host (100k of them: ~2 ms with SipHash, by perf); the sets are the daemon's own, not an attacker's.
/// A set of one rule, what most hosts have (a host named by one fault), is numbered through
/// `single` instead: no 64-byte key hashed and compared.
#[derive(Default)]
struct Sets {
    index: HashMap<RuleSet, u32, ahash::RandomState>,
    /// By rule: the number of the set holding only it, `u32::MAX` if none yet.
    single: Vec<u32>,
    list: Vec<RuleSet>,
}

impl Sets {
    fn of(&mut self, s: RuleSet) -> u32 {
        let list = &mut self.list;
        let mut add = || {
            list.push(s);
            list.len() as u32 - 1
        };
        match only_rule(s) {
            Some(r) => {
                let r = r as usize;
                if r >= self.single.len() {
                    self.single.resize(r + 1, u32::MAX);
                }
                if self.single[r] == u32::MAX {
                    self.single[r] = add();
                }
                self.single[r]
            }
            None => *self.index.entry(s).or_insert_with(add),
        }
    }
}

/// The rule of a set of exactly one.
fn only_rule(s: RuleSet) -> Option<u32> {
    let mut found = None;
    for (i, &w) in s.0.iter().enumerate() {
        if w != 0 {
            if found.is_some() || !w.is_power_of_two() {
                return None;
            }
            found = Some(i as u32 * 64 + w.trailing_zeros());
        }
    }
    found
}

/// The host entries among `entries` (prefixes of width `width`), sorted by address, or the error
/// naming `what` when there are more than a generation holds.
fn table<E>(
    entries: &[(Prefix, RuleSet)],
    width: u8,
    what: &'static str,
    sets: &mut Sets,
    entry: impl Fn(u128, u32) -> E,
) -> Result<Vec<E>, CompileError>
where
    E: hosts::Entry,
{
    let mut out: Vec<E> = entries
        .iter()
        .filter(|(p, _)| p.len == width)
        .map(|(p, s)| entry(p.bits, sets.of(*s)))
        .collect();
    if out.len() > hosts::MAX_HOSTS as usize {
        return Err(CompileError::TooManyHosts(what, out.len()));
    }
    // The folder emits prefixes in address order already; sort only if that ever changes.
    if !out.is_sorted_by_key(|e| e.key()) {
        out.sort_unstable_by_key(|e| e.key());
    }
    Ok(out)
}

/// The host tables of the folded prefix lists.
pub fn tables(
    src_v4: &[(Prefix, RuleSet)],
    dst_v4: &[(Prefix, RuleSet)],
    src_v6: &[(Prefix, RuleSet)],
    dst_v6: &[(Prefix, RuleSet)],
) -> Result<HostTables, CompileError> {
    let mut sets = Sets::default();
    let v4 = |bits: u128, set| V4 {
        addr: bits as u32,
        set,
    };
    let v6 = |bits: u128, set| V6 {
        hi: (bits >> 64) as u64,
        lo: bits as u64,
        set,
        _pad: 0,
    };
    let t = HostTables {
        src_v4: table(src_v4, 32, "IPv4 source", &mut sets, v4)?,
        dst_v4: table(dst_v4, 32, "IPv4 destination", &mut sets, v4)?,
        src_v6: table(src_v6, 128, "IPv6 source", &mut sets, v6)?,
        dst_v6: table(dst_v6, 128, "IPv6 destination", &mut sets, v6)?,
        sets: sets.list,
    };
    if t.sets.len() > hosts::SETS_PER_GEN as usize {
        return Err(CompileError::TooManyHostSets(t.sets.len()));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(bits: u128, len: u8, rule: u32) -> (Prefix, RuleSet) {
        (Prefix { bits, len }, RuleSet::EMPTY.with(rule))
    }

    /// Only full-length prefixes become entries, sorted by address; equal rule sets share one
    /// index across the four maps; the v6 halves are the address's big-endian halves.
    #[test]
    fn hosts_are_sorted_and_sets_numbered_once() {
        let dst4 = [
            host(0x0a00_0003, 32, 1),
            host(0x0a00_0000, 24, 2),
            host(0x0a00_0001, 32, 1),
        ];
        let src6 = [host((0xfd00u128 << 112) | 7, 128, 1)];
        let t = tables(&[], &dst4, &src6, &[]).unwrap();
        assert_eq!(
            t.dst_v4,
            [
                V4 {
                    addr: 0x0a00_0001,
                    set: 0
                },
                V4 {
                    addr: 0x0a00_0003,
                    set: 0
                }
            ]
        );
        assert_eq!(t.src_v6.len(), 1);
        assert_eq!(
            (t.src_v6[0].hi, t.src_v6[0].lo, t.src_v6[0].set),
            (0xfd00 << 48, 7, 0)
        );
        assert_eq!(t.sets, [RuleSet::EMPTY.with(1)]);
    }

    /// Sets of one rule (numbered through `single`) and larger ones (hashed) share one
    /// numbering, in order of first use.
    #[test]
    fn sets_of_one_rule_and_more_are_numbered_in_order_of_first_use() {
        let one = |r| RuleSet::EMPTY.with(r);
        let both = one(1).with(300);
        let mut sets = Sets::default();
        let got: Vec<u32> = [
            one(300),
            both,
            one(300),
            one(1),
            both,
            RuleSet::EMPTY,
            one(1),
        ]
        .into_iter()
        .map(|s| sets.of(s))
        .collect();
        assert_eq!(got, [0, 1, 0, 2, 1, 3, 2]);
        assert_eq!(sets.list, [one(300), both, one(1), RuleSet::EMPTY]);
        assert_eq!(only_rule(one(511)), Some(511));
        assert_eq!(only_rule(one(64).with(65)), None);
        assert_eq!(only_rule(RuleSet::EMPTY), None);
    }

    /// One host more than a generation holds is refused, naming the map.
    #[test]
    fn more_hosts_than_a_generation_holds_are_refused() {
        let many: Vec<_> = (0..=hosts::MAX_HOSTS)
            .map(|i| host(u128::from(i), 32, 0))
            .collect();
        let e = tables(&[], &many, &[], &[]).unwrap_err();
        assert_eq!(
            e,
            CompileError::TooManyHosts("IPv4 destination", hosts::MAX_HOSTS as usize + 1)
        );
        assert!(e.to_string().contains("IPv4 destination"), "{e}");
        assert!(tables(&[], &many[1..], &[], &[]).is_ok());
    }
}
