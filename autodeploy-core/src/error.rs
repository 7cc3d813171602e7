//! The gateway's error code table and the `{"code": N, "msg": "..."}` body.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Every error the gateway itself produces, with a stable number, message and HTTP status.
///
/// 1006 and 1007 are the product's own codes, with its exact messages. Errors from a user's
/// service are never mapped to these: they pass through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1000, 400: the request is malformed (bad header, bad framing, bad JSON).
    BadRequest,
    /// 1001, 401: the management API needs the admin token.
    Unauthorized,
    /// 1002, 404: no deployment has this id.
    DeploymentNotFound,
    /// 1003, 422: a deployment configuration is invalid.
    InvalidConfig,
    /// 1004, 502: the instance could not be started (the provider refused, or it exited).
    InstanceStartFailed,
    /// 1005, 504: the instance did not become ready within its start timeout.
    InstanceStartTimedOut,
    /// 1006, 404: `route target not found` (the product's code).
    RouteTargetNotFound,
    /// 1007, 429: `deployment replica quota exceeded` (the product's code).
    ReplicaQuotaExceeded,
    /// 1008, 503: too many requests are already waiting for this deployment.
    QueueFull,
    /// 1009, 504: the request waited for capacity longer than the deployment's wait timeout.
    QueueTimedOut,
    /// 1010, 502: the instance failed while serving the request (crash, reset, bad response).
    UpstreamFailed,
    /// 1011, 503: the provider has no capacity (no free GPU) for a new instance.
    NoCapacity,
    /// 1012, 413: the request body is larger than the gateway accepts.
    PayloadTooLarge,
    /// 1013, 431: the request headers are larger than the gateway accepts.
    HeadersTooLarge,
    /// 1014, 409: a deployment with this id already exists.
    DeploymentExists,
    /// 1015, 503: the gateway or the deployment is shutting down.
    ShuttingDown,
    /// 1016, 404: no such management API route or instance.
    NotFound,
    /// 1017, 405: the method is not allowed on this route.
    MethodNotAllowed,
    /// 1018, 504: the instance did not answer in time.
    UpstreamTimedOut,
    /// 1019, 500: an unexpected internal error (details are logged, not shown).
    Internal,
    /// 1020, 429: this client asked for `scale-out` too often (new instances cost money).
    ScaleOutRateLimited,
    /// 1021, 429 or 503: `budget exceeded`: starting one more instance would put the running
    /// hourly rate over the deployment's or the gateway's budget. 429 with `Retry-After` when
    /// an instance is due for release (room will come), 503 when none is.
    BudgetExceeded,
}

impl ErrorCode {
    /// Every code, in numeric order (for documentation and tests).
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::DeploymentNotFound,
        ErrorCode::InvalidConfig,
        ErrorCode::InstanceStartFailed,
        ErrorCode::InstanceStartTimedOut,
        ErrorCode::RouteTargetNotFound,
        ErrorCode::ReplicaQuotaExceeded,
        ErrorCode::QueueFull,
        ErrorCode::QueueTimedOut,
        ErrorCode::UpstreamFailed,
        ErrorCode::NoCapacity,
        ErrorCode::PayloadTooLarge,
        ErrorCode::HeadersTooLarge,
        ErrorCode::DeploymentExists,
        ErrorCode::ShuttingDown,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UpstreamTimedOut,
        ErrorCode::Internal,
        ErrorCode::ScaleOutRateLimited,
        ErrorCode::BudgetExceeded,
    ];

    /// The stable number in the JSON body.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1000,
            ErrorCode::Unauthorized => 1001,
            ErrorCode::DeploymentNotFound => 1002,
            ErrorCode::InvalidConfig => 1003,
            ErrorCode::InstanceStartFailed => 1004,
            ErrorCode::InstanceStartTimedOut => 1005,
            ErrorCode::RouteTargetNotFound => 1006,
            ErrorCode::ReplicaQuotaExceeded => 1007,
            ErrorCode::QueueFull => 1008,
            ErrorCode::QueueTimedOut => 1009,
            ErrorCode::UpstreamFailed => 1010,
            ErrorCode::NoCapacity => 1011,
            ErrorCode::PayloadTooLarge => 1012,
            ErrorCode::HeadersTooLarge => 1013,
            ErrorCode::DeploymentExists => 1014,
            ErrorCode::ShuttingDown => 1015,
            ErrorCode::NotFound => 1016,
            ErrorCode::MethodNotAllowed => 1017,
            ErrorCode::UpstreamTimedOut => 1018,
            ErrorCode::Internal => 1019,
            ErrorCode::ScaleOutRateLimited => 1020,
            ErrorCode::BudgetExceeded => 1021,
        }
    }

    /// The default message (exact for 1006 and 1007).
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::DeploymentNotFound => "deployment not found",
            ErrorCode::InvalidConfig => "invalid deployment config",
            ErrorCode::InstanceStartFailed => "instance failed to start",
            ErrorCode::InstanceStartTimedOut => "instance start timed out",
            ErrorCode::RouteTargetNotFound => "route target not found",
            ErrorCode::ReplicaQuotaExceeded => "deployment replica quota exceeded",
            ErrorCode::QueueFull => "deployment queue full",
            ErrorCode::QueueTimedOut => "timed out waiting for an instance",
            ErrorCode::UpstreamFailed => "instance failed while serving the request",
            ErrorCode::NoCapacity => "no capacity for a new instance",
            ErrorCode::PayloadTooLarge => "request body too large",
            ErrorCode::HeadersTooLarge => "request headers too large",
            ErrorCode::DeploymentExists => "deployment already exists",
            ErrorCode::ShuttingDown => "shutting down",
            ErrorCode::NotFound => "not found",
            ErrorCode::MethodNotAllowed => "method not allowed",
            ErrorCode::UpstreamTimedOut => "instance did not answer in time",
            ErrorCode::Internal => "internal error",
            ErrorCode::ScaleOutRateLimited => "scale-out rate limit exceeded",
            ErrorCode::BudgetExceeded => "budget exceeded",
        }
    }

    /// The HTTP status the gateway answers with. For 1021 this is 503, the status without a
    /// `Retry-After`; [`GatewayError::http_status`] answers 429 when it carries one.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::DeploymentNotFound
            | ErrorCode::RouteTargetNotFound
            | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::DeploymentExists => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidConfig => 422,
            ErrorCode::ReplicaQuotaExceeded | ErrorCode::ScaleOutRateLimited => 429,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::Internal => 500,
            ErrorCode::InstanceStartFailed | ErrorCode::UpstreamFailed => 502,
            ErrorCode::QueueFull
            | ErrorCode::NoCapacity
            | ErrorCode::ShuttingDown
            | ErrorCode::BudgetExceeded => 503,
            ErrorCode::InstanceStartTimedOut
            | ErrorCode::QueueTimedOut
            | ErrorCode::UpstreamTimedOut => 504,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.message())
    }
}

