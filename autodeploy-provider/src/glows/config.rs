//! The `[providers.glows]` table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::remote::{RemoteSettings, table};

/// The public SDK API.
pub const GLOWS_API_BASE: &str = "https://a.glows.ai/sdk/v1";

/// Settings of the Glows.ai provider.
///
/// ```
/// let config: autodeploy_provider::GlowsConfig = toml::from_str(r#"
///     api_key_env = "GLOWS_API_KEY"
///     region_name = "TW-03"
/// "#).unwrap();
/// assert_eq!(config.api_base, "https://a.glows.ai/sdk/v1");
/// assert_eq!(config.instance_category, "container");
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlowsConfig {
    /// The SDK API's base URL (default `https://a.glows.ai/sdk/v1`).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The environment variable holding the SDK token (default `GLOWS_API_KEY`).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// The region instances are created in (`TW-03`, `TW-04`, ...); required.
    #[serde(default)]
    pub region_name: String,
    /// `container` (default) or `vm`.
    #[serde(default = "default_category")]
    pub instance_category: String,
    /// The longest one API request may take (default `15s`).
    #[serde(default = "table::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of a failed call (default 5).
    #[serde(default = "table::retries")]
    pub retries: u32,
    /// The first poll interval (default `1s`), doubling up to `poll_max`.
    #[serde(default = "table::poll_min", with = "humantime_serde")]
    pub poll_min: Duration,
    /// The longest poll interval, and how often a running instance is checked (default
    /// `10s`).
    #[serde(default = "table::poll_max", with = "humantime_serde")]
    pub poll_max: Duration,
    /// How long a release waits for the instance to be gone before cancelling again
    /// (default `2m`).
    #[serde(default = "table::release_confirm_timeout", with = "humantime_serde")]
    pub release_confirm_timeout: Duration,
    /// Extra CA certificates (PEM) the readiness probe trusts.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for GlowsConfig {
    fn default() -> Self {
        Self {
            api_base: default_api_base(),
            api_key_env: default_api_key_env(),
            region_name: String::new(),
            instance_category: default_category(),
            request_timeout: table::request_timeout(),
            retries: table::retries(),
            poll_min: table::poll_min(),
            poll_max: table::poll_max(),
            release_confirm_timeout: table::release_confirm_timeout(),
            ca_file: None,
        }
    }
}

impl GlowsConfig {
    /// The shared remote-provider settings.
    pub fn settings(&self) -> RemoteSettings {
        RemoteSettings {
            request_timeout: self.request_timeout,
            retries: self.retries,
            poll_min: self.poll_min,
            poll_max: self.poll_max,
            release_confirm_timeout: self.release_confirm_timeout,
            ca_file: self.ca_file.clone(),
            ..RemoteSettings::new(self.api_base.clone(), self.api_key_env.clone())
        }
    }

    /// Every problem with these settings, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = self.settings().problems();
        if self.region_name.trim().is_empty() {
            out.push(("region_name", "is required (e.g. \"TW-03\")".into()));
        }
        if !matches!(self.instance_category.as_str(), "container" | "vm") {
            out.push((
                "instance_category",
                "must be \"container\" or \"vm\"".into(),
            ));
        }
        out
    }
}

fn default_api_base() -> String {
    GLOWS_API_BASE.into()
}
fn default_api_key_env() -> String {
    "GLOWS_API_KEY".into()
}
fn default_category() -> String {
    "container".into()
}
