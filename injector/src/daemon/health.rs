//! Readiness, as /readyz and `status.ready` report it: start-up done, every selected interface
//! attached without error, every map pinned, every API listener serving; else the reasons.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
};

use injector_common::maps;

use super::core::Core;

/// Which API listeners are serving: each server task holds a [`Serving`] guard while it runs.
#[derive(Clone, Default)]
pub struct Listeners(Arc<Mutex<BTreeMap<String, bool>>>);

/// Marks its listener as stopped when dropped (the task ended, failed or panicked).
pub struct Serving {
    what: String,
    of: Listeners,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.of.set(&self.what, false);
    }
}

impl Listeners {
    fn set(&self, what: &str, up: bool) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(what.to_string(), up);
    }

    /// Records `what` (e.g. `the API on /run/injector/injector.sock`) as serving until the
    /// returned guard is dropped.
    pub fn serving(&self, what: String) -> Serving {
        self.set(&what, true);
        Serving {
            what,
            of: self.clone(),
        }
    }

    fn stopped(&self) -> Vec<String> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|(_, up)| !**up)
            .map(|(w, _)| w.clone())
            .collect()
    }
}

/// Why the daemon is not ready; empty when it is.
pub fn not_ready(c: &Core, listeners: &Listeners) -> Vec<String> {
    let mut why = Vec::new();
    if !c.ready {
        why.push("starting: programs and interfaces not set up yet".to_string());
    }
    for (name, st) in &c.ifaces {
        if let Some(e) = &st.error {
            why.push(format!("interface {name}: not attached: {e}"));
        }
    }
    why.extend(missing_pins(Path::new(&c.bpffs)));
    why.extend(
        listeners
            .stopped()
            .into_iter()
            .map(|w| format!("{w}: stopped serving")),
    );
    why
}

fn missing_pins(bpffs: &Path) -> Vec<String> {
    maps::ALL
        .iter()
        .map(|m| bpffs.join(m))
        .filter(|p| !p.exists())
        .map(|p| format!("map pin {} is missing", p.display()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_listener_is_a_reason() {
        let l = Listeners::default();
        let g = l.serving("the API on x.sock".into());
        assert!(l.stopped().is_empty());
        drop(g);
        assert_eq!(l.stopped(), ["the API on x.sock"]);
    }

    #[test]
    fn pins_are_looked_for_in_the_bpffs_directory() {
        let missing = missing_pins(Path::new("/nonexistent/injector"));
        assert_eq!(missing.len(), maps::ALL.len());
        assert!(missing[0].starts_with("map pin /nonexistent/injector/"));
    }
}
