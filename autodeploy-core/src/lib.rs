//! # autodeploy-core
//!
//! The heart of autodeploy, a gateway that puts expensive HTTP services (GPU inference) behind
//! a fixed link: it starts an instance on the first request, routes by rule, and releases the
//! instance when it goes idle.
//!
//! This crate holds what every other part shares and makes no HTTP calls:
//!
//! - [`DeployConfig`]: one deployment's settings, with [`DeployConfig::validate`];
//! - [`InstanceId`], the [`InstanceState`] lifecycle and the derived [`DeploymentStatus`];
//! - the [`GpuProvider`] trait that creates, probes, lists and releases instances;
//! - [`ErrorCode`] and [`GatewayError`]: the one table of errors the gateway answers with,
//!   serialized as `{"code": N, "msg": "..."}`;
//! - [`Controller`]: the runtime state behind one link (single-flight cold start, bounded
//!   FIFO queue, leases, idle release, warm pool, cost);
//! - [`RouteView`] and [`Target`]: what a routing decision sees and may decide.
//!
//! ```no_run
//! # async fn demo(provider: std::sync::Arc<dyn autodeploy_core::GpuProvider>) {
//! use std::time::Duration;
//! use autodeploy_core::{Controller, DeployConfig, Target};
//!
//! let config = DeployConfig::new("speech", "python api.py", Duration::from_secs(600), 5);
//! let controller = Controller::new(config, provider).expect("valid config");
//! // Route to the first ready instance, or queue and cold-start one.
//! let lease = controller
//!     .acquire(|view| match view.ready().first() {
//!         Some(r) => Target::Instance(r.id),
//!         None => Target::Queue { start_instance: view.starting() == 0 },
//!     })
//!     .await
//!     .expect("an instance");
//! println!("forward to {} at {}", lease.instance(), lease.endpoint());
//! drop(lease); // the request ended: the idle clock restarts now
//! # }
//! ```

pub mod config;
pub mod controller;
pub mod error;
pub mod instance_id;
pub mod lifecycle;
pub mod provider;
pub mod route;

pub use config::{
    BudgetLimit, ContainerOptions, DeployConfig, FieldError, GpuSpec, QueueConfig, ReadinessProbe,
    UpstreamProtocol, ValidationErrors,
};
pub use controller::{
    Controller, ControllerBuilder, ControllerEvent, EventSink, InstanceInfo, KEPT_START_FAILURES,
    Lease, NoEvents, StartFailure, Wait,
};
pub use error::{ErrorCode, GatewayError};
pub use instance_id::InstanceId;
pub use lifecycle::{DeploymentStatus, IllegalTransition, InstanceState, LifecycleEvent};
pub use provider::{
    Endpoint, ExitReport, GpuProvider, InstanceSpec, ProvidedInstance, ProviderCounter,
    ProviderError, Scheme,
};
pub use route::{OnDemandOnly, ReadyInstance, RouteView, ScalePolicy, Target};
