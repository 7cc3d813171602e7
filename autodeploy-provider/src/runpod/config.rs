//! The `[providers.runpod]` table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::remote::{RemoteSettings, table};

/// The public REST API.
pub const RUNPOD_API_BASE: &str = "https://rest.runpod.io/v1";

/// How the gateway reaches a pod's service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunpodAccess {
    /// `https://{pod id}-{port}.proxy.runpod.net`: HTTPS, on every pod, but through
    /// Cloudflare, which closes a request after 100 s without an answer (HTTP 524).
    #[default]
    Proxy,
    /// The pod's public IP and the public port RunPod maps to the service port (`8080/tcp`):
    /// no time limit (long generations, streams), plain HTTP, needs a pod with a public IP.
    Tcp,
}

/// Settings of the RunPod provider.
///
/// ```
/// let config: autodeploy_provider::RunpodConfig = toml::from_str(r#"
///     api_key_env = "RUNPOD_API_KEY"
///     access = "tcp"
///     cloud_type = "SECURE"
/// "#).unwrap();
/// assert_eq!(config.api_base, "https://rest.runpod.io/v1");
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunpodConfig {
    /// The REST API's base URL (default `https://rest.runpod.io/v1`).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The environment variable holding the API key (default `RUNPOD_API_KEY`).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// `proxy` (default) or `tcp`; see [`RunpodAccess`].
    #[serde(default)]
    pub access: RunpodAccess,
    /// The proxy's domain (default `proxy.runpod.net`).
    #[serde(default = "default_proxy_domain")]
    pub proxy_domain: String,
    /// `SECURE` or `COMMUNITY`; unset: the API's default.
    #[serde(default)]
    pub cloud_type: Option<String>,
    /// Data centers a pod may be placed in; empty: any.
    #[serde(default)]
    pub data_center_ids: Vec<String>,
    /// The container disk, in GB (default 20).
    #[serde(default = "default_container_disk_gb")]
    pub container_disk_gb: u32,
    /// The longest one API request may take (default `15s`).
    #[serde(default = "table::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of a failed call (default 5).
    #[serde(default = "table::retries")]
    pub retries: u32,
    /// The first poll interval (default `1s`), doubling up to `poll_max`.
    #[serde(default = "table::poll_min", with = "humantime_serde")]
    pub poll_min: Duration,
    /// The longest poll interval, and how often a running pod is checked (default `10s`).
    #[serde(default = "table::poll_max", with = "humantime_serde")]
    pub poll_max: Duration,
    /// How long a release waits for the pod to be gone before deleting again (default `2m`).
    #[serde(default = "table::release_confirm_timeout", with = "humantime_serde")]
    pub release_confirm_timeout: Duration,
    /// Extra CA certificates (PEM) the readiness probe trusts.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for RunpodConfig {
    fn default() -> Self {
        Self {
            api_base: default_api_base(),
            api_key_env: default_api_key_env(),
            access: RunpodAccess::default(),
            proxy_domain: default_proxy_domain(),
            cloud_type: None,
            data_center_ids: Vec::new(),
            container_disk_gb: default_container_disk_gb(),
            request_timeout: table::request_timeout(),
            retries: table::retries(),
            poll_min: table::poll_min(),
            poll_max: table::poll_max(),
            release_confirm_timeout: table::release_confirm_timeout(),
            ca_file: None,
        }
    }
}

impl RunpodConfig {
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
        if let Some(cloud_type) = &self.cloud_type
            && !matches!(cloud_type.as_str(), "SECURE" | "COMMUNITY")
        {
            out.push(("cloud_type", "must be SECURE or COMMUNITY".into()));
        }
        if self.container_disk_gb == 0 {
            out.push(("container_disk_gb", "must be at least 1".into()));
        }
        if self.proxy_domain.trim().is_empty() {
            out.push(("proxy_domain", "must not be empty".into()));
        }
        out
    }
}

fn default_api_base() -> String {
    RUNPOD_API_BASE.into()
}
fn default_api_key_env() -> String {
    "RUNPOD_API_KEY".into()
}
fn default_proxy_domain() -> String {
    "proxy.runpod.net".into()
}
fn default_container_disk_gb() -> u32 {
    20
}
