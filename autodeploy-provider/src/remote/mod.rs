//! The shared core of providers driven by a cloud's HTTP API (RunPod, Glows.ai, the next
//! one): a cloud is a [`Cloud`] mapping of five calls; [`Remote`] turns it into a
//! [`GpuProvider`] that keeps the promises of `DESIGN.md` §4.
//!
//! # Lifecycle
//!
//! - **create** (`create.rs`): the instance is created under an idempotency key derived from
//!   owner, deployment and instance id ([`Cloud::key`]). A create that fails in a way that
//!   may hide a success (timeout, 5xx, lost connection) is retried only after looking the
//!   key up, so a lost answer never makes a second machine. Then the instance is polled
//!   (1 s, doubling to 10 s by default) until the cloud says it runs and its address is
//!   known; an instance the cloud ends first is a start failure.
//! - **readiness** (`readiness.rs`): "ready" means the service answered: an HTTP `GET` of
//!   the readiness path (`/` when none is set) on the instance's address, any status below
//!   500, within the deployment's start timeout counted from create.
//! - **deaths** (`watch.rs`): a running instance is polled every `poll_max`; one the cloud
//!   ends by itself (exited, terminated, gone) is reported through `wait_exit`.
//! - **release** (`release.rs`): delete, then poll until the cloud confirms the instance is
//!   gone; the delete is sent again when it does not, and an error goes back to the caller
//!   (which retries) rather than being dropped: a release that silently failed keeps billing.
//! - **reconcile** (`reconcile.rs`): `list` asks the cloud for every instance carrying
//!   autodeploy's labels (kept in its environment: `AUTODEPLOY_OWNER`, `_DEPLOYMENT`,
//!   `_INSTANCE`), so a restarted gateway finds, adopts and releases what an earlier run left.
//!
//! # The API key
//!
//! Read once from the environment variable the config names; sent only in the
//! `Authorization` header (marked sensitive); its `Debug` is redacted, and no message,
//! log line or answer ever carries it. 401/403 (or the cloud's own "bad token" code) stop
//! at once with "cloud API refused the key" (code 1004 to waiting requests).

mod api;
mod backoff;
mod cloud;
mod create;
mod labels;
mod readiness;
mod reconcile;
mod release;
mod settings;
pub(crate) mod table;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use autodeploy_core::{
    DeployConfig, Endpoint, ExitReport, FieldError, GpuProvider, InstanceId, InstanceSpec,
    ProvidedInstance, ProviderError, ReadinessProbe, UpstreamProtocol,
};

pub use api::{ApiClient, ApiError, ApiKey, Retry};
pub use cloud::{Cloud, CloudInstance, CloudState};
pub use settings::RemoteSettings;

pub(crate) use api::{excerpt, query_value};
pub(crate) use labels::{environment, from_environment, owner};
pub(crate) use labels::{field_error, require_gpu};

/// How many notes (states seen, errors) an instance keeps for its failure messages.
const NOTES: usize = 20;
/// The start timeout given to an instance adopted after a restart.
const ADOPTED_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A provider driven by a cloud's HTTP API; see the [module docs](self).
#[derive(Debug)]
pub struct Remote<C: Cloud> {
    cloud: C,
    api: ApiClient,
    settings: RemoteSettings,
    probe: reqwest::Client,
    instances: Mutex<HashMap<InstanceId, Arc<Tracked>>>,
}

/// What the provider knows of one instance.
#[derive(Debug)]
struct Tracked {
    key: String,
    created: Instant,
    start_timeout: Duration,
    readiness: ReadinessProbe,
    protocol: UpstreamProtocol,
    /// The cloud's latest description; `None` until a create was answered.
    cloud: Mutex<Option<CloudInstance>>,
    released: AtomicBool,
    notes: Mutex<Vec<String>>,
}

impl Tracked {
    fn new(spec: &InstanceSpec, key: String) -> Self {
        Self {
            key,
            created: Instant::now(),
            start_timeout: spec.start_timeout,
            readiness: spec.readiness.clone(),
            protocol: spec.protocol,
            cloud: Mutex::new(None),
            released: AtomicBool::new(false),
            notes: Mutex::new(Vec::new()),
        }
    }

