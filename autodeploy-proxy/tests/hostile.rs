//! Hostile clients over raw TCP, against a recording backend that keeps every byte it reads:
//! request smuggling attempts, malformed heads, oversized heads and bodies, slow clients,
//! clients that vanish mid-stream, hostile `Deploy-Route-Rule` values and path tricks.
//!
//! hyper answers the malformed heads itself, before the gateway sees a request: a `400` (or
//! `431`) with an empty body, and the connection closed. The README's error section says so.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use autodeploy_core::{DeployConfig, DeploymentStatus, GpuProvider};
use autodeploy_proxy::GatewaySettings;
use serde_json::Value;
use support::recording::Recording;
use support::{TestGateway, client, deployment, eventually, fixed_deployment, sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sent after each hostile request on the same connection: it must never reach a backend.
const TAIL: &str = "GET /d/r/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

struct Answer {
    text: String,
    /// The gateway closed the connection (EOF or reset) within the read timeout.
    closed: bool,
    took: Duration,
}

impl Answer {
    fn status(&self) -> u16 {
        self.text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// How many responses the connection carried.
    fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count()
    }

    fn code(&self) -> Option<u64> {
        let body = self.text.split("\r\n\r\n").nth(1)?;
        serde_json::from_str::<Value>(body).ok()?["code"].as_u64()
    }
}

async fn exchange(base: &str, request: &[u8]) -> Answer {
    let began = Instant::now();
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect");
    // The gateway may close before reading everything (that is the point): ignore errors.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Answer {
        text: String::from_utf8_lossy(&answer).into_owned(),
        closed,
        took: began.elapsed(),
    }
}

fn recording_deployment() -> DeployConfig {
    let mut config = DeployConfig::new("r", "recording", Duration::from_secs(60), 1);
    config.provider = "recording".into();
    config
}

