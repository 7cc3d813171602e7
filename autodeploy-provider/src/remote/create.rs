//! Create: idempotent under the instance's key, then poll until the cloud says it runs
//! and its address is known.

use std::sync::Arc;

use autodeploy_core::{Endpoint, InstanceSpec, ProviderError};
use tokio::time::{Instant, sleep};

use super::backoff::{PollSchedule, RetryBackoff};
use super::{ApiError, Cloud, CloudInstance, CloudState, Remote, Tracked};

impl<C: Cloud> Remote<C> {
    pub(super) async fn create_instance(
        &self,
        spec: InstanceSpec,
    ) -> Result<Endpoint, ProviderError> {
        let key = self.cloud.key(&spec);
        let tracked = Arc::new(Tracked::new(&spec, key.clone()));
        self.instances.lock().insert(spec.instance, tracked.clone());
        let created = self
            .create_once(&spec, &key, &tracked)
            .await
            .map_err(|e| self.start_error(e, &tracked))?;
        if let Some(price) = created.price_per_hour {
            tracing::info!(cloud = self.cloud.name(), instance = %spec.instance, price, "the cloud reports this price per hour");
        }
        tracing::info!(cloud = self.cloud.name(), instance = %spec.instance, cloud_id = %created.cloud_id, "cloud instance created");
        tracked.update(created.clone());
        self.await_address(&tracked, created).await
    }

    /// Creates the instance exactly once: a create that may have reached the cloud (timeout,
    /// 5xx, lost connection) is followed by a look-up of the key before any new attempt.
    async fn create_once(
        &self,
        spec: &InstanceSpec,
        key: &str,
        tracked: &Tracked,
    ) -> Result<CloudInstance, ApiError> {
        let mut backoff = RetryBackoff::new(self.settings.retry_base, self.settings.retry_cap);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if attempt > 1
                && let Some(found) = self.cloud.find(&self.api, key).await?
            {
                tracing::info!(cloud = self.cloud.name(), key, cloud_id = %found.cloud_id, "found the instance an unanswered create made");
                return Ok(found);
            }
            match self.cloud.create(&self.api, spec, key).await {
                Ok(instance) => return Ok(instance),
                Err(ApiError::Transient(msg)) if attempt <= self.settings.retries => {
                    tracing::warn!(cloud = self.cloud.name(), attempt, %msg, "create failed; looking for its instance before retrying");
                    tracked.note(msg);
                    sleep(backoff.next_delay()).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Polls until the instance runs with a known address; fails when the cloud ends it
    /// first or the start timeout passes.
    async fn await_address(
        &self,
        tracked: &Tracked,
        mut current: CloudInstance,
    ) -> Result<Endpoint, ProviderError> {
        let deadline = tracked.created + tracked.start_timeout;
        let mut poll = PollSchedule::new(self.settings.poll_min, self.settings.poll_max);
        loop {
            match (&current.state, &current.endpoint) {
                (CloudState::Running, Some(endpoint)) => return Ok(endpoint.clone()),
                (CloudState::Gone(reason), _) => {
                    return Err(ProviderError::StartFailed {
                        reason: format!(
                            "{}: instance {} ended before it was ready: {reason}",
                            self.cloud.name(),
                            current.cloud_id
                        ),
                        last_log: tracked.notes(),
                    });
                }
                _ => {}
            }
            let delay = poll.next_delay();
            if Instant::now() + delay > deadline {
                return Err(ProviderError::StartTimedOut {
                    after: tracked.start_timeout,
                    tried: format!(
                        "waiting for {} to report instance {} running with an address (last: {:?}, address {})",
                        self.cloud.name(),
                        current.cloud_id,
                        current.state,
                        if current.endpoint.is_some() {
                            "known"
                        } else {
                            "unknown"
                        },
                    ),
                    last_log: tracked.notes(),
                });
            }
            sleep(delay).await;
            match self.cloud.get(&self.api, &current.cloud_id).await {
                Ok(Some(instance)) => {
                    tracked.update(instance.clone());
                    current = instance;
                }
                Ok(None) => {
                    current.state = CloudState::Gone("no longer known to the cloud".into());
                }
                Err(err @ ApiError::KeyRefused { .. }) => {
                    return Err(self.start_error(err, tracked));
                }
                Err(err) => {
                    tracing::warn!(cloud = self.cloud.name(), %err, "polling a new instance failed; polling on");
                    tracked.note(err.to_string());
                }
            }
        }
    }
}
