//! The gateway's configuration file: a `[gateway]` table, provider settings and
//! `[[deployment]]` tables, with validation that reports every problem at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use autodeploy_core::{BudgetLimit, DeployConfig, FieldError, ValidationErrors};
pub use autodeploy_provider::ProvidersConfig;
use serde::Deserialize;

use crate::problems::Problems;

/// The whole configuration file.
///
/// ```toml
/// [gateway]
/// listen = "127.0.0.1:8000"
///
/// [[deployment]]
/// id = "files"
/// start_command = "python3 -m http.server {port} --bind 127.0.0.1"
/// idle_retention = "3m"
/// max_instances = 2
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Settings of the gateway itself.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Settings of the providers deployments can name.
    #[serde(default)]
    pub providers: ProvidersConfig,
    /// The deployments served at start-up (more can be created through the API).
    #[serde(default, rename = "deployment")]
    pub deployments: Vec<DeployConfig>,
}

/// The `[gateway]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Where the links (`/d/{id}/...`), the management API and `/metrics` listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The bearer token the management API requires; none = the API is open (bind it to
    /// loopback then). `$AUTODEPLOY_ADMIN_TOKEN` overrides it.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Where providers record what they started, so a restarted gateway finds it.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Extra CA certificates (a PEM file) trusted for `https` instances, besides the webpki
    /// roots: for instances with self-signed certificates. Cloud providers' readiness probes
    /// trust it too unless their table names their own `ca_file`.
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    /// The largest request body forwarded, in bytes; 0 = unlimited.
    #[serde(default = "default_max_request_body")]
    pub max_request_body: u64,
    /// The largest request head (request line and headers) accepted, in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A client must send its whole request head within this time (slowloris guard).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// The longest an instance may take to answer with its response headers.
    #[serde(default = "default_response_header_timeout", with = "humantime_serde")]
    pub response_header_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish before instances are
    /// released anyway.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often one client address may ask one deployment for `scale-out` (each one starts
    /// a paid instance); `burst = 0` turns the limit off.
    #[serde(default)]
    pub scale_out_limit: RateLimit,
    /// A limit on the running hourly rate of every deployment together (the sum of
    /// `price_per_hour` of all live instances): `budget = { max_per_hour = 20.0 }`. A start
    /// that would exceed it is refused (code 1021). None (the default) = no limit.
    #[serde(default)]
    pub budget: Option<BudgetLimit>,
}

/// A rate limit: `burst` events at once, refilled evenly over `per` (10 per minute by
/// default: `{ burst = 10, per = "1m" }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Events allowed at once; 0 = no limit.
    pub burst: u32,
    /// The time in which `burst` events are refilled.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 10,
            per: Duration::from_secs(60),
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_token: None,
            state_dir: None,
            upstream_ca_file: None,
            max_request_body: default_max_request_body(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
            response_header_timeout: default_response_header_timeout(),
            drain_timeout: default_drain_timeout(),
            scale_out_limit: RateLimit::default(),
            budget: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
fn default_max_request_body() -> u64 {
    1 << 30
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_response_header_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The placeholder in a `start_command` that stands for the configuration file's folder.
pub const CONFIG_DIR_PLACEHOLDER: &str = "{config_dir}";

/// The folder of the configuration file at `path`, absolute when it can be resolved.
fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// `text` as one `sh` word: unchanged when it holds only characters the shell leaves alone,
/// else in single quotes (a `'` inside written `'\''`).
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or not of the expected shape, or some values are wrong.
    #[error("{path}: invalid configuration: {problems}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order, each with its line and field.
        problems: Problems,
    },
}

