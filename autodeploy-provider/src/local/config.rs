//! The `[providers.local]` settings, and what can be wrong with them.
//!
//! Kept apart from the provider so the gateway's config loader can parse and validate this
//! table without starting anything.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Settings of the local-process provider, the `[providers.local]` table of the gateway
/// config. Every field has a default, so an empty table (or `LocalConfig::default()`) runs
/// instances without GPUs, without a state directory, on 127.0.0.1.
///
/// ```
/// let config: autodeploy_provider::LocalConfig = serde_json::from_str(
///     r#"{"gpus": ["0", "1"], "state_dir": "/var/lib/autodeploy", "release_grace": "10s"}"#,
/// ).unwrap();
/// assert_eq!(config.gpus.len(), 2);
/// assert_eq!(config.release_grace, std::time::Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The machine's GPU ids handed out through `CUDA_VISIBLE_DEVICES` (e.g. `["0", "1"]`).
    /// Empty (the default): GPUs are not managed; instances run whatever their `gpu.count`,
    /// and inherit the gateway's `CUDA_VISIBLE_DEVICES`, if any.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Where each instance is recorded (one JSON file per instance) so that a restarted
    /// gateway finds the survivors through `list`. `None` (the default): nothing is
    /// recorded, and dropping the provider kills every instance it holds.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// How long `release` waits after SIGTERM before it sends SIGKILL (default `5s`).
    #[serde(default = "default_release_grace", with = "humantime_serde")]
    pub release_grace: Duration,
    /// How many output lines (stdout and stderr together) are kept per instance (default
    /// 1000). Longer lines are cut at 4 KiB.
    #[serde(default = "default_log_lines")]
    pub log_lines: usize,
    /// The loopback address instances listen on and are reached at (default `127.0.0.1`).
    #[serde(default = "default_host")]
    pub host: IpAddr,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            gpus: Vec::new(),
            state_dir: None,
            release_grace: default_release_grace(),
            log_lines: default_log_lines(),
            host: default_host(),
        }
    }
}

fn default_release_grace() -> Duration {
    Duration::from_secs(5)
}

fn default_log_lines() -> usize {
    1000
}

fn default_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Why a [`Local`](super::Local) could not be built from its [`LocalConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalConfigError {
    /// The same GPU id is listed twice.
    #[error("gpu id {0:?} is listed twice")]
    DuplicateGpu(String),
    /// A GPU id is empty or holds a comma, which `CUDA_VISIBLE_DEVICES` cannot carry.
    #[error("gpu id {0:?} is not a valid CUDA_VISIBLE_DEVICES entry")]
    InvalidGpu(String),
    /// `log_lines` is 0: an instance's failure could not be explained.
    #[error("log_lines must be at least 1")]
    NoLogLines,
    /// The state directory could not be created or read.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The configured directory.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
}

impl LocalConfig {
    /// Checks what serde cannot: GPU ids are unique and usable, logs are kept.
    pub fn validate(&self) -> Result<(), LocalConfigError> {
        if self.log_lines == 0 {
            return Err(LocalConfigError::NoLogLines);
        }
        for (i, gpu) in self.gpus.iter().enumerate() {
            if gpu.is_empty() || gpu.contains(',') || gpu.trim() != gpu {
                return Err(LocalConfigError::InvalidGpu(gpu.clone()));
            }
            if self.gpus[..i].contains(gpu) {
                return Err(LocalConfigError::DuplicateGpu(gpu.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults() {
        let config: LocalConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, LocalConfig::default());
        assert_eq!(config.host.to_string(), "127.0.0.1");
        assert_eq!(config.release_grace, Duration::from_secs(5));
        assert_eq!(config.log_lines, 1000);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<LocalConfig>(r#"{"gpu": ["0"]}"#).is_err());
    }

    #[test]
    fn bad_gpu_lists_are_refused() {
        let dup = LocalConfig {
            gpus: vec!["0".into(), "1".into(), "0".into()],
            ..LocalConfig::default()
        };
        assert!(matches!(
            dup.validate(),
            Err(LocalConfigError::DuplicateGpu(g)) if g == "0"
        ));
        let comma = LocalConfig {
            gpus: vec!["0,1".into()],
            ..LocalConfig::default()
        };
        assert!(matches!(
            comma.validate(),
            Err(LocalConfigError::InvalidGpu(_))
        ));
    }
}
