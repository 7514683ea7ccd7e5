//! The OpenAPI document: its header (info, security, tags) here; its paths
//! and schemas come from the handlers' `#[utoipa::path]` attributes as the
//! router is built (see `api::routes`), so it describes exactly what is
//! served.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ApiError;
use super::params::{EntityTags, RunStatusList, RunTriggerName, ScheduleName};

/// Name of the bearer security scheme in the document (also spelled out in
/// `ApiDoc`, whose macro wants a literal).
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "spine-scheduler admin API",
        description = "Schedules, run history, cluster state and cron previews of a \
            spine-scheduler cluster. Any replica answers any request. Every error has the \
            shape {\"error\": {\"code\", \"message\", \"field\", \"details\"}} (under /scheduler: \
            {\"detail\": \"…\"}). Send \
            `Authorization: Bearer <token>` to everything but /healthz, /readyz, /metrics and \
            /openapi.json; \
            the read-only token may only GET. Request bodies are JSON, at most 256 KiB; no \
            string in them (nor any key) may contain U+0000, which the database cannot store \
            (400 `invalid_json`). A 400 means the request cannot be read (not JSON, a key \
            twice, U+0000, a malformed header, a query parameter of the wrong type) or breaks \
            a parameter rule this document states; a 422 (on the operations that declare it) \
            that it was read but values in it are refused, every problem listed in \
            `details`, including rules no schema can state.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    components(schemas(ScheduleName, EntityTags, RunStatusList, RunTriggerName)),
    security(("bearer" = [])),
    tags(
        (name = "schedules", description = "Schedule definitions and actions"),
        (name = "runs", description = "The run ledger"),
        (name = "backfills", description = "Running a schedule's past ticks, and their progress"),
        (name = "cluster", description = "Replicas and leadership"),
        (name = "preview", description = "Fire times without saving"),
        (name = "operations", description = "Probes, metrics and this document"),
        (name = "compat", description = "The original service's /scheduler API, kept for its \
            clients: its shapes and its error shape {\"detail\": \"…\"}. /v1 is the primary API."),
        (name = "access", description = "What the presented token may do"),
    ),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (SPINE_API_TOKEN) or the read-only token \
                         (SPINE_API_READONLY_TOKEN, GET only)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's header, before the routes add their paths.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document, serialised once: it depends on nothing at run time.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| serde_json::to_string(&super::openapi()).map_err(|e| e.to_string()));

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "get_openapi",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"),
    )
)]
pub async fn get() -> Response {
    match &*DOCUMENT {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => {
            ApiError::internal(format!("serialising the OpenAPI document: {e}")).into_response()
        }
    }
}
