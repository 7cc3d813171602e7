//! Fakes of the outside world for the controller tests: a `GpuProvider` the test drives and
//! watches, an event recorder, and small routing closures. Everything runs on tokio's paused
//! clock, so delays cost no real time.

// Each test crate (`controller.rs`, `live_instances.rs`) uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use autodeploy_core::{
    Controller, ControllerEvent, DeployConfig, Endpoint, EventSink, ExitReport, GpuProvider,
    InstanceId, InstanceSpec, ProvidedInstance, ProviderError, RouteView, Target,
};
use parking_lot::Mutex;
use tokio::sync::watch;

/// The idle retention period most tests use.
pub const RETENTION: Duration = Duration::from_secs(60);
/// How long the fake provider's create call takes by default.
pub const CREATE: Duration = Duration::from_secs(2);
/// How long a created fake instance takes to become ready by default.
pub const READY: Duration = Duration::from_secs(3);

/// A `GpuProvider` whose timing and failures the test sets, and which records every call.
///
/// An instance is *live* from the moment `create` is called until `release` is called for it,
/// the strictest reading of "exists at the provider".
#[derive(Debug)]
pub struct FakeProvider {
    state: Mutex<FakeState>,
}

#[derive(Debug)]
struct FakeState {
    create_delay: Duration,
    ready_delay: Duration,
    fail_create: Option<ProviderError>,
    fail_ready: Option<ProviderError>,
    never_ready: bool,
    failing_releases: u32,
    creates: Vec<InstanceId>,
    releases: Vec<InstanceId>,
    live: BTreeSet<InstanceId>,
    high_water: usize,
    exits: BTreeMap<InstanceId, watch::Sender<Option<ExitReport>>>,
}

impl FakeProvider {
    /// A provider with the default delays ([`CREATE`], [`READY`]) that never fails.
    pub fn new() -> Arc<Self> {
        Self::with_delays(CREATE, READY)
    }

    /// A provider whose create call takes `create` and whose instances are ready `ready` later.
    pub fn with_delays(create: Duration, ready: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(FakeState {
                create_delay: create,
                ready_delay: ready,
                fail_create: None,
                fail_ready: None,
                never_ready: false,
                failing_releases: 0,
                creates: Vec::new(),
                releases: Vec::new(),
                live: BTreeSet::new(),
                high_water: 0,
                exits: BTreeMap::new(),
            }),
        })
    }

    /// Sets the delays of later calls.
    pub fn set_delays(&self, create: Duration, ready: Duration) {
        let mut s = self.state.lock();
        s.create_delay = create;
        s.ready_delay = ready;
    }

    /// Makes later create calls fail with `err` once their delay has passed (`None`: succeed).
    pub fn fail_create(&self, err: Option<ProviderError>) {
        self.state.lock().fail_create = err;
    }

    /// Makes later readiness waits fail with `err` once the ready delay has passed.
    pub fn fail_ready(&self, err: Option<ProviderError>) {
        self.state.lock().fail_ready = err;
    }

    /// Makes later readiness waits never complete (until the instance is killed).
    pub fn never_ready(&self, never: bool) {
        self.state.lock().never_ready = never;
    }

    /// The instance stops on its own: its `wait_exit` (and a pending `wait_ready`) resolve.
    pub fn kill(&self, id: InstanceId) {
        let s = self.state.lock();
        if let Some(tx) = s.exits.get(&id) {
            tx.send_replace(Some(ExitReport {
                reason: "killed by signal 9".to_owned(),
                last_log: vec!["CUDA error: out of memory".to_owned()],
            }));
        }
    }

    /// Create calls so far.
    /// Makes the next `n` release calls fail (the instance stays live).
    pub fn fail_releases(&self, n: u32) {
        self.state.lock().failing_releases = n;
    }

    /// Instances that exist at the provider now.
    pub fn live_now(&self) -> usize {
        self.state.lock().live.len()
    }

    pub fn creates(&self) -> usize {
        self.state.lock().creates.len()
    }

    /// The ids of every create call, in order.
    pub fn created(&self) -> Vec<InstanceId> {
        self.state.lock().creates.clone()
    }

    /// Release calls so far.
    pub fn releases(&self) -> usize {
        self.state.lock().releases.len()
    }

    /// Release calls for `id`.
    pub fn releases_of(&self, id: InstanceId) -> usize {
        self.state
            .lock()
            .releases
            .iter()
            .filter(|r| **r == id)
            .count()
    }

    /// Instances created and not yet released, in id order.
    pub fn live(&self) -> Vec<InstanceId> {
        self.state.lock().live.iter().copied().collect()
    }

    /// The most instances that were live at once.
    pub fn high_water(&self) -> usize {
        self.state.lock().high_water
    }

    fn exit_rx(&self, id: InstanceId) -> Option<watch::Receiver<Option<ExitReport>>> {
        self.state
            .lock()
            .exits
            .get(&id)
            .map(watch::Sender::subscribe)
    }
}

