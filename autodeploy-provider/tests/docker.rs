//! The Docker provider against the real engine, with a stub image built from this workspace
//! (no registry). Each test owns its containers through its own owner label and a test label,
//! removes them at start (a crashed run's) and at the end. Without an engine the tests print
//! why and pass, unless `AUTODEPLOY_REQUIRE_DOCKER=1` (CI), where they fail.
#![cfg(feature = "docker")]

#[path = "support/docker.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use autodeploy_core::{DeployConfig, GpuProvider, InstanceId, InstanceSpec, ProviderError};
use autodeploy_provider::Docker;
use autodeploy_provider::docker::{DockerConfig, DockerHost, PullPolicy};
use bollard::query_parameters::KillContainerOptionsBuilder;
use tokio::time::{Instant, timeout};

use support::{
    TEST_LABEL, containers, dead_url, engine, remove_containers, stub_image, tcp_forward,
};

/// A provider owned by `test`: its owner label and test label are the test's name.
fn provider(test: &str, hosts: Vec<DockerHost>) -> Docker {
    Docker::new(DockerConfig {
        hosts,
        owner: test.to_owned(),
        labels: BTreeMap::from([(TEST_LABEL.to_owned(), test.to_owned())]),
        stop_grace: Duration::from_secs(2),
        pull: PullPolicy::Never,
        ..DockerConfig::default()
    })
    .expect("config")
}

fn spec(deployment: &str, image: &str, env: &[(&str, &str)]) -> InstanceSpec {
    let mut config = DeployConfig::new(deployment, "", Duration::from_secs(60), 5);
    config.provider = "docker".into();
    config.image = Some(image.to_owned());
    config.port = 8080;
    config.start_timeout = Duration::from_secs(20);
    config.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    InstanceSpec::from_config(&config, InstanceId::generate())
}

async fn body(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn a_cold_start_is_one_labelled_container_ready_over_its_published_port() {
    let test = "docker-cold-start";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let docker = provider(test, Vec::new());
    let spec = spec("web", &image, &[]);
    let id = spec.instance;
    let began = Instant::now();
    let endpoint = docker.create(spec.clone()).await.expect("create");
    docker.wait_ready(id).await.expect("ready");
    let ready_after = began.elapsed();
    assert_eq!(endpoint.host, "127.0.0.1");
    let answer = body(&format!("http://{endpoint}/hello")).await;
    assert!(answer.contains(&format!("instance={id}")), "{answer}");
    assert!(answer.contains("path=/hello"), "{answer}");

    // A retried create of the same id makes no second container.
    assert_eq!(docker.create(spec).await.expect("retry"), endpoint);
    let ours = containers(&engine, test).await;
    assert_eq!(ours.len(), 1);
    let inspect = engine.inspect_container(&ours[0], None).await.unwrap();
    assert_eq!(
        inspect.name.as_deref(),
        Some(&*format!("/autodeploy-web-{id}"))
    );
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels["autodeploy.deployment"], "web");
    assert_eq!(labels["autodeploy.instance"], id.to_string());
    assert_eq!(labels["autodeploy.owner"], test);
    assert_eq!(labels["autodeploy.host"], "local");
    let listed = docker.list("web").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].endpoint.as_ref(), Some(&endpoint));
    assert_eq!(docker.host_of(id).as_deref(), Some("local"));

    let released = Instant::now();
    docker.release(id).await.expect("release");
    let release_took = released.elapsed();
    assert!(containers(&engine, test).await.is_empty());
    docker
        .release(id)
        .await
        .expect("a second release is a no-op");
    assert!(docker.list("web").await.unwrap().is_empty());
    eprintln!("docker cold start: ready after {ready_after:?}; release took {release_took:?}");
}

