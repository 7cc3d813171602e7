//! One Docker engine: its connection (made on first use, with the API version negotiated),
//! its GPU slots, and whether it answered lately.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use autodeploy_core::{InstanceId, ProviderError};
use bollard::{API_DEFAULT_VERSION, Docker};
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tokio::time::{Instant, timeout};

use super::config::DockerHost;

/// The longest a connection, version negotiation or ping may take: an engine slower than
/// this is treated as down, so one dead host never holds a start.
pub(crate) const ENGINE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a host that did not answer is skipped before it is tried again.
const DOWN_FOR: Duration = Duration::from_secs(5);
/// bollard's own timeout per request, in seconds: long enough for a slow stop or pull.
const REQUEST_TIMEOUT_SECS: u64 = 600;

/// A configured engine and what the provider tracks about it.
#[derive(Debug)]
pub(crate) struct Host {
    /// The configured entry.
    pub(crate) config: DockerHost,
    /// Where published ports are reached.
    pub(crate) advertise: String,
    client: OnceCell<Docker>,
    /// Each GPU id and the instance holding it.
    slots: Mutex<Vec<(String, Option<InstanceId>)>>,
    down_until: Mutex<Option<Instant>>,
    /// How many times placement skipped this host because its engine did not answer.
    pub(crate) skipped: AtomicU64,
}

impl Host {
    pub(crate) fn new(config: DockerHost) -> Self {
        Self {
            advertise: config.advertise_address(),
            slots: Mutex::new(config.gpus.iter().map(|g| (g.clone(), None)).collect()),
            client: OnceCell::new(),
            down_until: Mutex::new(None),
            skipped: AtomicU64::new(0),
            config,
        }
    }

    /// The host's name (its `autodeploy.host` label).
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The engine client, connected and version-negotiated on first use. A failure is not
    /// kept: the next call tries again.
    pub(crate) async fn client(&self) -> Result<&Docker, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let docker = self.connect()?;
                match timeout(ENGINE_TIMEOUT, docker.negotiate_version()).await {
                    Ok(Ok(docker)) => Ok(docker),
                    Ok(Err(err)) => Err(self.unreachable(err)),
                    Err(_) => Err(self.unreachable(format!("no answer within {ENGINE_TIMEOUT:?}"))),
                }
            })
            .await
    }

    fn connect(&self) -> Result<Docker, ProviderError> {
        let docker = match (&self.config.url, &self.config.tls) {
            (None, _) => Docker::connect_with_local_defaults(),
            (Some(url), Some(tls)) => Docker::connect_with_ssl(
                url,
                &tls.key,
                &tls.cert,
                &tls.ca,
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
            (Some(url), None) if url.starts_with("unix://") => {
                Docker::connect_with_unix(url, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            (Some(url), None) => {
                Docker::connect_with_http(url, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
        };
        docker
            .map(|d| d.with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS)))
            .map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, err: impl std::fmt::Display) -> ProviderError {
        ProviderError::Backend(format!("docker host {}: {err}", self.name()))
    }

    /// Whether the engine answers a ping within [`ENGINE_TIMEOUT`]; one that does not is
    /// marked down and skipped for a few seconds.
    pub(crate) async fn answers(&self) -> Result<&Docker, ProviderError> {
        if self.down_until.lock().is_some_and(|t| Instant::now() < t) {
            return Err(self.unreachable("did not answer lately; skipped for now"));
        }
        let result = match self.client().await {
            Ok(docker) => match timeout(ENGINE_TIMEOUT, docker.ping()).await {
                Ok(Ok(_)) => Ok(docker),
                Ok(Err(err)) => Err(self.unreachable(err)),
                Err(_) => Err(self.unreachable(format!("no answer within {ENGINE_TIMEOUT:?}"))),
            },
            Err(err) => Err(err),
        };
        if result.is_err() {
            *self.down_until.lock() = Some(Instant::now() + DOWN_FOR);
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// How many GPU slots are free.
    pub(crate) fn free_slots(&self) -> usize {
        self.slots
            .lock()
            .iter()
            .filter(|(_, h)| h.is_none())
            .count()
    }

    /// Takes `count` free GPU ids for `instance`, or none if fewer are free.
    pub(crate) fn take_slots(&self, instance: InstanceId, count: usize) -> Option<Vec<String>> {
        let mut slots = self.slots.lock();
        let free: Vec<usize> = slots
            .iter()
            .enumerate()
            .filter(|(_, (_, holder))| holder.is_none())
            .map(|(i, _)| i)
            .take(count)
            .collect();
        if free.len() < count {
            return None;
        }
        Some(
            free.into_iter()
                .map(|i| {
                    slots[i].1 = Some(instance);
                    slots[i].0.clone()
                })
                .collect(),
        )
    }

    /// Marks the GPU ids a surviving container holds as taken by it (after a restart).
    pub(crate) fn hold_slots(&self, instance: InstanceId, ids: &[String]) {
        for slot in self.slots.lock().iter_mut() {
            if ids.contains(&slot.0) && slot.1.is_none() {
                slot.1 = Some(instance);
            }
        }
    }

    /// Returns every GPU id `instance` holds.
    pub(crate) fn free(&self, instance: InstanceId) {
        for slot in self.slots.lock().iter_mut() {
            if slot.1 == Some(instance) {
                slot.1 = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_whole_or_not_at_all_and_come_back() {
        let host = Host::new(DockerHost {
            gpus: vec!["0".into(), "1".into(), "2".into()],
            ..DockerHost::local()
        });
        let (a, b) = (InstanceId::generate(), InstanceId::generate());
        assert_eq!(host.take_slots(a, 2), Some(vec!["0".into(), "1".into()]));
        assert_eq!(host.take_slots(b, 2), None);
        assert_eq!(host.free_slots(), 1);
        host.free(a);
        assert_eq!(host.take_slots(b, 3).map(|s| s.len()), Some(3));
        assert_eq!(host.take_slots(a, 0), Some(Vec::new()));
    }
}
