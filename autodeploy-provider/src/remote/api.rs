//! One HTTP client for a cloud's API: the key in a header (never anywhere else), a timeout
//! on every request, and the retry policy every remote provider shares.
//!
//! - 401 and 403 stop at once: [`ApiError::KeyRefused`], whatever the retry policy.
//! - 429 waits for `Retry-After` (seconds or an HTTP date; the retry backoff when absent),
//!   then tries again.
//! - 5xx, timeouts and connection errors are retried with capped exponential backoff and
//!   jitter when the call is [`Retry::Idempotent`]; a [`Retry::Never`] call (a create) hands
//!   them back as [`ApiError::Transient`], and the caller decides (look before retrying).
//! - Other 4xx are [`ApiError::Rejected`], not retried.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};

use super::backoff::RetryBackoff;
use super::settings::RemoteSettings;

/// The most bytes of an error body kept for a message.
const ERROR_BODY_CHARS: usize = 300;
/// The longest `Retry-After` honoured; a longer one is cut to this (and retried then).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An API key read from the environment. Its `Debug` and `Display` never show it, so no
/// log line, error or `{:?}` of a provider can leak it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Reads the key from the environment variable `var`; an unset or empty variable is an
    /// error naming the variable (never a value).
    pub fn from_env(var: &str) -> Result<Self, String> {
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Self(key.trim().to_owned())),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!(
                "environment variable {var} is not set (it holds the cloud API key)"
            )),
        }
    }

    /// A key from a value (tests, embedders that read it elsewhere).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    fn bearer(&self) -> Result<HeaderValue, String> {
        let mut value = HeaderValue::try_from(format!("Bearer {}", self.0))
            .map_err(|_| "the API key holds characters a header cannot carry".to_owned())?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether a failed call may be sent again as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, deletes, cancels: sending twice does no harm.
    Idempotent,
    /// Creates: a lost answer may hide a success, so the caller looks before it retries.
    Never,
}

/// Why a call to a cloud's API failed. Messages name the cloud, the method and path, the
/// status and the start of the body; never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403 (or the cloud's own "bad token" code): the key is wrong, expired or lacks
    /// the permission. Never retried.
    #[error("{cloud}: cloud API refused the key ({detail}); check the key in ${env}")]
    KeyRefused {
        /// The cloud.
        cloud: String,
        /// The status or code the API answered.
        detail: String,
        /// The environment variable the key came from.
        env: String,
    },
    /// 5xx, 429, a timeout or a connection error, after the retries the policy allows.
    #[error("{0}")]
    Transient(String),
    /// The API refused the request itself (4xx, or a non-zero code in the body).
    #[error("{0}")]
    Rejected(String),
    /// The cloud has no machine of the requested kind right now.
    #[error("{0}")]
    NoCapacity(String),
    /// The answer was not what the documented shape says.
    #[error("{0}")]
    Decode(String),
}

/// A cloud API's base URL, key and retry policy.
#[derive(Debug, Clone)]
pub struct ApiClient {
    cloud: &'static str,
    base: String,
    key: ApiKey,
    key_env: String,
    http: reqwest::Client,
    attempts: u32,
    retry_base: Duration,
    retry_cap: Duration,
}

impl ApiClient {
    /// A client for `cloud` with `settings` and `key`.
    pub(crate) fn new(
        cloud: &'static str,
        settings: &RemoteSettings,
        key: ApiKey,
    ) -> Result<Self, String> {
        key.bearer()?;
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .user_agent(concat!("autodeploy/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            cloud,
            base: settings.api_base.trim_end_matches('/').to_owned(),
            key,
            key_env: settings.api_key_env.clone(),
            http,
            attempts: settings.retries.saturating_add(1),
            retry_base: settings.retry_base,
            retry_cap: settings.retry_cap,
        })
    }

    /// The cloud's name, for messages.
    pub fn cloud(&self) -> &'static str {
        self.cloud
    }

    /// A request for `path` (below the base URL), with the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match self.key.bearer() {
            Ok(value) => builder.header(AUTHORIZATION, value),
            // Checked in `new`: unreachable.
            Err(_) => builder,
        }
    }

    /// The error for a key the cloud refused (`detail`: what it answered).
    pub fn key_refused(&self, detail: impl Into<String>) -> ApiError {
        ApiError::KeyRefused {
            cloud: self.cloud.to_owned(),
            detail: detail.into(),
            env: self.key_env.clone(),
        }
    }

    /// Sends `request` under the retry policy; returns the status and body of an answer
    /// below 400 (and of a 404, which callers read as "gone").
    pub async fn send(
        &self,
        request: RequestBuilder,
        retry: Retry,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let mut backoff = RetryBackoff::new(self.retry_base, self.retry_cap);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(this) = request.try_clone() else {
                return Err(ApiError::Decode(format!(
                    "{}: a request body that cannot be resent",
                    self.cloud
                )));
            };
            let (error, wait) = match self.once(this).await {
                Outcome::Done(status, body) => return Ok((status, body)),
                Outcome::Fatal(err) => return Err(err),
                Outcome::Later(err, retry_after) => (err, retry_after),
            };
            let out_of_attempts = attempt >= self.attempts;
            // A 429 is answered before anything is done: even a create may be sent again.
            let rate_limited = wait.is_some();
            if out_of_attempts || (retry == Retry::Never && !rate_limited) {
                return Err(error);
            }
            let delay = wait.unwrap_or_else(|| backoff.next_delay());
            tracing::debug!(cloud = self.cloud, attempt, ?delay, %error, "API call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn once(&self, request: RequestBuilder) -> Outcome {
        let (method, path) = match request.try_clone().and_then(|r| r.build().ok()) {
            Some(r) => (r.method().clone(), r.url().path().to_owned()),
            None => (Method::GET, String::new()),
        };
        let what = format!("{}: {method} {path}", self.cloud);
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) if err.is_timeout() => {
                return Outcome::Later(ApiError::Transient(format!("{what}: timed out")), None);
            }
            Err(err) => {
                // Without the URL's query or any header: only the kind of failure.
                let err = err.without_url();
                return Outcome::Later(ApiError::Transient(format!("{what}: {err}")), None);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => {
                let err = err.without_url();
                return Outcome::Later(
                    ApiError::Transient(format!("{what}: reading the answer: {err}")),
                    None,
                );
            }
        };
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Outcome::Done(status, body);
        }
        let detail = format!("{what}: HTTP {}: {}", status.as_u16(), excerpt(&body));
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Outcome::Fatal(self.key_refused(format!("HTTP {}", status.as_u16())))
            }
            StatusCode::TOO_MANY_REQUESTS => Outcome::Later(
                ApiError::Transient(detail),
                Some(retry_after.unwrap_or(self.retry_base).min(MAX_RETRY_AFTER)),
            ),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                Outcome::Later(ApiError::Transient(detail), None)
            }
            _ => Outcome::Fatal(ApiError::Rejected(detail)),
        }
    }
}

enum Outcome {
    Done(StatusCode, Bytes),
    Fatal(ApiError),
    /// Worth another try, after the given wait when the API named one (429).
    Later(ApiError, Option<Duration>),
}

/// `Retry-After` as seconds, or as an HTTP date (the time left until it).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `value` percent-encoded for a query string (everything but unreserved characters).
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of a body, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    match text.char_indices().nth(ERROR_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("rpa_SECRET");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(key.to_string(), "<redacted>");
        assert!(key.bearer().unwrap().is_sensitive());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
