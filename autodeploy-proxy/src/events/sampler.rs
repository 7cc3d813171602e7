//! The sampler: once a second, and at once after a lifecycle event, it reads each
//! deployment's status, instance count and request counter, records them in the history and
//! publishes the `status` and `requests` events they imply.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::EventHub;
use crate::gateway::WeakGateway;

/// How often request rates are sampled.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// Runs until the gateway is dropped.
pub(crate) async fn run(gateway: WeakGateway, hub: Arc<EventHub>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let rate = tokio::select! {
            _ = tick.tick() => true,
            () = hub.changed.notified() => false,
        };
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let snapshot = gateway.snapshot();
        for deployment in &snapshot {
            let events = hub.histories().observe(
                &deployment.id,
                deployment.status,
                deployment.instances,
                deployment.requests_total,
                rate,
            );
            for kind in events {
                hub.publish(&deployment.id, kind);
            }
        }
        let ids: Vec<String> = snapshot.into_iter().map(|d| d.id).collect();
        hub.histories().retain(&ids);
    }
}