async fn recording_gateway(settings: GatewaySettings) -> (TestGateway, Arc<Recording>) {
    let recording = Arc::new(Recording::default());
    let gw = TestGateway::with_providers(
        settings,
        sim(Duration::ZERO),
        vec![("recording", recording.clone() as Arc<dyn GpuProvider>)],
        vec![
            recording_deployment(),
            deployment("s", 1, Duration::from_millis(300)),
        ],
    )
    .await;
    // A first, well-formed request: the backend is up and the path works.
    let ok = exchange(
        &gw.base,
        b"GET /d/r/warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status(), 200, "{}", ok.text);
    (gw, recording)
}

#[tokio::test]
async fn smuggling_attempts_are_rejected_and_a_pipelined_tail_never_reaches_the_backend() {
    let (gw, recording) = recording_gateway(GatewaySettings::default()).await;
    let post = "POST /d/r/attack HTTP/1.1\r\nHost: x\r\n";
    let rejected: Vec<(&str, String)> = vec![
        (
            "duplicate differing Content-Length",
            format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ),
        (
            "TE chunked, identity",
            format!("{post}Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "TE xchunked",
            format!("{post}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "TE identity",
            format!("{post}Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"),
        ),
        (
            "TE chunked then TE identity",
            format!(
                "{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
        ),
        (
            "TE in HTTP/1.0",
            "POST /d/r/attack HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_owned(),
        ),
        ("CL +1", format!("{post}Content-Length: +1\r\n\r\nh")),
        ("CL 0x10", format!("{post}Content-Length: 0x10\r\n\r\n0123456789abcdef")),
        ("CL 1Z", format!("{post}Content-Length: 1Z\r\n\r\nh")),
        ("CL empty", format!("{post}Content-Length: \r\n\r\n")),
        ("CL -1", format!("{post}Content-Length: -1\r\n\r\n")),
        ("CL 1 2", format!("{post}Content-Length: 1 2\r\n\r\nh")),
        ("NUL in a header", format!("{post}X-A: a\0b\r\n\r\n")),
        ("bare CR in a header", format!("{post}X-A: a\rb\r\n\r\n")),
        ("space before the colon", format!("{post}Content-Length : 5\r\n\r\nhello")),
        ("obs-fold", format!("{post}X-A: a\r\n b\r\n\r\n")),
        ("control character in a name", format!("{post}X\x01A: a\r\n\r\n")),
    ];
    for (what, request) in &rejected {
        let answer = exchange(&gw.base, format!("{request}{TAIL}").as_bytes()).await;
        assert_eq!(answer.status(), 400, "{what}: {}", answer.text);
        assert!(answer.closed, "{what}: the connection stays open");
        assert_eq!(answer.responses(), 1, "{what}: {}", answer.text);
    }
    assert!(
        !recording.saw("/attack"),
        "a rejected request was forwarded"
    );
    assert!(!recording.saw("smuggled"), "a pipelined tail was forwarded");

    // Bad chunk sizes: the head is fine and is forwarded, the body is not. The instance sees
    // an aborted request that never completes; the client gets an error, the connection ends.
    for (what, body) in [
        ("non-hex chunk size", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "overflowing chunk size",
            "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("negative chunk size", "-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk longer than its size", "2\r\nhello\r\n0\r\n\r\n"),
    ] {
        let request = format!(
            "POST /d/r/badchunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{TAIL}"
        );
        let answer = exchange(&gw.base, request.as_bytes()).await;
        assert_eq!(
            (answer.status(), answer.code()),
            (400, Some(1000)),
            "{what}: {}",
            answer.text
        );
        assert!(answer.closed, "{what}: the connection stays open");
        eprintln!("{what}: {}", answer.text.lines().last().unwrap_or(""));
    }
    let record = recording.record();
    assert!(
        record.complete.iter().all(|(path, _)| path != "/badchunk"),
        "a body with a bad chunk completed at the backend: {:?}",
        record.complete
    );
    assert!(!recording.saw("smuggled"), "a pipelined tail was forwarded");
    gw.stop().await;
}

#[tokio::test]
async fn both_content_length_and_chunked_are_normalised_to_chunked_and_the_connection_closed() {
    let (gw, recording) = recording_gateway(GatewaySettings::default()).await;
    for (what, head) in [
        (
            "CL then TE",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        ),
        (
            "TE with leading whitespace, then CL",
            "Transfer-Encoding:  chunked\r\nContent-Length: 40\r\n",
        ),
    ] {
        let request = format!(
            "POST /d/r/both HTTP/1.1\r\nHost: x\r\n{head}\r\n5\r\nhello\r\n0\r\n\r\n{TAIL}"
        );
        let answer = exchange(&gw.base, request.as_bytes()).await;
        assert_eq!(answer.status(), 200, "{what}: {}", answer.text);
        assert!(
            answer.closed,
            "{what}: the connection must close after CL+TE"
        );
        assert_eq!(answer.responses(), 1, "{what}");
        // The backend saw the chunked body (5 bytes), never the stale Content-Length.
        assert!(
            answer.text.contains("recorded 5 bytes"),
            "{what}: {}",
            answer.text
        );
        let seen = answer.text.split("headers ").nth(1).unwrap_or("");
        assert!(!seen.contains("content-length"), "{what}: {}", answer.text);
    }
    assert!(!recording.saw("smuggled"), "a pipelined tail was forwarded");

    // A bare LF ends a line for hyper and for the instance alike: it is normalised to CRLF.
    let answer = exchange(
        &gw.base,
        b"GET /d/r/lf HTTP/1.1\nHost: x\nX-A: a\nConnection: close\n\n",
    )
    .await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    let record = recording.record();
    let bare_lf = record
        .bytes
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || record.bytes[i - 1] != b'\r'));
    assert!(!bare_lf, "the backend received a bare LF");
    gw.stop().await;
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_never_reach_the_backend() {
    let (gw, recording) = recording_gateway(GatewaySettings::default()).await;
    let answer = exchange(
        &gw.base,
        b"GET /d/r/hops HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret-Hop\r\n\
          X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          TE: trailers\r\nTrailer: X-Later\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\n\
          Deploy-Route-Rule: round-robin\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    for name in [
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "te:",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "deploy-route-rule",
    ] {
        assert!(!recording.saw(name), "{name} reached the backend");
    }
    assert!(recording.saw("x-end-to-end: kept"));
    gw.stop().await;
}

#[tokio::test]
async fn the_upstream_client_never_retries_a_request_the_instance_received() {
    // Every connection the backend accepts reads one request head and resets: the gateway's
    // pooled client must not send it again (hyper-util retries only requests it never wrote).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Closed without an answer, as a process crashing mid-request would.
                drop(stream);
            });
        }
    });
    let gw = TestGateway::fixed(GatewaySettings::default(), addr, fixed_deployment("f")).await;
    for i in 1..=5 {
        let resp = client()
            .post(gw.url("/d/f/pay"))
            .body("one payment")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        let body = resp.text().await.unwrap();
        assert!(body.contains("1010"), "{body}");
        assert_eq!(
            heads.load(std::sync::atomic::Ordering::SeqCst),
            i,
            "the backend saw a POST more often than the client sent it"
        );
    }
    gw.stop().await;
}

