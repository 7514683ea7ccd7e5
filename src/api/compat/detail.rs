//! FastAPI's error shape, `{"detail": "…"}`, for everything under
//! [`PREFIX`](super::PREFIX): the original's clients read `detail`.
//!
//! Handlers return the API's own [`ApiError`] (so every rule of `/v1` —
//! the 400s of validation, the 401/403 of the tokens, 413, 415, 503 —
//! applies unchanged), and [`detail_shape`] rewrites the body on the way
//! out: the status, headers and message stay, only the shape changes.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::api::error::ApiError;

/// An error of the compatibility routes, as FastAPI's `HTTPException`
/// renders it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetailBody {
    /// What went wrong, in words: the original's where it had words
    /// (`Schedule not found: daily_finra`, `Either cron or interval_minutes
    /// required`), else the `/v1` error's message.
    pub detail: String,
}

/// 400: the body or a parameter is invalid (every problem named).
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Invalid body or parameter, every problem named"
)]
#[allow(dead_code)] // documentation only
pub struct Invalid(DetailBody);

/// 422: the body was read, but values in it are refused (a cron's fields,
/// a zone, a pipeline the replicas do not define), every problem named.
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "Values refused (cron fields, time zone, an undefined pipeline), every problem named"
)]
#[allow(dead_code)] // documentation only
pub struct Refused(DetailBody);

/// 401: no token, or a wrong one.
#[derive(IntoResponses)]
#[response(status = 401, description = "No or wrong token")]
#[allow(dead_code)] // documentation only
pub struct Unauthorized(DetailBody);

/// 403: the read-only token asked for a change.
#[derive(IntoResponses)]
#[response(status = 403, description = "Read-only token")]
#[allow(dead_code)] // documentation only
pub struct ReadOnly(DetailBody);

/// 404: `Schedule not found: {name}`.
#[derive(IntoResponses)]
#[response(status = 404, description = "Schedule not found: {name}")]
#[allow(dead_code)] // documentation only
pub struct NoSuchSchedule(DetailBody);

/// 409: the stored schedule changed meanwhile, or it may not be written
/// through the API.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "The schedule changed while it was being replaced, or it may not be written through the API"
)]
#[allow(dead_code)] // documentation only
pub struct Conflict(DetailBody);

/// 413: the body is over the limit.
#[derive(IntoResponses)]
#[response(status = 413, description = "Body over the limit")]
#[allow(dead_code)] // documentation only
pub struct TooLarge(DetailBody);

/// 415: a body that is not JSON.
#[derive(IntoResponses)]
#[response(status = 415, description = "Body is not JSON")]
#[allow(dead_code)] // documentation only
pub struct NotJson(DetailBody);

/// The original's 404 for a schedule name it does not know.
pub fn schedule_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Schedule not found: {name}"))
}

/// `e`, with the original's words when it is a 404 for schedule `name`.
pub fn or_not_found(name: &str, e: ApiError) -> ApiError {
    if e.status() == StatusCode::NOT_FOUND {
        schedule_not_found(name)
    } else {
        e
    }
}

/// Largest error body read back for rewriting; ours are a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Middleware: under [`PREFIX`](super::PREFIX), an error in the API's shape
/// (`{"error": {"message", …}}`) leaves as `{"detail": message}`, whatever
/// produced it (a handler, the token check, a body limit, a timeout, the
/// router's 404/405). Other paths, and successes, pass untouched.
pub async fn detail_shape(request: Request, next: Next) -> Response {
    let ours = is_compat_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !ours || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "compat: an error body could not be read back");
            return ApiError::internal("the error could not be rendered; see the replica's log")
                .into_response();
        }
    };
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_string));
    let Some(message) = message else {
        // Not our shape (enforce_shape runs inside this, so this does not
        // happen): pass it on as it was.
        return Response::from_parts(parts, Body::from(bytes));
    };
    let body = serde_json::to_vec(&DetailBody { detail: message })
        .unwrap_or_else(|_| br#"{"detail":"error"}"#.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Whether `path` is [`PREFIX`](super::PREFIX) or under it.
fn is_compat_path(path: &str) -> bool {
    path.strip_prefix(super::PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_prefix_and_below_are_compat_paths() {
        assert!(super::is_compat_path("/scheduler"));
        assert!(super::is_compat_path("/scheduler/schedules"));
        assert!(!super::is_compat_path("/schedulers"));
        assert!(!super::is_compat_path("/v1/schedules"));
    }
}