    fn adopted(instance: CloudInstance) -> Self {
        Self {
            key: instance.key.clone(),
            created: Instant::now(),
            start_timeout: ADOPTED_START_TIMEOUT,
            readiness: ReadinessProbe::default(),
            protocol: UpstreamProtocol::default(),
            cloud: Mutex::new(Some(instance)),
            released: AtomicBool::new(false),
            notes: Mutex::new(Vec::new()),
        }
    }

    fn current(&self) -> Option<CloudInstance> {
        self.cloud.lock().clone()
    }

    fn endpoint(&self) -> Option<Endpoint> {
        self.cloud.lock().as_ref().and_then(|c| c.endpoint.clone())
    }

    /// Records the cloud's latest description, noting a change of state.
    fn update(&self, instance: CloudInstance) {
        let mut slot = self.cloud.lock();
        let changed = slot.as_ref().is_none_or(|old| old.state != instance.state);
        if changed {
            self.note(format!("{}: {:?}", instance.cloud_id, instance.state));
        }
        *slot = Some(instance);
    }

    fn note(&self, line: String) {
        let mut notes = self.notes.lock();
        if notes.len() == NOTES {
            notes.remove(0);
        }
        notes.push(line);
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().clone()
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

impl<C: Cloud> Remote<C> {
    /// A provider for `cloud` with `settings`, the key read from the environment variable
    /// `settings.api_key_env`.
    pub fn from_env(cloud: C, settings: RemoteSettings) -> Result<Self, String> {
        let key = ApiKey::from_env(&settings.api_key_env)?;
        Self::new(cloud, settings, key)
    }

    /// A provider for `cloud` with `settings` and `key`.
    pub fn new(cloud: C, settings: RemoteSettings, key: ApiKey) -> Result<Self, String> {
        if let Some((field, problem)) = settings.problems().into_iter().next() {
            return Err(format!("{field}: {problem}"));
        }
        let api = ApiClient::new(cloud.name(), &settings, key)?;
        let probe = readiness::client(&settings)?;
        Ok(Self {
            cloud,
            api,
            settings,
            probe,
            instances: Mutex::new(HashMap::new()),
        })
    }

    /// The settings this provider runs with.
    pub fn settings(&self) -> &RemoteSettings {
        &self.settings
    }

    /// The cloud mapping.
    pub fn cloud(&self) -> &C {
        &self.cloud
    }

    fn tracked(&self, id: InstanceId) -> Option<Arc<Tracked>> {
        self.instances.lock().get(&id).cloned()
    }

    /// A provider error for a failed start: no capacity stays no capacity, the rest is a
    /// start failure with what the instance noted.
    fn start_error(&self, err: ApiError, tracked: &Tracked) -> ProviderError {
        match err {
            ApiError::NoCapacity(msg) => ProviderError::NoCapacity(msg),
            err => ProviderError::StartFailed {
                reason: err.to_string(),
                last_log: tracked.notes(),
            },
        }
    }
}

#[async_trait]
impl<C: Cloud> GpuProvider for Remote<C> {
    fn name(&self) -> &str {
        self.cloud.name()
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        self.create_instance(spec).await
    }

    async fn wait_ready(&self, id: InstanceId) -> Result<(), ProviderError> {
        self.await_ready(id).await
    }

    async fn release(&self, id: InstanceId) -> Result<(), ProviderError> {
        self.release_instance(id).await
    }

    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .filter(|p| {
                p.labels.get(autodeploy_core::provider::LABEL_DEPLOYMENT)
                    == Some(&deployment.to_owned())
            })
            .collect())
    }

    async fn list_owned(&self) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.list_all().await
    }

    fn validate_deployment(&self, config: &DeployConfig) -> Vec<FieldError> {
        self.cloud.validate_deployment(config)
    }

    async fn wait_exit(&self, id: InstanceId) -> ExitReport {
        self.watch(id).await
    }

    fn logs(&self, id: InstanceId, lines: usize) -> Vec<String> {
        let notes = self.tracked(id).map(|t| t.notes()).unwrap_or_default();
        let skip = notes.len().saturating_sub(lines);
        notes.into_iter().skip(skip).collect()
    }
}
