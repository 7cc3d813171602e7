//! The management API under `/api/v1`, plus `/metrics` and `/healthz`.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/api/v1/deployments` | every deployment with status, instance count, cost, idle waste, hourly rate, budget refusals; the gateway budget |
//! | POST | `/api/v1/deployments` | create one (JSON `DeployConfig`) |
//! | GET | `/api/v1/deployments/{id}` | its config, instances, cost, last 20 failed starts |
//! | PUT | `/api/v1/deployments/{id}` | replace its config |
//! | DELETE | `/api/v1/deployments/{id}` | drain and release it, then forget it (its id can be created again once that is done: 1014 before) |
//! | POST | `/api/v1/deployments/{id}/instances` | start an instance now (pre-warm) |
//! | GET | `/api/v1/deployments/{id}/instances/{instance}` | one instance, with its last log lines |
//! | DELETE | `/api/v1/deployments/{id}/instances/{instance}` | drain and release one instance |
//! | GET | `/api/v1/deployments/{id}/history` | last 15 minutes of requests and instances, recent cold starts and start failures |
//! | GET | `/api/v1/events` | live events as server-sent events ([`crate::events`]) |
//! | GET | `/ui` | the dashboard (static files; its data calls carry the token) |
//! | GET | `/api/v1/openapi.json` | this API's OpenAPI 3.1 document ([`crate::openapi`]) |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/healthz` | liveness, never needs the token |
//!
//! With an admin token configured, every route but `/healthz` and the dashboard's static
//! files under `/ui` needs `Authorization: Bearer <token>`; the comparison is constant-time.

use autodeploy_core::{
    Controller, DeployConfig, DeploymentStatus, ErrorCode, GatewayError, InstanceId, InstanceInfo,
    StartFailure,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use http::{HeaderValue, Request, StatusCode, header};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::events::Received;

use crate::gateway::{BuildError, Gateway};
use crate::openapi::ErrorBody;
use crate::respond::ApiError;

/// How many log lines an instance view carries.
const LOG_LINES: usize = 50;
/// The largest management request body.
const MAX_API_BODY: usize = 1 << 20;

type ApiResult<T> = Result<T, ApiError>;

/// The management router for `gateway`.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/api/v1/deployments",
            get(list_deployments).post(create_deployment),
        )
        .route(
            "/api/v1/deployments/{id}",
            get(get_deployment)
                .put(update_deployment)
                .delete(delete_deployment),
        )
        .route(
            "/api/v1/deployments/{id}/instances",
            get(list_instances).post(start_instance),
        )
        .route(
            "/api/v1/deployments/{id}/instances/{instance}",
            get(get_instance).delete(release_instance),
        )
        .route("/api/v1/deployments/{id}/history", get(history))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .merge(crate::ui::router())
        .method_not_allowed_fallback(|| async { ApiError::from(ErrorCode::MethodNotAllowed) })
        .fallback(|| async { ApiError::from(ErrorCode::NotFound) })
        // A layer, not a route layer: unknown paths need the token too, so a caller without
        // it learns nothing about which routes exist.
        .layer(middleware::from_fn_with_state(gateway.clone(), authorize))
        .with_state(gateway)
}

/// Refuses requests without the admin token, when one is configured.
async fn authorize(State(gateway): State<Gateway>, req: Request<Body>, next: Next) -> Response {
    if let Some(token) = &gateway.settings().admin_token
        && req.uri().path() != "/healthz"
        && !crate::ui::is_static(req.uri().path())
    {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(token.as_bytes())) {
            let mut response = ApiError::from(ErrorCode::Unauthorized).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"autodeploy\""),
            );
            return response;
        }
    }
    next.run(req).await
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched ignoring
/// case (RFC 9110 §11.1) and may be followed by more than one space.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// What the list and the detail view both show of a deployment.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeploymentFacts {
    /// The deployment's id, its link name.
    id: String,
    /// Its name for people (the id when it has none).
    name: String,
    /// Free text for people.
    description: String,
    /// The provider that creates its instances.
    provider: String,
    /// `Standby`, `Idle` or `Running`, derived from its instances.
    status: DeploymentStatus,
    /// Its cap.
    max_instances: u32,
    /// Requests waiting for an instance now.
    queue_depth: usize,
    /// Requests answered per second, over the last second sampled.
    requests_per_second: f64,
    /// What its live instances cost per hour now: the sum of their `price_per_hour` (each
    /// keeps the price it was started with), what budgets are checked against.
    hourly_rate: f64,
    /// What it has cost so far.
    total_cost: f64,
    /// Spend on instances while they served nothing (see [`Controller::idle_waste`]).
    idle_waste: f64,
    /// Requests answered 1021 (budget exceeded).
    budget_refusals: u64,
    /// Where to send requests: `/d/{id}/`, or its own address.
    link: String,
}

