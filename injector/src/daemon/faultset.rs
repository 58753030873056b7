//! The daemon's fault set: what the API adds and removes, what is written to the maps, and what is
//! stored for adoption. Every change is checked whole before anything is written (nothing is half
//! applied), then installed with one generation flip.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    fault::{
        compile::{CompileError, Image, Planned, assign_slots, compile},
        spec::{Action, Fault, FaultSpec},
    },
    kernel::Maps,
    parse::Cidr,
};

/// What is stored per fault in the SPECS map, and what the API returns as the fault's definition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub spec: FaultSpec,
    pub start_ns: u64,
    pub deadline_ns: u64,
    /// Applied over a protected target with force.
    #[serde(default)]
    pub forced: bool,
    /// Protected targets carved out of the fault's destinations (`10.42.1.1/32 (node address)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carved: Vec<String>,
}

pub struct Entry {
    pub record: Record,
    pub fault: Fault,
    pub slot: u32,
}

/// A destination no fault may touch unless forced.
#[derive(Clone, Debug, Serialize)]
pub struct Protected {
    pub cidr: String,
    pub why: String,
    #[serde(skip)]
    pub net: Cidr,
}

/// An API error: the HTTP status tells the kind, the message names the field, the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<CompileError> for ApiError {
    fn from(e: CompileError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

fn contains(a: &Cidr, b: &IpAddr) -> bool {
    let bits = |ip: &IpAddr| -> (u128, u8) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(*v)), 32),
            IpAddr::V6(v) => (u128::from(*v), 128),
        }
    };
    let ((x, w), (y, w2)) = (bits(&a.addr), bits(b));
    if w != w2 {
        return false;
    }
    let shift = u32::from(w - a.len);
    a.len == 0 || (x >> shift) == (y >> shift)
}

fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    contains(a, &b.addr) || contains(b, &a.addr)
}

/// The first protected target that `f`'s destinations (and sources, when both ways) reach.
fn protected_hit<'p>(
    f: &Fault,
    protected: &'p [Protected],
) -> Option<(&'static str, String, &'p Protected)> {
    let mut sets = vec![("to", &f.to)];
    if f.both_ways {
        sets.push(("from", &f.from));
    }
    for (field, set) in sets {
        for p in protected {
            if set.is_empty() {
                return Some((field, "any address".to_string(), p));
            }
            if let Some(c) = set.iter().find(|c| overlaps(c, &p.net)) {
                return Some((field, c.to_string(), p));
            }
        }
    }
    None
}

#[derive(Default)]
pub struct FaultSet {
    entries: BTreeMap<String, Entry>,
}

