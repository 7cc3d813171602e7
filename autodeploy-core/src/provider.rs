//! The `GpuProvider` trait: how instances are created, probed, released and listed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::{
    ContainerOptions, DeployConfig, FieldError, GpuSpec, ReadinessProbe, UpstreamProtocol,
};
use crate::error::{ErrorCode, GatewayError};
use crate::instance_id::InstanceId;

/// The label every provider stores with an instance to name its deployment.
pub const LABEL_DEPLOYMENT: &str = "autodeploy.deployment";
/// The label naming the gateway (owner) that created the instance.
pub const LABEL_OWNER: &str = "autodeploy.owner";
/// The label naming the instance itself, for engines whose own ids are not ours (a cloud's
/// pod id).
pub const LABEL_INSTANCE: &str = "autodeploy.instance";

/// Everything a provider needs to create one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// The deployment the instance belongs to.
    pub deployment: String,
    /// The id chosen by the controller; providers key their records by it, so a retried
    /// create with the same id must not start a second instance.
    pub instance: InstanceId,
    /// GPUs needed.
    pub gpu: GpuSpec,
    /// Image to boot from, if the provider runs images.
    pub image: Option<String>,
    /// Snapshot to boot from instead of an image.
    pub snapshot: Option<String>,
    /// Port the service listens on inside the instance.
    pub port: u16,
    /// Start command, run by `sh -c`.
    pub command: String,
    /// Working directory of the command.
    pub workdir: Option<PathBuf>,
    /// Environment of the command.
    pub env: BTreeMap<String, String>,
    /// Labels recorded with the instance (deployment, owner, ...), returned by `list`.
    pub labels: BTreeMap<String, String>,
    /// How readiness is decided.
    pub readiness: ReadinessProbe,
    /// How long the instance may take to become ready.
    pub start_timeout: Duration,
    /// The HTTP version the instance speaks; an HTTP readiness probe speaks it too.
    pub protocol: UpstreamProtocol,
    /// Container settings, for providers that run containers.
    pub container: Option<ContainerOptions>,
}

impl InstanceSpec {
    /// The spec for a new instance `instance` of the deployment `config`.
    pub fn from_config(config: &DeployConfig, instance: InstanceId) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_DEPLOYMENT.to_owned(), config.id.clone());
        Self {
            deployment: config.id.clone(),
            instance,
            gpu: config.gpu.clone(),
            image: config.image.clone(),
            snapshot: config.snapshot.clone(),
            port: config.port,
            command: config.start_command.clone(),
            workdir: config.workdir.clone(),
            env: config.env.clone(),
            labels,
            readiness: config.readiness.clone(),
            start_timeout: config.start_timeout,
            protocol: config.upstream,
            container: config.docker.clone(),
        }
    }
}

/// How the gateway talks to an instance: plain HTTP, or HTTP over TLS (a cloud instance
/// reached over the internet, a proxy in front of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP (HTTP/1.1, or HTTP/2 with prior knowledge for `h2c` deployments).
    #[default]
    Http,
    /// TLS, with HTTP/2 or HTTP/1.1 chosen by ALPN.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where an instance serves HTTP: a scheme, a host (name or address) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// Plain HTTP or TLS.
    pub scheme: Scheme,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// A plain HTTP endpoint on `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            scheme: Scheme::Http,
            host: host.into(),
            port,
        }
    }

    /// An HTTPS endpoint on `host:port`: the gateway speaks TLS to it and checks its
    /// certificate against `host`.
    pub fn https(host: impl Into<String>, port: u16) -> Self {
        Self {
            scheme: Scheme::Https,
            host: host.into(),
            port,
        }
    }

    /// The endpoint's base URL, without a trailing slash (`https://abc-8080.proxy.runpod.net`,
    /// `http://127.0.0.1:9000`); the port is left out when it is the scheme's default.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            format!("{}://{host}", self.scheme.as_str())
        } else {
            format!("{}://{host}:{}", self.scheme.as_str(), self.port)
        }
    }
}

impl From<std::net::SocketAddr> for Endpoint {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), addr.port())
    }
}

impl fmt::Display for Endpoint {
    /// `host:port` for plain HTTP (as before schemes existed), the URL for HTTPS.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Https => f.write_str(&self.url()),
            Scheme::Http if self.host.contains(':') => write!(f, "[{}]:{}", self.host, self.port),
            Scheme::Http => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// An instance a provider holds, as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedInstance {
    /// Its id.
    pub id: InstanceId,
    /// Where it serves, if known.
    pub endpoint: Option<Endpoint>,
    /// The labels it was created with.
    pub labels: BTreeMap<String, String>,
}

/// Why an instance stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitReport {
    /// What happened, for people (e.g. `exited with status 1`, `killed by signal 9`).
    pub reason: String,
    /// The instance's last log lines, oldest first.
    pub last_log: Vec<String>,
}

/// One counter a provider keeps, rendered in `/metrics` as
/// `autodeploy_provider_{name}_total{provider="...", labels...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCounter {
    /// The metric's name after `autodeploy_provider_` (`[a-z_]`), without `_total`.
    pub name: &'static str,
    /// What it counts, for the `# HELP` line.
    pub help: &'static str,
    /// Its labels beyond `provider`.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: u64,
}

