//! Deaths: one task per host follows the engine's event stream (`die`, `oom`, `destroy` of
//! containers carrying our owner and host labels) and reports a container that stops on its
//! own to whoever waits in `wait_exit`. The stream reconnects with backoff; each time it is
//! (re)connected the host's containers are listed again, to catch deaths it missed.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use autodeploy_core::InstanceId;
use autodeploy_core::provider::{LABEL_INSTANCE, LABEL_OWNER};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use tokio::time::sleep;

use super::{Inner, LABEL_HOST};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

impl Inner {
    /// Starts the event watcher of host `host` unless it runs.
    pub(crate) fn watch_events(self: &Arc<Self>, host: usize) {
        let mut watching = self.watching.lock();
        if watching[host] {
            return;
        }
        watching[host] = true;
        let inner = Arc::downgrade(self);
        tokio::spawn(watch(inner, host));
    }

    /// The filters selecting this provider's containers on `host`.
    fn our_labels(&self, host: usize) -> Vec<String> {
        vec![
            format!("{LABEL_OWNER}={}", self.config.owner),
            format!("{LABEL_HOST}={}", self.hosts[host].name()),
        ]
    }

    /// Reports every container on `host` this provider started that is no longer running.
    async fn catch_missed(&self, host: usize) -> Result<(), bollard::errors::Error> {
        let docker = match self.hosts[host].client().await {
            Ok(docker) => docker,
            Err(_) => return Ok(()),
        };
        let filters = HashMap::from([("label", self.our_labels(host))]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let listed = docker.list_containers(Some(options)).await?;
        let running: Vec<String> = listed
            .iter()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.to_string() == "running"))
            .filter_map(|c| c.labels.as_ref()?.get(LABEL_INSTANCE).cloned())
            .collect();
        let held: Vec<_> = self
            .records
            .lock()
            .values()
            .filter(|c| c.host == host && !running.contains(&c.id.to_string()))
            .cloned()
            .collect();
        for container in held {
            self.died(
                container.id,
                "stopped while the event stream was down".into(),
            )
            .await;
        }
        Ok(())
    }

    /// Reports that instance `id` stopped on its own, with its last log lines.
    async fn died(&self, id: InstanceId, reason: String) {
        let Some(container) = self.get(id) else {
            return;
        };
        if container.is_released() || container.exit.borrow().is_some() {
            return;
        }
        let last_log = match self.hosts[container.host].client().await {
            Ok(docker) => self.last_log(docker, &container.name).await,
            Err(_) => Vec::new(),
        };
        tracing::warn!(instance = %id, deployment = container.deployment, reason, "container stopped on its own");
        container.report_exit(reason, last_log);
    }
}

/// Follows host `host`'s events until the provider is dropped.
async fn watch(inner: Weak<Inner>, host: usize) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let docker = strong.hosts[host].client().await.ok().cloned();
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            (
                "event",
                vec!["die".to_owned(), "oom".to_owned(), "destroy".to_owned()],
            ),
            ("label", strong.our_labels(host)),
        ]);
        drop(strong);
        if let Some(docker) = docker {
            let options = EventsOptionsBuilder::new().filters(&filters).build();
            let mut stream = docker.events(Some(options));
            // The subscription is open once the first poll sends the request; list after
            // that so a death between the two is seen by one or the other.
            let mut listed = false;
            loop {
                let next = if listed {
                    stream.next().await
                } else {
                    tokio::select! {
                        biased;
                        next = stream.next() => next,
                        _ = sleep(Duration::from_millis(50)) => {
                            listed = true;
                            if let Some(inner) = inner.upgrade()
                                && inner.catch_missed(host).await.is_ok()
                            {
                                retry = FIRST_RETRY;
                            }
                            continue;
                        }
                    }
                };
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                match next {
                    Some(Ok(event)) => {
                        let actor = event.actor.unwrap_or_default();
                        let attributes = actor.attributes.unwrap_or_default();
                        let Some(id) = attributes
                            .get(LABEL_INSTANCE)
                            .and_then(|i| i.parse::<InstanceId>().ok())
                        else {
                            continue;
                        };
                        let action = event.action.unwrap_or_default();
                        let reason = match action.as_str() {
                            "die" => format!(
                                "exited with status {}",
                                attributes.get("exitCode").map_or("?", String::as_str)
                            ),
                            "oom" => "killed: out of memory".to_owned(),
                            _ => "the container was removed".to_owned(),
                        };
                        inner.died(id, reason).await;
                    }
                    Some(Err(err)) => {
                        tracing::warn!(host = inner.hosts[host].name(), %err, "docker event stream failed; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
        }
        sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}
