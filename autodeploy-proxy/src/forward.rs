//! The data plane: one request through a link to an instance and its response back,
//! streamed both ways, with the lease held until the response's last byte.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use autodeploy_core::{DeployConfig, ErrorCode, GatewayError, Lease, UpstreamProtocol};
use autodeploy_routing::RouteRule;
use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use subtle::ConstantTimeEq;

use crate::gateway::{Deployment, Shared};
use crate::headers::{
    DEPLOY_ACCESS_KEY, DEPLOY_ROUTE_RULE, DEPLOY_ROUTE_TARGET, DEPLOY_WAIT_MS, prepare_upstream,
    strip_hop_by_hop, wants_upgrade,
};
use crate::respond::error_response;
use crate::upstream::{EndpointPool, UpstreamError};

/// The client address of a request, put in its extensions by the gateway's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Forwards `req` to an instance of `deployment` chosen by its route rule, `path_and_query`
/// being what the instance sees. Every outcome is a response: the instance's, or the
/// gateway's JSON error.
pub(crate) async fn forward(
    shared: &Shared,
    deployment: &Deployment,
    req: Request<Body>,
    path_and_query: &str,
) -> Response<Body> {
    let arrived = tokio::time::Instant::now();
    let rule = RouteRule::from_header(req.headers().get(DEPLOY_ROUTE_RULE).map(|v| v.as_bytes()));
    let response = match forward_inner(shared, deployment, &rule, req, path_and_query).await {
        Ok(response) => response,
        Err(err) => {
            if err.code == ErrorCode::Internal {
                tracing::error!(deployment = deployment.id(), %err, "internal error");
            }
            error_response(&err)
        }
    };
    deployment.count_request(
        &shared.metrics,
        rule_label(&rule),
        response.status().as_u16(),
    );
    deployment.time_request(&shared.metrics, rule_label(&rule), arrived.elapsed());
    response
}

/// One request through the data path, in five steps: admit it (access key, body limit,
/// scale-out rate), route it (a lease on an instance, waiting for one if need be), prepare
/// the request the instance gets, send it, and relay the response back with the lease.
async fn forward_inner(
    shared: &Shared,
    deployment: &Deployment,
    rule: &RouteRule,
    req: Request<Body>,
    path_and_query: &str,
) -> Result<Response<Body>, GatewayError> {
    let speaks_h2 = admit(shared, deployment, rule, &req)?;
    let lease = route(shared, deployment, rule).await?;

    let pool = shared.upstream.pool(lease.endpoint());
    let upgrade = wants_upgrade(req.headers());
    // Upgrades (WebSocket) go over HTTP/1.1 whatever the deployment speaks; an `https`
    // instance speaks what it chose by ALPN.
    let h2 = !upgrade
        && (speaks_h2
            || pool
                .negotiated_h2()
                .await
                .map_err(|err| upstream_error(&err, lease.instance()))?);
    let (upstream, client) = prepare(shared, &pool, req, path_and_query, upgrade, h2)?;

    let (response, sender) = send(shared, &pool, &lease, upstream, h2).await?;
    if lease.waited().is_some() {
        // Only requests that waited for an instance (a cold start's first one among them)
        // are recorded, so the common path takes no lock for the dashboard.
        shared
            .events
            .histories()
            .first_response(deployment.id(), lease.instance());
    }
    relay(response, sender, pool, lease, client)
}

/// What the response to the client needs of its request: the HTTP version it asked in, and
/// its side of an upgrade it asked for.
struct ClientSide {
    version: Version,
    upgrade: Option<OnUpgrade>,
}

