//! The `autodeploy` binary as a user runs it: `check`, `serve` with the local-process
//! provider, a graceful stop that releases everything, and a SIGKILL followed by a restart
//! that finds and releases what the killed gateway left running.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::binary::{BIN, GatewayProcess, get, status, wait_until_serving, write_config};
use support::local::{MarkerGuard, free_port, marked_processes, marker};

/// Starts the gateway and waits until it serves.
fn start(config: &Path, port: u16, stdout: Stdio) -> GatewayProcess {
    let gateway = GatewayProcess::spawn(config, stdout);
    wait_until_serving(port);
    gateway
}

/// Waits until no process carries `marker` any more.
fn wait_until_gone(marker: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked_processes(marker).is_empty() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_reports_every_problem_with_its_field() {
    let ok = Command::new(BIN)
        .args(["check", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/autodeploy.toml"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (2 deployments)"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    // Meaning problems and parse-level ones (unknown key, bad value, missing field) alike.
    std::fs::write(
        &bad,
        "[gateway]\nlisten_adr = \"127.0.0.1:1\"\n\n[[deployment]]\nid = \"Bad\"\n\
         start_command = \"\"\nidle_retention = \"0s\"\nmax_instances = 0\n\n\
         [[deployment]]\nid = \"b\"\nstart_command = \"true\"\nmax_instances = -1\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().skip(1).map(str::trim).collect();
    let expected = [
        "line 2: gateway.listen_adr: unknown field",
        "line 5: deployment[0].id: ",
        "line 6: deployment[0].start_command: ",
        "line 7: deployment[0].idle_retention: ",
        "line 8: deployment[0].max_instances: ",
        "line 10: deployment[1].idle_retention: missing field",
        "line 13: deployment[1].max_instances: invalid value",
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(line.starts_with(expected), "{expected:?} in {err}");
    }
}

#[test]
fn serve_forwards_then_sigterm_releases_every_instance_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("graceful");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config(dir.path(), port, &marker);
    let mut gateway = start(&config, port, Stdio::piped());

    let (code, answer) = get(port, "/d/files/", None).expect("an answer");
    assert_eq!(code, 200, "{answer}");
    // python answers in HTTP/1.0; the client asked in HTTP/1.1 and is answered in it.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("deploy-route-target: ")
    );
    assert_eq!(status(port, "/d/files/", Some("scale-out")), 200);
    let (code, answer) = get(port, "/d/files/", Some("scale-out")).expect("an answer");
    assert_eq!(code, 429);
    assert!(answer.ends_with(r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#));
    assert_eq!(marked_processes(&marker).len(), 2, "two python instances");

    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let logs: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("every instance released")),
        "{logs:#?}"
    );
    assert_eq!(
        marked_processes(&marker),
        Vec::<i32>::new(),
        "no instance outlives the gateway"
    );
}

#[test]
fn a_restart_after_sigkill_releases_what_the_killed_gateway_left() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("restart");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config(dir.path(), port, &marker);
    let mut gateway = start(&config, port, Stdio::null());
    assert_eq!(status(port, "/d/files/", None), 200);
    assert_eq!(marked_processes(&marker).len(), 1);

    // A crash: the instance keeps running (and billing) without its gateway.
    drop(gateway);
    assert_eq!(
        marked_processes(&marker).len(),
        1,
        "the orphan survives the crash"
    );

    gateway = start(&config, port, Stdio::null());
    wait_until_gone(&marker, "the restarted gateway did not release the orphan");
    // And it serves again, from a fresh instance.
    assert_eq!(status(port, "/d/files/", None), 200);
    assert_eq!(marked_processes(&marker).len(), 1);
    drop(gateway);
}

#[test]
fn a_restart_releases_instances_of_deployments_no_longer_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("removed");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config(dir.path(), port, &marker);
    let gateway = start(&config, port, Stdio::null());
    assert_eq!(status(port, "/d/files/", None), 200);
    drop(gateway);
    assert_eq!(marked_processes(&marker).len(), 1);

    // The deployment is renamed while the gateway is down: its old instance has no owner.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("id = \"files\"", "id = \"renamed\"");
    std::fs::write(&config, text).unwrap();
    let _gateway = start(&config, port, Stdio::null());
    wait_until_gone(&marker, "the unowned instance was not released");
    assert_eq!(status(port, "/d/files/", None), 404);
    assert_eq!(status(port, "/d/renamed/", None), 200);
}

