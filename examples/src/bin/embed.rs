//! The gateway embedded in another service: an axum app with routes of its own, and the
//! gateway's links, management API and metrics mounted as its fallback. Instances come from
//! the simulated provider, so this runs anywhere.
//!
//! ```sh
//! cargo run -p autodeploy-examples --bin embed
//! curl http://127.0.0.1:3000/                    # the app's own route
//! curl -i http://127.0.0.1:3000/d/demo/hello     # a link: cold-starts a simulated instance
//! curl http://127.0.0.1:3000/api/v1/deployments  # the gateway's management API
//! ```

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{DeployConfig, GpuProvider};
use autodeploy_provider::{Simulated, SimulatedConfig};
use autodeploy_proxy::Gateway;
use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    let provider = Simulated::new(
        SimulatedConfig::default()
            .boot_time(Duration::from_millis(300))
            .price_per_hour(1.2),
    )?;
    let mut demo = DeployConfig::new("demo", "simulated", Duration::from_secs(30), 3);
    demo.provider = "simulated".into();
    demo.price_per_hour = 1.2;
    let gateway = Gateway::builder()
        .provider("simulated", Arc::new(provider) as Arc<dyn GpuProvider>)
        .deployment(demo)
        .build()
        .await?;

    let app = Router::new()
        .route(
            "/",
            get(|| async { "my own service; links live under /d/\n" }),
        )
        .fallback_service(gateway.service());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Release every instance before leaving: they cost money.
    gateway.shutdown().await;
    Ok(())
}
