//! The gateway's keep-alive connections to an instance, against a raw TCP backend that counts
//! the connections it accepts: reuse, an idle connection the instance closed, a response that
//! ends before the request body has been sent, a client gone while its request waits, and
//! the response head deadline.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autodeploy_proxy::GatewaySettings;
use parking_lot::Mutex;
use support::{TestGateway, client, eventually, fixed_deployment};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the backend treats a connection after each answer.
#[derive(Clone, Copy)]
enum After {
    /// Keeps it open for the next request.
    KeepOpen,
    /// Closes it shortly after answering, without saying so (no `Connection: close`): the
    /// gateway finds out only from the FIN, while the connection sits idle in its pool.
    CloseWhenIdle,
}

struct Backend {
    accepted: AtomicUsize,
    answered: AtomicUsize,
    /// Every byte read, over all connections.
    seen: Mutex<Vec<u8>>,
}

/// Starts a backend that answers each request head at once with `200`, `ok`, whatever body
/// follows (the body is read and recorded afterwards), and a gateway whose deployment `f`
/// points at it.
async fn backend_gateway(after: After, answer_delay: Duration) -> (TestGateway, Arc<Backend>) {
    backend_gateway_with(GatewaySettings::default(), after, answer_delay).await
}

async fn backend_gateway_with(
    settings: GatewaySettings,
    after: After,
    answer_delay: Duration,
) -> (TestGateway, Arc<Backend>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = Arc::new(Backend {
        accepted: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let state = backend.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            state.accepted.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut pending = Vec::new();
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    state.seen.lock().extend_from_slice(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                    // One answer per request head; body bytes are only recorded.
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        tokio::time::sleep(answer_delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        state.answered.fetch_add(1, Ordering::SeqCst);
                        if let After::CloseWhenIdle = after {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            return;
                        }
                    }
                    // Body bytes carry no head end: keep only a tail that could start one.
                    let keep = pending.len().min(3);
                    pending.drain(..pending.len() - keep);
                }
            });
        }
    });
    let gw = TestGateway::fixed(settings, addr, fixed_deployment("f")).await;
    (gw, backend)
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (gw, backend) = backend_gateway(After::KeepOpen, Duration::ZERO).await;
    let http = client();
    for _ in 0..20 {
        let resp = http.get(gw.url("/d/f/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    assert_eq!(backend.answered.load(Ordering::SeqCst), 20);
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_connection_the_instance_closed_is_replaced_without_an_error() {
    let (gw, backend) = backend_gateway(After::CloseWhenIdle, Duration::ZERO).await;
    let http = client();
    for i in 1..=8 {
        let resp = http.get(gw.url("/d/f/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "ok");
        // The backend's FIN arrives while the connection is idle in the pool.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // Every request got a connection of its own, none was lost to a stale one.
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 8);
    assert_eq!(backend.answered.load(Ordering::SeqCst), 8);
    gw.stop().await;
}

#[tokio::test]
async fn a_response_that_ends_before_the_request_body_still_gets_the_whole_body_through() {
    let (gw, backend) = backend_gateway(After::KeepOpen, Duration::ZERO).await;
    // A raw client that sends its whole body whatever the answer (an HTTP client library may
    // stop sending once the response is complete). 4 MiB: far more than the socket buffers
    // hold, so the answer (sent after the head) ends while most of the body is to be sent.
    const BODY: usize = 4 << 20;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        let head =
            format!("POST /d/f/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: {BODY}\r\n\r\n");
        write.write_all(head.as_bytes()).await.unwrap();
        write.write_all(&vec![b'b'; BODY]).await.unwrap();
        write
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let _write = sender.await.unwrap();
    eventually("the whole body at the backend", || {
        backend.seen.lock().iter().filter(|&&b| b == b'b').count() >= BODY
    })
    .await;
    // The next request is served (on that connection once it has settled, or on a new one:
    // one that does not settle within 5 s is closed, never handed to a request).
    let resp = client().get(gw.url("/d/f/next")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
    let seen = String::from_utf8_lossy(&backend.seen.lock()).into_owned();
    assert!(seen.contains("GET /next"), "the next request never arrived");
    assert!(backend.accepted.load(Ordering::SeqCst) <= 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_client_gone_while_its_request_waits_leaves_its_upstream_connection_unused() {
    let (gw, backend) = backend_gateway(After::KeepOpen, Duration::from_millis(500)).await;
    let waiting = tokio::time::timeout(
        Duration::from_millis(100),
        client().get(gw.url("/d/f/slow")).send(),
    )
    .await;
    assert!(waiting.is_err(), "answered before the backend's delay");
    // The connection the abandoned request was on is not given to the next request (its
    // answer would be read as the next one's): the next request opens another.
    let resp = client().get(gw.url("/d/f/next")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
    eventually("two upstream connections", || {
        backend.accepted.load(Ordering::SeqCst) == 2
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn no_response_head_in_time_is_504_1018_and_the_deadline_moves_with_each_request() {
    let settings = GatewaySettings {
        response_header_timeout: Duration::from_millis(300),
        ..GatewaySettings::default()
    };
    let (gw, backend) =
        backend_gateway_with(settings, After::KeepOpen, Duration::from_millis(200)).await;
    let http = client();
    // 200 ms answers on one connection, each well within its own 300 ms, though together
    // they run far past the first request's deadline; idle gaps longer than the timeout
    // let the connection's timer fire while nobody waits on it.
    for i in 0..4 {
        let resp = http.get(gw.url("/d/f/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "ok");
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    gw.stop().await;

    let settings = GatewaySettings {
        response_header_timeout: Duration::from_millis(100),
        ..GatewaySettings::default()
    };
    let (gw, backend) =
        backend_gateway_with(settings, After::KeepOpen, Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let resp = client().get(gw.url("/d/f/slow")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1018, "{body}");
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(350),
        "answered after {took:?}"
    );
    // The timed-out connection is closed, not reused for the next request.
    let resp = client().get(gw.url("/d/f/next")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    eventually("two upstream connections", || {
        backend.accepted.load(Ordering::SeqCst) == 2
    })
    .await;
    gw.stop().await;
}
