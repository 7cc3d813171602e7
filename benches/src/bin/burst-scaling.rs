//! `burst-scaling`: does a burst at Standby scale out? The same burst (default: 120
//! requests at once, 0.2 s of service each, instances that boot in 1 s, `concurrency_limit`
//! 4) against a deployment with `max_instances` 1 and one with 3, in one run; reports when
//! the last response of each burst arrived, the instances created, and the ratio of the two
//! completion times (target ≤ 0.5, ideal ≈ (1 + 10 × 0.2) / (1 + 30 × 0.2) ≈ 0.43).
//!
//! Two backends:
//!
//! - `--mode simulated` (default): an in-process gateway and the simulated provider (boot
//!   time and response delay as configured);
//! - `--mode process --gateway PATH --backend PATH`: the release `autodeploy` binary, started
//!   as its own process with a generated config, and the local provider running real
//!   processes: `bench-backend --boot-ms 1000` (waits 1 s, then listens), asked for
//!   `GET /sleep?ms=200`.
//!
//! Every request goes on its own new connection; all are sent at once (a barrier).

use std::collections::BTreeSet;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autodeploy_benches::client::{client, get};
use autodeploy_benches::stats::{ms, quantile};
use autodeploy_core::{DeployConfig, GpuProvider};
use autodeploy_provider::{Simulated, SimulatedConfig};
use autodeploy_proxy::Gateway;

const USAGE: &str = "usage: burst-scaling [--requests N] [--limit L] [--boot-ms B] [--service-ms S] \
                     [--mode simulated|process --gateway PATH --backend PATH]";

struct Settings {
    requests: usize,
    limit: u32,
    boot: Duration,
    service: Duration,
    mode: Mode,
}

enum Mode {
    Simulated,
    Process { gateway: String, backend: String },
}

/// What one burst measured.
struct Burst {
    done_in: Duration,
    errors: usize,
    answering: usize,
    p50: Duration,
    first_error: Option<String>,
}

