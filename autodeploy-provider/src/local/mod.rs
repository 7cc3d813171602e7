//! The local-process provider: an instance is a child process on this machine, the way the
//! product runs `cd /BreezyVoice && python api.py` inside its instance. It is the default a
//! new user runs with no cloud account, and the provider the examples use.
//!
//! # What an instance is
//!
//! - `sh -c <start command>` in a new process group, with the deployment's environment and
//!   working directory, stdin on `/dev/null`, stdout and stderr captured line by line into a
//!   bounded log ([`LocalConfig::log_lines`]).
//! - A free loopback port chosen by the operating system, given to the command as `$PORT` and
//!   substituted for `{port}` in the command, so several instances of one deployment run side
//!   by side. The deployment's own `port` (the in-instance port of providers that have one)
//!   is not used here.
//! - `AUTODEPLOY_INSTANCE` and `AUTODEPLOY_DEPLOYMENT` name the instance to the command.
//!
//! # GPUs
//!
//! With [`LocalConfig::gpus`] empty, GPUs are not managed: `gpu.count` is ignored and the
//! command inherits the gateway's `CUDA_VISIBLE_DEVICES`. With ids configured, an instance
//! takes `gpu.count` free ids and sees exactly them through `CUDA_VISIBLE_DEVICES`; a count of
//! 0 takes none and sees none (`CUDA_VISIBLE_DEVICES=""`), so it cannot use a GPU another
//! instance holds. A count no free list can cover is refused with
//! [`ProviderError::NoCapacity`]. Ids return to the pool when the instance is released, or
//! when it exits on its own and nothing of its group is left.
//!
//! # Readiness
//!
//! Ready when the port accepts a TCP connection and, if the deployment sets a readiness path,
//! a `GET` of it answers a status below 500 (404 counts: the service answers). Probes start
//! 1 ms apart and, while the port is closed, stay at most 4 ms apart for the first 30 s of a
//! start (a refused loopback connect costs microseconds); otherwise they back off, doubling,
//! to the readiness interval. `wait_ready` fails at once with `StartFailed` (exit status and last log
//! lines) when the process exits, and with `StartTimedOut` (what was tried, its last result,
//! the last log lines) once `start_timeout`, counted from create, has passed.
//!
//! # Release
//!
//! SIGTERM to the whole group, up to [`LocalConfig::release_grace`] for every process in it to
//! end, then SIGKILL to the group. The group is signalled even when the leader has already
//! exited, so no grandchild is left behind; the leader is reaped by the task that waits on it.
//!
//! # What `list` and `wait_exit` report
//!
//! `list` reports every instance held until it is released, including one that exited on its
//! own (the caller still releases it, which frees its record). `wait_exit` resolves with the
//! exit status and last log lines when the process exits without being released; an exit
//! caused by `release` is not a death, so a `wait_exit` pending when release begins never
//! resolves, while one called after release (an unknown id) resolves at once.
//!
//! # Restarts and dropping the provider
//!
//! With a [`LocalConfig::state_dir`], every instance is recorded there (a JSON file with its
//! pid, process group, start time, port, labels and GPUs) before its command is allowed to
//! run, and the record is removed on release. Dropping such a provider leaves its processes
//! running, exactly as a crash of the gateway would: a new provider on the same directory
//! finds them through [`GpuProvider::list`] (or [`Local::list_all`]), adopts them, and can
//! release them. Records whose processes are gone are deleted. A recycled pid is not mistaken
//! for a survivor: the recorded start time must match. One state directory belongs to one
//! provider at a time.
//!
//! Without a state directory nothing could find the processes again, so dropping the
//! provider kills every process group it holds (SIGKILL).
//!
//! Known limit: after a real crash of the gateway a survivor's stdout and stderr are pipes
//! without a reader; a service that dies on a broken pipe will exit, which the next `list`
//! notices. An adopted instance keeps no log.

mod config;
mod gpu;
mod instance;
mod log;
mod port;
mod process;
mod state_dir;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::time::{Instant, sleep, timeout_at};

use autodeploy_core::provider::LABEL_DEPLOYMENT;
use autodeploy_core::{
    Endpoint, ExitReport, FieldError, GpuProvider, InstanceId, InstanceSpec, ProvidedInstance,
    ProviderError, UpstreamProtocol,
};

pub use config::{LocalConfig, LocalConfigError};

use crate::readiness::{Backoff, Outcome, Probe};
use gpu::{GpuGrant, GpuPool};
use instance::{Instance, InstanceParts, Origin};
use log::LogRing;
use state_dir::{Record, StateDir};

