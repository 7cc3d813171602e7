//! The simulated provider (placeholder until its issue lands).

/// Settings of the simulated provider.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SimulatedConfig {}

/// The simulated provider.
#[derive(Debug)]
pub struct Simulated {}
