//! Userspace view of the kernel maps: open them (from a loaded object or from their pins), install a
//! compiled [`Image`] atomically (fill the inactive generation, flip one word, clear the old one),
//! set the control words, read and sum the per-CPU counters. The only module that touches map types.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    maps::{
        Array, Map, MapData, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
    util::nr_cpus,
};
use injector_common::{
    FaultCfg, FaultCounters, Hook, HookStats, JudgeHook, MAX_FAULTS, MAX_RULES, Rule, RuleSet,
    ctrl, hosts, maps, mask, stage,
};

use super::{
    batch,
    hosts::{HostTable, Mapped},
    specs::Specs,
};
use crate::fault::compile::{Image, Prefix};

pub use injector_common::monotonic_ns;

type Trie<const N: usize> = LpmTrie<MapData, [u8; N], RuleSet>;

/// Whether `e` says the key is not in the map.
pub(super) fn absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// A removal that found nothing to remove is not an error.
pub(super) fn absent_ok(r: std::result::Result<(), aya::maps::MapError>) -> Result<()> {
    match r {
        Err(e) if !absent(&e) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A hash map keyed by generation first (the DNS names), and the keys this process put into each
/// generation. Clearing a generation removes those keys; walking the map instead would cost
/// ~1 ms per empty map (the kernel scans every bucket of a large hash for the first key). `None`
/// (at open): unknown, the map is walked once.
struct Hashed<const N: usize, V: aya::Pod + Sync> {
    map: aya::maps::HashMap<MapData, [u8; N], V>,
    /// The map's fd, for the batch commands aya lacks (`batch`).
    fd: OwnedFd,
    keys: [Option<Vec<[u8; N]>>; 2],
}

impl<const N: usize, V: aya::Pod + Sync> Hashed<N, V> {
    fn new(m: Map) -> Result<Self> {
        let fd = match &m {
            Map::HashMap(d) => d.fd().as_fd().try_clone_to_owned()?,
            _ => return Err(anyhow!("expected a hash map")),
        };
        Ok(Hashed {
            map: m.try_into()?,
            fd,
            keys: [None, None],
        })
    }

    /// Writes `entries` into generation `g`: in batches of one syscall each where the kernel
    /// has them, entry by entry from where a batch stopped.
    /// The keys are recorded first: if a write fails part-way, clearing the generation still
    /// removes what was written (a key recorded but absent is skipped there).
    fn insert_all(&mut self, g: u8, entries: &[([u8; N], V)]) -> Result<()> {
        let (keys, values): (Vec<[u8; N]>, Vec<V>) = entries.iter().copied().unzip();
        self.keys[usize::from(g)]
            .get_or_insert_with(Vec::new)
            .extend_from_slice(&keys);
        let map = &mut self.map;
        batch::update(self.fd.as_fd(), &keys, &values, |k, v| {
            Ok(map.insert(k, v, 0)?)
        })
    }

    fn clear(&mut self, g: u8) -> Result<()> {
        let keys = match self.keys[usize::from(g)].take() {
            Some(k) => k,
            None => self
                .map
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k[0] == g)
                .collect(),
        };
        let map = &mut self.map;
        batch::delete(self.fd.as_fd(), &keys, |k| absent_ok(map.remove(k)))?;
        self.keys[usize::from(g)] = Some(Vec::new());
        Ok(())
    }
}

/// The fault maps and counters of one daemon instance.
pub struct Maps {
    src_v4: Tracked<5>,
    dst_v4: Tracked<5>,
    src_v6: Tracked<17>,
    dst_v6: Tracked<17>,
    src_host_v4: HostTable<hosts::V4>,
    dst_host_v4: HostTable<hosts::V4>,
    src_host_v6: HostTable<hosts::V6>,
    dst_host_v6: HostTable<hosts::V6>,
    host_sets: Mapped<RuleSet>,
    sport: Tracked<3>,
    dport: Tracked<3>,
    masks: Array<MapData, RuleSet>,
    rules: Array<MapData, Rule>,
    faults: Array<MapData, FaultCfg>,
    ctrl: Array<MapData, u64>,
    counters: PerCpuArray<MapData, FaultCounters>,
    stats: PerCpuArray<MapData, HookStats>,
    specs: Specs,
    xdp_ifaces: aya::maps::HashMap<MapData, u32, u32>,
    /// What this process last made `xdp_ifaces` hold, so a sync on a link event writes only what
    /// changed (one pod's veth), not the whole set (it runs for every pod that comes or goes).
    /// `None` (at open, or after a failed write): unknown, the map is walked.
    early_ifaces: Option<std::collections::BTreeSet<u32>>,
    /// DNS names -> the DNS fault slots answering for them (see `injector_common::dns`).
    dns_names: Hashed<16, u64>,
    /// What this process last wrote to each generation's arrays (masks, rules, faults), so an
    /// install writes only the entries that differ: a one-fault change is a handful of syscalls,
    /// not ~200. `None` (at open, or after a failed write): unknown, every entry is written.
    written: [Option<Arrays>; 2],
}

/// A generation written by [`Maps::prepare`], made live by [`Maps::flip`].
#[must_use]
pub struct Prepared {
    pub generation: u8,
    word: u64,
}

#[derive(Clone, PartialEq)]
struct Arrays {
    masks: Vec<RuleSet>,
    rules: Vec<Rule>,
    faults: Vec<FaultCfg>,
}

/// Writes `new[i]` at `base + i` where it differs from `old[i]` (every entry without `old`).
fn write_changed<T: aya::Pod + PartialEq>(
    map: &mut Array<MapData, T>,
    base: u32,
    new: &[T],
    old: Option<&[T]>,
) -> Result<()> {
    for (i, v) in new.iter().enumerate() {
        if old.and_then(|o| o.get(i)) != Some(v) {
            map.set(base + i as u32, *v, 0)?;
        }
    }
    Ok(())
}

fn open(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "cannot open map pin {}: is `injector daemon --bpffs {}` running?",
            path.display(),
            dir.display()
        )
    })?;
    Map::from_map_data(data)
        .with_context(|| format!("map pin {} has an unexpected type", path.display()))
}

