//! Defaults shared by the cloud config tables (`[providers.runpod]`, `[providers.glows]`).

use std::time::Duration;

pub(crate) fn request_timeout() -> Duration {
    Duration::from_secs(15)
}
pub(crate) fn retries() -> u32 {
    5
}
pub(crate) fn poll_min() -> Duration {
    Duration::from_secs(1)
}
pub(crate) fn poll_max() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn release_confirm_timeout() -> Duration {
    Duration::from_secs(120)
}
