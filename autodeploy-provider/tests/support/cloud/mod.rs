//! Fakes of the clouds' HTTP APIs (RunPod REST v1, Glows.ai SDK v1) on loopback, following
//! the documented routes, fields and states, recording every call so tests assert exact
//! counts. An instance's "container" is a real local process (the local provider runs its
//! start command), reached on a free loopback port that stands in for the cloud's public
//! address: the in-container port in the command is rewritten to that port.
//!
//! Shared by the provider's tests and, through `#[path]`, the gateway's.

#![allow(dead_code, unreachable_pub)]

pub mod glows;
pub mod promises;
pub mod runpod;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{DeployConfig, GpuProvider, InstanceId, InstanceSpec};
use autodeploy_provider::{Local, LocalConfig};
use parking_lot::Mutex;

/// The key the fakes accept.
pub const GOOD_KEY: &str = "test-key-0123456789-SECRET";

/// A kind of call: method, path (a `*` ends a prefix), query prefix.
pub type ApiCall = (&'static str, &'static str, &'static str);

/// One call a fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query, if any.
    pub query: String,
    /// What the fake answered (HTTP status).
    pub status: u16,
}

/// Faults a test arms before the calls they hit; each counts down as it is used.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The next N creates answer 500 without creating anything.
    pub create_500: u32,
    /// The next N creates create the instance, then answer only after this long (longer
    /// than the client's timeout: the answer is lost).
    pub create_lost: u32,
    /// How long a lost answer is held back.
    pub lost_delay: Duration,
    /// The next N deletes (cancels) answer 500 and do nothing.
    pub delete_500: u32,
    /// The next N requests, whatever they are, answer 429 with `Retry-After: 1`.
    pub rate_limit: u32,
    /// New instances report no address for their first N reads.
    pub address_after_reads: u32,
    /// New instances stay queued (Glows `SchedQueued`) for their first N reads.
    pub queued_reads: u32,
    /// The next create answers HTTP 200 with this non-zero code and message (Glows) or
    /// HTTP 400 with this message (RunPod).
    pub create_error: Option<(i64, String)>,
    /// Deleted instances keep reporting "running" for N reads before they are gone.
    pub gone_after_reads: u32,
}

/// An instance in a fake cloud.
#[derive(Debug, Clone)]
pub struct FakeInstance {
    /// The cloud's id.
    pub id: String,
    /// Name (RunPod) or meta key (Glows).
    pub key: String,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    /// The in-container service port.
    pub port: u16,
    /// `running`, `queued`, `exited`, `terminated`.
    pub status: &'static str,
    /// The local process serving it, and its loopback port.
    pub process: Option<(InstanceId, u16)>,
    /// Reads left before the address shows.
    pub address_in: u32,
    /// Reads left before it leaves the queue.
    pub queued_in: u32,
    /// Reads left before a deleted instance reports gone.
    pub gone_in: u32,
}

/// What a fake cloud holds; tests read it through [`FakeCloud`].
#[derive(Debug, Default)]
pub struct FakeState {
    pub calls: Vec<Call>,
    pub faults: Faults,
    pub instances: BTreeMap<String, FakeInstance>,
    /// Instances actually created (what would be billed).
    pub created: u32,
    /// Deletes that took effect.
    pub deleted: u32,
    next_id: u32,
}

impl FakeState {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:06x}", 0x1000 + self.next_id)
    }
}

/// A fake cloud on loopback: its API address, its state and the processes it runs.
#[derive(Clone)]
pub struct FakeCloud {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    pub local: Arc<Local>,
}

impl FakeCloud {
    async fn serve(router: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (addr, task)
    }

    /// Arms faults.
    pub fn faults(&self, set: impl FnOnce(&mut Faults)) {
        set(&mut self.state.lock().faults);
    }

