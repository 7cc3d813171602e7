//! Errors become responses here, and only here: every error the gateway produces is a JSON
//! body `{"code": N, "msg": "..."}` with the code's HTTP status, and a `Retry-After` header
//! when the error says when to try again (1020, 1021).

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
    if let Some(secs) = err.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
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
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn budget_exceeded_carries_retry_after_only_when_room_will_come() {
        let r = error_response(&ErrorCode::BudgetExceeded.into());
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let later = GatewayError::new(ErrorCode::BudgetExceeded)
            .retry_after(std::time::Duration::from_millis(41_500));
        let r = error_response(&later);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "42");
    }
}
