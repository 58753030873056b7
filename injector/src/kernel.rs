//! Userspace view of the kernel maps: open them (from a loaded object or from their pins), write
//! destination entries, read and sum the per-CPU counters. The only module that touches map types.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{
    Map, MapData, PerCpuArray,
    lpm_trie::{Key, LpmTrie},
};
use injector_common::{Hook, HookStats, Target, maps};

use crate::parse::Cidr;

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns()` reads, so deadlines compare directly.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The fault maps and counters of one daemon instance.
pub struct Maps {
    dst_v4: LpmTrie<MapData, [u8; 4], Target>,
    dst_v6: LpmTrie<MapData, [u8; 16], Target>,
    stats: PerCpuArray<MapData, HookStats>,
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

impl Maps {
    /// Opens the maps a daemon pinned under `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Ok(Self {
            dst_v4: open(dir, maps::DST_V4)?.try_into()?,
            dst_v6: open(dir, maps::DST_V6)?.try_into()?,
            stats: open(dir, maps::STATS)?.try_into()?,
        })
    }

    /// Takes the maps out of a freshly loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let mut take = |n: &str| {
            ebpf.take_map(n)
                .ok_or_else(|| anyhow!("map {n} missing from the eBPF object"))
        };
        Ok(Self {
            dst_v4: take(maps::DST_V4)?.try_into()?,
            dst_v6: take(maps::DST_V6)?.try_into()?,
            stats: take(maps::STATS)?.try_into()?,
        })
    }

    /// Inserts or replaces the entry for `cidr`.
    pub fn put(&mut self, cidr: Cidr, target: Target) -> Result<()> {
        match cidr.addr {
            std::net::IpAddr::V4(a) => {
                self.dst_v4
                    .insert(&Key::new(cidr.len.into(), a.octets()), target, 0)?
            }
            std::net::IpAddr::V6(a) => {
                self.dst_v6
                    .insert(&Key::new(cidr.len.into(), a.octets()), target, 0)?
            }
        }
        Ok(())
    }

    /// Removes the entry for `cidr`; `false` if there was none.
    pub fn remove(&mut self, cidr: Cidr) -> Result<bool> {
        let r = match cidr.addr {
            std::net::IpAddr::V4(a) => self.dst_v4.remove(&Key::new(cidr.len.into(), a.octets())),
            std::net::IpAddr::V6(a) => self.dst_v6.remove(&Key::new(cidr.len.into(), a.octets())),
        };
        match r {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every entry, IPv4 first.
    pub fn entries(&self) -> Result<Vec<(Cidr, Target)>> {
        let mut out = Vec::new();
        for kv in self.dst_v4.iter() {
            let (k, v) = kv?;
            out.push((
                Cidr {
                    addr: std::net::Ipv4Addr::from(k.data()).into(),
                    len: k.prefix_len() as u8,
                },
                v,
            ));
        }
        for kv in self.dst_v6.iter() {
            let (k, v) = kv?;
            out.push((
                Cidr {
                    addr: std::net::Ipv6Addr::from(k.data()).into(),
                    len: k.prefix_len() as u8,
                },
                v,
            ));
        }
        Ok(out)
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