    /// How many calls matched `method` and `path` (a `*` ends a prefix match).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.state
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method && path_matches(path, &c.path))
            .count()
    }

    /// How many calls matched `call`: method, path (a `*` ends a prefix) and query prefix.
    pub fn calls(&self, call: ApiCall) -> usize {
        let (method, path, query) = call;
        self.state
            .lock()
            .calls
            .iter()
            .filter(|c| {
                c.method == method && path_matches(path, &c.path) && c.query.starts_with(query)
            })
            .count()
    }

    /// Every call, in order, as `METHOD path -> status`.
    pub fn log(&self) -> Vec<String> {
        self.state
            .lock()
            .calls
            .iter()
            .map(|c| {
                format!(
                    "{} {}{} -> {}",
                    c.method,
                    c.path,
                    if c.query.is_empty() {
                        String::new()
                    } else {
                        format!("?{}", c.query)
                    },
                    c.status
                )
            })
            .collect()
    }

    /// Instances created (what would be billed).
    pub fn created(&self) -> u32 {
        self.state.lock().created
    }

    /// Deletes that took effect.
    pub fn deleted(&self) -> u32 {
        self.state.lock().deleted
    }

    /// Instances still running (or queued): what is still billed.
    pub fn live(&self) -> Vec<String> {
        self.state
            .lock()
            .instances
            .values()
            .filter(|i| matches!(i.status, "running" | "queued"))
            .map(|i| i.id.clone())
            .collect()
    }

    /// Ends an instance as the cloud would by itself (its command died): the process is
    /// killed and the instance reports `exited`.
    pub async fn kill(&self, id: &str) {
        let process = {
            let mut st = self.state.lock();
            let instance = st.instances.get_mut(id).expect("known instance");
            instance.status = "exited";
            instance.process.take()
        };
        if let Some((pid, _)) = process {
            let _ = self.local.release(pid).await;
        }
    }

    /// Records a call.
    fn record(&self, method: &str, path: &str, query: &str, status: u16) {
        self.state.lock().calls.push(Call {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            status,
        });
    }

    /// Takes one use of the rate-limit fault, if armed.
    fn rate_limited(&self) -> bool {
        let mut st = self.state.lock();
        if st.faults.rate_limit > 0 {
            st.faults.rate_limit -= 1;
            true
        } else {
            false
        }
    }

    /// Starts the "container": the command through the local provider on a free port.
    async fn start_process(
        &self,
        command: &str,
        port: u16,
        env: &BTreeMap<String, String>,
    ) -> Result<(InstanceId, u16), String> {
        let command = command.replace(&port.to_string(), "{port}");
        let mut config = DeployConfig::new("fake-cloud", &command, Duration::from_secs(600), 100);
        config.env = env.clone();
        config.env.remove("PORT");
        let id = InstanceId::generate();
        let spec = InstanceSpec::from_config(&config, id);
        let endpoint = self.local.create(spec).await.map_err(|e| e.to_string())?;
        Ok((id, endpoint.port))
    }

    /// Stops an instance's process and marks it terminated (or terminating, for the
    /// `gone_after_reads` fault).
    async fn terminate(&self, id: &str) {
        let process = {
            let mut st = self.state.lock();
            let gone_after = st.faults.gone_after_reads;
            let process = {
                let Some(instance) = st.instances.get_mut(id) else {
                    return;
                };
                if !matches!(instance.status, "running" | "queued" | "exited") {
                    return;
                }
                instance.gone_in = gone_after;
                instance.status = if gone_after > 0 {
                    "terminating"
                } else {
                    "terminated"
                };
                instance.process.take()
            };
            st.deleted += 1;
            process
        };
        if let Some((pid, _)) = process {
            let _ = self.local.release(pid).await;
        }
    }

    /// Counts a read of an instance: the delayed address, queue and "gone" count down.
    fn read(&self, id: &str) -> Option<FakeInstance> {
        let mut st = self.state.lock();
        let instance = st.instances.get_mut(id)?;
        instance.address_in = instance.address_in.saturating_sub(1);
        if instance.queued_in > 0 {
            instance.queued_in -= 1;
        } else if instance.status == "queued" {
            instance.status = "running";
        }
        if instance.status == "terminating" {
            if instance.gone_in == 0 {
                instance.status = "terminated";
            } else {
                instance.gone_in -= 1;
            }
        }
        Some(instance.clone())
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// A local provider for the fakes' processes: killed with the fake.
fn processes() -> Arc<Local> {
    Arc::new(
        Local::new(LocalConfig {
            release_grace: Duration::from_secs(2),
            ..LocalConfig::default()
        })
        .expect("local provider"),
    )
}

/// A deployment for tests: `python3 -m http.server` on the service port 8080.
pub fn deployment(id: &str) -> DeployConfig {
    let mut config = DeployConfig::new(
        id,
        "exec python3 -m http.server {port} --bind 127.0.0.1",
        Duration::from_secs(600),
        4,
    );
    config.image = Some("python:3.12-slim".into());
    config.gpu.kind = "NVIDIA GeForce RTX 4090".into();
    config.gpu.count = 1;
    config.start_timeout = Duration::from_secs(20);
    config.readiness.interval = Duration::from_millis(50);
    config
}

/// The spec of a new instance of `config`, owned by `owner`.
pub fn spec(config: &DeployConfig) -> InstanceSpec {
    let mut spec = InstanceSpec::from_config(config, InstanceId::generate());
    spec.labels.insert(
        autodeploy_core::provider::LABEL_OWNER.into(),
        "autodeploy".into(),
    );
    spec
}
