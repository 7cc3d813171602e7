//! Chaos: the real `autodeploy` binary, on the local-process provider with a state directory,
//! killed with SIGKILL under load and restarted, again and again. A crash at any lifecycle
//! step (create sent, waiting for ready, serving, releasing) must leave nothing running once
//! the next gateway is up, and nothing at all after the last one stops.
//!
//! `CHAOS_CYCLES=N` runs N cycles instead of 20 (`scripts/chaos.sh` runs a longer one).

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::binary::{GatewayProcess, status, wait_until_serving, write_config};
use support::local::{MarkerGuard, free_port, marked_processes, marker};

/// How many instances `pids` belong to: their distinct process groups.
fn instances_of(pids: &[i32]) -> usize {
    let groups: std::collections::HashSet<String> = pids
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the `(comm)` field: state, ppid, pgrp.
            let after = stat.rsplit_once(") ")?.1;
            after.split(' ').nth(2).map(str::to_owned)
        })
        .collect();
    groups.len()
}

fn wait_for_no_marked(marker: &str, within: Duration) -> Result<Duration, Vec<i32>> {
    let began = Instant::now();
    loop {
        let left = marked_processes(marker);
        if left.is_empty() {
            return Ok(began.elapsed());
        }
        if began.elapsed() > within {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn twenty_sigkill_restart_cycles_under_load_leak_no_instance() {
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let marker = marker("chaos");
    let _guard = MarkerGuard(marker.clone());
    let config = write_config(dir.path(), port, &marker);
    let began = Instant::now();
    let served = Arc::new(AtomicUsize::new(0));
    let mut orphans_released = 0;
    let mut slowest_cleanup = Duration::ZERO;

    for cycle in 0..cycles {
        let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
        wait_until_serving(port);
        // Whatever the killed gateway left (running, starting, releasing) is gone before
        // this one takes its first request.
        match wait_for_no_marked(&marker, Duration::from_secs(10)) {
            Ok(took) => slowest_cleanup = slowest_cleanup.max(took),
            Err(left) => panic!("cycle {cycle}: leaked processes after restart: {left:?}"),
        }

        // Load: cold starts, scale-outs, steady requests, from two clients.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|n| {
                let stop = stop.clone();
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut i = n;
                    while !stop.load(Ordering::Relaxed) {
                        let rule = (i % 3 == 0).then_some("scale-out");
                        if status(port, "/d/files/", rule) == 200 {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // Kill at a different moment each cycle: before a create, while an instance boots,
        // while it serves.
        let delay = [0, 20, 60, 120, 200, 350, 600][cycle % 7];
        std::thread::sleep(Duration::from_millis(delay));
        let mut child = gateway.take();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        // What the crash left running (and billing) for the next gateway to find: one
        // process group per instance (a `python3` shim may add helper processes).
        orphans_released += instances_of(&marked_processes(&marker));
    }

    // The last restart: it finds and releases everything, serves, and stops cleanly.
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    wait_until_serving(port);
    wait_for_no_marked(&marker, Duration::from_secs(10))
        .unwrap_or_else(|left| panic!("leaked processes after the last restart: {left:?}"));
    assert_eq!(status(port, "/d/files/", None), 200);
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let leaked = marked_processes(&marker);
    assert_eq!(
        leaked,
        Vec::<i32>::new(),
        "processes leaked after the last cycle"
    );
    eprintln!(
        "chaos: {cycles} SIGKILL/restart cycles in {:?}, {} requests served, {orphans_released} \
         orphaned instances released by restarts (slowest cleanup {slowest_cleanup:?}), leaked after the \
         last cycle: {}",
        began.elapsed(),
        served.load(Ordering::Relaxed),
        leaked.len()
    );
}
