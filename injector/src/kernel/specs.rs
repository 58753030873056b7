//! The SPECS map as a store of byte records (the daemon's JSON; `daemon::records` says which
//! records there are and what they hold). A record takes as many parts of [`SPEC_PART`] bytes as
//! it needs, part 0 starting with a header (length, CRC-32 of the bytes, when written), so a
//! change copies into the kernel what its records hold. Before, every record was one 64 KiB value:
//! a change of 256 faults copied 16 MiB into the kernel (`perf`: ~6 ms of the ~33 that applying
//! 100k prefixes over 256 faults took here).
//!
//! A write puts the tail parts first and part 0 last, then removes the parts a longer record
//! under the same id left. A write cut short (the daemon killed) leaves no part 0 (the id had no
//! record: nothing is found) or a part 0 whose checksum the bytes do not match (an overwrite:
//! reading fails). It never reads back as other bytes. Keeping a readable copy across a torn
//! overwrite is the caller's: fault records go to fresh ids, a manifest to the generation the
//! kernel does not run, and the daemon's own records alternate between two ids.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsFd, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use injector_common::{SPEC_HEADER, SPEC_PART, SPEC_RECORD, SpecKey, monotonic_ns};

use super::{
    batch,
    maps::{absent, absent_ok},
};

type Part = [u8; SPEC_PART];

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: Vec<u8>,
    /// When it was written (`CLOCK_MONOTONIC` ns): of two copies, the later wins.
    pub written_ns: u64,
}

/// The parts of a record holding `data`, part 0 (with the header) first.
pub fn split(data: &[u8], written_ns: u64) -> Vec<Part> {
    let mut all = Vec::with_capacity(SPEC_HEADER + data.len());
    all.extend_from_slice(&(data.len() as u32).to_le_bytes());
    all.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    all.extend_from_slice(&written_ns.to_le_bytes());
    all.extend_from_slice(data);
    all.chunks(SPEC_PART)
        .map(|c| {
            let mut p = [0u8; SPEC_PART];
            p[..c.len()].copy_from_slice(c);
            p
        })
        .collect()
}

/// The record whose part 0 is `head`, its other parts from `part(i)`. Fails when a part is
/// missing or the bytes do not match the checksum (a write cut short).
pub fn join(head: &Part, mut part: impl FnMut(u32) -> Result<Option<Part>>) -> Result<Stored> {
    let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let (len, crc) = (word(0) as usize, word(4));
    let written_ns = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    ensure!(
        len <= SPEC_RECORD,
        "its header gives {len} bytes, more than a record holds ({SPEC_RECORD})"
    );
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&head[SPEC_HEADER..(SPEC_HEADER + len).min(SPEC_PART)]);
    let mut i = 1;
    while bytes.len() < len {
        let p = part(i)?.ok_or_else(|| anyhow!("part {i} is missing: a write was cut short"))?;
        let take = (len - bytes.len()).min(SPEC_PART);
        bytes.extend_from_slice(&p[..take]);
        i += 1;
    }
    if crc32fast::hash(&bytes) != crc {
        bail!("its bytes do not match their checksum: a write was cut short");
    }
    Ok(Stored { bytes, written_ns })
}

fn check_len(id: u32, data: &[u8]) -> Result<()> {
    ensure!(
        data.len() <= SPEC_RECORD,
        "record {id:#x}: {} bytes, over the {SPEC_RECORD} byte limit",
        data.len()
    );
    Ok(())
}

/// The records in SPECS.
pub struct Specs {
    map: HashMap<MapData, SpecKey, Part>,
    /// The map's fd, for the batch commands aya lacks (`batch`).
    fd: OwnedFd,
    /// What the map holds: id -> parts (one past the highest part), kept by every write of this
    /// process so that listing and collecting records does not walk the map's keys (a syscall
    /// per part: 1.3 ms of a 100k-prefix change). `None` (at open, or after a failed write):
    /// unknown, the keys are walked once.
    known: Option<BTreeMap<u32, u32>>,
}

impl Specs {
    pub fn new(m: Map) -> Result<Self> {
        let fd = match &m {
            Map::HashMap(d) => d.fd().as_fd().try_clone_to_owned()?,
            _ => bail!("SPECS: expected a hash map"),
        };
        Ok(Specs {
            map: m.try_into()?,
            fd,
            known: None,
        })
    }

    /// What the map holds (id -> parts), walked from its keys when not known.
    fn known(&mut self) -> Result<&mut BTreeMap<u32, u32>> {
        if self.known.is_none() {
            let mut k = BTreeMap::new();
            for key in self.map.keys() {
                let key = key?;
                let n = k.entry(key.id).or_insert(0);
                *n = (*n).max(key.part + 1);
            }
            self.known = Some(k);
        }
        Ok(self.known.as_mut().expect("just set"))
    }

