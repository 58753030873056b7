//! The fault compiler: validated faults -> the entries of one map generation. Pure: no kernel, no
//! I/O, so every property is unit-tested. Overlapping prefixes are folded so that the kernel's
//! longest-prefix match returns exactly the rules whose sets contain the address (or port).

use std::collections::BTreeMap;

use injector_common::{
    FaultCfg, MAX_DNS_FAULTS, MAX_FAULTS, MAX_RULES, Rule, RuleSet, dns::Answer, flag, mask,
};

use super::spec::{Action, Fault, Loss, PortRange, Proto};
use crate::parse::Cidr;

/// A prefix of a `width`-bit key: the top `len` bits of `bits` (right-aligned in `width`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub bits: u128,
    pub len: u8,
}

/// One generation's worth of map entries.
#[derive(Debug, Default)]
pub struct Image {
    pub src_v4: Vec<(Prefix, RuleSet)>,
    pub dst_v4: Vec<(Prefix, RuleSet)>,
    pub src_v6: Vec<(Prefix, RuleSet)>,
    pub dst_v6: Vec<(Prefix, RuleSet)>,
    pub sport: Vec<(Prefix, RuleSet)>,
    pub dport: Vec<(Prefix, RuleSet)>,
    pub masks: [RuleSet; mask::PER_GEN as usize],
    /// Indexed by rule.
    pub rules: Vec<Rule>,
    /// Indexed by slot.
    pub faults: Vec<FaultCfg>,
    /// Slot of each fault, in input order.
    pub slots: Vec<u32>,
    /// Some fault's action sends clones (`Action::clones`): the programs must look for them
    /// (`ctrl::GEN_CLONES`).
    pub clones: bool,
    /// The stages (`injector_common::stage`) of the faults' actions: a stage without any lets the
    /// hooks that judge only it pass packets unparsed (`ctrl::GEN_EARLY_NONE`, `GEN_EGRESS_NONE`).
    pub stages: u32,
    /// DNS names, (suffix, wire length, hash) -> the DNS faults that answer for them, a bit
    /// each: the fault's DNS index (`flag::DNS_INDEX_MASK`), given in the order of the faults
    /// (`maps::DNS_NAMES` without the generation); non-empty sets `ctrl::GEN_DNS`.
    pub dns: BTreeMap<(bool, u8, u64), u64>,
    /// The full-length prefixes of the four address lists, as the host maps hold them.
    pub hosts: super::hosts::HostTables,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("too many faults: {0} given, at most {MAX_FAULTS} per node; remove some")]
    TooManyFaults(usize),
    #[error(
        "too many rules: {0} (a both-ways fault is two), at most {MAX_RULES}; remove some faults"
    )]
    TooManyRules(usize),
    #[error(
        "too many DNS faults: {0} (faults with `dns`), at most {MAX_DNS_FAULTS} per node; remove \
         some, or give one fault several `dns_name`s"
    )]
    TooManyDnsFaults(usize),
    #[error("name: '{0}' is used by two faults; give each fault its own name")]
    DuplicateName(String),
    #[error(
        "too many host addresses: {1} {0} addresses (single IPs in `to`/`from`, both-ways faults \
         counting each side in both directions) over all faults, at most {max} per node; cover \
         them with CIDR prefixes or split the faults over fewer targets",
        max = injector_common::hosts::MAX_HOSTS
    )]
    TooManyHosts(&'static str, usize),
    #[error(
        "too many distinct combinations of faults over host addresses: {0}, at most {max} per \
         node; give addresses that share faults the same faults, or use CIDR prefixes",
        max = injector_common::hosts::SETS_PER_GEN
    )]
    TooManyHostSets(usize),
}

fn mask_bits(p: Prefix, width: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let keep = if len >= 128 {
            u128::MAX
        } else {
            (u128::MAX >> (128 - u32::from(len))) << (u32::from(width) - u32::from(len))
        };
        p.bits & keep
    }
}

/// Whether `outer` contains `inner` (prefixes of a `width`-bit key, no host bits set).
fn contains(width: u8, outer: Prefix, inner: Prefix) -> bool {
    outer.len <= inner.len && mask_bits(inner, width, outer.len) == outer.bits
}

