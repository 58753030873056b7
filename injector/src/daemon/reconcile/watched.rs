//! One watch of the API server kept as a local store (kube-runtime's watcher and reflector
//! store), with a flag for "listed at least once", poking the reconciler on every event.

use std::{
    fmt::Debug,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::StreamExt as _;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::Notify, task::AbortHandle};

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
    /// also errors (the watcher retries with backoff; the store keeps what it had).
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
            let mut events = watcher(api, cfg).default_backoff().boxed();
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