/// Sends the burst to `url` and waits for every answer.
async fn burst(url: &str, requests: usize) -> Result<Burst, String> {
    let http = client(0);
    let start = Arc::new(tokio::sync::Barrier::new(requests));
    let began = Instant::now();
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let (http, url, start) = (http.clone(), url.to_owned(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                let answer = get(&http, &url).await;
                let latency = sent.elapsed();
                match answer {
                    Ok(a) if a.status.is_success() => Ok((
                        latency,
                        a.headers
                            .get("deploy-route-target")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                    )),
                    Ok(a) => Err(format!(
                        "{}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    )),
                    Err(err) => Err(err),
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut targets = BTreeSet::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await.map_err(|e| e.to_string())? {
            Ok((latency, target)) => {
                latencies.push(latency);
                targets.extend(target);
            }
            Err(err) => errors.push(err),
        }
    }
    let done_in = began.elapsed();
    Ok(Burst {
        done_in,
        errors: errors.len(),
        answering: targets.len(),
        p50: quantile(&mut latencies, 0.5),
        first_error: errors.into_iter().next(),
    })
}

fn deployment(settings: &Settings, id: &str, max: u32) -> DeployConfig {
    let mut config = DeployConfig::new(id, "simulated", Duration::from_secs(600), max);
    config.provider = "simulated".into();
    config.concurrency_limit = settings.limit;
    config.queue.max_waiting = settings.requests.max(1000);
    config.queue.timeout = Duration::from_secs(120);
    config
}

/// Both bursts against an in-process gateway on the simulated provider.
async fn simulated(settings: &Settings) -> Result<Vec<(u32, Burst, u64)>, String> {
    let sim = Arc::new(
        Simulated::new(
            SimulatedConfig::default()
                .boot_time(settings.boot)
                .response_delay(settings.service)
                .seed(7),
        )
        .map_err(|e| e.to_string())?,
    );
    let gateway = Gateway::builder()
        .provider("simulated", sim.clone() as Arc<dyn GpuProvider>)
        .deployment(deployment(settings, "max1", 1))
        .deployment(deployment(settings, "max3", 3))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let serving = gateway.spawn(listener);
    let mut rows = Vec::new();
    for max in [1, 3] {
        let created_before = sim.created();
        let measured = burst(&format!("{base}/d/max{max}/"), settings.requests).await?;
        rows.push((max, measured, sim.created() - created_before));
    }
    serving.stop().await;
    Ok(rows)
}

/// The release gateway as a child process; stopped with SIGTERM (so it releases every
/// instance) when dropped.
struct GatewayProcess(Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// Both bursts against the release binary with the local provider running `backend`.
async fn process(
    settings: &Settings,
    gateway_bin: &str,
    backend: &str,
) -> Result<Vec<(u32, Burst, u64)>, String> {
    let dir = std::env::temp_dir().join(format!("burst-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let backend = std::fs::canonicalize(backend).map_err(|e| format!("{backend}: {e}"))?;
    let mut config = format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout = \"5s\"\n\n\
         [providers.local]\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    );
    for max in [1, 3] {
        config.push_str(&format!(
            "\n[[deployment]]\nid = \"max{max}\"\n\
             start_command = \"{} --port {{port}} --boot-ms {}\"\n\
             idle_retention = \"10m\"\nmax_instances = {max}\nconcurrency_limit = {}\n\
             queue = {{ max_waiting = {}, timeout = \"2m\" }}\n",
            backend.display(),
            settings.boot.as_millis(),
            settings.limit,
            settings.requests.max(1000),
        ));
    }
    let config_path = dir.join("autodeploy.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let child = Command::new(gateway_bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{gateway_bin}: {e}"))?;
    let _gateway = GatewayProcess(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = client(1);
    let up = Instant::now();
    while get(&http, &format!("{base}/healthz")).await.is_err() {
        if up.elapsed() > Duration::from_secs(10) {
            return Err("the gateway did not come up within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rows = Vec::new();
    for max in [1, 3] {
        let url = format!(
            "{base}/d/max{max}/sleep?ms={}",
            settings.service.as_millis()
        );
        let measured = burst(&url, settings.requests).await?;
        let api = get(&http, &format!("{base}/api/v1/deployments/max{max}")).await?;
        // Instances created = those still there (idle retention is 10 min) plus released.
        let detail: serde_json::Value =
            serde_json::from_slice(&api.body).map_err(|e| e.to_string())?;
        let created = detail["instances"].as_array().map_or(0, Vec::len) as u64
            + detail["released_instances"].as_u64().unwrap_or(0);
        rows.push((max, measured, created));
    }
    drop(_gateway);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

async fn run(settings: Settings) -> Result<bool, String> {
    let (label, rows) = match &settings.mode {
        Mode::Simulated => (
            "simulated provider, in-process gateway",
            simulated(&settings).await?,
        ),
        Mode::Process { gateway, backend } => (
            "release autodeploy binary, local provider, bench-backend processes",
            process(&settings, gateway, backend).await?,
        ),
    };
    println!(
        "# Burst scaling: {} requests at once at Standby, boot {:?}, {:?} per request, \
         concurrency_limit {} ({label})",
        settings.requests, settings.boot, settings.service, settings.limit
    );
    println!();
    println!(
        "| max_instances | errors | instances created | instances answering | latency p50 ms | burst done in ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (max, b, created) in &rows {
        println!(
            "| {max} | {} | {created} | {} | {} | {:.0} |",
            b.errors,
            b.answering,
            ms(b.p50),
            b.done_in.as_secs_f64() * 1e3
        );
        if let Some(err) = &b.first_error {
            eprintln!("max_instances {max}: first error: {err}");
        }
    }
    let ratio = rows[1].1.done_in.as_secs_f64() / rows[0].1.done_in.as_secs_f64();
    let met = ratio <= 0.5 && rows.iter().all(|(_, b, _)| b.errors == 0);
    println!();
    println!(
        "ratio (max 3 / max 1): {ratio:.2} (target ≤ 0.50: {})",
        if met { "met" } else { "NOT met" }
    );
    Ok(met)
}

fn parse() -> Option<Settings> {
    let mut settings = Settings {
        requests: 120,
        limit: 4,
        boot: Duration::from_millis(1000),
        service: Duration::from_millis(200),
        mode: Mode::Simulated,
    };
    let (mut mode, mut gateway, mut backend) = (String::from("simulated"), None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next()?;
        match arg.as_str() {
            "--requests" => settings.requests = value.parse().ok()?,
            "--limit" => settings.limit = value.parse().ok()?,
            "--boot-ms" => settings.boot = Duration::from_millis(value.parse().ok()?),
            "--service-ms" => settings.service = Duration::from_millis(value.parse().ok()?),
            "--mode" => mode = value,
            "--gateway" => gateway = Some(value),
            "--backend" => backend = Some(value),
            _ => return None,
        }
    }
    settings.mode = match mode.as_str() {
        "simulated" => Mode::Simulated,
        "process" => Mode::Process {
            gateway: gateway?,
            backend: backend?,
        },
        _ => return None,
    };
    (settings.requests > 0).then_some(settings)
}

fn main() -> ExitCode {
    let Some(settings) = parse() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("burst-scaling: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("burst-scaling: {err}");
            ExitCode::FAILURE
        }
    }
}
