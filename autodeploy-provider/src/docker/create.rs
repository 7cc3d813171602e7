//! Create: the image (pulled per policy), one container named after the instance and
//! labelled with it, started, and its engine-chosen host port read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use autodeploy_core::provider::{LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_OWNER};
use autodeploy_core::{Endpoint, InstanceId, InstanceSpec, ProvidedInstance, ProviderError};
use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::config::{PullPolicy, parse_size, split_command};
use super::{Container, Inner, LABEL_GPUS, LABEL_HOST, engine_status};

impl Inner {
    /// Creates and starts the container of `spec.instance`, or returns the endpoint of the
    /// one that exists. On error no container is left and no GPU slot held.
    pub(crate) async fn create(
        self: &Arc<Self>,
        spec: InstanceSpec,
    ) -> Result<Endpoint, ProviderError> {
        let created = Instant::now();
        self.sweep_orphans();
        let lock = self.create_lock(spec.instance);
        let _guard = lock.lock().await;
        if let Some(existing) = self.get(spec.instance) {
            return Ok(existing.endpoint.clone());
        }
        let placed = self
            .place(&spec.deployment, spec.instance, spec.gpu.count as usize)
            .await?;
        let host = placed.host;
        let result = self
            .create_on(placed.docker, host, &spec, &placed.gpus, created)
            .await;
        self.record(host, spec.instance, result)
    }

    /// Takes over `found`, a container an earlier run left, for `spec`: on its own host with
    /// the GPU ids it holds, refused when its image or GPU count no longer match the
    /// deployment or it does not run. The container keeps the command and environment it was
    /// created with.
    pub(crate) async fn adopt(
        self: &Arc<Self>,
        found: &ProvidedInstance,
        spec: InstanceSpec,
    ) -> Result<Endpoint, ProviderError> {
        let lock = self.create_lock(spec.instance);
        let _guard = lock.lock().await;
        if let Some(existing) = self.get(spec.instance) {
            return Ok(existing.endpoint.clone());
        }
        let host_name = found.labels.get(LABEL_HOST).map(String::as_str);
        let host = self
            .hosts
            .iter()
            .position(|h| Some(h.name()) == host_name)
            .ok_or_else(|| start_failed(format!("its host {host_name:?} is not configured")))?;
        let gpus: Vec<String> = found
            .labels
            .get(LABEL_GPUS)
            .map(|ids| ids.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        if gpus.len() != spec.gpu.count as usize {
            return Err(start_failed(format!(
                "it holds {} GPU(s) where the deployment asks for {}",
                gpus.len(),
                spec.gpu.count
            )));
        }
        self.hosts[host].hold_slots(spec.instance, &gpus);
        let adopted = async {
            let docker = self.hosts[host].answers().await?;
            let name = container_name(&spec.deployment, spec.instance);
            self.check_adoptable(docker, &name, &spec).await?;
            self.create_on(docker, host, &spec, &gpus, Instant::now())
                .await
        }
        .await;
        self.record(host, spec.instance, adopted)
    }

    /// Keeps a created or adopted container and watches its host's events; after a failure,
    /// returns the GPU slots taken for it.
    fn record(
        self: &Arc<Self>,
        host: usize,
        instance: InstanceId,
        result: Result<Arc<Container>, ProviderError>,
    ) -> Result<Endpoint, ProviderError> {
        match result {
            Ok(container) => {
                let endpoint = container.endpoint.clone();
                self.records.lock().insert(instance, container);
                self.watch_events(host);
                Ok(endpoint)
            }
            Err(err) => {
                self.hosts[host].free(instance);
                Err(err)
            }
        }
    }

    /// Refuses a container that does not run, or whose image is not the deployment's
    /// (changed since it was made).
    async fn check_adoptable(
        &self,
        docker: &Docker,
        name: &str,
        spec: &InstanceSpec,
    ) -> Result<(), ProviderError> {
        let found = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| start_failed(format!("inspect {name}: {e}")))?;
        if found.state.and_then(|s| s.running) != Some(true) {
            return Err(start_failed(format!("{name} does not run")));
        }
        let image = found.config.and_then(|c| c.image);
        if image.is_some() && image == spec.image {
            Ok(())
        } else {
            Err(start_failed(format!(
                "its image {} is not the deployment's {}",
                image.as_deref().unwrap_or("(none)"),
                spec.image.as_deref().unwrap_or("(none)")
            )))
        }
    }