/// A backend that answers every request head with `answer` and records every byte it reads,
/// behind a gateway deployment `f` (provider `fixed`).
async fn raw_backend_gateway(
    answer: &'static [u8],
) -> (TestGateway, Arc<parking_lot::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            record.lock().extend_from_slice(&buf[..n]);
                            head.extend_from_slice(&buf[..n]);
                            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                head.clear();
                                if stream.write_all(answer).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    let gw = TestGateway::fixed(GatewaySettings::default(), addr, fixed_deployment("f")).await;
    (gw, seen)
}

#[tokio::test]
async fn an_upgrade_is_tunnelled_only_after_the_instance_answers_101() {
    let (gw, seen) = raw_backend_gateway(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    // The instance refuses the upgrade (200): the bytes that follow are not a tunnel but the
    // next request on the connection, parsed as HTTP (here: garbage, so 400).
    let answer = exchange(
        &gw.base,
        b"GET /d/f/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\
          \x00raw-tunnel-bytes\r\n\r\n",
    )
    .await;
    assert!(answer.text.starts_with("HTTP/1.1 200"), "{}", answer.text);
    assert!(answer.text.contains("HTTP/1.1 400"), "{}", answer.text);
    let seen = String::from_utf8_lossy(&seen.lock()).into_owned();
    assert!(seen.contains("GET /ws"), "{seen}");
    assert!(
        !seen.contains("raw-tunnel-bytes"),
        "tunnelled without a 101: {seen}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_instance_answering_with_both_content_length_and_chunked_gets_502_1010() {
    let (gw, _seen) = raw_backend_gateway(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let resp = client().get(gw.url("/d/f/x")).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_u64());
    assert_eq!((status, code), (502, Some(1010)), "{body}");
    gw.stop().await;
}

#[tokio::test]
async fn oversized_heads_get_431_and_oversized_bodies_get_413_json_1012() {
    let settings = GatewaySettings {
        max_request_body: 1024,
        max_header_bytes: 16 * 1024,
        ..GatewaySettings::default()
    };
    let (gw, recording) = recording_gateway(settings).await;

    let big = "a".repeat(20 * 1024);
    let answer = exchange(
        &gw.base,
        format!("GET /d/r/big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status(), 431, "{}", answer.text);
    assert!(answer.closed);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(
        &gw.base,
        format!("GET /d/r/many HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status(), 431, "{}", answer.text);

    // Declared too large: refused before any instance is involved.
    let body = "b".repeat(2048);
    let answer = exchange(
        &gw.base,
        format!(
            "POST /d/r/cl HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n{body}"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        (answer.status(), answer.code()),
        (413, Some(1012)),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("application/json"));
    // Chunked: found out while streaming; the instance never receives a complete body.
    let answer = exchange(
        &gw.base,
        format!(
            "POST /d/r/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{body}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        (answer.status(), answer.code()),
        (413, Some(1012)),
        "{}",
        answer.text
    );
    let record = recording.record();
    assert!(
        !record
            .heads
            .iter()
            .any(|(_, p)| p == "/big" || p == "/many" || p == "/cl")
    );
    assert!(!record.complete.iter().any(|(p, _)| p == "/chunked"));
    // Exactly at the limit passes.
    let ok = "c".repeat(1024);
    let resp = client()
        .post(gw.url("/d/r/ok"))
        .body(ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_without_blocking_others() {
    let settings = GatewaySettings {
        header_read_timeout: Duration::from_millis(500),
        ..GatewaySettings::default()
    };
    let (gw, _recording) = recording_gateway(settings).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();

    // Slowloris: the head one byte every 50 ms, never finished in time.
    let slowloris = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "GET /d/r/slow HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(200)
            );
            for byte in head.as_bytes() {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if began.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
            began.elapsed()
        })
    };
    // Silent: connects and sends nothing. Half an HTTP/2 preface: stalls version detection.
    let silent = |preface: &'static [u8]| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream.write_all(preface).await.unwrap();
            let mut rest = Vec::new();
            let done =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
            (done.is_ok(), began.elapsed())
        })
    };
    let quiet = silent(b"");
    let half_preface = silent(b"PRI * HTTP/2.0\r\n");
    let h2_no_request = silent(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

    // Meanwhile others are served at once.
    for _ in 0..5 {
        let began = Instant::now();
        let resp = client().get(gw.url("/d/r/other")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(began.elapsed() < Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cut = slowloris.await.unwrap();
    assert!(
        cut < Duration::from_millis(1500),
        "slowloris held on for {cut:?}"
    );
    for (what, task) in [
        ("silent", quiet),
        ("half an HTTP/2 preface", half_preface),
        ("HTTP/2 preface, no request", h2_no_request),
    ] {
        let (closed, took) = task.await.unwrap();
        assert!(
            closed && took < Duration::from_millis(1500),
            "{what}: open after {took:?}"
        );
        eprintln!("{what}: closed after {took:?}");
    }
    eprintln!("slowloris: closed after {cut:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_stream_frees_the_instance() {
    let (gw, _recording) = recording_gateway(GatewaySettings::default()).await;
    let mut stream = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /d/s/stream?chunks=1000&interval_ms=20 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let controller = gw.controller("s");
    assert_eq!(controller.instances()[0].in_flight, 1);
    drop(stream);
    let gone = Instant::now();
    eventually("the lease is returned", || {
        controller.instances().iter().all(|i| i.in_flight == 0)
    })
    .await;
    let freed_after = gone.elapsed();
    // And with nothing in flight it idles out (retention 300 ms).
    eventually("released after the idle period", || {
        controller.status() == DeploymentStatus::Standby && gw.sim.live() == 0
    })
    .await;
    eprintln!("client gone mid-stream: lease returned after {freed_after:?}, instance released");
    gw.stop().await;
}

#[tokio::test]
async fn hostile_route_rules_get_1006_or_400_never_a_500() {
    let (gw, _recording) = recording_gateway(GatewaySettings::default()).await;
    let huge = "x".repeat(60 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("control character", b"ab\x01cd".to_vec()),
        ("DEL", b"ab\x7fcd".to_vec()),
        ("escape", b"\x1b[31mred".to_vec()),
        ("tab inside", b"round\trobin".to_vec()),
        ("non-UTF-8", b"\xff\xfe\xfd".to_vec()),
        ("Latin-1 id", b"xykeml\xe9y".to_vec()),
        ("huge", huge.into_bytes()),
        ("NUL", b"random\0".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, value) in cases {
        let mut request =
            b"GET /d/r/rule HTTP/1.1\r\nHost: x\r\nConnection: close\r\nDeploy-Route-Rule: "
                .to_vec();
        request.extend_from_slice(&value);
        request.extend_from_slice(b"\r\n\r\n");
        let answer = exchange(&gw.base, &request).await;
        let outcome = (answer.status(), answer.code());
        assert!(
            outcome == (404, Some(1006)) || answer.status() == 400,
            "{what}: {}",
            answer.text
        );
        eprintln!("rule {what}: {outcome:?} in {:?}", answer.took);
    }
    gw.stop().await;
}

#[tokio::test]
async fn path_tricks_cannot_reach_another_deployment() {
    let (gw, recording) = recording_gateway(GatewaySettings::default()).await;
    // Aimed at the simulated deployment `s` from `r`'s link or from nowhere.
    for path in [
        "/d/r/../s/",
        "/d/r/%2e%2e/s/",
        "/d/..%2Fs/",
        "/d/r%2F..%2Fs/",
        "/d/%73/",
        "/d/S/",
        "/d/s%00/",
        "//d/s/",
        "/d//s/",
        "/D/s/",
        "/d/./s/",
    ] {
        let answer = exchange(
            &gw.base,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            answer.status() == 200 || answer.status() == 404 || answer.status() == 400,
            "{path}: {}",
            answer.text
        );
        if answer.status() == 200 {
            // Only `r`'s own links may succeed, and they stay on `r`.
            assert!(path.starts_with("/d/r/"), "{path}: {}", answer.text);
        }
    }
    assert_eq!(gw.sim.created(), 0, "a trick reached deployment s");
    assert!(recording.saw("/../s/"), "dots stay inside r's path");
    gw.stop().await;
}

/// The parsers that take outside input, under proptest (the same targets run under
/// cargo-fuzz in `fuzz/`, see `scripts/fuzz.sh`): they answer or refuse, never panic.
mod parsers {
    use autodeploy_proxy::GatewayConfig;
    use autodeploy_routing::RouteRule;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"[a-z0-9 {}.:/%-]{0,16}\"",
            "-?[0-9]{1,25}",
            "-?[0-9]{1,5}\\.[0-9]{0,5}",
            "\"[0-9]{1,22}(ns|ms|s|m|h|d|y|x)?\"",
            "\"(127\\.0\\.0\\.1|\\[::1\\]|0\\.0\\.0\\.0|host):[0-9]{0,6}\"",
            Just("true".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just("nan".to_owned()),
            Just("inf".to_owned()),
            Just("{ max_waiting = 0, timeout = \"0s\" }".to_owned()),
            Just("{ path = \"\", interval = \"0ms\" }".to_owned()),
            Just("{ kind = \"\", count = 4294967296 }".to_owned()),
        ]
    }

    fn table(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::collection::vec((proptest::sample::select(keys), value()), 0..10).prop_map(
            |pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k} = {v}\n"))
                    .collect()
            },
        )
    }

    const GATEWAY: &[&str] = &[
        "listen",
        "admin_token",
        "state_dir",
        "max_request_body",
        "max_header_bytes",
        "header_read_timeout",
        "response_header_timeout",
        "drain_timeout",
    ];
    const DEPLOYMENT: &[&str] = &[
        "id",
        "provider",
        "start_command",
        "idle_retention",
        "max_instances",
        "min_instances",
        "port",
        "start_timeout",
        "concurrency_limit",
        "price_per_hour",
        "listen",
        "queue",
        "readiness",
        "gpu",
        "env",
        "image",
    ];

    proptest! {
        #[test]
        fn any_text_is_parsed_or_refused(text in "\\PC{0,300}") {
            if let Ok(config) = GatewayConfig::parse(&text) {
                let _ = config.validate();
            }
            let _ = autodeploy_proxy::problems::read(&text);
        }

        #[test]
        fn config_shaped_text_is_parsed_and_validated_or_refused(
            gateway in table(GATEWAY),
            deployments in proptest::collection::vec(table(DEPLOYMENT), 0..3),
        ) {
            let mut text = format!("[gateway]\n{gateway}");
            for d in deployments {
                text.push_str("[[deployment]]\n");
                text.push_str(&d);
            }
            // The collecting reader agrees with serde's first-error reading.
            let strict = GatewayConfig::parse(&text).map(|config| config.validate());
            let collected = autodeploy_proxy::problems::read(&text);
            match (strict, collected) {
                (Ok(Ok(())), Ok(_)) => {}
                (Ok(Ok(())), Err(problems)) => panic!("{text}\n{problems}"),
                (_, Ok(_)) => panic!("{text}\nread although it has problems"),
                (_, Err(problems)) => prop_assert!(!problems.0.is_empty()),
            }
        }

        #[test]
        fn any_route_rule_bytes_are_a_rule(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let rule = RouteRule::from_header(Some(&raw));
            prop_assert_eq!(rule, RouteRule::parse(&raw));
        }

        #[test]
        fn any_path_is_a_link_or_not(path in "\\PC{0,200}") {
            if let Some((id, forwarded)) = autodeploy_proxy::link::split(&path) {
                prop_assert!(!id.contains('/') && forwarded.starts_with('/'));
            }
        }
    }
}
