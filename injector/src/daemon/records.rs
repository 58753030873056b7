//! The daemon's records in the SPECS map, and every key of that map: fault records (by id), one
//! manifest per map generation (which record each slot of that generation runs), and the daemon's
//! own records (the clsact and fq qdiscs it created). No program reads them. How a record is
//! stored (in parts, checksummed) is `kernel::specs`.
//!
//! Why a manifest per generation: a change fills the inactive generation of the classification
//! maps and then flips one control word. Writing that generation's manifest before the flip
//! makes the flip the commit point for the records too: a restarted daemon reads the manifest of
//! the generation the kernel runs and adopts exactly that set, whether the old daemon died before
//! the flip (the old set), after it (the new set), or in between any two writes.
//!
//! A write cut short leaves its record unreadable, so none is overwritten where a reader needs the
//! old one: fault records go to fresh ids, a manifest to the generation the kernel does not run,
//! and an own record alternates between two ids (the later readable copy wins).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use crate::api::Carved;
use crate::{fault::spec::FaultSpec, kernel::Maps};

/// SPECS keys (record ids).
pub mod key {
    /// Fault records have ids below this.
    pub const FAULTS_END: u32 = 0xFFFF_0000;
    /// The fq qdiscs the daemon installed ([`super::super::fq::FqState`]); two copies, this id
    /// and the next.
    pub const FQ: u32 = 0xFFFF_0000;
    /// The interfaces whose clsact qdisc an instance of ours created; two copies, this id and the
    /// next.
    pub const CLSACT: u32 = 0xFFFF_0002;
    /// The manifest of generation 0; generation 1's is the next key.
    pub const MANIFEST: u32 = 0xFFFF_0010;

    pub const fn manifest(generation: u8) -> u32 {
        MANIFEST + generation as u32
    }
}

/// What is stored per fault, and what the API returns as the fault's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub spec: FaultSpec,
    pub start_ns: u64,
    pub deadline_ns: u64,
    /// Applied over a protected target with force.
    #[serde(default)]
    pub forced: bool,
    /// Protected targets carved out of the fault's destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carved: Vec<Carved>,
    /// The NetworkFault (`namespace/name`) this fault is a part of; `None`: the local API's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// A generation's manifest: slot -> the id of the record of the fault in that slot.
pub type Manifest = BTreeMap<u32, u32>;

fn get<T: DeserializeOwned>(maps: &Maps, key: u32) -> Result<Option<T>> {
    match maps.records().get(key)? {
        None => Ok(None),
        Some(r) => Ok(Some(
            serde_json::from_slice(&r.bytes).with_context(|| format!("SPECS record {key:#x}"))?,
        )),
    }
}

fn put<T: Serialize>(maps: &mut Maps, key: u32, v: &T) -> Result<()> {
    maps.records_mut().put(key, &serde_json::to_vec(v)?)
}

/// Of own record `key`'s two copies, the later whole one: (its id, its bytes).
fn own_copy(maps: &Maps, key: u32) -> Option<(u32, Vec<u8>)> {
    [key, key + 1]
        .into_iter()
        .filter_map(|id| Some((id, maps.records().get(id).ok()??)))
        .max_by_key(|(_, r)| r.written_ns)
        .map(|(id, r)| (id, r.bytes))
}

/// The daemon's own record `key` ([`key::FQ`], [`key::CLSACT`]); `None` when absent or unreadable.
pub fn own<T: DeserializeOwned>(maps: &Maps, key: u32) -> Option<T> {
    serde_json::from_slice(&own_copy(maps, key)?.1).ok()
}

/// Writes own record `key` over its older copy: the later one stays readable until this write is
/// whole.
pub fn put_own<T: Serialize>(maps: &mut Maps, key: u32, v: &T) -> Result<()> {
    let into = match own_copy(maps, key) {
        Some((id, _)) if id == key => key + 1,
        _ => key,
    };
    put(maps, into, v)
}

/// The manifest of `generation`; empty when there is none (maps just created).
pub fn manifest(maps: &Maps, generation: u8) -> Result<Manifest> {
    Ok(get(maps, key::manifest(generation))?.unwrap_or_default())
}

pub fn put_manifest(maps: &mut Maps, generation: u8, m: &Manifest) -> Result<()> {
    put(maps, key::manifest(generation), m)
}

/// The fault record `id`.
pub fn fault(maps: &Maps, id: u32) -> Result<Option<Record>> {
    get(maps, id)
}

/// The record's bytes, checked against what a record holds before anything is written.
pub fn encode(r: &Record) -> Result<Vec<u8>, String> {
    // Sized for the CIDR lists up front: grown from empty, a large record's bytes were copied
    // by every doubling on the way.
    let s = &r.spec;
    let cidrs: usize = [&s.from, &s.to, &s.from_except, &s.to_except]
        .iter()
        .flat_map(|l| l.iter())
        .map(|c| c.len() + 3)
        .sum();
    let mut bytes = Vec::with_capacity(cidrs + 1024);
    serde_json::to_writer(&mut bytes, r).map_err(|e| e.to_string())?;
    if bytes.len() > injector_common::SPEC_RECORD {
        return Err(format!(
            "the fault is too large to store ({} bytes of JSON, at most {}); split it",
            bytes.len(),
            injector_common::SPEC_RECORD
        ));
    }
    Ok(bytes)
}

/// Stores fault records under fresh ids (ids no record has): in two batches, whatever their number.
pub fn put_faults(maps: &mut Maps, records: &[(u32, Vec<u8>)]) -> Result<()> {
    let refs: Vec<(u32, &[u8])> = records.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    maps.records_mut().put_new(&refs)
}

/// Removes fault record `id` (absent: nothing to do).
pub fn remove_fault(maps: &mut Maps, id: u32) -> Result<()> {
    maps.records_mut().remove(id)
}

/// Ids of the fault records stored (also of one whose write was cut short).
pub fn fault_ids(maps: &mut Maps) -> Result<BTreeSet<u32>> {
    Ok(maps
        .records_mut()
        .ids()?
        .into_iter()
        .filter(|k| *k < key::FAULTS_END)
        .collect())
}

/// Removes every fault record not named in `keep` (left by a change that did not complete, or
/// by the set a completed change replaced).
pub fn collect_garbage(maps: &mut Maps, keep: &BTreeSet<u32>) -> Result<usize> {
    maps.records_mut()
        .remove_where(|id| id < key::FAULTS_END && !keep.contains(&id))
}
