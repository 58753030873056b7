//! The daemon's fault set: what the API adds and removes, what is written to the maps, and what is
//! stored for adoption. Every change is checked whole before anything is written, then committed
//! as one transaction (records, the generation's manifest, the maps, one flip: see `records`), so
//! after a failure or a crash at any point the old set or the new one runs, never a mix.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use injector_common::ctrl;
use tracing::{debug, warn};

use super::{
    carve::{Protected, carve},
    records::{self, Manifest, Record},
};
use crate::{
    failpoint,
    fault::{
        compile::{CompileError, Image, Planned, assign_slots, compile},
        spec::{Fault, FaultSpec},
    },
    kernel::Maps,
};

pub struct Entry {
    pub record: Record,
    /// The validated spec, with the carved targets among its exceptions.
    pub fault: Fault,
    pub slot: u32,
    /// Where the record is stored; `None` until a commit stores it.
    pub(super) id: Option<u32>,
}

impl Entry {
    pub(super) fn new(
        record: Record,
        slot: u32,
        id: Option<u32>,
        at: &str,
    ) -> Result<Entry, ApiError> {
        let fault = record
            .spec
            .validate(at)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Self::validated(record, fault, slot, id)
    }

    /// As [`new`](Self::new), with `fault` the record's spec validated already (by the caller,
    /// which checked it before building the record: validating 100k prefixes twice cost ~5 ms).
    pub(super) fn validated(
        record: Record,
        mut fault: Fault,
        slot: u32,
        id: Option<u32>,
    ) -> Result<Entry, ApiError> {
        for c in &record.carved {
            let net = crate::parse::cidr("carved", &c.cidr)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
            match c.field.as_str() {
                "from" => fault.from_except.push(net),
                _ => fault.to_except.push(net),
            }
        }
        Ok(Entry {
            record,
            fault,
            slot,
            id,
        })
    }
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

#[derive(Default)]
pub struct FaultSet {
    pub(super) entries: BTreeMap<String, Entry>,
    /// The next record id to use.
    next_id: u32,
}

/// Which change a commit makes (the failpoints' first word).
#[derive(Clone, Copy)]
pub(super) enum Op {
    Adopt,
    Add,
    Replace,
    Remove,
    Clear,
    Reap,
    Sync,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Adopt => "adopt",
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
            Op::Clear => "clear",
            Op::Reap => "reap",
            Op::Sync => "sync",
        }
    }
}

