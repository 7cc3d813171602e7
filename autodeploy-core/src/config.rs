//! `DeployConfig`: everything one deployment (one link) is made of, and its validation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most instances one deployment may have: a bound on what one config line (or one API
/// call) can make the gateway start, far above any GPU fleet one gateway fronts.
pub const MAX_INSTANCES_LIMIT: u32 = 1000;

/// The highest `price_per_hour` accepted: keeps every cost sum far from overflow.
pub const MAX_PRICE_PER_HOUR: f64 = 1_000_000.0;

/// The configuration of one deployment: what to start, how to route to it, when to release it.
///
/// Durations are written the human way in config files (`"10m"`, `"3m"`, `"30s"`). Unknown keys
/// are rejected so a typo never silently falls back to a default. Call [`DeployConfig::validate`]
/// before use: deserialization checks shapes, validation checks meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// The link name: `[a-z0-9-]`, 1–63 characters, used in `/d/{id}`.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", example = "files")]
    pub id: String,
    /// A human name; defaults to the id when empty.
    #[serde(default)]
    pub name: String,
    /// Free text for people.
    #[serde(default)]
    pub description: String,
    /// Which provider creates the instances (for example `"local"` or `"simulated"`).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// What each instance needs in GPUs.
    #[serde(default)]
    pub gpu: GpuSpec,
    /// The image an instance boots from (providers that run images).
    #[serde(default)]
    pub image: Option<String>,
    /// A snapshot an instance boots from instead of an image.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The port the service listens on inside the instance, for providers that have one. The
    /// local-process provider chooses a free port instead and passes it as `$PORT`/`{port}`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The command that starts the service, run by `sh -c`. Whether it is required is the
    /// provider's rule: the local provider needs one; a container provider runs the image's
    /// own command when it is empty.
    #[serde(default)]
    pub start_command: String,
    /// The working directory of the start command, where the provider has one.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub workdir: Option<PathBuf>,
    /// Environment variables given to the service.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Release an instance after this long without requests.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "3m")]
    pub idle_retention: Duration,
    /// The most instances this deployment may have at once, starting ones included
    /// (1 to [`MAX_INSTANCES_LIMIT`]).
    #[schema(minimum = 1, maximum = 1000, example = 2)]
    pub max_instances: u32,
    /// Instances kept running even when idle (a warm pool); default 0, at most
    /// `max_instances`.
    #[serde(default)]
    #[schema(maximum = 1000)]
    pub min_instances: u32,
    /// How readiness of a new instance is decided.
    #[serde(default)]
    pub readiness: ReadinessProbe,
    /// How long an instance may take from creation to ready before it is failed and released.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    #[schema(value_type = String, example = "3m")]
    pub start_timeout: Duration,
    /// How requests wait for capacity (cold start, scale-out, busy instances).
    #[serde(default)]
    pub queue: QueueConfig,
    /// Requests one instance serves at once under the default rule; 0 = unlimited.
    #[serde(default)]
    pub concurrency_limit: u32,
    /// What one instance costs per hour, in the account's currency (0 to
    /// [`MAX_PRICE_PER_HOUR`]).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub price_per_hour: f64,
    /// A dedicated listen address for this deployment (the port-per-deployment link style).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "127.0.0.1:9001")]
    pub listen: Option<SocketAddr>,
    /// Keys that open the link: when any are set, a request must carry one of them in the
    /// `Deploy-Access-Key` header, or it is refused (401, code 1001) before it can start or
    /// reach an instance. Empty (the default): the link is open. The header never reaches the
    /// instance; `Authorization` stays the service's own. Each key is 16 to 256 visible ASCII
    /// characters.
    #[serde(default)]
    pub access_keys: Vec<String>,
    /// The HTTP version the gateway speaks to instances: `"http1"` (the default) or `"h2c"`
    /// (HTTP/2 over plain TCP, for gRPC services such as Triton's).
    #[serde(default)]
    pub upstream: UpstreamProtocol,
    /// The most instances that may be starting at once when the backlog asks for more (for
    /// clouds that rate-limit creates); 0 (the default) = no limit: a burst starts every
    /// instance it needs at once.
    #[serde(default)]
    pub scale_out_step: u32,
    /// Release an instance that is still starting once the backlog no longer needs it (every
    /// request it was started for has gone and no other waits for it), instead of keeping it
    /// until it idles out. Default false.
    #[serde(default)]
    pub cancel_unwanted_starts: bool,
    /// A limit on this deployment's running hourly rate (the sum of `price_per_hour` of its
    /// live instances): a start that would exceed it is refused (code 1021). None = no limit.
    #[serde(default)]
    pub budget: Option<BudgetLimit>,
    /// What a container needs beyond its image, for providers that run containers
    /// (`docker = { shm_size = "8g", volumes = ["/models:/models:ro"] }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<ContainerOptions>,
}