/// An error the gateway answers with: a code and a message, serialized exactly as
/// `{"code": N, "msg": "..."}`.
///
/// `msg` is the code's message, optionally followed by `": "` and a detail (never for 1006 and
/// 1007, whose bodies are fixed by the product).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {}", code.code(), msg)]
pub struct GatewayError {
    /// What went wrong.
    pub code: ErrorCode,
    /// The message sent to the client.
    pub msg: Cow<'static, str>,
    /// When the client may usefully try again, sent as `Retry-After` (whole seconds, at
    /// least 1). Set for 1021 when an instance is due for release.
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    /// The error with the code's own message.
    pub const fn new(code: ErrorCode) -> Self {
        Self {
            code,
            msg: Cow::Borrowed(code.message()),
            retry_after: None,
        }
    }

    /// The error with a detail appended to the code's message. For 1006 and 1007 the detail is
    /// dropped so their bodies stay exactly the product's.
    pub fn with_detail(code: ErrorCode, detail: impl fmt::Display) -> Self {
        match code {
            ErrorCode::RouteTargetNotFound | ErrorCode::ReplicaQuotaExceeded => Self::new(code),
            _ => Self {
                code,
                msg: Cow::Owned(format!("{}: {detail}", code.message())),
                retry_after: None,
            },
        }
    }

    /// The same error, telling the client to try again after `after`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The `Retry-After` value in whole seconds (rounded up, at least 1), if there is one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| {
            let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            whole.max(1)
        })
    }

    /// The HTTP status to answer with: the code's, except 1021 with a `Retry-After`, which is
    /// 429 (room will come) rather than 503.
    pub fn http_status(&self) -> u16 {
        match self.code {
            ErrorCode::BudgetExceeded if self.retry_after.is_some() => 429,
            code => code.http_status(),
        }
    }

    /// The JSON body, exactly `{"code": N, "msg": "..."}` (the product's spacing).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.msg.len() + 24);
        out.push_str("{\"code\": ");
        out.push_str(&self.code.code().to_string());
        out.push_str(", \"msg\": \"");
        for c in self.msg.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push_str("\"}");
        out
    }
}

impl From<ErrorCode> for GatewayError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

impl Serialize for GatewayError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("GatewayError", 2)?;
        st.serialize_field("code", &self.code.code())?;
        st.serialize_field("msg", &self.msg)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_bodies_are_exact() {
        assert_eq!(
            GatewayError::new(ErrorCode::RouteTargetNotFound).to_json(),
            r#"{"code": 1006, "msg": "route target not found"}"#
        );
        assert_eq!(
            GatewayError::with_detail(ErrorCode::ReplicaQuotaExceeded, "2 of 2").to_json(),
            r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#
        );
    }

    #[test]
    fn budget_exceeded_is_429_with_a_retry_after_else_503() {
        let bare = GatewayError::new(ErrorCode::BudgetExceeded);
        assert_eq!(
            bare.to_json(),
            r#"{"code": 1021, "msg": "budget exceeded"}"#
        );
        assert_eq!(bare.http_status(), 503);
        assert_eq!(bare.retry_after_secs(), None);
        let later = bare.retry_after(Duration::from_millis(2_100));
        assert_eq!(later.http_status(), 429);
        assert_eq!(later.retry_after_secs(), Some(3));
        let soon = GatewayError::new(ErrorCode::BudgetExceeded).retry_after(Duration::ZERO);
        assert_eq!(soon.retry_after_secs(), Some(1));
    }

    #[test]
    fn json_is_valid_and_escaped() {
        let e = GatewayError::with_detail(ErrorCode::InstanceStartFailed, "exit 1\n\"boom\"\u{1}");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["code"], 1004);
        assert_eq!(v["msg"], "instance failed to start: exit 1\n\"boom\"\u{1}");
        assert_eq!(serde_json::to_value(&e).unwrap(), v);
    }

    #[test]
    fn codes_are_unique_and_ordered() {
        let codes: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        assert!(
            ErrorCode::ALL
                .iter()
                .all(|c| (400..600).contains(&c.http_status()))
        );
    }
}