    /// Runs a write, keeping `known` only if it succeeds (a failed one left the map unknown).
    fn tracked<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = write(self);
        if r.is_err() {
            self.known = None;
        }
        r
    }

    fn part(&self, id: u32, part: u32) -> Result<Option<Part>> {
        match self.map.get(&SpecKey { id, part }, 0) {
            Ok(p) => Ok(Some(p)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Record `id`; `None` when it has no part 0.
    pub fn get(&self, id: u32) -> Result<Option<Stored>> {
        let Some(head) = self.part(id, 0)? else {
            return Ok(None);
        };
        join(&head, |i| self.part(id, i))
            .map(Some)
            .with_context(|| format!("SPECS record {id:#x}"))
    }

    /// Writes record `id`, replacing what it held: the tail parts, part 0, then the parts a longer
    /// record before it left.
    pub fn put(&mut self, id: u32, data: &[u8]) -> Result<()> {
        check_len(id, data)?;
        let parts = split(data, monotonic_ns());
        let n = parts.len() as u32;
        let before = self.known()?.get(&id).copied().unwrap_or(0);
        self.tracked(|s| {
            for (i, p) in parts.iter().enumerate().skip(1) {
                s.map.insert(SpecKey { id, part: i as u32 }, p, 0)?;
            }
            s.map.insert(SpecKey { id, part: 0 }, parts[0], 0)?;
            s.remove_parts(id, n..before.max(n))
        })?;
        self.known()?.insert(id, n);
        Ok(())
    }

    /// Writes records under ids that hold none: every tail part in one batch, then every part 0
    /// in another (a syscall each where the kernel has batches; entry by entry where not).
    pub fn put_new(&mut self, records: &[(u32, &[u8])]) -> Result<()> {
        let now = monotonic_ns();
        let (mut heads, mut tails) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for &(id, data) in records {
            check_len(id, data)?;
            for (i, p) in split(data, now).into_iter().enumerate() {
                let at = if i == 0 { &mut heads } else { &mut tails };
                at.0.push(SpecKey { id, part: i as u32 });
                at.1.push(p);
            }
        }
        self.tracked(|s| {
            s.insert_all(&tails.0, &tails.1)?;
            s.insert_all(&heads.0, &heads.1)
        })?;
        let known = self.known()?;
        for k in heads.0.iter().chain(&tails.0) {
            let n = known.entry(k.id).or_insert(0);
            *n = (*n).max(k.part + 1);
        }
        Ok(())
    }

    fn insert_all(&mut self, keys: &[SpecKey], parts: &[Part]) -> Result<()> {
        let map = &mut self.map;
        batch::update(
            self.fd.as_fd(),
            keys,
            parts,
            |k, p| Ok(map.insert(k, p, 0)?),
        )
    }

    /// Removes record `id`: part 0 first (no reader finds it after that), then the rest.
    pub fn remove(&mut self, id: u32) -> Result<()> {
        self.remove_where(|i| i == id).map(drop)
    }

    /// Removes parts `parts` of `id` (absent ones skipped).
    fn remove_parts(&mut self, id: u32, mut parts: std::ops::Range<u32>) -> Result<()> {
        parts.try_for_each(|part| absent_ok(self.map.remove(&SpecKey { id, part })))
    }

    /// The ids with parts stored (also those of a record cut short).
    pub fn ids(&mut self) -> Result<BTreeSet<u32>> {
        Ok(self.known()?.keys().copied().collect())
    }

    /// Removes every record whose id `drop` picks, in one batch (parts 0 first). Returns how
    /// many records.
    pub fn remove_where(&mut self, drop: impl Fn(u32) -> bool) -> Result<usize> {
        let gone: Vec<(u32, u32)> = self
            .known()?
            .iter()
            .filter(|(id, _)| drop(**id))
            .map(|(id, n)| (*id, *n))
            .collect();
        let mut keys: Vec<SpecKey> = gone
            .iter()
            .flat_map(|&(id, n)| (0..n).map(move |part| SpecKey { id, part }))
            .collect();
        keys.sort_by_key(|k| (k.part != 0, k.id, k.part));
        self.tracked(|s| {
            let map = &mut s.map;
            batch::delete(s.fd.as_fd(), &keys, |k| absent_ok(map.remove(k)))
        })?;
        let known = self.known()?;
        for (id, _) in &gone {
            known.remove(id);
        }
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use injector_common::SPEC_PARTS;

    use super::*;

    fn stored(data: &[u8]) -> Vec<Part> {
        split(data, 42)
    }

    fn read(parts: &[Part]) -> Result<Stored> {
        join(&parts[0], |i| Ok(parts.get(i as usize).copied()))
    }

    #[test]
    fn records_of_every_size_come_back_as_written() {
        let edge = SPEC_PART - SPEC_HEADER;
        for len in [
            0,
            1,
            300,
            edge,
            edge + 1,
            SPEC_PART,
            2 * SPEC_PART,
            SPEC_RECORD,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let parts = stored(&data);
            assert_eq!(
                parts.len(),
                (len + SPEC_HEADER).div_ceil(SPEC_PART),
                "{len}"
            );
            assert!(parts.len() <= SPEC_PARTS as usize);
            let back = read(&parts).unwrap();
            assert_eq!(back.bytes, data, "{len}");
            assert_eq!(back.written_ns, 42);
        }
    }

    #[test]
    fn a_torn_or_shortened_record_fails_to_read() {
        let data: Vec<u8> = (0..3 * SPEC_PART).map(|i| i as u8).collect();
        let parts = stored(&data);
        // A tail part of an older record under the same id (an overwrite cut short).
        let mut torn = parts.clone();
        torn[2] = stored(&vec![9u8; 3 * SPEC_PART])[2];
        let e = read(&torn).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // A part missing.
        let e = read(&parts[..2]).unwrap_err().to_string();
        assert!(e.contains("part 2 is missing"), "{e}");
        // A length no record has.
        let mut bad = parts.clone();
        bad[0][..4].copy_from_slice(&(SPEC_RECORD as u32 + 1).to_le_bytes());
        assert!(read(&bad).is_err());
    }
}
