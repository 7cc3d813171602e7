//! The `[providers]` table and the registry that turns it into providers by name.
//!
//! Each engine has one config table, and one line in [`ProvidersConfig::tables`] that
//! registers it under its name; everything else (the gateway's lookup by a deployment's
//! `provider` field, `autodeploy check`, reconciliation at start) goes through that list and
//! the [`GpuProvider`] trait, so the gateway never names an engine.
//!
//! # Adding a provider
//!
//! 1. A module with the provider (`impl GpuProvider`) and its config table, which implements
//!    [`ProviderTable`]: validate the table, validate a deployment (the same function the
//!    provider's [`GpuProvider::validate_deployment`] calls), build the provider.
//! 2. A field in [`ProvidersConfig`] (`#[serde(default)]`, so the table is optional).
//! 3. One line in [`ProvidersConfig::tables`]: `("name", &self.field)`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use autodeploy_core::{DeployConfig, FieldError, GpuProvider};
use serde::Deserialize;

use crate::local::LocalConfig;
use crate::simulated::SimulatedConfig;

/// Providers by the name deployments use in their `provider` field.
pub type Providers = BTreeMap<String, Arc<dyn GpuProvider>>;

/// What the registry needs of one provider's config table.
pub trait ProviderTable: fmt::Debug + Send + Sync {
    /// Problems with the table itself, fields named relative to it (`hosts[0].url`; an empty
    /// field means the table as a whole).
    fn validate(&self) -> Vec<FieldError>;

    /// What this provider requires of a deployment that names it, fields named relative to
    /// the deployment (`image`, `start_command`). Runs without building the provider, so
    /// `autodeploy check` needs no engine.
    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError>;

    /// Builds the provider. Must not wait on the engine: a provider that talks to one connects
    /// on first use, so a gateway starts even while an engine is down.
    fn build(&self, context: &BuildContext) -> Result<Arc<dyn GpuProvider>, String>;

    /// Whether the provider is configured at all. A provider that needs settings only its
    /// user has (a cloud account) is enabled by its table's presence; a disabled one is not
    /// built, and a deployment naming it is told which table to add.
    fn enabled(&self) -> bool {
        true
    }
}

/// What the gateway passes to every provider it builds.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// `[gateway] state_dir`: where providers that record their instances on disk keep them
    /// when their own table names no directory.
    pub state_dir: Option<PathBuf>,
    /// `[gateway] upstream_ca_file`: extra CA certificates for instances with self-signed
    /// certificates, for providers that probe instances over HTTPS and name no file of
    /// their own.
    pub ca_file: Option<PathBuf>,
}

/// The `[providers]` table: one optional sub-table per provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// `[providers.local]`: the local-process provider.
    #[serde(default)]
    pub local: LocalConfig,
    /// `[providers.simulated]`: the simulated provider.
    #[serde(default)]
    pub simulated: SimulatedConfig,
    /// `[providers.docker]`: containers on Docker engines.
    #[cfg(feature = "docker")]
    #[serde(default)]
    pub docker: crate::DockerConfig,
    /// `[providers.runpod]`: RunPod pods over the REST API (feature `runpod`); absent: off.
    #[cfg(feature = "runpod")]
    #[serde(default)]
    pub runpod: Option<crate::runpod::RunpodConfig>,
    /// `[providers.glows]`: Glows.ai instances over the SDK API (feature `glows`); absent: off.
    #[cfg(feature = "glows")]
    #[serde(default)]
    pub glows: Option<crate::glows::GlowsConfig>,
}

/// A provider that could not be built from its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider {name}: {message}")]
pub struct RegistryError {
    /// The provider's name.
    pub name: String,
    /// Why.
    pub message: String,
}

impl ProvidersConfig {
    /// Every provider this build knows, by name: the registration list.
    pub fn tables(&self) -> Vec<(&'static str, &dyn ProviderTable)> {
        #[allow(unused_mut)]
        let mut tables: Vec<(&'static str, &dyn ProviderTable)> =
            vec![("local", &self.local), ("simulated", &self.simulated)];
        #[cfg(feature = "docker")]
        tables.push(("docker", &self.docker));
        #[cfg(feature = "runpod")]
        tables.push(("runpod", &self.runpod));
        #[cfg(feature = "glows")]
        tables.push(("glows", &self.glows));
        tables
    }

    /// The provider names a deployment may use.
    pub fn names(&self) -> Vec<&'static str> {
        self.tables().into_iter().map(|(name, _)| name).collect()
    }

