//! The gateway with the Docker provider against the real engine: a cold start through a link
//! to a container, `docker kill` in the middle of a request, and the `autodeploy` binary
//! killed with SIGKILL at any moment under load and restarted (`CHAOS_CYCLES`, default 20;
//! `scripts/chaos.sh docker` runs 200), which must leave no container that nobody owns.
//! Without an engine the tests print why and pass, unless `AUTODEPLOY_REQUIRE_DOCKER=1`.
#![cfg(feature = "docker")]

#[path = "../../autodeploy-provider/tests/support/docker.rs"]
mod docker_support;
mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodeploy_proxy::{Gateway, GatewayConfig};
use bollard::query_parameters::KillContainerOptionsBuilder;
use docker_support::{
    container_instances, containers, engine, remove_containers, stub_image,
    stub_image_with_healthcheck,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::binary::{GatewayProcess, status, wait_until_serving};
use support::local::free_port;
use support::{client, eventually};
use tokio::net::TcpListener;

/// A config: the gateway on `port`, deployment `web` running `image` as a container owned by
/// (and labelled with) `test`, each container waiting `delay_ms` before it listens.
fn config_text(test: &str, port: u16, image: &str, delay_ms: u32) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:{port}"
drain_timeout = "5s"

[providers.docker]
owner = "{test}"
pull = "never"
stop_grace = "2s"
labels = {{ "autodeploy-test" = "{test}" }}

[[deployment]]
id = "web"
provider = "docker"
image = "{image}"
port = 8080
env = {{ STUB_DELAY_MS = "{delay_ms}" }}
readiness = {{ path = "/health" }}
idle_retention = "10m"
max_instances = 2
start_timeout = "20s"
queue = {{ timeout = "30s" }}
"#
    )
}

fn code_of(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["code"].as_u64()
}