/// Container settings of a deployment: what model servers need (vLLM wants a large
/// `/dev/shm`; weights come from a mounted volume). Sizes are written `"512m"`, `"8g"` or in
/// bytes; the provider that runs containers validates them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerOptions {
    /// The size of `/dev/shm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    /// Mounts, `source:target[:ro]` (a host path or a named volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Extra `/etc/hosts` entries, `name:address`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// The memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The CPU limit, in CPUs (`1.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

/// A spending limit: `budget = { max_per_hour = 4.0 }`, on a deployment or for the whole
/// gateway.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimit {
    /// The highest running hourly rate allowed, in the currency of `price_per_hour`: the sum
    /// of `price_per_hour` of every live instance (starting, ready, draining or releasing).
    pub max_per_hour: f64,
}

impl BudgetLimit {
    /// Checks that the limit is a finite number > 0; the message names no field.
    pub fn check(&self) -> Result<(), String> {
        if self.max_per_hour.is_finite() && self.max_per_hour > 0.0 {
            Ok(())
        } else {
            Err("must be a finite number > 0".to_owned())
        }
    }
}

/// The HTTP version spoken to a deployment's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive connections (and WebSocket upgrades).
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge: one multiplexed connection per instance;
    /// `TE: trailers` and trailers pass through, as gRPC needs. Upgrade requests (WebSocket)
    /// still go over HTTP/1.1.
    H2c,
}

/// The GPUs one instance needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// The GPU model, e.g. `"RTX 4090"`; its meaning is the provider's.
    #[serde(default)]
    pub kind: String,
    /// How many GPUs; 0 = none.
    #[serde(default)]
    pub count: u32,
}

/// How a new instance is judged ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessProbe {
    /// An HTTP path that must answer a non-5xx status; `None` = the port accepting
    /// connections is enough.
    #[serde(default)]
    pub path: Option<String>,
    /// The longest pause between two probes (providers probe faster at first).
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    #[schema(value_type = String, example = "3m")]
    pub interval: Duration,
}

impl Default for ReadinessProbe {
    fn default() -> Self {
        Self {
            path: None,
            interval: default_probe_interval(),
        }
    }
}

/// How requests wait for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The most requests waiting at once; one more gets "queue full".
    #[serde(default = "default_queue_size")]
    pub max_waiting: usize,
    /// The longest one request is held waiting for capacity. Keep it above `start_timeout`
    /// so that a request held through a failing cold start gets the start's error.
    #[serde(default = "default_wait_timeout", with = "humantime_serde")]
    #[schema(value_type = String, example = "3m")]
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_waiting: default_queue_size(),
            timeout: default_wait_timeout(),
        }
    }
}

fn default_provider() -> String {
    "local".to_owned()
}
fn default_port() -> u16 {
    8080
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_probe_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_queue_size() -> usize {
    1000
}
/// Longer than the default start timeout, so a request held through a cold start that fails
/// hears why (1004/1005) rather than a bare wait timeout (1009).
fn default_wait_timeout() -> Duration {
    Duration::from_secs(360)
}

/// One problem in a configuration, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, e.g. `max_instances` or `queue.timeout`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a configuration at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl ValidationErrors {
    /// Prefixes every field with `prefix.` (e.g. `deployment[2]`), for nested configs.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|e| FieldError {
                    field: format!("{prefix}.{}", e.field),
                    message: e.message,
                })
                .collect(),
        )
    }
}