#[test]
fn one_worker_thread_serves_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("one-worker");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config(dir.path(), port, &marker);

    let refused = Command::new(BIN)
        .args(["serve", "--worker-threads", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--worker-threads"), "{err}");

    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("AUTODEPLOY_WORKER_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gateway = GatewayProcess(Some(child));
    wait_until_serving(port);
    let (code, answer) = get(port, "/d/files/", None).expect("an answer");
    assert_eq!(code, 200, "{answer}");
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    wait_until_gone(&marker, "an instance outlived the one-worker gateway");
}

#[test]
fn the_per_core_runtime_serves_on_each_thread_and_sigterm_releases_every_instance() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("per-core");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config(dir.path(), port, &marker);

    let child = Command::new(BIN)
        .args([
            "serve",
            "--runtime",
            "per-core",
            "--worker-threads",
            "3",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gateway = GatewayProcess(Some(child));
    wait_until_serving(port);
    // Each request on a new connection: the kernel spreads them over the three listeners,
    // and whichever thread accepts one answers it from the same instance.
    for _ in 0..12 {
        let (code, answer) = get(port, "/d/files/", None).expect("an answer");
        assert_eq!(code, 200, "{answer}");
    }
    assert_eq!(marked_processes(&marker).len(), 1, "one instance");
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    wait_until_gone(&marker, "an instance outlived the per-core gateway");
}

#[test]
fn help_names_the_environment_variables_without_a_dangling_equals_sign() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env_remove("AUTODEPLOY_WORKER_THREADS")
        .env_remove("AUTODEPLOY_RUNTIME")
        .env_remove("AUTODEPLOY_ADMIN_TOKEN")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("[env: AUTODEPLOY_WORKER_THREADS]"), "{help}");
    assert!(help.contains("[env: AUTODEPLOY_ADMIN_TOKEN]"), "{help}");
    assert!(help.contains("[env: AUTODEPLOY_RUNTIME]"), "{help}");
    assert!(!help.contains("=]"), "{help}");
}

#[test]
fn a_failed_start_is_one_log_line_logged_once_and_the_exit_follows_the_final_release() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("one-line");
    let _guard = MarkerGuard(marker.clone());
    let config = support::binary::write_config_with(
        dir.path(),
        port,
        &marker,
        "echo loading; echo no such model >&2; exit 3",
        "",
    );
    let mut gateway = start(&config, port, Stdio::piped());
    let (code, answer) = get(port, "/d/files/", None).expect("an answer");
    assert_eq!(code, 502, "{answer}");

    let mut child = gateway.take();
    let stdout = child.stdout.take().unwrap();
    // Each line with the moment it arrived, read as the gateway writes them.
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|line| (Instant::now(), line))
            .collect::<Vec<_>>()
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exited_at = loop {
        if child.try_wait().unwrap().is_some() {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    };
    let lines = reader.join().unwrap();
    let failed: Vec<&String> = lines
        .iter()
        .map(|(_, line)| line)
        .filter(|line| line.contains("failed to start"))
        .collect();
    assert_eq!(failed.len(), 1, "logged once: {lines:#?}");
    // Its stdout and stderr lines, in whichever order they were read, on the event's line.
    assert!(
        failed[0].contains("last log lines:\\n")
            && failed[0].contains("loading")
            && failed[0].contains("no such model"),
        "the instance's log lines stay on the event's line: {}",
        failed[0]
    );
    let (released_at, _) = lines
        .iter()
        .find(|(_, line)| line.contains("every instance released"))
        .expect("the final line");
    let lag = exited_at.saturating_duration_since(*released_at);
    assert!(
        lag < Duration::from_millis(500),
        "exit {lag:?} after the final release"
    );
}

#[test]
fn a_fatal_error_is_printed_once_without_repeating_its_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &addr])
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("ERROR"), "not also logged: {stdout}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}
