//! Crash steps: the real `autodeploy` binary, on the local-process provider with a state
//! directory, killed with SIGKILL at one named lifecycle step at a time (create just sent,
//! booting, serving, releasing), then restarted on the same state directory. Within a bounded
//! time no process of the deployment may be left but what the new gateway runs itself, the
//! state directory holds no stale record, and the new gateway serves.
//!
//! Unlike `chaos.rs` (random moments under load), each test waits, through the management
//! API, until the instance is in the step it names before it kills the gateway.
//! `--nocapture` prints how long each restart took to clean up.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::binary::{GatewayProcess, get, status, wait_until_serving, write_config_with};
use support::local::{MarkerGuard, free_port, marked_processes, marker, python_service};

/// How long a restarted gateway may take to leave nothing of the killed one running.
const CLEANUP_WITHIN: Duration = Duration::from_secs(10);

/// The plain start command, with a boot delay of `boot_s` seconds before it serves.
fn http_server_after(boot_s: u32) -> String {
    format!("sleep {boot_s}; exec python3 -m http.server {{port}} --bind 127.0.0.1")
}

/// A service that ignores SIGTERM, as a hung or careless process does: only SIGKILL ends it.
const IGNORES_TERM: &str = r#"
import signal, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Quiet).serve_forever()
"#;

/// How many instances `pids` belong to: their distinct process groups (a `python3` shim may
/// add helper processes to an instance).
fn instances_of(pids: &[i32]) -> usize {
    let groups: std::collections::HashSet<String> = pids
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the `(comm)` field: state, ppid, pgrp.
            let after = stat.rsplit_once(") ")?.1;
            after.split(' ').nth(2).map(str::to_owned)
        })
        .collect();
    groups.len()
}

/// `pid: command line` of each of `pids`, for failure messages.
fn describe(pids: &[i32]) -> Vec<String> {
    pids.iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            format!("{pid}: {}", cmdline.trim_end())
        })
        .collect()
}

