//! The `autodeploy` binary with `provider = "runpod"` pointed at the fake RunPod API
//! (autodeploy-provider's test support): the seed's walkthrough 2 end to end (scale-out to
//! the cap, 1007, random and round-robin over both pods, an instance id pinning one, 1006),
//! exactly one create per pod and one delete per release, a restart after SIGKILL that
//! releases what the killed gateway left, a pod the cloud ends released and replaced at the
//! next request, and the API key in no log line, answer or metric.

#[path = "../../autodeploy-provider/tests/support/cloud/mod.rs"]
mod cloud;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cloud::{FakeCloud, GOOD_KEY, runpod as fake};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const QUOTA: &str = r#"{"code": 1007, "msg": "deployment replica quota exceeded"}"#;
const NOT_FOUND: &str = r#"{"code": 1006, "msg": "route target not found"}"#;
const CREATE: cloud::ApiCall = ("POST", "/v1/pods", "");
const DELETE: cloud::ApiCall = ("DELETE", "/v1/pods/*", "");

/// The gateway process, killed on drop.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, port: u16, fake: &FakeCloud) -> std::path::PathBuf {
    let path = dir.join("autodeploy.toml");
    let config = format!(
        r#"
[gateway]
listen = "127.0.0.1:{port}"
drain_timeout = "5s"

[providers.runpod]
api_base = "{api}"
api_key_env = "AUTODEPLOY_TEST_RUNPOD_KEY"
access = "tcp"
request_timeout = "2s"
poll_min = "20ms"
poll_max = "100ms"
release_confirm_timeout = "5s"

# Seed walkthrough 2: python http.server, at most two instances.
[[deployment]]
id = "files"
provider = "runpod"
image = "python:3.12-slim"
gpu = {{ kind = "NVIDIA GeForce RTX 4090", count = 1 }}
port = 8080
start_command = "exec python3 -m http.server {{port}} --bind 127.0.0.1"
idle_retention = "10m"
max_instances = 2
start_timeout = "30s"
price_per_hour = 0.74
"#,
        api = fake::api_base(fake),
    );
    std::fs::write(&path, config).unwrap();
    path
}

fn spawn(config: &Path, log: &Path) -> Gateway {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_autodeploy"))
        .args(["serve", "--config"])
        .arg(config)
        .env("AUTODEPLOY_TEST_RUNPOD_KEY", GOOD_KEY)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Gateway(child)
}

async fn wait_serving(base: &str) {
    for _ in 0..400 {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

async fn get(url: &str, rule: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(rule) = rule {
        req = req.header("Deploy-Route-Rule", rule);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let target = response
        .headers()
        .get("deploy-route-target")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, target, response.text().await.unwrap())
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_2_on_runpod_end_to_end_then_sigterm_releases_every_pod() {
    let fake = fake::start().await;
    fake.faults(|x| x.address_after_reads = 2);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), port, &fake);
    let log = dir.path().join("gateway.log");
    let mut gateway = spawn(&config, &log);
    wait_serving(&base).await;
    let link = format!("{base}/d/files/");

    // The first request cold-starts a pod and is served by it.
    let (status, first, body) = get(&link, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Directory listing"),
        "python's http.server answered: {body}"
    );
    let first = first.expect("Deploy-Route-Target");
    assert_eq!(fake.calls(CREATE), 1);

    // scale-out starts the second; the third is refused at the cap.
    let (status, second, _) = get(&link, Some("scale-out")).await;
    assert_eq!(status, 200);
    let second = second.unwrap();
    assert_ne!(first, second);
    let (status, _, body) = get(&link, Some("scale-out")).await;
    assert_eq!((status, body.as_str()), (429, QUOTA));
    assert_eq!(
        fake.calls(CREATE),
        2,
        "one create per pod: {:?}",
        fake.log()
    );
    assert_eq!(fake.created(), 2);

    // random and round-robin spread over both; an id pins exactly one; unknown ids 1006.
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (status, target, _) = get(&link, Some("random")).await;
        assert_eq!(status, 200);
        seen.insert(target.unwrap());
    }
    assert_eq!(seen.len(), 2, "random reached both pods");
    let (_, a, _) = get(&link, Some("round-robin")).await;
    let (_, b, _) = get(&link, Some("round-robin")).await;
    assert_ne!(a, b, "round-robin alternates");
    for _ in 0..3 {
        let (status, target, _) = get(&link, Some(&second)).await;
        assert_eq!((status, target.as_deref()), (200, Some(second.as_str())));
    }
    let (status, _, body) = get(&link, Some("zzzzzzzz")).await;
    assert_eq!((status, body.as_str()), (404, NOT_FOUND));

    // The key appears in no answer of the management API nor in the metrics.
    for path in [
        "/api/v1/deployments",
        "/api/v1/deployments/files",
        "/metrics",
    ] {
        let (_, _, body) = get(&format!("{base}{path}"), None).await;
        assert!(!body.contains(GOOD_KEY), "{path} shows the key");
    }

    // SIGTERM: every pod deleted once, the cloud confirms, nothing left billing.
    kill(Pid::from_raw(gateway.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = gateway.0.wait().unwrap();
        std::mem::forget(gateway);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(fake.calls(DELETE), 2, "{:?}", fake.log());
    assert_eq!(fake.deleted(), 2);
    assert!(fake.live().is_empty(), "{:?}", fake.live());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("cloud instance created"),
        "the log is the gateway's"
    );
    assert!(!logs.contains(GOOD_KEY), "the key is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_sigkill_releases_the_pods_the_killed_gateway_left() {
    let fake = fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), port, &fake);
    let gateway = spawn(&config, &dir.path().join("first.log"));
    wait_serving(&base).await;
    let link = format!("{base}/d/files/");
    assert_eq!(get(&link, None).await.0, 200);
    assert_eq!(get(&link, Some("scale-out")).await.0, 200);
    assert_eq!(fake.live().len(), 2);
    drop(gateway); // SIGKILL: nothing released

    assert_eq!(fake.calls(DELETE), 0);
    let _second = spawn(&config, &dir.path().join("second.log"));
    wait_serving(&base).await;
    eventually("the survivors are released", || fake.live().is_empty()).await;
    assert_eq!(
        fake.calls(DELETE),
        2,
        "one delete per survivor: {:?}",
        fake.log()
    );
    assert_eq!(fake.created(), 2, "nothing created twice");

    // The deployment still serves, from a new pod.
    assert_eq!(get(&link, None).await.0, 200);
    assert_eq!(fake.created(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_cloud_ends_is_released_and_the_next_request_gets_a_new_one() {
    let fake = fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), port, &fake);
    let _gateway = spawn(&config, &dir.path().join("gateway.log"));
    wait_serving(&base).await;
    let link = format!("{base}/d/files/");
    let (status, first, _) = get(&link, None).await;
    assert_eq!(status, 200);
    let pod = fake.live().pop().expect("one pod");

    // The "container" dies; the cloud reports the pod EXITED.
    fake.kill(&pod).await;
    eventually("the gateway notices the death and deletes the pod", || {
        fake.calls(DELETE) == 1
    })
    .await;
    let (status, second, _) = get(&link, None).await;
    assert_eq!(status, 200, "the next request is served");
    assert_ne!(first, second, "by a new instance");
    assert_eq!(fake.created(), 2, "{:?}", fake.log());
}
