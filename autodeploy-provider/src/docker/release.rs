//! Release: stop with grace (SIGTERM, then the engine's kill after `stop_grace`), then
//! remove with its anonymous volumes. A refused release is retried with backoff until the
//! engine confirms the container is gone; "no such container" counts as gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::provider::{LABEL_INSTANCE, LABEL_OWNER};
use autodeploy_core::{InstanceId, ProviderError};
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use tokio::time::sleep;

use super::create::is_gone;
use super::{Inner, LABEL_HOST};

/// Attempts before a release reports failure (the caller may call again).
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(200);

impl Inner {
    /// Releases instance `id`: its own container, or one an earlier run left (found by its
    /// labels on every host). Idempotent.
    pub(crate) async fn release(self: &Arc<Self>, id: InstanceId) -> Result<(), ProviderError> {
        let lock = self.create_lock(id);
        let _guard = lock.lock().await;
        let targets: Vec<(usize, String)> = match self.get(id) {
            Some(container) => {
                container.mark_released();
                vec![(container.host, container.name.clone())]
            }
            None => self.find_leftovers(id).await,
        };
        for (host, name) in targets {
            let docker = self.hosts[host].client().await?;
            self.stop_and_remove(docker, &name).await?;
            self.hosts[host].free(id);
        }
        self.records.lock().remove(&id);
        self.forget_lock(id);
        Ok(())
    }

    async fn stop_and_remove(&self, docker: &Docker, name: &str) -> Result<(), ProviderError> {
        let grace = i32::try_from(self.config.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let mut retry = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let stop = StopContainerOptionsBuilder::new().t(grace).build();
            match docker.stop_container(name, Some(stop)).await {
                Err(err) if is_gone(&err) => return Ok(()),
                // 304: already stopped. Other errors: removal with force still ends it.
                _ => {}
            }
            let remove = RemoveContainerOptionsBuilder::new()
                .v(true)
                .force(true)
                .build();
            match docker.remove_container(name, Some(remove)).await {
                Ok(()) => return Ok(()),
                Err(err) if is_gone(&err) => return Ok(()),
                Err(err) => {
                    tracing::warn!(container = name, attempt, %err, "docker refused the release; retrying");
                    last = err.to_string();
                }
            }
            sleep(retry).await;
            retry *= 2;
        }
        Err(ProviderError::Backend(format!(
            "release of {name} refused {ATTEMPTS} times: {last}"
        )))
    }

    /// Removes a container without the grace period (a failed start).
    pub(crate) async fn remove(&self, docker: &Docker, name: &str) {
        let remove = RemoveContainerOptionsBuilder::new()
            .v(true)
            .force(true)
            .build();
        if let Err(err) = docker.remove_container(name, Some(remove)).await
            && !is_gone(&err)
        {
            tracing::error!(container = name, %err, "cannot remove a failed container");
        }
    }

    /// Containers of instance `id` on any answering host, by label.
    async fn find_leftovers(&self, id: InstanceId) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let Ok(docker) = host.answers().await else {
                continue;
            };
            let filters = HashMap::from([(
                "label",
                vec![
                    format!("{LABEL_OWNER}={}", self.config.owner),
                    format!("{LABEL_HOST}={}", host.name()),
                    format!("{LABEL_INSTANCE}={id}"),
                ],
            )]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            if let Ok(listed) = docker.list_containers(Some(options)).await {
                found.extend(
                    listed
                        .into_iter()
                        .filter_map(|c| c.id)
                        .map(|container| (i, container)),
                );
            }
        }
        found
    }
}
