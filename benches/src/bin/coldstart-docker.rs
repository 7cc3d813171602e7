//! `coldstart-docker [--runs N] [--gateway PATH] [--backend PATH] [--readiness-interval D]`:
//! what a cold start through the gateway costs on top of the Docker engine's own start of the
//! same container, and how long a release takes, measured from outside (issue 11).
//!
//! Needs a Docker engine on the local socket and the release `autodeploy` and `bench-backend`
//! binaries (by default next to this one: `cargo build --release -p autodeploy-proxy
//! --bin autodeploy -p autodeploy-benches --bins`).
//!
//! 1. The image: `bench-backend` with the shared libraries `ldd` lists in a `FROM scratch`
//!    image, built through the engine's build API with no registry
//!    ([`ScratchImage`], the code the Docker provider's tests build their stub with), command
//!    `--host 0.0.0.0 --port 8080`.
//! 2. The engine alone, twice: `docker run -d --label … -p 127.0.0.1:HOSTPORT:8080 IMAGE`
//!    through the docker CLI, as a user would; and the same create + start through the engine
//!    API (bollard, as the provider talks to the engine). The host port is one this program
//!    picked (no round trip to learn it), and once the command or the start call returns,
//!    `GET /` is sent on a fresh connection every 0.2 ms until the first 200; timed from the
//!    command's start. (Polling from the command's start instead was tried: every run then
//!    answered about 1,090 ms after the start, the poller's 1 s read timeout after a
//!    connection docker-proxy had accepted before the container could answer: that measured
//!    the poller, not the engine.) Each container is removed before the next run
//!    (`docker rm -f`, untimed); the API runs also time stop (SIGTERM, grace 2 s) + remove,
//!    the engine's own release.
//! 3. Through the gateway: the release `autodeploy` binary as a child (started before the
//!    first run; each run does one of each kind in turn: CLI, engine API, gateway), with a temporary
//!    config: `provider = "docker"` for that image, `pull = "never"`, `stop_grace = "2s"`, the
//!    deployment's default readiness (any HTTP answer on the published port, probes 1 ms
//!    doubling to `readiness.interval`, 500 ms unless `--readiness-interval`). At Standby,
//!    one `GET` on a kept-alive client connection, timed from sending to the response head;
//!    then `DELETE /api/v1/deployments/cold/instances/{id}` timed until the engine no longer
//!    knows the container (inspect every 2 ms), and until the API shows the deployment at
//!    Standby again, which each next run requires.
//!
//! The first run of each kind is not counted (it pages things in). `bench-backend` prints the
//! wall-clock times its `main` began and its port was bound; read back from the container's
//! log they split each run into: start → `main` (create, start, the container's init),
//! `main` → listening, listening → first answer (readiness detection and forwarding).
//!
//! Everything created carries the label `autodeploy.owner=bench-coldstart-PID` (the gateway's
//! containers through its `owner` setting) and is removed at the end, on an error, on Ctrl-C
//! and on a panic.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autodeploy_benches::client::{HttpClient, client, get};
use autodeploy_benches::stats::{median, ms, quantile};
use autodeploy_provider::docker::scratch::ScratchImage;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use http::{Method, Request};
use http_body_util::Empty;

const USAGE: &str = "usage: coldstart-docker [--runs N] [--gateway PATH] [--backend PATH] \
                     [--readiness-interval DURATION]";
/// The port bench-backend listens on inside the container.
const CONTAINER_PORT: u16 = 8080;
/// The baseline's polling interval.
const POLL_EVERY: Duration = Duration::from_micros(200);
/// How often the release is checked against the engine.
const GONE_EVERY: Duration = Duration::from_millis(2);

struct Settings {
    runs: usize,
    gateway: PathBuf,
    backend: PathBuf,
    readiness_interval: Option<String>,
}

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

