//! The RunPod provider against a fake of RunPod's REST API v1 (tests/support/cloud): every
//! promise of DESIGN.md §4, with exact call counts.

#[path = "support/cloud/mod.rs"]
mod cloud;

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::GpuProvider;
use autodeploy_provider::remote::{ApiKey, Remote};
use autodeploy_provider::runpod::{Runpod, RunpodAccess, RunpodConfig};
use cloud::promises::{self, Fixture};
use cloud::{FakeCloud, runpod as fake};

fn provider(fake: &FakeCloud, key: &str) -> Arc<dyn GpuProvider> {
    let config = RunpodConfig {
        api_base: fake::api_base(fake),
        access: RunpodAccess::Tcp,
        request_timeout: Duration::from_millis(500),
        retries: 3,
        poll_min: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        release_confirm_timeout: Duration::from_secs(2),
        ..RunpodConfig::default()
    };
    let mut settings = config.settings();
    settings.retry_base = Duration::from_millis(10);
    settings.retry_cap = Duration::from_millis(50);
    Arc::new(Remote::new(Runpod::new(config), settings, ApiKey::new(key)).expect("provider"))
}

const RUNPOD: Fixture = Fixture {
    start: || Box::pin(fake::start()),
    provider,
    create: ("POST", "/v1/pods", ""),
    find: ("GET", "/v1/pods", "name="),
    get: ("GET", "/v1/pods/*", ""),
    delete: ("DELETE", "/v1/pods/*", ""),
    list: ("GET", "/v1/pods", ""),
};

#[tokio::test]
async fn a_pod_without_public_ip_is_polled_then_probed_then_deleted_once() {
    promises::delayed_address_then_ready_then_released(&RUNPOD).await;
}

#[tokio::test]
async fn a_500_on_create_then_success_makes_one_pod() {
    promises::create_500_then_success_makes_one(&RUNPOD).await;
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_found_by_name_not_repeated() {
    promises::lost_create_answer_is_found_not_repeated(&RUNPOD).await;
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    promises::rate_limit_honours_retry_after(&RUNPOD).await;
}

#[tokio::test]
async fn a_delete_failing_twice_is_retried_until_the_pod_is_terminated() {
    promises::release_retries_until_confirmed(&RUNPOD).await;
}

#[tokio::test]
async fn a_pod_that_exits_by_itself_is_reported() {
    promises::cloud_ended_instance_is_reported(&RUNPOD).await;
}

#[tokio::test]
async fn a_wrong_key_is_1004_at_once_and_never_shown() {
    promises::wrong_key_is_1004_at_once(&RUNPOD).await;
}

#[tokio::test]
async fn a_restarted_provider_finds_its_pods_by_listing_and_releases_them() {
    promises::restart_finds_and_releases_survivors(&RUNPOD).await;
}

#[tokio::test]
async fn no_gpu_available_is_1011() {
    promises::no_capacity_is_1011(&RUNPOD, "There are no instances currently available").await;
}
