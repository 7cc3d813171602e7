//! The management API's OpenAPI 3.1 document, generated from the handlers' annotations and
//! the types they answer with, so it cannot drift from the code. Served at
//! `/api/v1/openapi.json`; CI runs schemathesis against the running binary with it.
//!
//! A new route is documented by a `#[utoipa::path]` on its handler and one line in
//! [`ApiDoc`]'s `paths`.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::api;

/// Every error the gateway produces: a stable code and a message (see the README's error
/// table).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The error code, 1000 to 1099.
    #[schema(example = 1002)]
    code: u16,
    /// What went wrong.
    #[schema(example = "deployment not found")]
    msg: String,
}

/// The document's definition: routes, shared types, the bearer scheme.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "autodeploy management API",
        description = "Deployments, their instances and the gateway's metrics. With an admin \
            token configured, every route but /healthz needs `Authorization: Bearer <token>`."
    ),
    paths(
        api::list_deployments,
        api::create_deployment,
        api::get_deployment,
        api::update_deployment,
        api::delete_deployment,
        api::history,
        api::list_instances,
        api::start_instance,
        api::get_instance,
        api::release_instance,
        api::events,
        api::openapi,
        api::metrics,
        api::healthz,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
    tags(
        (name = "deployments", description = "Deployments: one link each"),
        (name = "instances", description = "A deployment's instances"),
        (name = "gateway", description = "The gateway itself"),
    )
)]
pub struct ApiDoc;

/// Adds the `admin_token` bearer scheme the routes name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, built once.
pub(crate) fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|err| format!(r#"{{"error": "{err}"}}"#))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_and_method() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/v1/deployments", &["get", "post"][..]),
            ("/api/v1/deployments/{id}", &["get", "put", "delete"][..]),
            ("/api/v1/deployments/{id}/instances", &["get", "post"][..]),
            (
                "/api/v1/deployments/{id}/instances/{instance}",
                &["get", "delete"][..],
            ),
            ("/api/v1/deployments/{id}/history", &["get"][..]),
            ("/api/v1/events", &["get"][..]),
            ("/api/v1/openapi.json", &["get"][..]),
            ("/metrics", &["get"][..]),
            ("/healthz", &["get"][..]),
        ] {
            for method in methods {
                assert!(paths[path][method].is_object(), "{method} {path}");
            }
        }
        // Only /healthz is open.
        assert_eq!(
            paths["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
        assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
        assert!(doc["components"]["schemas"]["DeployConfig"].is_object());
    }
}
