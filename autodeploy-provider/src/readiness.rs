//! Readiness, shared by the providers: is the instance's port accepting connections, and
//! does its readiness path answer something other than a 5xx?
//!
//! The probe speaks just enough HTTP/1.1 itself (one `GET`, read the status line) to stay
//! cheap: it runs every few milliseconds while an instance boots. For an instance that speaks
//! only HTTP/2 (an `h2c` deployment) it sends the `GET` over an HTTP/2 connection instead. Any status below 500 counts
//! as ready, 404 included: the service is up and answering, which is what routing needs; a
//! path that must answer 200 is the service's contract, not the gateway's.
//!
//! Probes are fast at first and back off later (see [`Backoff`]): the overhead target is at
//! most 5 ms between the moment the port opens and the moment the instance is ready, and a
//! refused connection on loopback costs microseconds.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Delays start at 1 ms and double up to this while the start is young.
const FAST_DELAY: Duration = Duration::from_millis(4);
/// For how long after create a closed port is tried every millisecond (services that bind
/// within milliseconds, like nginx, are then seen about 1 ms after they listen).
const EARLY_WINDOW: Duration = Duration::from_millis(200);
/// For how long after create probes stay fast, so services that boot within this window are
/// seen ready within [`FAST_DELAY`] of opening their port.
const FAST_WINDOW: Duration = Duration::from_secs(30);
/// The longest a single probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes read looking for the status line.
const MAX_STATUS_LINE: usize = 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The instance is ready.
    Ready,
    /// Nothing accepts connections yet, and why (for the timeout message).
    Closed(String),
    /// The port accepts connections but the readiness path is not answered below 500.
    NotReady(String),
}

impl Outcome {
    /// Why the instance is not ready, if it is not.
    pub(crate) fn reason(self) -> Option<String> {
        match self {
            Self::Ready => None,
            Self::Closed(why) | Self::NotReady(why) => Some(why),
        }
    }
}

/// One readiness check: a TCP connect, and optionally a `GET` of a path.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    addr: SocketAddr,
    path: Option<String>,
    /// The path is requested over HTTP/2 (prior knowledge) rather than HTTP/1.1.
    h2: bool,
    /// Any HTTP status counts: only that the service answers is checked.
    any_status: bool,
}

impl Probe {
    /// A probe of `addr`, with the HTTP path if one is configured, asked over HTTP/2 when
    /// `h2`. A path without a leading `/` gets one; a path with whitespace or control
    /// characters is refused.
    pub(crate) fn new(addr: SocketAddr, path: Option<&str>, h2: bool) -> Result<Self, String> {
        let path = match path {
            None => None,
            Some(p) if p.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(format!(
                    "readiness path {p:?} is not a valid request target"
                ));
            }
            Some(p) if p.starts_with('/') => Some(p.to_owned()),
            Some(p) => Some(format!("/{p}")),
        };
        Ok(Self {
            addr,
            path,
            h2,
            any_status: false,
        })
    }

    /// A probe that needs an HTTP answer even without a readiness path: `GET /`, where any
    /// status counts. For instances behind a port forwarder (Docker's userland proxy) that
    /// accepts connections before the service listens, so a TCP connect proves nothing.
    #[cfg_attr(not(feature = "docker"), allow(dead_code))]
    pub(crate) fn answered(mut self) -> Self {
        if self.path.is_none() {
            self.path = Some("/".to_owned());
            self.any_status = true;
        }
        self
    }

    fn judge(&self, status: Result<u16, String>) -> Outcome {
        match status {
            Ok(status) if status < 500 || self.any_status => Outcome::Ready,
            Ok(status) => Outcome::NotReady(format!("status {status}")),
            Err(err) => Outcome::NotReady(err),
        }
    }

    /// Probes once, bounded by [`PROBE_TIMEOUT`].
    pub(crate) async fn check(&self) -> Outcome {
        match timeout(PROBE_TIMEOUT, self.check_unbounded()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::NotReady(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }

    async fn check_unbounded(&self) -> Outcome {
        let mut stream = match TcpStream::connect(self.addr).await {
            Ok(stream) => stream,
            Err(err) => return Outcome::Closed(err.to_string()),
        };
        let Some(path) = &self.path else {
            return Outcome::Ready;
        };
        let _ = stream.set_nodelay(true);
        if self.h2 {
            return self.judge(h2_status(stream, self.addr, path).await);
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: autodeploy-readiness\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if let Err(err) = stream.write_all(request.as_bytes()).await {
            return Outcome::Closed(err.to_string());
        }
        match read_status(&mut stream).await {
            // A forwarder that accepted for a service not listening yet closes at once: as
            // good as a refused connection, so probes stay fast.
            Err(ReadError::Closed(why)) => Outcome::Closed(why),
            Err(ReadError::Bad(why)) => Outcome::NotReady(why),
            Ok(status) => self.judge(Ok(status)),
        }
    }
}

impl fmt::Display for Probe {
    /// What is tried, as the timeout error says it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(_) if self.any_status => write!(f, "an HTTP answer from {}", self.addr),
            Some(path) if self.h2 => write!(f, "GET http://{}{path} over HTTP/2", self.addr),
            Some(path) => write!(f, "GET http://{}{path}", self.addr),
            None => write!(f, "TCP connect to {}", self.addr),
        }
    }
}

