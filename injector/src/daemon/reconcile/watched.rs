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
    Api, Resource, ResourceExt as _,
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

/// How a watch's events reach the reconciler: a notification, and whether it may act at once.
#[derive(Default)]
pub struct Poke {
    notify: Notify,
    prompt: AtomicBool,
}

impl Poke {
    /// Something changed that may come with more (a new pod, then its EndpointSlice): the
    /// reconciler waits a moment for the rest of the burst.
    fn event(&self) {
        self.notify.notify_one();
    }

    /// Something changed that has nothing more to wait for: a watch's list is complete (it came
    /// in one response), or a NetworkFault or the InjectorControl changed (one object each).
    fn prompt(&self) {
        self.prompt.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits for a poke; true when one since the last wait was prompt.
    pub async fn wait(&self) -> bool {
        self.notify.notified().await;
        self.prompt.swap(false, Ordering::AcqRel)
    }
}

/// Which of a watch's events are prompt (see [`Poke`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Every event: single objects the reconciler acts on (NetworkFaults, the InjectorControl).
    Prompt,
    /// Only the end of a list: selected objects, which change in bursts.
    Batched,
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
    /// Watches `api` with `cfg` (label and field selectors); `poke` is poked on every event, as
    /// `pace` says, also on errors (the watcher retries with [`Retry`]'s backoff; the store
    /// keeps what it had).
    pub fn start(api: Api<K>, cfg: watcher::Config, poke: Arc<Poke>, pace: Pace) -> Self {
        Self::start_with(api, cfg, poke, pace, K::DynamicType::default())
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
        poke: Arc<Poke>,
        pace: Pace,
        dyntype: K::DynamicType,
    ) -> Self {
        let what = format!(
            "{} {} {}",
            K::kind(&dyntype),
            api.resource_url(),
            cfg.label_selector.as_deref().unwrap_or("")
        );
        tracing::debug!(watch = %what, "watching");
        let mut writer = Writer::new(dyntype);
        let store = writer.as_reader();
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            // managedFields are read by nothing here and are often the larger part of an object
            // (a pod's, written by the kubelet and controllers): not kept in the stores.
            let mut events = watcher(api, cfg)
                .modify(|o| o.managed_fields_mut().clear())
                .backoff(Retry::backoff())
                .boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        writer.apply_watcher_event(&ev);
                        let listed = matches!(ev, watcher::Event::InitDone);
                        if listed && !flag.swap(true, Ordering::AcqRel) {
                            tracing::debug!(watch = %what, after = ?started.elapsed(), "listed");
                        }
                        if listed || pace == Pace::Prompt {
                            poke.prompt();
                            continue;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "watch (retrying)"),
                }
                poke.event();
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
    fn a_poke_is_prompt_when_any_poke_since_the_last_wait_was() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let p = Poke::default();
        rt.block_on(async {
            p.event();
            assert!(!p.wait().await, "an event alone waits for its burst");
            p.prompt();
            assert!(p.wait().await);
            // Taken together: one wake-up, prompt because one of them was.
            p.event();
            p.prompt();
            p.event();
            assert!(p.wait().await);
            p.event();
            assert!(!p.wait().await, "the prompt was taken by the last wait");
        });
    }

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
