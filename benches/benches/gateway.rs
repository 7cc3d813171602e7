//! The gateway's in-process request path: `gateway.service().oneshot(request)` for
//! `GET /d/fast/` (14-byte body) and `GET /d/fast/1m` (1 MiB), the response body read to
//! the end, against a fast hyper backend on loopback; and the same requests sent to the
//! backend directly with the same pooled hyper client settings, for comparison. The
//! difference is what the gateway adds per request (routing, lease, header rewriting, one
//! more hop through hyper).
//!
//! The deployment's instances come from [`Fixed`], which hands out the backend's address:
//! the warm path, no provider involved.

use std::sync::Arc;
use std::time::Duration;

use autodeploy_benches::backend;
use autodeploy_benches::fixed::Fixed;
use autodeploy_core::{DeployConfig, GpuProvider};
use autodeploy_proxy::{Gateway, GatewayService};
use axum::body::Body;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

type DirectClient = Client<HttpConnector, Empty<Bytes>>;

async fn setup() -> (GatewayService, DirectClient, String) {
    let addr = backend::spawn().await.expect("backend binds");
    let provider: Arc<dyn GpuProvider> = Arc::new(Fixed::new(addr));
    let mut config = DeployConfig::new("fast", "true", Duration::from_secs(3600), 1);
    config.provider = "simulated".into();
    let gateway = Gateway::builder()
        .provider("simulated", provider)
        .deployment(config)
        .build()
        .await
        .expect("gateway builds");
    let service = gateway.service();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    (service, client, format!("http://{addr}"))
}

async fn through_gateway(service: &GatewayService, path: &str) -> usize {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("body");
    body.to_bytes().len()
}

async fn direct(client: &DirectClient, url: &str) -> usize {
    let request = Request::get(url).body(Empty::new()).expect("request");
    let response = client.request(request).await.expect("backend answers");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("body");
    body.to_bytes().len()
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (service, client, base) = rt.block_on(setup());
    // The first request cold-starts the (fixed) instance.
    rt.block_on(through_gateway(&service, "/d/fast/"));
    let (service, client) = (&service, &client);

    for (name, gateway_path, direct_path, bytes) in [
        ("small", "/d/fast/", "/", backend::SMALL_BODY.len()),
        ("1MiB", "/d/fast/1m", "/1m", backend::LARGE_LEN),
    ] {
        let mut group = c.benchmark_group(format!("request/{name}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        let url = format!("{base}{direct_path}");
        let url = url.as_str();
        group.bench_function("direct", |b| {
            b.to_async(&rt)
                .iter(|| async move { direct(client, url).await })
        });
        group.bench_function("gateway", |b| {
            b.to_async(&rt)
                .iter(|| async move { through_gateway(service, gateway_path).await })
        });
        group.finish();
    }
}

criterion_group!(benches, request_path);
criterion_main!(benches);
