//! The `autodeploy` binary as a user runs it: `check`, `serve` with the local-process
//! provider, a graceful stop that releases everything, and a SIGKILL followed by a restart
//! that finds and releases what the killed gateway left running.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_autodeploy");

/// A gateway process, killed on drop (the test failed), and processes carrying `marker` in
/// their environment, killed on drop too, so nothing outlives the test.
struct Gateway {
    child: Option<Child>,
    marker: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in marked_processes(&self.marker) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Pids of live processes whose environment holds `marker`.
fn marked_processes(marker: &str) -> Vec<i32> {
    let needle = format!("AUTODEPLOY_TEST_MARKER={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Zombies have no environment left to read; they are not running anyway.
            !state.contains(") Z ") && environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, port: u16, marker: &str) -> std::path::PathBuf {
    let path = dir.join("autodeploy.toml");
    let config = format!(
        r#"
[gateway]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
drain_timeout = "5s"

[[deployment]]
id = "files"
start_command = "exec python3 -m http.server {{port}} --bind 127.0.0.1"
env = {{ AUTODEPLOY_TEST_MARKER = "{marker}" }}
idle_retention = "10m"
max_instances = 2
start_timeout = "20s"
"#,
        state = dir.join("state").display(),
    );
    std::fs::write(&path, config).unwrap();
    path
}

fn spawn(config: &Path, port: u16) -> Child {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    wait_for_port(port);
    child
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "gateway did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP/1.1 GET over a std `TcpStream` (this test needs no runtime).
fn get(port: u16, path: &str, rule: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let rule = rule
        .map(|r| format!("Deploy-Route-Rule: {r}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: gw\r\n{rule}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
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
    std::fs::write(
        &bad,
        "[[deployment]]\nid = \"Bad\"\nstart_command = \"\"\nidle_retention = \"0s\"\nmax_instances = 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "deployment[0].id",
        "deployment[0].start_command",
        "deployment[0].idle_retention",
        "deployment[0].max_instances",
    ] {
        assert!(err.contains(field), "{field} missing in {err}");
    }
}

#[test]
fn serve_forwards_then_sigterm_releases_every_instance_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = format!("graceful-{}-{port}", std::process::id());
    let config = write_config(dir.path(), port, &marker);
    let mut gw = Gateway {
        child: Some(spawn(&config, port)),
        marker: marker.clone(),
    };

    let (status, answer) = get(port, "/d/files/", None);
    assert_eq!(status, 200, "{answer}");
    // python answers in HTTP/1.0; the client asked in HTTP/1.1 and is answered in it.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("deploy-route-target: ")
    );
    let (status, _) = get(port, "/d/files/", Some("scale-out"));
    assert_eq!(status, 200);
    let (status, answer) = get(port, "/d/files/", Some("scale-out"));
    assert_eq!(status, 429);
    assert!(answer.ends_with(r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#));
    assert_eq!(marked_processes(&marker).len(), 2, "two python instances");

    let mut child = gw.child.take().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
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
    let marker = format!("chaos-{}-{port}", std::process::id());
    let config = write_config(dir.path(), port, &marker);
    let mut gw = Gateway {
        child: Some(spawn(&config, port)),
        marker: marker.clone(),
    };
    assert_eq!(get(port, "/d/files/", None).0, 200);
    assert_eq!(marked_processes(&marker).len(), 1);

    // A crash: the instance keeps running (and billing) without its gateway.
    let mut child = gw.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        marked_processes(&marker).len(),
        1,
        "the orphan survives the crash"
    );

    gw.child = Some(spawn(&config, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked_processes(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the restarted gateway did not release the orphan"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And it serves again, from a fresh instance.
    assert_eq!(get(port, "/d/files/", None).0, 200);
    assert_eq!(marked_processes(&marker).len(), 1);
}

#[test]
fn a_restart_releases_instances_of_deployments_no_longer_configured() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = format!("removed-{}-{port}", std::process::id());
    let config = write_config(dir.path(), port, &marker);
    let mut gw = Gateway {
        child: Some(spawn(&config, port)),
        marker: marker.clone(),
    };
    assert_eq!(get(port, "/d/files/", None).0, 200);
    let mut child = gw.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(marked_processes(&marker).len(), 1);

    // The deployment is renamed while the gateway is down: its old instance has no owner.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("id = \"files\"", "id = \"renamed\"");
    std::fs::write(&config, text).unwrap();
    gw.child = Some(spawn(&config, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked_processes(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the unowned instance was not released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(port, "/d/files/", None).0, 404);
    assert_eq!(get(port, "/d/renamed/", None).0, 200);
}
