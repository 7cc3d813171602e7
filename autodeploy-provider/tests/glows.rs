//! The Glows.ai provider against a fake of the Glows SDK API v1 (tests/support/cloud):
//! every promise of DESIGN.md §4, with exact call counts, plus Glows' own ways (errors as
//! HTTP 200 with a non-zero code, `SchedQueued` before `Running`).

#[path = "support/cloud/mod.rs"]
mod cloud;

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{ErrorCode, GatewayError, GpuProvider, ProviderError};
use autodeploy_provider::glows::{Glows, GlowsConfig};
use autodeploy_provider::remote::{ApiKey, Remote};
use cloud::promises::{self, Fixture};
use cloud::{FakeCloud, GOOD_KEY, deployment, glows as fake, spec};

fn provider(fake: &FakeCloud, key: &str) -> Arc<dyn GpuProvider> {
    let config = GlowsConfig {
        api_base: fake::api_base(fake),
        region_name: "TW-03".into(),
        request_timeout: Duration::from_millis(500),
        retries: 3,
        poll_min: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        release_confirm_timeout: Duration::from_secs(2),
        ..GlowsConfig::default()
    };
    let mut settings = config.settings();
    settings.retry_base = Duration::from_millis(10);
    settings.retry_cap = Duration::from_millis(50);
    Arc::new(Remote::new(Glows::new(config), settings, ApiKey::new(key)).expect("provider"))
}

const GLOWS: Fixture = Fixture {
    start: || Box::pin(fake::start()),
    provider,
    create: ("POST", "/sdk/v1/instance", ""),
    find: ("GET", "/sdk/v1/instance", "meta_key="),
    get: ("GET", "/sdk/v1/instance", "request_id="),
    delete: ("POST", "/sdk/v1/instance/cancel", ""),
    list: ("GET", "/sdk/v1/instance/list", ""),
};

#[tokio::test]
async fn an_empty_access_url_is_polled_then_probed_then_cancelled_once() {
    promises::delayed_address_then_ready_then_released(&GLOWS).await;
}

#[tokio::test]
async fn a_500_on_create_then_success_makes_one_instance() {
    promises::create_500_then_success_makes_one(&GLOWS).await;
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_found_by_meta_key_not_repeated() {
    promises::lost_create_answer_is_found_not_repeated(&GLOWS).await;
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    promises::rate_limit_honours_retry_after(&GLOWS).await;
}

#[tokio::test]
async fn a_cancel_failing_twice_is_retried_until_the_instance_is_released() {
    promises::release_retries_until_confirmed(&GLOWS).await;
}

#[tokio::test]
async fn an_instance_that_stops_by_itself_is_reported() {
    promises::cloud_ended_instance_is_reported(&GLOWS).await;
}

#[tokio::test]
async fn a_bad_token_code_176_is_1004_at_once_and_never_shown() {
    promises::wrong_key_is_1004_at_once(&GLOWS).await;
}

#[tokio::test]
async fn a_restarted_provider_finds_its_instances_by_listing_and_releases_them() {
    promises::restart_finds_and_releases_survivors(&GLOWS).await;
}

#[tokio::test]
async fn insufficient_gpus_is_1011() {
    promises::no_capacity_is_1011(&GLOWS, "insufficient GPU resources in region").await;
}

#[tokio::test]
async fn a_non_zero_code_with_http_200_fails_the_start_at_once() {
    let fake = fake::start().await;
    fake.faults(|x| x.create_error = Some((17, "image not found".into())));
    let provider = provider(&fake, GOOD_KEY);
    let err = provider
        .create(spec(&deployment("files")))
        .await
        .expect_err("refused");
    let ProviderError::StartFailed { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("code 17: image not found"), "{reason}");
    assert_eq!(GatewayError::from(err).code, ErrorCode::InstanceStartFailed);
    assert_eq!(fake.calls(GLOWS.create), 1, "not retried: {:?}", fake.log());
    assert_eq!(fake.created(), 0);
}

#[tokio::test]
async fn a_queued_instance_is_polled_until_running() {
    let fake = fake::start().await;
    fake.faults(|x| x.queued_reads = 3);
    let provider = provider(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    provider.create(spec).await.expect("create");
    assert!(fake.calls(GLOWS.get) >= 3, "{:?}", fake.log());
    provider.wait_ready(id).await.expect("ready");
    provider.release(id).await.expect("release");
    assert_eq!(fake.created(), 1);
    assert_eq!(fake.deleted(), 1);
}
