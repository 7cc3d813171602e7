//! `coldstart [--runs N] [--backend PATH]`: what a cold start through the gateway costs on
//! top of the instance's own start-up, with the local-process provider.
//!
//! `coldstart --gateway AUTODEPLOY [--command CMD] [--runs N]`: the same, measured from
//! outside a release gateway process (see [`outside`]); `CMD` is any instance command, its
//! port written `{port}` (default: bench-backend).
//!
//! 1. The instance's own time: `sh -c "exec bench-backend --port P"` spawned directly (as the
//!    local provider spawns it), connecting to the port in a tight loop until it accepts;
//!    spawn to accepting, `N` runs.
//! 2. Through the gateway: an in-process gateway on loopback with the local provider and a
//!    deployment running the same command; at Standby, one `GET` on a kept-alive connection,
//!    timed from sending to the response head (first byte); then the instance is released
//!    and the next run starts from Standby again. `N` runs.
//!
//! Overhead = median(2) − median(1). The backend also prints the wall-clock times at which
//! its `main` began and its port was bound (read back from the instance's log lines), which
//! splits each gateway run into: request → backend `main` (the provider's spawn path plus
//! fork/exec), `main` → listening (the backend itself), listening → first byte (readiness
//! detection plus forwarding).

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autodeploy_benches::client::{client, get};
use autodeploy_benches::stats::{median, ms, quantile};
use autodeploy_core::{DeployConfig, GpuProvider, InstanceId};
use autodeploy_provider::{Local, LocalConfig};
use autodeploy_proxy::Gateway;

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Spawn to accepting connections, for the backend started directly.
async fn own_start(backend: &str) -> Result<Duration, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {backend} --port {port}"))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot spawn {backend}: {e}"))?;
    let took = loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the backend did not listen within 10 s".into());
        }
        tokio::task::yield_now().await;
    };
    let _ = child.kill().await;
    Ok(took)
}

/// One gateway cold start.
struct Run {
    total: Duration,
    to_main: Option<Duration>,
    main_to_listen: Option<Duration>,
    listen_to_first_byte: Option<Duration>,
}

fn between(from_ns: u128, to_ns: u128) -> Option<Duration> {
    to_ns
        .checked_sub(from_ns)
        .map(|d| Duration::from_nanos(d as u64))
}

/// The `main_unix_ns` and `listen_unix_ns` the backend printed.
fn backend_times(lines: &[String]) -> Option<(u128, u128)> {
    let line = lines.iter().find(|l| l.contains("listen_unix_ns="))?;
    let field = |key: &str| -> Option<u128> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))?
            .parse()
            .ok()
    };
    Some((field("main_unix_ns=")?, field("listen_unix_ns=")?))
}

