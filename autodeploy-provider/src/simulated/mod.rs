//! The simulated provider: instances that are real in-process HTTP servers on loopback ports,
//! with configurable boot time, failures and crashes, deterministic under a seed and tokio's
//! paused clock. For tests, benchmarks and capacity planning.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use autodeploy_core::{DeployConfig, GpuProvider, InstanceId, InstanceSpec};
//! use autodeploy_provider::{Simulated, SimulatedConfig};
//!
//! let sim = Simulated::new(
//!     SimulatedConfig::default()
//!         .boot_time(Duration::from_millis(200))
//!         .crash_after_requests(100)
//!         .seed(7),
//! )?;
//! let config = DeployConfig::new("speech", "python api.py", Duration::from_secs(600), 5);
//! let id = InstanceId::generate();
//! let endpoint = sim.create(InstanceSpec::from_config(&config, id)).await?;
//! sim.wait_ready(id).await?;
//! // GET http://{endpoint}/anything answers 200 with `x-instance-id: {id}`.
//! # let _ = endpoint;
//! assert_eq!(sim.created(), 1);
//! sim.release(id).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What each instance answers is listed in [`handler`]. Boot, timeouts and delays run on
//! `tokio::time`, so they follow a paused clock; the sockets do not, and a paused clock
//! auto-advances while a task waits on one, so keep HTTP tests on the real clock unless time
//! is advanced by hand.

mod calls;
mod config;
pub mod handler;
mod server;
mod websocket;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use autodeploy_core::{
    Endpoint, ExitReport, GpuProvider, InstanceId, InstanceSpec, ProvidedInstance, ProviderError,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::{Instant, sleep_until};

pub use calls::Call;
pub use config::{SimulatedConfig, SimulatedConfigError};
pub use handler::{DELAY_HEADER, INSTANCE_HEADER};

use server::{Behaviour, InstanceServer, Stop};

/// A [`GpuProvider`] whose instances are in-process HTTP servers on `127.0.0.1`.
///
/// Every instance answers every request with `x-instance-id: {id}` (see [`handler`] for the
/// paths). Its boot time, start failures and crashes follow the [`SimulatedConfig`], drawn
/// from one seeded generator in call order, so a test that calls in the same order sees the
/// same instances. Every provider call is recorded ([`Simulated::calls`]) and counted.
///
/// The spec's readiness probe is not used: an instance is ready when its boot time has
/// passed. It answers `503` until then. `wait_ready` fails with `StartTimedOut` when the boot
/// time exceeds `spec.start_timeout`. Dropping the provider stops every instance.
pub struct Simulated {
    config: SimulatedConfig,
    state: Mutex<State>,
}

struct State {
    rng: StdRng,
    instances: HashMap<InstanceId, Instance>,
    calls: Vec<Call>,
    created: u64,
    released: u64,
    max_live: usize,
}

/// One instance the provider holds: created and not yet released (it may have crashed).
struct Instance {
    deployment: String,
    labels: BTreeMap<String, String>,
    created_at: Instant,
    start_timeout: std::time::Duration,
    fail_at_boot: bool,
    server: InstanceServer,
}

impl Instance {
    fn endpoint(&self) -> Endpoint {
        Endpoint::from(self.server.addr())
    }
}

impl fmt::Debug for Simulated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulated")
            .field("config", &self.config)
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

impl Default for Simulated {
    /// Instances that boot at once, never fail and never crash.
    fn default() -> Self {
        Self::with_valid_config(SimulatedConfig::default())
    }
}

impl Simulated {
    /// A provider with these settings, once they pass [`SimulatedConfig::validate`].
    pub fn new(config: SimulatedConfig) -> Result<Self, SimulatedConfigError> {
        config.validate()?;
        Ok(Self::with_valid_config(config))
    }

    fn with_valid_config(config: SimulatedConfig) -> Self {
        Self {
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(config.seed),
                instances: HashMap::new(),
                calls: Vec::new(),
                created: 0,
                released: 0,
                max_live: 0,
            }),
            config,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SimulatedConfig {
        &self.config
    }

    /// Every call made so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().calls.clone()
    }

    /// Instances held now: created and not yet released, crashed ones included.
    pub fn live(&self) -> usize {
        self.state.lock().instances.len()
    }

    /// Instances created so far (successful `create` calls; a retried create of a live id
    /// does not count twice).
    pub fn created(&self) -> u64 {
        self.state.lock().created
    }

    /// Instances released so far (releases of unknown or already released ids do not count).
    pub fn released(&self) -> u64 {
        self.state.lock().released
    }

    /// The most instances held at once so far.
    pub fn max_live(&self) -> usize {
        self.state.lock().max_live
    }

    /// The ids of the instances held now, in no particular order.
    pub fn instances(&self) -> Vec<InstanceId> {
        self.state.lock().instances.keys().copied().collect()
    }

    /// Requests the instance has answered since it became ready; `None` when not held.
    pub fn requests_served(&self, id: InstanceId) -> Option<u64> {
        self.state
            .lock()
            .instances
            .get(&id)
            .map(|i| i.server.served())
    }

    /// Crashes the instance now, as a fault would: its port closes, open connections are
    /// dropped mid-request, and `wait_exit` resolves with the reason `killed`. It stays held
    /// until released. Returns once it has stopped; `false` when the id is not held.
    pub async fn kill(&self, id: InstanceId) -> bool {
        let Some(shared) = self
            .state
            .lock()
            .instances
            .get(&id)
            .map(|i| std::sync::Arc::clone(i.server.shared()))
        else {
            return false;
        };
        let mut exit = shared.exit_watch();
        shared.log("killed on request");
        shared.request_stop(Stop::Kill("killed".to_owned()));
        let _ = exit.wait_for(Option::is_some).await;
        true
    }
}