/// One deployment in the list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeploymentSummary {
    #[serde(flatten)]
    facts: DeploymentFacts,
    /// Instances that exist now, starting and draining ones included.
    instances: usize,
}

/// Every deployment.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeploymentList {
    deployments: Vec<DeploymentSummary>,
    /// Only with a `[gateway] budget`: without one the body stays as it always was.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<BudgetView>,
}

/// The gateway's spending limit and what its live instances cost per hour now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BudgetView {
    max_per_hour: f64,
    hourly_rate: f64,
}

/// A deployment's instances.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InstanceList {
    instances: Vec<InstanceView>,
}

/// The answer to a deletion: the deployment is gone, with what it cost.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    id: String,
    deleted: bool,
    total_cost: f64,
}

/// An instance that was asked to start (`creating`) or to stop (`draining`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InstanceAction {
    #[schema(value_type = String, example = "xykemlvy")]
    id: InstanceId,
    #[schema(example = "creating")]
    state: &'static str,
}

fn summary(gateway: &Gateway, controller: &Controller) -> DeploymentSummary {
    DeploymentSummary {
        facts: facts(gateway, controller),
        instances: controller.instances().len(),
    }
}

fn facts(gateway: &Gateway, controller: &Controller) -> DeploymentFacts {
    let config = controller.config();
    DeploymentFacts {
        id: config.id.clone(),
        name: config.display_name().to_owned(),
        description: config.description.clone(),
        provider: config.provider.clone(),
        status: controller.status(),
        max_instances: config.max_instances,
        queue_depth: controller.queue_depth(),
        requests_per_second: gateway.events().histories().requests_per_second(&config.id),
        hourly_rate: controller.hourly_rate(),
        total_cost: controller.total_cost(),
        idle_waste: controller.idle_waste(),
        budget_refusals: controller.budget_refusals(),
        link: match config.listen {
            Some(addr) => format!("http://{addr}/"),
            None => format!("/d/{}/", config.id),
        },
    }
}

/// One instance with its last log lines.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InstanceView {
    #[serde(flatten)]
    info: InstanceInfo,
    /// Where it runs, where the provider has several places (a Docker host's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    /// Its last log lines, oldest first.
    last_log: Vec<String>,
}

fn instance_views(controller: &Controller) -> Vec<InstanceView> {
    controller
        .instances()
        .into_iter()
        .map(|info| InstanceView {
            last_log: controller.logs(info.id, LOG_LINES),
            host: controller.provider().location(info.id),
            info,
        })
        .collect()
}

/// One deployment in detail.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeploymentDetail {
    #[serde(flatten)]
    facts: DeploymentFacts,
    /// Instances released over its life.
    released_instances: u64,
    /// Its configuration.
    config: DeployConfig,
    /// Its instances now.
    instances: Vec<InstanceView>,
    /// The last starts that failed (at most 20), oldest first.
    start_failures: Vec<StartFailure>,
}

fn detail(gateway: &Gateway, controller: &Controller) -> DeploymentDetail {
    DeploymentDetail {
        facts: facts(gateway, controller),
        released_instances: controller.released_count(),
        config: (*controller.config()).clone(),
        instances: instance_views(controller),
        start_failures: controller.start_failures(),
    }
}

fn controller(gateway: &Gateway, id: &str) -> ApiResult<Controller> {
    gateway
        .controller(id)
        .ok_or_else(|| GatewayError::with_detail(ErrorCode::DeploymentNotFound, id).into())
}

/// Liveness: `ok` while the gateway runs. Never needs the token.
#[utoipa::path(get, path = "/healthz", tag = "gateway", security(()),
    responses((status = 200, description = "The gateway is up", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// This API's OpenAPI 3.1 document, generated from the handlers and their types.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "gateway",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
    ))]
pub(crate) async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
}

/// Every deployment with its status, instance count and cost.
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments",
    responses(
        (status = 200, description = "Every deployment", body = DeploymentList),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
    ))]
pub(crate) async fn list_deployments(State(gateway): State<Gateway>) -> impl IntoResponse {
    let deployments = gateway
        .controllers()
        .iter()
        .map(|c| summary(&gateway, c))
        .collect();
    let budget = gateway.budget().map(|budget| BudgetView {
        max_per_hour: budget.limit().max_per_hour,
        hourly_rate: budget.hourly_rate(),
    });
    axum::Json(DeploymentList {
        deployments,
        budget,
    })
}

/// One deployment: its config, instances with their last log lines, cost and last failed
/// starts.
#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id", example = "demo")),
    responses(
        (status = 200, description = "The deployment", body = DeploymentDetail),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment", body = ErrorBody),
    ))]