/// The status of `GET path` over a new HTTP/2 connection on `stream`.
async fn h2_status(stream: TcpStream, addr: SocketAddr, path: &str) -> Result<u16, String> {
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header(http::header::USER_AGENT, "autodeploy-readiness")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let status = sender
        .send_request(request)
        .await
        .map(|response| response.status().as_u16())
        .map_err(|e| e.to_string());
    driver.abort();
    status
}

/// Why no status was read.
enum ReadError {
    /// The connection closed or was reset before a status line.
    Closed(String),
    /// Something answered that is not an HTTP status line.
    Bad(String),
}

async fn read_status(stream: &mut TcpStream) -> Result<u16, ReadError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    let line_end = loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(ReadError::Bad("status line too long".into()));
        }
        match stream.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => {
                return Err(ReadError::Closed(
                    "connection closed before a status line".into(),
                ));
            }
            Ok(0) => {
                return Err(ReadError::Bad(
                    "connection closed in the status line".into(),
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) => return Err(ReadError::Closed(err.to_string())),
        }
    };
    parse_status_line(&buf[..line_end]).ok_or_else(|| {
        ReadError::Bad(format!(
            "not an HTTP status line: {:?}",
            String::from_utf8_lossy(&buf[..line_end])
        ))
    })
}

fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// The pause before each next probe: 1 ms, doubling up to the deployment's readiness
/// interval; but while the port is still closed, 1 ms during the first [`EARLY_WINDOW`]
/// after create and at most [`FAST_DELAY`] until [`FAST_WINDOW`]. When the port first opens the doubling starts again from
/// 1 ms. A closed loopback port costs microseconds to try; a service that answers its
/// readiness path with 5xx is not hammered.
#[derive(Debug)]
pub(crate) struct Backoff {
    created: Instant,
    interval: Duration,
    delay: Duration,
    seen_open: bool,
}

impl Backoff {
    /// A schedule for an instance created at `created`, whose probes may be `interval` apart
    /// at most.
    pub(crate) fn new(created: Instant, interval: Duration) -> Self {
        Self {
            created,
            interval: interval.max(Duration::from_millis(1)),
            delay: Duration::from_millis(1),
            seen_open: false,
        }
    }

    /// The next pause, after a probe that found the port `open` or not.
    pub(crate) fn next_delay(&mut self, open: bool) -> Duration {
        if open && !self.seen_open {
            self.seen_open = true;
            self.delay = Duration::from_millis(1);
        }
        let young = self.created.elapsed();
        let cap = if !open && young < EARLY_WINDOW {
            Duration::from_millis(1)
        } else if !open && young < FAST_WINDOW {
            FAST_DELAY.min(self.interval)
        } else {
            self.interval
        };
        let delay = self.delay.min(cap);
        self.delay = (self.delay * 2).min(self.interval);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 99999 x"), None);
    }

