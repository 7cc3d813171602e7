//! RunPod pods over the REST API v1 (`https://rest.runpod.io/v1`, a Bearer key).
//!
//! An instance is a pod named `autodeploy-{owner}-{deployment}-{instance}` (the
//! idempotency key: a create whose answer was lost is found by listing before it is
//! retried), created with `POST /pods` from the deployment's `image`, `gpu.kind` as the
//! one GPU type id, `gpu.count`, its `port` (`8080/http` for the proxy, `8080/tcp` for a
//! public port), its `env` plus `PORT` and the labels (`AUTODEPLOY_OWNER`,
//! `AUTODEPLOY_DEPLOYMENT`, `AUTODEPLOY_INSTANCE`), and `start_command` as
//! `dockerStartCmd = ["sh", "-c", ...]` (`{port}` becomes the service port).
//!
//! `GET /pods/{id}` is polled until `desiredStatus` is `RUNNING` and the address is known
//! (immediately for the proxy; with `access = "tcp"`, once `publicIp` and `portMappings`
//! are there), then the service is probed over HTTP. `EXITED` and `TERMINATED` are deaths.
//! Release is `DELETE /pods/{id}` until `GET` says `TERMINATED` or 404.
//!
//! Cost: the deployment's `price_per_hour` (the pod's `costPerHr` is logged at create).

mod config;
mod pods;

use std::sync::Arc;

use autodeploy_core::{DeployConfig, FieldError, GpuProvider};

use crate::registry::{BuildContext, ProviderTable};
use crate::remote::Remote;

pub use config::{RUNPOD_API_BASE, RunpodAccess, RunpodConfig};
pub use pods::Runpod;

/// The RunPod provider: the shared remote core driving the RunPod mapping.
pub type RunpodProvider = Remote<Runpod>;

/// A RunPod provider for `config`, its key read from the environment variable the config
/// names.
pub fn provider(config: RunpodConfig) -> Result<RunpodProvider, String> {
    let settings = config.settings();
    Remote::from_env(Runpod::new(config), settings)
}

impl ProviderTable for Option<RunpodConfig> {
    fn validate(&self) -> Vec<FieldError> {
        let Some(config) = self else {
            return Vec::new();
        };
        config
            .problems()
            .into_iter()
            .map(|(field, message)| crate::remote::field_error(field, message))
            .collect()
    }

    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        pods::validate_deployment(deployment)
    }

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn GpuProvider>, String> {
        let mut config = self.clone().unwrap_or_default();
        if config.ca_file.is_none() {
            config.ca_file.clone_from(&context.ca_file);
        }
        Ok(Arc::new(provider(config)?))
    }

    fn enabled(&self) -> bool {
        self.is_some()
    }
}