/// Folds `(prefix, rule)` pairs, `include`d and `exclude`d: for every distinct prefix P, the
/// rules having an included prefix that contains P and no excluded prefix that contains P. With
/// it, the longest prefix containing an address holds exactly the rules whose sets contain the
/// address (the longest match P lies inside every listed prefix that contains the address).
/// An exclusion can leave an entry with an empty set: the address matches nothing.
///
/// One sort and one pass, no hashing: sorted by (bits, len), the prefixes come in the pre-order
/// of their binary trie (a prefix right before the prefixes inside it), so the prefixes
/// containing the current one are exactly the stack of those not yet left. Compiling the bench's
/// 100k /32s (64 faults) took ~40 ms with two hash maps and a lookup per distinct length, ~4 ms
/// this way (medians, release build).
pub fn fold(
    width: u8,
    include: &[(Prefix, u32)],
    exclude: &[(Prefix, u32)],
) -> Vec<(Prefix, RuleSet)> {
    // The sort is most of the work. A prefix of at most 32 bits and its rule (with the excluded
    // flag) pack into one u64, sorted as it is: (bits, len, then the rule's bits), 8 bytes moved
    // per element instead of 16 (the sort was a third of compiling 100k hosts at 16). Longer
    // prefixes sort as (prefix, rule) pairs.
    const RULE_BITS: u32 = 10;
    const EXCLUDED: u64 = 1 << (RULE_BITS - 1);
    const _: () = assert!(MAX_RULES as u64 <= EXCLUDED);
    if width <= 32 {
        let pack = |&(p, r): &(Prefix, u32), excluded: u64| {
            (((p.bits as u64) << 8 | u64::from(p.len)) << RULE_BITS) | excluded | u64::from(r)
        };
        let mut all: Vec<u64> = Vec::with_capacity(include.len() + exclude.len());
        all.extend(include.iter().map(|e| pack(e, 0)));
        all.extend(exclude.iter().map(|e| pack(e, EXCLUDED)));
        fold_sorted(
            width,
            all,
            |e| e >> RULE_BITS,
            |e| ((e & (EXCLUDED - 1)) as u32, e & EXCLUDED != 0),
            |k| Prefix {
                bits: u128::from(k >> 8),
                len: k as u8,
            },
        )
    } else {
        let mut all: Vec<(Prefix, u32)> = Vec::with_capacity(include.len() + exclude.len());
        all.extend(include.iter().map(|&(p, r)| (p, r)));
        all.extend(exclude.iter().map(|&(p, r)| (p, r | 1 << 31)));
        fold_sorted(
            width,
            all,
            |e| e.0,
            |e| (e.1 & !(1 << 31), e.1 >> 31 != 0),
            |p| p,
        )
    }
}

/// [`fold`] over `all`, elements that sort by their key (`key`, which orders as the prefix
/// `prefix` makes of it) first, each naming a rule and whether it is excluded (`rule`).
fn fold_sorted<E: Copy + Ord + Send, K: Copy + Eq>(
    width: u8,
    mut all: Vec<E>,
    key: impl Fn(E) -> K,
    rule: impl Fn(E) -> (u32, bool),
    prefix: impl Fn(K) -> Prefix,
) -> Vec<(Prefix, RuleSet)> {
    // Stable: the faults' lists arrive as sorted runs, which this sort merges cheaply. A large
    // set on every CPU (with the parallel parse: ~39 -> ~35 ms per 100k-host apply here).
    if all.len() >= 16_384 {
        rayon::slice::ParallelSliceMut::par_sort(&mut all[..]);
    } else {
        all.sort();
    }
    let mut out: Vec<(Prefix, RuleSet)> = Vec::with_capacity(all.len());
    // The prefixes containing the current one: (prefix, included rules, excluded rules), each
    // with the rules of the prefixes containing it.
    let mut stack: Vec<(Prefix, RuleSet, RuleSet)> = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let k = key(all[i]);
        let (mut inc, mut exc) = (RuleSet::EMPTY, RuleSet::EMPTY);
        while i < all.len() && key(all[i]) == k {
            match rule(all[i]) {
                (r, false) => inc = inc.with(r),
                (r, true) => exc = exc.with(r),
            }
            i += 1;
        }
        let p = prefix(k);
        while stack.last().is_some_and(|t| !contains(width, t.0, p)) {
            stack.pop();
        }
        if let Some(t) = stack.last() {
            inc = inc.or(t.1);
            exc = exc.or(t.2);
        }
        out.push((p, inc.minus(exc)));
        // A full-length prefix contains no later one (equal keys were merged above): not
        // stacked. Most prefixes of a large set are hosts, and an entry here is 160 bytes with
        // 512-rule sets (100k hosts: ~16 MB of stores saved).
        if p.len < width {
            stack.push((p, inc, exc));
        }
    }
    out
}

/// The prefixes (of a 16-bit key) covering exactly `lo..=hi`.
pub fn port_prefixes(r: PortRange) -> Vec<Prefix> {
    let (mut lo, hi) = (u32::from(r.lo), u32::from(r.hi));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push(Prefix {
            bits: u128::from(lo),
            len: (16 - size.trailing_zeros()) as u8,
        });
        lo += size;
    }
    out
}

