//! A provider whose every instance is one address that already serves.

use std::fmt;
use std::net::SocketAddr;

use async_trait::async_trait;
use autodeploy_core::{
    Endpoint, GpuProvider, InstanceId, InstanceSpec, ProvidedInstance, ProviderError,
};

/// Every instance it "creates" is `addr`, ready at once; releasing does nothing. What a
/// gateway in front of it costs is the gateway's own cost.
pub struct Fixed {
    addr: SocketAddr,
}

impl Fixed {
    /// Instances served at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }
}

impl fmt::Debug for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixed").field("addr", &self.addr).finish()
    }
}

#[async_trait]
impl GpuProvider for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    async fn create(&self, _spec: InstanceSpec) -> Result<Endpoint, ProviderError> {
        Ok(Endpoint::from(self.addr))
    }

    async fn wait_ready(&self, _id: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn release(&self, _id: InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn list(&self, _deployment: &str) -> Result<Vec<ProvidedInstance>, ProviderError> {
        Ok(Vec::new())
    }
}
