//! The promises of `DESIGN.md` §4 as test bodies, run against each cloud's fake by
//! `tests/runpod.rs` and `tests/glows.rs`, with exact call counts.

use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{ErrorCode, GatewayError, GpuProvider, ProviderError};
use futures_util::future::BoxFuture;

use super::{ApiCall, FakeCloud, GOOD_KEY, deployment, spec};

/// How one cloud is faked and driven.
pub struct Fixture {
    /// Starts the cloud's fake.
    pub start: fn() -> BoxFuture<'static, FakeCloud>,
    /// A provider on the fake with `key` as its API key (fast polls, short timeouts).
    pub provider: fn(&FakeCloud, &str) -> Arc<dyn GpuProvider>,
    /// The create call.
    pub create: ApiCall,
    /// The look-up of a key before a retried create.
    pub find: ApiCall,
    /// The read of one instance.
    pub get: ApiCall,
    /// The delete (cancel).
    pub delete: ApiCall,
    /// The listing used at reconciliation.
    pub list: ApiCall,
}

async fn get_status(url: String) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Create waits for the delayed address, readiness is proven by a real answer, release
/// deletes once and the cloud confirms.
pub async fn delayed_address_then_ready_then_released(f: &Fixture) {
    let fake = (f.start)().await;
    fake.faults(|x| x.address_after_reads = 3);
    let provider = (f.provider)(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    let endpoint = provider.create(spec).await.expect("create");
    assert!(
        fake.calls(f.get) >= 3,
        "polled until the address showed: {:?}",
        fake.log()
    );
    provider.wait_ready(id).await.expect("ready");
    assert_eq!(
        get_status(format!("{}/", endpoint.url())).await,
        200,
        "the service answers"
    );
    assert_eq!(fake.calls(f.create), 1, "{:?}", fake.log());
    assert_eq!(fake.created(), 1);
    assert_eq!(fake.calls(f.find), 0, "no look-up without a failed create");
    provider.release(id).await.expect("release");
    assert_eq!(fake.calls(f.delete), 1, "{:?}", fake.log());
    assert_eq!(fake.deleted(), 1);
    assert!(fake.live().is_empty());
    provider
        .release(id)
        .await
        .expect("a second release is a no-op");
    assert_eq!(
        fake.calls(f.delete),
        1,
        "nothing sent for a released instance"
    );
}

/// A 500 on create, then success: one look-up, two creates sent, one instance made.
pub async fn create_500_then_success_makes_one(f: &Fixture) {
    let fake = (f.start)().await;
    fake.faults(|x| x.create_500 = 1);
    let provider = (f.provider)(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    provider.create(spec).await.expect("create after a 500");
    assert_eq!(fake.calls(f.create), 2, "{:?}", fake.log());
    assert_eq!(
        fake.calls(f.find),
        1,
        "looked before retrying: {:?}",
        fake.log()
    );
    assert_eq!(fake.created(), 1, "exactly one instance");
    provider.release(id).await.expect("release");
    assert_eq!(fake.deleted(), 1);
}

/// A create whose answer is lost (the fake made the instance, the client timed out): the
/// retry finds it instead of making a second.
pub async fn lost_create_answer_is_found_not_repeated(f: &Fixture) {
    let fake = (f.start)().await;
    fake.faults(|x| {
        x.create_lost = 1;
        x.lost_delay = Duration::from_secs(3);
    });
    let provider = (f.provider)(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    provider.create(spec).await.expect("create");
    provider.wait_ready(id).await.expect("ready");
    assert_eq!(
        fake.calls(f.create),
        1,
        "never sent twice: {:?}",
        fake.log()
    );
    assert_eq!(fake.calls(f.find), 1, "{:?}", fake.log());
    assert_eq!(fake.created(), 1);
    provider.release(id).await.expect("release");
    assert_eq!(fake.calls(f.delete), 1);
    assert!(fake.live().is_empty());
}

/// 429 with `Retry-After: 1`: the create waits a second and is sent again (nothing was
/// done), without a look-up.
pub async fn rate_limit_honours_retry_after(f: &Fixture) {
    let fake = (f.start)().await;
    fake.faults(|x| x.rate_limit = 1);
    let provider = (f.provider)(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    let began = tokio::time::Instant::now();
    provider.create(spec).await.expect("create");
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(fake.calls(f.create), 2, "{:?}", fake.log());
    assert_eq!(fake.calls(f.find), 0);
    assert_eq!(fake.created(), 1);
    provider.release(id).await.expect("release");
}

/// A delete that fails twice, then succeeds; the cloud confirms only after a few reads.
pub async fn release_retries_until_confirmed(f: &Fixture) {
    let fake = (f.start)().await;
    let provider = (f.provider)(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    provider.create(spec).await.expect("create");
    fake.faults(|x| {
        x.delete_500 = 2;
        x.gone_after_reads = 2;
    });
    let gets_before = fake.calls(f.get);
    provider.release(id).await.expect("release");
    assert_eq!(
        fake.calls(f.delete),
        3,
        "two failures, one success: {:?}",
        fake.log()
    );
    assert_eq!(fake.deleted(), 1, "one delete took effect");
    assert!(
        fake.calls(f.get) - gets_before >= 3,
        "polled until confirmed: {:?}",
        fake.log()
    );
    assert!(fake.live().is_empty(), "nothing left billing");
}

/// An instance the cloud ends by itself is reported through `wait_exit`.
pub async fn cloud_ended_instance_is_reported(f: &Fixture) {
    let fake = (f.start)().await;
    let provider = (f.provider)(&fake, GOOD_KEY);
    let spec = spec(&deployment("files"));
    let id = spec.instance;
    provider.create(spec).await.expect("create");
    provider.wait_ready(id).await.expect("ready");
    let cloud_id = fake.live().pop().expect("one instance");
    let watcher = {
        let provider = provider.clone();
        tokio::spawn(async move { provider.wait_exit(id).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!watcher.is_finished(), "alive: no report");
    fake.kill(&cloud_id).await;
    let report = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("reported in time")
        .expect("task");
    assert!(report.reason.contains(&cloud_id), "{report:?}");
    provider.release(id).await.expect("release");
    assert_eq!(fake.created(), 1);
}

/// A wrong key: 1004 at once ("cloud API refused the key"), one call, never the key.
pub async fn wrong_key_is_1004_at_once(f: &Fixture) {
    let fake = (f.start)().await;
    let provider = (f.provider)(&fake, "wrong-key-SECRET-42");
    let err = provider
        .create(spec(&deployment("files")))
        .await
        .expect_err("refused");
    assert!(matches!(err, ProviderError::StartFailed { .. }), "{err:?}");
    let gateway = GatewayError::from(err.clone());
    assert_eq!(gateway.code, ErrorCode::InstanceStartFailed);
    assert!(
        gateway.msg.contains("cloud API refused the key"),
        "{}",
        gateway.msg
    );
    for text in [
        gateway.to_json(),
        format!("{err:?}"),
        format!("{provider:?}"),
    ] {
        assert!(
            !text.contains("wrong-key-SECRET-42"),
            "the key leaked: {text}"
        );
        assert!(!text.contains(GOOD_KEY), "the key leaked: {text}");
    }
    assert_eq!(fake.calls(f.create), 1, "not retried: {:?}", fake.log());
    assert_eq!(fake.created(), 0);
}

/// A restarted provider (a restarted gateway) finds the instances the last one left,
/// adopted for release: none leaked, none created twice.
pub async fn restart_finds_and_releases_survivors(f: &Fixture) {
    let fake = (f.start)().await;
    let first = (f.provider)(&fake, GOOD_KEY);
    let config = deployment("files");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let spec = spec(&config);
        ids.push(spec.instance);
        first.create(spec).await.expect("create");
    }
    let other = spec(&deployment("other"));
    first.create(other).await.expect("create");
    drop(first);

    let second = (f.provider)(&fake, GOOD_KEY);
    let found: Vec<_> = second
        .list("files")
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort_unstable();
    assert_eq!(found, ids, "both survivors of `files`, not `other`");
    assert_eq!(fake.calls(f.list), 1, "{:?}", fake.log());
    for id in &ids {
        second
            .wait_ready(*id)
            .await
            .expect("an adopted instance answers");
        second.release(*id).await.expect("release");
    }
    assert_eq!(fake.calls(f.delete), 2, "one delete per survivor");
    assert_eq!(fake.created(), 3, "nothing created again");
    assert_eq!(fake.live().len(), 1, "only `other` still runs");
}

/// The cloud says no machine fits: 1011, at once.
pub async fn no_capacity_is_1011(f: &Fixture, message: &str) {
    let fake = (f.start)().await;
    let message = message.to_owned();
    fake.faults(move |x| x.create_error = Some((89, message)));
    let provider = (f.provider)(&fake, GOOD_KEY);
    let err = provider
        .create(spec(&deployment("files")))
        .await
        .expect_err("no capacity");
    assert!(matches!(err, ProviderError::NoCapacity(_)), "{err:?}");
    assert_eq!(GatewayError::from(err).code, ErrorCode::NoCapacity);
    assert_eq!(fake.calls(f.create), 1);
}
