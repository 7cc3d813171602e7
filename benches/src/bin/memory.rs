//! `memory [--deployments N] [--held N] [--autodeploy PATH] [--backend PATH]`: the release
//! `autodeploy` binary's resident memory (VmRSS from `/proc/PID/status`).
//!
//! For each instance kind (`simulated`: in-process instances, as the brief asks; `local`: a
//! `bench-backend` process, so only the gateway's side of each request is in the gateway's
//! RSS) a fresh gateway process is started with a generated config of N deployments
//! (default 1,000; the first uses that kind, the rest the simulated provider). Then:
//!
//! 1. idle: no instance, no request, 2 s after it answers `/healthz`;
//! 2. warm: one instance of the first deployment, after one request;
//! 3. held: `--held` (default 1,000) concurrent `GET /sleep?ms=10000` on that instance,
//!    each on its own connection, once the gateway counts them all in flight;
//! 4. after: when they have all been answered.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use autodeploy_benches::client::{client, get};

struct Settings {
    deployments: usize,
    held: usize,
    autodeploy: PathBuf,
    backend: PathBuf,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS line".to_owned())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// A gateway process, stopped (SIGTERM, then waited for) when dropped.
struct GatewayProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_config(
    dir: &Path,
    port: u16,
    settings: &Settings,
    first_kind: &str,
) -> Result<PathBuf, String> {
    let mut toml = format!("[gateway]\nlisten = \"127.0.0.1:{port}\"\n");
    for i in 0..settings.deployments {
        let (provider, command) = if i == 0 && first_kind == "local" {
            (
                "local",
                format!("exec {} --port {{port}}", settings.backend.display()),
            )
        } else {
            ("simulated", "simulated".to_owned())
        };
        toml.push_str(&format!(
            "\n[[deployment]]\nid = \"d{i:04}\"\nprovider = \"{provider}\"\n\
             start_command = \"{command}\"\nidle_retention = \"1h\"\nmax_instances = 1\n"
        ));
    }
    let path = dir.join("autodeploy.toml");
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Requests in flight on the deployment, as the management API reports them.
async fn in_flight(http: &autodeploy_benches::client::HttpClient, base: &str) -> u64 {
    let Ok(answer) = get(http, &format!("{base}/api/v1/deployments/d0000")).await else {
        return 0;
    };
    let text = String::from_utf8_lossy(&answer.body);
    text.split("\"in_flight\":")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

async fn measure(settings: &Settings, kind: &str) -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = std::env::temp_dir().join(format!("autodeploy-memory-{}-{kind}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = write_config(&dir, port, settings, kind)?;
    let child = Command::new(&settings.autodeploy)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", settings.autodeploy.display()))?;
    let gateway = GatewayProcess { child, dir };
    let pid = gateway.child.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = client(settings.held + 8);

    let started = Instant::now();
    while get(&http, &format!("{base}/healthz")).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the gateway did not answer /healthz within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let up_after = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid)?;

    let answer = get(&http, &format!("{base}/d/d0000/")).await?;
    if !answer.status.is_success() {
        return Err(format!("warm-up request: {}", answer.status));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warm = rss_kib(pid)?;

    let url = format!("{base}/d/d0000/sleep?ms=10000");
    let tasks: Vec<_> = (0..settings.held)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { get(&http, &url).await.map(|a| a.status.is_success()) })
        })
        .collect();
    let sent = Instant::now();
    let mut seen = 0;
    while sent.elapsed() < Duration::from_secs(8) {
        seen = in_flight(&http, &base).await;
        if seen >= settings.held as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = rss_kib(pid)?;
    let mut ok = 0;
    for task in tasks {
        if matches!(task.await, Ok(Ok(true))) {
            ok += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    let growth = held.saturating_sub(warm);
    println!(
        "| {kind} | {} | {:.2} | {} | {} | {} | {seen} | {ok} | {} | {:.1} | {} |",
        settings.deployments,
        up_after.as_secs_f64(),
        mib(idle),
        mib(warm),
        mib(held),
        mib(growth),
        growth as f64 / settings.held.max(1) as f64,
        mib(after),
    );
    Ok(())
}

async fn run(settings: Settings) -> Result<(), String> {
    println!(
        "# Gateway memory (VmRSS), {} deployments, {} held requests",
        settings.deployments, settings.held
    );
    println!("autodeploy: {}", settings.autodeploy.display());
    println!();
    println!(
        "| instance kind | deployments | up after s | idle MiB | warm MiB | held MiB | seen in flight | answered 200 | growth MiB | growth KiB per held request | after MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for kind in ["simulated", "local"] {
        measure(&settings, kind).await?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut settings = Settings {
        deployments: 1000,
        held: 1000,
        autodeploy: sibling("autodeploy"),
        backend: sibling("bench-backend"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let ok = match (arg.as_str(), value) {
            ("--deployments", Some(v)) => v.parse().map(|n| settings.deployments = n).is_ok(),
            ("--held", Some(v)) => v.parse().map(|n| settings.held = n).is_ok(),
            ("--autodeploy", Some(v)) => {
                settings.autodeploy = v.into();
                true
            }
            ("--backend", Some(v)) => {
                settings.backend = v.into();
                true
            }
            _ => false,
        };
        if !ok || settings.deployments == 0 {
            eprintln!(
                "usage: memory [--deployments N] [--held N] [--autodeploy PATH] [--backend PATH]"
            );
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("memory: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memory: {err}");
            ExitCode::FAILURE
        }
    }
}
