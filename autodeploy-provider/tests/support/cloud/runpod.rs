//! A fake of RunPod's REST API v1: `POST /pods`, `GET /pods[?name=]`, `GET /pods/{id}`,
//! `DELETE /pods/{id}`, Bearer key (401 otherwise), `desiredStatus` RUNNING → TERMINATED
//! (or EXITED when the "container" dies), `publicIp` and `portMappings` once the address
//! is known.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{FakeCloud, FakeInstance, GOOD_KEY, processes};

/// Starts the fake; its API base is `http://{addr}/v1`.
pub async fn start() -> FakeCloud {
    let state = std::sync::Arc::new(parking_lot::Mutex::new(super::FakeState::default()));
    let local = processes();
    let placeholder = FakeCloud {
        addr: "127.0.0.1:0".parse().expect("addr"),
        state: state.clone(),
        local: local.clone(),
    };
    let router = axum::Router::new()
        .route("/v1/pods", get(list).post(create))
        .route("/v1/pods/{id}", get(read).delete(delete))
        .with_state(placeholder);
    let (addr, _task) = FakeCloud::serve(router).await;
    FakeCloud { addr, state, local }
}

/// The API base URL of `fake`.
pub fn api_base(fake: &FakeCloud) -> String {
    format!("http://{}/v1", fake.addr)
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {GOOD_KEY}"))
}

/// Auth and rate limit, recorded; `Some` is the answer to give at once.
fn gate(
    fake: &FakeCloud,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    if !authorized(headers) {
        fake.record(method.as_str(), path, query, 401);
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Unauthorized"})),
            )
                .into_response(),
        );
    }
    if fake.rate_limited() {
        fake.record(method.as_str(), path, query, 429);
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "rate limited",
            )
                .into_response(),
        );
    }
    None
}

fn pod_json(i: &FakeInstance) -> Value {
    let status = match i.status {
        "running" | "queued" | "terminating" => "RUNNING",
        "exited" => "EXITED",
        _ => "TERMINATED",
    };
    let mut pod = json!({
        "id": i.id,
        "name": i.key,
        "desiredStatus": status,
        "env": i.env,
        "ports": [format!("{}/tcp", i.port)],
        "costPerHr": "0.74",
        "imageName": "python:3.12-slim",
    });
    match i.process {
        Some((_, port)) if i.address_in == 0 && status == "RUNNING" => {
            pod["publicIp"] = json!("127.0.0.1");
            pod["portMappings"] = json!({ i.port.to_string(): port });
        }
        _ => {
            pod["publicIp"] = json!("");
            pod["portMappings"] = json!({});
        }
    }
    pod
}

async fn create(
    State(fake): State<FakeCloud>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(answer) = gate(&fake, &Method::POST, "/v1/pods", "", &headers) {
        return answer;
    }
    let (fail, lost, error, lost_delay, address_in) = {
        let mut st = fake.state.lock();
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
        )
    };
    if fail {
        fake.record("POST", "/v1/pods", "", 500);
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
    }
    if let Some((_, message)) = error {
        fake.record("POST", "/v1/pods", "", 400);
        return (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response();
    }
    let port: u16 = body["ports"][0]
        .as_str()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let env: BTreeMap<String, String> = body["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let command = body["dockerStartCmd"][2]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let process = match fake.start_process(&command, port, &env).await {
        Ok(process) => process,
        Err(err) => {
            fake.record("POST", "/v1/pods", "", 500);
            return (StatusCode::INTERNAL_SERVER_ERROR, err).into_response();
        }
    };
    let instance = {
        let mut st = fake.state.lock();
        let id = st.new_id("pod");
        let instance = FakeInstance {
            id: id.clone(),
            key: body["name"].as_str().unwrap_or_default().to_owned(),
            env,
            port,
            status: "running",
            process: Some(process),
            address_in,
            queued_in: 0,
            gone_in: 0,
        };
        st.instances.insert(id, instance.clone());
        st.created += 1;
        instance
    };
    fake.record("POST", "/v1/pods", "", 201);
    if lost {
        tokio::time::sleep(lost_delay).await;
    }
    (StatusCode::CREATED, Json(pod_json(&instance))).into_response()
}

async fn list(
    State(fake): State<FakeCloud>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    if let Some(answer) = gate(&fake, &Method::GET, "/v1/pods", &query, &headers) {
        return answer;
    }
    let name = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("name="))
        .map(|n| n.replace("%2D", "-"));
    let ids: Vec<String> = fake.state.lock().instances.keys().cloned().collect();
    let pods: Vec<Value> = ids
        .iter()
        .filter_map(|id| fake.read(id))
        .filter(|i| name.as_ref().is_none_or(|n| &i.key == n))
        .filter(|i| i.status != "terminated")
        .map(|i| pod_json(&i))
        .collect();
    fake.record("GET", "/v1/pods", &query, 200);
    Json(Value::Array(pods)).into_response()
}

async fn read(
    State(fake): State<FakeCloud>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/pods/{id}");
    if let Some(answer) = gate(&fake, &Method::GET, &path, "", &headers) {
        return answer;
    }
    match fake.read(&id) {
        Some(i) => {
            fake.record("GET", &path, "", 200);
            Json(pod_json(&i)).into_response()
        }
        None => {
            fake.record("GET", &path, "", 404);
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "pod not found"})),
            )
                .into_response()
        }
    }
}

async fn delete(
    State(fake): State<FakeCloud>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/pods/{id}");
    if let Some(answer) = gate(&fake, &Method::DELETE, &path, "", &headers) {
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
        fake.record("DELETE", &path, "", 500);
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
    }
    if !fake.state.lock().instances.contains_key(&id) {
        fake.record("DELETE", &path, "", 404);
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "pod not found"})),
        )
            .into_response();
    }
    fake.terminate(&id).await;
    fake.record("DELETE", &path, "", 200);
    StatusCode::OK.into_response()
}
