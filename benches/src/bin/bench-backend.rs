//! `bench-backend [--host A] [--port N] [--threads N] [--boot-ms B]`: the fast backend of the load
//! comparison (`GET /` a small body, `GET /1m` one MiB, `GET /sleep?ms=N` after N ms) on
//! `A:N` (default `127.0.0.1` and a free port; `--host 0.0.0.0` inside a container). `--boot-ms` waits that long before listening, as a
//! model server loading its weights would (`burst-scaling` uses 1,000).
//!
//! Prints one line once it accepts connections:
//! `bench-backend listening on ADDR main_unix_ns=T0 listen_unix_ns=T1`, the wall-clock times
//! at which `main` began and the port was bound, so the cold-start measurement can subtract
//! the instance's own start-up time. `--threads 1` (the default) runs a single-threaded
//! runtime, like one nginx worker. SIGTERM ends it at once (also as a container's PID 1).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() -> ExitCode {
    let main_ns = unix_ns();
    let mut host = String::from("127.0.0.1");
    let mut port: u16 = 0;
    let mut threads: usize = 1;
    let mut boot_ms: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let parsed = match (arg.as_str(), value.as_deref()) {
            ("--host", Some(v)) => {
                host = v.to_owned();
                true
            }
            ("--port", Some(v)) => v.parse().map(|p| port = p).is_ok(),
            ("--threads", Some(v)) => v.parse().map(|t| threads = t).is_ok(),
            ("--boot-ms", Some(v)) => v.parse().map(|b| boot_ms = b).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!("usage: bench-backend [--host A] [--port N] [--threads N] [--boot-ms B]");
            return ExitCode::from(2);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(boot_ms));
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench-backend: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("bench-backend: cannot listen on port {port}: {err}");
                return ExitCode::FAILURE;
            }
        };
        let listen_ns = unix_ns();
        match listener.local_addr() {
            Ok(addr) => println!(
                "bench-backend listening on {addr} main_unix_ns={main_ns} listen_unix_ns={listen_ns}"
            ),
            Err(err) => eprintln!("bench-backend: {err}"),
        }
        // SIGTERM ends it: as a container's PID 1 it would otherwise be ignored, and every
        // release would wait for the engine's kill.
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    eprintln!("bench-backend: cannot watch SIGTERM: {err}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            () = autodeploy_benches::backend::serve(listener) => {}
            _ = terminate.recv() => {}
        }
        ExitCode::SUCCESS
    })
}
