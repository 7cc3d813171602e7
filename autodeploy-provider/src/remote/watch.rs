//! Deaths: a running instance is polled every `poll_max`; when the cloud says it ended
//! (exited, terminated, unknown) without a release, `wait_exit` resolves with the cloud's
//! word for it.

use autodeploy_core::{ExitReport, InstanceId};
use tokio::time::sleep;

use super::{Cloud, CloudState, Remote};

impl<C: Cloud> Remote<C> {
    pub(super) async fn watch(&self, id: InstanceId) -> ExitReport {
        let Some(tracked) = self.tracked(id) else {
            return ExitReport {
                reason: format!("unknown instance {id}"),
                last_log: Vec::new(),
            };
        };
        loop {
            sleep(self.settings.poll_max).await;
            if tracked.is_released() {
                return std::future::pending().await;
            }
            let Some(current) = tracked.current() else {
                continue;
            };
            let reason = match self.cloud.get(&self.api, &current.cloud_id).await {
                Ok(Some(instance)) => {
                    let gone = match &instance.state {
                        CloudState::Gone(reason) => Some(reason.clone()),
                        _ => None,
                    };
                    tracked.update(instance);
                    gone
                }
                Ok(None) => Some("no longer known to the cloud".to_owned()),
                Err(err) => {
                    tracing::warn!(cloud = self.cloud.name(), instance = %id, %err, "checking a running instance failed");
                    None
                }
            };
            if let Some(reason) = reason {
                if tracked.is_released() {
                    return std::future::pending().await;
                }
                tracing::warn!(cloud = self.cloud.name(), instance = %id, %reason, "the cloud ended the instance");
                return ExitReport {
                    reason: format!(
                        "{}: instance {} {reason}",
                        self.cloud.name(),
                        current.cloud_id
                    ),
                    last_log: tracked.notes(),
                };
            }
        }
    }
}