/// Waits until the instance behind `rx` has been killed.
async fn exited(mut rx: watch::Receiver<Option<ExitReport>>) -> ExitReport {
    // The sender lives in the provider for the whole test, so this only ends on a kill.
    let report = rx
        .wait_for(Option::is_some)
        .await
        .map(|report| report.clone());
    match report {
        Ok(Some(report)) => report,
        _ => std::future::pending().await,
    }
}

#[async_trait]
impl GpuProvider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }

    async fn create(&self, spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        let id = spec.instance;
        let (delay, port) = {
            let mut s = self.state.lock();
            s.creates.push(id);
            s.live.insert(id);
            s.high_water = s.high_water.max(s.live.len());
            s.exits.entry(id).or_insert_with(|| watch::channel(None).0);
            (s.create_delay, 20_000 + s.creates.len() as u16)
        };
        tokio::time::sleep(delay).await;
        if let Some(err) = self.state.lock().fail_create.clone() {
            return Err(err);
        }
        Ok(Endpoint::new("127.0.0.1", port))
    }

    async fn wait_ready(&self, id: InstanceId) -> Result<(), ProviderError> {
        let Some(rx) = self.exit_rx(id) else {
            return Err(ProviderError::UnknownInstance(id));
        };
        let delay = self.state.lock().ready_delay;
        let boot = async {
            tokio::time::sleep(delay).await;
            let (fail, never) = {
                let s = self.state.lock();
                (s.fail_ready.clone(), s.never_ready)
            };
            match fail {
                Some(err) => Err(err),
                None if never => std::future::pending().await,
                None => Ok(()),
            }
        };
        tokio::select! {
            result = boot => result,
            report = exited(rx) => Err(ProviderError::StartFailed {
                reason: report.reason,
                last_log: report.last_log,
            }),
        }
    }

    async fn release(&self, id: InstanceId) -> Result<(), ProviderError> {
        let mut s = self.state.lock();
        s.releases.push(id);
        if s.failing_releases > 0 {
            s.failing_releases -= 1;
            return Err(ProviderError::Backend("release refused".into()));
        }
        s.live.remove(&id);
        Ok(())
    }

    async fn list(&self, deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        let _ = deployment;
        let s = self.state.lock();
        Ok(s.live
            .iter()
            .map(|id| ProvidedInstance {
                id: *id,
                endpoint: None,
                labels: BTreeMap::new(),
            })
            .collect())
    }

    async fn wait_exit(&self, id: InstanceId) -> ExitReport {
        match self.exit_rx(id) {
            Some(rx) => exited(rx).await,
            None => ExitReport {
                reason: "unknown instance".to_owned(),
                last_log: Vec::new(),
            },
        }
    }
}

/// Records the controller's events as short lines (`"died xykemlvy"`).
#[derive(Debug, Default)]
pub struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    /// The events so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

impl EventSink for Recorder {
    fn on_event(&self, _deployment: &str, event: &ControllerEvent) {
        let line = match event {
            ControllerEvent::Creating { instance } => format!("creating {instance}"),
            ControllerEvent::Ready { instance, .. } => format!("ready {instance}"),
            ControllerEvent::StartFailed { instance, error } => {
                format!("start_failed {instance} {}", error.code.code())
            }
            ControllerEvent::Died { instance, .. } => format!("died {instance}"),
            ControllerEvent::Released { instance, .. } => format!("released {instance}"),
            _ => "other".to_owned(),
        };
        self.lines.lock().push(line);
    }
}

/// A deployment capped at `max` instances, idle retention [`RETENTION`], defaults elsewhere.
pub fn config(max: u32) -> DeployConfig {
    DeployConfig::new("speech", "python api.py", RETENTION, max)
}

/// The controller for `config` at `provider`.
pub fn controller(config: DeployConfig, provider: &Arc<FakeProvider>) -> Controller {
    let provider: Arc<dyn GpuProvider> = provider.clone();
    Controller::new(config, provider).unwrap()
}

/// A default-like rule: the first ready instance under the concurrency limit, else wait in the
/// queue and cold-start (or scale out) one instance when none is starting and the cap allows.
pub fn default_route(view: &RouteView) -> Target {
    let limit = view.concurrency_limit();
    let free = view.ready().iter().find(|r| {
        if limit == 0 {
            r.in_flight == 0
        } else {
            r.in_flight < limit
        }
    });
    match free {
        Some(r) => Target::Instance(r.id),
        None => Target::Queue {
            start_instance: view.starting() == 0 && view.has_room(),
        },
    }
}

/// The `scale-out` rule.
pub fn scale_out(_view: &RouteView) -> Target {
    Target::ScaleOut
}

/// Lets every runnable task run until all wait on time or on each other, without moving the
/// paused clock (`yield_now` never auto-advances it).
pub async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Lets every runnable task run, moves the paused clock by `by` in one step, then lets every
/// task due by then run. A timer armed *after* the step counts from the new time, so chained
/// delays (create, then readiness) need `tokio::time::sleep`, which auto-advances in order.
pub async fn advance(by: Duration) {
    settle().await;
    tokio::time::advance(by).await;
    settle().await;
}