impl FaultSet {
    /// Rebuilds the set from the records a previous daemon left in the maps, dropping those that
    /// have ended or cannot be read, and reinstalls it (the maps then match the records exactly).
    pub fn adopt(maps: &mut Maps, now: u64) -> anyhow::Result<(FaultSet, Vec<String>)> {
        let mut set = FaultSet::default();
        let mut dropped = Vec::new();
        for (slot, bytes) in maps.records()? {
            if slot >= super::core::DAEMON_RECORDS {
                continue;
            }
            let rec: Record = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    dropped.push(format!("slot {slot}: unreadable record ({e})"));
                    continue;
                }
            };
            let name = rec.spec.name.clone();
            match rec.spec.validate("") {
                Ok(fault) if rec.deadline_ns > now => {
                    set.entries.insert(
                        name,
                        Entry {
                            record: rec,
                            fault,
                            slot,
                        },
                    );
                }
                Ok(_) => dropped.push(format!("{name}: ended")),
                Err(e) => dropped.push(format!("{name}: {e}")),
            }
        }
        let live: Vec<u32> = set.entries.values().map(|e| e.slot).collect();
        for (slot, _) in maps.records()? {
            if !live.contains(&slot) && slot < super::core::DAEMON_RECORDS {
                maps.remove_record(slot)?;
            }
        }
        set.reinstall(maps, &[])?;
        Ok((set, dropped))
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The map entries of the whole set.
    fn image(&self) -> Result<Image, CompileError> {
        let planned: Vec<Planned<'_>> = self
            .entries
            .values()
            .map(|e| Planned {
                fault: &e.fault,
                slot: e.slot,
                start_ns: e.record.start_ns,
                deadline_ns: e.record.deadline_ns,
            })
            .collect();
        compile(&planned)
    }

    fn reinstall(&self, maps: &mut Maps, reset: &[u32]) -> anyhow::Result<()> {
        maps.install(&self.image()?, reset)
    }

    /// Adds `specs` (all or none). `fq`: whether delay is possible on this kernel.
    pub fn add(
        &mut self,
        maps: &mut Maps,
        specs: Vec<FaultSpec>,
        opts: AddOptions<'_>,
        now: u64,
    ) -> Result<Vec<String>, ApiError> {
        if specs.is_empty() {
            return Err(ApiError::BadRequest(
                "faults: the request holds no fault; send one fault or a list".into(),
            ));
        }
        let mut new = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let at = format!("faults[{i}].");
            let fault = spec
                .validate(&at)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            if matches!(fault.action, Action::Delay { .. }) && !opts.fq {
                return Err(ApiError::BadRequest(format!(
                    "{at}delay: the fq qdisc is unavailable on this kernel (not built in, no sch_fq module); \
                     delay holds packets in fq (EDT). Use loss or blackhole here, or a kernel with sch_fq"
                )));
            }
            if new
                .iter()
                .any(|(_, f): &(FaultSpec, Fault)| f.name == fault.name)
            {
                return Err(ApiError::BadRequest(format!(
                    "{at}name: '{}' appears twice in the request; give each fault its own name",
                    fault.name
                )));
            }
            if self.entries.contains_key(&fault.name) && !opts.replace {
                return Err(ApiError::Conflict(format!(
                    "{at}name: a fault named '{}' exists; delete it first, pick another name, or replace=true",
                    fault.name
                )));
            }
            if !opts.force
                && let Some((field, what, p)) = protected_hit(&fault, opts.protected)
            {
                return Err(ApiError::Forbidden(format!(
                    "{at}{field}: {what} reaches protected {} ({}); name other targets, or force it (force=true, --force)",
                    p.cidr, p.why
                )));
            }
            new.push((spec, fault));
        }
        let mut names: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !new.iter().any(|(_, f)| &f.name == *n))
            .cloned()
            .collect();
        names.extend(new.iter().map(|(_, f)| f.name.clone()));
        let prev: BTreeMap<String, u32> = self
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.slot))
            .collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let slots = assign_slots(&prev, &name_refs)?;
        let mut next: BTreeMap<String, Entry> = BTreeMap::new();
        let mut reset = Vec::new();
        for (name, slot) in names.iter().zip(&slots) {
            if let Some((spec, fault)) = new.iter().find(|(_, f)| &f.name == name) {
                let record = Record {
                    spec: spec.clone(),
                    start_ns: now,
                    deadline_ns: now + fault.lifetime.as_nanos() as u64,
                    forced: opts.force,
                    carved: Vec::new(),
                };
                reset.push(*slot);
                next.insert(
                    name.clone(),
                    Entry {
                        record,
                        fault: fault.clone(),
                        slot: *slot,
                    },
                );
            } else {
                let e = &self.entries[name];
                next.insert(
                    name.clone(),
                    Entry {
                        record: e.record.clone(),
                        fault: e.fault.clone(),
                        slot: *slot,
                    },
                );
            }
        }
        // Compiled before the kernel is touched: a set that does not fit changes nothing.
        let candidate = FaultSet { entries: next };
        let img = candidate.image()?;
        let mut records = Vec::new();
        for name in new.iter().map(|(_, f)| &f.name) {
            let e = &candidate.entries[name];
            let bytes = serde_json::to_vec(&e.record).map_err(anyhow::Error::from)?;
            if bytes.len() + 4 > injector_common::SPEC_RECORD {
                return Err(ApiError::BadRequest(format!(
                    "{name}: the fault is too large to store ({} bytes of JSON, at most {}); split it",
                    bytes.len(),
                    injector_common::SPEC_RECORD - 4
                )));
            }
            records.push((e.slot, bytes));
        }
        // Every check passed: only now is anything written.
        for (slot, bytes) in &records {
            maps.put_record(*slot, bytes)?;
        }
        maps.install(&img, &reset)?;
        *self = candidate;
        Ok(new.into_iter().map(|(_, f)| f.name).collect())
    }

    /// Removes one fault.
    pub fn remove(&mut self, maps: &mut Maps, name: &str) -> Result<(), ApiError> {
        let Some(e) = self.entries.remove(name) else {
            return Err(ApiError::NotFound(format!(
                "name: no fault named '{name}'; `GET /v1/faults` lists them"
            )));
        };
        self.reinstall(maps, &[])?;
        maps.remove_record(e.slot)?;
        Ok(())
    }

    /// Removes every fault.
    pub fn clear(&mut self, maps: &mut Maps) -> Result<usize, ApiError> {
        let n = self.entries.len();
        let slots: Vec<u32> = self.entries.values().map(|e| e.slot).collect();
        self.entries.clear();
        self.reinstall(maps, &[])?;
        for s in slots {
            maps.remove_record(s)?;
        }
        Ok(n)
    }

    /// Forgets faults past their deadline (the kernel already ignores them).
    pub fn reap(&mut self, maps: &mut Maps, now: u64) -> anyhow::Result<Vec<String>> {
        let ended: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.record.deadline_ns <= now)
            .map(|(n, _)| n.clone())
            .collect();
        if ended.is_empty() {
            return Ok(ended);
        }
        let slots: Vec<u32> = ended.iter().map(|n| self.entries[n].slot).collect();
        for n in &ended {
            self.entries.remove(n);
        }
        self.reinstall(maps, &[])?;
        for s in slots {
            maps.remove_record(s)?;
        }
        Ok(ended)
    }
}

