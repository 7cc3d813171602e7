//! Keep-alive HTTP/1.1 connections to instances: a small stack of idle connections per
//! endpoint, found by the address of the instance's `Arc<Endpoint>` (no key to hash or
//! compare on the request path), each connection driven by a task of its own.
//!
//! A request is only ever sent again when hyper hands it back unsent (a stale idle
//! connection); a request whose bytes may have reached the instance is never resent.
//!
//! An `https` endpoint gets the same pools over TLS ([`crate::tls`]): the first connection
//! offers `h2` and `http/1.1` by ALPN and the instance's choice is kept for the endpoint;
//! an upgrade (WebSocket) always asks for `http/1.1`.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use autodeploy_core::{Endpoint, Scheme};
use axum::body::Body;
use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls::{ALPN_H2, UpstreamTls};

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

/// How many idle stacks each endpoint keeps: one per serving thread (see
/// [`set_thread_slots`]).
static THREAD_SLOTS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's idle stack, in the per-core model; 0 otherwise.
    static THREAD_SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Per-core serving (one current-thread runtime per thread): gives each endpoint `slots`
/// stacks of idle connections, one per serving thread, so that a request is only sent on a
/// connection whose task runs on its own thread (a connection of another runtime would wake
/// that thread on every request). Call before the gateway is built; each serving thread
/// then calls [`set_thread_slot`] with its index.
pub fn set_thread_slots(slots: usize) {
    THREAD_SLOTS.store(slots.max(1), Ordering::Relaxed);
}

/// Per-core serving: the calling thread lends and keeps idle connections from stack `slot`
/// (`0..slots` of [`set_thread_slots`]).
pub fn set_thread_slot(slot: usize) {
    THREAD_SLOT.set(slot);
}

/// The gateway's connections to instances.
pub(crate) struct Upstream {
    pools: Arc<Pools>,
    sweeping: AtomicBool,
    tls: UpstreamTls,
}

/// A connection to an instance: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What a new TLS connection offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// `h2` and `http/1.1`.
    Either,
    /// `http/1.1` only.
    Http11,
}

/// The idle connections to one endpoint.
pub(crate) struct EndpointPool {
    endpoint: Arc<Endpoint>,
    /// The `Host` header the instance gets (its own address).
    host: HeaderValue,
    /// One stack per serving thread in the per-core model (see [`set_thread_slots`]), so
    /// a thread only lends connections whose tasks run on its own runtime; one otherwise.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// The HTTP/2 connection of an `h2c` deployment, opened on first use and shared by every
    /// request (one connection multiplexes them); replaced when it closes. The async lock
    /// makes concurrent first requests wait for one handshake instead of opening many.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
    /// TLS settings for an `https` endpoint.
    tls: UpstreamTls,
    /// For an `https` endpoint, whether the instance chose HTTP/2 by ALPN (`None` until the
    /// first connection).
    alpn_h2: Mutex<Option<bool>>,
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
    #[error("TLS handshake with {0} failed")]
    Tls(String, #[source] std::io::Error),
    #[error("{0} did not agree to HTTP/2 by ALPN")]
    NoH2(String),
}

impl Upstream {
    /// No connections yet; `https` endpoints are reached with `tls`.
    pub(crate) fn new(tls: UpstreamTls) -> Self {
        Self {
            pools: Arc::default(),
            sweeping: AtomicBool::new(false),
            tls,
        }
    }

    /// The pool of `endpoint`: one lock and one multiply-shift hash of an address.
    pub(crate) fn pool(&self, endpoint: &Arc<Endpoint>) -> Arc<EndpointPool> {
        let key = Arc::as_ptr(endpoint) as usize;
        let mut pools = self.pools.lock();
        if let Some(pool) = pools.get(&key) {
            return pool.clone();
        }
        let pool = Arc::new(EndpointPool::new(endpoint.clone(), self.tls.clone()));
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
                for idle in &pool.idle {
                    idle.lock().clear();
                }
                return false;
            }
            for idle in &pool.idle {
                idle.lock().retain(|idle| {
                    now.duration_since(idle.since) < IDLE_TIMEOUT && !idle.sender.is_closed()
                });
            }
            true
        });
    }
}

