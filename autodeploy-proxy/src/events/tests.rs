use std::sync::Arc;
use std::time::Duration;

use autodeploy_core::{ControllerEvent, DeploymentStatus, EventSink, InstanceId};

use super::*;

fn requests(n: u64) -> EventKind {
    EventKind::Requests {
        requests_per_second: n as f64,
        instances: 0,
    }
}

async fn next_event(subscription: &mut Subscription) -> Arc<GatewayEvent> {
    match subscription.recv().await {
        Some(Received::Event(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribers_see_every_event_in_publication_order_with_gapless_sequence_numbers() {
    let hub = Arc::new(EventHub::new(100_000, None));
    let mut first = hub.subscribe();
    let mut second = hub.subscribe();
    // Four publishers at once: the sequence still matches the order of the stream, and each
    // publisher's own events keep their order.
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for n in 0..1000 {
                    hub.publish(&format!("d{p}"), requests(n));
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    for subscription in [&mut first, &mut second] {
        let mut last_per_publisher = [None::<f64>; 4];
        for expected_seq in 1..=4000 {
            let event = next_event(subscription).await;
            assert_eq!(event.seq, expected_seq);
            let p: usize = event.deployment[1..].parse().unwrap();
            let EventKind::Requests {
                requests_per_second,
                ..
            } = event.kind
            else {
                panic!("unexpected {event:?}");
            };
            assert!(last_per_publisher[p].is_none_or(|last| last < requests_per_second));
            last_per_publisher[p] = Some(requests_per_second);
        }
    }
    assert_eq!(hub.dropped(), 0);
}

#[tokio::test]
async fn a_slow_subscriber_never_blocks_publishers_and_is_told_what_it_missed() {
    let hub = Arc::new(EventHub::new(8, None));
    let mut slow = hub.subscribe();
    let mut reader = hub.subscribe();
    // The slow subscriber reads nothing while 10,000 events are published: publishing must
    // not wait for it (the buffer is 8 events).
    let published = tokio::time::timeout(Duration::from_secs(5), async {
        for n in 0..10_000 {
            hub.publish("d", requests(n));
            if n % 8 == 7 {
                // A subscriber that keeps up loses nothing.
                for _ in 0..8 {
                    next_event(&mut reader).await;
                }
            }
        }
    })
    .await;
    assert!(published.is_ok(), "publishing waited for a slow subscriber");
    assert_eq!(
        slow.recv().await,
        Some(Received::Lagged {
            dropped: 10_000 - 8
        })
    );
    // After the lag report it reads the newest eight, in order.
    for seq in 10_000 - 7..=10_000 {
        assert_eq!(next_event(&mut slow).await.seq, seq);
    }
    assert_eq!(hub.dropped(), 10_000 - 8);
}

#[tokio::test]
async fn drops_are_counted_in_the_metrics() {
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(EventHub::new(2, Some(metrics.clone())));
    let mut slow = hub.subscribe();
    for n in 0..5 {
        hub.publish("d", requests(n));
    }
    assert_eq!(slow.recv().await, Some(Received::Lagged { dropped: 3 }));
    let text = metrics.render([], &[]);
    assert!(text.contains("autodeploy_events_dropped_total 3"), "{text}");
}

#[tokio::test]
async fn close_ends_every_subscription_now_and_later() {
    let hub = Arc::new(EventHub::new(8, None));
    let mut before = hub.subscribe();
    let waiting = tokio::spawn(async move { before.recv().await });
    tokio::task::yield_now().await;
    hub.close();
    let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the open subscription ends")
        .unwrap();
    assert_eq!(ended, None);
    assert_eq!(hub.subscribe().recv().await, None);
}

#[tokio::test]
async fn controller_events_become_named_events_and_history() {
    let hub = Arc::new(EventHub::new(64, None));
    let mut subscription = hub.subscribe();
    let instance = InstanceId::generate();
    hub.on_event("d", &ControllerEvent::Creating { instance });
    hub.on_event(
        "d",
        &ControllerEvent::Ready {
            instance,
            create: Duration::from_millis(120),
            boot: Duration::from_millis(2300),
        },
    );
    hub.on_event(
        "d",
        &ControllerEvent::StartFailed {
            instance,
            error: autodeploy_core::ErrorCode::InstanceStartFailed.into(),
        },
    );
    let names: Vec<&str> = [
        next_event(&mut subscription).await,
        next_event(&mut subscription).await,
        next_event(&mut subscription).await,
    ]
    .iter()
    .map(|e| e.kind.name())
    .collect();
    assert_eq!(
        names,
        ["instance_creating", "instance_ready", "instance_failed"]
    );
    let view = hub.histories().view("d");
    assert_eq!(view.cold_starts.len(), 1);
    assert_eq!(view.cold_starts[0].create_s, 0.12);
    assert_eq!(view.cold_starts[0].total_s, 2.42);
    assert_eq!(view.start_failures.len(), 1);
    // The JSON a subscriber reads: the type tag, the deployment and the sequence number.
    let json = serde_json::to_value(&*next_event_of(&hub, "d")).unwrap();
    assert_eq!(json["type"], "status");
    assert_eq!(json["deployment"], "d");
    assert!(json["seq"].as_u64().unwrap() > 3);
}

fn next_event_of(hub: &Arc<EventHub>, deployment: &str) -> Arc<GatewayEvent> {
    let mut subscription = hub.subscribe();
    hub.publish(
        deployment,
        EventKind::Status {
            status: DeploymentStatus::Standby,
            instances: 0,
        },
    );
    match subscription.events.try_recv() {
        Ok(event) => event,
        Err(err) => panic!("{err}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_history_reports_status_changes_and_request_rates() {
    let histories = Histories::default();
    let first = histories.observe("d", DeploymentStatus::Standby, 0, 0, true);
    assert!(matches!(
        first[..],
        [EventKind::Status {
            status: DeploymentStatus::Standby,
            ..
        }]
    ));
    // Nothing changed: nothing to say.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        histories
            .observe("d", DeploymentStatus::Standby, 0, 0, true)
            .is_empty()
    );
    // A status check between rate samples reports the change at once.
    let changed = histories.observe("d", DeploymentStatus::Running, 1, 3, false);
    assert!(matches!(
        changed[..],
        [EventKind::Status {
            status: DeploymentStatus::Running,
            instances: 1
        }]
    ));
    tokio::time::advance(Duration::from_secs(1)).await;
    let rate = histories.observe("d", DeploymentStatus::Running, 1, 10, true);
    assert_eq!(
        rate,
        [EventKind::Requests {
            requests_per_second: 10.0,
            instances: 1
        }]
    );
    assert_eq!(histories.requests_per_second("d"), 10.0);
    let view = histories.view("d");
    assert_eq!(view.samples.len(), 1);
    assert_eq!(view.samples[0].requests, 10);
    assert_eq!(view.samples[0].instances, 1);
    // Buckets older than the span are dropped.
    for _ in 0..200 {
        tokio::time::advance(history::BUCKET).await;
        histories.observe("d", DeploymentStatus::Running, 1, 10, true);
    }
    let view = histories.view("d");
    assert!(view.samples.len() <= (history::SPAN.as_secs() / 5 + 1) as usize);
    assert!(view.samples.iter().all(|s| s.age_s <= 900.0));
    histories.retain(&[]);
    assert!(histories.view("d").samples.is_empty());
}
