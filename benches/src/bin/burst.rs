//! `burst [--requests N] [--max-instances M] [--boot-ms B]`: N concurrent requests (default
//! 1,000) arrive at a deployment on Standby (simulated provider, boot time B ms, default 500,
//! `max_instances` M, default 5), each on its own connection to a gateway on loopback.
//!
//! Reported per scenario: errors (target 0), instances created (target ≤ M), the most live
//! at once, and the wait: p50/p99/max of request → full response, and of the gateway's own
//! `Deploy-Wait-Ms` (time held for an instance). Two scenarios: `concurrency_limit = 0`
//! (unlimited: one instance takes the whole burst) and `concurrency_limit = N / 10` (the
//! default rule scales out to the cap while instances are full, the rest queue); each with
//! the gateway listening with a backlog of 128 (tokio's, and so the binary's, default) and
//! of 4,096.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autodeploy_benches::client::{client, get};
use autodeploy_benches::stats::{ms, quantile};
use autodeploy_core::{DeployConfig, GpuProvider};
use autodeploy_provider::{Simulated, SimulatedConfig};
use autodeploy_proxy::Gateway;

/// The gateway's listen backlog: 128 is what `tokio::net::TcpListener::bind` (and so
/// `autodeploy serve`) uses; connections beyond it in one burst have their SYN dropped and
/// retried by the client's TCP after 1 s.
const BACKLOGS: [u32; 2] = [128, 4096];

struct Settings {
    requests: usize,
    max_instances: u32,
    boot: Duration,
}

struct Outcome {
    latency: Duration,
    waited: Option<Duration>,
    target: Option<String>,
    error: Option<String>,
}

async fn scenario(settings: &Settings, limit: u32, backlog: u32) -> Result<(), String> {
    let sim = Arc::new(
        Simulated::new(SimulatedConfig::default().boot_time(settings.boot).seed(7))
            .map_err(|e| e.to_string())?,
    );
    let mut config = DeployConfig::new(
        "burst",
        "simulated",
        Duration::from_secs(3600),
        settings.max_instances,
    );
    config.provider = "simulated".into();
    config.concurrency_limit = limit;
    config.queue.max_waiting = settings.requests.max(1000);
    config.queue.timeout = Duration::from_secs(60);
    let gateway = Gateway::builder()
        .provider("simulated", sim.clone() as Arc<dyn GpuProvider>)
        .deployment(config)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .map_err(|e| e.to_string())?;
    let listener = socket.listen(backlog).map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}/d/burst/",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let serving = gateway.spawn(listener);

    // No idle connections kept: every request is sent on its own new connection, never on one
    // an earlier answer freed (which would turn late connects into unqueued requests).
    let http = client(0);
    let start = Arc::new(tokio::sync::Barrier::new(settings.requests));
    let began = Instant::now();
    let tasks: Vec<_> = (0..settings.requests)
        .map(|_| {
            let (http, url, start) = (http.clone(), url.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                match get(&http, &url).await {
                    Ok(answer) => Outcome {
                        latency: sent.elapsed(),
                        waited: answer
                            .headers
                            .get("deploy-wait-ms")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .map(Duration::from_millis),
                        target: answer
                            .headers
                            .get("deploy-route-target")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        error: (!answer.status.is_success()).then(|| {
                            format!(
                                "{}: {}",
                                answer.status,
                                String::from_utf8_lossy(&answer.body)
                            )
                        }),
                    },
                    Err(err) => Outcome {
                        latency: sent.elapsed(),
                        waited: None,
                        target: None,
                        error: Some(err),
                    },
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = began.elapsed();
    serving.stop().await;

    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let targets: BTreeSet<&String> = outcomes.iter().filter_map(|o| o.target.as_ref()).collect();
    let mut latency: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    let mut waited: Vec<Duration> = outcomes.iter().filter_map(|o| o.waited).collect();
    println!(
        "| {} | {backlog} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
        if limit == 0 {
            "unlimited".to_owned()
        } else {
            limit.to_string()
        },
        errors.len(),
        sim.created(),
        sim.max_live(),
        targets.len(),
        ms(quantile(&mut latency, 0.5)),
        ms(quantile(&mut latency, 0.99)),
        ms(quantile(&mut latency, 1.0)),
        waited.len(),
        ms(quantile(&mut waited, 0.5)),
        ms(quantile(&mut waited, 0.99)),
        elapsed.as_secs_f64() * 1e3,
    );
    if let Some(first) = errors.first() {
        eprintln!("first error: {first}");
    }
    Ok(())
}

async fn run(settings: Settings) -> Result<(), String> {
    println!(
        "# Burst: {} concurrent requests at Standby, simulated provider (boot {:?}), max_instances {}",
        settings.requests, settings.boot, settings.max_instances
    );
    println!();
    println!(
        "| concurrency_limit | listen backlog | errors | instances created | most live | instances answering | latency p50 ms | p99 ms | max ms | responses with Deploy-Wait-Ms | wait p50 ms | wait p99 ms | burst done in ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let split = (settings.requests / 10).max(1) as u32;
    for limit in [0, split] {
        for backlog in BACKLOGS {
            scenario(&settings, limit, backlog).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut settings = Settings {
        requests: 1000,
        max_instances: 5,
        boot: Duration::from_millis(500),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let ok = match (arg.as_str(), value.as_deref()) {
            ("--requests", Some(v)) => v.parse().map(|n| settings.requests = n).is_ok(),
            ("--max-instances", Some(v)) => v.parse().map(|n| settings.max_instances = n).is_ok(),
            ("--boot-ms", Some(v)) => v
                .parse()
                .map(|n| settings.boot = Duration::from_millis(n))
                .is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("usage: burst [--requests N] [--max-instances M] [--boot-ms B]");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("burst: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("burst: {err}");
            ExitCode::FAILURE
        }
    }
}
