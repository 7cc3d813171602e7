//! `examples/autodeploy.toml` as a new user runs it: from a directory other than the one the
//! file is in, its `files` deployment serves `examples/files/` and nothing else (never the
//! state directory, where access keys are kept); and `serve` with no file at all.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autodeploy_proxy::GatewayConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::binary::{BIN, GatewayProcess, get, request, wait_until_serving};
use support::local::{MarkerGuard, free_port, marker};

/// The repository's `examples/` folder.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Starts the binary with `args` in `cwd`, its processes carrying `marker`.
fn spawn(args: &[&str], cwd: &Path, marker: &str) -> GatewayProcess {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env("AUTODEPLOY_TEST_MARKER", marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    GatewayProcess(Some(child))
}

/// SIGTERM, then the exit status and everything the process printed.
fn stop(mut child: Child) -> (std::process::ExitStatus, String) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    (status, output)
}

#[test]
fn the_examples_served_tree_holds_no_state_and_a_request_for_the_state_is_404() {
    // The folder the deployment serves, in the repository, holds the page and no state file.
    let served = examples().join("files");
    let files = files_under(&served);
    assert!(files.iter().any(|f| f.ends_with("index.html")), "{files:?}");
    assert!(
        files.iter().all(|f| !f.ends_with("deployments.json")
            && !f.components().any(|c| c.as_os_str() == ".autodeploy-state")),
        "{files:?}"
    );
    // Wherever the example is loaded from, its state directory lies outside that folder.
    let config = GatewayConfig::load(&examples().join("autodeploy.toml")).unwrap();
    let state = config.gateway.state_dir.expect("the example keeps state");
    assert!(!state.starts_with(std::fs::canonicalize(&served).unwrap()));

    // A copy of the example, so this test's state stays its own, run from another directory.
    let root = tempfile::tempdir().unwrap();
    let copy = root.path().join("repo/examples");
    std::fs::create_dir_all(copy.join("files")).unwrap();
    std::fs::copy(
        examples().join("autodeploy.toml"),
        copy.join("autodeploy.toml"),
    )
    .unwrap();
    for file in files {
        std::fs::copy(&file, copy.join("files").join(file.file_name().unwrap())).unwrap();
    }
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // From the copy's root (where the README's tour runs) and from an unrelated directory.
    for cwd in [root.path().join("repo"), elsewhere] {
        serves_only_the_files_folder(&copy, &cwd);
    }
}

/// Runs the example copied to `copy` from `cwd`, creates the tour's keyed deployment and
/// asks the `files` deployment for the state file every way a client might.
fn serves_only_the_files_folder(copy: &Path, cwd: &Path) {
    let port = free_port();
    let marker = marker("example");
    let _guard = MarkerGuard(marker.clone());
    let config = copy.join("autodeploy.toml");
    let listen = format!("127.0.0.1:{port}");
    let mut gateway = spawn(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        cwd,
        &marker,
    );
    wait_until_serving(port);

    // The tour's keyed deployment: its key lands in the state directory.
    let key = "k3y-0123456789abcdef";
    let body = format!(
        r#"{{"id": "private", "start_command": "exec python3 -m http.server {{port}} --bind 127.0.0.1", "idle_retention": "1m", "max_instances": 1, "access_keys": ["{key}"]}}"#
    );
    let json = "Content-Type: application/json\r\n";
    let (code, answer) = request(port, "POST", "/api/v1/deployments", json, &body).unwrap();
    assert!(code == 201 || code == 409, "{answer}");
    let stored = copy.join(".autodeploy-state/deployments.json");
    assert!(std::fs::read_to_string(&stored).unwrap().contains(key));
    let mode = std::os::unix::fs::PermissionsExt::mode(&stored.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only its owner reads the keys");

    let (code, answer) = get(port, "/d/files/", None).expect("an answer");
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("autodeploy: the files demo"), "{answer}");
    for path in [
        "/d/files/.autodeploy-state/deployments.json",
        "/d/files/examples/.autodeploy-state/deployments.json",
        "/d/files/../.autodeploy-state/deployments.json",
        "/d/files/%2e%2e/.autodeploy-state/deployments.json",
        "/d/files/..%2f.autodeploy-state/deployments.json",
        "/d/files/autodeploy.toml",
    ] {
        let (code, answer) = get(port, path, None).expect("an answer");
        assert_eq!(code, 404, "from {cwd:?}, {path}: {answer}");
        assert!(!answer.contains(key), "{path}: {answer}");
    }

    let (status, output) = stop(gateway.take());
    assert!(status.success(), "{status:?}: {output}");
}

#[test]
fn serve_without_a_config_file_starts_an_empty_gateway_and_says_how_to_add_one() {
    let empty = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("no-config");
    let _guard = MarkerGuard(marker.clone());
    let listen = format!("127.0.0.1:{port}");
    let mut gateway = spawn(&["serve", "--listen", &listen], empty.path(), &marker);
    wait_until_serving(port);
    let (code, answer) = get(port, "/api/v1/deployments", None).expect("an answer");
    assert_eq!(code, 200, "{answer}");
    assert!(answer.ends_with(r#"{"deployments":[]}"#), "{answer}");
    let (status, output) = stop(gateway.take());
    assert!(status.success(), "{status:?}: {output}");
    assert!(output.contains("no configuration file"), "{output}");
    assert!(output.contains("/api/v1/deployments"), "{output}");

    // A file named on the command line must exist: that is a mistake, not "no file".
    let out = Command::new(BIN)
        .args(["serve", "--config", "missing.toml", "--listen", &listen])
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}
