//! One instance the provider holds: its process group, its output, whether it exited, and
//! the task that notices when it does.
//!
//! An instance is either spawned by this provider (a child we wait on and reap) or adopted
//! from the state directory after a restart (someone else's child, watched by polling its
//! pid). Both are stopped the same way: signals to the recorded process group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use autodeploy_core::{Endpoint, ExitReport, InstanceId, ProviderError};

use super::gpu::{GpuGrant, GpuPool};
use super::log::LogRing;
use super::process;
use crate::readiness::Probe;

/// How long the exit report waits for the output pipes to drain after the process ended
/// (a grandchild may hold them open for ever).
const DRAIN_WAIT: Duration = Duration::from_millis(200);
/// How often an adopted instance's pid is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(250);
/// How long a group may take to vanish after SIGKILL before release reports a failure.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The longest pause while waiting for a signalled group to vanish.
const STOP_POLL_MAX: Duration = Duration::from_millis(20);

/// Where an instance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Spawned by this provider; a watcher task waits on the child.
    Spawned,
    /// Found in the state directory; watched by polling its pid.
    Adopted,
}

/// What the provider knows about one instance.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: InstanceId,
    pub(crate) deployment: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) endpoint: Endpoint,
    pub(crate) origin: Origin,
    /// The leader's pid, also the process group id.
    pub(crate) pid: i32,
    pub(crate) start_ticks: Option<u64>,
    /// When create began (or adoption happened), for the start timeout.
    pub(crate) created: Instant,
    pub(crate) start_timeout: Duration,
    pub(crate) probe: Probe,
    pub(crate) probe_interval: Duration,
    pub(crate) log: Arc<LogRing>,
    /// `Some` once the leader has exited (and, if spawned, been reaped).
    pub(crate) exit: watch::Sender<Option<ExitReport>>,
    /// Set when release begins: from then on an exit is not a death.
    pub(crate) released: AtomicBool,
    /// Serializes concurrent releases of this instance.
    pub(crate) release_lock: tokio::sync::Mutex<()>,
    gpus: Mutex<Option<GpuGrant>>,
    pool: Arc<GpuPool>,
}

/// Everything needed to build an [`Instance`].
#[derive(Debug)]
pub(crate) struct InstanceParts {
    pub(crate) id: InstanceId,
    pub(crate) deployment: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) endpoint: Endpoint,
    pub(crate) origin: Origin,
    pub(crate) pid: i32,
    pub(crate) start_ticks: Option<u64>,
    pub(crate) created: Instant,
    pub(crate) start_timeout: Duration,
    pub(crate) probe: Probe,
    pub(crate) probe_interval: Duration,
    pub(crate) log: Arc<LogRing>,
    pub(crate) gpus: GpuGrant,
    pub(crate) pool: Arc<GpuPool>,
}

impl Instance {
    /// An instance that has not exited.
    pub(crate) fn new(parts: InstanceParts) -> Arc<Self> {
        Arc::new(Self {
            id: parts.id,
            deployment: parts.deployment,
            labels: parts.labels,
            endpoint: parts.endpoint,
            origin: parts.origin,
            pid: parts.pid,
            start_ticks: parts.start_ticks,
            created: parts.created,
            start_timeout: parts.start_timeout,
            probe: parts.probe,
            probe_interval: parts.probe_interval,
            log: parts.log,
            exit: watch::Sender::new(None),
            released: AtomicBool::new(false),
            release_lock: tokio::sync::Mutex::new(()),
            gpus: Mutex::new(Some(parts.gpus)),
            pool: parts.pool,
        })
    }

    /// The exit report, if the leader has exited.
    pub(crate) fn exited(&self) -> Option<ExitReport> {
        self.exit.borrow().clone()
    }

    /// Whether release has begun.
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// The last lines for an error or exit report.
    pub(crate) fn last_log(&self, lines: usize) -> Vec<String> {
        self.log.last(lines)
    }

