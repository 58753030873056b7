//! The Kubernetes client the daemon and the kubectl plugin use: kube's own stack (TLS from the
//! config, connect/read/write timeouts, base URI, auth, extra headers), built here only to set
//! `TCP_NODELAY` on its connections, which kube's `Client::try_from` leaves off.
//!
//! Why: a new connection's first request follows the TLS Finished in a second small write, and
//! with Nagle on it waits for the peer's ACK of the first, which the peer delays (~40 ms on
//! Linux). The daemon opens a connection for every new watch, so a NetworkFault with new
//! selectors waited 42 ms longer on each node (strace of a daemon: request written at +8 ms,
//! answer read at +50 ms; `cargo xtask bench --only cluster`). Go's net package, hence kubectl
//! and client-go, sets `TCP_NODELAY` on every TCP connection.

use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioExecutor};
use kube::{
    Client, Config,
    client::{Body, ConfigExt as _, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// A client for `config`, as `Client::try_from(config)` makes it (its layers in its order; its
/// tracing spans left out), with `TCP_NODELAY`. One thing kube's own keeps and this does not:
/// `Client::valid_until`, the expiry of an exec plugin's client certificate (kube derives it in
/// a crate-private function); the certificate itself is used, and nothing here reads the expiry.
pub fn build(config: Config) -> kube::Result<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut timed = hyper_timeout::TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(timed);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}
