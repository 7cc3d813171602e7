//! `coldstart [--runs N] [--backend PATH]`: what a cold start through the gateway costs on
//! top of the instance's own start-up, with the local-process provider.
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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let ok = match (arg.as_str(), value) {
            ("--runs", Some(v)) => v.parse().map(|n| runs = n).is_ok(),
            ("--backend", Some(v)) => {
                backend = v;
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("usage: coldstart [--runs N] [--backend PATH]");
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
    match runtime.block_on(run(runs, backend)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coldstart: {err}");
            ExitCode::FAILURE
        }
    }
}