/// The command lines of `pid`'s children.
fn children(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| std::fs::read(format!("/proc/{child}/cmdline")).ok())
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Instance records in the provider's state directory.
fn records(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("state"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.ends_with(".json") && !name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// A blocking HTTP/1.1 request with an empty body: status and the whole answer.
fn request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some((answer.get(9..12)?.parse().ok()?, answer))
}

/// The value of header `name` (lower case) in a raw answer.
fn header(answer: &str, name: &str) -> Option<String> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// The management API's view of deployment `files` (compact JSON).
fn deployment_json(port: u16) -> String {
    request(port, "GET", "/api/v1/deployments/files")
        .map(|(_, answer)| answer)
        .unwrap_or_default()
}

/// Polls until `check` holds, for at most `within`.
fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let began = Instant::now();
    while !check() {
        assert!(began.elapsed() < within, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A client request in a thread; it fails (status 0) when the gateway dies under it.
fn request_in_background(port: u16, path: &'static str) -> JoinHandle<u16> {
    std::thread::spawn(move || status(port, path, None))
}

/// SIGKILLs the gateway and reaps it.
fn crash(gateway: &mut GatewayProcess) {
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

/// What a restart after a crash showed.
struct Restart {
    gateway: GatewayProcess,
    /// From spawning the new gateway until no process of the old one was left.
    cleanup: Duration,
    /// From spawning the new gateway until it served `/healthz`.
    serving: Duration,
}

/// Restarts the gateway on the same config and state directory and checks that, within
/// [`CLEANUP_WITHIN`], nothing the killed gateway left runs and no record is left for it.
fn restart_and_check(step: &str, dir: &Path, config: &Path, port: u16, marker: &str) -> Restart {
    let began = Instant::now();
    let gateway = GatewayProcess::spawn(config, Stdio::null());
    // Nothing new is started before the gateway serves (it reconciles first), so every
    // marked process until then is a leftover.
    let cleanup = loop {
        let left = marked_processes(marker);
        if left.is_empty() {
            break began.elapsed();
        }
        assert!(
            began.elapsed() < CLEANUP_WITHIN,
            "{step}: processes of the killed gateway left after {CLEANUP_WITHIN:?}: {:#?}",
            describe(&left)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    wait_until_serving(port);
    let serving = began.elapsed();
    // The provider's records equal the gateway's: none, before the first request.
    assert_eq!(records(dir), Vec::<String>::new(), "{step}: stale records");
    eprintln!(
        "{step}: orphans gone {cleanup:?} after the restart began; serving after {serving:?}"
    );
    Restart {
        gateway,
        cleanup,
        serving,
    }
}

/// The new gateway serves from one fresh instance of its own.
fn serves_fresh(step: &str, port: u16, marker: &str, path: &str) -> String {
    let (code, answer) = get(port, path, None).expect("an answer");
    assert_eq!(code, 200, "{step}: {answer}");
    let running = marked_processes(marker);
    assert_eq!(
        instances_of(&running),
        1,
        "{step}: {:#?}",
        describe(&running)
    );
    answer
}

/// A graceful stop of the new gateway leaves nothing running.
///
/// Allowed a moment: a child the killed gateway had forked but not yet exec'd carries no
/// marker until its exec, which a loaded machine may delay past the restart's check; it then
/// finds its gate closed (its parent is gone) and exits without running the command. An
/// instance left running would still be there after the wait.
fn stops_cleanly(step: &str, mut gateway: GatewayProcess, marker: &str) {
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{step}: {exit:?}");
    let began = Instant::now();
    loop {
        let left = marked_processes(marker);
        if left.is_empty() {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{step}: left after the graceful stop: {:#?}",
            describe(&left)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_while_an_instance_boots() {
    let step = "booting";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("crash-booting");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config_with(
        dir.path(),
        port,
        &marker,
        &http_server_after(2),
        r#"release_grace = "1s""#,
    );
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    wait_until_serving(port);

    let client = request_in_background(port, "/d/files/");
    // Created (its record written, its gate open) and booting: `sleep 2` runs.
    wait_for("the instance is starting", Duration::from_secs(5), || {
        deployment_json(port).contains(r#""state":"starting""#)
    });
    let booting = marked_processes(&marker);
    assert_eq!(instances_of(&booting), 1, "{:#?}", describe(&booting));
    assert!(
        describe(&booting).iter().any(|p| p.contains("sleep")),
        "{:#?}",
        describe(&booting)
    );
    crash(&mut gateway);
    assert_eq!(
        client.join().unwrap(),
        0,
        "the request died with the gateway"
    );
    assert!(!marked_processes(&marker).is_empty(), "the orphan boots on");

    let restart = restart_and_check(step, dir.path(), &config, port, &marker);
    serves_fresh(step, port, &marker, "/d/files/");
    stops_cleanly(step, restart.gateway, &marker);
}

#[test]
fn killed_while_an_instance_serves() {
    let step = "serving";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("crash-serving");
    let _guard = MarkerGuard(marker.clone());
    let service = python_service(dir.path());
    let config = write_config_with(
        dir.path(),
        port,
        &marker,
        &service,
        r#"release_grace = "1s""#,
    );
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    wait_until_serving(port);
    let (code, answer) = get(port, "/d/files/", None).expect("an answer");
    assert_eq!(code, 200, "{answer}");
    let old_pid = answer.split("\r\n\r\n").nth(1).unwrap().to_owned();

    // A slow request in flight when the gateway dies.
    let client = request_in_background(port, "/d/files/sleep?ms=5000");
    wait_for(
        "the slow request is in flight",
        Duration::from_secs(5),
        || deployment_json(port).contains(r#""in_flight":1"#),
    );
    crash(&mut gateway);
    assert_eq!(
        client.join().unwrap(),
        0,
        "the request died with the gateway"
    );
    assert_eq!(instances_of(&marked_processes(&marker)), 1, "the orphan");

    let restart = restart_and_check(step, dir.path(), &config, port, &marker);
    let answer = serves_fresh(step, port, &marker, "/d/files/");
    assert_ne!(
        answer.split("\r\n\r\n").nth(1).unwrap(),
        old_pid,
        "a fresh instance answers"
    );
    stops_cleanly(step, restart.gateway, &marker);
}

#[test]
fn killed_while_an_instance_is_released() {
    let step = "releasing";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("crash-releasing");
    let _guard = MarkerGuard(marker.clone());
    let script = dir.path().join("ignores_term.py");
    std::fs::write(&script, IGNORES_TERM).unwrap();
    let config = write_config_with(
        dir.path(),
        port,
        &marker,
        &format!("exec python3 {} {{port}}", script.display()),
        r#"release_grace = "5s""#,
    );
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    wait_until_serving(port);
    let (code, answer) = get(port, "/d/files/", None).expect("an answer");
    assert_eq!(code, 200, "{answer}");
    let id = header(&answer, "deploy-route-target").expect("Deploy-Route-Target");
    let serving = marked_processes(&marker);
    assert_eq!(instances_of(&serving), 1, "{:#?}", describe(&serving));

    let (code, answer) = request(
        port,
        "DELETE",
        &format!("/api/v1/deployments/files/instances/{id}"),
    )
    .expect("an answer");
    assert_eq!(code, 202, "{answer}");
    wait_for("the instance is releasing", Duration::from_secs(5), || {
        deployment_json(port).contains(r#""state":"releasing""#)
    });
    // SIGTERM was sent and ignored; the provider waits out its 5 s grace.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        marked_processes(&marker),
        serving,
        "the instance ignores SIGTERM"
    );
    crash(&mut gateway);
    assert_eq!(marked_processes(&marker), serving, "the orphan");

    let restart = restart_and_check(step, dir.path(), &config, port, &marker);
    // The new gateway sends SIGTERM again, waits its grace, then SIGKILLs: bounded.
    assert!(
        restart.cleanup < Duration::from_secs(5) + Duration::from_secs(3),
        "{:?}",
        restart.cleanup
    );
    assert!(restart.serving >= restart.cleanup);
    serves_fresh(step, port, &marker, "/d/files/");
    // This instance ignores SIGTERM too: a graceful stop would wait out the grace again, so
    // the gateway is killed on drop and `_guard` kills the instance.
}

#[test]
fn killed_right_after_the_create_call_began() {
    let step = "create sent";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("crash-create");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config_with(
        dir.path(),
        port,
        &marker,
        &http_server_after(5),
        r#"release_grace = "1s""#,
    );
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    wait_until_serving(port);

    let gateway_pid = gateway.0.as_ref().unwrap().id();
    let client = request_in_background(port, "/d/files/");
    // The first process of the instance, the provider's `sh`, found among the gateway's
    // children (cheaper to poll than every process's environment), and the gateway killed at
    // once: the shell most often still waits at its gate (for its record to be written, or
    // for the line that lets its command run); otherwise the command has just begun.
    let began = Instant::now();
    let first = loop {
        if let Some(shell) = children(gateway_pid)
            .into_iter()
            // Past `fork`, before `exec`, a child still shows the gateway's command line.
            .find(|cmdline| cmdline.starts_with("sh -c "))
        {
            break shell;
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "no instance began"
        );
    };
    crash(&mut gateway);
    let at_gate = first.contains("IFS= read -r _");
    eprintln!("{step}: killed with the instance's shell at its gate: {at_gate} ({first:?})");
    assert_eq!(
        client.join().unwrap(),
        0,
        "the request died with the gateway"
    );

    let restart = restart_and_check(step, dir.path(), &config, port, &marker);
    stops_cleanly(step, restart.gateway, &marker);
}
