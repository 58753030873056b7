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
//!
//! And to speak HTTP/2 where the server offers it (ALPN), as client-go does: kube's connector
//! offers HTTP/1.1 only, where a watch holds its connection for as long as it runs, so every new
//! watch (a NetworkFault with new selectors, on every node) first opened a connection and made a
//! TLS handshake. Over HTTP/2 the lists and watches of one daemon are streams of one connection.

use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::connect::HttpConnector,
    rt::{TokioExecutor, TokioTimer},
};
use kube::{
    Client, Config,
    client::{Body, ConfigExt as _, RustlsTlsError, retry::RetryPolicy},
};
use rustls::pki_types::ServerName;
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// A client for `config`, as `Client::try_from(config)` makes it (its layers in its order; its
/// tracing spans left out), with `TCP_NODELAY`. One thing kube's own keeps and this does not:
/// `Client::valid_until`, the expiry of an exec plugin's client certificate (kube derives it in
/// a crate-private function); the certificate itself is used, and nothing here reads the expiry.
pub fn build(config: Config) -> kube::Result<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = https_connector(&config, http)?;
    let mut timed = hyper_timeout::TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            // Every watch rides one HTTP/2 connection: one that died silently (a NAT or load
            // balancer that forgot it) would stall them all, the abort's too, until the read
            // timeout. A ping after 30 s without a frame from the server, given up after 15 s,
            // as client-go's ReadIdleTimeout and PingTimeout; the watches then retry anew.
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(15))
            .build(timed);
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

/// `config.rustls_https_connector_with_connector(http)` (kube's TLS settings: client identity,
/// CA, the server name override), offering HTTP/2 before HTTP/1.1.
fn https_connector(
    config: &Config,
    http: HttpConnector,
) -> kube::Result<HttpsConnector<HttpConnector>> {
    let mut builder = HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = ServerName::try_from(name.clone())
            .map_err(|e| kube::Error::RustlsTls(RustlsTlsError::InvalidServerName(e)))?;
        builder = builder.with_server_name_resolver(FixedServerNameResolver::new(name));
    }
    Ok(builder.enable_all_versions().wrap_connector(http))
}
