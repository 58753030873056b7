//! One watch of the API server kept as a local store (kube-runtime's watcher and reflector
//! store), with a flag for "listed at least once", poking the reconciler on every event.

use std::{
    fmt::Debug,
    hash::{BuildHasher as _, Hash},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt as _;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{Store, store::Writer},
        utils::{Backoff, ResetTimerBackoff},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::Notify, task::AbortHandle};

/// How a failed watch retries: 250 ms doubling to at most 4 s, each wait jittered to 50-100%
/// (daemons on every node retry apart after an outage), back to 250 ms after 60 s without an
/// error. kube-runtime's default doubles to 30 s: a daemon whose watch had failed a few times
/// could then hear of a cluster abort or a deleted NetworkFault half a minute late. The kernel
/// deadline stays the safety net either way; at most one relist per watch per 2-4 s per node.
struct Retry {
    next: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(250);
    const MOST: Duration = Duration::from_secs(4);

    fn backoff() -> ResetTimerBackoff<Retry> {
        ResetTimerBackoff::new(Retry { next: Self::FIRST }, Duration::from_secs(60))
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MOST);
        // 50-100% of d, from the standard library's randomly keyed hasher.
        let r = std::collections::hash_map::RandomState::new().hash_one(0u8) % 1000;
        Some(d / 2 + d * r as u32 / 2000)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A watch and its store; the watch task ends when this is dropped.
pub struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    ready: Arc<AtomicBool>,
    task: AbortHandle,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// Watches `api` with `cfg` (label and field selectors); `poke` is notified on every event,
    /// also errors (the watcher retries with [`Retry`]'s backoff; the store keeps what it had).
    pub fn start(api: Api<K>, cfg: watcher::Config, poke: Arc<Notify>) -> Self {
        Self::start_with(api, cfg, poke, K::DynamicType::default())
    }
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// As [`Watched::start`], for a dynamic type (e.g. EndpointSlices of the version served).
    pub fn start_with(
        api: Api<K>,
        cfg: watcher::Config,
        poke: Arc<Notify>,
        dyntype: K::DynamicType,
    ) -> Self {
        let mut writer = Writer::new(dyntype);
        let store = writer.as_reader();
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, cfg).backoff(Retry::backoff()).boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        writer.apply_watcher_event(&ev);
                        if matches!(ev, watcher::Event::InitDone) {
                            flag.store(true, Ordering::Release);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "watch (retrying)"),
                }
                poke.notify_one();
            }
        })
        .abort_handle();
        Watched { store, ready, task }
    }

    /// Listed completely at least once (later outages keep the last state).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The objects, cloned.
    pub fn objects(&self) -> Vec<K> {
        self.store.state().iter().map(|o| (**o).clone()).collect()
    }
}

impl<K: Resource + 'static> Drop for Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_to_four_seconds_jittered_and_start_over_on_reset() {
        let mut r = Retry { next: Retry::FIRST };
        let waits: Vec<Duration> = (0..8).map(|_| r.next().unwrap()).collect();
        let ms = |i: usize| waits[i].as_millis();
        assert!((125..=250).contains(&ms(0)), "{waits:?}");
        assert!((250..=500).contains(&ms(1)), "{waits:?}");
        assert!(
            waits[4..]
                .iter()
                .all(|d| (2000..=4000).contains(&d.as_millis())),
            "{waits:?}"
        );
        r.reset();
        assert!(r.next().unwrap() <= Retry::FIRST);
    }
}