/// Checks that `id` is a valid link name: 1–63 characters of `[a-z0-9-]`, not starting or
/// ending with `-`.
pub fn validate_deployment_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 63 {
        return Err(format!("must be 1 to 63 characters, got {}", id.len()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may only contain a-z, 0-9 and '-'".to_owned());
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err("must not start or end with '-'".to_owned());
    }
    Ok(())
}

impl DeployConfig {
    /// A configuration with the given id, start command, retention and cap, everything else
    /// at its default. Handy in code and tests; config files name the fields instead.
    pub fn new(
        id: impl Into<String>,
        start_command: impl Into<String>,
        idle_retention: Duration,
        max_instances: u32,
    ) -> Self {
        Self {
            id: id.into(),
            name: String::new(),
            description: String::new(),
            provider: default_provider(),
            gpu: GpuSpec::default(),
            image: None,
            snapshot: None,
            port: default_port(),
            start_command: start_command.into(),
            workdir: None,
            env: BTreeMap::new(),
            idle_retention,
            max_instances,
            min_instances: 0,
            readiness: ReadinessProbe::default(),
            start_timeout: default_start_timeout(),
            queue: QueueConfig::default(),
            concurrency_limit: 0,
            price_per_hour: 0.0,
            listen: None,
            access_keys: Vec::new(),
            upstream: UpstreamProtocol::Http1,
            scale_out_step: 0,
            cancel_unwanted_starts: false,
            budget: None,
            docker: None,
        }
    }

    /// The name shown to people: `name`, or the id when no name is set.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }

    /// Checks the meaning of every field and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };
        if let Err(message) = validate_deployment_id(&self.id) {
            fail("id", message);
        }
        if self.provider.trim().is_empty() {
            fail("provider", "must name a provider".to_owned());
        }
        if self.image.is_some() && self.snapshot.is_some() {
            fail(
                "snapshot",
                "set either image or snapshot, not both".to_owned(),
            );
        }
        if self.port == 0 {
            fail("port", "must be 1 to 65535".to_owned());
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                fail(
                    "env",
                    format!("variable name {key:?} must be non-empty without '=' or NUL"),
                );
            }
        }
        if self.env.values().any(|v| v.contains('\0')) {
            fail("env", "values must not contain NUL".to_owned());
        }
        if self.idle_retention.is_zero() {
            fail("idle_retention", "must be greater than zero".to_owned());
        }
        if !(1..=MAX_INSTANCES_LIMIT).contains(&self.max_instances) {
            fail(
                "max_instances",
                format!("must be 1 to {MAX_INSTANCES_LIMIT}"),
            );
        }
        if self.min_instances > self.max_instances {
            fail(
                "min_instances",
                format!(
                    "must not exceed max_instances ({} > {})",
                    self.min_instances, self.max_instances
                ),
            );
        }
        if let Some(path) = &self.readiness.path
            && (!path.starts_with('/') || path.chars().any(char::is_control))
        {
            fail(
                "readiness.path",
                "must start with '/' and hold no control characters".to_owned(),
            );
        }
        if self.readiness.interval.is_zero() {
            fail("readiness.interval", "must be greater than zero".to_owned());
        }
        if self.start_timeout.is_zero() {
            fail("start_timeout", "must be greater than zero".to_owned());
        }
        if self.queue.timeout.is_zero() {
            fail("queue.timeout", "must be greater than zero".to_owned());
        }
        if !(0.0..=MAX_PRICE_PER_HOUR).contains(&self.price_per_hour) {
            fail(
                "price_per_hour",
                format!("must be a number from 0 to {MAX_PRICE_PER_HOUR}"),
            );
        }
        if let Some(budget) = &self.budget {
            if let Err(message) = budget.check() {
                fail("budget.max_per_hour", message);
            } else if self.price_per_hour > budget.max_per_hour {
                fail(
                    "budget.max_per_hour",
                    format!(
                        "is below price_per_hour ({} < {}): no instance could ever start",
                        budget.max_per_hour, self.price_per_hour
                    ),
                );
            } else if f64::from(self.min_instances) * self.price_per_hour > budget.max_per_hour {
                fail(
                    "budget.max_per_hour",
                    format!(
                        "cannot pay for the warm pool ({} × {} > {})",
                        self.min_instances, self.price_per_hour, budget.max_per_hour
                    ),
                );
            }
        }
        for (i, key) in self.access_keys.iter().enumerate() {
            // Never echo a key in an error: errors are logged and answered.
            if !(16..=256).contains(&key.len()) {
                fail(
                    &format!("access_keys[{i}]"),
                    format!("must be 16 to 256 characters, got {}", key.len()),
                );
            } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
                fail(
                    &format!("access_keys[{i}]"),
                    "must be visible ASCII (no spaces or control characters)".to_owned(),
                );
            } else if self.access_keys[..i].contains(key) {
                fail(
                    &format!("access_keys[{i}]"),
                    "repeats an earlier key".to_owned(),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_speech() -> DeployConfig {
        toml::from_str(
            r#"
            id = "breezy-voice"
            name = "BreezyVoice"
            gpu = { kind = "RTX 4090", count = 1 }
            image = "breezyvoice-webui"
            port = 8080
            start_command = "cd /BreezyVoice && python api.py"
            idle_retention = "10m"
            max_instances = 5
            "#,
        )
        .expect("seed config parses")
    }

    #[test]
    fn seed_config_parses_with_defaults() {
        let cfg = seed_speech();
        assert_eq!(cfg.idle_retention, Duration::from_secs(600));
        assert_eq!(cfg.min_instances, 0);
        assert_eq!(cfg.queue.timeout, Duration::from_secs(360));
        assert!(cfg.queue.timeout > cfg.start_timeout);
        assert_eq!(cfg.provider, "local");
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn nested_tables_and_durations_parse() {
        let cfg: DeployConfig = toml::from_str(
            r#"
            id = "x"
            start_command = "python -m http.server {port}"
            idle_retention = "3m"
            max_instances = 2
            start_timeout = "30s"
            readiness = { path = "/health", interval = "250ms" }
            queue = { max_waiting = 10, timeout = "1m 30s" }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.start_timeout, Duration::from_secs(30));
        assert_eq!(cfg.readiness.interval, Duration::from_millis(250));
        assert_eq!(cfg.queue.timeout, Duration::from_secs(90));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<DeployConfig>(
            r#"
            id = "x"
            start_command = "x"
            idle_retention = "3m"
            max_instance = 2
            "#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_instance"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_field() {
        let mut cfg = DeployConfig::new("Bad_Id", " ", Duration::ZERO, 0);
        cfg.min_instances = 1;
        cfg.port = 0;
        cfg.price_per_hour = -1.0;
        cfg.readiness.path = Some("health".into());
        let fields: Vec<String> = cfg
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "id",
                "port",
                "idle_retention",
                "max_instances",
                "min_instances",
                "readiness.path",
                "price_per_hour"
            ]
        );
    }

    #[test]
    fn min_greater_than_max_is_named() {
        let mut cfg = DeployConfig::new("a", "true", Duration::from_secs(1), 2);
        cfg.min_instances = 3;
        let errs = cfg.validate().unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "min_instances");
        assert!(errs.to_string().contains("3 > 2"));
    }

    #[test]
    fn instance_counts_and_prices_are_bounded() {
        // A fuzzer once asked for a warm pool of 403,055: the gateway must refuse, not start it.
        let mut cfg = DeployConfig::new("a", "true", Duration::from_secs(1), 2_147_483_646);
        cfg.min_instances = 403_055;
        cfg.price_per_hour = 1e13;
        let errs = cfg.validate().unwrap_err();
        let fields: Vec<_> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["max_instances", "price_per_hour"], "{errs:?}");
        cfg.max_instances = MAX_INSTANCES_LIMIT;
        cfg.min_instances = MAX_INSTANCES_LIMIT;
        cfg.price_per_hour = MAX_PRICE_PER_HOUR;
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn access_keys_are_checked_and_never_echoed() {
        let mut cfg = DeployConfig::new("a", "true", Duration::from_secs(1), 1);
        cfg.access_keys = vec!["k3y-0123456789abcdef".into()];
        assert!(cfg.validate().is_ok());
        cfg.access_keys = vec![
            "short-secret".into(),
            "has a space in it, 24 ch".into(),
            "k3y-0123456789abcdef".into(),
            "k3y-0123456789abcdef".into(),
            "x".repeat(257),
        ];
        let err = cfg.validate().unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "access_keys[0]",
                "access_keys[1]",
                "access_keys[3]",
                "access_keys[4]"
            ]
        );
        let text = err.to_string();
        for key in &cfg.access_keys {
            assert!(!text.contains(key.as_str()), "{text}");
        }
        let parsed: DeployConfig = toml::from_str(
            r#"
            id = "a"
            start_command = "true"
            idle_retention = "1m"
            max_instances = 1
            access_keys = ["k3y-0123456789abcdef", "another-key-0123456789"]
            "#,
        )
        .unwrap();
        assert_eq!(parsed.access_keys.len(), 2);
    }

    #[test]
    fn deployment_ids() {
        assert!(validate_deployment_id("tts-1").is_ok());
        assert!(validate_deployment_id("").is_err());
        assert!(validate_deployment_id("-a").is_err());
        assert!(validate_deployment_id("a/b").is_err());
        assert!(validate_deployment_id(&"a".repeat(64)).is_err());
    }
}