async fn start(test: &str, image: &str) -> (Gateway, autodeploy_proxy::Serving, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = GatewayConfig::parse(&config_text(test, port, image, 0)).unwrap();
    config.validate().expect("valid");
    let gateway = Gateway::from_config(config).await.expect("gateway");
    let serving = gateway.spawn(listener);
    (gateway, serving, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn a_link_cold_starts_a_container_and_names_it_in_deploy_route_target() {
    let test = "gw-docker-cold-start";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let (gateway, serving, base) = start(test, &image).await;
    let began = Instant::now();
    let resp = client()
        .get(format!("{base}/d/web/hello?x=1"))
        .send()
        .await
        .unwrap();
    let first_byte = began.elapsed();
    assert_eq!(resp.status(), 200);
    let target = resp.headers()["deploy-route-target"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.text().await.unwrap();
    assert!(body.contains(&format!("instance={target}")), "{body}");
    assert!(body.contains("path=/hello?x=1"), "{body}");
    assert_eq!(containers(&engine, test).await.len(), 1);

    // The API shows the instance, reached at the host's advertised address.
    let detail: serde_json::Value = client()
        .get(format!("{base}/api/v1/deployments/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["instances"][0]["id"], target.as_str());
    assert_eq!(detail["instances"][0]["endpoint"]["host"], "127.0.0.1");
    assert_eq!(
        detail["instances"][0]["host"], "local",
        "the docker host's name"
    );
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "autodeploy_provider_docker_hosts_skipped_total{provider=\"docker\",host=\"local\"} 0"
        ),
        "{metrics}"
    );

    drop(gateway);
    tokio::time::timeout(Duration::from_secs(20), serving.stop())
        .await
        .expect("stops");
    assert!(
        containers(&engine, test).await.is_empty(),
        "released at shutdown"
    );
    eprintln!("gateway cold start to a container: first byte after {first_byte:?}");
}

#[tokio::test]
async fn docker_kill_mid_request_is_1010_and_the_next_request_gets_a_new_container() {
    let test = "gw-docker-kill";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let (gateway, serving, base) = start(test, &image).await;
    let first = client().get(format!("{base}/d/web/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let victim = first.headers()["deploy-route-target"]
        .to_str()
        .unwrap()
        .to_owned();
    let slow = tokio::spawn(client().get(format!("{base}/d/web/sleep?ms=20000")).send());
    let controller = gateway.controller("web").unwrap();
    eventually("the slow request is in flight", || {
        controller.instances().iter().any(|i| i.in_flight == 1)
    })
    .await;
    let ours = containers(&engine, test).await;
    assert_eq!(ours.len(), 1);
    let killed = Instant::now();
    engine
        .kill_container(
            &ours[0],
            Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
        )
        .await
        .unwrap();
    let resp = slow.await.unwrap().unwrap();
    let answered_after = killed.elapsed();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!((status, code_of(&body)), (502, Some(1010)), "{body}");
    assert!(
        answered_after < Duration::from_secs(10),
        "{answered_after:?}"
    );

    let next = client().get(format!("{base}/d/web/")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_ne!(next.headers()["deploy-route-target"], victim.as_str());
    // The dead container is released: only the new one is left.
    let began = Instant::now();
    while containers(&engine, test).await.len() != 1 {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "dead container not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gateway);
    tokio::time::timeout(Duration::from_secs(20), serving.stop())
        .await
        .expect("stops");
    assert!(containers(&engine, test).await.is_empty());
    eprintln!("docker kill mid-request: 502/1010 after {answered_after:?}");
}

/// Waits until every container of `test` is one the gateway on `port` holds (adopted after
/// a restart, or its own): the time it took, or the instances nobody owns.
async fn wait_until_every_container_is_owned(
    engine: &bollard::Docker,
    test: &str,
    port: u16,
    within: Duration,
) -> Result<Duration, Vec<String>> {
    let began = Instant::now();
    loop {
        let api = tokio::task::block_in_place(|| {
            support::binary::get(port, "/api/v1/deployments/web/instances", None)
        })
        .map(|(_, body)| body)
        .unwrap_or_default();
        let unowned: Vec<String> = container_instances(engine, test)
            .await
            .into_iter()
            .filter(|id| !api.contains(&format!("\"{id}\"")))
            .collect();
        if unowned.is_empty() {
            return Ok(began.elapsed());
        }
        if began.elapsed() > within {
            return Err(unowned);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no container of `test` is left; the time it took, or what is left.
async fn wait_for_no_container(
    engine: &bollard::Docker,
    test: &str,
    within: Duration,
) -> Result<Duration, Vec<String>> {
    let began = Instant::now();
    loop {
        let left = containers(engine, test).await;
        if left.is_empty() {
            return Ok(began.elapsed());
        }
        if began.elapsed() > within {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_cycles_under_load_leave_no_container_nobody_owns() {
    let test = "gw-docker-chaos";
    let Some(engine) = engine(test).await else {
        return;
    };
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let image = stub_image(&engine).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("autodeploy.toml");
    // Containers take 300 ms to listen, so kills land before, during and after readiness.
    std::fs::write(&config, config_text(test, port, &image, 300)).unwrap();
    let began = Instant::now();
    let served = Arc::new(AtomicUsize::new(0));
    let mut orphans_released = 0;
    let mut slowest_cleanup = Duration::ZERO;

    for cycle in 0..cycles {
        let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
        tokio::task::block_in_place(|| wait_until_serving(port));
        // Whatever the killed gateway left (running, starting, releasing) is adopted (a
        // running container of this image) or gone: no container is left that nobody owns.
        match wait_until_every_container_is_owned(&engine, test, port, Duration::from_secs(15))
            .await
        {
            Ok(took) => slowest_cleanup = slowest_cleanup.max(took),
            Err(left) => panic!("cycle {cycle}: containers left after restart: {left:?}"),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|n| {
                let stop = stop.clone();
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut i = n;
                    while !stop.load(Ordering::Relaxed) {
                        let rule = (i % 3 == 0).then_some("scale-out");
                        if status(port, "/d/web/", rule) == 200 {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // Kill at a different moment each cycle: before a create, while a container boots,
        // while it serves.
        let delay = [0, 50, 150, 300, 500, 800, 1200][cycle % 7];
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut child = gateway.take();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        orphans_released += containers(&engine, test).await.len();
    }

    // The last restart adopts or releases everything, serves, and stops cleanly.
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    tokio::task::block_in_place(|| wait_until_serving(port));
    if let Err(left) =
        wait_until_every_container_is_owned(&engine, test, port, Duration::from_secs(15)).await
    {
        panic!("containers nobody owns after the last restart: {left:?}");
    }
    assert_eq!(
        tokio::task::block_in_place(|| status(port, "/d/web/", None)),
        200
    );
    let held = containers(&engine, test).await.len();
    assert!(
        (1..=2).contains(&held),
        "{held} containers for max_instances = 2"
    );
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let leaked = containers(&engine, test).await;
    remove_containers(&engine, test).await;
    assert_eq!(
        leaked,
        Vec::<String>::new(),
        "containers leaked after the last cycle"
    );
    eprintln!(
        "docker chaos: {cycles} SIGKILL/restart cycles in {:?}, {} requests served, \
         {orphans_released} containers left at the kills, adopted or released by restarts (slowest settling \
         {slowest_cleanup:?}), leaked after the last cycle: {}",
        began.elapsed(),
        served.load(Ordering::Relaxed),
        leaked.len()
    );
}

/// The instance named in an answer's `Deploy-Route-Target` header.
fn route_target(answer: &str) -> Option<String> {
    answer.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("deploy-route-target")
            .then(|| value.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_a_running_container_and_releases_one_of_another_image() {
    let test = "gw-docker-adopt";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let other_image = stub_image_with_healthcheck(&engine).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("autodeploy.toml");
    std::fs::write(&config, config_text(test, port, &image, 0)).unwrap();
    let serve_once = || {
        tokio::task::block_in_place(|| {
            wait_until_serving(port);
            let (code, answer) = support::binary::get(port, "/d/web/", None).expect("answer");
            assert_eq!(code, 200, "{answer}");
            route_target(&answer).expect("Deploy-Route-Target")
        })
    };
    let sigkill = |gateway: &mut GatewayProcess| {
        let mut child = gateway.take();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
    };

    // A gateway starts a container, then dies without releasing it.
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    let first = serve_once();
    sigkill(&mut gateway);
    assert_eq!(
        container_instances(&engine, test).await,
        std::slice::from_ref(&first)
    );

    // The restarted gateway takes it over: the same instance serves, no second container.
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    assert_eq!(serve_once(), first, "the running container was adopted");
    assert_eq!(
        container_instances(&engine, test).await,
        std::slice::from_ref(&first)
    );
    sigkill(&mut gateway);

    // With another image configured, the old container is no longer the deployment's: the
    // restarted gateway releases it instead.
    std::fs::write(&config, config_text(test, port, &other_image, 0)).unwrap();
    let mut gateway = GatewayProcess::spawn(&config, Stdio::null());
    tokio::task::block_in_place(|| wait_until_serving(port));
    let gone = wait_for_no_container(&engine, test, Duration::from_secs(15)).await;
    let mut child = gateway.take();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let exit = child.wait().unwrap();
    remove_containers(&engine, test).await;
    if let Err(left) = gone {
        panic!("a container of the old image was kept: {left:?}");
    }
    assert!(exit.success(), "{exit:?}");
}
