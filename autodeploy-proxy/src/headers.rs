//! Header rules of a reverse proxy: hop-by-hop removal (RFC 9110 §7.6.1), `X-Forwarded-*`,
//! and the gateway's own control headers (`Deploy-Route-Rule`, `Deploy-Access-Key` in;
//! `Deploy-Route-Target`, `Deploy-Wait-Ms` out).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request header that selects a route rule (the product's name).
pub const DEPLOY_ROUTE_RULE: HeaderName = HeaderName::from_static("deploy-route-rule");
/// The request header carrying a deployment's access key, when it has any; never forwarded.
pub const DEPLOY_ACCESS_KEY: HeaderName = HeaderName::from_static("deploy-access-key");
/// The response header naming the instance that produced the response (the product's name).
pub const DEPLOY_ROUTE_TARGET: HeaderName = HeaderName::from_static("deploy-route-target");
/// The response header saying how long the request waited for an instance (cold start,
/// scale-out, queue), in milliseconds; absent when it was routed at once.
pub const DEPLOY_WAIT_MS: HeaderName = HeaderName::from_static("deploy-wait-ms");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never forwarded (plus whatever `Connection` names).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the request asks for a protocol upgrade (WebSocket): `Connection: upgrade` and an
/// `Upgrade` header.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and every header named in `Connection`. With `keep_upgrade`,
/// `Upgrade` and `Connection: upgrade` survive (a WebSocket handshake passes through).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The common case, on every request and response: nothing to remove. One pass over the
    // few headers present is cheaper than eight removals by name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Prepares a client's request headers for the instance: hop-by-hop and gateway control
/// headers removed, `Host` left to the client library (the instance's address), the original
/// host, scheme and client address in `X-Forwarded-*`. `Authorization` and every other
/// end-to-end header stay untouched.
pub fn prepare_upstream(headers: &mut HeaderMap, client: Option<SocketAddr>, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    headers.remove(DEPLOY_ROUTE_RULE);
    headers.remove(DEPLOY_ACCESS_KEY);
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if let Some(client) = client {
        let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) if !prior.trim().is_empty() => {
                HeaderValue::from_str(&format!("{prior}, {}", client.ip())).ok()
            }
            _ => ip_value(client.ip()),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// `ip` as a header value, IPv4 written with `itoa`: this runs on every forwarded request,
/// and the formatting machinery costs more than the rest of the header rewrite.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut out = String::with_capacity(15);
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(digits.format(octet));
    }
    HeaderValue::try_from(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer sk-template".parse().unwrap());
        h.insert(DEPLOY_ROUTE_RULE, "random".parse().unwrap());
        h.insert(DEPLOY_ACCESS_KEY, "k3y-0123456789abcdef".parse().unwrap());
        h.insert(header::HOST, "gw:8000".parse().unwrap());
        prepare_upstream(&mut h, Some("10.0.0.1:5555".parse().unwrap()), false);
        assert!(!h.contains_key(DEPLOY_ACCESS_KEY));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::TE));
        assert!(!h.contains_key(DEPLOY_ROUTE_RULE));
        assert!(!h.contains_key(header::HOST));
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-template");
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "gw:8000");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn forwarded_for_writes_every_address_as_display_does() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut h = HeaderMap::new();
            prepare_upstream(&mut h, Some(SocketAddr::new(ip, 1)), false);
            assert_eq!(h[X_FORWARDED_FOR], ip.to_string().as_str());
        }
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
        prepare_upstream(&mut h, Some("127.0.0.1:1".parse().unwrap()), false);
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 127.0.0.1");
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }
}