fn cidr_prefix(c: &Cidr) -> Prefix {
    match c.addr {
        std::net::IpAddr::V4(a) => Prefix {
            bits: u128::from(u32::from(a)),
            len: c.len,
        },
        std::net::IpAddr::V6(a) => Prefix {
            bits: u128::from(a),
            len: c.len,
        },
    }
}

const ANY: Prefix = Prefix { bits: 0, len: 0 };

/// Keeps slots of faults that exist in `previous` (by name), gives new faults the lowest free slots.
pub fn assign_slots(
    previous: &BTreeMap<String, u32>,
    names: &[&str],
) -> Result<Vec<u32>, CompileError> {
    if names.len() > MAX_FAULTS as usize {
        return Err(CompileError::TooManyFaults(names.len()));
    }
    let mut used = [false; MAX_FAULTS as usize];
    let mut out = vec![None; names.len()];
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(CompileError::DuplicateName(n.to_string()));
        }
        if let Some(&s) = previous.get(*n)
            && (s as usize) < used.len()
        {
            used[s as usize] = true;
            out[i] = Some(s);
        }
    }
    let mut free = (0..MAX_FAULTS).filter(|s| !used[*s as usize]);
    Ok(out
        .into_iter()
        .map(|s| s.unwrap_or_else(|| free.next().expect("fewer faults than slots")))
        .collect())
}

/// Probability -> threshold against a 32-bit random number (`1 << 32`: always): drop,
/// duplicate, corrupt.
pub fn drop_threshold(p: f64) -> u64 {
    ((p * 4_294_967_296.0).round() as u64).min(1 << 32)
}

/// Each action's compile rule: the [`FaultCfg`] fields it sets, with its modifiers (a loss's
/// model, a delay's reorder share, the pulse).
fn fault_cfg(f: &Fault, start_ns: u64, deadline_ns: u64) -> FaultCfg {
    let mut cfg = FaultCfg {
        deadline_ns,
        start_ns,
        flow_ppm: f.flows_ppm,
        seed: f.seed,
        action: f.action.kind() as u32,
        flags: if f.dry_run { flag::DRY_RUN } else { 0 },
        ..Default::default()
    };
    let set_loss = |cfg: &mut FaultCfg, l: Loss| match l {
        Loss::Random(p) => cfg.threshold = drop_threshold(p),
        Loss::Bursty(g) => {
            cfg.flags |= flag::GE;
            cfg.ge = g.kernel();
        }
    };
    match f.action {
        Action::Drop(l) => set_loss(&mut cfg, l),
        Action::Duplicate(p) | Action::Corrupt(p) => cfg.threshold = drop_threshold(p),
        Action::Blackhole => cfg.threshold = 1 << 32,
        Action::Delay {
            latency,
            jitter,
            reorder,
            loss,
        } => {
            cfg.delay_ns = latency.as_nanos() as u64;
            cfg.jitter_ns = jitter.as_nanos() as u64;
            cfg.reorder = drop_threshold(reorder);
            if let Some(l) = loss {
                set_loss(&mut cfg, l);
            }
        }
        Action::Reject(r) => {
            cfg.threshold = 1 << 32;
            cfg.flags |= r.flags();
        }
        Action::Rate(r) => {
            cfg.rate = r.bytes_per_s;
            cfg.rate_burst_ns = r.burst_ns();
        }
        Action::Dns(d) => {
            cfg.flags |= d.answer.flags();
            // A drop is judged as a blackhole, a delay as a delay without loss or reorder.
            if d.answer == Answer::Drop {
                cfg.threshold = 1 << 32;
            }
            cfg.delay_ns = d.latency.as_nanos() as u64;
            cfg.jitter_ns = d.jitter.as_nanos() as u64;
        }
    }
    if let Some(p) = f.pulse {
        cfg.pulse_on_ns = p.on.as_nanos() as u64;
        cfg.pulse_period_ns = p.period.as_nanos() as u64;
    }
    cfg
}

/// A fault placed in the kernel: its slot and its lifetime (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug)]
pub struct Planned<'a> {
    pub fault: &'a Fault,
    pub slot: u32,
    pub start_ns: u64,
    pub deadline_ns: u64,
}

/// Plans `faults` applied together at `now_ns` in `slots`.
pub fn plan_at<'a>(faults: &'a [Fault], slots: &[u32], now_ns: u64) -> Vec<Planned<'a>> {
    faults
        .iter()
        .zip(slots)
        .map(|(f, &slot)| Planned {
            fault: f,
            slot,
            start_ns: now_ns,
            deadline_ns: now_ns + f.lifetime.as_nanos() as u64,
        })
        .collect()
}