impl GatewayConfig {
    /// Reads, parses and validates a configuration file, reporting every problem in it at
    /// once ([`problems::read`](crate::problems::read)), then resolves its relative paths
    /// ([`GatewayConfig::resolve_paths`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = crate::problems::read(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })?;
        config.resolve_paths(&config_dir(path));
        Ok(config)
    }

    /// Makes the file's relative paths relative to `dir` (the file's folder), as most tools
    /// do, so the configuration means the same from any working directory: `state_dir`,
    /// `upstream_ca_file`, `providers.local.state_dir`, the clouds' `ca_file` and each
    /// deployment's `workdir` are joined to it, and
    /// `{config_dir}` in a `start_command` becomes it (shell-quoted when it needs quoting).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut Option<PathBuf>| {
            if let Some(path) = p
                && path.is_relative()
            {
                *path = dir.join(&*path);
            }
        };
        join(&mut self.gateway.state_dir);
        join(&mut self.gateway.upstream_ca_file);
        join(&mut self.providers.local.state_dir);
        #[cfg(feature = "runpod")]
        if let Some(runpod) = &mut self.providers.runpod {
            join(&mut runpod.ca_file);
        }
        #[cfg(feature = "glows")]
        if let Some(glows) = &mut self.providers.glows {
            join(&mut glows.ca_file);
        }
        let quoted = shell_quote(&dir.to_string_lossy());
        for deployment in &mut self.deployments {
            join(&mut deployment.workdir);
            deployment.start_command = deployment
                .start_command
                .replace(CONFIG_DIR_PLACEHOLDER, &quoted);
        }
    }

    /// Parses TOML text (without validating meaning), stopping at the first problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every deployment and the gateway settings; reports all problems at once, each
    /// naming its field (`deployment[1].max_instances`, `gateway.listen`, ...).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut ids = HashSet::new();
        let mut listens = HashSet::from([self.gateway.listen]);
        for (i, deployment) in self.deployments.iter().enumerate() {
            let prefix = format!("deployment[{i}]");
            if let Err(e) = validate_deployment(&self.providers, deployment) {
                errors.extend(e.prefixed(&prefix).0);
            }
            if !ids.insert(deployment.id.as_str()) {
                errors.push(FieldError {
                    field: format!("{prefix}.id"),
                    message: format!("duplicate deployment id {:?}", deployment.id),
                });
            }
            if let Some(budget) = self.gateway.budget
                && budget.check().is_ok()
                && deployment.price_per_hour > budget.max_per_hour
            {
                errors.push(FieldError {
                    field: format!("{prefix}.price_per_hour"),
                    message: format!(
                        "is above gateway.budget.max_per_hour ({} > {}): no instance could ever start",
                        deployment.price_per_hour, budget.max_per_hour
                    ),
                });
            }
            if let Some(listen) = deployment.listen
                && !listens.insert(listen)
            {
                errors.push(FieldError {
                    field: format!("{prefix}.listen"),
                    message: format!("{listen} is already used by the gateway or a deployment"),
                });
            }
        }
        if self
            .gateway
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            errors.push(FieldError {
                field: "gateway.admin_token".into(),
                message: "must not be empty (leave it out to disable)".into(),
            });
        }
        errors.extend(self.providers.validate());
        if self.gateway.header_read_timeout.is_zero() {
            errors.push(FieldError {
                field: "gateway.header_read_timeout".into(),
                message: "must be greater than zero".into(),
            });
        }
        if self.gateway.response_header_timeout.is_zero() {
            errors.push(FieldError {
                field: "gateway.response_header_timeout".into(),
                message: "must be greater than zero".into(),
            });
        }
        let limit = self.gateway.scale_out_limit;
        if limit.burst > 0 && (limit.per / limit.burst).is_zero() {
            errors.push(FieldError {
                field: "gateway.scale_out_limit.per".into(),
                message: "must be long enough to refill one event at a time".into(),
            });
        }
        if let Some(Err(message)) = self.gateway.budget.map(|b| b.check()) {
            errors.push(FieldError {
                field: "gateway.budget.max_per_hour".into(),
                message,
            });
        }
        if self.gateway.max_header_bytes < 8192 {
            errors.push(FieldError {
                field: "gateway.max_header_bytes".into(),
                message: "must be at least 8192".into(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// Validates one deployment as the gateway runs it: core's checks, then a registered
/// provider's own ([`ProvidersConfig::validate_deployment`]).
pub fn validate_deployment(
    providers: &ProvidersConfig,
    config: &DeployConfig,
) -> Result<(), ValidationErrors> {
    let mut errors = config.validate().err().map(|e| e.0).unwrap_or_default();
    errors.extend(providers.validate_deployment(config));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/autodeploy.toml");
        let config = GatewayConfig::load(&path).unwrap();
        assert!(!config.deployments.is_empty());
    }

    #[cfg(feature = "docker")]
    #[test]
    fn the_docker_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/docker.toml");
        let config = GatewayConfig::load(&path).unwrap();
        assert_eq!(config.deployments[0].provider, "docker");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let config = GatewayConfig::parse(
            r#"
            [gateway]
            listen = "127.0.0.1:9000"
            admin_token = ""

            [[deployment]]
            id = "a"
            start_command = "true"
            idle_retention = "1m"
            max_instances = 0
            provider = "cloud"

            [[deployment]]
            id = "a"
            start_command = ""
            idle_retention = "1m"
            max_instances = 1
            listen = "127.0.0.1:9000"
            "#,
        )
        .unwrap();
        let fields: Vec<String> = config
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "deployment[0].max_instances",
                "deployment[0].provider",
                "deployment[1].start_command",
                "deployment[1].id",
                "deployment[1].listen",
                "gateway.admin_token",
            ]
        );
    }

    #[test]
    fn provider_tables_parse_and_are_validated() {
        let config = GatewayConfig::parse(
            r#"
            [providers.local]
            gpus = ["0", "1"]
            release_grace = "2s"

            [providers.simulated]
            boot_time = "200ms"
            failure_probability = 1.5
            "#,
        )
        .unwrap();
        assert_eq!(config.providers.local.gpus, ["0", "1"]);
        assert_eq!(
            config.providers.simulated.boot_time,
            Duration::from_millis(200)
        );
        let errors = config.validate().unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].field, "providers.simulated.failure_probability");

        let config = GatewayConfig::parse("[providers.local]\ngpus = [\"0\", \"0\"]\n").unwrap();
        assert_eq!(config.validate().unwrap_err().0[0].field, "providers.local");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("my conf");
        std::fs::create_dir(&folder).unwrap();
        let path = folder.join("autodeploy.toml");
        std::fs::write(
            &path,
            r#"
            [gateway]
            state_dir = "state"
            [providers.local]
            state_dir = "/abs/local"
            [[deployment]]
            id = "files"
            start_command = "exec serve --directory {config_dir}/files"
            workdir = "work"
            idle_retention = "1m"
            max_instances = 1
            "#,
        )
        .unwrap();
        // Loaded from elsewhere: the working directory plays no part.
        let config = GatewayConfig::load(&path).unwrap();
        let folder = std::fs::canonicalize(&folder).unwrap();
        assert_eq!(config.gateway.state_dir, Some(folder.join("state")));
        assert_eq!(config.providers.local.state_dir, Some("/abs/local".into()));
        let deployment = &config.deployments[0];
        assert_eq!(deployment.workdir, Some(folder.join("work")));
        assert_eq!(
            deployment.start_command,
            format!("exec serve --directory '{}'/files", folder.display())
        );
    }

    #[test]
    fn budgets_parse_and_are_checked() {
        let config = GatewayConfig::parse(
            r#"
            [gateway]
            budget = { max_per_hour = 20.0 }

            [[deployment]]
            id = "a"
            start_command = "true"
            idle_retention = "1m"
            max_instances = 3
            price_per_hour = 1.5
            scale_out_step = 2
            cancel_unwanted_starts = true
            budget = { max_per_hour = 4.0 }
            "#,
        )
        .unwrap();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.gateway.budget.unwrap().max_per_hour, 20.0);
        let d = &config.deployments[0];
        assert_eq!(d.budget.unwrap().max_per_hour, 4.0);
        assert_eq!(d.scale_out_step, 2);
        assert!(d.cancel_unwanted_starts);

        let config = GatewayConfig::parse(
            r#"
            [gateway]
            budget = { max_per_hour = 0.0 }

            [[deployment]]
            id = "a"
            start_command = "true"
            idle_retention = "1m"
            max_instances = 3
            min_instances = 3
            price_per_hour = 1.5
            budget = { max_per_hour = 4.0 }

            [[deployment]]
            id = "b"
            start_command = "true"
            idle_retention = "1m"
            max_instances = 3
            price_per_hour = 5.0
            budget = { max_per_hour = -1.0 }
            "#,
        )
        .unwrap();
        let fields: Vec<String> = config
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "deployment[0].budget.max_per_hour",
                "deployment[1].budget.max_per_hour",
                "gateway.budget.max_per_hour",
            ]
        );
        let err = GatewayConfig::parse("[gateway]\nbudget = { max_per_day = 1.0 }\n").unwrap_err();
        assert!(err.contains("max_per_day"), "{err}");

        let over = GatewayConfig::parse(
            r#"
            [gateway]
            budget = { max_per_hour = 2.0 }

            [[deployment]]
            id = "a"
            start_command = "true"
            idle_retention = "1m"
            max_instances = 1
            price_per_hour = 2.5
            "#,
        )
        .unwrap();
        assert_eq!(
            over.validate().unwrap_err().0[0].field,
            "deployment[0].price_per_hour"
        );
    }

    #[test]
    fn config_dir_is_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_quote("/srv/autodeploy-1.0"), "/srv/autodeploy-1.0");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("/it's"), "'/it'\\''s'");
        assert_eq!(shell_quote("/$HOME;rm"), "'/$HOME;rm'");
    }

    #[test]
    fn typos_are_parse_errors() {
        let err = GatewayConfig::parse("[gateway]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn the_cloud_example_configs_are_valid() {
        for file in ["runpod.toml", "glows.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(file);
            let config = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(config.deployments.len(), 1, "{file}");
        }
    }

    #[test]
    fn cloud_tables_and_their_deployments_are_checked() {
        let config = GatewayConfig::parse(
            r#"
            [providers.runpod]
            api_key_env = "not a variable"
            cloud_type = "CHEAP"
            access = "tcp"

            [providers.glows]
            api_base = "ftp://a.glows.ai"

            [[deployment]]
            id = "pod"
            provider = "runpod"
            snapshot = "snap-1"
            idle_retention = "1m"
            max_instances = 1

            [[deployment]]
            id = "glows"
            provider = "glows"
            image = "img-1"
            gpu = { kind = "NVIDIA GeForce RTX 4090", count = 1 }
            env = { BAD = "a;b" }
            idle_retention = "1m"
            max_instances = 1
            "#,
        )
        .unwrap();
        let fields: Vec<String> = config
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        for expected in [
            "deployment[0].gpu.kind",
            "deployment[0].image",
            "deployment[0].snapshot",
            "deployment[1].env.BAD",
            "providers.runpod.api_key_env",
            "providers.runpod.cloud_type",
            "providers.glows.api_base",
            "providers.glows.region_name",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} missing from {fields:?}"
            );
        }

        let config = GatewayConfig::parse(
            r#"
            [[deployment]]
            id = "pod"
            provider = "runpod"
            image = "python:3.12"
            gpu = { kind = "NVIDIA GeForce RTX 4090", count = 1 }
            idle_retention = "1m"
            max_instances = 1
            "#,
        )
        .unwrap();
        let errors = config.validate().unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].field, "deployment[0].provider");
        assert!(
            errors.0[0].message.contains("[providers.runpod]"),
            "{errors}"
        );
    }
}