/// How many log lines a start failure or an exit report carries.
pub(crate) const ERROR_LOG_LINES: usize = 20;
/// The start timeout given to an adopted instance, whose own was not recorded.
const ADOPTED_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The probe interval given to an adopted instance.
const ADOPTED_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The local-process provider; see the [module docs](self) for what an instance is.
///
/// Share it as `Arc<dyn GpuProvider>`; every method may be called concurrently.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use autodeploy_core::{DeployConfig, GpuProvider, InstanceId, InstanceSpec};
/// use autodeploy_provider::{Local, LocalConfig};
///
/// let local = Local::new(LocalConfig::default())?;
/// let config = DeployConfig::new(
///     "files",
///     "python3 -m http.server {port} --bind 127.0.0.1",
///     Duration::from_secs(600),
///     2,
/// );
/// let id = InstanceId::generate();
/// let endpoint = local.create(InstanceSpec::from_config(&config, id)).await?;
/// local.wait_ready(id).await?;
/// println!("serving at http://{endpoint}/");
/// local.release(id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Local {
    config: LocalConfig,
    pool: Arc<GpuPool>,
    state: Option<StateDir>,
    instances: Mutex<HashMap<InstanceId, Arc<Instance>>>,
    /// Serializes create and adoption, so a record written by a create in progress is never
    /// adopted as a survivor, and a retried create never starts a second process.
    create_lock: tokio::sync::Mutex<()>,
}

