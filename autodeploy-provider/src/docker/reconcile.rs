//! Reconcile: what this provider holds, found by labels on every host (owner, host, and
//! the deployment when asked), so a restarted gateway finds the containers an earlier run
//! left. A host that does not answer is skipped with a warning; the instances this run
//! started are reported whatever the engines say.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use autodeploy_core::provider::{LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_OWNER};
use autodeploy_core::{Endpoint, InstanceId, ProvidedInstance, ProviderError};
use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::{Inner, LABEL_GPUS, LABEL_HOST};

impl Inner {
    /// The instances held, of `deployment` or of every deployment.
    pub(crate) async fn list(
        self: &Arc<Self>,
        deployment: Option<&str>,
    ) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.sweep_orphans();
        let mut found: BTreeMap<InstanceId, ProvidedInstance> = self
            .records
            .lock()
            .values()
            .filter(|c| !c.is_released() && deployment.is_none_or(|d| c.deployment == d))
            .map(|c| {
                (
                    c.id,
                    ProvidedInstance {
                        id: c.id,
                        endpoint: Some(c.endpoint.clone()),
                        labels: c.labels.clone(),
                    },
                )
            })
            .collect();
        for (i, host) in self.hosts.iter().enumerate() {
            let docker = match host.answers().await {
                Ok(docker) => docker,
                Err(err) => {
                    // Without configured hosts this is the default local engine, which a
                    // gateway that runs no containers may well lack: say so quietly.
                    if self.config.hosts.is_empty() {
                        tracing::info!(host = host.name(), %err, "no docker engine to list");
                    } else {
                        tracing::warn!(host = host.name(), %err, "cannot list a docker host's containers");
                    }
                    continue;
                }
            };
            let mut labels = vec![
                format!("{LABEL_OWNER}={}", self.config.owner),
                format!("{LABEL_HOST}={}", host.name()),
            ];
            if let Some(deployment) = deployment {
                labels.push(format!("{LABEL_DEPLOYMENT}={deployment}"));
            }
            let filters = HashMap::from([("label", labels)]);
            let options = ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build();
            let listed = docker
                .list_containers(Some(options))
                .await
                .map_err(|e| ProviderError::Backend(format!("docker host {}: {e}", host.name())))?;
            for summary in listed {
                if let Some(instance) = provided(summary, &self.hosts[i].advertise) {
                    if let Some(gpus) = instance.labels.get(LABEL_GPUS) {
                        let ids: Vec<String> = gpus.split(',').map(str::to_owned).collect();
                        self.hosts[i].hold_slots(instance.id, &ids);
                    }
                    found.entry(instance.id).or_insert(instance);
                }
            }
        }
        Ok(found.into_values().collect())
    }
}

/// A listed container as an instance, if it carries an instance label.
fn provided(summary: ContainerSummary, advertise: &str) -> Option<ProvidedInstance> {
    let labels: BTreeMap<String, String> = summary.labels?.into_iter().collect();
    let id = labels.get(LABEL_INSTANCE)?.parse().ok()?;
    let endpoint = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .find_map(|p| p.public_port)
        .map(|port| Endpoint::new(advertise, port));
    Some(ProvidedInstance {
        id,
        endpoint,
        labels,
    })
}

/// How often each host is swept for orphans.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Inner {
    /// Starts the orphan sweeper unless it runs: every few seconds, each host's containers
    /// with our owner label that this provider neither holds nor is creating or releasing are
    /// removed. They are what a crashed gateway's create left in flight at the engine: the
    /// container appeared after the restarted gateway had listed the host.
    pub(crate) fn sweep_orphans(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                for host in 0..inner.hosts.len() {
                    inner.sweep(host).await;
                }
            }
        });
    }

    async fn sweep(&self, host: usize) {
        let Ok(docker) = self.hosts[host].client().await else {
            return;
        };
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_OWNER}={}", self.config.owner),
                format!("{LABEL_HOST}={}", self.hosts[host].name()),
            ],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(listed) = docker.list_containers(Some(options)).await else {
            return;
        };
        for summary in listed {
            let Some(name) = summary.id.clone() else {
                continue;
            };
            let Some(id) = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_INSTANCE))
                .and_then(|i| i.parse::<InstanceId>().ok())
            else {
                continue;
            };
            let busy = self.records.lock().contains_key(&id) || self.locks.lock().contains_key(&id);
            if busy {
                continue;
            }
            tracing::warn!(host = self.hosts[host].name(), instance = %id, "removing an orphaned container (left by a crashed gateway)");
            self.remove(docker, &name).await;
            self.hosts[host].free(id);
        }
    }
}
