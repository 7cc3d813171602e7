//! The accept loop: HTTP/1.1 and HTTP/2 on one listener, with header-read timeouts, bounded
//! request heads, upgrades, and a graceful stop that lets open requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::{Service, ServiceExt};

use crate::config::GatewaySettings;
use crate::forward::ClientAddr;

/// The accept queue of the gateway's listeners. tokio's `TcpListener::bind` asks for 128: a
/// burst of a thousand clients at a cold link then has its SYNs dropped and retried a second
/// later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener for the gateway on `addr` with a deep accept queue (and `SO_REUSEADDR`,
/// so a restarted gateway gets its port back at once).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds one of several listeners on the same `addr` (with `SO_REUSEPORT`; the kernel spreads
/// new connections over them), for serving with one runtime per core.
#[cfg(unix)]
pub async fn bind_shared(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops accepting and waits
/// for open connections to finish their requests, at most the drain timeout.
pub(crate) async fn run<S>(
    listener: TcpListener,
    service: S,
    settings: &GatewaySettings,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // hyper panics below its minimum of 8192; the config file refuses less, an embedder's
        // settings are clamped.
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .initial_stream_window_size(64 * 1024)
        // HTTP/1 connections idle between requests are closed by the header read timeout;
        // HTTP/2 ones are pinged so that a vanished peer does not hold its connection.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(settings.max_header_bytes as u32);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        // hyper's header timeout starts only once HTTP/1 has been detected: a client that
        // sends nothing, half an HTTP/2 preface, or an HTTP/2 preface and no request would
        // hold its connection forever. The first request head must arrive in time.
        let first_request = Arc::new(Notify::new());
        let seen = first_request.clone();
        let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            seen.notify_one();
            req.extensions_mut().insert(ClientAddr(peer));
            service.clone().oneshot(req.map(Body::new))
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
            .into_owned();
        let connection = graceful.watch(connection);
        let header_read_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = first_request.notified() => None,
                () = tokio::time::sleep(header_read_timeout) => {
                    tracing::debug!(%peer, "no request head within the header read timeout");
                    return;
                }
            };
            let ended = match ended {
                Some(ended) => ended,
                None => connection.await,
            };
            if let Err(err) = ended {
                tracing::debug!(%peer, err = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after the drain timeout of {:?}",
            settings.drain_timeout
        );
    }
}
