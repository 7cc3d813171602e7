//! The `autodeploy` binary as a child process: a config on the local-process provider with a
//! state directory, start and stop, and blocking requests (no runtime needed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_autodeploy");

/// A gateway process, killed on drop so a failed test leaves nothing behind.
pub struct GatewayProcess(pub Option<Child>);

impl GatewayProcess {
    /// Starts `autodeploy serve --config config`, its logs going to `stdout`.
    pub fn spawn(config: &Path, stdout: Stdio) -> Self {
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        Self(Some(child))
    }

    /// The child, taken out of the guard (to signal it and wait for it yourself).
    pub fn take(&mut self) -> Child {
        self.0.take().expect("a running gateway")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a config: the gateway on `port`, a state directory in `dir`, and deployment
/// `files` (`python3 -m http.server`, at most 2 instances) whose processes carry `marker`.
pub fn write_config(dir: &Path, port: u16, marker: &str) -> PathBuf {
    write_config_with(
        dir,
        port,
        marker,
        "exec python3 -m http.server {port} --bind 127.0.0.1",
        r#"release_grace = "1s""#,
    )
}

/// [`write_config`] with deployment `files` running `start_command` (`{port}` is the
/// instance's port) and `local` as the body of the `[providers.local]` table.
pub fn write_config_with(
    dir: &Path,
    port: u16,
    marker: &str,
    start_command: &str,
    local: &str,
) -> PathBuf {
    let path = dir.join("autodeploy.toml");
    let config = format!(
        r#"
[gateway]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
drain_timeout = "5s"

[providers.local]
{local}

[[deployment]]
id = "files"
start_command = "{start_command}"
env = {{ AUTODEPLOY_TEST_MARKER = "{marker}" }}
idle_retention = "10m"
max_instances = 2
start_timeout = "20s"
"#,
        state = dir.join("state").display(),
        start_command = start_command.replace('\\', "\\\\").replace('"', "\\\""),
    );
    std::fs::write(&path, config).expect("write the config");
    path
}

/// A blocking HTTP/1.1 GET: status and the whole answer, `None` when the connection failed
/// (the gateway is down or dying).
pub fn get(port: u16, path: &str, rule: Option<&str>) -> Option<(u16, String)> {
    let rule = rule
        .map(|r| format!("Deploy-Route-Rule: {r}\r\n"))
        .unwrap_or_default();
    request(port, "GET", path, &rule, "")
}

/// A blocking HTTP/1.1 request with extra `headers` (each ending in CRLF) and a `body`:
/// status and the whole answer, `None` when the connection failed.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: gw\r\n{headers}{length}Connection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    Some((status, answer))
}

/// The status of a GET, 0 when there was no answer.
pub fn status(port: u16, path: &str, rule: Option<&str>) -> u16 {
    get(port, path, rule).map_or(0, |(status, _)| status)
}

/// Waits until the gateway answers `/healthz` (it reconciles before it serves).
pub fn wait_until_serving(port: u16) -> Duration {
    let began = Instant::now();
    while status(port, "/healthz", None) != 200 {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the gateway did not come up on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    began.elapsed()
}