    /// Returns the instance's GPUs to the pool; later calls do nothing.
    pub(crate) fn free_gpus(&self) {
        if let Some(grant) = self.gpus.lock().take() {
            self.pool.release(&grant);
        }
    }

    /// Whether the leader still runs, as far as can be told.
    fn leader_alive(&self) -> bool {
        match self.origin {
            Origin::Spawned => self.exited().is_none(),
            Origin::Adopted => process::process_alive(self.pid, self.start_ticks),
        }
    }

    /// Whether anything of the instance still runs: the leader or any process of its group.
    pub(crate) fn anything_alive(&self) -> bool {
        self.leader_alive() || process::group_alive(self.pid)
    }

    /// Stops the whole process group: SIGTERM, up to `grace` for it to vanish, then SIGKILL.
    /// The group is signalled even after the leader exited, so no grandchild survives.
    pub(crate) async fn stop(&self, grace: Duration) -> Result<(), ProviderError> {
        self.released.store(true, Ordering::SeqCst);
        if !self.anything_alive() {
            return Ok(());
        }
        process::signal_group(self.pid, Signal::SIGTERM);
        if self.wait_gone(Instant::now() + grace).await {
            return Ok(());
        }
        tracing::info!(instance = %self.id, pgid = self.pid, ?grace, "grace period over, killing the group");
        process::signal_group(self.pid, Signal::SIGKILL);
        if self.wait_gone(Instant::now() + KILL_WAIT).await {
            return Ok(());
        }
        Err(ProviderError::Backend(format!(
            "process group {} of instance {} survived SIGKILL for {KILL_WAIT:?}",
            self.pid, self.id
        )))
    }

    /// Waits until nothing of the instance runs, or `deadline`; returns whether it is gone.
    async fn wait_gone(&self, deadline: Instant) -> bool {
        let mut exit = self.exit.subscribe();
        let mut pause = Duration::from_millis(1);
        loop {
            if !self.anything_alive() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let nap = pause.min(deadline - now);
            tokio::select! {
                () = sleep(nap) => {}
                _ = exit.changed() => {}
            }
            pause = (pause * 2).min(STOP_POLL_MAX);
        }
    }
}

/// Waits on a spawned child: reaps it, lets the output pumps drain, then publishes the exit
/// report and, if the group is gone, frees the GPUs. Holds the instance only weakly before
/// the exit, so a forgotten instance does not outlive its process in memory.
pub(crate) fn watch_child(
    instance: &Arc<Instance>,
    mut child: Child,
    pumps: Vec<JoinHandle<()>>,
) -> JoinHandle<()> {
    let instance = Arc::downgrade(instance);
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = timeout(DRAIN_WAIT, join_all(pumps)).await;
        let Some(instance) = instance.upgrade() else {
            return;
        };
        let reason = match status {
            Ok(status) => process::describe_exit(status),
            Err(err) => format!("could not be waited on: {err}"),
        };
        finish(&instance, reason);
    })
}

/// Polls an adopted instance's pid until it exits, the instance is released, or forgotten.
pub(crate) fn watch_adopted(instance: &Arc<Instance>) -> JoinHandle<()> {
    let weak: Weak<Instance> = Arc::downgrade(instance);
    tokio::spawn(async move {
        loop {
            sleep(ADOPTED_POLL).await;
            let Some(instance) = weak.upgrade() else {
                return;
            };
            if instance.is_released() {
                return;
            }
            if !process::process_alive(instance.pid, instance.start_ticks) {
                finish(
                    &instance,
                    "exited (adopted after a restart; status unknown)".into(),
                );
                return;
            }
        }
    })
}

fn finish(instance: &Instance, reason: String) {
    if !instance.is_released() {
        tracing::warn!(instance = %instance.id, %reason, "instance exited on its own");
    }
    let report = ExitReport {
        reason,
        last_log: instance.last_log(super::ERROR_LOG_LINES),
    };
    instance.exit.send_replace(Some(report));
    if !process::group_alive(instance.pid) {
        instance.free_gpus();
    }
}