    #[test]
    fn paths_are_checked_and_described() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let probe = Probe::new(addr, Some("health"), false).unwrap();
        assert_eq!(probe.to_string(), "GET http://127.0.0.1:9/health");
        assert_eq!(
            Probe::new(addr, Some("/health"), true).unwrap().to_string(),
            "GET http://127.0.0.1:9/health over HTTP/2"
        );
        assert_eq!(
            Probe::new(addr, None, false).unwrap().to_string(),
            "TCP connect to 127.0.0.1:9"
        );
        assert!(Probe::new(addr, Some("/a b"), false).is_err());
        let answered = Probe::new(addr, None, false).unwrap().answered();
        assert_eq!(answered.to_string(), "an HTTP answer from 127.0.0.1:9");
    }

    #[tokio::test]
    async fn an_answered_probe_takes_any_status_but_not_a_closed_connection() {
        let failing = server(false, 503).await;
        let probe = Probe::new(failing, None, false).unwrap().answered();
        assert_eq!(probe.check().await, Outcome::Ready);
        // A forwarder that accepts and closes at once: as closed as a refused port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let probe = Probe::new(closing, None, false).unwrap().answered();
        assert!(matches!(probe.check().await, Outcome::Closed(_)));
    }

    /// Serves `status` on every path, over HTTP/2 only or HTTP/1.1 only.
    async fn server(h2: bool, status: u16) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(move |_req| async move {
                    let mut response =
                        http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(async move {
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, service)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn each_protocol_is_probed_in_its_own_http() {
        let h2 = server(true, 204).await;
        let h1 = server(false, 204).await;
        let failing_h2 = server(true, 503).await;
        let ready =
            |addr, h2| async move { Probe::new(addr, Some("/health"), h2).unwrap().check().await };
        assert_eq!(ready(h2, true).await, Outcome::Ready);
        assert_eq!(ready(h1, false).await, Outcome::Ready);
        assert_eq!(
            ready(failing_h2, true).await,
            Outcome::NotReady("status 503".into())
        );
        // The other protocol gets no status from either: never ready, never a panic.
        assert_ne!(ready(h2, false).await, Outcome::Ready);
        assert_ne!(ready(h1, true).await, Outcome::Ready);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_fast_first_then_reaches_the_interval() {
        let mut backoff = Backoff::new(Instant::now(), Duration::from_millis(500));
        let first: Vec<_> = (0..5)
            .map(|_| backoff.next_delay(false).as_millis())
            .collect();
        assert_eq!(
            first,
            [1, 1, 1, 1, 1],
            "a closed port is tried every ms at first"
        );
        let mut closed = Backoff::new(Instant::now() - EARLY_WINDOW, Duration::from_millis(500));
        let later: Vec<_> = (0..5)
            .map(|_| closed.next_delay(false).as_millis())
            .collect();
        assert_eq!(later, [1, 2, 4, 4, 4]);
        let open: Vec<_> = (0..3)
            .map(|_| backoff.next_delay(true).as_millis())
            .collect();
        assert_eq!(open, [1, 2, 4], "the doubling restarts when the port opens");
        let open: Vec<_> = (0..8)
            .map(|_| backoff.next_delay(true).as_millis())
            .collect();
        assert_eq!(open, [8, 16, 32, 64, 128, 256, 500, 500]);
        tokio::time::advance(FAST_WINDOW).await;
        let mut closed_late = Backoff::new(Instant::now() - FAST_WINDOW, Duration::from_millis(10));
        let late: Vec<_> = (0..6)
            .map(|_| closed_late.next_delay(false).as_millis())
            .collect();
        assert_eq!(late, [1, 2, 4, 8, 10, 10]);
    }
}
