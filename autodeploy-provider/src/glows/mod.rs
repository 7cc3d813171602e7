//! Glows.ai instances over the SDK HTTP API (`https://a.glows.ai/sdk/v1`, a Bearer SDK
//! token).
//!
//! An instance is created with `POST /instance` from the deployment's `image`
//! (`from_image_id`) or `snapshot` (`from_snap_id`), `gpu.kind` as `gpu_name`, the
//! configured `region_name` and `instance_category`, `custom_meta_key`
//! `{owner}.{deployment}.{instance}` (globally unique: the idempotency key), `envs` as
//! `"A=1;B=2"` (the deployment's env, `PORT` and the labels), `ports` as the JSON string
//! `[{"port":8080,"protocol":2}]` (2 = HTTP) and `start_command` as `cmd` (it must keep
//! running, or Glows releases the instance).
//!
//! Every answer is `{code, msg, ...}` with HTTP 200 even on failure; code 176 (a token Glows
//! does not accept) is "cloud API refused the key". The instance is queried by `request_id`
//! until its status goes from `SchedQueued` to `Running` and the `accesses[]` entry for the
//! service port has a non-empty `url`; then the service is probed over HTTP(S). Release
//! cancels by `request_id` and queries until the status says it is gone.
//!
//! Cost: the deployment's `price_per_hour` (the instance's `priceCent` is logged).

mod config;
mod instances;

use std::sync::Arc;

use autodeploy_core::{DeployConfig, FieldError, GpuProvider};

use crate::registry::{BuildContext, ProviderTable};
use crate::remote::Remote;

pub use config::{GLOWS_API_BASE, GlowsConfig};
pub use instances::{CODE_BAD_TOKEN, Glows};

/// The Glows.ai provider: the shared remote core driving the Glows mapping.
pub type GlowsProvider = Remote<Glows>;

/// A Glows.ai provider for `config`, its token read from the environment variable the
/// config names.
pub fn provider(config: GlowsConfig) -> Result<GlowsProvider, String> {
    let settings = config.settings();
    Remote::from_env(Glows::new(config), settings)
}

impl ProviderTable for Option<GlowsConfig> {
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
        instances::validate_deployment(deployment)
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
