//! Placement: which host gets a new instance. The host with enough free GPU slots and the
//! fewest instances of the deployment (then the fewest instances overall); a host whose
//! engine does not answer is skipped, logged and counted, and tried again a few seconds
//! later.

use std::sync::atomic::Ordering;

use autodeploy_core::{InstanceId, ProviderError};
use bollard::Docker;

use super::Inner;

/// A host chosen for an instance, with the GPU ids taken for it there.
#[derive(Debug)]
pub(crate) struct Placed<'a> {
    /// The host's index in [`Inner::hosts`].
    pub(crate) host: usize,
    /// Its engine, which answered just now.
    pub(crate) docker: &'a Docker,
    /// The GPU ids taken (returned with [`super::host::Host::free`]).
    pub(crate) gpus: Vec<String>,
}

impl Inner {
    /// Chooses a host for `instance` of `deployment` needing `gpus` GPUs and takes its slots.
    /// `NoCapacity` when no host has enough free slots; `Backend` when every host that has
    /// them is down.
    pub(crate) async fn place(
        &self,
        deployment: &str,
        instance: InstanceId,
        gpus: usize,
    ) -> Result<Placed<'_>, ProviderError> {
        let mut candidates: Vec<(usize, usize, usize)> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, host)| host.free_slots() >= gpus)
            .map(|(i, _)| {
                let (mine, all) = self.instances_on(i, deployment);
                (mine, all, i)
            })
            .collect();
        if candidates.is_empty() {
            return Err(ProviderError::NoCapacity(format!(
                "no docker host has {gpus} free GPU slot(s)"
            )));
        }
        candidates.sort_unstable();
        let mut down = Vec::new();
        for (_, _, i) in candidates {
            let host = &self.hosts[i];
            let docker = match host.answers().await {
                Ok(docker) => docker,
                Err(err) => {
                    tracing::warn!(host = host.name(), %err, skipped = host.skipped.load(Ordering::Relaxed), "docker host skipped: its engine does not answer");
                    down.push(err.to_string());
                    continue;
                }
            };
            // Slots may have gone while the engine was pinged: take them now or move on.
            if let Some(taken) = host.take_slots(instance, gpus) {
                return Ok(Placed {
                    host: i,
                    docker,
                    gpus: taken,
                });
            }
        }
        if down.is_empty() {
            Err(ProviderError::NoCapacity(format!(
                "no docker host has {gpus} free GPU slot(s)"
            )))
        } else {
            Err(ProviderError::Backend(format!(
                "no docker host answers: {}",
                down.join("; ")
            )))
        }
    }

    /// Instances of `deployment` on host `host`, and instances there of any deployment.
    fn instances_on(&self, host: usize, deployment: &str) -> (usize, usize) {
        let records = self.records.lock();
        let on_host = records.values().filter(|c| c.host == host);
        let all = on_host.clone().count();
        let mine = on_host.filter(|c| c.deployment == deployment).count();
        (mine, all)
    }
}
