//! A gateway on a loopback port with the simulated provider, stopped (and every instance
//! released) when the test ends, on failure too.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{Controller, DeployConfig, GpuProvider};
use autodeploy_provider::{Simulated, SimulatedConfig};
use autodeploy_proxy::{Gateway, GatewaySettings, Serving};
use tokio::net::TcpListener;

pub mod binary;
pub mod local;
pub mod recording;

/// A running gateway and its simulated provider.
pub struct TestGateway {
    pub base: String,
    pub gateway: Gateway,
    pub sim: Arc<Simulated>,
    serving: Option<Serving>,
}

/// A deployment on the simulated provider.
pub fn deployment(id: &str, max_instances: u32, idle_retention: Duration) -> DeployConfig {
    let mut config = DeployConfig::new(id, "simulated", idle_retention, max_instances);
    config.provider = "simulated".into();
    config.queue.timeout = Duration::from_secs(20);
    config.start_timeout = Duration::from_secs(20);
    config
}

/// A deployment `id` on the `fixed` provider of [`TestGateway::fixed`].
pub fn fixed_deployment(id: &str) -> DeployConfig {
    let mut config = DeployConfig::new(id, "fixed", Duration::from_secs(60), 1);
    config.provider = "fixed".into();
    config
}

pub fn sim(boot: Duration) -> Arc<Simulated> {
    Arc::new(Simulated::new(SimulatedConfig::default().boot_time(boot).seed(7)).expect("sim"))
}

impl TestGateway {
    pub async fn start(sim: Arc<Simulated>, deployments: Vec<DeployConfig>) -> Self {
        Self::with_settings(GatewaySettings::default(), sim, deployments).await
    }

    pub async fn with_settings(
        settings: GatewaySettings,
        sim: Arc<Simulated>,
        deployments: Vec<DeployConfig>,
    ) -> Self {
        Self::with_providers(settings, sim, Vec::new(), deployments).await
    }

    /// A gateway with the simulated provider and `extra` providers by name.
    pub async fn with_providers(
        mut settings: GatewaySettings,
        sim: Arc<Simulated>,
        extra: Vec<(&str, Arc<dyn GpuProvider>)>,
        deployments: Vec<DeployConfig>,
    ) -> Self {
        settings.drain_timeout = Duration::from_secs(2);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mut builder = Gateway::builder()
            .settings(settings)
            .provider("simulated", sim.clone() as Arc<dyn GpuProvider>);
        for (name, provider) in extra {
            builder = builder.provider(name, provider);
        }
        for d in deployments {
            builder = builder.deployment(d);
        }
        let gateway = builder.build().await.expect("gateway builds");
        let serving = Some(gateway.spawn(listener));
        Self {
            base,
            gateway,
            sim,
            serving,
        }
    }

    /// A gateway serving `config` (see [`fixed_deployment`]) from a backend the test runs
    /// itself at `addr`: provider `fixed` gives every instance that address.
    pub async fn fixed(
        settings: GatewaySettings,
        addr: std::net::SocketAddr,
        config: DeployConfig,
    ) -> Self {
        let fixed = Arc::new(recording::Fixed(addr)) as Arc<dyn GpuProvider>;
        Self::with_providers(
            settings,
            sim(Duration::ZERO),
            vec![("fixed", fixed)],
            vec![config],
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn controller(&self, id: &str) -> Controller {
        self.gateway.controller(id).expect("deployment exists")
    }

    /// Stops the gateway and waits until every instance is released.
    pub async fn stop(mut self) {
        if let Some(serving) = self.serving.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), serving.stop()).await;
        }
        assert_eq!(self.sim.live(), 0, "every instance is released at shutdown");
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Waits (polling, bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Sends raw bytes to the gateway at `base` and reads the whole answer (the request should
/// say `Connection: close`).
pub async fn raw_request(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
