//! # autodeploy-examples
//!
//! Runnable programs around autodeploy, and what they share:
//!
//! - [`speech`]: the BreezyVoice stand-in behind the seed's first walkthrough (the `speech`
//!   binary, `cargo run -p autodeploy-examples --bin speech -- --port 8080`).
//!
//! Binaries:
//!
//! - `speech`: the stand-in TTS service;
//! - `embed`: the gateway mounted inside another axum service, with the simulated provider
//!   (`cargo run -p autodeploy-examples --bin embed`).

pub mod speech;