    async fn create_on(
        &self,
        docker: &Docker,
        host: usize,
        spec: &InstanceSpec,
        gpus: &[String],
        created: Instant,
    ) -> Result<Arc<Container>, ProviderError> {
        let image = spec
            .image
            .clone()
            .ok_or_else(|| start_failed("the deployment names no image".into()))?;
        self.ensure_image(docker, &image).await?;
        let name = container_name(&spec.deployment, spec.instance);
        let mut labels = self.labels(host, spec);
        if !gpus.is_empty() {
            labels.insert(LABEL_GPUS.into(), gpus.join(","));
        }
        let body = self.container_body(host, spec, &image, gpus, labels.clone())?;
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // The name is taken: a create retried after the gateway lost its answer. Ours
            // (same instance, owner and host) is adopted; anything else is refused.
            Err(err) if engine_status(&err) == Some(409) => {
                self.check_ours(docker, &name, host, spec.instance).await?;
            }
            Err(err) => return Err(start_failed(format!("create {name}: {err}"))),
        }
        let started = async {
            docker
                .start_container(&name, None)
                .await
                .or_else(|err| match engine_status(&err) {
                    Some(304) => Ok(()), // already running (an adopted retry)
                    _ => Err(start_failed(format!("start {name}: {err}"))),
                })?;
            self.published_port(docker, &name, spec.port).await
        }
        .await;
        let port = match started {
            Ok(port) => port,
            Err(err) => {
                let last_log = self.last_log(docker, &name).await;
                self.remove(docker, &name).await;
                return Err(with_log(err, last_log));
            }
        };
        Ok(Arc::new(Container::new(
            spec,
            host,
            name,
            Endpoint::new(self.hosts[host].advertise.clone(), port),
            labels,
            created,
        )))
    }

    /// Makes sure the engine has `image`, pulling it when the policy says so. A missing image
    /// that cannot be pulled fails at once: `image not found: NAME`.
    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<(), ProviderError> {
        let present = match docker.inspect_image(image).await {
            Ok(_) => true,
            Err(err) if engine_status(&err) == Some(404) => false,
            Err(err) => return Err(start_failed(format!("inspect image {image}: {err}"))),
        };
        let pull = match self.config.pull {
            PullPolicy::Never => false,
            PullPolicy::IfMissing => !present,
            PullPolicy::Always => true,
        };
        if !pull {
            return if present {
                Ok(())
            } else {
                Err(start_failed(format!(
                    "image not found: {image} (pull = \"never\")"
                )))
            };
        }
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(err) = step {
                if present {
                    tracing::warn!(image, %err, "pull failed; using the image the engine has");
                    return Ok(());
                }
                return Err(start_failed(format!(
                    "image not found: {image} (pull failed: {err})"
                )));
            }
        }
        Ok(())
    }

    fn labels(&self, host: usize, spec: &InstanceSpec) -> BTreeMap<String, String> {
        let mut labels = spec.labels.clone();
        labels.extend(self.config.labels.clone());
        labels.insert(LABEL_DEPLOYMENT.into(), spec.deployment.clone());
        labels.insert(LABEL_INSTANCE.into(), spec.instance.to_string());
        labels.insert(LABEL_OWNER.into(), self.config.owner.clone());
        labels.insert(LABEL_HOST.into(), self.hosts[host].name().to_owned());
        labels
    }

    fn container_body(
        &self,
        host: usize,
        spec: &InstanceSpec,
        image: &str,
        gpus: &[String],
        labels: BTreeMap<String, String>,
    ) -> Result<ContainerCreateBody, ProviderError> {
        let port_key = format!("{}/tcp", spec.port);
        let command = spec.command.replace("{port}", &spec.port.to_string());
        let cmd =
            split_command(&command).map_err(|e| start_failed(format!("start_command: {e}")))?;
        let mut env: BTreeMap<String, String> = spec.env.clone();
        env.insert("PORT".into(), spec.port.to_string());
        env.insert("AUTODEPLOY_INSTANCE".into(), spec.instance.to_string());
        env.insert("AUTODEPLOY_DEPLOYMENT".into(), spec.deployment.clone());
        let mut host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(self.hosts[host].config.bind_address()),
                    host_port: Some(String::new()),
                }]),
            )])),
            network_mode: self.config.network.clone(),
            ..HostConfig::default()
        };
        if !gpus.is_empty() {
            env.insert("NVIDIA_VISIBLE_DEVICES".into(), gpus.join(","));
        }
        if !gpus.is_empty() && self.hosts[host].config.device_requests {
            host_config.device_requests = Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(gpus.to_vec()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..DeviceRequest::default()
            }]);
        }
        if let Some(options) = &spec.container {
            let size = |s: &Option<String>| {
                s.as_deref()
                    .map(parse_size)
                    .transpose()
                    .map_err(start_failed)
            };
            host_config.shm_size = size(&options.shm_size)?;
            host_config.memory = size(&options.memory)?;
            host_config.nano_cpus = options.cpus.map(|c| (c * 1e9) as i64);
            if !options.volumes.is_empty() {
                host_config.binds = Some(options.volumes.clone());
            }
            if !options.extra_hosts.is_empty() {
                host_config.extra_hosts = Some(options.extra_hosts.clone());
            }
        }
        Ok(ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: (!cmd.is_empty()).then_some(cmd),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels.into_iter().collect()),
            exposed_ports: Some(vec![port_key]),
            working_dir: spec.workdir.as_ref().map(|w| w.display().to_string()),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        })
    }

    /// Refuses a container that holds our name but is not this instance's.
    async fn check_ours(
        &self,
        docker: &Docker,
        name: &str,
        host: usize,
        instance: InstanceId,
    ) -> Result<(), ProviderError> {
        let found = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| start_failed(format!("inspect {name}: {e}")))?;
        let labels = found.config.and_then(|c| c.labels).unwrap_or_default();
        let ours = labels.get(LABEL_INSTANCE) == Some(&instance.to_string())
            && labels.get(LABEL_OWNER) == Some(&self.config.owner)
            && labels.get(LABEL_HOST).map(String::as_str) == Some(self.hosts[host].name());
        if ours {
            Ok(())
        } else {
            Err(start_failed(format!(
                "a container named {name} exists and is not this instance's"
            )))
        }
    }

    /// The host port the engine chose for `port`, read from the running container's
    /// network settings (never from its host config, which says only what was asked).
    async fn published_port(
        &self,
        docker: &Docker,
        name: &str,
        port: u16,
    ) -> Result<u16, ProviderError> {
        let inspect = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| start_failed(format!("inspect {name}: {e}")))?;
        let ports = inspect.network_settings.and_then(|n| n.ports);
        let binding = ports
            .as_ref()
            .and_then(|p| p.get(&format!("{port}/tcp")))
            .and_then(|b| b.as_ref())
            .and_then(|b| b.iter().find_map(|b| b.host_port.as_deref()?.parse().ok()));
        match binding {
            Some(port) => Ok(port),
            None => {
                let state = inspect.state.as_ref();
                let exit = state.and_then(|s| s.exit_code).unwrap_or_default();
                let running = state.and_then(|s| s.running).unwrap_or(false);
                Err(start_failed(if running {
                    format!("the engine published no host port for {port}/tcp")
                } else {
                    format!("exited with status {exit} before it was ready")
                }))
            }
        }
    }
}