/// Step 1, admit: refuses a request without a valid access key (before anything else, so
/// it learns nothing and starts nothing), one that declares a body over the limit, and a
/// scale-out request over its client's rate. Returns whether the deployment speaks `h2c`,
/// read in the same look at the configuration.
fn admit(
    shared: &Shared,
    deployment: &Deployment,
    rule: &RouteRule,
    req: &Request<Body>,
) -> Result<bool, GatewayError> {
    // What this request needs of the configuration, read once (not held across awaits).
    let (admitted, speaks_h2) = {
        let config = deployment.controller.config();
        (
            admitted(&config, req.headers()),
            config.upstream == UpstreamProtocol::H2c,
        )
    };
    if !admitted {
        return Err(ErrorCode::Unauthorized.into());
    }
    let limit = shared.settings.max_request_body;
    if limit > 0 && declared_length(req).is_some_and(|n| n > limit) {
        return Err(GatewayError::with_detail(
            ErrorCode::PayloadTooLarge,
            format!("the limit is {limit} bytes"),
        ));
    }
    if *rule == RouteRule::ScaleOut
        && let Some(retry_after) = deployment.scale_out_refused(client_addr(req.extensions()))
    {
        let secs = retry_after.as_secs().max(1);
        return Err(GatewayError::with_detail(
            ErrorCode::ScaleOutRateLimited,
            format!("retry after {secs} s"),
        )
        .retry_after(Duration::from_secs(secs)));
    }
    Ok(speaks_h2)
}

/// Step 2, route: a lease on the instance the route rule picks, after waiting for one to
/// start if need be (the wait is recorded).
async fn route(
    shared: &Shared,
    deployment: &Deployment,
    rule: &RouteRule,
) -> Result<Lease, GatewayError> {
    let lease = deployment
        .controller
        .acquire(|view| deployment.decide(rule, view))
        .await?;
    if let Some(waited) = lease.waited() {
        shared
            .metrics
            .observe_wait(deployment.id(), lease.wait(), waited);
    }
    Ok(lease)
}

/// Step 3, prepare upstream: the request the instance gets (`h2` or HTTP/1.1, hop-by-hop
/// headers stripped, `X-Forwarded-*` set, the instance's authority, the body limited), and
/// what the relay needs of the client's request.
fn prepare(
    shared: &Shared,
    pool: &EndpointPool,
    req: Request<Body>,
    path_and_query: &str,
    upgrade: bool,
    h2: bool,
) -> Result<(Request<Body>, ClientSide), GatewayError> {
    let (mut parts, body) = req.into_parts();
    let client = ClientSide {
        version: parts.version,
        upgrade: if upgrade {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        },
    };
    // gRPC needs `TE: trailers` end to end; HTTP/2 allows TE with exactly that value.
    let te_trailers = h2 && asks_for_trailers(&parts.headers);
    prepare_upstream(&mut parts.headers, client_addr(&parts.extensions), upgrade);
    if h2 {
        // HTTP/2 carries the instance's address as `:authority`, from an absolute URI.
        parts.uri = Uri::builder()
            .scheme(pool.scheme())
            .authority(pool.host().as_bytes())
            .path_and_query(if path_and_query.is_empty() {
                "/"
            } else {
                path_and_query
            })
            .build()
            .map_err(|e| GatewayError::with_detail(ErrorCode::BadRequest, e))?;
        parts.version = Version::HTTP_2;
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
    } else {
        parts.headers.insert(header::HOST, pool.host().clone());
        parts.uri = origin_form(path_and_query)
            .map_err(|e| GatewayError::with_detail(ErrorCode::BadRequest, e))?;
        parts.version = Version::HTTP_11;
    }
    parts.extensions = http::Extensions::new();
    let limit = shared.settings.max_request_body;
    let body = if limit > 0 {
        Body::new(http_body_util::Limited::new(body, limit as usize))
    } else {
        body
    };
    Ok((Request::from_parts(parts, body), client))
}