/// Compiles planned faults (validated, slots from [`assign_slots`]) into one generation's entries.
pub fn compile(planned: &[Planned<'_>]) -> Result<Image, CompileError> {
    let rules_needed: usize = planned
        .iter()
        .map(|p| if p.fault.both_ways { 2 } else { 1 })
        .sum();
    if rules_needed > MAX_RULES as usize {
        return Err(CompileError::TooManyRules(rules_needed));
    }
    let dns_faults = planned
        .iter()
        .filter(|p| !p.fault.dns_names.is_empty())
        .count();
    if dns_faults > MAX_DNS_FAULTS as usize {
        return Err(CompileError::TooManyDnsFaults(dns_faults));
    }
    let mut img = Image {
        rules: vec![Rule::default(); MAX_RULES as usize],
        faults: vec![FaultCfg::default(); MAX_FAULTS as usize],
        slots: planned.iter().map(|p| p.slot).collect(),
        ..Default::default()
    };
    // Addresses: (included, excluded) pairs per map; ports: included only.
    let (mut s4, mut d4, mut s6, mut d6) = <[(Vec<_>, Vec<_>); 4]>::default().into();
    let (mut sp, mut dp) = (vec![], vec![]);
    let mut rule = 0u32;
    let mut dns_index = 0u32;
    for &Planned {
        fault: f,
        slot,
        start_ns,
        deadline_ns,
    } in planned
    {
        // A fault's rules are numbered consecutively: the kernel judges a fault once by skipping
        // a rule whose fault it judged just before (rules are popped in order).
        let dirs: &[bool] = if f.both_ways {
            &[false, true]
        } else {
            &[false]
        };
        for &reverse in dirs {
            let (from, to) = if reverse {
                (&f.to, &f.from)
            } else {
                (&f.from, &f.to)
            };
            let (sports, dports) = if reverse {
                (&f.dport, &f.sport)
            } else {
                (&f.sport, &f.dport)
            };
            let (from_x, to_x) = if reverse {
                (&f.to_except, &f.from_except)
            } else {
                (&f.from_except, &f.to_except)
            };
            for (set, except, v4, v6) in [
                (from, from_x, &mut s4, &mut s6),
                (to, to_x, &mut d4, &mut d6),
            ] {
                if set.is_empty() {
                    v4.0.push((ANY, rule));
                    v6.0.push((ANY, rule));
                }
                for (cidrs, side) in [(set, 0), (except, 1)] {
                    for c in cidrs.iter() {
                        let out = if c.addr.is_ipv4() { &mut *v4 } else { &mut *v6 };
                        let list = if side == 0 { &mut out.0 } else { &mut out.1 };
                        list.push((cidr_prefix(c), rule));
                    }
                }
            }
            for (ranges, out) in [(sports, &mut sp), (dports, &mut dp)] {
                if ranges.is_empty() {
                    out.push((ANY, rule));
                }
                for r in ranges.iter() {
                    out.extend(port_prefixes(*r).into_iter().map(|p| (p, rule)));
                }
            }
            let m = &mut img.masks;
            let classes: &[u32] = match f.proto {
                Proto::Any => &[mask::TCP, mask::UDP, mask::ICMP, mask::OTHER],
                Proto::Tcp => &[mask::TCP],
                Proto::Udp => &[mask::UDP],
                Proto::Icmp => &[mask::ICMP],
            };
            for &c in classes {
                m[c as usize] = m[c as usize].with(rule);
            }
            if f.sport.is_empty() && f.dport.is_empty() {
                m[mask::NO_PORTS as usize] = m[mask::NO_PORTS as usize].with(rule);
            }
            img.rules[rule as usize] = Rule { slot, _pad: 0 };
            rule += 1;
        }
        let mut cfg = fault_cfg(f, start_ns, deadline_ns);
        if !f.dns_names.is_empty() {
            cfg.flags |= dns_index << flag::DNS_INDEX_SHIFT;
            for n in &f.dns_names {
                *img.dns.entry(n.key()).or_default() |= 1 << dns_index;
            }
            dns_index += 1;
        }
        img.faults[slot as usize] = cfg;
        img.clones |= f.action.kind().clones();
        img.stages |= f.action.kind().stage();
    }
    img.src_v4 = fold(32, &s4.0, &s4.1);
    img.dst_v4 = fold(32, &d4.0, &d4.1);
    img.src_v6 = fold(128, &s6.0, &s6.1);
    img.dst_v6 = fold(128, &d6.0, &d6.1);
    img.sport = fold(16, &sp, &[]);
    img.dport = fold(16, &dp, &[]);
    img.hosts = super::hosts::tables(&img.src_v4, &img.dst_v4, &img.src_v6, &img.dst_v6)?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, time::Duration};

    use super::*;
    use crate::fault::spec::FaultSpec;

    /// The longest prefix in `entries` containing `x`, as the kernel's LPM trie finds it.
    fn lpm(entries: &[(Prefix, RuleSet)], width: u8, x: u128) -> RuleSet {
        entries
            .iter()
            .filter(|(p, _)| {
                mask_bits(
                    Prefix {
                        bits: x,
                        len: width,
                    },
                    width,
                    p.len,
                ) == p.bits
            })
            .max_by_key(|(p, _)| p.len)
            .map(|(_, s)| *s)
            .unwrap_or(RuleSet::EMPTY)
    }

    /// Tiny deterministic PRNG for the property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn folding_makes_longest_match_exact_with_exclusions() {
        let mut rng = Rng(0x1234_5678);
        let random_prefix = |rng: &mut Rng, min_len: u64| {
            let len = (min_len + rng.next() % (33 - min_len)) as u8;
            let bits = mask_bits(
                Prefix {
                    bits: 0x0a00_0000 | (rng.next() as u128 & 0x00ff_ffff),
                    len: 32,
                },
                32,
                len,
            );
            Prefix { bits, len }
        };
        for round in 0..100 {
            // Random overlapping prefixes inside 10.0.0.0/8 so they nest often; every other round
            // with exclusions (longer on average, as carved addresses are).
            let (mut inc, mut exc) = (Vec::new(), Vec::new());
            for rule in 0..20u32 {
                for _ in 0..(1 + rng.next() % 3) {
                    inc.push((random_prefix(&mut rng, 8), rule));
                }
                if round % 2 == 1 {
                    for _ in 0..(rng.next() % 3) {
                        exc.push((random_prefix(&mut rng, 12), rule));
                    }
                }
            }
            let folded = fold(32, &inc, &exc);
            assert_eq!(folded, fold_by_definition(32, &inc, &exc), "round {round}");
            let within = |pairs: &[(Prefix, u32)], x: u128| {
                pairs
                    .iter()
                    .filter(|(p, _)| mask_bits(Prefix { bits: x, len: 32 }, 32, p.len) == p.bits)
                    .fold(RuleSet::EMPTY, |s, (_, r)| s.with(*r))
            };
            // Addresses at random, and the addresses of the exclusions themselves.
            let probes = (0..500)
                .map(|_| 0x0a00_0000 | (rng.next() as u128 & 0x00ff_ffff))
                .chain(exc.iter().map(|(p, _)| p.bits));
            for x in probes.collect::<Vec<_>>() {
                let want = within(&inc, x).minus(within(&exc, x));
                assert_eq!(lpm(&folded, 32, x), want, "address {x:#x}");
            }
        }
    }

    /// [`fold`] as its doc says it, the slow way: per distinct prefix (in order), the rules of
    /// the included prefixes containing it less those of the excluded ones.
    fn fold_by_definition(
        width: u8,
        inc: &[(Prefix, u32)],
        exc: &[(Prefix, u32)],
    ) -> Vec<(Prefix, RuleSet)> {
        let mut keys: Vec<Prefix> = inc.iter().chain(exc).map(|(p, _)| *p).collect();
        keys.sort_unstable();
        keys.dedup();
        let covering = |pairs: &[(Prefix, u32)], p: Prefix| {
            pairs
                .iter()
                .filter(|(q, _)| contains(width, *q, p))
                .fold(RuleSet::EMPTY, |s, (_, r)| s.with(*r))
        };
        keys.into_iter()
            .map(|p| (p, covering(inc, p).minus(covering(exc, p))))
            .collect()
    }

    #[test]
    fn folding_agrees_with_its_definition_at_every_width() {
        let mut rng = Rng(0xfeed_beef);
        for (width, top) in [(16u8, 0u128), (32, 0x0a00_0000), (128, 0xfd00u128 << 112)] {
            for _ in 0..50 {
                let mut pairs = [Vec::new(), Vec::new()];
                for (side, list) in pairs.iter_mut().enumerate() {
                    for _ in 0..(rng.next() % 40) {
                        // Few distinct high bits, so that prefixes nest and repeat.
                        let len = (rng.next() % (u64::from(width) + 1)) as u8;
                        let low = u128::from(rng.next() % 8) << (width.min(24) - 3);
                        let p = Prefix {
                            bits: mask_bits(
                                Prefix {
                                    bits: top | low | u128::from(rng.next() as u8),
                                    len: width,
                                },
                                width,
                                len,
                            ),
                            len,
                        };
                        // 16 rules spread over every word of a set (0, 33, .., 495) and the
                        // last rule (the highest a packed sort key holds); the exclusions name
                        // the first 8 of them, and others.
                        let rule = match rng.next() % 17 {
                            16 => MAX_RULES - 1,
                            k => k as u32 * 33,
                        };
                        list.push((p, if side == 0 { rule } else { rule % (8 * 33) }));
                    }
                }
                assert_eq!(
                    fold(width, &pairs[0], &pairs[1]),
                    fold_by_definition(width, &pairs[0], &pairs[1]),
                    "width {width}"
                );
            }
        }
    }

    #[test]
    fn port_ranges_become_exact_prefixes() {
        for (lo, hi, n) in [
            (0, 65535, 1),
            (80, 80, 1),
            (8000, 8080, 3),
            (1, 65535, 16),
            (1024, 2047, 1),
        ] {
            let ps = port_prefixes(PortRange { lo, hi });
            assert_eq!(ps.len(), n, "{lo}-{hi}: {ps:?}");
            for x in [
                0u32, 1, 79, 80, 81, 1023, 1024, 2047, 2048, 7999, 8000, 8080, 8081, 65535,
            ] {
                let covered = ps.iter().any(|p| {
                    mask_bits(
                        Prefix {
                            bits: x.into(),
                            len: 16,
                        },
                        16,
                        p.len,
                    ) == p.bits
                });
                assert_eq!(
                    covered,
                    (u32::from(lo)..=u32::from(hi)).contains(&x),
                    "{lo}-{hi} at {x}"
                );
            }
        }
    }

    fn fault(json: &str) -> Fault {
        serde_json::from_str::<FaultSpec>(json)
            .unwrap()
            .validate("")
            .unwrap()
    }

    fn matches(img: &Image, src: u32, dst: u32, proto: u32, ports: Option<(u16, u16)>) -> RuleSet {
        let mut s = lpm(&img.src_v4, 32, src.into())
            .and(lpm(&img.dst_v4, 32, dst.into()))
            .and(img.masks[proto as usize]);
        s = match ports {
            Some((sp, dp)) => {
                s.and(lpm(&img.sport, 16, sp.into()))
                    .and(lpm(&img.dport, 16, dp.into()))
            }
            None => s.and(img.masks[mask::NO_PORTS as usize]),
        };
        s
    }

    #[test]
    fn compiled_rules_match_what_the_faults_say() {
        let a = fault(
            r#"{"name":"a","from":["10.42.1.0/24"],"to":["10.42.2.7"],"proto":"tcp","dport":["5432"],"loss":"10%","for":"1m"}"#,
        );
        let b = fault(
            r#"{"name":"b","to":["10.42.2.0/24"],"blackhole":true,"for":"1m","both_ways":true}"#,
        );
        let c = fault(
            r#"{"name":"c","to":["10.42.2.7"],"proto":"udp","sport":["1000-1999"],"delay":"50ms","jitter":"5ms","for":"2s","flows":"30%","seed":7,"dry_run":true}"#,
        );
        let fs = [a, b, c];
        let img = compile(&plan_at(&fs, &[5, 0, 9], 1_000)).unwrap();
        let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let (p1, db, other) = (ip("10.42.1.2"), ip("10.42.2.7"), ip("10.42.3.3"));
        // a: rule 0; b: rules 1 (forward) and 2 (reverse); c: rule 3.
        assert_eq!(
            matches(&img, p1, db, mask::TCP, Some((40000, 5432))),
            RuleSet::EMPTY.with(0).with(1)
        );
        assert_eq!(
            matches(&img, p1, db, mask::TCP, Some((40000, 5433))),
            RuleSet::EMPTY.with(1)
        );
        assert_eq!(
            matches(&img, db, p1, mask::TCP, Some((5432, 40000))),
            RuleSet::EMPTY.with(2)
        );
        assert_eq!(
            matches(&img, p1, db, mask::ICMP, None),
            RuleSet::EMPTY.with(1)
        );
        assert_eq!(
            matches(&img, other, db, mask::UDP, Some((1500, 53))),
            RuleSet::EMPTY.with(1).with(3)
        );
        assert_eq!(
            matches(&img, other, db, mask::UDP, Some((2000, 53))),
            RuleSet::EMPTY.with(1)
        );
        assert_eq!(
            matches(&img, p1, other, mask::UDP, Some((1500, 53))),
            RuleSet::EMPTY
        );
        // Rules point at the slots; fault configs carry actions and lifetimes.
        assert_eq!(
            (
                img.rules[0].slot,
                img.rules[1].slot,
                img.rules[2].slot,
                img.rules[3].slot
            ),
            (5, 0, 0, 9)
        );
        let (fa, fb, fc) = (img.faults[5], img.faults[0], img.faults[9]);
        assert_eq!(
            (fa.action, fa.threshold, fa.deadline_ns),
            (
                injector_common::Action::Drop as u32,
                429_496_730,
                60_000_001_000
            )
        );
        assert_eq!(
            (fb.action, fb.threshold),
            (injector_common::Action::Blackhole as u32, 1 << 32)
        );
        assert_eq!(
            (
                fc.action,
                fc.delay_ns,
                fc.jitter_ns,
                fc.flow_ppm,
                fc.seed,
                fc.flags
            ),
            (
                injector_common::Action::Delay as u32,
                50_000_000,
                5_000_000,
                300_000,
                7,
                flag::DRY_RUN
            )
        );
        assert_eq!(
            fc.deadline_ns - fc.start_ns,
            Duration::from_secs(2).as_nanos() as u64
        );
        // IPv6: b has no source set, so any IPv6 source is in; a has an IPv4-only source.
        assert!(
            img.src_v6
                .iter()
                .any(|(p, s)| p.len == 0 && s.contains(1) && !s.contains(0))
        );
    }

    #[test]
    fn slots_are_stable_by_name_and_limits_hold() {
        let prev: BTreeMap<String, u32> = [("b".to_string(), 3), ("c".to_string(), 0)].into();
        assert_eq!(
            assign_slots(&prev, &["a", "b", "c", "d"]).unwrap(),
            vec![1, 3, 0, 2]
        );
        assert_eq!(
            assign_slots(&prev, &["a", "a"]).unwrap_err(),
            CompileError::DuplicateName("a".into())
        );
        let n = MAX_FAULTS as usize;
        let many: Vec<String> = (0..=n).map(|i| format!("f{i}")).collect();
        let names: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            assign_slots(&prev, &names).unwrap_err(),
            CompileError::TooManyFaults(n + 1)
        );
        let slots = assign_slots(&prev, &names[..n]).unwrap();
        assert_eq!(slots.iter().collect::<BTreeSet<_>>().len(), n);
        assert!(slots.iter().all(|s| *s < MAX_FAULTS));
        // 256 both-ways faults are 512 rules: the most there is room for.
        let f = fault(
            r#"{"name":"x","to":["10.42.2.7"],"blackhole":true,"for":"1m","both_ways":true}"#,
        );
        let fs = vec![f; n];
        let img = compile(&plan_at(&fs, &slots, 0)).unwrap();
        let last = img.rules[MAX_RULES as usize - 1];
        assert_eq!(last.slot, slots[n - 1]);
    }

    #[test]
    fn reject_duplicate_and_corrupt_compile_to_their_table_entries() {
        use injector_common::{Action as K, Reply};
        let fs = [
            fault(r#"{"name":"r","to":["10.42.2.7"],"reject":true,"for":"1m"}"#),
            fault(
                r#"{"name":"h","to":["10.42.2.8"],"reject":true,"reject_with":"icmp-host","dry_run":true,"for":"1m"}"#,
            ),
            fault(r#"{"name":"d","to":["10.42.2.9"],"duplicate":"10%","for":"1m"}"#),
            fault(r#"{"name":"c","to":["10.42.2.9"],"corrupt":"100%","for":"1m"}"#),
        ];
        let img = compile(&plan_at(&fs, &[0, 1, 2, 3], 0)).unwrap();
        let [r, h, d, c] = [0, 1, 2, 3].map(|i| img.faults[i]);
        assert_eq!(
            (r.action, r.threshold, Reply::from_flags(r.flags)),
            (K::Reject as u32, 1 << 32, Reply::Auto)
        );
        assert_eq!(
            (Reply::from_flags(h.flags), h.flags & flag::DRY_RUN),
            (Reply::IcmpHost, flag::DRY_RUN)
        );
        assert_eq!((d.action, d.threshold), (K::Duplicate as u32, 429_496_730));
        assert_eq!((c.action, c.threshold), (K::Corrupt as u32, 1 << 32));
        assert!(img.clones, "duplicate sends clones");
        let img = compile(&plan_at(&fs[..1], &[0], 0)).unwrap();
        assert!(!img.clones, "reject alone sends none");
    }

    #[test]
    fn loss_models_reorder_and_pulse_compile_to_their_fields() {
        use injector_common::Action as K;
        let fs = [
            fault(r#"{"name":"b","to":["10.42.2.9"],"loss":"20%","burst":"4","for":"1m"}"#),
            fault(
                r#"{"name":"ld","to":["10.42.2.9"],"loss":"10%","delay":"50ms","reorder":"25%","pulse":"10s/30s","for":"1m"}"#,
            ),
            fault(r#"{"name":"g","to":["10.42.2.9"],"loss_model":"ge:0%,100%,0%,50%","for":"1m"}"#),
        ];
        let img = compile(&plan_at(&fs, &[0, 1, 2], 7)).unwrap();
        let [b, ld, g] = [0, 1, 2].map(|i| img.faults[i]);
        assert_eq!((b.action, b.flags & flag::GE), (K::Drop as u32, flag::GE));
        // r = 1/4, p = 0.2 / (4 * 0.8) = 1/16.
        assert_eq!(
            (b.ge.p, b.ge.r, b.ge.loss_bad, b.ge.loss_good),
            (1 << 28, 1 << 30, 1 << 32, 0)
        );
        assert_eq!(b.pulse_period_ns, 0, "no pulse: always on");
        assert_eq!(
            (ld.action, ld.threshold, ld.flags & flag::GE),
            (K::Delay as u32, 429_496_730, 0)
        );
        assert_eq!((ld.delay_ns, ld.reorder), (50_000_000, 1 << 30));
        assert_eq!(
            (ld.start_ns, ld.pulse_on_ns, ld.pulse_period_ns),
            (7, 10_000_000_000, 30_000_000_000)
        );
        assert_eq!((g.ge.p, g.ge.r, g.ge.loss_good), (0, 1 << 32, 1 << 31));
    }

    #[test]
    fn thresholds_resolve_one_in_a_million() {
        assert_eq!(drop_threshold(1.0), 1 << 32);
        assert_eq!(drop_threshold(0.000001), 4295);
        assert_eq!(drop_threshold(0.1), 429_496_730);
    }

    #[test]
    fn dns_faults_compile_their_answer_and_their_names_by_slot() {
        let a = fault(
            r#"{"name":"a","dns":"servfail","dns_name":["db.local",".svc.cluster.local"],"for":"1m"}"#,
        );
        let b = fault(r#"{"name":"b","dns":"drop","dns_name":["db.local"],"for":"1m"}"#);
        let fs = [a, b];
        let img = compile(&plan_at(&fs, &[3, 5], 0)).unwrap();
        let cfg = img.faults[3];
        assert_eq!(cfg.action, injector_common::Action::Dns as u32);
        assert_eq!(Answer::from_flags(cfg.flags), Some(Answer::ServFail));
        assert_eq!((cfg.flags >> injector_common::dns::RCODE_SHIFT) & 0xf, 2);
        assert_eq!(img.faults[5].threshold, 1 << 32, "a drop is a blackhole");
        let db = fs[0].dns_names.iter().find(|n| !n.suffix).unwrap().key();
        let svc = fs[0].dns_names.iter().find(|n| n.suffix).unwrap().key();
        // Their DNS indices (bits of the name sets) in the order of the faults, not their slots.
        let index =
            |slot: usize| (img.faults[slot].flags & flag::DNS_INDEX_MASK) >> flag::DNS_INDEX_SHIFT;
        assert_eq!((index(3), index(5)), (0, 1));
        assert_eq!(img.dns.get(&db), Some(&0b11));
        assert_eq!(img.dns.get(&svc), Some(&0b01));
        assert_eq!(img.dns.len(), 2);
        assert!(img.clones, "a DNS fault may hold answers");
        assert!(img.masks[mask::UDP as usize].contains(0));
        assert!(!img.masks[mask::TCP as usize].contains(0));
    }

    #[test]
    fn dns_faults_take_the_bits_of_the_name_sets_whatever_their_slots() {
        let f = |i: usize| {
            fault(&format!(
                r#"{{"name":"d{i}","dns":"nxdomain","dns_name":["n{i}.local"],"for":"1m"}}"#
            ))
        };
        let n = MAX_DNS_FAULTS as usize;
        let fs: Vec<Fault> = (0..n).map(f).collect();
        // Slots from the top: above 64, where no bit of a u64 reaches.
        let slots: Vec<u32> = (0..n as u32).map(|i| MAX_FAULTS - 1 - i).collect();
        let img = compile(&plan_at(&fs, &slots, 0)).unwrap();
        for (i, f) in fs.iter().enumerate() {
            assert_eq!(img.dns.get(&f.dns_names[0].key()), Some(&(1u64 << i)));
        }
        let more: Vec<Fault> = (0..=n).map(f).collect();
        let slots: Vec<u32> = (0..=n as u32).collect();
        assert_eq!(
            compile(&plan_at(&more, &slots, 0)).unwrap_err(),
            CompileError::TooManyDnsFaults(n + 1)
        );
    }
}
