//! The gateway's configuration file: parsed and validated, or refused, never a panic.
#![no_main]

use autodeploy_proxy::GatewayConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = GatewayConfig::parse(text)
    {
        let _ = config.validate();
    }
});