/// Step 4, send: the request to the instance, within the response-head timeout. HTTP/1.1
/// lends a connection, returned with the response, that goes back to the pool when the body
/// ends; HTTP/2 shares one connection and needs nothing given back.
async fn send(
    shared: &Shared,
    pool: &EndpointPool,
    lease: &Lease,
    upstream: Request<Body>,
    h2: bool,
) -> Result<(Response<Incoming>, Option<SendRequest<Body>>), GatewayError> {
    let timeout = shared.settings.response_header_timeout;
    let sent = if h2 {
        tokio::time::timeout(timeout, pool.send_h2(upstream))
            .await
            .map(|sent| sent.map(|response| (response, None)))
    } else {
        tokio::time::timeout(timeout, pool.send(upstream))
            .await
            .map(|sent| sent.map(|(response, sender)| (response, Some(sender))))
    };
    match sent {
        Err(_) => Err(GatewayError::with_detail(
            ErrorCode::UpstreamTimedOut,
            format!("no response headers within {timeout:?}"),
        )),
        Ok(Err(err)) => Err(upstream_error(&err, lease.instance())),
        Ok(Ok(sent)) => Ok(sent),
    }
}

/// Step 5, relay: the instance's response to the client, its body holding the lease (and the
/// HTTP/1.1 connection) until its last byte; a `101 Switching Protocols` becomes a tunnel.
/// A response framed both ways (`Content-Length` and `Transfer-Encoding`) is refused.
fn relay(
    mut response: Response<Incoming>,
    sender: Option<SendRequest<Body>>,
    pool: Arc<EndpointPool>,
    lease: Lease,
    client: ClientSide,
) -> Result<Response<Body>, GatewayError> {
    if response.headers().contains_key(header::CONTENT_LENGTH)
        && response.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return Err(GatewayError::with_detail(
            ErrorCode::UpstreamFailed,
            "the instance answered with both Content-Length and Transfer-Encoding",
        ));
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client.upgrade else {
            return Err(GatewayError::with_detail(
                ErrorCode::UpstreamFailed,
                "the instance switched protocols without being asked",
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        // The connection becomes the tunnel.
        drop(sender);
        let (mut parts, _) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        mark(&mut parts.headers, &lease);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, lease));
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, incoming) = response.into_parts();
    let conn = match sender {
        Some(sender) if incoming.is_end_stream() => {
            // No body to wait for (HEAD, 204, `Content-Length: 0`).
            pool.put(sender);
            None
        }
        Some(sender) => Some((pool, sender)),
        None => None,
    };
    // The instance may speak HTTP/1.0 (python's http.server does); the client gets the
    // version it asked in, with the framing our server chooses for it.
    parts.version = client.version;
    strip_hop_by_hop(&mut parts.headers, false);
    mark(&mut parts.headers, &lease);
    Ok(Response::from_parts(
        parts,
        Body::new(LeasedBody {
            inner: incoming,
            lease: Some(lease),
            conn,
        }),
    ))
}

/// Whether a request with `headers` may use a link of `config`: always when it has no access
/// keys, otherwise when `Deploy-Access-Key` holds one of them. Every key is compared in
/// constant time, so the answer's timing tells nothing about how close a guess was.
fn admitted(config: &DeployConfig, headers: &http::HeaderMap) -> bool {
    if config.access_keys.is_empty() {
        return true;
    }
    let presented = headers
        .get(DEPLOY_ACCESS_KEY)
        .map_or(&[][..], |v| v.as_bytes());
    let mut admitted = subtle::Choice::from(0);
    for key in &config.access_keys {
        admitted |= presented.ct_eq(key.as_bytes());
    }
    bool::from(admitted)
}

/// Whether the client sent `TE: trailers` (among other TE values or not).
fn asks_for_trailers(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The client's address: set by our listener, or by axum's `ConnectInfo` when the gateway is
/// mounted in another server.
fn client_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions.get::<ClientAddr>().map(|c| c.0).or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    })
}

/// The request target the instance gets: `path_and_query` in origin form, `/` when empty
/// (as HTTP/1.1 clients send it; the instance's address goes in `Host`).
fn origin_form(path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
    if path_and_query.is_empty() {
        return Ok(Uri::from_static("/"));
    }
    Uri::try_from(path_and_query)
}

