//! Readiness: the container runs, its published port answers HTTP (the shared probe: the
//! readiness path below 500, or any answer at all without a path, since Docker's port
//! forwarder accepts connections before the service listens), and, when the image has a
//! HEALTHCHECK, the engine says `healthy`. Exit before ready fails at once with the last
//! log lines; no readiness within `start_timeout` fails and removes the container.

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{InstanceId, ProviderError};
use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use tokio::time::{Instant, sleep, sleep_until};

use super::{Container, ERROR_LOG_LINES, Inner};
use crate::readiness::{Backoff, Outcome, Probe};

/// How often the engine is asked for the container's state while the probe waits.
const INSPECT_EVERY: Duration = Duration::from_millis(250);

/// What the engine says about a starting container.
enum EngineView {
    /// Running, and healthy (`healthcheck`) or without a healthcheck.
    Running {
        /// Whether the image has a healthcheck (then it passed).
        healthcheck: bool,
    },
    /// Running, with a healthcheck that has not passed yet.
    Unhealthy(String),
    /// Stopped: why.
    Exited(String),
}

impl Inner {
    /// Resolves when the instance is ready; see the module docs.
    pub(crate) async fn wait_ready(self: &Arc<Self>, id: InstanceId) -> Result<(), ProviderError> {
        let container = self.get(id).ok_or(ProviderError::UnknownInstance(id))?;
        let docker = self.hosts[container.host].client().await?;
        let deadline = container.created + container.start_timeout;
        let addr =
            tokio::net::lookup_host((container.endpoint.host.as_str(), container.endpoint.port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    ProviderError::Backend(format!("cannot resolve {}", container.endpoint))
                })?;
        let probe = Probe::new(addr, container.readiness_path.as_deref(), container.h2)
            .map_err(|reason| ProviderError::StartFailed {
                reason,
                last_log: Vec::new(),
            })?
            .answered();
        let mut exit = container.exit.subscribe();
        let mut backoff = Backoff::new(container.created, container.probe_interval);
        let mut last = String::from("not probed yet");
        let mut next_inspect = Instant::now();
        // Seen running without a healthcheck: an HTTP answer on its port is then enough, so
        // the moment it answers costs no further engine round trip.
        let mut running_plain = false;
        loop {
            if let Some(report) = exit.borrow().clone() {
                return Err(ProviderError::StartFailed {
                    reason: format!("{} before it was ready", report.reason),
                    last_log: report.last_log,
                });
            }
            let outcome = probe.check().await;
            let open = !matches!(outcome, Outcome::Closed(_));
            let probed_ready = outcome == Outcome::Ready;
            if probed_ready && running_plain {
                return Ok(());
            }
            if probed_ready || Instant::now() >= next_inspect {
                next_inspect = Instant::now() + INSPECT_EVERY;
                match self.engine_view(docker, &container.name).await {
                    EngineView::Running { .. } if probed_ready => return Ok(()),
                    EngineView::Running { healthcheck } => running_plain = !healthcheck,
                    EngineView::Unhealthy(why) => last = why,
                    EngineView::Exited(reason) => {
                        let last_log = self.last_log(docker, &container.name).await;
                        container.report_exit(reason.clone(), last_log.clone());
                        return Err(ProviderError::StartFailed {
                            reason: format!("{reason} before it was ready"),
                            last_log,
                        });
                    }
                }
            }
            if let Some(why) = outcome.reason() {
                last = why;
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(docker, &container, &probe, last).await);
            }
            let pause = backoff.next_delay(open);
            tokio::select! {
                _ = sleep(pause) => {}
                _ = sleep_until(deadline) => {}
                _ = exit.changed() => {}
            }
        }
    }

    async fn timed_out(
        &self,
        docker: &Docker,
        container: &Container,
        probe: &Probe,
        last: String,
    ) -> ProviderError {
        let last_log = self.last_log(docker, &container.name).await;
        container.mark_released();
        self.remove(docker, &container.name).await;
        ProviderError::StartTimedOut {
            after: container.start_timeout,
            tried: format!("{probe} (last: {last}); the container was removed"),
            last_log,
        }
    }

    async fn engine_view(&self, docker: &Docker, name: &str) -> EngineView {
        let inspect = match docker.inspect_container(name, None).await {
            Ok(inspect) => inspect,
            Err(err) => return EngineView::Exited(format!("the container is gone ({err})")),
        };
        let Some(state) = inspect.state else {
            return EngineView::Unhealthy("the engine reports no state".into());
        };
        match state.status {
            Some(ContainerStateStatusEnum::RUNNING) | None if state.running != Some(false) => {}
            Some(ContainerStateStatusEnum::CREATED) => {
                return EngineView::Unhealthy("created, not running yet".into());
            }
            _ => {
                let mut reason = format!("exited with status {}", state.exit_code.unwrap_or(0));
                if state.oom_killed == Some(true) {
                    reason.push_str(" (out of memory)");
                }
                return EngineView::Exited(reason);
            }
        }
        match state.health.and_then(|h| h.status) {
            None | Some(HealthStatusEnum::EMPTY | HealthStatusEnum::NONE) => {
                EngineView::Running { healthcheck: false }
            }
            Some(HealthStatusEnum::HEALTHY) => EngineView::Running { healthcheck: true },
            Some(other) => EngineView::Unhealthy(format!("healthcheck: {other}")),
        }
    }

    /// The container's last log lines (stdout and stderr), oldest first; empty when the
    /// engine cannot say.
    pub(crate) async fn last_log(&self, docker: &Docker, name: &str) -> Vec<String> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&ERROR_LOG_LINES.to_string())
            .build();
        let mut stream = docker.logs(name, Some(options));
        let mut text = String::new();
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let skip = lines.len().saturating_sub(ERROR_LOG_LINES);
        lines.into_iter().skip(skip).collect()
    }
}
