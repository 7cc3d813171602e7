//! # autodeploy-benches
//!
//! Criterion benchmarks (`cargo bench -p autodeploy-benches`) and the programs behind the
//! load comparison (`scripts/loadtest.sh`), the cold-start, burst and memory measurements.
//! Results and how they were taken: `benches/RESULTS.md`.
//!
//! - [`backend`]: the fast HTTP backend every comparison forwards to (`GET /` a small body,
//!   `GET /1m` one MiB), in-process or as the `bench-backend` binary;
//! - [`client`]: the pooled hyper client the measuring programs send with;
//! - [`fixed`]: a [`GpuProvider`](autodeploy_core::GpuProvider) whose instances are one
//!   already running address, so a gateway can be measured against a backend without a
//!   provider's own costs;
//! - [`stats`]: medians and percentiles of measured durations.

pub mod backend;
pub mod client;
pub mod fixed;
pub mod stats;
