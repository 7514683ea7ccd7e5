//! The one error shape of the API, and the mapping of every failure to it.
//!
//! ```json
//! {"error": {"code": "invalid_input", "message": "cron: ...", "field": "cron",
//!            "details": [{"field": "cron", "message": "..."}]}}
//! ```
//!
//! Bad input is always a 4xx: axum's own rejections (malformed JSON, wrong
//! content type, oversized bodies, bad query strings) are converted here,
//! and [`enforce_shape`] converts whatever still leaves the server without
//! this shape (a 405 from the router, a 413 from a body limit).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::schedule::{ValidationError, ValidationErrors};
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// 401: no token, or a wrong one (every operation but the probes).
#[derive(utoipa::IntoResponses)]
#[response(status = 401, description = "No or wrong token")]
#[allow(dead_code)] // documentation only
pub struct Unauthorized(ErrorBody);

/// 403: a read-only token asked for a change.
#[derive(utoipa::IntoResponses)]
#[response(status = 403, description = "Read-only token")]
#[allow(dead_code)] // documentation only
pub struct ReadOnly(ErrorBody);

/// 422: the request was read, but values in it are refused (every problem
/// in `details`).
#[derive(utoipa::IntoResponses)]
#[response(
    status = 422,
    description = "Refused values: the request was read (a JSON object, parameters of the right \
                   types), but values in it are refused, every problem listed in `details`: keys \
                   or types the schema does not allow, and rules no schema can state (a cron \
                   expression or zone that does not parse, a pipeline the replicas do not define, \
                   an instant in the past, a range the wrong way round, a body `name` other than \
                   the path's, a cursor this listing did not issue)"
)]
#[allow(dead_code)] // documentation only
pub struct Unprocessable(ErrorBody);

/// 413: the body is over the limit.
#[derive(utoipa::IntoResponses)]
#[response(status = 413, description = "Body over the limit")]
#[allow(dead_code)] // documentation only
pub struct TooLarge(ErrorBody);

/// 415: the body is not JSON.
#[derive(utoipa::IntoResponses)]
#[response(status = 415, description = "Body is not JSON")]
#[allow(dead_code)] // documentation only
pub struct NotJson(ErrorBody);

/// What went wrong, for programs (`code`) and for people (`message`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_input`, `invalid_json`,
    /// `invalid_query`, `invalid_path`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `already_exists`,
    /// `version_conflict`, `run_not_finished`, `schedule_deleted`,
    /// `backfill_active`, `backfill_finished`, `idempotency_key_reused`,
    /// `payload_too_large`, `headers_too_large`, `unsupported_media_type`,
    /// `unavailable`, `internal`.
    #[schema(example = "invalid_input")]
    pub code: &'static str,
    /// What is wrong, in words a person can act on.
    pub message: String,
    /// The input field at fault (the first one, when there are several).
    pub field: Option<String>,
    /// Every field problem found (empty when the error is not about fields).
    pub details: Vec<FieldProblem>,
}

