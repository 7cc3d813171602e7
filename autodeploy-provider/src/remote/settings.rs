//! The settings every remote-API provider shares; each cloud's config table carries them.

use std::path::PathBuf;
use std::time::Duration;

/// How a remote provider talks to its cloud and waits for it. Each cloud's config
/// (`[providers.runpod]`, `[providers.glows]`) turns into one of these.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSettings {
    /// The API's base URL (the public one by default; tests and proxies point elsewhere).
    pub api_base: String,
    /// The environment variable holding the API key.
    pub api_key_env: String,
    /// The longest one API request may take.
    pub request_timeout: Duration,
    /// How many times a failed idempotent call is retried (429, 5xx, timeouts, connection
    /// errors); a create is retried as often, after looking for what the failed one made.
    pub retries: u32,
    /// The first retry delay; it doubles (with jitter) up to `retry_cap`.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_cap: Duration,
    /// The first interval between polls of an instance's state; it doubles up to `poll_max`.
    pub poll_min: Duration,
    /// The longest interval between polls, and how often a running instance is checked for
    /// a death the cloud caused.
    pub poll_max: Duration,
    /// How long a release waits for the cloud to confirm the instance is gone before it
    /// sends the delete again.
    pub release_confirm_timeout: Duration,
    /// Extra CA certificates (PEM) the readiness probe trusts, for instances with
    /// self-signed certificates.
    pub ca_file: Option<PathBuf>,
}

impl RemoteSettings {
    /// The defaults for a cloud whose API lives at `api_base`, with the key in `api_key_env`.
    pub fn new(api_base: impl Into<String>, api_key_env: impl Into<String>) -> Self {
        Self {
            api_base: api_base.into(),
            api_key_env: api_key_env.into(),
            request_timeout: Duration::from_secs(15),
            retries: 5,
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(30),
            poll_min: Duration::from_secs(1),
            poll_max: Duration::from_secs(10),
            release_confirm_timeout: Duration::from_secs(120),
            ca_file: None,
        }
    }

    /// Every problem with these settings, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.api_base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => out.push((
                "api_base",
                format!("must be an http or https URL, not {}", url.scheme()),
            )),
            Err(e) => out.push(("api_base", format!("not a URL: {e}"))),
        }
        let env = self.api_key_env.trim();
        if env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push((
                "api_key_env",
                "must name an environment variable (letters, digits, `_`); the key itself \
                 never goes in the config file"
                    .into(),
            ));
        }
        for (field, value) in [
            ("request_timeout", self.request_timeout),
            ("poll_min", self.poll_min),
            ("poll_max", self.poll_max),
            ("retry_base", self.retry_base),
            ("release_confirm_timeout", self.release_confirm_timeout),
        ] {
            if value.is_zero() {
                out.push((field, "must be greater than zero".into()));
            }
        }
        if self.poll_max < self.poll_min {
            out.push(("poll_max", "must not be below poll_min".into()));
        }
        if self.retry_cap < self.retry_base {
            out.push(("retry_cap", "must not be below retry_base".into()));
        }
        out
    }
}