/// What can go wrong at a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// No free capacity (GPU slots, quota) for a new instance.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// The instance could not be started, or exited before it was ready.
    #[error("{reason}{}", log_suffix(.last_log))]
    StartFailed {
        /// What happened.
        reason: String,
        /// The instance's last log lines, oldest first.
        last_log: Vec<String>,
    },
    /// The instance did not become ready in time.
    #[error("not ready after {after:?}: {tried}{}", log_suffix(.last_log))]
    StartTimedOut {
        /// How long it was given.
        after: Duration,
        /// What readiness check was tried.
        tried: String,
        /// The instance's last log lines, oldest first.
        last_log: Vec<String>,
    },
    /// The provider does not know this instance.
    #[error("unknown instance {0}")]
    UnknownInstance(InstanceId),
    /// Anything else: an API error, an I/O error.
    #[error("{0}")]
    Backend(String),
}

fn log_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last log lines:\n{}", lines.join("\n"))
    }
}

impl From<ProviderError> for GatewayError {
    fn from(err: ProviderError) -> Self {
        let code = match &err {
            ProviderError::NoCapacity(_) => ErrorCode::NoCapacity,
            ProviderError::StartTimedOut { .. } => ErrorCode::InstanceStartTimedOut,
            _ => ErrorCode::InstanceStartFailed,
        };
        GatewayError::with_detail(code, err)
    }
}

/// A place that creates and releases instances: local processes, a simulation, a GPU cloud.
///
/// Implementations are shared (`Arc<dyn GpuProvider>`) by every deployment using them and are
/// called concurrently. Calls are rare and slow next to requests, so boxing their futures
/// costs nothing that matters.
#[async_trait]
pub trait GpuProvider: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`"local"`, `"simulated"`).
    fn name(&self) -> &str;

    /// Creates the instance `spec.instance` and returns where it will serve. It may still be
    /// booting: the caller follows with [`GpuProvider::wait_ready`]. On error nothing may be
    /// left running; the caller still calls `release`, which must then be a no-op.
    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError>;

    /// Resolves when the instance passes its readiness check (`spec.readiness`), or fails with
    /// `StartFailed` if it exited and `StartTimedOut` after `spec.start_timeout`, each with the
    /// instance's last log lines.
    async fn wait_ready(&self, id: InstanceId) -> Result<(), ProviderError>;

    /// Releases the instance and everything it started. Idempotent: releasing an unknown or
    /// already released instance succeeds. Returns once the instance no longer runs.
    async fn release(&self, id: InstanceId) -> Result<(), ProviderError>;

    /// The instances this provider holds for `deployment`, including ones created by an
    /// earlier run of the gateway (for reconciliation after a restart).
    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError>;

    /// Whether this provider can take over instances an earlier run of the gateway left
    /// ([`GpuProvider::adopt`]). When it cannot (the default), a restarted gateway releases
    /// them.
    fn adopts(&self) -> bool {
        false
    }

    /// Takes over `found`, an instance of `spec.deployment` that an earlier run of the
    /// gateway left (as [`GpuProvider::list`] reported it), as if [`GpuProvider::create`] had
    /// just made it for `spec` (whose `instance` is `found.id`): returns where it serves, and
    /// the caller follows with [`GpuProvider::wait_ready`]. Refuses an instance that no
    /// longer matches `spec` (another image, GPU count or host) or does not run; the caller
    /// then releases it. Only called when [`GpuProvider::adopts`] says so.
    async fn adopt(
        &self,
        found: &ProvidedInstance,
        spec: InstanceSpec,
    ) -> Result<Endpoint, ProviderError> {
        let _ = (found, spec);
        Err(ProviderError::Backend(format!(
            "the {} provider does not adopt instances",
            self.name()
        )))
    }

    /// Every instance this provider holds that carries its owner label, whatever the
    /// deployment (each with its [`LABEL_DEPLOYMENT`] label), including ones an earlier run
    /// left. A starting gateway releases those of deployments it no longer has. The default
    /// reports none, for providers whose instances cannot outlive the provider.
    async fn list_owned(&self) -> Result<Vec<ProvidedInstance>, ProviderError> {
        Ok(Vec::new())
    }

    /// What this provider requires of a deployment beyond core's checks (an image, a start
    /// command, a GPU kind), each problem naming its field (`image`, `docker.shm_size`).
    /// Called before a deployment is added or replaced; the default accepts everything.
    fn validate_deployment(&self, config: &DeployConfig) -> Vec<FieldError> {
        let _ = config;
        Vec::new()
    }

    /// Resolves when the instance stops without being released (crash, exit, kill), with the
    /// reason. Never resolves for an instance that keeps running; resolves at once for an
    /// unknown one. The default never resolves, for providers that cannot tell.
    async fn wait_exit(&self, id: InstanceId) -> ExitReport {
        let _ = id;
        std::future::pending().await
    }

    /// Where the instance runs, in the provider's terms (a Docker host entry's name), shown
    /// with the instance in the management API; `None` where there is one place only.
    fn location(&self, id: InstanceId) -> Option<String> {
        let _ = id;
        None
    }

    /// The provider's own counters, for `/metrics` (e.g. hosts skipped because their
    /// engine did not answer). The default has none.
    fn counters(&self) -> Vec<ProviderCounter> {
        Vec::new()
    }

    /// The instance's last `lines` log lines, oldest first; empty when the provider keeps none.
    fn logs(&self, id: InstanceId, lines: usize) -> Vec<String> {
        let _ = (id, lines);
        Vec::new()
    }
}