/// One problem with one input field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field, as named in the request (`cron`, `timezone`, `retry.backoff`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error response: status, shape, and any header the status calls for.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
                field: None,
                details: Vec::new(),
            },
            www_authenticate: None,
        }
    }

    /// 400: one field is invalid.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ValidationErrors(vec![ValidationError::new(field, message)]).into()
    }

    /// The same error as a 422: the request was read (JSON, parameters of
    /// the right types), but its values are refused. A 400 stays for what
    /// cannot be read and for the parameter rules the document states, so
    /// a client can tell "fix your encoding" from "fix your values", and a
    /// 400 to a request the document allows is always a contract bug (the
    /// schemathesis test fails on one).
    pub fn unprocessable(mut self) -> Self {
        if self.status == StatusCode::BAD_REQUEST {
            self.status = StatusCode::UNPROCESSABLE_ENTITY;
        }
        self
    }

    /// 422 for values refused (see [`ApiError::unprocessable`]).
    pub fn refused(errors: ValidationErrors) -> Self {
        ApiError::from(errors).unprocessable()
    }

    /// 400 with another code (`invalid_json`, `invalid_query`, `invalid_path`).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no credentials, or wrong ones.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.www_authenticate = Some("Bearer realm=\"spine-scheduler\"");
        e
    }

    /// 403: the credentials do not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with the stored state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 503: a dependency (the database) is not answering.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 431: the request's header fields are `size` bytes, over
    /// [`super::HEADER_LIMIT`].
    pub fn headers_too_large(size: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request's header fields are {size} bytes, over the limit of {} KiB",
                super::HEADER_LIMIT / 1024
            ),
        )
    }

    /// 500: a fault on our side, never the caller's input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Names the field at fault (and lists it in `details`, so that
    /// `details` always holds every field named).
    pub fn with_field(mut self, field: &str) -> Self {
        self.detail.field = Some(field.to_string());
        if !self.detail.details.iter().any(|d| d.field == field) {
            self.detail.details.push(FieldProblem {
                field: field.to_string(),
                message: self.detail.message.clone(),
            });
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.detail.code
    }

    /// The error for a status that has no more specific cause, with the
    /// body text something else produced (used by [`enforce_shape`]).
    pub fn from_status(status: StatusCode, text: &str) -> Self {
        let text = text.trim();
        let say = |default: &str| {
            if text.is_empty() {
                default.to_string()
            } else {
                text.to_string()
            }
        };
        match status {
            StatusCode::NOT_FOUND => Self::not_found(say("no such route")),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "method_not_allowed",
                say("this method is not allowed on this route (see the Allow header)"),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                say("send the body as Content-Type: application/json"),
            ),
            StatusCode::UNAUTHORIZED => Self::unauthorized(say("authentication required")),
            StatusCode::FORBIDDEN => Self::forbidden(say("forbidden")),
            s if s.is_client_error() => Self::new(s, "invalid_input", say("invalid request")),
            s if s == StatusCode::SERVICE_UNAVAILABLE => Self::unavailable(say("unavailable")),
            s => Self::new(s, "internal", say("internal error; see the replica's log")),
        }
    }

    fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than the limit of {} KiB",
                super::BODY_LIMIT / 1024
            ),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status, self.detail.code, self.detail.message
        )
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        let details: Vec<FieldProblem> = errors
            .0
            .iter()
            .map(|e| FieldProblem {
                field: e.field.clone(),
                message: e.message.clone(),
            })
            .collect();
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_input", errors.to_string());
        e.detail.field = details.first().map(|d| d.field.clone());
        e.detail.details = details;
        e
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(name) => Self::not_found(format!("schedule {name:?} not found")),
            StoreError::AlreadyExists(name) => Self::conflict(
                "already_exists",
                format!("schedule {name:?} already exists; update it with PUT or PATCH"),
            ),
            e @ StoreError::VersionConflict { .. } => {
                Self::conflict("version_conflict", format!("{e}; read it again and retry"))
                    .with_field("version")
            }
            StoreError::Db(db) => from_db_error(&db),
            e @ StoreError::Pool(_) => {
                tracing::warn!(error = %e, "admin API: no database connection");
                Self::unavailable("the database is not reachable; try again")
            }
            // A row someone edited into nonsense: the stored state is at
            // fault, not the request, and an operator has to fix it.
            e @ StoreError::InvalidRow { .. } => Self::internal(e.to_string()),
            e @ (StoreError::Config(_) | StoreError::Settings(_) | StoreError::Schema(_)) => {
                tracing::error!(error = %e, "admin API: store error");
                Self::internal(e.to_string())
            }
        }
    }
}

/// Integrity violations (SQLSTATE class 23) come from input the validation
/// should have caught, so they are the caller's 400, not our 500; a lost
/// connection is a 503; anything else the database refused is ours.
fn from_db_error(e: &tokio_postgres::Error) -> ApiError {
    match e.as_db_error() {
        Some(db) if db.code().code().starts_with("23") => ApiError::bad_request(
            "invalid_input",
            format!("the database refused the value: {}", db.message()),
        ),
        Some(db) => {
            tracing::error!(error = %e, code = db.code().code(), "admin API: statement failed");
            ApiError::internal("a database statement failed; see the replica's log")
        }
        None => {
            // The replica reports an outage once (`engine::outage`); a
            // request per second from a probe must not repeat it.
            tracing::debug!(error = %e, "admin API: database connection failed");
            ApiError::unavailable("the database is not reachable; try again")
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            _ => Self::bad_request("invalid_json", r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        if r.status().is_server_error() {
            Self::internal(r.body_text())
        } else {
            Self::bad_request("invalid_path", r.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(ErrorBody { error: self.detail })).into_response();
        if let Some(v) = self.www_authenticate {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        response
    }
}

/// Largest body of a non-JSON error response that is carried into the
/// message; axum's rejection texts are a line or two.
const MAX_FOREIGN_BODY: usize = 4096;

/// Middleware: every 4xx/5xx leaves in the error shape. Responses that are
/// already JSON pass untouched; others (axum's 405, a plain-text rejection)
/// are rebuilt, keeping their headers (`Allow`) and their text as the message.
pub async fn enforce_shape(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_FOREIGN_BODY).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let shaped = ApiError::from_status(status, &text).into_response();
    let (new_parts, new_body) = shaped.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, new_body)
}