async fn run(runs: usize, backend: String) -> Result<(), String> {
    println!("# Cold-start overhead, local provider, {runs} runs each");
    println!("backend: {backend}");

    let mut own = Vec::with_capacity(runs);
    own_start(&backend).await?; // page the binary in
    for _ in 0..runs {
        own.push(own_start(&backend).await?);
    }

    let provider: Arc<dyn GpuProvider> =
        Arc::new(Local::new(LocalConfig::default()).map_err(|e| e.to_string())?);
    let mut config = DeployConfig::new(
        "cold",
        format!("exec {backend} --port {{port}}"),
        Duration::from_secs(3600),
        1,
    );
    config.provider = "local".into();
    let gateway = Gateway::builder()
        .provider("local", provider)
        .deployment(config)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}/d/cold/",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let serving = gateway.spawn(listener);
    let controller = gateway.controller("cold").ok_or("no deployment")?;
    let http = client(4);
    // Open the client's connection to the gateway (a 404 link), so each run times the
    // request, not a TCP handshake.
    let _ = get(&http, &url.replace("/d/cold/", "/d/nosuch/")).await;

    let mut results = Vec::with_capacity(runs + 1);
    for i in 0..=runs {
        let sent_ns = unix_ns();
        let sent = Instant::now();
        let answer = get(&http, &url).await?;
        let received_ns = sent_ns + answer.head_at.duration_since(sent).as_nanos();
        if !answer.status.is_success() {
            return Err(format!(
                "run {i}: status {}: {:?}",
                answer.status, answer.body
            ));
        }
        let id: InstanceId = answer
            .headers
            .get("deploy-route-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or("no deploy-route-target header")?;
        let times = backend_times(&controller.logs(id, 20));
        let run = Run {
            total: answer.head_at.duration_since(sent),
            to_main: times.and_then(|(main, _)| between(sent_ns, main)),
            main_to_listen: times.and_then(|(main, listen)| between(main, listen)),
            listen_to_first_byte: times.and_then(|(_, listen)| between(listen, received_ns)),
        };
        if i > 0 {
            results.push(run); // the first run pages things in
        }
        controller.release_instance(id).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !controller.instances().is_empty() {
            if Instant::now() > deadline {
                return Err("the instance was not released within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    serving.stop().await;

    let mut total: Vec<Duration> = results.iter().map(|r| r.total).collect();
    let mut to_main: Vec<Duration> = results.iter().filter_map(|r| r.to_main).collect();
    let mut main_listen: Vec<Duration> = results.iter().filter_map(|r| r.main_to_listen).collect();
    let mut listen_byte: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.listen_to_first_byte)
        .collect();
    let own_median = median(&mut own);
    let total_median = median(&mut total);
    println!();
    println!("| measurement | median ms | p90 ms | min ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, samples) in [
        ("instance alone: spawn → accepting", &mut own),
        ("through the gateway: request → first byte", &mut total),
        ("gateway run: request → backend main()", &mut to_main),
        ("gateway run: backend main() → listening", &mut main_listen),
        ("gateway run: listening → first byte", &mut listen_byte),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(median(samples)),
            ms(quantile(samples, 0.9)),
            ms(quantile(samples, 0.0)),
            ms(quantile(samples, 1.0)),
        );
    }
    println!();
    let overhead = total_median.as_secs_f64() - own_median.as_secs_f64();
    println!(
        "cold-start overhead = median(request → first byte) − median(spawn → accepting) = {} − {} = {:.3} ms (target ≤ 5 ms)",
        ms(total_median),
        ms(own_median),
        overhead * 1e3
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut runs = 30usize;
    let mut backend = sibling("bench-backend").display().to_string();
    let mut gateway: Option<String> = None;
    let mut command: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let ok = match (arg.as_str(), value) {
            ("--runs", Some(v)) => v.parse().map(|n| runs = n).is_ok(),
            ("--backend", Some(v)) => {
                backend = v;
                true
            }
            ("--gateway", Some(v)) => {
                gateway = Some(v);
                true
            }
            ("--command", Some(v)) => {
                command = Some(v);
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!(
                "usage: coldstart [--runs N] [--backend PATH] [--gateway AUTODEPLOY [--command CMD]]"
            );
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("coldstart: {err}");
            return ExitCode::FAILURE;
        }
    };
    let measured = match gateway {
        Some(gateway) => {
            let command = command.unwrap_or_else(|| format!("exec {backend} --port {{port}}"));
            runtime.block_on(outside::run(runs, gateway, command))
        }
        None => runtime.block_on(run(runs, backend)),
    };
    match measured {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coldstart: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Cold start measured from outside a gateway process: what a client sees.
///
/// 1. The command alone: `sh -c CMD` spawned, a TCP connect tried every 0.2 ms until one
///    succeeds, then `GET /` on that connection: spawn → response head. `N` runs.
/// 2. Through the gateway: `AUTODEPLOY serve` (a separate process, release build) with one
///    deployment running `CMD`; at Standby, `GET /d/cold/` on a kept-alive connection,
///    timed to the response head; then the instance is released through the API
///    (`DELETE /api/v1/deployments/cold/instances/ID`) and the next run waits for Standby.
///
/// Overhead = median(2) − median(1).
mod outside {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use autodeploy_benches::client::{HttpClient, client, get};
    use autodeploy_benches::stats::{median, ms, quantile};
    use bytes::Bytes;
    use http::Request;
    use http_body_util::Empty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::free_port;

    /// How often the command alone is polled.
    const POLL: Duration = Duration::from_micros(200);

    /// Spawn → response head of `GET /`, for `command` started directly.
    async fn own_start(command: &str) -> Result<Duration, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command.replace("{port}", &port.to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot spawn {command}: {e}"))?;
        let mut stream = loop {
            if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                break stream;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the command did not listen within 10 s".into());
            }
            // tokio's timer has 1 ms ticks; nothing else runs on this runtime meanwhile, so
            // the thread sleeps the 0.2 ms (spinning would take a core from the instance).
            std::thread::sleep(POLL);
        };
        let _ = stream.set_nodelay(true);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if !buf[..n].starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "the command answered {:?}",
                String::from_utf8_lossy(&buf[..n.min(40)])
            ));
        }
        // SIGTERM, not SIGKILL: a command that ends in `exec nginx` is nginx's master
        // process, which stops its workers on SIGTERM only.
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "TERM", &pid.to_string()])
                .status();
        }
        let _ = child.wait().await;
        Ok(took)
    }

    /// Whether the deployment has no instance (Standby), from the API.
    async fn standby(http: &HttpClient, base: &str) -> Result<bool, String> {
        let answer = get(http, &format!("{base}/api/v1/deployments/cold/instances")).await?;
        let list: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
        Ok(list["instances"].as_array().is_some_and(|a| a.is_empty()))
    }

    /// Runs both measurements and prints the table.
    pub(super) async fn run(runs: usize, gateway: String, command: String) -> Result<(), String> {
        println!("# Cold-start overhead from outside the gateway process, {runs} runs each");
        println!("gateway: {gateway}");
        println!("command: {command}");

        let mut own = Vec::with_capacity(runs);
        own_start(&command).await?; // page things in
        for _ in 0..runs {
            own.push(own_start(&command).await?);
        }

        let dir = std::env::temp_dir().join(format!("coldstart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nlisten = \"127.0.0.1:{port}\"\n\n[[deployment]]\nid = \"cold\"\n\
                 start_command = '''{command}'''\nidle_retention = \"1h\"\nmax_instances = 1\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut process = tokio::process::Command::new(&gateway)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {gateway}: {e}"))?;
        let result = through_gateway(runs, port).await;
        // SIGTERM: the gateway releases its instance on the way out.
        if let Some(pid) = process.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), process.wait()).await;
        let _ = std::fs::remove_dir_all(&dir);
        let mut total = result?;

        let own_median = median(&mut own);
        let total_median = median(&mut total);
        println!();
        println!("| measurement | median ms | p90 ms | min ms | max ms |");
        println!("|---|---:|---:|---:|---:|");
        for (name, samples) in [
            (
                "command alone: spawn → answer (connect polled every 0.2 ms)",
                &mut own,
            ),
            (
                "through the gateway: request at Standby → answer",
                &mut total,
            ),
        ] {
            println!(
                "| {name} | {} | {} | {} | {} |",
                ms(median(samples)),
                ms(quantile(samples, 0.9)),
                ms(quantile(samples, 0.0)),
                ms(quantile(samples, 1.0)),
            );
        }
        println!();
        println!(
            "cold-start overhead from outside = {} − {} = {:.3} ms (target ≤ 2 ms)",
            ms(total_median),
            ms(own_median),
            (total_median.as_secs_f64() - own_median.as_secs_f64()) * 1e3
        );
        Ok(())
    }

    /// Request at Standby → answer through the gateway on `port`, `runs` times (after one
    /// that pages things in).
    async fn through_gateway(runs: usize, port: u16) -> Result<Vec<Duration>, String> {
        let base = format!("http://127.0.0.1:{port}");
        let url = format!("{base}/d/cold/");
        let http = client(4);
        let started = Instant::now();
        while get(&http, &format!("{base}/healthz")).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the gateway did not answer within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut total = Vec::with_capacity(runs);
        for i in 0..=runs {
            let sent = Instant::now();
            let answer = get(&http, &url).await?;
            let took = answer.head_at.duration_since(sent);
            if !answer.status.is_success() {
                return Err(format!(
                    "run {i}: status {}: {:?}",
                    answer.status, answer.body
                ));
            }
            let id = answer
                .headers
                .get("deploy-route-target")
                .and_then(|v| v.to_str().ok())
                .ok_or("no deploy-route-target header")?
                .to_owned();
            if i > 0 {
                total.push(took); // the first run pages things in
            }
            let release = Request::delete(format!("{base}/api/v1/deployments/cold/instances/{id}"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let released = http.request(release).await.map_err(|e| e.to_string())?;
            if !released.status().is_success() {
                return Err(format!("releasing {id}: status {}", released.status()));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !standby(&http, &base).await? {
                if Instant::now() > deadline {
                    return Err("the instance was not released within 10 s".into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(total)
    }
}