fn free_port() -> Result<u16, String> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// Removes every container and the image this run created (by its owner label), also when
/// the run fails, is interrupted or panics.
struct Cleanup {
    owner: String,
    tag: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=autodeploy.owner={}", self.owner);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The release gateway as a child process; stopped with SIGTERM (so it releases its
/// containers) when dropped.
struct GatewayProcess(Child);

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..150 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /` on a fresh connection to `port` every [`POLL_EVERY`] until a 200; the time from
/// `started` to that answer's status line. Blocking: runs on its own thread.
fn poll_until_200(port: u16, started: Instant, limit: Duration) -> Result<Duration, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            if stream
                .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .is_ok()
            {
                let mut head = [0u8; 12];
                let mut read = 0;
                while read < head.len() {
                    match stream.read(&mut head[read..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
                if read == head.len() && &head[9..12] == b"200" {
                    return Ok(started.elapsed());
                }
            }
        }
        if started.elapsed() > limit {
            return Err(format!("no 200 on port {port} within {limit:?}"));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`poll_until_200`] on a blocking thread.
async fn poll(port: u16, started: Instant) -> Result<Duration, String> {
    tokio::task::spawn_blocking(move || poll_until_200(port, started, Duration::from_secs(30)))
        .await
        .map_err(|e| format!("the poller failed: {e}"))?
}

/// The `main_unix_ns` and `listen_unix_ns` bench-backend printed, from the container's log.
async fn backend_times(engine: &Docker, container: &str) -> Option<(u128, u128)> {
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
    let mut stream = engine.logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let line = text.lines().find(|l| l.contains("listen_unix_ns="))?;
    let field = |key: &str| -> Option<u128> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))?
            .parse()
            .ok()
    };
    Some((field("main_unix_ns=")?, field("listen_unix_ns=")?))
}

fn between(from_ns: u128, to_ns: u128) -> Option<Duration> {
    to_ns
        .checked_sub(from_ns)
        .map(|d| Duration::from_nanos(d as u64))
}

/// One measured start (and, where timed, release).
#[derive(Default)]
struct Run {
    /// Start → the command or API call returned (baselines only).
    returned: Option<Duration>,
    /// Start → first 200 (baselines) or first byte (gateway).
    answered: Duration,
    to_main: Option<Duration>,
    main_to_listen: Option<Duration>,
    listen_to_answer: Option<Duration>,
    /// Release request → container gone.
    released: Option<Duration>,
    /// Release request → deployment at Standby in the API (gateway only).
    standby: Option<Duration>,
}

impl Run {
    fn split(&mut self, sent_ns: u128, times: Option<(u128, u128)>) {
        let answered_ns = sent_ns + self.answered.as_nanos();
        self.to_main = times.and_then(|(main, _)| between(sent_ns, main));
        self.main_to_listen = times.and_then(|(main, listen)| between(main, listen));
        self.listen_to_answer = times.and_then(|(_, listen)| between(listen, answered_ns));
    }
}

async fn remove_now(engine: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let _ = engine.remove_container(id, Some(options)).await;
}

/// `docker run -d` through the CLI, polled from the start.
async fn cli_run(engine: &Docker, owner: &str, tag: &str) -> Result<Run, String> {
    let port = free_port()?;
    let args = vec![
        "run".to_owned(),
        "-d".into(),
        "--label".into(),
        format!("autodeploy.owner={owner}"),
        "-p".into(),
        format!("127.0.0.1:{port}:{CONTAINER_PORT}"),
        tag.to_owned(),
    ];
    let sent_ns = unix_ns();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || Command::new("docker").args(&args).output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("docker run: {e}"))?;
    let returned = started.elapsed();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return Err(format!(
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let answered = poll(port, started).await;
    if answered.is_err() {
        remove_now(engine, &id).await;
    }
    let answered = answered?;
    let mut run = Run {
        returned: Some(returned),
        answered,
        ..Run::default()
    };
    run.split(sent_ns, backend_times(engine, &id).await);
    remove_now(engine, &id).await;
    Ok(run)
}

/// The same container created and started through the engine API, polled from the start;
/// then stop (grace 2 s) + remove timed.
async fn api_run(engine: &Docker, owner: &str, tag: &str) -> Result<Run, String> {
    let port = free_port()?;
    let exposed = format!("{CONTAINER_PORT}/tcp");
    let body = ContainerCreateBody {
        image: Some(tag.to_owned()),
        labels: Some(HashMap::from([(
            "autodeploy.owner".to_owned(),
            owner.to_owned(),
        )])),
        exposed_ports: Some(vec![exposed.clone()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                exposed,
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(port.to_string()),
                }]),
            )])),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let sent_ns = unix_ns();
    let started = Instant::now();
    let created = engine
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| format!("create: {e}"))?;
    let start = engine.start_container(&created.id, None).await;
    let returned = started.elapsed();
    if let Err(err) = start {
        remove_now(engine, &created.id).await;
        return Err(format!("start: {err}"));
    }
    let answered = match poll(port, started).await {
        Ok(answered) => answered,
        Err(err) => {
            remove_now(engine, &created.id).await;
            return Err(err);
        }
    };
    let mut run = Run {
        returned: Some(returned),
        answered,
        ..Run::default()
    };
    run.split(sent_ns, backend_times(engine, &created.id).await);
    let release = Instant::now();
    let stop = StopContainerOptionsBuilder::new().t(2).build();
    let stopped = engine.stop_container(&created.id, Some(stop)).await;
    let removed = engine
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().v(true).build()),
        )
        .await;
    run.released = Some(release.elapsed());
    if let Err(err) = stopped.and(removed) {
        remove_now(engine, &created.id).await;
        return Err(format!("stop + remove: {err}"));
    }
    Ok(run)
}

async fn api_json(http: &HttpClient, url: &str) -> Result<serde_json::Value, String> {
    let answer = get(http, url).await?;
    serde_json::from_slice(&answer.body).map_err(|e| format!("{url}: {e}"))
}

async fn wait_standby(http: &HttpClient, base: &str, limit: Duration) -> Result<(), String> {
    let began = Instant::now();
    loop {
        let detail = api_json(http, &format!("{base}/api/v1/deployments/cold")).await?;
        if detail["status"] == "Standby" {
            return Ok(());
        }
        if began.elapsed() > limit {
            return Err(format!("not at Standby after {limit:?}: {detail}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One cold start through the gateway and its release through the API.
async fn gateway_run(engine: &Docker, http: &HttpClient, base: &str) -> Result<Run, String> {
    wait_standby(http, base, Duration::from_secs(30)).await?;
    let sent_ns = unix_ns();
    let sent = Instant::now();
    let answer = get(http, &format!("{base}/d/cold/")).await?;
    let mut run = Run {
        answered: answer.head_at.duration_since(sent),
        ..Run::default()
    };
    if !answer.status.is_success() {
        return Err(format!("status {}: {:?}", answer.status, answer.body));
    }
    let instance = answer
        .headers
        .get("deploy-route-target")
        .and_then(|v| v.to_str().ok())
        .ok_or("no deploy-route-target header")?
        .to_owned();
    let container = format!("autodeploy-cold-{instance}");
    run.split(sent_ns, backend_times(engine, &container).await);

    let release = Instant::now();
    let request = Request::builder()
        .method(Method::DELETE)
        .uri(format!(
            "{base}/api/v1/deployments/cold/instances/{instance}"
        ))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let status = http
        .request(request)
        .await
        .map_err(|e| e.to_string())?
        .status();
    if status.as_u16() != 202 {
        return Err(format!("DELETE instance: status {status}"));
    }
    loop {
        if engine.inspect_container(&container, None).await.is_err() {
            run.released = Some(release.elapsed());
            break;
        }
        if release.elapsed() > Duration::from_secs(30) {
            return Err(format!("{container} still exists 30 s after its release"));
        }
        tokio::time::sleep(GONE_EVERY).await;
    }
    wait_standby(http, base, Duration::from_secs(10)).await?;
    run.standby = Some(release.elapsed());
    Ok(run)
}

/// What every run of each kind measured.
#[derive(Default)]
struct Measured {
    cli: Vec<Run>,
    api: Vec<Run>,
    gateway: Vec<Run>,
}

/// Starts the gateway, then runs the three kinds in turn (CLI, engine API, gateway), so a
/// change in the machine's load falls on all three alike.
async fn measure(
    settings: &Settings,
    engine: &Docker,
    owner: &str,
    tag: &str,
) -> Result<Measured, String> {
    let dir = std::env::temp_dir().join(format!("{owner}-gateway"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let readiness = settings
        .readiness_interval
        .as_ref()
        .map(|i| format!("readiness = {{ interval = \"{i}\" }}\n"))
        .unwrap_or_default();
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout = \"5s\"\n\n\
         [providers.local]\nstate_dir = \"{}\"\n\n\
         [providers.docker]\npull = \"never\"\nowner = \"{owner}\"\nstop_grace = \"2s\"\n\n\
         [[deployment]]\nid = \"cold\"\nprovider = \"docker\"\nimage = \"{tag}\"\n\
         port = {CONTAINER_PORT}\nidle_retention = \"30s\"\nmax_instances = 1\n\
         start_timeout = \"30s\"\n{readiness}",
        dir.join("state").display()
    );
    let config_path = dir.join("autodeploy.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let child = Command::new(&settings.gateway)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", settings.gateway.display()))?;
    let gateway = GatewayProcess(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = client(4);
    let up = Instant::now();
    while get(&http, &format!("{base}/healthz")).await.is_err() {
        if up.elapsed() > Duration::from_secs(10) {
            return Err("the gateway did not come up within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut measured = Measured::default();
    for i in 0..=settings.runs {
        let cli = cli_run(engine, owner, tag)
            .await
            .map_err(|e| format!("docker run {i}: {e}"))?;
        let api = api_run(engine, owner, tag)
            .await
            .map_err(|e| format!("API run {i}: {e}"))?;
        let gateway = gateway_run(engine, &http, &base)
            .await
            .map_err(|e| format!("gateway run {i}: {e}"))?;
        if i > 0 {
            measured.cli.push(cli);
            measured.api.push(api);
            measured.gateway.push(gateway);
        }
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(measured)
}

fn row(name: &str, mut samples: Vec<Duration>) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let med = median(&mut samples);
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        samples.len(),
        ms(med),
        ms(quantile(&mut samples, 0.9)),
        ms(quantile(&mut samples, 0.0)),
        ms(quantile(&mut samples, 1.0)),
    );
    Some(med)
}

fn rows(kind: &str, runs: &[Run]) -> Duration {
    let pick = |f: fn(&Run) -> Option<Duration>| runs.iter().filter_map(f).collect::<Vec<_>>();
    let answer = if kind == "gateway" {
        "request → first byte"
    } else {
        "start → first 200"
    };
    row(&format!("{kind}: start → returned"), pick(|r| r.returned));
    let med = row(
        &format!("{kind}: {answer}"),
        runs.iter().map(|r| r.answered).collect(),
    )
    .unwrap_or_default();
    row(
        &format!("{kind}: start → backend main()"),
        pick(|r| r.to_main),
    );
    row(
        &format!("{kind}: main() → listening"),
        pick(|r| r.main_to_listen),
    );
    row(
        &format!("{kind}: listening → answer"),
        pick(|r| r.listen_to_answer),
    );
    row(
        &format!("{kind}: release → container gone"),
        pick(|r| r.released),
    );
    row(
        &format!("{kind}: release → Standby in the API"),
        pick(|r| r.standby),
    );
    med
}

async fn run(settings: Settings, owner: String, tag: String) -> Result<(), String> {
    let engine = Docker::connect_with_local_defaults()
        .map_err(|e| format!("no Docker engine: {e}"))?
        .negotiate_version()
        .await
        .map_err(|e| format!("no Docker engine: {e}"))?;
    let backend = std::fs::canonicalize(&settings.backend)
        .map_err(|e| format!("{}: {e}", settings.backend.display()))?;
    ScratchImage::new(&backend, &tag)
        .name("bench-backend")
        .cmd([
            "--host".to_owned(),
            "0.0.0.0".to_owned(),
            "--port".to_owned(),
            CONTAINER_PORT.to_string(),
        ])
        .label("autodeploy.owner", &owner)
        .build(&engine)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "# Cold start, Docker provider: {} runs each (+1 not counted), image {tag} \
         (bench-backend, FROM scratch), owner {owner}",
        settings.runs
    );
    println!(
        "gateway: {}, readiness interval: {}",
        settings.gateway.display(),
        settings
            .readiness_interval
            .as_deref()
            .unwrap_or("500ms (default)")
    );

    let measured = measure(&settings, &engine, &owner, &tag).await?;

    println!();
    println!("| measurement | n | median ms | p90 ms | min ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let cli_median = rows("docker run -d (CLI)", &measured.cli);
    let api_median = rows("engine API create+start", &measured.api);
    let gateway_median = rows("gateway", &measured.gateway);
    println!();
    let overhead = |base: Duration| (gateway_median.as_secs_f64() - base.as_secs_f64()) * 1e3;
    println!(
        "overhead vs docker run -d (CLI): {} − {} = {:.2} ms (target ≤ 5 ms)",
        ms(gateway_median),
        ms(cli_median),
        overhead(cli_median)
    );
    println!(
        "overhead vs engine API create+start: {} − {} = {:.2} ms (target ≤ 5 ms)",
        ms(gateway_median),
        ms(api_median),
        overhead(api_median)
    );
    // Each run's own difference (the kinds run in turn, so a pair shares the machine's state).
    for (name, base) in [
        ("docker run -d (CLI)", &measured.cli),
        ("engine API create+start", &measured.api),
    ] {
        let mut diffs: Vec<f64> = measured
            .gateway
            .iter()
            .zip(base)
            .map(|(g, b)| (g.answered.as_secs_f64() - b.answered.as_secs_f64()) * 1e3)
            .collect();
        diffs.sort_by(f64::total_cmp);
        let n = diffs.len();
        let mid = if n % 2 == 1 {
            diffs[n / 2]
        } else {
            (diffs[n / 2 - 1] + diffs[n / 2]) / 2.0
        };
        println!(
            "paired, gateway − {name}, same run: median {mid:.2} ms, min {:.2}, max {:.2}",
            diffs[0],
            diffs[n - 1]
        );
    }
    // The parts the gateway adds, each against the engine API run's same part.
    let part = |runs: &[Run], f: fn(&Run) -> Option<Duration>| {
        let mut samples: Vec<Duration> = runs.iter().filter_map(f).collect();
        (!samples.is_empty()).then(|| median(&mut samples).as_secs_f64() * 1e3)
    };
    for (name, f) in [
        (
            "start → backend main()",
            (|r: &Run| r.to_main) as fn(&Run) -> Option<Duration>,
        ),
        ("listening → answer", |r: &Run| r.listen_to_answer),
        ("release → container gone", |r: &Run| r.released),
    ] {
        if let (Some(g), Some(a)) = (part(&measured.gateway, f), part(&measured.api, f)) {
            println!(
                "median {name}: gateway {g:.2} ms, engine API {a:.2} ms, difference {:.2} ms",
                g - a
            );
        }
    }
    Ok(())
}

fn parse() -> Option<Settings> {
    let mut settings = Settings {
        runs: 20,
        gateway: sibling("autodeploy"),
        backend: sibling("bench-backend"),
        readiness_interval: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next()?;
        match arg.as_str() {
            "--runs" => settings.runs = value.parse().ok()?,
            "--gateway" => settings.gateway = value.into(),
            "--backend" => settings.backend = value.into(),
            "--readiness-interval" => settings.readiness_interval = Some(value),
            _ => return None,
        }
    }
    (settings.runs > 0).then_some(settings)
}

fn main() -> ExitCode {
    let Some(settings) = parse() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let owner = format!("bench-coldstart-{}", std::process::id());
    let tag = format!("autodeploy-bench-backend:{owner}");
    // Dropped last: after the runtime (and the gateway child) are gone, also on a panic.
    let _cleanup = Cleanup {
        owner: owner.clone(),
        tag: tag.clone(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("coldstart-docker: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(settings, owner, tag) => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coldstart-docker: {err}");
            ExitCode::FAILURE
        }
    }
}