pub(crate) async fn get_deployment(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(detail(&gateway, &controller(&gateway, &id)?)))
}

/// The deployment's last 15 minutes: requests and instances per bucket, recent cold starts
/// and failed starts (for the dashboard's charts).
#[utoipa::path(get, path = "/api/v1/deployments/{id}/history", tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id", example = "demo")),
    responses(
        (status = 200, description = "Its recent history", body = crate::events::history::HistoryView),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment", body = ErrorBody),
    ))]
pub(crate) async fn history(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    controller(&gateway, &id)?;
    Ok(axum::Json(gateway.events().histories().view(&id)))
}

/// The live events as server-sent events: each one's `event:` is its type, `id:` its
/// sequence number, `data:` its JSON; a subscriber that reads too slowly gets a `lagged`
/// event saying how many it missed. The stream ends when the gateway stops.
#[utoipa::path(get, path = "/api/v1/events", tag = "gateway",
    responses(
        (status = 200, description = "An endless stream of server-sent events; each `data:` is one JSON event", body = String, content_type = "text/event-stream"),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
    ))]
pub(crate) async fn events(State(gateway): State<Gateway>) -> impl IntoResponse {
    let stream = gateway
        .events()
        .subscribe()
        .into_stream()
        .map(|received| Ok::<_, std::convert::Infallible>(sse_event(&received)));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
}

fn sse_event(received: &Received) -> Event {
    match received {
        Received::Event(event) => Event::default()
            .event(event.kind.name())
            .id(event.seq.to_string())
            .data(serde_json::to_string(&**event).unwrap_or_default()),
        Received::Lagged { dropped } => Event::default()
            .event("lagged")
            .data(serde_json::json!({ "type": "lagged", "dropped": dropped }).to_string()),
    }
}

/// Reads a JSON `DeployConfig`: bad JSON is 1000, a wrong shape or meaning 1003.
async fn read_config(body: Body) -> ApiResult<DeployConfig> {
    let bytes = axum::body::to_bytes(body, MAX_API_BODY)
        .await
        .map_err(|_| ApiError::from(ErrorCode::PayloadTooLarge))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_data() {
            ErrorCode::InvalidConfig
        } else {
            ErrorCode::BadRequest
        };
        GatewayError::with_detail(code, e).into()
    })
}

/// Creates a deployment (kept in `{state_dir}/deployments.json` when the gateway has one).
#[utoipa::path(post, path = "/api/v1/deployments", tag = "deployments",
    request_body = DeployConfig,
    responses(
        (status = 201, description = "Created", body = DeploymentDetail),
        (status = 400, description = "1000: the body is not JSON", body = ErrorBody),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 409, description = "1014: the id exists (or is still being deleted)", body = ErrorBody),
        (status = 413, description = "1012: body over 1 MiB", body = ErrorBody),
        (status = 422, description = "1003: invalid deployment config, each problem with its field", body = ErrorBody),
        (status = 503, description = "1015: the gateway is shutting down", body = ErrorBody),
    ))]
pub(crate) async fn create_deployment(
    State(gateway): State<Gateway>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let config = read_config(body).await?;
    let controller = gateway.add_deployment(config).await.map_err(|e| match e {
        BuildError::Deployment(e) => ApiError(e),
        other => ApiError(GatewayError::with_detail(ErrorCode::InvalidConfig, other)),
    })?;
    gateway.save_api_deployments().await;
    Ok((
        StatusCode::CREATED,
        axum::Json(detail(&gateway, &controller)),
    ))
}

/// Replaces a deployment's config; running instances keep serving.
#[utoipa::path(put, path = "/api/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id", example = "demo")),
    request_body = DeployConfig,
    responses(
        (status = 200, description = "Updated", body = DeploymentDetail),
        (status = 400, description = "1000: the body is not JSON", body = ErrorBody),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment", body = ErrorBody),
        (status = 413, description = "1012: body over 1 MiB", body = ErrorBody),
        (status = 422, description = "1003: invalid config, or its id differs from the path's", body = ErrorBody),
    ))]
pub(crate) async fn update_deployment(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let config = read_config(body).await?;
    if config.id != id {
        return Err(GatewayError::with_detail(
            ErrorCode::InvalidConfig,
            format!(
                "id: the body's id {:?} differs from the path's {id:?}",
                config.id
            ),
        )
        .into());
    }
    gateway.update_deployment(config)?;
    note_runtime_only(&gateway, &id, "updated");
    gateway.save_api_deployments().await;
    Ok(axum::Json(detail(&gateway, &controller(&gateway, &id)?)))
}