pub struct AddOptions<'a> {
    pub force: bool,
    pub replace: bool,
    pub fq: bool,
    pub protected: &'a [Protected],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::cidr;

    fn p(c: &str) -> Protected {
        Protected {
            cidr: c.into(),
            why: "test".into(),
            net: cidr("", c).unwrap(),
        }
    }

    fn fault(json: &str) -> Fault {
        serde_json::from_str::<FaultSpec>(json)
            .unwrap()
            .validate("")
            .unwrap()
    }

    #[test]
    fn protected_targets_are_found() {
        let prot = [p("10.42.1.1/32"), p("10.43.0.10/32")];
        let hit = |j| protected_hit(&fault(j), &prot).map(|(f, what, p)| (f, what, p.cidr.clone()));
        assert_eq!(
            hit(r#"{"name":"a","to":["10.42.2.7"],"blackhole":true,"for":"1m"}"#),
            None
        );
        assert_eq!(
            hit(r#"{"name":"a","to":["10.42.1.0/24"],"blackhole":true,"for":"1m"}"#),
            Some(("to", "10.42.1.0/24".into(), "10.42.1.1/32".into()))
        );
        assert_eq!(
            hit(r#"{"name":"a","blackhole":true,"for":"1m"}"#).map(|h| h.1),
            Some("any address".into())
        );
        // Sources matter only when the fault also runs the other way.
        assert_eq!(
            hit(
                r#"{"name":"a","from":["10.43.0.10"],"to":["10.42.2.7"],"blackhole":true,"for":"1m"}"#
            ),
            None
        );
        assert_eq!(
            hit(r#"{"name":"a","from":["10.43.0.10"],"to":["10.42.2.7"],"both_ways":true,"blackhole":true,"for":"1m"}"#).map(|h| h.0),
            Some("from")
        );
        // Families never overlap.
        assert_eq!(
            hit(r#"{"name":"a","to":["fd00::/8"],"blackhole":true,"for":"1m"}"#),
            None
        );
    }
}
