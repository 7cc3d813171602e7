//! The local-process provider (placeholder until its issue lands).

/// Settings of the local-process provider.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct LocalConfig {}

/// The local-process provider.
#[derive(Debug)]
pub struct Local {}
