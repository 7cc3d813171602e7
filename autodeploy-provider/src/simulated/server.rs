//! One simulated instance: a real HTTP/1.1 server on a loopback port, run as a tokio task,
//! that can be stopped gracefully (a crash after N requests), abruptly (a kill) or released.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use autodeploy_core::{ExitReport, InstanceId};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until};

use super::handler;

/// Log lines kept per instance.
const LOG_CAPACITY: usize = 200;

/// Why the server should stop, in order of severity: a later, more severe reason overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    /// Keep serving.
    Running,
    /// Stop accepting, finish the responses in progress, then exit with this reason.
    Crash(String),
    /// Drop every connection at once and exit with this reason.
    Kill(String),
    /// Drop every connection at once; the instance was released, not crashed.
    Release,
}

impl Stop {
    fn severity(&self) -> u8 {
        match self {
            Self::Running => 0,
            Self::Crash(_) => 1,
            Self::Kill(_) => 2,
            Self::Release => 3,
        }
    }
}

/// What one instance's server and its request handler share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) id: InstanceId,
    /// Requests before this moment are answered `503`: the instance is still booting.
    pub(super) ready_at: Instant,
    pub(super) response_delay: Duration,
    pub(super) crash_after: Option<u64>,
    /// Requests answered since ready (the booting `503`s excluded).
    pub(super) served: AtomicU64,
    stop: watch::Sender<Stop>,
    exit: watch::Sender<Option<ExitReport>>,
    log: Mutex<VecDeque<String>>,
}

impl Shared {
    /// Asks the server to stop; ignored when an equally or more severe stop was asked before.
    pub(super) fn request_stop(&self, stop: Stop) {
        self.stop.send_if_modified(|current| {
            let escalates = stop.severity() > current.severity();
            if escalates {
                *current = stop;
            }
            escalates
        });
    }

    /// Whether the server still takes requests.
    pub(super) fn is_running(&self) -> bool {
        *self.stop.borrow() == Stop::Running
    }

    pub(super) fn log(&self, line: impl Into<String>) {
        let mut log = self.log.lock();
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(line.into());
    }

    pub(super) fn last_log(&self, lines: usize) -> Vec<String> {
        let log = self.log.lock();
        log.iter()
            .skip(log.len().saturating_sub(lines))
            .cloned()
            .collect()
    }

    /// Records why the instance stopped; the first report wins.
    fn exited(&self, reason: String) {
        self.log(reason.clone());
        let last_log = self.last_log(LOG_CAPACITY);
        self.exit.send_if_modified(|report| {
            let first = report.is_none();
            if first {
                *report = Some(ExitReport { reason, last_log });
            }
            first
        });
    }

    /// Resolves with the exit report once the instance has stopped.
    pub(super) fn exit_watch(&self) -> watch::Receiver<Option<ExitReport>> {
        self.exit.subscribe()
    }
}

/// How one instance behaves, decided when it is created.
#[derive(Debug)]
pub(super) struct Behaviour {
    pub(super) ready_at: Instant,
    pub(super) response_delay: Duration,
    pub(super) crash_after: Option<u64>,
    /// Exit at `ready_at` instead of becoming ready: a start that fails during boot.
    pub(super) fail_at_boot: bool,
}

/// A running simulated instance. Dropping it aborts the server task and its connections.
#[derive(Debug)]
pub(super) struct InstanceServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl InstanceServer {
    /// Binds `127.0.0.1:0` and starts serving. Must be called inside a tokio runtime.
    pub(super) fn start(id: InstanceId, behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let shared = Arc::new(Shared {
            id,
            ready_at: behaviour.ready_at,
            response_delay: behaviour.response_delay,
            crash_after: behaviour.crash_after,
            served: AtomicU64::new(0),
            stop,
            exit: watch::channel(None).0,
            log: Mutex::new(VecDeque::new()),
        });
        shared.log(format!("instance {id} listening on {addr}, booting"));
        let task = tokio::spawn(run(
            listener,
            Arc::clone(&shared),
            stop_rx,
            behaviour.fail_at_boot,
        ));
        Ok(Self { shared, addr, task })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Requests served since ready.
    pub(super) fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Stops the server for good and returns once its port is closed and its connections
    /// are gone.
    pub(super) async fn release(mut self) {
        self.shared.request_stop(Stop::Release);
        // The task never panics; an error here means it was aborted, which is as good.
        let _ = (&mut self.task).await;
        self.shared.exited("released".to_owned());
    }
}

impl Drop for InstanceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server task: accepts until told to stop, then winds down as the stop says.
async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Stop>,
    fail_at_boot: bool,
) {
    let mut connections = JoinSet::new();
    let (drain, drain_rx) = watch::channel(false);
    let mut boot_failure_due = fail_at_boot;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow_and_update() != Stop::Running {
                    break;
                }
            }
            () = sleep_until(shared.ready_at), if boot_failure_due => {
                boot_failure_due = false;
                shared.request_stop(Stop::Kill(
                    "exited during boot (simulated start failure)".to_owned(),
                ));
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, Arc::clone(&shared), drain_rx.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(instance = %shared.id, %err, "simulated instance accept failed");
                    sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let mode = stop.borrow_and_update().clone();
    let reason = match mode {
        Stop::Crash(reason) => {
            // Let the responses in progress finish, unless a kill or release comes first.
            let _ = drain.send(true);
            loop {
                tokio::select! {
                    biased;
                    changed = stop.changed() => {
                        if changed.is_err() || !matches!(*stop.borrow_and_update(), Stop::Crash(_)) {
                            break;
                        }
                    }
                    next = connections.join_next() => if next.is_none() { break },
                }
            }
            reason
        }
        Stop::Kill(reason) => reason,
        Stop::Release | Stop::Running => String::new(),
    };
    connections.shutdown().await;
    let released = *stop.borrow() == Stop::Release;
    if !released {
        tracing::info!(instance = %shared.id, %reason, "simulated instance stopped");
        shared.exited(reason);
    }
}

/// Serves one connection until it closes, or until the server drains: then the response in
/// progress is finished and the connection closed.
async fn connection(stream: TcpStream, shared: Arc<Shared>, mut drain: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |request| handler::handle(Arc::clone(&shared), request))
    };
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.wait_for(|draining| *draining) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
