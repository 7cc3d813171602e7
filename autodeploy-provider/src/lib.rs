//! # autodeploy-provider
//!
//! Implementations of core's [`GpuProvider`](autodeploy_core::GpuProvider) trait:
//!
//! - [`Local`]: the embedded default. An instance is a child process running the deployment's
//!   start command on a free loopback port, in its own process group, with GPU slots handed
//!   out through `CUDA_VISIBLE_DEVICES` and a state directory for reconciliation after a
//!   restart.
//! - `Docker` (cargo feature `docker`, on by default): a container per instance on one of
//!   several Docker engines, with GPU slots per host, readiness proven over the published
//!   port, deaths from the engine's event stream, and reconciliation by labels.
//! - [`Simulated`]: for tests, benchmarks and capacity planning. An instance is a real
//!   in-process HTTP server on a loopback port that reports its id, with configurable boot
//!   time, failures and crashes, deterministic under a seed and tokio's paused clock.
//! - [`runpod`] (feature `runpod`) and [`glows`] (feature `glows`): GPU clouds driven over
//!   their HTTP APIs, both built on [`remote`], the shared core (idempotent create, polling
//!   with backoff, release until confirmed, reconcile by listing), so a further cloud is a
//!   mapping of five calls, not a copy.
//!
//! # The registry: providers by name
//!
//! [`ProvidersConfig`] is the gateway's `[providers]` table, one optional sub-table per
//! provider, and [`ProvidersConfig::tables`] is the one list that names them. Through it the
//! gateway validates the tables and each deployment ([`ProvidersConfig::validate_deployment`]:
//! an unknown `provider`, or what that provider requires), and builds every provider as an
//! `Arc<dyn GpuProvider>` keyed by name ([`ProvidersConfig::build`]). Reconciliation at start
//! goes through the trait too ([`GpuProvider::list_owned`](autodeploy_core::GpuProvider::list_owned)),
//! so the gateway never names a provider type.
//!
//! ```
//! use autodeploy_provider::{BuildContext, ProvidersConfig};
//!
//! let config: ProvidersConfig = toml::from_str("[simulated]\nboot_time = \"1s\"\n").unwrap();
//! assert!(config.validate().is_empty());
//! let providers = config.build(&BuildContext::default()).unwrap();
//! assert!(providers.contains_key("local") && providers.contains_key("simulated"));
//! ```
//!
//! Adding a provider: a module holding the provider and its config table, the table
//! implementing [`ProviderTable`] (validate the table, validate a deployment, build), a
//! `#[serde(default)]` field in [`ProvidersConfig`], and one line in
//! [`ProvidersConfig::tables`]. Its [`GpuProvider::validate_deployment`](autodeploy_core::GpuProvider::validate_deployment)
//! should call the same check as its table's, so the API and `autodeploy check` agree.

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "glows")]
pub mod glows;
pub mod local;
mod readiness;
pub mod registry;
#[cfg(any(feature = "runpod", feature = "glows"))]
pub mod remote;
#[cfg(feature = "runpod")]
pub mod runpod;
pub mod simulated;

#[cfg(feature = "docker")]
pub use docker::{Docker, DockerConfig, DockerConfigError};
pub use local::{Local, LocalConfig, LocalConfigError};
pub use registry::{BuildContext, ProviderTable, Providers, ProvidersConfig, RegistryError};
pub use simulated::{Simulated, SimulatedConfig, SimulatedConfigError};

#[cfg(feature = "glows")]
pub use glows::{GlowsConfig, GlowsProvider};
#[cfg(feature = "runpod")]
pub use runpod::{RunpodConfig, RunpodProvider};
