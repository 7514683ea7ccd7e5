//! axum's extractors with our error shape as their rejection, and the
//! `If-Match` precondition.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON body (`Content-Type: application/json` or any `+json` type, within
/// the body limit); rejects with 400/413/415 in the API's shape.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

/// An optional JSON body, for the controls whose body may be left out
/// (pause, resume, run now, rerun). An empty body (or one of only
/// whitespace) is `None`, whatever its `Content-Type` (JSON `null` is
/// `Some(Null)`: the handlers read it as no body); any other body must
/// be JSON (`application/json` or `+json`: else 415) and parse (else 400
/// `invalid_json`), within the body limit (else 413). What it may contain
/// is the handler's to check: nothing in it is ever ignored.
pub struct OptionalJson(pub Option<Value>);

impl<S> FromRequest<S> for OptionalJson
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::from_status(r.status(), &r.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json_type {
            return Err(ApiError::from_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json (or no body at all)",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalJson(Some(v)))
            .map_err(|e| {
                ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}"))
            })
    }
}

/// `application/json`, or any `application/…+json`, with any parameters.
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// A query string; rejects with 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// Path parameters; rejects with 400 `invalid_path`.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or a bare `3`
/// (the schedule's `version`, as sent in `ETag`); `*` or no header: none.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "If-Match",
            "must be the schedule's version as sent in its ETag, e.g. \"3\"",
        )
    };
    let text = raw.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse::<i64>().map(Some).map_err(|_| bad())
}

/// The `ETag` value for a schedule version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(header::IF_MATCH, v);
        }
        h
    }

    #[test]
    fn json_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json_type(yes), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "text/json", ""] {
            assert!(!is_json_type(no), "{no}");
        }
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(if_match(&with("\"3\"")).ok(), Some(Some(3)));
        assert_eq!(if_match(&with("W/\"4\"")).ok(), Some(Some(4)));
        assert_eq!(if_match(&with("5")).ok(), Some(Some(5)));
        assert_eq!(if_match(&with("*")).ok(), Some(None));
        assert!(if_match(&with("\"abc\"")).is_err());
    }
}