fn image(entries: &BTreeMap<String, Entry>) -> Result<Image, CompileError> {
    let planned: Vec<Planned<'_>> = entries
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

impl FaultSet {
    /// Rebuilds the set the kernel runs from the manifest of its active generation, drops the
    /// faults that have ended or cannot be read, removes records no manifest names (a change
    /// that died before its flip), and reinstalls the set (maps, records and set then agree).
    pub fn adopt(maps: &mut Maps, now: u64) -> anyhow::Result<(FaultSet, Vec<String>)> {
        let manifest = records::manifest(maps, maps.active_gen()?)?;
        let mut next = BTreeMap::new();
        let mut dropped = Vec::new();
        for (&slot, &id) in &manifest {
            let rec = match records::fault(maps, id) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    dropped.push(format!("slot {slot}: record {id} missing"));
                    continue;
                }
                Err(e) => {
                    dropped.push(format!("slot {slot}: unreadable record ({e:#})"));
                    continue;
                }
            };
            let name = rec.spec.name.clone();
            if rec.deadline_ns <= now {
                dropped.push(format!("{name}: ended"));
                continue;
            }
            match Entry::new(rec, slot, Some(id), "") {
                Ok(e) => {
                    next.insert(name, e);
                }
                Err(e) => dropped.push(format!("{name}: {e}")),
            }
        }
        let next_id = records::fault_ids(maps)?
            .last()
            .map_or(0, |m| (m + 1) % records::key::FAULTS_END);
        let mut set = FaultSet {
            entries: BTreeMap::new(),
            next_id,
        };
        set.commit(maps, next, &[], Op::Adopt)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
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

    /// Makes `next` the live set, all or nothing. In order: the records of new faults under fresh
    /// ids, the manifest of the generation about to go live, that generation's maps, then the
    /// flip (the commit point). An error before the flip leaves the old set running and returns
    /// it; after the flip the change has happened, and what is left (clearing the old
    /// generation, removing replaced records) is tidying, retried by the next change or restart.
    pub(super) fn commit(
        &mut self,
        maps: &mut Maps,
        next: BTreeMap<String, Entry>,
        reset: &[u32],
        op: Op,
    ) -> Result<(), ApiError> {
        self.commit_arming(maps, next, reset, op, false)
    }

    /// As [`commit`](Self::commit); with `arm`, the armed word is written right after the flip,
    /// before the tidying, so a change that re-arms takes effect at its flip and not a dozen
    /// syscalls later. A failure to arm is returned after the tidying: the change happened.
    fn commit_arming(
        &mut self,
        maps: &mut Maps,
        mut next: BTreeMap<String, Entry>,
        reset: &[u32],
        op: Op,
        arm: bool,
    ) -> Result<(), ApiError> {
        let op = op.name();
        let t = Instant::now();
        // The new faults' records go under fresh ids.
        let mut ids: Vec<(String, u32)> = Vec::new();
        for name in next.iter().filter(|(_, e)| e.id.is_none()).map(|(n, _)| n) {
            ids.push((name.clone(), self.next_id));
            self.next_id = (self.next_id + 1) % records::key::FAULTS_END;
        }
        let written: Vec<u32> = ids.iter().map(|(_, id)| *id).collect();
        let large = FaultSpec::large(ids.iter().map(|(n, _)| &next[n].record.spec));
        let store = |maps: &mut Maps| -> Result<(), ApiError> {
            let fresh = crate::par::map(&ids, large, |_, (name, id)| {
                records::encode(&next[name].record)
                    .map(|bytes| (*id, bytes))
                    .map_err(|m| ApiError::BadRequest(format!("{name}: {m}")))
            })
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
            records::put_faults(maps, &fresh).map_err(ApiError::Internal)
        };
        // What can be refused (the image, a record too large) is found before anything is
        // written, except in a large change: there the image is compiled while the records are
        // encoded and stored (100k prefixes over 256 faults: ~7 ms beside ~6). Any error before
        // the flip leaves the old set running and removes the records stored; records no
        // manifest names are never read, and a restart collects any left.
        let undo = |maps: &mut Maps, e: ApiError| {
            for id in &written {
                if let Err(e) = records::remove_fault(maps, *id) {
                    warn!(id, error = %e, "removing the record of a change that failed");
                }
            }
            e
        };
        let (img, stored) = if large {
            rayon::join(|| image(&next), || store(&mut *maps))
        } else {
            let img = image(&next)?;
            (Ok(img), store(&mut *maps))
        };
        let img = match (img, stored) {
            (Ok(img), Ok(())) => img,
            (Err(e), _) => return Err(undo(maps, e.into())),
            (_, Err(e)) => return Err(undo(maps, e)),
        };
        let compiled = t.elapsed();
        for (name, id) in ids {
            if let Some(e) = next.get_mut(&name) {
                e.id = Some(id);
            }
        }
        failpoint::hit(op, "records");
        let manifest: Manifest = next
            .values()
            .filter_map(|e| e.id.map(|id| (e.slot, id)))
            .collect();
        let staged = match maps.active_gen() {
            Ok(g) => 1 - g,
            Err(e) => return Err(undo(maps, ApiError::Internal(e))),
        };
        if let Err(e) = records::put_manifest(maps, staged, &manifest) {
            return Err(undo(maps, ApiError::Internal(e)));
        }
        failpoint::hit(op, "manifest");
        let prepared = match maps.prepare(&img, reset) {
            Ok(p) => p,
            Err(e) => return Err(undo(maps, ApiError::Internal(e))),
        };
        failpoint::hit(op, "filled");
        let filled = t.elapsed();
        if let Err(e) = maps.flip(prepared) {
            return Err(undo(maps, ApiError::Internal(e)));
        }
        // Committed.
        let flipped = t.elapsed();
        self.entries = next;
        let armed = if arm {
            maps.set_ctrl(ctrl::ARMED, 1)
        } else {
            Ok(())
        };
        failpoint::hit(op, "flipped");
        if let Err(e) = maps.clear_inactive() {
            warn!(error = format!("{e:#}"), "clearing the previous generation");
        }
        failpoint::hit(op, "cleared");
        let keep: BTreeSet<u32> = manifest.values().copied().collect();
        if let Err(e) = records::collect_garbage(maps, &keep) {
            warn!(
                error = format!("{e:#}"),
                "removing the records of replaced faults"
            );
        }
        failpoint::hit(op, "collected");
        // Where a change's time goes (`RUST_LOG=injector=debug`): cumulative, from the start.
        debug!(
            op,
            compiled_and_stored_ms = ms(compiled),
            filled_ms = ms(filled),
            flipped_ms = ms(flipped),
            tidied_ms = ms(t.elapsed()),
            "change committed"
        );
        Ok(armed?)
    }

    /// Adds `specs` (all or none). `delay`: `Err(why)` when delay is impossible on this node.
    pub fn add(
        &mut self,
        maps: &mut Maps,
        specs: Vec<FaultSpec>,
        opts: AddOptions<'_>,
        now: u64,
    ) -> Result<Vec<String>, ApiError> {
        self.add_then_arm(maps, specs, opts, now, false)
    }

    /// As [`add`](Self::add), and re-arms (the API's add: after an abort, applying again is a
    /// deliberate act) right at the flip; see [`commit_arming`](Self::commit_arming).
    pub fn add_arming(
        &mut self,
        maps: &mut Maps,
        specs: Vec<FaultSpec>,
        opts: AddOptions<'_>,
        now: u64,
    ) -> Result<Vec<String>, ApiError> {
        self.add_then_arm(maps, specs, opts, now, true)
    }

    fn add_then_arm(
        &mut self,
        maps: &mut Maps,
        specs: Vec<FaultSpec>,
        opts: AddOptions<'_>,
        now: u64,
        arm: bool,
    ) -> Result<Vec<String>, ApiError> {
        if specs.is_empty() {
            return Err(ApiError::BadRequest(
                "faults: the request holds no fault; send one fault or a list".into(),
            ));
        }
        // The work of each fault alone (validation, carving, its entry's sets), spread over the
        // CPUs for a large request; then, in request order, the checks against the other faults
        // and the set. The first fault to fail, in that order, is the error, as one pass would
        // find it.
        let large = FaultSpec::large(&specs);
        let t = Instant::now();
        let alone = crate::par::map_vec(specs, large, |i, spec| {
            let at = format!("faults[{i}].");
            let fault = spec
                .validate(&at)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            if fault.action.hold().is_some()
                && let Err(why) = &opts.delay
            {
                return Err(ApiError::BadRequest(format!("{at}delay: {why}")));
            }
            let name = fault.name.clone();
            let entry = || {
                let carved = if opts.force {
                    Vec::new()
                } else {
                    carve(&fault, opts.protected, &at)?
                };
                let record = Record {
                    spec,
                    start_ns: now,
                    deadline_ns: now + fault.lifetime.as_nanos() as u64,
                    forced: opts.force,
                    carved,
                    resource: None,
                };
                Entry::validated(record, fault, 0, None)
            };
            Ok((name, entry()))
        });
        let validated = t.elapsed();
        let mut new: Vec<Entry> = Vec::new();
        let mut replaced = false;
        for (i, r) in alone.into_iter().enumerate() {
            let at = format!("faults[{i}].");
            let (name, entry) = r?;
            if new.iter().any(|e| e.fault.name == name) {
                return Err(ApiError::BadRequest(format!(
                    "{at}name: '{name}' appears twice in the request; give each fault its own name"
                )));
            }
            if let Some(r) = self
                .entries
                .get(&name)
                .and_then(|e| e.record.resource.as_ref())
            {
                return Err(ApiError::Forbidden(format!(
                    "{at}name: '{name}' is part of NetworkFault {r}; change or delete the resource (`kubectl injector rm`), or pick another name"
                )));
            }
            if self.entries.contains_key(&name) {
                if !opts.replace {
                    return Err(ApiError::Conflict(format!(
                        "{at}name: a fault named '{name}' exists; delete it first, pick another name, or replace=true"
                    )));
                }
                replaced = true;
            }
            new.push(entry?);
        }
        let mut names: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !new.iter().any(|e| &e.fault.name == *n))
            .cloned()
            .collect();
        names.extend(new.iter().map(|e| e.fault.name.clone()));
        let prev: BTreeMap<String, u32> = self
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.slot))
            .collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let slots = assign_slots(&prev, &name_refs)?;
        let added: Vec<String> = new.iter().map(|e| e.fault.name.clone()).collect();
        let mut new: BTreeMap<String, Entry> =
            new.into_iter().map(|e| (e.fault.name.clone(), e)).collect();
        let mut next = BTreeMap::new();
        let mut reset = Vec::new();
        for (name, &slot) in names.iter().zip(&slots) {
            let e = match new.remove(name) {
                Some(mut e) => {
                    e.slot = slot;
                    reset.push(slot);
                    e
                }
                None => {
                    let e = &self.entries[name];
                    Entry {
                        record: e.record.clone(),
                        fault: e.fault.clone(),
                        slot,
                        id: e.id,
                    }
                }
            };
            next.insert(name.clone(), e);
        }
        debug!(
            validated_ms = ms(validated),
            planned_ms = ms(t.elapsed()),
            "change planned"
        );
        let op = if replaced { Op::Replace } else { Op::Add };
        self.commit_arming(maps, next, &reset, op, arm)?;
        Ok(added)
    }

    /// The set without the faults `drop` names.
    pub(super) fn without(&self, drop: impl Fn(&str, &Entry) -> bool) -> BTreeMap<String, Entry> {
        self.entries
            .iter()
            .filter(|(n, e)| !drop(n, e))
            .map(|(n, e)| {
                (
                    n.clone(),
                    Entry {
                        record: e.record.clone(),
                        fault: e.fault.clone(),
                        slot: e.slot,
                        id: e.id,
                    },
                )
            })
            .collect()
    }

    /// Removes one fault.
    pub fn remove(&mut self, maps: &mut Maps, name: &str) -> Result<(), ApiError> {
        if !self.entries.contains_key(name) {
            return Err(ApiError::NotFound(format!(
                "name: no fault named '{name}'; `GET /v1/faults` lists them"
            )));
        }
        if let Some(r) = &self.entries[name].record.resource {
            return Err(ApiError::Forbidden(format!(
                "name: '{name}' is part of NetworkFault {r}; delete the resource (`kubectl injector rm`), or disarm everything here with `injector abort`"
            )));
        }
        let next = self.without(|n, _| n == name);
        self.commit(maps, next, &[], Op::Remove)
    }

    /// Removes every fault of the local API (a NetworkFault's parts are the reconciler's: they
    /// go with their resource, or with a cluster-wide abort).
    pub fn clear(&mut self, maps: &mut Maps) -> Result<usize, ApiError> {
        let next = self.without(|_, e| e.record.resource.is_none());
        let n = self.entries.len() - next.len();
        self.commit(maps, next, &[], Op::Clear)?;
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
        let next = self.without(|_, e| e.record.deadline_ns <= now);
        self.commit(maps, next, &[], Op::Reap)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(ended)
    }
}

pub struct AddOptions<'a> {
    pub force: bool,
    pub replace: bool,
    /// Whether delay is possible here; `Err` says why not (no fq, no EDT stamp).
    pub delay: Result<(), String>,
    pub protected: &'a [Protected],
}

/// A duration in milliseconds, for the logs.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
