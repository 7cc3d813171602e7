//! Helpers for the local-provider tests: specs for real commands, a guard that kills every
//! recorded process group even when a test fails, and process checks through `/proc`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use autodeploy_core::provider::LABEL_DEPLOYMENT;
use autodeploy_core::{DeployConfig, GpuProvider, InstanceId, InstanceSpec};
use autodeploy_provider::{Local, LocalConfig};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

/// A Python file server on the instance's port: the seed's own example.
pub const HTTP_SERVER: &str = "exec python3 -m http.server {port} --bind 127.0.0.1";

/// A test's provider with its own state directory, and a guard that kills whatever is left.
/// Fields drop in order: the provider, then the guard, then the directory.
pub struct Harness {
    pub local: Local,
    pub cleanup: KillRecorded,
    pub dir: TempDir,
    config: LocalConfig,
}

impl Harness {
    /// A provider with a fresh state directory and a 2 s release grace.
    pub fn new() -> Self {
        Self::with(LocalConfig::default())
    }

    /// A provider with `config`, its state directory replaced by a fresh one and its release
    /// grace set to 2 s.
    pub fn with(config: LocalConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LocalConfig {
            state_dir: Some(state_dir(dir.path())),
            release_grace: Duration::from_secs(2),
            ..config
        };
        Self {
            local: Local::new(config.clone()).expect("provider"),
            cleanup: KillRecorded(state_dir(dir.path())),
            dir,
            config,
        }
    }

    /// Drops the provider without releasing anything, as a crashed gateway would, and starts
    /// a new one on the same state directory.
    pub fn restart(self) -> Self {
        let Self {
            local,
            cleanup,
            dir,
            config,
        } = self;
        drop(local);
        Self {
            local: Local::new(config.clone()).expect("provider after restart"),
            cleanup,
            dir,
            config,
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        state_dir(self.dir.path())
    }
}

/// Kills the process group of every record in a state directory when dropped, so a failed
/// assertion leaks nothing.
pub struct KillRecorded(pub PathBuf);

impl Drop for KillRecorded {
    fn drop(&mut self) {
        kill_recorded(&self.0);
    }
}

/// Where a harness keeps its records inside `root`.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("state")
}

/// SIGKILLs the process group of every record in `dir`.
pub fn kill_recorded(dir: &Path) {
    for pgid in recorded_pgids(dir) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// The process groups recorded in `dir`.
pub fn recorded_pgids(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .filter_map(|v| v.get("pgid")?.as_i64())
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

/// A spec for `command` in deployment `deployment`, with a 10 s start timeout.
pub fn spec(deployment: &str, command: &str) -> InstanceSpec {
    let mut config = DeployConfig::new(deployment, command, Duration::from_secs(60), 5);
    config.start_timeout = Duration::from_secs(10);
    InstanceSpec::from_config(&config, InstanceId::generate())
}

/// Whether `pid` runs (a zombie does not: it is dead, waiting for a parent to reap it).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("");
            !matches!(state, "Z" | "X")
        }
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to stop running; returns whether it did.
pub async fn gone_within(pid: i32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Waits up to 5 s for a log line starting with `prefix`, and returns the rest of it.
pub async fn log_value(local: &Local, id: InstanceId, prefix: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = local
            .logs(id, 1000)
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
        {
            return line.trim().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line starting with {prefix:?}: {:?}",
            local.logs(id, 1000)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pid an instance printed as `pid=N` (commands start with `echo pid=$$`).
pub async fn printed_pid(local: &Local, id: InstanceId) -> i32 {
    log_value(local, id, "pid=")
        .await
        .parse()
        .expect("a pid in the log")
}

/// The deployment label of a listed instance.
pub fn deployment_label(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    labels.get(LABEL_DEPLOYMENT).map(String::as_str)
}
