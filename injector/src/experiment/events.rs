//! The runner's one event channel: probe samples, the faults' counters read once a second, the
//! restore after an abort, and Ctrl-C, each from its own thread.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    backend::{Backend, Counts, NodeRemoved},
    probe::Sample,
};

pub enum Event {
    Sample(Sample),
    Counters(Instant, BTreeMap<String, Counts>),
    /// After an abort: when the breaching probe passed again (a fresh run after the removal).
    Restored(Option<Instant>),
    /// After the removal: per node, when it no longer held a fault of the experiment.
    NodesRemoved(Vec<NodeRemoved>),
    Interrupt,
}

/// Ctrl-C becomes an event (every time it is pressed).
pub fn on_ctrl_c(tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        while rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            if tx.send(Event::Interrupt).is_err() {
                return;
            }
        }
    });
}

/// Reads the faults' counters from every node about once a second, until `stop`.
pub fn poll_counters(
    d: Arc<dyn Backend>,
    names: Vec<String>,
    tx: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let c = d.counters(&names);
            if tx.send(Event::Counters(Instant::now(), c)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
