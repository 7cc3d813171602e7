//! Release until confirmed: delete, then poll until the cloud says the instance is gone.
//! A delete the cloud does not act on within `release_confirm_timeout` is sent again; an
//! error is returned (never swallowed) so the caller tries again: a release that silently
//! failed keeps billing.

use std::sync::atomic::Ordering;

use autodeploy_core::{InstanceId, ProviderError};
use tokio::time::{Instant, sleep};

use super::backoff::PollSchedule;
use super::labels;
use super::{Cloud, CloudInstance, CloudState, Remote, Tracked};

/// Deletes sent per release call before the caller is told it is not confirmed.
const DELETE_ROUNDS: u32 = 3;

impl<C: Cloud> Remote<C> {
    pub(super) async fn release_instance(&self, id: InstanceId) -> Result<(), ProviderError> {
        let tracked = match self.tracked(id) {
            Some(tracked) => tracked,
            None => match self.adopt_by_id(id).await? {
                Some(tracked) => tracked,
                // Nothing of ours carries this id: released already, or never created.
                None => return Ok(()),
            },
        };
        tracked.released.store(true, Ordering::SeqCst);
        let instance = match tracked.current() {
            Some(instance) => Some(instance),
            // The create was never answered: the key tells whether it made something.
            None => self
                .cloud
                .find(&self.api, &tracked.key)
                .await
                .map_err(|e| ProviderError::Backend(e.to_string()))?,
        };
        if let Some(instance) = instance {
            self.delete_until_gone(&tracked, instance).await?;
        }
        self.instances.lock().remove(&id);
        tracing::info!(cloud = self.cloud.name(), instance = %id, "cloud instance released");
        Ok(())
    }

    async fn delete_until_gone(
        &self,
        tracked: &Tracked,
        instance: CloudInstance,
    ) -> Result<(), ProviderError> {
        for round in 1..=DELETE_ROUNDS {
            self.cloud
                .delete(&self.api, &instance)
                .await
                .map_err(|e| ProviderError::Backend(e.to_string()))?;
            if self.confirm_gone(tracked, &instance.cloud_id).await? {
                return Ok(());
            }
            tracing::warn!(cloud = self.cloud.name(), cloud_id = %instance.cloud_id, round, "the cloud has not confirmed the release; deleting again");
        }
        Err(ProviderError::Backend(format!(
            "{}: instance {} still not gone after {DELETE_ROUNDS} deletes",
            self.cloud.name(),
            instance.cloud_id
        )))
    }

    /// Polls until the cloud reports the instance gone (true) or the confirm timeout passes.
    async fn confirm_gone(&self, tracked: &Tracked, cloud_id: &str) -> Result<bool, ProviderError> {
        let deadline = Instant::now() + self.settings.release_confirm_timeout;
        let mut poll = PollSchedule::new(self.settings.poll_min, self.settings.poll_max);
        loop {
            match self.cloud.get(&self.api, cloud_id).await {
                Ok(None) => return Ok(true),
                Ok(Some(instance)) => {
                    let gone = matches!(instance.state, CloudState::Gone(_));
                    tracked.update(instance);
                    if gone {
                        return Ok(true);
                    }
                }
                Err(err) => return Err(ProviderError::Backend(err.to_string())),
            }
            let delay = poll.next_delay();
            if Instant::now() + delay > deadline {
                return Ok(false);
            }
            sleep(delay).await;
        }
    }

    /// Finds a live instance of ours with instance id `id` that this provider does not
    /// track (left by an earlier run) and tracks it.
    async fn adopt_by_id(
        &self,
        id: InstanceId,
    ) -> Result<Option<std::sync::Arc<Tracked>>, ProviderError> {
        let all = self
            .cloud
            .list(&self.api)
            .await
            .map_err(|e| ProviderError::Backend(e.to_string()))?;
        for instance in all {
            if matches!(instance.state, CloudState::Gone(_)) {
                continue;
            }
            if let Some((found, deployment)) = labels::identity(&instance.labels)
                && found == id
            {
                return Ok(Some(self.adopt(id, deployment, instance)));
            }
        }
        Ok(None)
    }
}
