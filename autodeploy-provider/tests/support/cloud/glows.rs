//! A fake of the Glows.ai SDK API v1: `POST /instance`, `GET /instance?request_id|meta_key`,
//! `POST /instance/cancel?request_id`, `GET /instance/list?page&per_page`; every answer
//! `{code, msg, ...}` with HTTP 200, failures included (code 176 for a bad token), except
//! 429 with a plain-text body; status `SchedQueued` → `Running` → `Released`, and the
//! HTTP access `url` empty until the instance is reachable.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{FakeCloud, FakeInstance, GOOD_KEY, processes};

/// Starts the fake; its API base is `http://{addr}/sdk/v1`.
pub async fn start() -> FakeCloud {
    let state = std::sync::Arc::new(parking_lot::Mutex::new(super::FakeState::default()));
    let local = processes();
    let placeholder = FakeCloud {
        addr: "127.0.0.1:0".parse().expect("addr"),
        state: state.clone(),
        local: local.clone(),
    };
    let router = axum::Router::new()
        .route("/sdk/v1/instance", get(query).post(create))
        .route("/sdk/v1/instance/cancel", post(cancel))
        .route("/sdk/v1/instance/list", get(list))
        .with_state(placeholder);
    let (addr, _task) = FakeCloud::serve(router).await;
    FakeCloud { addr, state, local }
}

/// The API base URL of `fake`.
pub fn api_base(fake: &FakeCloud) -> String {
    format!("http://{}/sdk/v1", fake.addr)
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Auth (code 176 with HTTP 200) and rate limit (429, plain text), recorded.
fn gate(
    fake: &FakeCloud,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    let good = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {GOOD_KEY}"));
    if !good {
        fake.record(method, path, query, 200);
        return Some(Json(json!({"code": 176, "msg": "invalid token"})).into_response());
    }
    if fake.rate_limited() {
        fake.record(method, path, query, 429);
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "Too Many Requests",
            )
                .into_response(),
        );
    }
    None
}

fn instance_json(i: &FakeInstance) -> Value {
    let status = match i.status {
        "queued" => "SchedQueued",
        "running" | "terminating" => "Running",
        "exited" => "Stopped",
        _ => "Released",
    };
    let url = match i.process {
        Some((_, port)) if i.address_in == 0 && status == "Running" => {
            format!("http://127.0.0.1:{port}")
        }
        _ => String::new(),
    };
    let envs: Vec<String> = i.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "instanceID": i.id,
        "category": "container",
        "status": status,
        "priceCent": 65,
        "accesses": [
            {"protocol": "ssh", "listenPort": 22, "url": ""},
            {"protocol": "http", "listenPort": i.port, "url": url}
        ],
        "envs": envs.join(";"),
        "metaKey": i.key,
        "sourceType": "SourceSDK",
        "regionName": "TW-03"
    })
}

