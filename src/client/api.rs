//! The HTTP calls: one request, the token, and the API's error shape turned
//! into a [`ClientError`].

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ClientError;
use crate::pipeline::http::build_client;

/// What a path segment keeps unescaped: the characters of schedule names
/// and run ids. Anything else (`/`, `?`, space) is escaped, so a mistyped
/// name reaches the API as that name, and the API says what is wrong with
/// it, instead of reaching another route.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A 2xx answer.
#[derive(Debug)]
pub struct Reply {
    /// The status (`201`, `202`, `200`…): some commands say what it means.
    pub status: StatusCode,
    /// The body as the API sent it (empty for 204).
    pub text: String,
    /// The URL asked (named when the body does not fit).
    url: String,
}

impl Reply {
    /// The body read as `T`.
    ///
    /// # Errors
    /// [`ClientError::UnexpectedReply`] when it is not `T` in JSON.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.text).map_err(|e| ClientError::UnexpectedReply {
            url: self.url.clone(),
            status: self.status.as_u16(),
            reason: format!("not the JSON the API sends ({e})"),
        })
    }
}

/// A replica's admin API: its base URL, the token and the HTTP client.
#[derive(Debug, Clone)]
pub struct Api {
    base: Url,
    /// The base's path without its trailing `/` (empty at the root), which
    /// every request path is appended to.
    prefix: String,
    token: Option<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl Api {
    /// A client of the API at `base` (`http://host:8080`, or with a path
    /// prefix behind a proxy), sending `token` as a bearer token; each
    /// request may take `timeout`.
    ///
    /// # Errors
    /// [`ClientError::BadUrl`] unless `base` is an absolute `http`/`https`
    /// URL without query or fragment; [`ClientError::Setup`] when the HTTP
    /// client cannot be set up.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Api, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: base.to_string(),
            reason: reason.to_string(),
        };
        let url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must start with http:// or https://"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        // Paths are appended to the base's own path (a proxy's prefix).
        let prefix = url.path().trim_end_matches('/').to_string();
        let client = build_client().map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Api {
            base: url,
            prefix,
            token,
            timeout,
            client,
        })
    }

    /// `segment` escaped for a URL path.
    pub fn segment(segment: &str) -> String {
        utf8_percent_encode(segment, SEGMENT).to_string()
    }

    /// The URL of `path` (already escaped, from `/`) with `query`.
    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.prefix));
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// GET `path` with the query parameters given.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Reply, ClientError> {
        self.send(Method::GET, path, query, None, &[]).await
    }

    /// POST `path` with an optional JSON body.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Reply, ClientError> {
        self.send(Method::POST, path, &[], body, &[]).await
    }

    /// DELETE `path`.
    ///
    /// # Errors
    /// See [`Api::send`].
    pub async fn delete(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(Method::DELETE, path, &[], None, &[]).await
    }

    /// Sends one request; a 2xx is the [`Reply`].
    ///
    /// # Errors
    /// [`ClientError::Api`] for any other status, with the API's message
    /// (or the body's first line when it is not the API's error shape);
    /// [`ClientError::Unreachable`] when no answer came.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let url = self.url(path, query);
        let mut request = self
            .client
            .request(method, url.clone())
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let shown = url.to_string();
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: shown.clone(),
            reason: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(Reply {
                status,
                text,
                url: shown,
            });
        }
        Err(api_error(status, &text))
    }
}

/// The API's error shape, `{"error": {"code", "message", "field", "details"}}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: String,
    #[serde(default)]
    details: Vec<FieldProblem>,
}

#[derive(serde::Deserialize)]
struct FieldProblem {
    field: String,
    message: String,
}

/// A non-2xx answer as a [`ClientError::Api`].
fn api_error(status: StatusCode, text: &str) -> ClientError {
    let reason = status.canonical_reason().unwrap_or("").to_string();
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            reason,
            code: body.error.code,
            message: body.error.message,
            details: body
                .error
                .details
                .into_iter()
                .map(|d| format!("{}: {}", d.field, d.message))
                .collect(),
        },
        // Not from the API itself (a proxy, a load balancer): its first line.
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            reason,
            code: None,
            message: text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("(no body)")
                .chars()
                .take(200)
                .collect(),
            details: vec![],
        },
    }
}

/// What went wrong under a reqwest error: its causes ("connection
/// refused"), without its own message, which only repeats the URL that the
/// caller names already; the message itself when it has no cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let Some(first) = error.source() else {
        return error.to_string();
    };
    let mut parts = vec![first.to_string()];
    let mut source = first.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_the_base_prefix_and_escape_segments() -> Result<(), ClientError> {
        let api = Api::new("https://ops.example/spine/", None, Duration::from_secs(1))?;
        let path = format!("/v1/schedules/{}", Api::segment("a b/c"));
        let url = api.url(&path, &[("count", "3".into())]);
        assert_eq!(
            url.as_str(),
            "https://ops.example/spine/v1/schedules/a%20b%2Fc?count=3"
        );
        let root = Api::new("http://127.0.0.1:8080", None, Duration::from_secs(1))?;
        assert_eq!(
            root.url("/v1/cluster", &[]).as_str(),
            "http://127.0.0.1:8080/v1/cluster"
        );
        Ok(())
    }

    #[test]
    fn urls_that_cannot_work_are_refused() {
        for bad in ["localhost:8080", "ftp://x", "http://x/?a=1", "nonsense"] {
            assert!(
                matches!(
                    Api::new(bad, None, Duration::from_secs(1)),
                    Err(ClientError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_api_error_is_read_and_other_bodies_give_their_first_line() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":"not_found","message":"no schedule named \"x\"","field":null,"details":[]}}"#,
        );
        assert_eq!(e.to_string(), "404 Not Found: no schedule named \"x\"");
        let e = api_error(StatusCode::BAD_GATEWAY, "\n<html>bad gateway</html>\n");
        assert_eq!(e.to_string(), "502 Bad Gateway: <html>bad gateway</html>");
    }
}
