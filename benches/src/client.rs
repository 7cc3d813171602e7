//! The HTTP client the measuring programs use: hyper's pooled client, Nagle off.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP/1.1 client for bodiless requests.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A client keeping up to `idle` connections per host open for reuse.
pub fn client(idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// What came back from one `GET`.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// When the response head arrived (the first byte, to within parsing).
    pub head_at: std::time::Instant,
    /// The body, read to the end.
    pub body: Bytes,
}

/// `GET url`, the body read to the end.
pub async fn get(client: &HttpClient, url: &str) -> Result<Answer, String> {
    let request = Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let head_at = std::time::Instant::now();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        head_at,
        body,
    })
}
