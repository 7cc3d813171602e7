//! Keep-alive HTTP/1.1 connections to instances: a small stack of idle connections per
//! endpoint, found by the address of the instance's `Arc<Endpoint>` (no key to hash or
//! compare on the request path), each connection driven by a task of its own.
//!
//! A request is only ever sent again when hyper hands it back unsent (a stale idle
//! connection); a request whose bytes may have reached the instance is never resent.

use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use autodeploy_core::Endpoint;
use axum::body::Body;
use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle connections and the pools of released instances are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How long a connection whose response has ended may take to be ready for the next request
/// (typically: still sending a request body the instance answered early) before it is
/// closed instead of kept.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pools of every endpoint in use, keyed by the address of its `Arc<Endpoint>` (held by
/// the pool, so the address cannot be reused while the entry exists).
type Pools = Mutex<HashMap<usize, Arc<EndpointPool>, BuildHasherDefault<AddressHasher>>>;

/// The gateway's connections to instances.
#[derive(Default)]
pub(crate) struct Upstream {
    pools: Arc<Pools>,
    sweeping: AtomicBool,
}

/// The idle connections to one endpoint.
pub(crate) struct EndpointPool {
    endpoint: Arc<Endpoint>,
    /// The `Host` header the instance gets (its own address).
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    /// The HTTP/2 connection of an `h2c` deployment, opened on first use and shared by every
    /// request (one connection multiplexes them); replaced when it closes. The async lock
    /// makes concurrent first requests wait for one handshake instead of opening many.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Why an exchange with an instance failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect error")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("handshake failed")]
    Handshake(#[source] hyper::Error),
    #[error("request failed")]
    Send(#[source] hyper::Error),
}

impl Upstream {
    /// The pool of `endpoint`: one lock and one multiply-shift hash of an address.
    pub(crate) fn pool(&self, endpoint: &Arc<Endpoint>) -> Arc<EndpointPool> {
        let key = Arc::as_ptr(endpoint) as usize;
        let mut pools = self.pools.lock();
        if let Some(pool) = pools.get(&key) {
            return pool.clone();
        }
        let pool = Arc::new(EndpointPool::new(endpoint.clone()));
        pools.insert(key, pool.clone());
        drop(pools);
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.pools)));
        }
        pool
    }
}

/// Every [`SWEEP_EVERY`]: closes idle connections past [`IDLE_TIMEOUT`], and forgets the
/// pools of endpoints no instance has any more. Ends with the gateway.
async fn sweep(pools: Weak<Pools>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pools) = pools.upgrade() else {
            return;
        };
        let now = Instant::now();
        pools.lock().retain(|_, pool| {
            // Only this pool holds the endpoint: its instance is gone.
            if Arc::strong_count(&pool.endpoint) == 1 {
                pool.idle.lock().clear();
                return false;
            }
            pool.idle.lock().retain(|idle| {
                now.duration_since(idle.since) < IDLE_TIMEOUT && !idle.sender.is_closed()
            });
            true
        });
    }
}

impl EndpointPool {
    fn new(endpoint: Arc<Endpoint>) -> Self {
        let mut host = String::with_capacity(endpoint.host.len() + 8);
        if endpoint.host.contains(':') {
            host.push('[');
            host.push_str(&endpoint.host);
            host.push(']');
        } else {
            host.push_str(&endpoint.host);
        }
        // As a URI's authority would give it: no port when it is HTTP's default.
        if endpoint.port != 80 {
            host.push(':');
            host.push_str(itoa::Buffer::new().format(endpoint.port));
        }
        let host =
            HeaderValue::try_from(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self {
            endpoint,
            host,
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
        }
    }

    /// The `Host` header value for this endpoint.
    pub(crate) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `req` on an idle connection, or on a new one when none is left. Returns the
    /// response and the connection, to be given back with [`EndpointPool::put`] once the
    /// response body has ended.
    pub(crate) async fn send(
        &self,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, SendRequest<Body>), UpstreamError> {
        while let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut err) => match err.take_message() {
                    // Never written: the connection was stale, try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Send(err.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        match sender.try_send_request(req).await {
            Ok(response) => Ok((response, sender)),
            Err(err) => Err(UpstreamError::Send(err.into_error())),
        }
    }

    /// The most recently used idle connection that is still open, if any.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() >= IDLE_TIMEOUT {
                // Those below are older still.
                idle.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Sends `req` (its URI absolute) over the endpoint's HTTP/2 connection, opening it if
    /// there is none or it has closed. A request hyper hands back unsent (the connection
    /// closed before it was written) is sent once more on a new connection.
    pub(crate) async fn send_h2(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.h2_sender().await?;
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response),
            Err(mut err) => match err.take_message() {
                Some(unsent) => {
                    let mut sender = self.h2_sender().await?;
                    sender
                        .send_request(unsent)
                        .await
                        .map_err(UpstreamError::Send)
                }
                None => Err(UpstreamError::Send(err.into_error())),
            },
        }
    }

    /// A handle on the open HTTP/2 connection, after a new handshake if needed.
    async fn h2_sender(&self) -> Result<http2::SendRequest<Body>, UpstreamError> {
        let mut slot = self.h2.lock().await;
        if let Some(sender) = slot.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let stream = self.open().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "upstream HTTP/2 connection ended");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// A new TCP connection to the endpoint, without Nagle's delay.
    async fn open(&self) -> Result<tokio::net::TcpStream, UpstreamError> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(stream)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let stream = self.open().await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(%err, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Gives back a connection whose response body has ended: kept idle once it can take the
    /// next request, dropped (closed) if it cannot.
    pub(crate) fn put(self: Arc<Self>, mut sender: SendRequest<Body>) {
        if sender.is_ready() {
            self.keep(sender);
        } else if !sender.is_closed() {
            // Its connection task has not yet gone back to waiting for a request (it may
            // still be sending the request body). Kept if it gets there in time; dropped
            // (closed) otherwise, so no waiter lingers on a connection that never settles:
            // hyper can leave a client connection whose response ended before its request
            // body was sent neither ready nor closed (hyperium/hyper#4176, open).
            tokio::spawn(async move {
                let ready =
                    tokio::time::timeout(SETTLE_TIMEOUT, poll_fn(|cx| sender.poll_ready(cx)));
                if let Ok(Ok(())) = ready.await {
                    self.keep(sender);
                }
            });
        }
    }

    fn keep(&self, sender: SendRequest<Body>) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A hasher for addresses: one multiply (Fibonacci hashing); the low bits of an address are
/// alignment, the high bits of the product are well mixed.
#[derive(Default)]
pub(crate) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_what_a_uri_authority_would_give() {
        for (host, port, expected) in [
            ("127.0.0.1", 8080, "127.0.0.1:8080"),
            ("127.0.0.1", 80, "127.0.0.1"),
            ("::1", 65535, "[::1]:65535"),
            ("gpu-7", 9, "gpu-7:9"),
        ] {
            let pool = EndpointPool::new(Arc::new(Endpoint::new(host, port)));
            assert_eq!(pool.host(), expected);
        }
    }
}