/// Key bytes of a generation-tagged prefix: `[gen, the prefix's W/8 bytes big-endian]`.
fn key<const N: usize>(g: u8, p: &Prefix) -> Key<[u8; N]> {
    let mut k = [0u8; N];
    k[0] = g;
    let bytes = p.bits.to_be_bytes();
    k[1..].copy_from_slice(&bytes[16 - (N - 1)..]);
    Key::new(8 + u32::from(p.len), k)
}

/// An LPM trie, and the keys this process put into each generation: as [`Host`], clearing a
/// generation removes those keys instead of walking the trie (one `BPF_MAP_GET_NEXT_KEY` per
/// key, and one more per trie when it is empty: 12 syscalls in every change before this, 6 of
/// them before the flip). `None` (at open): unknown, the trie is walked once.
struct Tracked<const N: usize> {
    trie: Trie<N>,
    keys: [Option<Vec<Key<[u8; N]>>>; 2],
}

impl<const N: usize> Tracked<N> {
    fn new(m: Map) -> Result<Self> {
        Ok(Tracked {
            trie: m.try_into()?,
            keys: [None, None],
        })
    }

    /// Writes `entries` into generation `g`. The keys are recorded first: if a write fails
    /// part-way, clearing the generation still removes what was written.
    fn fill(&mut self, g: u8, entries: &[(Prefix, RuleSet)]) -> Result<()> {
        let keys: Vec<Key<[u8; N]>> = entries.iter().map(|(p, _)| key::<N>(g, p)).collect();
        self.keys[usize::from(g)]
            .get_or_insert_with(Vec::new)
            .extend_from_slice(&keys);
        for (k, (p, s)) in keys.iter().zip(entries) {
            self.trie
                .insert(k, *s, 0)
                .with_context(|| format!("inserting prefix {p:?}"))?;
        }
        Ok(())
    }

    fn clear(&mut self, g: u8) -> Result<()> {
        let keys = match self.keys[usize::from(g)].take() {
            Some(k) => k,
            None => self
                .trie
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k.data()[0] == g)
                .collect(),
        };
        for k in &keys {
            absent_ok(self.trie.remove(k))?;
        }
        self.keys[usize::from(g)] = Some(Vec::new());
        Ok(())
    }
}