fn start_failed(reason: impl Into<String>, last_log: Vec<String>) -> ProviderError {
    ProviderError::StartFailed {
        reason: reason.into(),
        last_log,
    }
}

#[async_trait]
impl GpuProvider for Simulated {
    fn name(&self) -> &str {
        "simulated"
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.calls.push(Call::Create {
            deployment: spec.deployment.clone(),
            instance: spec.instance,
            at: now,
        });
        if let Some(existing) = st.instances.get(&spec.instance) {
            return Ok(existing.endpoint());
        }
        if let Some(capacity) = self.config.capacity
            && st.instances.len() >= capacity
        {
            return Err(ProviderError::NoCapacity(format!(
                "the simulated provider holds {capacity} instances, its capacity"
            )));
        }
        // Always the same draws in the same order, so one seed gives one sequence.
        let fails = st.rng.random_bool(self.config.failure_probability);
        let fails_at_create = st.rng.random_bool(0.5);
        let boot_time = match self.config.boot_time_max {
            Some(max) if max > self.config.boot_time => {
                st.rng.random_range(self.config.boot_time..=max)
            }
            _ => self.config.boot_time,
        };
        if fails && fails_at_create {
            return Err(start_failed(
                format!(
                    "simulated create failure (failure_probability = {})",
                    self.config.failure_probability
                ),
                Vec::new(),
            ));
        }
        let server = InstanceServer::start(
            spec.instance,
            Behaviour {
                ready_at: now + boot_time,
                response_delay: self.config.response_delay,
                crash_after: self.config.crash_after_requests,
                fail_at_boot: fails,
            },
        )
        .map_err(|err| ProviderError::Backend(format!("binding a loopback port: {err}")))?;
        server.shared().log(format!("boot time {boot_time:?}"));
        let instance = Instance {
            deployment: spec.deployment,
            labels: spec.labels,
            created_at: now,
            start_timeout: spec.start_timeout,
            fail_at_boot: fails,
            server,
        };
        let endpoint = instance.endpoint();
        st.instances.insert(spec.instance, instance);
        st.created += 1;
        st.max_live = st.max_live.max(st.instances.len());
        Ok(endpoint)
    }

    async fn wait_ready(&self, id: InstanceId) -> Result<(), ProviderError> {
        let (shared, ready_at, start_timeout, deadline, fail_at_boot) = {
            let mut st = self.state.lock();
            st.calls.push(Call::WaitReady {
                instance: id,
                at: Instant::now(),
            });
            let inst = st
                .instances
                .get(&id)
                .ok_or(ProviderError::UnknownInstance(id))?;
            (
                std::sync::Arc::clone(inst.server.shared()),
                inst.server.shared().ready_at,
                inst.start_timeout,
                inst.created_at + inst.start_timeout,
                inst.fail_at_boot,
            )
        };
        let mut exit = shared.exit_watch();
        let booted = async {
            if fail_at_boot || ready_at > deadline {
                std::future::pending::<()>().await;
            }
            sleep_until(ready_at).await;
        };
        tokio::select! {
            biased;
            report = exit.wait_for(Option::is_some) => {
                let report = report.ok().and_then(|r| r.clone()).unwrap_or_else(|| ExitReport {
                    reason: "released".to_owned(),
                    last_log: Vec::new(),
                });
                Err(start_failed(report.reason, report.last_log))
            }
            () = booted => {
                shared.log("ready");
                Ok(())
            }
            () = sleep_until(deadline) => Err(ProviderError::StartTimedOut {
                after: start_timeout,
                tried: "waiting for the simulated boot time".to_owned(),
                last_log: shared.last_log(20),
            }),
        }
    }

    async fn release(&self, id: InstanceId) -> Result<(), ProviderError> {
        let removed = {
            let mut st = self.state.lock();
            st.calls.push(Call::Release {
                instance: id,
                at: Instant::now(),
            });
            let removed = st.instances.remove(&id);
            if removed.is_some() {
                st.released += 1;
            }
            removed
        };
        if let Some(instance) = removed {
            instance.server.release().await;
        }
        Ok(())
    }

    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        let mut st = self.state.lock();
        st.calls.push(Call::List {
            deployment: deployment.to_owned(),
            at: Instant::now(),
        });
        Ok(st
            .instances
            .iter()
            .filter(|(_, inst)| inst.deployment == deployment)
            .map(|(id, inst)| ProvidedInstance {
                id: *id,
                endpoint: Some(inst.endpoint()),
                labels: inst.labels.clone(),
            })
            .collect())
    }

    async fn wait_exit(&self, id: InstanceId) -> ExitReport {
        let shared = self
            .state
            .lock()
            .instances
            .get(&id)
            .map(|i| std::sync::Arc::clone(i.server.shared()));
        let released = || ExitReport {
            reason: "released".to_owned(),
            last_log: Vec::new(),
        };
        let Some(shared) = shared else {
            return released();
        };
        let mut exit = shared.exit_watch();
        let report = exit.wait_for(Option::is_some).await;
        report.ok().and_then(|r| r.clone()).unwrap_or_else(released)
    }

    fn logs(&self, id: InstanceId, lines: usize) -> Vec<String> {
        self.state
            .lock()
            .instances
            .get(&id)
            .map(|i| i.server.shared().last_log(lines))
            .unwrap_or_default()
    }
}
