//! The dashboard at `/ui`: plain HTML, CSS and JavaScript modules compiled into the binary
//! (no build step, no separate server). The files themselves need no token; every data call
//! they make goes to `/api/v1` with the token as an `Authorization: Bearer` header, kept in
//! the browser's `sessionStorage` (never in a URL or a cookie).
//!
//! Every answer carries a Content-Security-Policy that allows scripts and styles from the
//! gateway only (no inline script, no `eval`), data calls to the gateway only, and no framing.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, header};

use autodeploy_core::ErrorCode;

use crate::respond::ApiError;

/// The dashboard's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard: its name under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const fn asset(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset(
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    asset(
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    asset("app.js", JS, include_bytes!("../ui/app.js")),
    asset("api.js", JS, include_bytes!("../ui/api.js")),
    asset("dom.js", JS, include_bytes!("../ui/dom.js")),
    asset("format.js", JS, include_bytes!("../ui/format.js")),
    asset("chart.js", JS, include_bytes!("../ui/chart.js")),
    asset("overview.js", JS, include_bytes!("../ui/overview.js")),
    asset("deployment.js", JS, include_bytes!("../ui/deployment.js")),
];

/// Whether `path` is one of the dashboard's static files (served without the token).
pub(crate) fn is_static(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The dashboard's routes: `/ui` (redirects to `/ui/`), `/ui/` and `/ui/{file}`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::from(ErrorCode::NotFound).into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary: always revalidate, so an upgrade is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_policy_and_unknown_ones_are_404() {
        for asset in ASSETS {
            let response = serve(asset.name);
            assert_eq!(response.status(), 200, "{}", asset.name);
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
        }
        assert_eq!(serve("../Cargo.toml").status(), 404);
        assert_eq!(serve("nope.js").status(), 404);
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_the_page_has_none() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        let index = std::str::from_utf8(include_bytes!("../ui/index.html")).unwrap();
        // Only module scripts loaded from files: no inline code, no inline handlers.
        assert!(!index.contains("<script>"));
        let inline_handler = index
            .split_whitespace()
            .any(|word| word.starts_with("on") && word.contains('='));
        assert!(!inline_handler);
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let code = std::str::from_utf8(asset.body).unwrap();
            assert!(!code.contains("innerHTML"), "{} uses innerHTML", asset.name);
            assert!(!code.contains("insertAdjacentHTML"), "{}", asset.name);
            assert!(!code.contains("eval("), "{}", asset.name);
        }
    }
}
