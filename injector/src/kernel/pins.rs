//! A previous instance's pinned maps, checked against this build's before they are adopted. A
//! daemon that died (or was killed for an upgrade) leaves its maps pinned so the next one adopts
//! its faults; if the next one is another version whose maps have another layout (a fault's
//! configuration grew, say), aya would reuse the pins as they are and the verifier would refuse
//! the programs with an error about map value bounds that names neither the cause nor the fix.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::maps::MapData;
use injector_common::maps;

/// A map whose pin does not match this build: (name, what the pin has, what the build wants).
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub map: &'static str,
    pub pinned: (u32, u32, u32),
    pub built: (u32, u32, u32),
}

/// The pinned maps under `dir` whose key size, value size or number of entries differ from the
/// definitions in `object` (our eBPF ELF); none pinned, none returned.
pub fn mismatches(dir: &Path, object: &[u8]) -> Result<Vec<Mismatch>> {
    let obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let mut out = Vec::new();
    for &name in maps::ALL.iter() {
        let pin = dir.join(name);
        if !pin.exists() {
            continue;
        }
        let Some(def) = obj.maps.get(name) else {
            continue;
        };
        let info = MapData::from_pin(&pin)
            .and_then(|m| m.info())
            .with_context(|| format!("reading the pinned map {}", pin.display()))?;
        let pinned = (info.key_size(), info.value_size(), info.max_entries());
        let built = (def.key_size(), def.value_size(), def.max_entries());
        if pinned != built {
            out.push(Mismatch {
                map: name,
                pinned,
                built,
            });
        }
    }
    Ok(out)
}

/// Refuses to adopt maps pinned under `dir` by a build with another layout, naming each map and
/// the way out.
pub fn check(dir: &Path, object: &[u8]) -> Result<()> {
    let bad = mismatches(dir, object)?;
    if bad.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = bad
        .iter()
        .map(|m| {
            format!(
                "{} (pinned: key {} B, value {} B, {} entries; this build: key {} B, value {} B, \
                 {} entries)",
                m.map, m.pinned.0, m.pinned.1, m.pinned.2, m.built.0, m.built.1, m.built.2
            )
        })
        .collect();
    bail!(
        "--bpffs {}: the maps pinned there were made by another version of injector, with another \
         layout: {}. Its faults cannot be adopted. Stop that version cleanly with its own binary \
         (a clean stop removes its pins and programs), or remove its pins: `rm -r {}` (its \
         programs then detach where they were TCX links, and its faults lapse at their heartbeat \
         grace anyway); then start this one",
        dir.display(),
        list.join(", "),
        dir.display()
    )
}