/// The container of `instance`: `autodeploy-{deployment}-{instance}`.
pub(crate) fn container_name(deployment: &str, instance: InstanceId) -> String {
    format!("autodeploy-{deployment}-{instance}")
}

pub(crate) fn start_failed(reason: String) -> ProviderError {
    ProviderError::StartFailed {
        reason,
        last_log: Vec::new(),
    }
}

fn with_log(err: ProviderError, lines: Vec<String>) -> ProviderError {
    match err {
        ProviderError::StartFailed { reason, last_log } if last_log.is_empty() => {
            ProviderError::StartFailed {
                reason,
                last_log: lines,
            }
        }
        other => other,
    }
}

/// Whether an engine error is "not found" (the thing is already gone).
pub(crate) fn is_gone(err: &EngineError) -> bool {
    engine_status(err) == Some(404)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use autodeploy_core::{ContainerOptions, DeployConfig};

    use super::super::{Docker, DockerConfig, DockerHost};
    use super::*;

    fn body(device_requests: bool) -> ContainerCreateBody {
        let docker = Docker::new(DockerConfig {
            hosts: vec![DockerHost {
                name: "gpu-box".into(),
                gpus: vec!["0".into(), "1".into()],
                device_requests,
                ..DockerHost::local()
            }],
            ..DockerConfig::default()
        })
        .unwrap();
        let mut config = DeployConfig::new(
            "tts",
            "--model '/models/a b' --port {port}",
            Duration::from_secs(60),
            1,
        );
        config.image = Some("vllm:test".into());
        config.port = 9000;
        config.gpu.count = 2;
        config.docker = Some(ContainerOptions {
            shm_size: Some("1g".into()),
            volumes: vec!["/models:/models:ro".into()],
            cpus: Some(1.5),
            ..ContainerOptions::default()
        });
        let spec = InstanceSpec::from_config(&config, InstanceId::generate());
        let labels = docker.inner.labels(0, &spec);
        docker
            .inner
            .container_body(0, &spec, "vllm:test", &["0".into(), "1".into()], labels)
            .unwrap()
    }

    #[test]
    fn the_create_request_carries_the_granted_gpus_port_and_container_fields() {
        let body = body(true);
        let host = body.host_config.clone().unwrap();
        assert_eq!(
            host.device_requests,
            Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(vec!["0".into(), "1".into()]),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..DeviceRequest::default()
            }])
        );
        let env = body.env.clone().unwrap();
        assert!(
            env.contains(&"NVIDIA_VISIBLE_DEVICES=0,1".to_owned()),
            "{env:?}"
        );
        assert!(env.contains(&"PORT=9000".to_owned()), "{env:?}");
        assert_eq!(
            host.port_bindings.unwrap()["9000/tcp"],
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
            "the engine chooses the host port"
        );
        assert_eq!(body.exposed_ports, Some(vec!["9000/tcp".into()]));
        assert_eq!(
            body.cmd,
            Some(vec![
                "--model".into(),
                "/models/a b".into(),
                "--port".into(),
                "9000".into()
            ])
        );
        assert_eq!(host.shm_size, Some(1 << 30));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.binds, Some(vec!["/models:/models:ro".into()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels["autodeploy.deployment"], "tts");
        assert_eq!(labels["autodeploy.host"], "gpu-box");
        assert_eq!(labels["autodeploy.owner"], "autodeploy");
        assert!(labels.contains_key("autodeploy.instance"));
    }

    #[test]
    fn without_device_requests_only_the_variable_names_the_gpus() {
        let body = body(false);
        assert_eq!(body.host_config.unwrap().device_requests, None);
        assert!(
            body.env
                .unwrap()
                .contains(&"NVIDIA_VISIBLE_DEVICES=0,1".to_owned())
        );
    }
}