impl Local {
    /// A provider with `config`, after validating it and creating its state directory. Starts
    /// nothing: survivors in the state directory are adopted by the first `list`.
    pub fn new(config: LocalConfig) -> Result<Self, LocalConfigError> {
        config.validate()?;
        let state = match &config.state_dir {
            Some(path) => {
                Some(
                    StateDir::open(path).map_err(|source| LocalConfigError::StateDir {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Self {
            pool: Arc::new(GpuPool::new(config.gpus.clone())),
            state,
            instances: Mutex::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            config,
        })
    }

    /// The settings this provider runs with.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// Every instance held, of every deployment, after adopting survivors from the state
    /// directory. A restarted gateway uses it to release instances of deployments it no
    /// longer has.
    pub async fn list_all(&self) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.adopt_survivors().await?;
        Ok(self.provided(|_| true))
    }

    fn get(&self, id: InstanceId) -> Option<Arc<Instance>> {
        self.instances.lock().get(&id).cloned()
    }

    fn provided(&self, keep: impl Fn(&Instance) -> bool) -> Vec<ProvidedInstance> {
        let mut out: Vec<ProvidedInstance> = self
            .instances
            .lock()
            .values()
            .filter(|i| !i.is_released() && keep(i))
            .map(|i| ProvidedInstance {
                id: i.id,
                endpoint: Some(i.endpoint.clone()),
                labels: i.labels.clone(),
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }

    /// Spawns the instance for `spec` with its GPUs already granted. On error nothing runs.
    /// Synchronous on purpose: with no `await` between spawning and returning the instance, a
    /// cancelled create cannot forget a process (nor its GPUs).
    fn launch(
        &self,
        spec: &InstanceSpec,
        gpus: &GpuGrant,
        created: Instant,
    ) -> Result<Arc<Instance>, ProviderError> {
        let host = self.config.host;
        let port = {
            let held: Vec<u16> = self
                .instances
                .lock()
                .values()
                .map(|i| i.endpoint.port)
                .collect();
            port::free_port(host, &held)
                .map_err(|e| ProviderError::Backend(format!("no free port on {host}: {e}")))?
        };
        let addr = SocketAddr::new(host, port);
        let h2 = spec.protocol == UpstreamProtocol::H2c;
        let probe = Probe::new(addr, spec.readiness.path.as_deref(), h2).map_err(|reason| {
            ProviderError::StartFailed {
                reason,
                last_log: Vec::new(),
            }
        })?;
        let command = spec.command.replace("{port}", &port.to_string());
        let mut env = spec.env.clone();
        env.insert("PORT".into(), port.to_string());
        env.insert("AUTODEPLOY_INSTANCE".into(), spec.instance.to_string());
        env.insert("AUTODEPLOY_DEPLOYMENT".into(), spec.deployment.clone());
        if let Some(devices) = gpus.visible_devices() {
            env.insert("CUDA_VISIBLE_DEVICES".into(), devices);
        }
        let mut gated = process::spawn(process::Launch {
            command: &command,
            workdir: spec.workdir.as_deref(),
            env,
        })
        .map_err(|e| ProviderError::StartFailed {
            reason: match &spec.workdir {
                Some(dir) => format!("could not start `sh` in {}: {e}", dir.display()),
                None => format!("could not start `sh`: {e}"),
            },
            last_log: Vec::new(),
        })?;
        let pid = gated.pid;
        let log = Arc::new(LogRing::new(self.config.log_lines));
        let mut pumps = Vec::with_capacity(2);
        if let Some(out) = gated.child.stdout.take() {
            pumps.push(tokio::spawn(log::pump(out, log.clone())));
        }
        if let Some(err) = gated.child.stderr.take() {
            pumps.push(tokio::spawn(log::pump(err, log.clone())));
        }
        let mut labels = spec.labels.clone();
        labels
            .entry(LABEL_DEPLOYMENT.to_owned())
            .or_insert_with(|| spec.deployment.clone());

        if let Some(state) = &self.state {
            let record = Record {
                id: spec.instance,
                deployment: spec.deployment.clone(),
                labels: labels.clone(),
                pid,
                pgid: pid,
                start_ticks: gated.start_ticks,
                host: host.to_string(),
                port,
                gpus: gpus.ids().to_vec(),
                readiness_path: spec.readiness.path.clone(),
                readiness_h2: h2,
                started_at_unix_ms: unix_ms(),
            };
            if let Err(err) = state.write(&record) {
                // The gate is still closed: the command never ran. Tokio reaps the child.
                process::signal_group(pid, Signal::SIGKILL);
                return Err(ProviderError::Backend(format!(
                    "could not record instance {} in {}: {err}",
                    spec.instance,
                    state.path().display()
                )));
            }
        }
        let start_ticks = gated.start_ticks;
        let child = match gated.open() {
            Ok(child) => child,
            Err(err) => {
                process::signal_group(pid, Signal::SIGKILL);
                if let Some(state) = &self.state {
                    let _ = state.remove(spec.instance);
                }
                return Err(ProviderError::StartFailed {
                    reason: format!("the shell ended before its command ran: {err}"),
                    last_log: log.last(ERROR_LOG_LINES),
                });
            }
        };
        let instance = Instance::new(InstanceParts {
            id: spec.instance,
            deployment: spec.deployment.clone(),
            labels,
            endpoint: Endpoint::new(host.to_string(), port),
            origin: Origin::Spawned,
            pid,
            start_ticks,
            created,
            start_timeout: spec.start_timeout,
            probe,
            probe_interval: spec.readiness.interval,
            log,
            gpus: gpus.clone(),
            pool: self.pool.clone(),
        });
        instance::watch_child(&instance, child, pumps);
        tracing::info!(
            instance = %spec.instance,
            deployment = %spec.deployment,
            pid,
            %addr,
            gpus = ?gpus.visible_devices(),
            "instance spawned"
        );
        Ok(instance)
    }

    /// Adopts every recorded instance that still runs and is not held yet; deletes the
    /// records of the ones that are gone.
    async fn adopt_survivors(&self) -> Result<(), ProviderError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let _guard = self.create_lock.lock().await;
        let records = state.read_all().map_err(|e| {
            ProviderError::Backend(format!("reading {}: {e}", state.path().display()))
        })?;
        for record in records {
            if self.instances.lock().contains_key(&record.id) {
                continue;
            }
            let leader = process::process_alive(record.pid, record.start_ticks)
                && process::process_group(record.pid) == Some(record.pgid);
            if !leader && !process::group_alive(record.pgid) {
                tracing::info!(instance = %record.id, pid = record.pid, "deleting the record of a process that is gone");
                if let Err(err) = state.remove(record.id) {
                    tracing::warn!(instance = %record.id, %err, "could not delete a stale record");
                }
                continue;
            }
            let host = record.host.parse().unwrap_or_else(|_| {
                tracing::warn!(instance = %record.id, host = %record.host, "record has a bad host; adopting it anyway");
                self.config.host
            });
            let addr = SocketAddr::new(host, record.port);
            let probe = Probe::new(addr, record.readiness_path.as_deref(), record.readiness_h2)
                .or_else(|_| Probe::new(addr, None, false))
                .map_err(ProviderError::Backend)?;
            let gpus = self.pool.claim(&record.gpus);
            let instance = Instance::new(InstanceParts {
                id: record.id,
                deployment: record.deployment.clone(),
                labels: record.labels.clone(),
                endpoint: Endpoint::new(host.to_string(), record.port),
                origin: Origin::Adopted,
                pid: record.pgid,
                start_ticks: record.start_ticks,
                created: Instant::now(),
                start_timeout: ADOPTED_START_TIMEOUT,
                probe,
                probe_interval: ADOPTED_PROBE_INTERVAL,
                log: Arc::new(LogRing::new(1)),
                gpus,
                pool: self.pool.clone(),
            });
            instance::watch_adopted(&instance);
            tracing::info!(instance = %record.id, deployment = %record.deployment, pid = record.pid, "adopted an instance from an earlier run");
            self.instances.lock().insert(record.id, instance);
        }
        Ok(())
    }
}

#[async_trait]
impl GpuProvider for Local {
    fn name(&self) -> &str {
        "local"
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        let created = Instant::now();
        let _guard = self.create_lock.lock().await;
        if let Some(existing) = self.get(spec.instance) {
            return Ok(existing.endpoint.clone());
        }
        let gpus = self.pool.acquire(spec.gpu.count)?;
        match self.launch(&spec, &gpus, created) {
            Ok(instance) => {
                let endpoint = instance.endpoint.clone();
                self.instances.lock().insert(spec.instance, instance);
                Ok(endpoint)
            }
            Err(err) => {
                self.pool.release(&gpus);
                Err(err)
            }
        }
    }

    async fn wait_ready(&self, id: InstanceId) -> Result<(), ProviderError> {
        /// Added to a timeout when nothing ever accepted a connection: the usual cause is a
        /// service listening on a port of its own.
        const NEVER_LISTENED_HINT: &str = "; nothing ever accepted a connection on that \
            port: the command must listen on the port the provider chose, written `{port}` in \
            start_command or read from $PORT, not on a fixed port of its own";
        let instance = self.get(id).ok_or(ProviderError::UnknownInstance(id))?;
        let deadline = instance.created + instance.start_timeout;
        let mut exit = instance.exit.subscribe();
        let mut backoff = Backoff::new(instance.created, instance.probe_interval);
        let mut last = String::from("not probed");
        let mut ever_open = false;
        loop {
            if let Some(report) = instance.exited() {
                return Err(ProviderError::StartFailed {
                    reason: report.reason,
                    last_log: report.last_log,
                });
            }
            if instance.is_released() {
                return Err(ProviderError::StartFailed {
                    reason: "released before it was ready".into(),
                    last_log: instance.last_log(ERROR_LOG_LINES),
                });
            }
            let mut open = false;
            if let Ok(outcome) = timeout_at(deadline, instance.probe.check()).await {
                open = !matches!(outcome, Outcome::Closed(_));
                ever_open |= open;
                match outcome.reason() {
                    None => return Ok(()),
                    Some(why) => last = why,
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let hint = if ever_open { "" } else { NEVER_LISTENED_HINT };
                return Err(ProviderError::StartTimedOut {
                    after: instance.start_timeout,
                    tried: format!("{} (last result: {last}){hint}", instance.probe),
                    last_log: instance.last_log(ERROR_LOG_LINES),
                });
            }
            let pause = backoff.next_delay(open).min(deadline - now);
            tokio::select! {
                () = sleep(pause) => {}
                _ = exit.changed() => {}
            }
        }
    }

    async fn release(&self, id: InstanceId) -> Result<(), ProviderError> {
        let Some(instance) = self.get(id) else {
            return Ok(());
        };
        let _release = instance.release_lock.lock().await;
        let still_held = self
            .instances
            .lock()
            .get(&id)
            .is_some_and(|held| Arc::ptr_eq(held, &instance));
        if !still_held {
            return Ok(());
        }
        instance.stop(self.config.release_grace).await?;
        if let Some(state) = &self.state
            && let Err(err) = state.remove(id)
        {
            // The process is gone; the next `list` deletes the stale record.
            tracing::warn!(instance = %id, %err, "could not delete the instance record");
        }
        instance.free_gpus();
        self.instances.lock().remove(&id);
        tracing::info!(instance = %id, "instance released");
        Ok(())
    }

    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.adopt_survivors().await?;
        Ok(self.provided(|i| i.deployment == deployment))
    }

    async fn list_owned(&self) -> Result<Vec<ProvidedInstance>, ProviderError> {
        self.list_all().await
    }

    fn validate_deployment(&self, config: &autodeploy_core::DeployConfig) -> Vec<FieldError> {
        crate::registry::require_start_command(config)
    }

    async fn wait_exit(&self, id: InstanceId) -> ExitReport {
        let Some(instance) = self.get(id) else {
            return ExitReport {
                reason: format!("unknown instance {id}"),
                last_log: Vec::new(),
            };
        };
        let mut exit = instance.exit.subscribe();
        let report = match exit.wait_for(Option::is_some).await {
            Ok(report) => report.clone(),
            // The sender lives in `instance`, which this future holds: unreachable.
            Err(_) => None,
        };
        match report {
            Some(report) if !instance.is_released() => report,
            // Released: the instance did not die, it was stopped; nothing to report.
            _ => std::future::pending().await,
        }
    }

    fn logs(&self, id: InstanceId, lines: usize) -> Vec<String> {
        self.get(id).map(|i| i.last_log(lines)).unwrap_or_default()
    }
}

impl Drop for Local {
    /// Without a state directory, kills every process group still held (nothing could find
    /// them again). With one, leaves them running for the next provider to adopt.
    fn drop(&mut self) {
        if self.state.is_some() {
            return;
        }
        for instance in self.instances.lock().values() {
            if instance.anything_alive() {
                instance
                    .released
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                process::signal_group(instance.pid, Signal::SIGKILL);
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
