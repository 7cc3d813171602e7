//! What a cloud must provide to be driven by [`Remote`](super::Remote): a mapping of five
//! API calls onto [`CloudInstance`]s. Everything else (retries, idempotent create, polling,
//! release until confirmed, reconciliation, readiness) is shared.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use autodeploy_core::{DeployConfig, Endpoint, FieldError, InstanceSpec};

use super::api::{ApiClient, ApiError};

/// Where an instance is in the cloud's lifecycle, as far as the gateway cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudState {
    /// Queued, scheduled, pulling, booting.
    Pending,
    /// The cloud says it runs (its address may still be unknown).
    Running,
    /// Exited, terminated, released or cancelled: it no longer runs (nor bills), with the
    /// cloud's word for it.
    Gone(String),
}

/// One instance as the cloud's API describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudInstance {
    /// The cloud's own id (RunPod pod id, Glows instance id).
    pub cloud_id: String,
    /// The idempotency key it was created with (RunPod name, Glows meta key).
    pub key: String,
    /// Its state.
    pub state: CloudState,
    /// Where the gateway reaches its service port, once known.
    pub endpoint: Option<Endpoint>,
    /// The labels it was created with (deployment, instance, owner), read back.
    pub labels: BTreeMap<String, String>,
    /// The price per hour the cloud reports, if it does.
    pub price_per_hour: Option<f64>,
}

/// A cloud's API, mapped: each method is one documented call, sent through `api` (which
/// adds the key, the timeout and the retry policy).
#[async_trait]
pub trait Cloud: Send + Sync + fmt::Debug + 'static {
    /// The provider's name (`"runpod"`), for logs, metrics and messages.
    fn name(&self) -> &'static str;

    /// What this cloud requires of a deployment (an image, a GPU kind), fields named
    /// relative to the deployment. The provider and its config table both answer with it,
    /// so the management API and `autodeploy check` agree.
    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError>;

    /// The idempotency key of the instance `spec` describes: derived from owner, deployment
    /// and instance id only, so a retried create computes the same one.
    fn key(&self, spec: &InstanceSpec) -> String;

    /// Creates the instance. Sent once ([`Retry::Never`](super::api::Retry::Never)): the
    /// caller looks for `key` before it tries again.
    async fn create(
        &self,
        api: &ApiClient,
        spec: &InstanceSpec,
        key: &str,
    ) -> Result<CloudInstance, ApiError>;

    /// The live instance created with `key`, if any.
    async fn find(&self, api: &ApiClient, key: &str) -> Result<Option<CloudInstance>, ApiError>;

    /// The instance `cloud_id`; `None` when the cloud no longer knows it.
    async fn get(&self, api: &ApiClient, cloud_id: &str)
    -> Result<Option<CloudInstance>, ApiError>;

    /// Asks the cloud to delete (terminate, cancel) the instance. Succeeds for one that is
    /// already gone.
    async fn delete(&self, api: &ApiClient, instance: &CloudInstance) -> Result<(), ApiError>;

    /// Every instance of the account that carries autodeploy's labels, live or not.
    async fn list(&self, api: &ApiClient) -> Result<Vec<CloudInstance>, ApiError>;
}
