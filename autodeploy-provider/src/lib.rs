//! # autodeploy-provider
//!
//! Implementations of core's [`GpuProvider`](autodeploy_core::GpuProvider) trait:
//!
//! - [`Local`]: the embedded default. An instance is a child process running the deployment's
//!   start command on a free loopback port, in its own process group, with GPU slots handed
//!   out through `CUDA_VISIBLE_DEVICES` and a state directory for reconciliation after a
//!   restart.
//! - [`Simulated`]: for tests, benchmarks and capacity planning. An instance is a real
//!   in-process HTTP server on a loopback port that reports its id, with configurable boot
//!   time, failures and crashes, deterministic under a seed and tokio's paused clock.

pub mod local;
pub mod simulated;

pub use local::{Local, LocalConfig, LocalConfigError};
pub use simulated::{Simulated, SimulatedConfig, SimulatedConfigError};
