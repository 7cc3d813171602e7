//! The Docker provider: an instance is a container on one of several Docker engines (the
//! local one by default), for services that ship as images (vLLM, TGI, Triton).
//!
//! Enabled by the `docker` cargo feature (on by default; the `autodeploy` binary has it).
//!
//! # What an instance is
//!
//! - One container per instance, named `autodeploy-{deployment}-{instance}` and labelled
//!   `autodeploy.deployment`, `autodeploy.instance`, `autodeploy.owner` ([`DockerConfig::owner`])
//!   and `autodeploy.host` (the host entry's name), plus [`DockerConfig::labels`].
//! - The deployment's `image` (pulled per [`DockerConfig::pull`]; an image the engine lacks and
//!   cannot pull fails the start at once: `image not found: NAME`), its `start_command` split
//!   into words as the container's command (empty: the image's own), its `env` plus `PORT`,
//!   `AUTODEPLOY_INSTANCE` and `AUTODEPLOY_DEPLOYMENT`, and its `docker` table
//!   (`shm_size`, `volumes`, `extra_hosts`, `memory`, `cpus`).
//! - The deployment's `port` (inside the container) published on the host's bind address
//!   with a port the engine chooses, read back from the started container's network settings.
//!
//! # Hosts, placement and GPUs
//!
//! Each host lists the GPU ids it hands out. A new instance goes to the host with enough
//! free slots and the fewest instances of its deployment; it gets a
//! `DeviceRequest { driver: "nvidia", device_ids, capabilities: [["gpu"]] }` (what `docker run
//! --gpus` sends) and `NVIDIA_VISIBLE_DEVICES`. No host with enough free slots: `NoCapacity`
//! (1011). A host whose engine does not answer within 3 s is skipped for 5 s, logged and
//! counted ([`Docker::skipped`]).
//!
//! # Readiness, deaths, release, restarts
//!
//! See [`readiness`](self::readiness), [`events`](self::events), [`release`](self::release)
//! and [`reconcile`](self::reconcile): ready means the published port answers HTTP (and the
//! image's HEALTHCHECK, if any, says healthy); a container that exits before is a 1004 with its
//! last log lines; one not ready in time is removed (1005); a death is reported from the
//! engine's event stream; release stops with grace and removes, retried until the engine
//! confirms; a restarted gateway finds every container with its owner label on every host.

mod config;
mod create;
mod events;
mod host;
mod placement;
mod readiness;
mod reconcile;
mod release;
pub mod scratch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use autodeploy_core::{
    DeployConfig, Endpoint, ExitReport, FieldError, GpuProvider, InstanceId, InstanceSpec,
    ProvidedInstance, ProviderCounter, ProviderError, UpstreamProtocol,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

pub use config::{DockerConfig, DockerHost, PullPolicy, TlsFiles};

use host::Host;

/// The label naming the host entry a container was created through.
pub const LABEL_HOST: &str = "autodeploy.host";
/// The label listing the GPU ids a container holds, so a restarted gateway keeps them taken
/// until it releases the container.
pub const LABEL_GPUS: &str = "autodeploy.gpus";
/// How many log lines a start failure or an exit report carries.
const ERROR_LOG_LINES: usize = 20;

/// The Docker provider; see the [module docs](self).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use autodeploy_core::{DeployConfig, GpuProvider, InstanceId, InstanceSpec};
/// use autodeploy_provider::{Docker, DockerConfig};
///
/// let docker = Docker::new(DockerConfig::default())?;
/// let mut config = DeployConfig::new("web", "", Duration::from_secs(600), 2);
/// config.provider = "docker".into();
/// config.image = Some("nginx:alpine".into());
/// config.port = 80;
/// let id = InstanceId::generate();
/// let endpoint = docker.create(InstanceSpec::from_config(&config, id)).await?;
/// docker.wait_ready(id).await?;
/// println!("serving at http://{endpoint}/");
/// docker.release(id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Docker {
    inner: Arc<Inner>,
}

/// Why a [`Docker`] provider could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid [providers.docker]: {0}")]
pub struct DockerConfigError(String);

/// What the provider's operations share.
#[derive(Debug)]
pub(crate) struct Inner {
    config: DockerConfig,
    hosts: Vec<Host>,
    records: Mutex<HashMap<InstanceId, Arc<Container>>>,
    /// One lock per instance id with a create or release in progress.
    locks: Mutex<HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether each host's event watcher runs.
    watching: Mutex<Vec<bool>>,
    /// Whether the orphan sweeper runs.
    sweeping: AtomicBool,
}

/// A container this provider started.
#[derive(Debug)]
pub(crate) struct Container {
    id: InstanceId,
    deployment: String,
    host: usize,
    name: String,
    endpoint: Endpoint,
    labels: BTreeMap<String, String>,
    readiness_path: Option<String>,
    h2: bool,
    probe_interval: Duration,
    start_timeout: Duration,
    created: Instant,
    /// Set once when the container stops on its own.
    exit: watch::Sender<Option<ExitReport>>,
    released: AtomicBool,
}

