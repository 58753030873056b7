//! The reconciler's changes to the fault set: the parts of NetworkFaults made exactly what the
//! resources say, in one transaction, and the cluster-wide abort; the local API's faults untouched.

use std::collections::{BTreeMap, BTreeSet};

use injector_common::ctrl;

use super::{
    carve::carve,
    faultset::{AddOptions, ApiError, Entry, FaultSet, Op},
    records::Record,
};
use crate::{
    fault::{compile::assign_slots, spec::FaultSpec},
    kernel::Maps,
};

/// One part of a resource, for [`FaultSet::sync`].
pub struct Desired {
    /// `namespace/name` of the NetworkFault.
    pub resource: String,
    pub spec: FaultSpec,
}

/// What a [`FaultSet::sync`] changed, and the resources it refused (with why).
#[derive(Debug, Default)]
pub struct Synced {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub refused: Vec<(String, String)>,
}

impl Synced {
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty())
    }
}

impl FaultSet {
    /// Makes the faults owned by resources (records with a `resource`: the reconciler's) exactly
    /// `desired`, in one transaction; the local API's faults stay as they are. Per resource all
    /// or nothing: a resource with a part that is refused (invalid, delay impossible here,
    /// entirely protected) installs no part, and comes back in [`Synced::refused`]. A part equal
    /// to what runs (spec but for the lifetime, deadline within a second, same carving) is left
    /// alone: same record, same slot, its counters go on. Resources in `keep` stay as they run
    /// (their watches are not ready). Nothing is written when nothing changes.
    pub fn sync(
        &mut self,
        maps: &mut Maps,
        desired: Vec<Desired>,
        keep: &BTreeSet<String>,
        opts: AddOptions<'_>,
        now: u64,
    ) -> Result<Synced, ApiError> {
        let mut out = Synced::default();
        let mut wanted: BTreeMap<String, Entry> = BTreeMap::new();
        let mut by_resource: BTreeMap<String, Vec<FaultSpec>> = BTreeMap::new();
        for d in desired {
            by_resource.entry(d.resource).or_default().push(d.spec);
        }
        'resources: for (resource, specs) in by_resource {
            let mut parts = Vec::new();
            for spec in specs {
                match self.desired_entry(&resource, spec, &opts, now) {
                    Ok(e) => parts.push(e),
                    Err(e) => {
                        out.refused.push((resource, e.to_string()));
                        continue 'resources;
                    }
                }
            }
            wanted.extend(parts.into_iter().map(|e| (e.fault.name.clone(), e)));
        }
        let mut next = self.without(|_, e| {
            e.record
                .resource
                .as_ref()
                .is_some_and(|r| !keep.contains(r))
        });
        let unchanged =
            wanted.len() == self.owned_count(keep) && wanted.values().all(|e| e.id.is_some());
        if unchanged {
            return Ok(out);
        }
        for (name, e) in &wanted {
            match self.entries.get(name) {
                Some(old) if e.id.is_some() && old.id == e.id => {}
                Some(_) => out.replaced.push(name.clone()),
                None => out.added.push(name.clone()),
            }
        }
        out.removed = self
            .entries
            .iter()
            .filter(|(n, e)| {
                e.record
                    .resource
                    .as_ref()
                    .is_some_and(|r| !keep.contains(r))
                    && !wanted.contains_key(*n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        next.extend(wanted);
        let prev: BTreeMap<String, u32> = self
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.slot))
            .collect();
        let names: Vec<&str> = next.keys().map(String::as_str).collect();
        let slots = assign_slots(&prev, &names)?;
        // A new part starts from zero; a replaced one (its pods changed) keeps its slot and
        // counts on, so a resource's counters do not restart whenever a selected pod comes or goes.
        let mut reset = Vec::new();
        for ((name, e), slot) in next.iter_mut().zip(slots) {
            if e.id.is_none() && !self.entries.contains_key(name) {
                reset.push(slot);
            }
            e.slot = slot;
        }
        self.commit(maps, next, &reset, Op::Sync)?;
        Ok(out)
    }

    /// How many faults resources own, outside `keep`.
    fn owned_count(&self, keep: &BTreeSet<String>) -> usize {
        self.entries
            .values()
            .filter(|e| {
                e.record
                    .resource
                    .as_ref()
                    .is_some_and(|r| !keep.contains(r))
            })
            .count()
    }

    /// The entry a desired part becomes: the running one when nothing but the lifetime's
    /// rounding differs, else a new one (validated, checked for delay, carved).
    fn desired_entry(
        &self,
        resource: &str,
        spec: FaultSpec,
        opts: &AddOptions<'_>,
        now: u64,
    ) -> Result<Entry, ApiError> {
        let fault = spec
            .validate("")
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if fault.action.hold().is_some()
            && let Err(why) = &opts.delay
        {
            return Err(ApiError::BadRequest(format!("delay: {why}")));
        }
        let carved = carve(&fault, opts.protected, "")?;
        let deadline_ns = now + fault.lifetime.as_nanos() as u64;
        if let Some(old) = self.entries.get(&fault.name)
            && old.record.resource.is_none()
        {
            return Err(ApiError::Conflict(format!(
                "name: the node's local API holds a fault named '{}'; remove it there (`injector fault rm`)",
                fault.name
            )));
        }
        if let Some(old) = self.entries.get(&fault.name) {
            let r = &old.record;
            let same = r.resource.as_deref() == Some(resource)
                && r.carved == carved
                && !r.forced
                && r.deadline_ns.abs_diff(deadline_ns) < 1_000_000_000
                && FaultSpec {
                    lifetime: r.spec.lifetime.clone(),
                    ..spec.clone()
                } == r.spec;
            if same {
                return Ok(Entry {
                    record: r.clone(),
                    fault: old.fault.clone(),
                    slot: old.slot,
                    id: old.id,
                });
            }
        }
        let record = Record {
            spec,
            start_ns: now,
            deadline_ns,
            forced: false,
            carved,
            resource: Some(resource.to_string()),
        };
        Entry::new(record, 0, None, "")
    }

    /// A cluster-wide abort: removes the faults of the local API started at or before `t`
    /// (monotonic ns) and the parts of the resources `aborted` names. When there are any, every
    /// fault is first disarmed with the one-word abort (at once, before the set is rewritten),
    /// and armed again once they are gone. Returns the names removed.
    pub fn abort(
        &mut self,
        maps: &mut Maps,
        t: u64,
        aborted: &BTreeSet<String>,
    ) -> Result<Vec<String>, ApiError> {
        let gone = |e: &Entry| match &e.record.resource {
            None => e.record.start_ns <= t,
            Some(r) => aborted.contains(r),
        };
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| gone(e))
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return Ok(names);
        }
        maps.set_ctrl(ctrl::ARMED, 0)?;
        let next = self.without(|_, e| gone(e));
        self.commit(maps, next, &[], Op::Clear)?;
        maps.set_ctrl(ctrl::ARMED, 1)?;
        Ok(names)
    }
}