    /// Problems in every provider table, fields named `providers.{name}.{field}`.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (name, table) in self.tables() {
            errors.extend(table.validate().into_iter().map(|e| FieldError {
                field: join("providers", name, &e.field),
                message: e.message,
            }));
        }
        errors
    }

    /// Problems with a deployment as the registered providers see it: an unknown `provider`,
    /// or what its provider requires. Fields are named relative to the deployment.
    pub fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        if deployment.provider.trim().is_empty() {
            return Vec::new(); // core's own check names it
        }
        match self
            .tables()
            .into_iter()
            .find(|(name, _)| *name == deployment.provider)
        {
            Some((name, table)) if !table.enabled() => vec![FieldError {
                field: "provider".into(),
                message: format!(
                    "provider {name:?} is not configured: add a [providers.{name}] table"
                ),
            }],
            Some((_, table)) => table.validate_deployment(deployment),
            None => vec![FieldError {
                field: "provider".into(),
                message: format!(
                    "unknown provider {:?}; expected one of {}",
                    deployment.provider,
                    self.names().join(", ")
                ),
            }],
        }
    }

    /// Builds every registered provider.
    pub fn build(&self, context: &BuildContext) -> Result<Providers, RegistryError> {
        let mut providers = Providers::new();
        for (name, table) in self.tables() {
            if !table.enabled() {
                continue;
            }
            let provider = table.build(context).map_err(|message| RegistryError {
                name: name.to_owned(),
                message,
            })?;
            providers.insert(name.to_owned(), provider);
        }
        Ok(providers)
    }
}

fn join(root: &str, name: &str, field: &str) -> String {
    if field.is_empty() {
        format!("{root}.{name}")
    } else {
        format!("{root}.{name}.{field}")
    }
}

/// A start command, where the provider runs one: required and non-blank.
pub(crate) fn require_start_command(deployment: &DeployConfig) -> Vec<FieldError> {
    if deployment.start_command.trim().is_empty() {
        vec![FieldError {
            field: "start_command".into(),
            message: "must not be empty".into(),
        }]
    } else {
        Vec::new()
    }
}

impl ProviderTable for LocalConfig {
    fn validate(&self) -> Vec<FieldError> {
        match LocalConfig::validate(self) {
            Ok(()) => Vec::new(),
            Err(e) => vec![FieldError {
                field: String::new(),
                message: e.to_string(),
            }],
        }
    }

    fn validate_deployment(&self, deployment: &DeployConfig) -> Vec<FieldError> {
        require_start_command(deployment)
    }

    fn build(&self, context: &BuildContext) -> Result<Arc<dyn GpuProvider>, String> {
        let mut config = self.clone();
        if config.state_dir.is_none() {
            config.state_dir.clone_from(&context.state_dir);
        }
        let local = crate::Local::new(config).map_err(|e| e.to_string())?;
        Ok(Arc::new(local))
    }
}

impl ProviderTable for SimulatedConfig {
    fn validate(&self) -> Vec<FieldError> {
        match SimulatedConfig::validate(self) {
            Ok(()) => Vec::new(),
            Err(e) => vec![FieldError {
                field: e.field.to_owned(),
                message: e.problem,
            }],
        }
    }

    fn validate_deployment(&self, _: &DeployConfig) -> Vec<FieldError> {
        Vec::new()
    }

    fn build(&self, _: &BuildContext) -> Result<Arc<dyn GpuProvider>, String> {
        let simulated = crate::Simulated::new(self.clone()).map_err(|e| e.to_string())?;
        Ok(Arc::new(simulated))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn deployment(provider: &str, start_command: &str) -> DeployConfig {
        let mut d = DeployConfig::new("a", start_command, Duration::from_secs(60), 1);
        d.provider = provider.into();
        d
    }

    #[test]
    fn every_registered_provider_builds_from_empty_tables() {
        let config = ProvidersConfig::default();
        let providers = config.build(&BuildContext::default()).unwrap();
        let names: Vec<&str> = providers.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = config
            .tables()
            .into_iter()
            .filter(|(_, table)| table.enabled())
            .map(|(name, _)| name)
            .collect();
        expected.sort_unstable();
        assert_eq!(names, expected);
        for (name, provider) in &providers {
            assert_eq!(provider.name(), name);
        }
    }

    fn config_names_the_docker_provider() -> bool {
        ProvidersConfig::default().names().contains(&"docker")
    }

    #[test]
    fn an_unknown_provider_is_named_with_the_known_ones() {
        let errors = ProvidersConfig::default().validate_deployment(&deployment("cloud", "x"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "provider");
        assert!(errors[0].message.contains("local, simulated"), "{errors:?}");
        assert_eq!(config_names_the_docker_provider(), cfg!(feature = "docker"),);
    }

    #[test]
    fn local_requires_a_start_command_and_simulated_does_not() {
        let config = ProvidersConfig::default();
        let errors = config.validate_deployment(&deployment("local", " "));
        assert_eq!(errors[0].field, "start_command");
        assert!(
            config
                .validate_deployment(&deployment("simulated", ""))
                .is_empty()
        );
    }

    #[test]
    fn table_problems_are_named_under_providers() {
        let mut config = ProvidersConfig::default();
        config.simulated.failure_probability = 2.0;
        config.local.gpus = vec!["0".into(), "0".into()];
        let fields: Vec<String> = config.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["providers.local", "providers.simulated.failure_probability"]
        );
    }
}
