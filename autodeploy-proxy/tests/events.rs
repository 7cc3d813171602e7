//! `/api/v1/events` over loopback: token protected, events of a pre-warm in order, a stream
//! that does not hold up the gateway's stop; the history route and the dashboard's files.

mod support;

use std::time::{Duration, Instant};

use autodeploy_proxy::GatewaySettings;
use futures_util::StreamExt;
use support::{TestGateway, client, deployment, sim};

const TOKEN: &str = "events-token-0123";

fn settings() -> GatewaySettings {
    GatewaySettings {
        admin_token: Some(TOKEN.into()),
        ..GatewaySettings::default()
    }
}

/// Reads SSE frames from `response` until `enough` holds for the `event:` names seen.
async fn read_events(
    response: reqwest::Response,
    enough: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !enough(&events) {
        assert!(Instant::now() < deadline, "events so far: {events:?}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a chunk in time")
            .expect("the stream goes on")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                events.push((name, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    events
}

#[tokio::test]
async fn events_need_the_token_and_show_a_prewarm_in_order() {
    let gw = TestGateway::with_settings(
        settings(),
        sim(Duration::from_millis(100)),
        vec![deployment("a", 2, Duration::from_secs(60))],
    )
    .await;
    let denied = client().get(gw.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(denied.status(), 401);

    let stream = client()
        .get(gw.url("/api/v1/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let started = client()
        .post(gw.url("/api/v1/deployments/a/instances"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let events = read_events(stream, |events| {
        events
            .iter()
            .any(|(name, data)| name == "status" && data["status"] == "Running")
    })
    .await;
    let names: Vec<&str> = events
        .iter()
        .filter(|(_, data)| data["deployment"] == "a")
        .map(|(name, _)| name.as_str())
        .filter(|name| *name != "requests")
        .collect();
    let creating = names.iter().position(|n| *n == "instance_creating");
    let ready = names.iter().position(|n| *n == "instance_ready");
    assert!(
        creating.is_some() && ready.is_some() && creating < ready,
        "{names:?}"
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let history: serde_json::Value = client()
        .get(gw.url("/api/v1/deployments/a/history"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["cold_starts"].as_array().unwrap().len(), 1);
    assert_eq!(history["bucket_s"], 5.0);
    // A pre-warmed instance had no request waiting for it: no first byte.
    assert!(history["cold_starts"][0]["first_byte_s"].is_null());
    gw.stop().await;
}

#[tokio::test]
async fn a_cold_start_by_a_request_records_every_phase_up_to_the_first_byte() {
    let gw = TestGateway::with_settings(
        settings(),
        sim(Duration::from_millis(100)),
        vec![deployment("a", 1, Duration::from_secs(60))],
    )
    .await;
    let first = client().get(gw.url("/d/a/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let history: serde_json::Value = client()
        .get(gw.url("/api/v1/deployments/a/history"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let start = &history["cold_starts"][0];
    assert!(start["boot_s"].as_f64().unwrap() >= 0.1, "{start}");
    let first_byte = start["first_byte_s"].as_f64().expect("a first byte");
    assert!((0.0..5.0).contains(&first_byte), "{start}");
    gw.stop().await;
}

#[tokio::test]
async fn an_open_event_stream_does_not_hold_up_the_stop() {
    let gw = TestGateway::with_settings(
        settings(),
        sim(Duration::ZERO),
        vec![deployment("a", 1, Duration::from_secs(60))],
    )
    .await;
    let stream = client()
        .get(gw.url("/api/v1/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let began = Instant::now();
    gw.stop().await;
    // The drain timeout is 2 s: a stream that kept the connection open would take all of it.
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "{:?}",
        began.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.bytes())
        .await
        .expect("the stream ends");
    assert!(rest.is_ok());
}

#[tokio::test]
async fn the_dashboard_loads_without_the_token_and_carries_a_strict_policy() {
    let gw = TestGateway::with_settings(settings(), sim(Duration::ZERO), vec![]).await;
    let page = client().get(gw.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    let script = client().get(gw.url("/ui/app.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(gw.url("/ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.headers()["location"], "/ui/");
    // The data behind it still needs the token.
    let data = client()
        .get(gw.url("/api/v1/deployments"))
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 401);
    gw.stop().await;
}
