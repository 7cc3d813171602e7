//! Reconcile: every live instance of the account carrying autodeploy's labels is listed
//! and tracked (adopted), so a restarted gateway can release what an earlier run left and
//! nothing is billed twice or forgotten.

use std::sync::Arc;

use autodeploy_core::{InstanceId, ProvidedInstance, ProviderError};

use super::labels;
use super::{Cloud, CloudInstance, CloudState, Remote, Tracked};

impl<C: Cloud> Remote<C> {
    /// Every live instance of every deployment that autodeploy created in this account,
    /// adopted so that `release` and `wait_exit` work on it.
    pub async fn list_all(&self) -> Result<Vec<ProvidedInstance>, ProviderError> {
        let all = self
            .cloud
            .list(&self.api)
            .await
            .map_err(|e| ProviderError::Backend(e.to_string()))?;
        let mut out = Vec::new();
        for instance in all {
            if matches!(instance.state, CloudState::Gone(_)) {
                continue;
            }
            let Some((id, deployment)) = labels::identity(&instance.labels) else {
                continue;
            };
            let tracked = self.adopt(id, deployment, instance);
            let Some(current) = tracked.current() else {
                continue;
            };
            out.push(ProvidedInstance {
                id,
                endpoint: current.endpoint.clone(),
                labels: current.labels.clone(),
            });
        }
        out.sort_by_key(|p| p.id);
        Ok(out)
    }

    /// The tracked record of `id`, created from the cloud's description when there is none.
    pub(super) fn adopt(
        &self,
        id: InstanceId,
        deployment: String,
        instance: CloudInstance,
    ) -> Arc<Tracked> {
        let mut instances = self.instances.lock();
        if let Some(tracked) = instances.get(&id) {
            if tracked.current().is_none() {
                tracked.update(instance);
            }
            return tracked.clone();
        }
        tracing::info!(cloud = self.cloud.name(), instance = %id, cloud_id = %instance.cloud_id, deployment, "adopting a cloud instance an earlier run created");
        let tracked = Arc::new(Tracked::adopted(instance));
        instances.insert(id, tracked.clone());
        tracked
    }
}
