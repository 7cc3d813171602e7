//! A deployment with `upstream = "h2c"`: the gateway speaks HTTP/2 over plain TCP to its
//! instances, as gRPC servers need — `:authority`, `TE: trailers` and trailers end to end,
//! one multiplexed connection per instance — against a hyper HTTP/2 backend that reports
//! what it received.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autodeploy_core::UpstreamProtocol;
use autodeploy_proxy::GatewaySettings;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use support::{TestGateway, client, fixed_deployment};

/// An HTTP/2 backend: its address, the connections it accepted, their tasks.
struct Backend {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    connections: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// Starts an HTTP/2-only backend: each answer is a JSON report of the request (version,
/// URI, headers, body length) followed by the trailer `grpc-status: 0`. Returns its address
/// and the count of connections it accepted.
async fn h2_backend() -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let connections = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let tasks = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let task = tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let headers: serde_json::Map<String, Value> = parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                        .collect();
                    let report = json!({
                        "version": format!("{:?}", parts.version),
                        "uri": parts.uri.to_string(),
                        "headers": headers,
                        "body_len": body.len(),
                    });
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from(report.to_string()))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let mut response =
                        Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            tasks.lock().push(task);
        }
    });
    Backend {
        addr,
        accepted,
        connections,
    }
}

async fn h2c_gateway() -> (TestGateway, Backend) {
    h2c_gateway_listening(None).await
}

/// The gateway, its `grpc` deployment on its own `listen` address if given.
async fn h2c_gateway_listening(listen: Option<std::net::SocketAddr>) -> (TestGateway, Backend) {
    let backend = h2_backend().await;
    let addr = backend.addr;
    let mut config = fixed_deployment("grpc");
    config.upstream = UpstreamProtocol::H2c;
    config.listen = listen;
    let gw = TestGateway::fixed(GatewaySettings::default(), addr, config).await;
    (gw, backend)
}

/// The link of the `grpc` deployment's inference method.
fn infer(base: &str) -> String {
    format!("{base}/d/grpc/inference.GRPCInferenceService/ModelInfer")
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2_client(addr: &str) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// One gRPC-shaped call over HTTP/2: the response head, the JSON report, the trailers.
async fn grpc_call(
    mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    url: String,
) -> (http::response::Parts, Value, Option<HeaderMap>) {
    let req = Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", "Bearer sk-template")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(chunk) = frame.data_ref() {
            data.extend_from_slice(chunk);
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    (parts, serde_json::from_slice(&data).unwrap(), trailers)
}

#[tokio::test]
async fn grpc_shaped_requests_reach_an_h2c_instance_with_trailers_both_ways() {
    let (gw, backend) = h2c_gateway().await;
    let accepted = backend.accepted.clone();
    let backend = backend.addr;
    // An HTTP/2 client (prior knowledge), as a gRPC client is.
    let sender = h2_client(gw.base.trim_start_matches("http://")).await;
    let (parts, report, trailers) = grpc_call(sender.clone(), infer(&gw.base)).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    assert!(parts.headers.contains_key("deploy-route-target"));
    assert_eq!(
        trailers.expect("the trailers reached the client")["grpc-status"],
        "0"
    );
    assert_eq!(report["version"], "HTTP/2.0");
    assert_eq!(
        report["uri"],
        format!("http://{backend}/inference.GRPCInferenceService/ModelInfer")
    );
    let headers = &report["headers"];
    assert_eq!(headers["te"], "trailers", "{headers}");
    assert_eq!(headers["authorization"], "Bearer sk-template");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.get("host").is_none(), "{headers}");
    assert_eq!(report["body_len"], 10);

    // Many calls at once share one upstream connection.
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(grpc_call(sender.clone(), infer(&gw.base))))
        .collect();
    for c in calls {
        let (parts, _, trailers) = c.await.unwrap();
        assert_eq!(parts.status, 200);
        assert!(trailers.is_some());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_http1_client_reaches_an_h2c_instance_too() {
    let (gw, backend) = h2c_gateway().await;
    let accepted = backend.accepted;
    for _ in 0..3 {
        let resp = client()
            .post(gw.url("/d/grpc/v1/echo?x=1"))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let report: Value = resp.json().await.unwrap();
        assert_eq!(report["version"], "HTTP/2.0");
        assert!(report["uri"].as_str().unwrap().ends_with("/v1/echo?x=1"));
        assert_eq!(report["body_len"], 3);
        // No TE was asked for: none is sent.
        assert!(report["headers"].get("te").is_none());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_h2c_instance_that_drops_its_connection_gets_a_new_one() {
    let (gw, backend) = h2c_gateway().await;
    let accepted = backend.accepted;
    let resp = client().get(gw.url("/d/grpc/a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The instance drops every connection (as a restarted server would).
    for task in backend.connections.lock().drain(..) {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = client().get(gw.url("/d/grpc/b")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a second connection was opened"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_grpc_client_calls_through_the_deployments_own_listener_with_paths_unchanged() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let (gw, backend) = h2c_gateway_listening(Some(listen.parse().unwrap())).await;
    let sender = h2_client(&listen).await;
    let url = format!("http://{listen}/inference.GRPCInferenceService/ModelInfer");
    let (parts, report, trailers) = grpc_call(sender, url).await;
    assert_eq!(parts.status, 200);
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    assert_eq!(
        report["uri"],
        format!(
            "http://{}/inference.GRPCInferenceService/ModelInfer",
            backend.addr
        )
    );
    gw.stop().await;
}