/// The metric label of a route rule (ids are not labels: their number is unbounded).
fn rule_label(rule: &RouteRule) -> &'static str {
    match rule {
        RouteRule::Default => "default",
        RouteRule::ScaleOut => "scale-out",
        RouteRule::Random => "random",
        RouteRule::RoundRobin => "round-robin",
        _ => "instance",
    }
}

/// The `Content-Length` a request declares, if any.
fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Adds the gateway's response headers: the instance that answered, and the wait if any.
fn mark(headers: &mut http::HeaderMap, lease: &Lease) {
    if let Ok(target) = HeaderValue::from_str(lease.instance().as_str()) {
        headers.insert(DEPLOY_ROUTE_TARGET, target);
    }
    if let Some(waited) = lease.waited() {
        headers.insert(DEPLOY_WAIT_MS, HeaderValue::from(waited.as_millis() as u64));
    }
}

/// Maps a failed upstream exchange to the gateway's error: the request body over its limit
/// gives 1012, a client body that could not be read (bad chunk framing, cut off) 1000, and
/// anything else (refused, reset, closed early) 1010.
fn upstream_error(err: &UpstreamError, instance: autodeploy_core::InstanceId) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut client_body = None;
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return ErrorCode::PayloadTooLarge.into();
        }
        // hyper's client calls an error of the request body a "user" error: the fault is
        // the client's, not the instance's (which is not marked failed for it either).
        if client_body.is_none()
            && let Some(hyper_err) = e.downcast_ref::<hyper::Error>()
            && hyper_err.is_user()
        {
            // Its innermost cause says what was wrong (e.g. "invalid chunk size").
            let mut cause = hyper_err.to_string();
            let mut inner = std::error::Error::source(hyper_err);
            while let Some(e) = inner {
                cause = e.to_string();
                inner = e.source();
            }
            client_body = Some(cause);
        }
        source = e.source();
    }
    if let Some(cause) = client_body {
        return GatewayError::with_detail(
            ErrorCode::BadRequest,
            format!("the request body could not be read: {cause}"),
        );
    }
    let mut detail = format!("instance {instance}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        source = e.source();
    }
    GatewayError::with_detail(ErrorCode::UpstreamFailed, detail)
}

/// Copies bytes both ways between an upgraded client connection and an upgraded instance
/// connection; the lease (activity on the instance) lasts as long as the tunnel.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, lease: Lease) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(instance = %lease.instance(), %err, "upgraded connection ended");
            }
        }
        Err(err) => tracing::debug!(instance = %lease.instance(), %err, "upgrade failed"),
    }
    drop(lease);
}

pin_project! {
    /// An instance's response body, holding the request's lease until the last byte has been
    /// passed on or the client went away: an open stream counts as activity. Its connection
    /// goes back to the pool once the body has ended (a body cut short closes it).
    struct LeasedBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
        conn: Option<(Arc<EndpointPool>, SendRequest<Body>)>,
    }
}

impl HttpBody for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) => {
                if this.inner.is_end_stream()
                    && let Some((pool, sender)) = this.conn.take()
                {
                    pool.put(sender);
                }
            }
            None => {
                this.lease.take();
                if let Some((pool, sender)) = this.conn.take() {
                    pool.put(sender);
                }
            }
            Some(Err(_)) => {
                this.lease.take();
                this.conn.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_is_the_path_and_query() {
        for pq in ["/", "/v1/audio/speech?x=1&y=%20", "//files/", "/../b/"] {
            let uri = origin_form(pq).unwrap();
            assert_eq!(uri.path_and_query().unwrap().as_str(), pq);
            assert!(uri.scheme().is_none() && uri.authority().is_none());
        }
        assert_eq!(origin_form("").unwrap(), "/");
    }
}
