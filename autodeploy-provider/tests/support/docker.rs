//! Support for tests against a real Docker engine (shared with the proxy's tests through
//! `#[path]`): is there an engine, the stub image built from this workspace with no registry,
//! a TCP forward to the engine's socket (a second "host"), and cleanup by test label.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use autodeploy_provider::docker::scratch::ScratchImage;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::OnceCell;

/// The label every container and image a test creates carries, valued with the test's name.
pub const TEST_LABEL: &str = "autodeploy-test";
/// The engine's socket.
pub const SOCKET: &str = "/var/run/docker.sock";

const STUB_SOURCE: &str = include_str!("stub_server.rs");

/// The engine, or `None` after printing why the test is skipped. With
/// `AUTODEPLOY_REQUIRE_DOCKER=1` (set by `.ci/run`) a missing engine fails the test instead.
pub async fn engine(test: &str) -> Option<Docker> {
    let found = async {
        let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| e.to_string())?;
        docker.ping().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(docker)
    }
    .await;
    match found {
        Ok(docker) => {
            remove_containers(&docker, test).await;
            Some(docker)
        }
        Err(err) if std::env::var("AUTODEPLOY_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("AUTODEPLOY_REQUIRE_DOCKER=1 but no Docker engine answers: {err}")
        }
        Err(err) => {
            eprintln!("skipping {test}: no Docker engine answers ({err})");
            None
        }
    }
}

/// Removes every container labelled with `test` (a crashed run's leftovers, or this run's).
pub async fn remove_containers(docker: &Docker, test: &str) {
    for id in containers(docker, test).await {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        let _ = docker.remove_container(&id, Some(options)).await;
    }
}

/// The ids of every container (running or not) labelled with `test`.
pub async fn containers(docker: &Docker, test: &str) -> Vec<String> {
    listed(docker, test)
        .await
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// The instance ids (`autodeploy.instance` labels) of the containers labelled for `test`.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub async fn container_instances(docker: &Docker, test: &str) -> Vec<String> {
    listed(docker, test)
        .await
        .into_iter()
        .filter_map(|c| c.labels?.get("autodeploy.instance").cloned())
        .collect()
}

async fn listed(docker: &Docker, test: &str) -> Vec<bollard::models::ContainerSummary> {
    let filters = HashMap::from([("label", vec![format!("{TEST_LABEL}={test}")])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
}

static STUB: OnceCell<String> = OnceCell::const_new();
static STUB_HEALTHCHECK: OnceCell<String> = OnceCell::const_new();

/// The stub server's image (see `stub_server.rs`), built once per source version.
pub async fn stub_image(docker: &Docker) -> String {
    STUB.get_or_init(|| build_stub_image(docker, false))
        .await
        .clone()
}

/// The stub image with a HEALTHCHECK (`stub --health` every 300 ms).
pub async fn stub_image_with_healthcheck(docker: &Docker) -> String {
    STUB_HEALTHCHECK
        .get_or_init(|| build_stub_image(docker, true))
        .await
        .clone()
}

fn source_hash() -> u64 {
    // FNV-1a: stable across runs and processes, unlike std's RandomState.
    STUB_SOURCE.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Compiles the stub with `rustc` into `dir` (once per source version).
fn compile_stub(dir: &Path) -> PathBuf {
    let binary = dir.join(format!("stub-{:016x}", source_hash()));
    if binary.exists() {
        return binary;
    }
    std::fs::create_dir_all(dir).expect("stub dir");
    let source = dir.join(format!("stub-{:016x}.rs", source_hash()));
    std::fs::write(&source, STUB_SOURCE).expect("write stub source");
    let partial = dir.join(format!(
        "stub-{:016x}.{}",
        source_hash(),
        std::process::id()
    ));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=1",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&partial)
        .arg(&source)
        .status()
        .expect("run rustc");
    assert!(status.success(), "rustc failed on the stub server");
    std::fs::rename(&partial, &binary).expect("rename stub");
    binary
}

async fn build_stub_image(docker: &Docker, healthcheck: bool) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docker-stub");
    let binary = tokio::task::spawn_blocking(move || compile_stub(&dir))
        .await
        .expect("compile");
    let tag = format!(
        "autodeploy-test-stub:{:016x}{}",
        source_hash(),
        if healthcheck { "-health" } else { "" }
    );
    if docker.inspect_image(&tag).await.is_ok() {
        return tag;
    }
    let mut image = ScratchImage::new(binary, &tag)
        .name("stub")
        .label(TEST_LABEL, "docker-stub-image");
    if healthcheck {
        image = image.healthcheck("--interval=300ms --timeout=1s CMD [\"/stub\", \"--health\"]");
    }
    image.build(docker).await.expect("image build");
    tag
}

/// A TCP address that forwards every connection to the engine's socket: the same engine as
/// a second host. Runs until the test's runtime ends.
pub async fn tcp_forward() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forward");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut unix) = UnixStream::connect(SOCKET).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    format!("tcp://{addr}")
}

/// A TCP URL where nothing listens: a host whose engine does not answer.
pub async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("tcp://{addr}")
}