impl Container {
    fn new(
        spec: &InstanceSpec,
        host: usize,
        name: String,
        endpoint: Endpoint,
        labels: BTreeMap<String, String>,
        created: Instant,
    ) -> Self {
        Self {
            id: spec.instance,
            deployment: spec.deployment.clone(),
            host,
            name,
            endpoint,
            labels,
            readiness_path: spec.readiness.path.clone(),
            h2: spec.protocol == UpstreamProtocol::H2c,
            probe_interval: spec.readiness.interval,
            start_timeout: spec.start_timeout,
            created,
            exit: watch::Sender::new(None),
            released: AtomicBool::new(false),
        }
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    fn mark_released(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// Records the death once; later reports are ignored.
    fn report_exit(&self, reason: String, last_log: Vec<String>) {
        self.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(ExitReport { reason, last_log });
            true
        });
    }
}

impl Docker {
    /// A provider with `config`, once it validates. Connects to nothing yet: each engine is
    /// reached (and its API version negotiated) on first use, so a gateway starts while an
    /// engine is down.
    pub fn new(config: DockerConfig) -> Result<Self, DockerConfigError> {
        let errors = config.validate();
        if let Some(first) = errors.first() {
            return Err(DockerConfigError(first.to_string()));
        }
        let hosts: Vec<Host> = config
            .effective_hosts()
            .into_iter()
            .map(Host::new)
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                watching: Mutex::new(vec![false; hosts.len()]),
                hosts,
                config,
                records: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                sweeping: AtomicBool::new(false),
            }),
        })
    }

    /// The settings this provider runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }

    /// The host an instance runs on (its entry's name), while this provider holds it.
    pub fn host_of(&self, id: InstanceId) -> Option<String> {
        let container = self.inner.get(id)?;
        Some(self.inner.hosts[container.host].name().to_owned())
    }

    /// How many times placement skipped each host because its engine did not answer.
    pub fn skipped(&self) -> BTreeMap<String, u64> {
        self.inner
            .hosts
            .iter()
            .map(|h| (h.name().to_owned(), h.skipped.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Inner {
    fn get(&self, id: InstanceId) -> Option<Arc<Container>> {
        self.records.lock().get(&id).cloned()
    }

    fn create_lock(&self, id: InstanceId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(id).or_default().clone()
    }

    fn forget_lock(&self, id: InstanceId) {
        self.locks.lock().remove(&id);
    }
}

/// The HTTP status of an engine error, if the engine answered one.
fn engine_status(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[async_trait]
impl GpuProvider for Docker {
    fn name(&self) -> &str {
        "docker"
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        self.inner.create(spec).await
    }

    async fn wait_ready(&self, id: InstanceId) -> Result<(), ProviderError> {
        self.inner.wait_ready(id).await
    }

    fn adopts(&self) -> bool {
        true
    }

    async fn adopt(
        &self,
        found: &ProvidedInstance,
        spec: InstanceSpec,
    ) -> Result<Endpoint, ProviderError> {
        self.inner.adopt(found, spec).await
    }

    async fn release(&self, id: InstanceId) -> Result<(), ProviderError> {
        self.inner.release(id).await
    }

    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.inner.list(Some(deployment)).await
    }

    async fn list_owned(&self) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.inner.list(None).await
    }

    async fn wait_exit(&self, id: InstanceId) -> ExitReport {
        let Some(container) = self.inner.get(id) else {
            return ExitReport {
                reason: format!("unknown instance {id}"),
                last_log: Vec::new(),
            };
        };
        let mut exit = container.exit.subscribe();
        drop(container);
        let report = exit
            .wait_for(Option::is_some)
            .await
            .map(|report| report.clone());
        match report {
            Ok(Some(report)) => report,
            // The record was dropped (released): not a death.
            _ => std::future::pending().await,
        }
    }

    fn logs(&self, id: InstanceId, lines: usize) -> Vec<String> {
        let Some(container) = self.inner.get(id) else {
            return Vec::new();
        };
        let exit = container.exit.borrow();
        let log = exit
            .as_ref()
            .map(|e| e.last_log.clone())
            .unwrap_or_default();
        let skip = log.len().saturating_sub(lines);
        log.into_iter().skip(skip).collect()
    }

    fn validate_deployment(&self, config: &DeployConfig) -> Vec<FieldError> {
        self.inner.config.validate_deployment(config)
    }

    fn location(&self, id: InstanceId) -> Option<String> {
        self.host_of(id)
    }

    fn counters(&self) -> Vec<ProviderCounter> {
        self.skipped()
            .into_iter()
            .map(|(host, value)| ProviderCounter {
                name: "docker_hosts_skipped",
                help: "Placements that skipped a Docker host because its engine did not answer.",
                labels: vec![("host", host)],
                value,
            })
            .collect()
    }
}
