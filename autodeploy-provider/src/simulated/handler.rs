//! What a simulated instance answers. Every response carries `x-instance-id`.
//!
//! | request | answer |
//! |---|---|
//! | any path not below | `200`, JSON `{"instance", "method", "path", "query", "headers", "body_len"}`; the body is read and counted, never kept |
//! | `GET /sleep?ms=N` | the same JSON after `N` ms |
//! | `/status?code=N` | the same JSON with status `N` (200–599) |
//! | `/echo` | the request body streamed back as it arrives, with its `content-type` |
//! | `/stream?chunks=N&interval_ms=M` | `text/event-stream`: `N` events (default 10), `M` ms apart (default 100), the first at once |
//! | `/bytes?n=N` | `N` zero bytes (default 0) in 64 KiB chunks, with `content-length` |
//! | `/ws` with `Upgrade: websocket` | a WebSocket that echoes every text and binary message |
//!
//! Before the instance's boot time has passed it answers `503` (so a gateway that forwards
//! before readiness is proven shows up in tests). The header `x-sim-delay-ms: N` replaces the
//! configured response delay for one request. Bad query values answer `400`.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use autodeploy_core::InstanceId;
use bytes::Bytes;
use futures_util::stream;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde_json::{Map, Value, json};
use tokio::time::{Instant, sleep};

use super::server::{Shared, Stop};
use super::websocket;

/// The header naming the instance that answered.
pub const INSTANCE_HEADER: &str = "x-instance-id";
/// The request header that replaces the configured response delay, in milliseconds.
pub const DELAY_HEADER: &str = "x-sim-delay-ms";

/// Errors of a response body.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every simulated response.
pub(super) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request that reached an instance that has stopped: the connection is closed without an
/// answer, as a crashed process would.
#[derive(Debug, thiserror::Error)]
#[error("simulated instance {0} has stopped")]
pub(super) struct Refused(InstanceId);

/// Answers one request.
pub(super) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refused> {
    let id = shared.id;
    if !shared.is_running() {
        return Err(Refused(id));
    }
    if Instant::now() < shared.ready_at {
        let body = json!({"instance": id, "error": "booting"});
        return Ok(tagged(
            id,
            json_response(StatusCode::SERVICE_UNAVAILABLE, &body),
        ));
    }
    let served = shared.served.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(limit) = shared.crash_after {
        if served > limit {
            return Err(Refused(id));
        }
        if served == limit {
            shared.request_stop(Stop::Crash(format!(
                "crashed after serving {limit} requests (crash_after_requests)"
            )));
        }
    }
    let delay = requested_delay(request.headers()).unwrap_or(shared.response_delay);
    if !delay.is_zero() {
        sleep(delay).await;
    }
    let response = match route(id, request).await {
        Ok(response) => response,
        Err(problem) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"instance": id, "error": problem}),
        ),
    };
    Ok(tagged(id, response))
}

/// Picks the answer by path; `Err` is a bad request, explained.
async fn route(
    id: InstanceId,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, String> {
    let query = request.uri().query().unwrap_or_default().to_owned();
    match request.uri().path() {
        "/echo" => Ok(echo(request)),
        "/stream" => {
            let chunks = param(&query, "chunks")?.unwrap_or(10);
            let interval = Duration::from_millis(param(&query, "interval_ms")?.unwrap_or(100));
            Ok(event_stream(id, chunks, interval))
        }
        "/bytes" => Ok(zeros(param(&query, "n")?.unwrap_or(0))),
        "/status" => {
            let code = param::<u16>(&query, "code")?.ok_or("missing query parameter code")?;
            let status = StatusCode::from_u16(code)
                .ok()
                .filter(|s| (200..=599).contains(&s.as_u16()))
                .ok_or_else(|| format!("code must be within 200..=599, got {code}"))?;
            let mut response = describe(id, request).await;
            *response.status_mut() = status;
            Ok(response)
        }
        "/sleep" => {
            let ms = param(&query, "ms")?.unwrap_or(0);
            sleep(Duration::from_millis(ms)).await;
            Ok(describe(id, request).await)
        }
        "/ws" if websocket::is_upgrade(&request) => websocket::accept(request),
        _ => Ok(describe(id, request).await),
    }
}

fn tagged(id: InstanceId, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(INSTANCE_HEADER, value);
    }
    response
}

fn requested_delay(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(DELAY_HEADER)?.to_str().ok()?;
    raw.trim().parse().ok().map(Duration::from_millis)
}

/// The value of query parameter `name`, parsed; `Ok(None)` when absent.
fn param<T: std::str::FromStr>(query: &str, name: &str) -> Result<Option<T>, String> {
    let Some(raw) = query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(key, value)| (key == name).then_some(value))
    else {
        return Ok(None);
    };
    raw.parse()
        .map(Some)
        .map_err(|_| format!("query parameter {name} has a bad value {raw:?}"))
}

pub(super) fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The default answer: what the instance saw. The body is counted frame by frame, not kept.
async fn describe(id: InstanceId, request: Request<Incoming>) -> Response<ResponseBody> {
    let (parts, mut body) = request.into_parts();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                let _ = write!(joined, ", {value}");
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_len += data.len() as u64;
                }
            }
            // The client went away mid-body: answer with what arrived.
            Err(_) => break,
        }
    }
    let method: &Method = &parts.method;
    json_response(
        StatusCode::OK,
        &json!({
            "instance": id,
            "method": method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or_default(),
            "headers": headers,
            "body_len": body_len,
        }),
    )
}

fn echo(request: Request<Incoming>) -> Response<ResponseBody> {
    let content_type = request.headers().get(CONTENT_TYPE).cloned();
    let mut response = Response::new(request.into_body().map_err(BoxError::from).boxed_unsync());
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

fn event_stream(id: InstanceId, chunks: u64, interval: Duration) -> Response<ResponseBody> {
    let events = stream::unfold(0u64, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            sleep(interval).await;
        }
        let event = format!("data: {{\"instance\":\"{id}\",\"chunk\":{i}}}\n\n");
        Some((Ok::<_, BoxError>(Frame::data(Bytes::from(event))), i + 1))
    });
    let mut response = Response::new(StreamBody::new(events).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

fn zeros(n: u64) -> Response<ResponseBody> {
    let mut response = Response::new(Zeros { remaining: n }.boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// `remaining` zero bytes in chunks of at most 64 KiB, with an exact size (so hyper sends a
/// `content-length`).
#[derive(Debug)]
struct Zeros {
    remaining: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_parse_or_explain() {
        assert_eq!(param::<u64>("ms=250", "ms"), Ok(Some(250)));
        assert_eq!(param::<u64>("a=1&chunks=3&b", "chunks"), Ok(Some(3)));
        assert_eq!(param::<u64>("a=1", "ms"), Ok(None));
        assert_eq!(param::<u64>("", "ms"), Ok(None));
        assert!(param::<u64>("ms=soon", "ms").is_err());
    }
}
