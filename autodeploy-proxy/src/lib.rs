//! # autodeploy-proxy
//!
//! The HTTP gateway of autodeploy: it wires core's controllers, the routing rules and the
//! providers into links that start an instance on the first request, route by the
//! `Deploy-Route-Rule` header, stream both ways and release idle instances.
//!
//! - [`Gateway`]: the deployments, providers, upstream client and metrics; build it from a
//!   [`GatewayConfig`] or piece by piece with [`Gateway::builder`];
//! - [`Gateway::service`]: a [`tower::Service`] to mount in your own hyper or axum server;
//!   [`Gateway::serve`] runs it on a listener with graceful shutdown;
//! - the management API under `/api/v1` ([`api`]), `/metrics` ([`metrics`]), `/healthz`;
//!   deployments it creates are kept across restarts in a JSON file when the gateway has
//!   one ([`GatewayBuilder::api_store`]; the binary uses `{state_dir}/deployments.json`).
//! - live events at `/api/v1/events` (server-sent events from a bounded buffer; [`events`])
//!   and a dashboard at `/ui` that follows them (static files compiled into the binary).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use autodeploy_proxy::{Gateway, GatewayConfig};
//!
//! let config = GatewayConfig::load("autodeploy.toml".as_ref())?;
//! let listener = autodeploy_proxy::server::bind(config.gateway.listen).await?;
//! let gateway = Gateway::from_config(config).await?;
//! gateway.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod config;
pub mod events;
mod forward;
mod gateway;
pub mod headers;
pub mod link;
pub mod logline;
pub mod metrics;
pub mod openapi;
pub mod problems;
mod respond;
pub mod server;
mod store;
pub mod tls;
mod ui;
mod upstream;

pub use config::{ConfigError, GatewayConfig, GatewaySettings, RateLimit};
pub use forward::ClientAddr;
pub use gateway::{BuildError, Gateway, GatewayBuilder, GatewayService, Serving};
pub use respond::{ApiError, error_response};
pub use store::StoreError;
pub use upstream::{set_thread_slot, set_thread_slots};
