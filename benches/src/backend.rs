//! The fast backend: a tiny hyper HTTP/1.1 server that does as little as a server can, so
//! what a proxy in front of it costs shows.
//!
//! | request | answer |
//! |---|---|
//! | `GET /1m` | 1 MiB of zeros, with `content-length` |
//! | `GET /sleep?ms=N` | the small body after `N` ms (for holding requests open) |
//! | anything else | `200`, `Hello, world!\n` (14 bytes), with `content-length` |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The small body.
pub const SMALL_BODY: &[u8] = b"Hello, world!\n";
/// The size of the `/1m` body.
pub const LARGE_LEN: usize = 1 << 20;

/// The answer to one request; bodies are shared, never copied.
pub fn answer(req: &Request<Incoming>, large: &Bytes) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == "/1m" {
        large.clone()
    } else {
        Bytes::from_static(SMALL_BODY)
    };
    Response::new(Full::new(body))
}

/// The pause `GET /sleep?ms=N` asks for.
fn sleep_for(req: &Request<Incoming>) -> Option<Duration> {
    if req.uri().path() != "/sleep" {
        return None;
    }
    let ms = req
        .uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
}

/// Serves the backend on `listener` forever, one task per connection, keep-alive on.
pub async fn serve(listener: TcpListener) {
    let large = Bytes::from(vec![0u8; LARGE_LEN]);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let large = large.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let pause = sleep_for(&req);
                let response = answer(&req, &large);
                async move {
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `127.0.0.1:0`, spawns [`serve`] on the current runtime and returns the address.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(addr)
}
