//! Operating-system processes: a gated spawn in a new process group, signals to the whole
//! group, and telling whether a recorded process still lives.
//!
//! ## The gate
//!
//! A process must never run unrecorded: if the gateway were killed between spawning it and
//! writing its pid to the state directory, nobody could find it again. So the shell first
//! reads one line from a pipe we hold, and only then runs the command. We spawn, record the
//! pid, then open the gate by writing that line. If the gateway dies before that, the pipe
//! closes, `read` fails and the shell exits without ever running the command.
//!
//! ## Identity
//!
//! A pid may be recycled after its process dies. A record therefore keeps the process's
//! start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot), and a recorded
//! process counts as alive only while a process with that pid, that start time and that
//! process group exists and is not a zombie. Where `/proc` is missing, `kill(pid, 0)` is all
//! we can ask.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, Command};

/// The shell script every instance runs: wait at the gate, then become `sh -c <command>`
/// with stdin on `/dev/null`. Exit status 125 means the gate never opened.
const GATED: &str = r#"IFS= read -r _ || exit 125; exec sh -c "$1" </dev/null"#;

/// What to run, and how.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// The command for `sh -c`, `{port}` already substituted.
    pub(crate) command: &'a str,
    /// Working directory, if any.
    pub(crate) workdir: Option<&'a Path>,
    /// Variables added to the gateway's environment.
    pub(crate) env: BTreeMap<String, String>,
}

/// A spawned process, held at its gate.
#[derive(Debug)]
pub(crate) struct Gated {
    /// The child, for waiting on it and reaping it.
    pub(crate) child: Child,
    /// Its pid, which is also its process group id.
    pub(crate) pid: i32,
    /// Its start time, see the module docs.
    pub(crate) start_ticks: Option<u64>,
    gate: ChildStdin,
}

/// Spawns `launch` in a new process group, with stdout and stderr piped, stopped at the gate.
pub(crate) fn spawn(launch: Launch<'_>) -> io::Result<Gated> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(GATED)
        .arg("autodeploy-instance")
        .arg(launch.command)
        .envs(launch.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Killing on drop is the provider's decision (see `Local`'s docs), not tokio's.
        .kill_on_drop(false);
    if let Some(dir) = launch.workdir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
    let gate = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("spawned process has no stdin"))?;
    Ok(Gated {
        start_ticks: start_ticks(pid),
        child,
        pid,
        gate,
    })
}

impl Gated {
    /// Lets the command run. Synchronous on purpose: an `await` here would be a point where a
    /// cancelled create could open the gate and then forget the child. Three bytes into an
    /// empty pipe never block.
    pub(crate) fn open(self) -> io::Result<Child> {
        let mut gate = std::fs::File::from(self.gate.into_owned_fd()?);
        gate.write_all(b"go\n")?;
        Ok(self.child)
    }
}

/// Sends `signal` to every process in the group `pgid`. A group that no longer exists is not
/// an error.
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => tracing::warn!(pgid, %signal, %err, "signalling a process group failed"),
    }
}

/// Whether the process `pid` started at `start_ticks` still runs (zombies do not count).
pub(crate) fn process_alive(pid: i32, start_ticks: Option<u64>) -> bool {
    match read_stat(pid) {
        Some(stat) => {
            !stat.is_zombie() && (start_ticks.is_none() || stat.start_ticks == start_ticks)
        }
        None if Path::new("/proc/self/stat").exists() => false,
        None => kill(Pid::from_raw(pid), None).is_ok(),
    }
}

/// Whether any process (zombies aside) is left in the group `pgid`.
pub(crate) fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killpg(Pid::from_raw(pgid), None).is_ok();
    };
    // A cheap first answer: no process at all in the group.
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .any(|stat| stat.pgrp == Some(pgid) && !stat.is_zombie())
}

/// The process group of `pid`; `None` without `/proc` or when it is gone.
pub(crate) fn process_group(pid: i32) -> Option<i32> {
    read_stat(pid)?.pgrp
}

/// The start time of `pid`, see the module docs; `None` without `/proc`.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    read_stat(pid)?.start_ticks
}

/// Why a process ended, for people.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(sig) => format!("killed by signal {signal} ({sig})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => format!("ended ({status})"),
    }
}

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug)]
struct Stat {
    state: char,
    pgrp: Option<i32>,
    start_ticks: Option<u64>,
}

impl Stat {
    fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn read_stat(pid: i32) -> Option<Stat> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&raw)
}

fn parse_stat(raw: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &raw[raw.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2).and_then(|f| f.parse().ok()),
        start_ticks: fields.get(19).and_then(|f| f.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_parentheses() {
        let raw = "4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                   987654 1000 10 18446744073709551615";
        let stat = parse_stat(raw).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, Some(4242));
        assert_eq!(stat.start_ticks, Some(987654));
    }

    #[test]
    fn this_process_is_alive_with_its_start_time() {
        let me = std::process::id() as i32;
        let ticks = start_ticks(me);
        assert!(process_alive(me, ticks));
        if let Some(t) = ticks {
            assert!(!process_alive(me, Some(t + 1)));
        }
    }
}
