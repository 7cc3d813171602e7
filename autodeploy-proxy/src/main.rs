//! `autodeploy`: run the gateway (`serve`) or check a configuration file (`check`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use autodeploy_proxy::config::ConfigError;
use autodeploy_proxy::{Gateway, GatewayConfig};
use clap::{Parser, Subcommand, ValueEnum};

/// Puts HTTP services behind fixed links that start instances on demand and release them
/// when idle.
#[derive(Debug, Parser)]
#[command(name = "autodeploy", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file (default: ./autodeploy.toml; without one, the gateway
        /// starts with no deployments on 127.0.0.1:8000 and takes them through its API).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides `[gateway] listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The management API's bearer token (overrides `[gateway] admin_token`).
        #[arg(long, env = "AUTODEPLOY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Runtime worker threads (default: one per CPU core). On a small machine shared with
        /// its instances, 1 costs less CPU per request at the same throughput.
        // Values hidden in --help: clap would print a dangling `=` for an unset variable.
        #[arg(
            long,
            env = "AUTODEPLOY_WORKER_THREADS",
            hide_env_values = true,
            value_parser = clap::value_parser!(u16).range(1..)
        )]
        worker_threads: Option<u16>,
        /// The runtime: `per-core` (the default; nginx's model: one single-threaded runtime
        /// per worker thread, each with its own listener on the same port (`SO_REUSEPORT`)
        /// and its own idle connections to instances, so that a request never leaves its
        /// thread), or `multi-thread` (tokio's work-stealing runtime).
        #[arg(
            long,
            value_enum,
            env = "AUTODEPLOY_RUNTIME",
            hide_env_values = true,
            default_value_t = RuntimeKind::PerCore
        )]
        runtime: RuntimeKind,
    },
    /// Validate a configuration file and print every problem with its field.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "autodeploy.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    MultiThread,
    PerCore,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve {
            config,
            listen,
            admin_token,
            log_format,
            worker_threads,
            runtime,
        } => {
            init_logs(log_format);
            // Per core: this thread serves too, on a single-threaded runtime of its own.
            let threads = match (runtime, worker_threads) {
                (RuntimeKind::PerCore, Some(n)) => usize::from(n),
                (RuntimeKind::PerCore, None) => {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                }
                (RuntimeKind::MultiThread, _) => 1,
            };
            let mut builder = if runtime == RuntimeKind::PerCore {
                autodeploy_proxy::set_thread_slots(threads);
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            };
            builder.enable_all();
            if let (RuntimeKind::MultiThread, Some(n)) = (runtime, worker_threads) {
                builder.worker_threads(usize::from(n));
            }
            let runtime = match builder.build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("error: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(serve(config, listen, admin_token, threads));
            // Every instance is released by now: exit at once rather than wait for idle
            // blocking threads to time out.
            runtime.shutdown_background();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    // Printed once, here, not also logged.
                    eprintln!("error: {}", describe(&err));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match GatewayConfig::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} deployment{})",
                path.display(),
                config.deployments.len(),
                if config.deployments.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            let count = problems.0.len();
            let plural = if count == 1 { "" } else { "s" };
            eprintln!("{}: {count} problem{plural}:", path.display());
            for problem in &problems.0 {
                eprintln!("  {problem}");
            }
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}

/// `err` and its causes, each said once: a cause whose text its parent already carries (an
/// OS error inside "cannot listen on ...: Address already in use") is not repeated.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        // One event per line: line breaks inside a message are escaped.
        LogFormat::Text => builder
            .with_writer(autodeploy_proxy::logline::OneLineStdout)
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The file `serve` reads when `--config` is not given.
const DEFAULT_CONFIG: &str = "autodeploy.toml";

/// Runs the gateway; with `threads` > 1 (per core), also on `threads - 1` more threads, each
/// with its own single-threaded runtime and listener on the same address.
async fn serve(
    path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    admin_token: Option<String>,
    threads: usize,
) -> anyhow::Result<()> {
    let path = path.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG);
        default.exists().then_some(default)
    });
    let mut config = match &path {
        Some(path) => GatewayConfig::load(path)?,
        None => GatewayConfig::default(),
    };
    if let Some(listen) = listen {
        config.gateway.listen = listen;
    }
    if admin_token.is_some() {
        config.gateway.admin_token = admin_token;
    }
    let addr = config.gateway.listen;
    let listener = if threads > 1 {
        autodeploy_proxy::server::bind_shared(addr).await
    } else {
        autodeploy_proxy::server::bind(addr).await
    }
    .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    // The others' listeners, bound now (on the port the first got, if it was 0) so that an
    // error stops the gateway before it starts anything; each thread registers its own.
    let mut more = Vec::with_capacity(threads.saturating_sub(1));
    for _ in 1..threads {
        let listener = autodeploy_proxy::server::bind_shared(local)
            .await
            .with_context(|| format!("cannot listen on {local}"))?;
        more.push(listener.into_std()?);
    }
    let gateway = Gateway::from_config(config).await?;
    let ids: Vec<String> = gateway.controllers().iter().map(|c| c.id()).collect();
    tracing::info!(%local, deployments = ?ids, "autodeploy listening; links at http://{local}/d/<id>/");
    if path.is_none() {
        tracing::info!(
            "no configuration file (--config FILE, or ./{DEFAULT_CONFIG}): serving no \
             deployments yet; add one through the API, e.g. curl -X POST \
             http://{local}/api/v1/deployments -H 'Content-Type: application/json' -d '{{\"id\": \
             \"files\", \"start_command\": \"exec python3 -m http.server {{port}} --bind \
             127.0.0.1\", \"idle_retention\": \"3m\", \"max_instances\": 2}}', or start \
             with a file such as examples/autodeploy.toml"
        );
    }
    if more.is_empty() {
        gateway.serve(listener, shutdown_signal()).await;
    } else {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let (released, done) = tokio::sync::watch::channel(false);
        let mut workers = Vec::with_capacity(more.len());
        for (i, listener) in more.into_iter().enumerate() {
            let (gateway, stopping, done) = (gateway.clone(), stopping.clone(), done.clone());
            let worker = std::thread::Builder::new()
                .name(format!("autodeploy-{}", i + 1))
                .spawn(move || serve_thread(i + 1, gateway, listener, stopping, done))
                .context("cannot start a serving thread")?;
            workers.push(worker);
        }
        gateway
            .serve(listener, async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            })
            .await;
        // Tasks a request spawned on another thread's runtime (an instance's start among
        // them) lived until here: only now may those runtimes end.
        let _ = released.send(true);
        for worker in workers {
            let _ = worker.join();
        }
    }
    tracing::info!("stopped; every instance released");
    Ok(())
}

/// One more serving thread of the per-core runtime: its own single-threaded runtime and
/// listener, its own idle connections to instances (`slot`). Stops accepting when
/// `stopping` turns true, and keeps its runtime running until `done` does (the gateway's
/// instances released).
fn serve_thread(
    slot: usize,
    gateway: Gateway,
    listener: std::net::TcpListener,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    autodeploy_proxy::set_thread_slot(slot);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start a serving thread's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                gateway
                    .serve_listener(listener, async move {
                        let _ = stopping.wait_for(|s| *s).await;
                    })
                    .await;
            }
            Err(err) => tracing::error!(%err, "a serving thread cannot listen"),
        }
        let _ = done.wait_for(|d| *d).await;
    });
    runtime.shutdown_background();
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(%err, "cannot watch SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: draining requests, releasing instances");
}