#[tokio::test]
async fn gpu_slots_span_two_hosts_and_a_third_instance_gets_no_capacity() {
    let test = "docker-gpu-slots";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    // One engine reached twice: its socket, and a TCP forward to it. No NVIDIA runtime here,
    // so the GPUs are given through NVIDIA_VISIBLE_DEVICES only (device_requests = false);
    // the DeviceRequest itself is checked in the next test and in create.rs's unit tests.
    let host = |name: &str, url: Option<String>| DockerHost {
        name: name.to_owned(),
        url,
        gpus: vec!["0".into()],
        device_requests: false,
        ..DockerHost::local()
    };
    let docker = provider(
        test,
        vec![host("a", None), host("b", Some(tcp_forward().await))],
    );
    let mut specs: Vec<InstanceSpec> = (0..3)
        .map(|_| {
            let mut s = spec("gpu", &image, &[]);
            s.gpu.count = 1;
            s
        })
        .collect();
    let third = specs.pop().unwrap();
    let mut hosts = Vec::new();
    for s in &specs {
        let endpoint = docker.create(s.clone()).await.expect("create");
        docker.wait_ready(s.instance).await.expect("ready");
        let answer = body(&format!("http://{endpoint}/")).await;
        assert!(answer.contains("gpus=0"), "{answer}");
        hosts.push(docker.host_of(s.instance).unwrap());
    }
    hosts.sort();
    assert_eq!(hosts, ["a", "b"], "one instance per host");
    let err = docker.create(third.clone()).await.unwrap_err();
    assert!(matches!(err, ProviderError::NoCapacity(_)), "{err}");
    assert_eq!(containers(&engine, test).await.len(), 2);

    // A released slot is free again.
    docker.release(specs[0].instance).await.unwrap();
    docker.create(third.clone()).await.expect("the freed slot");
    docker.release(third.instance).await.unwrap();
    docker.release(specs[1].instance).await.unwrap();
    assert!(containers(&engine, test).await.is_empty());
}

#[tokio::test]
async fn a_gpu_instance_asks_the_engine_for_nvidia_devices() {
    let test = "docker-gpu-request";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let docker = provider(
        test,
        vec![DockerHost {
            gpus: vec!["0".into(), "1".into()],
            ..DockerHost::local()
        }],
    );
    let mut spec = spec("gpu", &image, &[]);
    spec.gpu.count = 2;
    match docker.create(spec.clone()).await {
        // An engine with the NVIDIA runtime starts it: the device request is on it.
        Ok(_) => {
            let ours = containers(&engine, test).await;
            let inspect = engine.inspect_container(&ours[0], None).await.unwrap();
            let request = &inspect.host_config.unwrap().device_requests.unwrap()[0];
            assert_eq!(request.driver.as_deref(), Some("nvidia"));
            assert_eq!(request.device_ids, Some(vec!["0".into(), "1".into()]));
            let env = inspect.config.unwrap().env.unwrap();
            assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=0,1".to_owned()));
            docker.release(spec.instance).await.unwrap();
        }
        // This engine has none: it refuses to start a container that asks for the nvidia
        // driver, which proves the request reached it; the failed container is removed and
        // its slots returned.
        Err(ProviderError::StartFailed { reason, .. }) => {
            assert!(reason.contains("nvidia"), "{reason}");
            assert!(containers(&engine, test).await.is_empty());
            let mut again = spec.clone();
            again.instance = InstanceId::generate();
            let err = docker.create(again).await.unwrap_err();
            assert!(
                !matches!(err, ProviderError::NoCapacity(_)),
                "slots were returned: {err}"
            );
        }
        Err(other) => panic!("unexpected {other}"),
    }
    remove_containers(&engine, test).await;
}

