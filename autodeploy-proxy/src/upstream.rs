//! Keep-alive HTTP/1.1 connections to instances: a small stack of idle connections per
//! endpoint, found by the address of the instance's `Arc<Endpoint>` (no key to hash or
//! compare on the request path).
//!
//! A connection has no task of its own: whoever uses it drives it. While a request waits for
//! its response head, the request's future polls the connection; while the response body
//! streams, the body does (see [`Conn::poll_drive`]). A proxied request is thus served by
//! one task, the client connection's, with no hand-off between tasks, no channel wake-ups
//! and no second worker thread woken per request. An idle connection is polled by nobody: the
//! next request's first poll reads a close that arrived meanwhile before writing anything,
//! and the periodic sweep drops those nobody took.
//!
//! A request is only ever sent again when hyper hands it back unsent (a stale idle
//! connection); a request whose bytes may have reached the instance is never resent.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use autodeploy_core::Endpoint;
use axum::body::Body;
use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle connections and the pools of released instances are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How long a connection whose response has ended may take to be ready for the next
/// request (its request body still being sent) before it is closed instead of kept.
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
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One HTTP/1.1 connection to an instance: the handle requests are sent with, and the
/// connection's state machine, which moves only when polled by the task using it.
pub(crate) struct Conn {
    sender: SendRequest<Body>,
    /// `None` once the connection has ended (closed, failed, or handed over to an upgrade).
    driver: Option<Driver>,
    /// The response head deadline of the request being sent, one timer for the connection's
    /// whole life: moving a registered deadline later is one atomic store, where a timer per
    /// request would be registered and removed under the timer driver's lock each time.
    deadline: Pin<Box<Sleep>>,
}

/// hyper's connection future with upgrades enabled (its type cannot be named).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

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
    #[error("no response headers within {0:?}")]
    TimedOut(Duration),
}

/// Why sending on one connection failed.
enum SendError {
    /// hyper's error, with the request when it was never written (boxed: errors are rare,
    /// and the request is large).
    Hyper(Box<TrySendError<Request<Body>>>),
    TimedOut,
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
            pool.idle.lock().retain_mut(|idle| {
                // Polled here only to notice a connection the instance has closed.
                idle.conn.advance();
                now.duration_since(idle.since) < IDLE_TIMEOUT && idle.conn.is_open()
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
        }
    }

    /// The `Host` header value for this endpoint.
    pub(crate) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `req` on an idle connection, or on a new one when none is left, and waits at
    /// most `timeout` for the response head. Returns the response and the connection, which
    /// the response body must drive ([`Conn::poll_drive`]) and give back with
    /// [`EndpointPool::put`] once it has ended.
    pub(crate) async fn send(
        &self,
        mut req: Request<Body>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, Conn), UpstreamError> {
        while let Some(mut conn) = self.take_idle() {
            match conn.send(req, timeout).await {
                Ok(response) => return Ok((response, conn)),
                Err(SendError::TimedOut) => return Err(UpstreamError::TimedOut(timeout)),
                Err(SendError::Hyper(mut err)) => match err.take_message() {
                    // Never written: the connection was stale, try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Send(err.into_error())),
                },
            }
        }
        let mut conn = self.connect().await?;
        match conn.send(req, timeout).await {
            Ok(response) => Ok((response, conn)),
            Err(SendError::TimedOut) => Err(UpstreamError::TimedOut(timeout)),
            Err(SendError::Hyper(err)) => Err(UpstreamError::Send(err.into_error())),
        }
    }

    /// The most recently used idle connection that is still open, if any.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() >= IDLE_TIMEOUT {
                // Those below are older still.
                idle.clear();
                return None;
            }
            // One the instance closed while it sat here may still look open: sending on it
            // reads the close before writing, and hands the request back unsent.
            if entry.conn.is_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(connection.with_upgrades())),
            deadline: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        })
    }

    /// Gives back a connection whose response body has ended: kept idle once it can take the
    /// next request, closed if it cannot.
    pub(crate) fn put(self: Arc<Self>, mut conn: Conn) {
        if conn.sender.is_ready() {
            self.keep(conn);
            return;
        }
        // Lets it finish the exchange, then looks again.
        conn.advance();
        if conn.sender.is_ready() {
            self.keep(conn);
        } else if conn.is_open() {
            // Still sending the request body (the instance answered before reading it all):
            // drive it on a task until it is ready, for a while.
            tokio::spawn(async move {
                let ready = poll_fn(|cx| {
                    if conn.poll_drive(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    conn.sender.poll_ready(cx).map(|r| r.is_ok())
                });
                if let Ok(true) = tokio::time::timeout(SETTLE_TIMEOUT, ready).await {
                    self.keep(conn);
                }
            });
        }
    }

    fn keep(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

impl Conn {
    /// Moves the connection along as far as it can go now: writes the request and its body,
    /// reads the response into its body channel. `Ready` once the connection has ended; it
    /// is never polled again after that.
    pub(crate) fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(driver) = &mut self.driver else {
            return Poll::Ready(());
        };
        let result = std::task::ready!(driver.as_mut().poll(cx));
        if let Err(err) = result {
            tracing::debug!(%err, "upstream connection ended");
        }
        self.driver = None;
        Poll::Ready(())
    }

    /// Polls the connection once with no one to wake: lets it take in what has already
    /// arrived (the end of an exchange, or the instance closing it) when nobody is waiting
    /// on it.
    fn advance(&mut self) {
        let _ = self.poll_drive(&mut Context::from_waker(Waker::noop()));
    }

    /// Whether the connection can still carry a request.
    fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Sends `req` and drives the connection until the response head has arrived, for at
    /// most `timeout`.
    async fn send(
        &mut self,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let Self {
            sender,
            driver,
            deadline,
        } = self;
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + timeout);
        let mut response = pin!(sender.try_send_request(req));
        poll_fn(|cx| {
            if let Some(d) = driver
                && let Poll::Ready(result) = d.as_mut().poll(cx)
            {
                if let Err(err) = result {
                    tracing::debug!(%err, "upstream connection ended");
                }
                // Its end has failed or answered the request: polled below.
                *driver = None;
            }
            if let Poll::Ready(result) = response.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(|e| SendError::Hyper(Box::new(e))));
            }
            deadline
                .as_mut()
                .poll(cx)
                .map(|()| Err(SendError::TimedOut))
        })
        .await
    }

    /// Hands the connection over to an upgrade: drives it on a task of its own until hyper
    /// has passed its socket to the upgraded response (at once if that already happened).
    pub(crate) fn finish_upgrade(self) {
        let Conn { sender, driver, .. } = self;
        drop(sender);
        if let Some(driver) = driver {
            tokio::spawn(async move {
                if let Err(err) = driver.await {
                    tracing::debug!(%err, "upstream connection ended before its upgrade");
                }
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
