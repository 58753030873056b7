//! Serving a router on a listener with limits that a broken or hostile client cannot push past,
//! instead of `axum::serve` (which has none of them): at most [`MAX_CONNECTIONS`] connections per
//! listener at once (more wait in the kernel's accept backlog, so a flood on the TCP listener
//! cannot starve the Unix socket), a request's headers within [`HEADER_TIMEOUT`] (also the most
//! a kept-alive connection may sit idle), its body within [`BODY_TIMEOUT`] and [`BODY_LIMIT`]
//! bytes, HTTP/1 only, and header buffers of [`MAX_HEADER_BYTES`].

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, serve::Listener};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::debug;

/// Connections served at once per listener.
pub const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this; an idle kept-alive connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's body must arrive within this (a slow body is answered 408 and the connection ends).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body (a fault list of ~100k prefixes fits); larger ones get 413.
pub const BODY_LIMIT: usize = 4 << 20;
/// Header bytes a connection may buffer.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Serves `router` on `listener` until the task is dropped; never returns on its own (accept
/// errors are retried by the listener).
pub async fn serve<L: Listener>(mut listener: L, router: Router) {
    let router = router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (io, _) = listener.accept().await;
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let r = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // A client that shuts its write side after the request still gets the answer.
                .half_close(true)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(io), service)
                .await;
            if let Err(e) = r {
                debug!(error = %e, "API connection ended");
            }
        });
    }
}