#[tokio::test]
async fn a_container_that_exits_before_ready_fails_with_its_last_log_lines() {
    let test = "docker-exit-before-ready";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let docker = provider(test, Vec::new());
    let spec = spec("crashy", &image, &[("STUB_EXIT", "3")]);
    let id = spec.instance;
    let began = Instant::now();
    let result = match docker.create(spec).await {
        Ok(_) => docker.wait_ready(id).await,
        Err(err) => Err(err),
    };
    let took = began.elapsed();
    let Err(ProviderError::StartFailed { reason, last_log }) = result else {
        panic!("expected StartFailed, got {result:?}");
    };
    assert!(reason.contains("exited with status 3"), "{reason}");
    assert!(
        last_log.iter().any(|l| l.contains("stub log line 3")),
        "{last_log:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    docker.release(id).await.unwrap();
    assert!(containers(&engine, test).await.is_empty());
}

#[tokio::test]
async fn a_container_never_ready_times_out_and_is_removed() {
    let test = "docker-never-ready";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let docker = provider(test, Vec::new());
    let mut spec = spec("mute", &image, &[("STUB_NEVER_LISTEN", "1")]);
    spec.start_timeout = Duration::from_secs(2);
    let id = spec.instance;
    docker.create(spec).await.expect("create");
    let began = Instant::now();
    let err = docker.wait_ready(id).await.unwrap_err();
    let ProviderError::StartTimedOut {
        last_log, tried, ..
    } = &err
    else {
        panic!("expected StartTimedOut, got {err}");
    };
    assert!(began.elapsed() < Duration::from_secs(6));
    assert!(tried.contains("removed"), "{tried}");
    assert!(
        last_log.iter().any(|l| l.contains("never listening")),
        "{last_log:?}"
    );
    assert!(
        containers(&engine, test).await.is_empty(),
        "removed at the timeout"
    );
    docker.release(id).await.unwrap();
}

#[tokio::test]
async fn a_missing_image_fails_at_once() {
    let test = "docker-image-missing";
    let Some(engine) = engine(test).await else {
        return;
    };
    for pull in [PullPolicy::Never, PullPolicy::IfMissing] {
        let docker = Docker::new(DockerConfig {
            pull,
            owner: test.to_owned(),
            labels: BTreeMap::from([(TEST_LABEL.to_owned(), test.to_owned())]),
            ..DockerConfig::default()
        })
        .unwrap();
        let spec = spec("ghost", "autodeploy-test-no-such-image:none", &[]);
        let began = Instant::now();
        let err = timeout(Duration::from_secs(30), docker.create(spec))
            .await
            .expect("no hang")
            .unwrap_err();
        let took = began.elapsed();
        assert!(
            err.to_string()
                .contains("image not found: autodeploy-test-no-such-image:none"),
            "{err}"
        );
        // Never pulling: the engine's own answer. Pulling: no registry here, or a registry
        // that has no such image; either answers within seconds, never at start_timeout.
        let limit = match pull {
            PullPolicy::Never => Duration::from_secs(1),
            _ => Duration::from_secs(10),
        };
        assert!(took < limit, "{pull:?}: {took:?}");
        eprintln!("image missing ({pull:?}): failed after {took:?}");
    }
    assert!(containers(&engine, test).await.is_empty());
}

#[tokio::test]
async fn a_killed_container_is_reported_as_a_death() {
    let test = "docker-killed";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let docker = provider(test, Vec::new());
    let spec = spec("victim", &image, &[]);
    let id = spec.instance;
    docker.create(spec).await.unwrap();
    docker.wait_ready(id).await.unwrap();
    let ours = containers(&engine, test).await;
    let killed = Instant::now();
    engine
        .kill_container(
            &ours[0],
            Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
        )
        .await
        .unwrap();
    let report = timeout(Duration::from_secs(10), docker.wait_exit(id))
        .await
        .expect("the death is reported");
    assert!(report.reason.contains("137"), "{report:?}");
    eprintln!("docker kill reported after {:?}", killed.elapsed());
    docker.release(id).await.unwrap();
    assert!(containers(&engine, test).await.is_empty());
    // Released: wait_exit of an unknown id resolves at once.
    timeout(Duration::from_secs(1), docker.wait_exit(id))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_host_that_does_not_answer_is_skipped() {
    let test = "docker-dead-host";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let dead = DockerHost {
        name: "dead".into(),
        url: Some(dead_url().await),
        ..DockerHost::local()
    };
    let live = DockerHost {
        name: "live".into(),
        ..DockerHost::local()
    };
    let docker = provider(test, vec![dead, live]);
    let began = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let spec = spec("spread", &image, &[]);
        ids.push(spec.instance);
        timeout(Duration::from_secs(20), docker.create(spec))
            .await
            .expect("no hang")
            .expect("placed on the live host");
    }
    for id in &ids {
        docker.wait_ready(*id).await.unwrap();
        assert_eq!(docker.host_of(*id).as_deref(), Some("live"));
    }
    assert!(docker.skipped()["dead"] >= 1);
    assert!(began.elapsed() < Duration::from_secs(15));
    // Listing skips the dead host too.
    assert_eq!(docker.list_owned().await.unwrap().len(), 2);
    for id in ids {
        docker.release(id).await.unwrap();
    }
    assert!(containers(&engine, test).await.is_empty());
}

#[tokio::test]
async fn a_restarted_provider_finds_what_its_owner_left_and_releases_it() {
    let test = "docker-restart";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let first = provider(test, Vec::new());
    let spec = spec("survivor", &image, &[]);
    let id = spec.instance;
    first.create(spec).await.unwrap();
    first.wait_ready(id).await.unwrap();
    drop(first); // as a crashed gateway would: the container keeps running

    let other_owner = provider("docker-restart-someone-else", Vec::new());
    assert!(other_owner.list_owned().await.unwrap().is_empty());
    let second = provider(test, Vec::new());
    let found = second.list_owned().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    assert_eq!(found[0].labels["autodeploy.deployment"], "survivor");
    assert_eq!(second.list("survivor").await.unwrap().len(), 1);
    assert!(second.list("other").await.unwrap().is_empty());
    second.release(id).await.unwrap();
    assert!(containers(&engine, test).await.is_empty());
}

#[tokio::test]
async fn an_image_healthcheck_must_pass_before_ready() {
    let test = "docker-healthcheck";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = support::stub_image_with_healthcheck(&engine).await;
    let docker = provider(test, Vec::new());
    let spec = spec("checked", &image, &[]);
    let id = spec.instance;
    docker.create(spec).await.unwrap();
    docker.wait_ready(id).await.unwrap();
    let ours = containers(&engine, test).await;
    let inspect = engine.inspect_container(&ours[0], None).await.unwrap();
    let health = inspect.state.unwrap().health.unwrap().status.unwrap();
    assert_eq!(health.to_string(), "healthy");
    docker.release(id).await.unwrap();
    assert!(containers(&engine, test).await.is_empty());
}

#[tokio::test]
async fn a_container_that_appears_after_the_restart_listing_is_swept() {
    let test = "docker-orphan-sweep";
    let Some(engine) = engine(test).await else {
        return;
    };
    let image = stub_image(&engine).await;
    let docker = provider(test, Vec::new());
    assert!(docker.list_owned().await.unwrap().is_empty());
    // What a crashed gateway's create leaves when the engine finishes it after the new
    // gateway listed the host: a container with our labels that nobody holds.
    let labels = std::collections::HashMap::from([
        ("autodeploy.owner".to_owned(), test.to_owned()),
        ("autodeploy.host".to_owned(), "local".to_owned()),
        ("autodeploy.deployment".to_owned(), "web".to_owned()),
        (
            "autodeploy.instance".to_owned(),
            InstanceId::generate().to_string(),
        ),
        (TEST_LABEL.to_owned(), test.to_owned()),
    ]);
    let body = bollard::models::ContainerCreateBody {
        image: Some(image),
        labels: Some(labels),
        ..Default::default()
    };
    engine.create_container(None, body).await.unwrap();
    assert_eq!(containers(&engine, test).await.len(), 1);
    let began = Instant::now();
    while !containers(&engine, test).await.is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "the orphan was not swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its own containers are never swept.
    let spec = spec("web", &support::stub_image(&engine).await, &[]);
    let id = spec.instance;
    docker.create(spec).await.unwrap();
    docker.wait_ready(id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(containers(&engine, test).await.len(), 1);
    docker.release(id).await.unwrap();
    eprintln!("orphan swept after {:?}", began.elapsed());
}
