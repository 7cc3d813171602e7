//! Proven readiness on a cloud address: an HTTP `GET` of the readiness path (`/` when none
//! is set) answered with a status below 500. A proxy in front of the instance (RunPod's,
//! Glows') answers 5xx while the service inside is not listening yet, so "the cloud says
//! running" never counts as ready on its own. An `h2c` deployment is probed by a TCP
//! connect (the probe client speaks HTTP/1.1 and TLS only).

use std::time::Duration;

use autodeploy_core::{InstanceId, ProviderError, UpstreamProtocol};
use tokio::time::{Instant, sleep};

use super::backoff::PollSchedule;
use super::settings::RemoteSettings;
use super::{Cloud, CloudState, Remote};

/// The longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Every this many failed probes, the cloud is asked whether the instance still runs.
const STATE_CHECK_EVERY: u32 = 4;

/// The probe's HTTP client: webpki roots plus the configured extra CA file.
pub(super) fn client(settings: &RemoteSettings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .connect_timeout(PROBE_TIMEOUT)
        .no_proxy()
        .user_agent("autodeploy-readiness");
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the readiness client: {e}"))
}

impl<C: Cloud> Remote<C> {
    pub(super) async fn await_ready(&self, id: InstanceId) -> Result<(), ProviderError> {
        let tracked = self.tracked(id).ok_or(ProviderError::UnknownInstance(id))?;
        let Some(endpoint) = tracked.endpoint() else {
            return Err(ProviderError::StartFailed {
                reason: format!("{}: the instance has no address", self.cloud.name()),
                last_log: tracked.notes(),
            });
        };
        let tcp_only = tracked.protocol == UpstreamProtocol::H2c;
        let path = tracked.readiness.path.clone().unwrap_or_else(|| "/".into());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let url = format!("{}{path}", endpoint.url());
        let tried = if tcp_only {
            format!("TCP connect to {}:{}", endpoint.host, endpoint.port)
        } else {
            format!("GET {url}")
        };
        let deadline = tracked.created + tracked.start_timeout;
        let interval = tracked.readiness.interval.max(Duration::from_millis(1));
        let mut poll = PollSchedule::new(self.settings.poll_min.min(interval), interval);
        let mut failures = 0u32;
        loop {
            let outcome = if tcp_only {
                tokio::time::timeout(
                    PROBE_TIMEOUT,
                    tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
                )
                .await
                .map_err(|_| "connect timed out".to_owned())
                .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
            } else {
                match self.probe.get(&url).send().await {
                    Ok(response) if response.status().as_u16() < 500 => Ok(()),
                    Ok(response) => Err(format!("status {}", response.status().as_u16())),
                    Err(err) => Err(probe_error(&err)),
                }
            };
            let last = match outcome {
                Ok(()) => {
                    tracing::info!(cloud = self.cloud.name(), instance = %id, %url, "instance ready");
                    return Ok(());
                }
                Err(last) => last,
            };
            if tracked.is_released() {
                return Err(ProviderError::StartFailed {
                    reason: "released before it was ready".into(),
                    last_log: tracked.notes(),
                });
            }
            failures += 1;
            if failures.is_multiple_of(STATE_CHECK_EVERY)
                && let Some(current) = tracked.current()
            {
                match self.cloud.get(&self.api, &current.cloud_id).await {
                    Ok(Some(instance)) => {
                        let gone = match &instance.state {
                            CloudState::Gone(reason) => Some(reason.clone()),
                            _ => None,
                        };
                        tracked.update(instance);
                        if let Some(reason) = gone {
                            return Err(ProviderError::StartFailed {
                                reason: format!(
                                    "{}: instance {} ended before it was ready: {reason}",
                                    self.cloud.name(),
                                    current.cloud_id
                                ),
                                last_log: tracked.notes(),
                            });
                        }
                    }
                    Ok(None) => {
                        return Err(ProviderError::StartFailed {
                            reason: format!(
                                "{}: instance {} is no longer known to the cloud",
                                self.cloud.name(),
                                current.cloud_id
                            ),
                            last_log: tracked.notes(),
                        });
                    }
                    Err(err) => tracked.note(err.to_string()),
                }
            }
            let delay = poll.next_delay();
            if Instant::now() + delay > deadline {
                let mut last_log = tracked.notes();
                last_log.push(format!("last probe: {last}"));
                return Err(ProviderError::StartTimedOut {
                    after: tracked.start_timeout,
                    tried,
                    last_log,
                });
            }
            sleep(delay).await;
        }
    }
}

/// A probe failure in a few words (reqwest's own message names the URL, which is fine: it
/// holds no key).
fn probe_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        format!("connect failed: {err}")
    } else {
        err.to_string()
    }
}