/// Deletes a deployment: its link answers 1002 at once, its instances drain and are
/// released, then the answer comes.
#[utoipa::path(delete, path = "/api/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id", example = "demo")),
    responses(
        (status = 200, description = "Deleted, every instance released", body = Deleted),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment", body = ErrorBody),
    ))]
pub(crate) async fn delete_deployment(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let controller = controller(&gateway, &id)?;
    gateway.remove_deployment(&id).await?;
    note_runtime_only(&gateway, &id, "deleted");
    gateway.save_api_deployments().await;
    Ok(axum::Json(Deleted {
        id,
        deleted: true,
        total_cost: controller.total_cost(),
    }))
}

/// Logs that a change through the API will not outlive a restart: the config file defines
/// the deployment (edit the file to keep it), or the gateway keeps no API store.
fn note_runtime_only(gateway: &Gateway, id: &str, change: &str) {
    if gateway.change_is_runtime_only(id) {
        tracing::info!(
            deployment = id,
            "{change} through the API until the next restart (the config file, or no state_dir, \
             decides what runs after it)"
        );
    }
}

/// A deployment's instances with their last log lines.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/instances", tag = "instances",
    params(("id" = String, Path, description = "The deployment's id", example = "demo")),
    responses(
        (status = 200, description = "Its instances", body = InstanceList),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment", body = ErrorBody),
    ))]
pub(crate) async fn list_instances(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let controller = controller(&gateway, &id)?;
    Ok(axum::Json(InstanceList {
        instances: instance_views(&controller),
    }))
}

/// Starts an instance now (pre-warm); it idles out like any other.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/instances", tag = "instances",
    params(("id" = String, Path, description = "The deployment's id", example = "demo")),
    responses(
        (status = 201, description = "Starting", body = InstanceAction),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment", body = ErrorBody),
        (status = 429, description = "1007: max_instances exist already (starting ones count); 1021: a budget refuses the start", body = ErrorBody),
        (status = 503, description = "1015: the deployment is being deleted or the gateway stops; 1021: a budget refuses the start and no instance is due for release", body = ErrorBody),
    ))]
pub(crate) async fn start_instance(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = controller(&gateway, &id)?.start_instance()?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InstanceAction {
            id,
            state: "creating",
        }),
    ))
}

fn instance_id(raw: &str) -> ApiResult<InstanceId> {
    raw.parse()
        .map_err(|_| GatewayError::with_detail(ErrorCode::NotFound, "no such instance").into())
}

/// One instance with its last log lines.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/instances/{instance}", tag = "instances",
    params(
        ("id" = String, Path, description = "The deployment's id", example = "demo"),
        ("instance" = String, Path, description = "The instance's id"),
    ),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment; 1016: no such instance", body = ErrorBody),
    ))]
pub(crate) async fn get_instance(
    State(gateway): State<Gateway>,
    Path((id, instance)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let controller = controller(&gateway, &id)?;
    let instance = instance_id(&instance)?;
    instance_views(&controller)
        .into_iter()
        .find(|v| v.info.id == instance)
        .map(axum::Json)
        .ok_or_else(|| GatewayError::with_detail(ErrorCode::NotFound, "no such instance").into())
}

/// Releases one instance: it takes no new requests, finishes those in flight, then is
/// released.
#[utoipa::path(delete, path = "/api/v1/deployments/{id}/instances/{instance}", tag = "instances",
    params(
        ("id" = String, Path, description = "The deployment's id", example = "demo"),
        ("instance" = String, Path, description = "The instance's id"),
    ),
    responses(
        (status = 202, description = "Draining", body = InstanceAction),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
        (status = 404, description = "1002: no such deployment; 1016: no such instance", body = ErrorBody),
    ))]
pub(crate) async fn release_instance(
    State(gateway): State<Gateway>,
    Path((id, instance)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let controller = controller(&gateway, &id)?;
    let id = instance_id(&instance)?;
    controller
        .release_instance(id)
        .map_err(|_| GatewayError::with_detail(ErrorCode::NotFound, "no such instance"))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(InstanceAction {
            id,
            state: "draining",
        }),
    ))
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "gateway",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 401, description = "1001: no or wrong admin token", body = ErrorBody),
    ))]
pub(crate) async fn metrics(State(gateway): State<Gateway>) -> impl IntoResponse {
    let controllers = gateway.controllers();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway
            .metrics()
            .render(controllers.iter(), &gateway.provider_counters()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_ignoring_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k"] {
            assert_eq!(bearer_token(value.as_bytes()), Some(&b"t0k"[..]), "{value}");
        }
        for value in [
            "Basic t0k",
            "Bearert0k",
            "Bearer",
            "Bearer ",
            "Token t0k",
            "",
        ] {
            assert_eq!(bearer_token(value.as_bytes()), None, "{value}");
        }
    }
}