impl EndpointPool {
    fn new(endpoint: Arc<Endpoint>, tls: UpstreamTls) -> Self {
        let mut host = String::with_capacity(endpoint.host.len() + 8);
        if endpoint.host.contains(':') {
            host.push('[');
            host.push_str(&endpoint.host);
            host.push(']');
        } else {
            host.push_str(&endpoint.host);
        }
        // As a URI's authority would give it: no port when it is the scheme's default.
        if endpoint.port != endpoint.scheme.default_port() {
            host.push(':');
            host.push_str(itoa::Buffer::new().format(endpoint.port));
        }
        let host =
            HeaderValue::try_from(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self {
            endpoint,
            host,
            idle: (0..THREAD_SLOTS.load(Ordering::Relaxed).max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            h2: tokio::sync::Mutex::new(None),
            tls,
            alpn_h2: Mutex::new(None),
        }
    }

    /// `"http"` or `"https"`, for an absolute URI.
    pub(crate) fn scheme(&self) -> &'static str {
        self.endpoint.scheme.as_str()
    }

    /// Whether requests to this endpoint go over HTTP/2 because the instance chose it by
    /// ALPN: never for plain `http` (there `h2c` is the deployment's setting); for `https`,
    /// what the first connection negotiated (opening it now if there is none yet, and
    /// keeping it for the request that follows).
    pub(crate) async fn negotiated_h2(&self) -> Result<bool, UpstreamError> {
        if self.endpoint.scheme == Scheme::Http {
            return Ok(false);
        }
        if let Some(h2) = *self.alpn_h2.lock() {
            return Ok(h2);
        }
        let mut slot = self.h2.lock().await;
        if let Some(h2) = *self.alpn_h2.lock() {
            return Ok(h2);
        }
        let (stream, h2) = self.open(Offer::Either).await?;
        if h2 {
            *slot = Some(self.h2_handshake(stream).await?);
        } else {
            let sender = self.h1_handshake(stream).await?;
            self.keep(sender);
        }
        *self.alpn_h2.lock() = Some(h2);
        Ok(h2)
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
        let mut idle = self.idle().lock();
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
        let (stream, h2) = self.open(Offer::Either).await?;
        if self.endpoint.scheme == Scheme::Https && !h2 {
            return Err(UpstreamError::NoH2(self.endpoint.to_string()));
        }
        let sender = self.h2_handshake(stream).await?;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn h2_handshake(
        &self,
        stream: Box<dyn Io>,
    ) -> Result<http2::SendRequest<Body>, UpstreamError> {
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
        Ok(sender)
    }

    /// A new connection to the endpoint, without Nagle's delay: TCP, and TLS over it for
    /// `https` (certificate checked against the host) offering `offer`. Returns whether
    /// ALPN chose HTTP/2.
    async fn open(&self, offer: Offer) -> Result<(Box<dyn Io>, bool), UpstreamError> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        if self.endpoint.scheme == Scheme::Http {
            return Ok((Box::new(stream), false));
        }
        let config = match offer {
            Offer::Either => self.tls.either.clone(),
            Offer::Http11 => self.tls.http11.clone(),
        };
        let tls_error = |e| UpstreamError::Tls(self.endpoint.to_string(), e);
        let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
            .map_err(|e| tls_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, stream),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(tls_error)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        Ok((Box::new(tls), h2))
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        // An HTTP/1.1 connection asks for nothing else, even of an instance that prefers h2.
        let (stream, _) = self.open(Offer::Http11).await?;
        self.h1_handshake(stream).await
    }

    async fn h1_handshake(&self, stream: Box<dyn Io>) -> Result<SendRequest<Body>, UpstreamError> {
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

    /// This thread's idle stack.
    fn idle(&self) -> &Mutex<Vec<Idle>> {
        let slot = THREAD_SLOT.get();
        self.idle.get(slot).unwrap_or(&self.idle[0])
    }

    fn keep(&self, sender: SendRequest<Body>) {
        let mut idle = self.idle().lock();
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
            let tls = UpstreamTls::new(None).unwrap();
            let pool = EndpointPool::new(Arc::new(Endpoint::new(host, port)), tls);
            assert_eq!(pool.host(), expected);
        }
        let tls = UpstreamTls::new(None).unwrap();
        let https = EndpointPool::new(
            Arc::new(Endpoint::https("abc-8080.proxy.runpod.net", 443)),
            tls.clone(),
        );
        assert_eq!(https.host(), "abc-8080.proxy.runpod.net");
        assert_eq!(https.scheme(), "https");
        let https = EndpointPool::new(Arc::new(Endpoint::https("tw-07.sgw.glows.ai", 20017)), tls);
        assert_eq!(https.host(), "tw-07.sgw.glows.ai:20017");
    }
}
