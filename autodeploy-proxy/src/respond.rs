//! Errors become responses here, and only here: every error the gateway produces is a JSON
//! body `{"code": N, "msg": "..."}` with the code's HTTP status.

use autodeploy_core::{ErrorCode, GatewayError};
use axum::body::Body;
use axum::response::IntoResponse;
use http::{HeaderValue, Response, StatusCode, header};

/// The response for `err`. Internal errors are logged by the caller; their body stays generic.
pub fn error_response(err: &GatewayError) -> Response<Body> {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(err.to_json()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A [`GatewayError`] as an axum response, for the management API's handlers.
#[derive(Debug)]
pub struct ApiError(pub GatewayError);

impl From<GatewayError> for ApiError {
    fn from(err: GatewayError) -> Self {
        Self(err)
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self(code.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        error_response(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_content_type_follow_the_code() {
        let r = error_response(&ErrorCode::RouteTargetNotFound.into());
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = error_response(&ErrorCode::ReplicaQuotaExceeded.into());
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