async fn create(
    State(fake): State<FakeCloud>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(answer) = gate(&fake, "POST", "/sdk/v1/instance", "", &headers) {
        return answer;
    }
    let key = body["custom_meta_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (fail, lost, error, lost_delay, address_in, queued_in, duplicate) = {
        let mut st = fake.state.lock();
        let duplicate = st.instances.values().any(|i| i.key == key);
        let f = &mut st.faults;
        let fail = f.create_500 > 0;
        if fail {
            f.create_500 -= 1;
        }
        let lost = !fail && f.create_lost > 0;
        if lost {
            f.create_lost -= 1;
        }
        (
            fail,
            lost,
            f.create_error.take(),
            f.lost_delay,
            f.address_after_reads,
            f.queued_reads,
            duplicate,
        )
    };
    if fail {
        fake.record("POST", "/sdk/v1/instance", "", 500);
        return (StatusCode::INTERNAL_SERVER_ERROR, "bad gateway").into_response();
    }
    if let Some((code, msg)) = error {
        fake.record("POST", "/sdk/v1/instance", "", 200);
        return Json(json!({"code": code, "msg": msg})).into_response();
    }
    if duplicate {
        fake.record("POST", "/sdk/v1/instance", "", 200);
        return Json(json!({"code": 7, "msg": "custom_meta_key already exists"})).into_response();
    }
    let ports: Value =
        serde_json::from_str(body["ports"].as_str().unwrap_or("[]")).unwrap_or(json!([]));
    let port = ports[0]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(8080);
    let env: BTreeMap<String, String> = body["envs"]
        .as_str()
        .unwrap_or_default()
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let command = body["cmd"].as_str().unwrap_or_default().to_owned();
    let process = match fake.start_process(&command, port, &env).await {
        Ok(process) => process,
        Err(err) => {
            fake.record("POST", "/sdk/v1/instance", "", 200);
            return Json(json!({"code": 1, "msg": err})).into_response();
        }
    };
    let instance = {
        let mut st = fake.state.lock();
        let id = st.new_id("ins-");
        let instance = FakeInstance {
            id: id.clone(),
            key,
            env,
            port,
            status: "queued",
            process: Some(process),
            address_in,
            queued_in,
            gone_in: 0,
        };
        st.instances.insert(id, instance.clone());
        st.created += 1;
        instance
    };
    fake.record("POST", "/sdk/v1/instance", "", 200);
    if lost {
        tokio::time::sleep(lost_delay).await;
    }
    Json(json!({"code": 0, "msg": "", "instance": instance_json(&instance)})).into_response()
}

async fn query(
    State(fake): State<FakeCloud>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = q.unwrap_or_default();
    if let Some(answer) = gate(&fake, "GET", "/sdk/v1/instance", &q, &headers) {
        return answer;
    }
    let id = match (param(&q, "request_id"), param(&q, "meta_key")) {
        (Some(id), _) => Some(id.to_owned()),
        (None, Some(key)) => {
            let key = key.replace("%2E", ".");
            fake.state
                .lock()
                .instances
                .values()
                .find(|i| i.key == key)
                .map(|i| i.id.clone())
        }
        _ => None,
    };
    fake.record("GET", "/sdk/v1/instance", &q, 200);
    match id.and_then(|id| fake.read(&id)) {
        Some(i) => {
            Json(json!({"code": 0, "msg": "", "instance": instance_json(&i)})).into_response()
        }
        None => Json(json!({"code": 10, "msg": "instance not found"})).into_response(),
    }
}

async fn cancel(
    State(fake): State<FakeCloud>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = q.unwrap_or_default();
    if let Some(answer) = gate(&fake, "POST", "/sdk/v1/instance/cancel", &q, &headers) {
        return answer;
    }
    let fail = {
        let mut st = fake.state.lock();
        let fail = st.faults.delete_500 > 0;
        if fail {
            st.faults.delete_500 -= 1;
        }
        fail
    };
    if fail {
        fake.record("POST", "/sdk/v1/instance/cancel", &q, 500);
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
    }
    let id = param(&q, "request_id").unwrap_or_default().to_owned();
    fake.record("POST", "/sdk/v1/instance/cancel", &q, 200);
    let known = fake.state.lock().instances.get(&id).map(|i| i.status);
    match known {
        None => Json(json!({"code": 10, "msg": "instance not found"})).into_response(),
        Some("released" | "terminated") => {
            Json(json!({"code": 20, "msg": "instance already released"})).into_response()
        }
        Some(_) => {
            fake.terminate(&id).await;
            Json(json!({"code": 0, "msg": ""})).into_response()
        }
    }
}

async fn list(
    State(fake): State<FakeCloud>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = q.unwrap_or_default();
    if let Some(answer) = gate(&fake, "GET", "/sdk/v1/instance/list", &q, &headers) {
        return answer;
    }
    let page: usize = param(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page: usize = param(&q, "per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    let ids: Vec<String> = fake.state.lock().instances.keys().cloned().collect();
    let rows: Vec<Value> = ids
        .iter()
        .skip((page.max(1) - 1) * per_page)
        .take(per_page)
        .filter_map(|id| fake.read(id))
        .map(|i| instance_json(&i))
        .collect();
    fake.record("GET", "/sdk/v1/instance/list", &q, 200);
    Json(json!({"code": 0, "msg": "", "instances": rows})).into_response()
}