/// Address prefixes: the host table's entries (the full-length prefixes, compiled) into the
/// host map, the shorter prefixes into the trie. Returns whether the trie got any (the programs
/// skip it otherwise).
fn fill_addrs<const N: usize, E: hosts::Entry + aya::Pod>(
    t: &mut Tracked<N>,
    h: &mut HostTable<E>,
    g: u8,
    entries: &[(Prefix, RuleSet)],
    host_entries: &[E],
) -> Result<bool> {
    let shorter: Vec<_> = entries
        .iter()
        .filter(|(p, _)| usize::from(p.len) < 8 * (N - 1))
        .cloned()
        .collect();
    h.fill(g, host_entries);
    t.fill(g, &shorter)?;
    Ok(!shorter.is_empty())
}

impl Maps {
    fn from(mut take: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            src_v4: Tracked::new(take(maps::SRC_V4)?)?,
            dst_v4: Tracked::new(take(maps::DST_V4)?)?,
            src_v6: Tracked::new(take(maps::SRC_V6)?)?,
            dst_v6: Tracked::new(take(maps::DST_V6)?)?,
            src_host_v4: HostTable::new(take(maps::SRC_HOST_V4)?, maps::SRC_HOST_V4)?,
            dst_host_v4: HostTable::new(take(maps::DST_HOST_V4)?, maps::DST_HOST_V4)?,
            src_host_v6: HostTable::new(take(maps::SRC_HOST_V6)?, maps::SRC_HOST_V6)?,
            dst_host_v6: HostTable::new(take(maps::DST_HOST_V6)?, maps::DST_HOST_V6)?,
            host_sets: Mapped::new(take(maps::HOST_SETS)?, maps::HOST_SETS)?,
            sport: Tracked::new(take(maps::SPORT)?)?,
            dport: Tracked::new(take(maps::DPORT)?)?,
            masks: take(maps::MASKS)?.try_into()?,
            rules: take(maps::RULES)?.try_into()?,
            faults: take(maps::FAULTS)?.try_into()?,
            ctrl: take(maps::CTRL)?.try_into()?,
            counters: take(maps::COUNTERS)?.try_into()?,
            stats: take(maps::STATS)?.try_into()?,
            specs: Specs::new(take(maps::SPECS)?)?,
            xdp_ifaces: take(maps::XDP_IFACES)?.try_into()?,
            early_ifaces: None,
            dns_names: Hashed::new(take(maps::DNS_NAMES)?)?,
            written: [None, None],
        })
    }

    /// Opens the maps a daemon pinned under `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::from(|n| open(dir, n))
    }

    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        Self::from(|n| {
            ebpf.take_map(n)
                .ok_or_else(|| anyhow!("map {n} missing from the eBPF object"))
        })
    }

    /// Records whether drops of packets entering through `ifindex` were judged at ingress there
    /// (see [`maps::XDP_IFACES`]).
    pub fn set_early_iface(&mut self, ifindex: u32, on: bool) -> Result<()> {
        if let Some(known) = &mut self.early_ifaces {
            if on {
                known.insert(ifindex);
            } else {
                known.remove(&ifindex);
            }
        }
        if on {
            self.xdp_ifaces.insert(ifindex, 1, 0)?;
            return Ok(());
        }
        absent_ok(self.xdp_ifaces.remove(&ifindex))
    }

    /// Makes [`maps::XDP_IFACES`] hold exactly `ifindexes` (at start: a previous instance may
    /// have left interfaces that are gone since).
    pub fn sync_early_ifaces(&mut self, ifindexes: &[u32]) -> Result<()> {
        let want: std::collections::BTreeSet<u32> = ifindexes.iter().copied().collect();
        let have = match self.early_ifaces.take() {
            Some(h) => h,
            None => self.xdp_ifaces.keys().filter_map(|k| k.ok()).collect(),
        };
        // Known again only once every write below went through.
        for &i in have.difference(&want) {
            self.set_early_iface(i, false)?;
        }
        for &i in want.difference(&have) {
            self.set_early_iface(i, true)?;
        }
        self.early_ifaces = Some(want);
        Ok(())
    }

    /// Tells the maps they were created by this process and hold nothing yet: clearing needs
    /// no walk, and the first install into each generation writes only the array entries that
    /// are not zero (a fresh array's), not all ~200 of them.
    pub fn created_empty(&mut self) {
        for g in 0..2 {
            self.src_v4.keys[g] = Some(Vec::new());
            self.dst_v4.keys[g] = Some(Vec::new());
            self.src_v6.keys[g] = Some(Vec::new());
            self.dst_v6.keys[g] = Some(Vec::new());
            self.sport.keys[g] = Some(Vec::new());
            self.dport.keys[g] = Some(Vec::new());
            self.written[g] = Some(Arrays {
                masks: vec![RuleSet::default(); mask::PER_GEN as usize],
                rules: vec![Rule::default(); MAX_RULES as usize],
                faults: vec![FaultCfg::default(); MAX_FAULTS as usize],
            });
            self.dns_names.keys[g] = Some(Vec::new());
        }
    }

    /// Reads both generations' arrays back (what a previous instance left in pins adopted
    /// now), so that the next install into each writes only the entries that differ from them.
    pub fn read_back_arrays(&mut self) -> Result<()> {
        fn read<T: aya::Pod>(a: &Array<MapData, T>, base: u32, n: u32) -> Result<Vec<T>> {
            (base..base + n)
                .map(|i| Ok(a.get(&i, 0)?))
                .collect::<Result<_>>()
        }
        for g in 0..2u32 {
            self.written[g as usize] = None;
            let arrays = Arrays {
                masks: read(&self.masks, g * mask::PER_GEN, mask::PER_GEN)?,
                rules: read(&self.rules, g * MAX_RULES, MAX_RULES)?,
                faults: read(&self.faults, g * MAX_FAULTS, MAX_FAULTS)?,
            };
            self.written[g as usize] = Some(arrays);
        }
        Ok(())
    }

    pub fn ctrl(&self, i: u32) -> Result<u64> {
        Ok(self.ctrl.get(&i, 0)?)
    }

    pub fn set_ctrl(&mut self, i: u32, v: u64) -> Result<()> {
        Ok(self.ctrl.set(i, v, 0)?)
    }

    /// The generation the programs read now.
    pub fn active_gen(&self) -> Result<u8> {
        Ok((self.ctrl(ctrl::GEN)? & 1) as u8)
    }

    /// Makes `img` the live fault set in one step: the programs see the old set or the new one,
    /// never a mix. Counters of `reset_slots` (slots given to new faults) start from zero.
    pub fn install(&mut self, img: &Image, reset_slots: &[u32]) -> Result<()> {
        let p = self.prepare(img, reset_slots)?;
        self.flip(p)?;
        self.clear_inactive()
    }

    /// Writes `img` into the inactive generation (the programs do not read it yet) and returns
    /// the control word that makes it live. Counters of `reset_slots` are zeroed.
    pub fn prepare(&mut self, img: &Image, reset_slots: &[u32]) -> Result<Prepared> {
        let g = 1 - self.active_gen()?;
        self.clear_gen(g)?;
        let mut trie_bits = 0;
        let h = &img.hosts;
        // The sets before the entries that name them (compile bounded their number).
        self.host_sets
            .write(u32::from(g) * hosts::SETS_PER_GEN, &h.sets);
        for (filled, bit) in [
            (
                fill_addrs(
                    &mut self.src_v4,
                    &mut self.src_host_v4,
                    g,
                    &img.src_v4,
                    &h.src_v4,
                )?,
                ctrl::GEN_TRIE_SRC_V4,
            ),
            (
                fill_addrs(
                    &mut self.dst_v4,
                    &mut self.dst_host_v4,
                    g,
                    &img.dst_v4,
                    &h.dst_v4,
                )?,
                ctrl::GEN_TRIE_DST_V4,
            ),
            (
                fill_addrs(
                    &mut self.src_v6,
                    &mut self.src_host_v6,
                    g,
                    &img.src_v6,
                    &h.src_v6,
                )?,
                ctrl::GEN_TRIE_SRC_V6,
            ),
            (
                fill_addrs(
                    &mut self.dst_v6,
                    &mut self.dst_host_v6,
                    g,
                    &img.dst_v6,
                    &h.dst_v6,
                )?,
                ctrl::GEN_TRIE_DST_V6,
            ),
        ] {
            if filled {
                trie_bits |= bit;
            }
        }
        self.sport.fill(g, &img.sport)?;
        self.dport.fill(g, &img.dport)?;
        let names: Vec<_> = img
            .dns
            .iter()
            .map(|(&(suffix, len, hash), &slots)| {
                (injector_common::dns::key(g, suffix, len, hash), slots)
            })
            .collect();
        self.dns_names
            .insert_all(g, &names)
            .context("inserting DNS names")?;
        let g32 = u32::from(g);
        let new = Arrays {
            masks: img.masks.to_vec(),
            rules: img.rules.clone(),
            faults: img.faults.clone(),
        };
        let old = self.written[usize::from(g)].take();
        let old = old.as_ref();
        write_changed(
            &mut self.masks,
            g32 * mask::PER_GEN,
            &new.masks,
            old.map(|o| &o.masks[..]),
        )?;
        write_changed(
            &mut self.rules,
            g32 * MAX_RULES,
            &new.rules,
            old.map(|o| &o.rules[..]),
        )?;
        write_changed(
            &mut self.faults,
            g32 * MAX_FAULTS,
            &new.faults,
            old.map(|o| &o.faults[..]),
        )?;
        self.written[usize::from(g)] = Some(new);
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for &slot in reset_slots {
            for jh in JudgeHook::ALL {
                let zero = PerCpuValues::try_from(vec![FaultCounters::default(); cpus])?;
                self.counters
                    .set(slot * JudgeHook::COUNT + jh as u32, zero, 0)?;
            }
        }
        let any = img.masks.iter().any(|m| !m.is_empty());
        let seq = ((self.ctrl(ctrl::GEN)? >> ctrl::GEN_SEQ_SHIFT) + 1) & u64::from(u32::MAX);
        Ok(Prepared {
            generation: g,
            word: seq << ctrl::GEN_SEQ_SHIFT
                | u64::from(g)
                | if any { ctrl::GEN_ANY } else { 0 }
                | if img.clones { ctrl::GEN_CLONES } else { 0 }
                | if img.dns.is_empty() { 0 } else { ctrl::GEN_DNS }
                | if img.stages & stage::EARLY == 0 {
                    ctrl::GEN_EARLY_NONE
                } else {
                    0
                }
                | if img.stages & stage::EGRESS == 0 {
                    ctrl::GEN_EGRESS_NONE
                } else {
                    0
                }
                | trie_bits,
        })
    }

    /// The flip: one word, the commit point of a change.
    pub fn flip(&mut self, p: Prepared) -> Result<()> {
        // The host arrays were written through a mapping, by plain stores: make them visible
        // before the word that tells the programs to read them (a no-op on x86; a barrier on
        // arm64). The programs' reads depend on the word they read (the generation indexes them).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.set_ctrl(ctrl::GEN, p.word)
    }

    /// Empties the generation the programs no longer read.
    pub fn clear_inactive(&mut self) -> Result<()> {
        let g = 1 - self.active_gen()?;
        self.clear_gen(g)
    }

    fn clear_gen(&mut self, g: u8) -> Result<()> {
        self.src_v4.clear(g)?;
        self.dst_v4.clear(g)?;
        self.src_v6.clear(g)?;
        self.dst_v6.clear(g)?;
        self.src_host_v4.clear(g);
        self.dst_host_v4.clear(g);
        self.src_host_v6.clear(g);
        self.dst_host_v6.clear(g);
        self.sport.clear(g)?;
        self.dport.clear(g)?;
        self.dns_names.clear(g)
    }

    /// The daemon's records (the SPECS map).
    pub fn records(&self) -> &Specs {
        &self.specs
    }

    pub fn records_mut(&mut self) -> &mut Specs {
        &mut self.specs
    }

    /// The live fault configs, by slot (empty slots have deadline 0).
    pub fn live_faults(&self) -> Result<Vec<(u32, FaultCfg)>> {
        let g = (self.ctrl(ctrl::GEN)? & 1) as u32;
        let mut out = Vec::new();
        for slot in 0..MAX_FAULTS {
            let f = self.faults.get(&(g * MAX_FAULTS + slot), 0)?;
            if f.deadline_ns != 0 {
                out.push((slot, f));
            }
        }
        Ok(out)
    }

    /// What fault `slot` did at `hook`, summed over CPUs.
    pub fn fault_counters(&self, slot: u32, hook: JudgeHook) -> Result<FaultCounters> {
        let mut sum = FaultCounters::default();
        for v in self
            .counters
            .get(&(slot * JudgeHook::COUNT + hook as u32), 0)?
            .iter()
        {
            sum.add(v);
        }
        Ok(sum)
    }

    /// Counters of `hook`, summed over CPUs.
    pub fn stats(&self, hook: Hook) -> Result<HookStats> {
        let mut sum = HookStats::default();
        for v in self.stats.get(&(hook as u32), 0)?.iter() {
            sum.add(v);
        }
        Ok(sum)
    }
}
