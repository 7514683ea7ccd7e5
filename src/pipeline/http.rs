//! The `http` pipeline: each run is one JSON request (a webhook) to a
//! service that does the work.
//!
//! The request carries the run's identity so the receiver can deduplicate
//! (`Idempotency-Key` is the run id; a retry is a new run with a new id, so a
//! receiver that wants one effect per tick keys on `schedule` and
//! `scheduled_at` instead) and, when a secret is configured, an HMAC-SHA256
//! signature of the exact body bytes so the receiver can tell the scheduler
//! from anyone else who can reach it:
//!
//! ```text
//! POST /ingest HTTP/1.1
//! Content-Type: application/json
//! Idempotency-Key: 0193f4c6-…
//! User-Agent: spine-scheduler/0.1.0
//! X-Spine-Signature: sha256=<hex of HMAC-SHA256(secret, body)>
//!
//! {"run_id":"0193f4c6-…","schedule":"price_updates","pipeline":"prices.ingest_current",
//!  "scheduled_at":"2027-01-04T14:15:00Z","attempt":1,"trigger":"schedule","params":{}}
//! ```
//!
//! A 2xx answer is success; anything else, a transport error or the
//! pipeline's own timeout is a failure. Redirects are not followed: a 3xx is
//! reported as a failure so a moved endpoint is noticed, and a signed body is
//! never re-sent to a host nobody configured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{Pipeline, PipelineError, PipelineFuture, PipelineOutcome, RunContext};
use crate::schedule::{ValidationError, ValidationErrors};

/// How long a run may take when the configuration does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response body kept as the run's result; larger bodies are not
/// read further, so a chatty endpoint cannot bloat the ledger or memory.
pub const MAX_RESULT_BODY: usize = 64 * 1024;

/// How many characters of an error response go into the message and result.
pub const ERROR_EXCERPT_CHARS: usize = 500;

/// The header carrying `sha256=<hex>` when a secret is configured.
pub const SIGNATURE_HEADER: &str = "x-spine-signature";

/// The header carrying the run id.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Sent on every request, so receivers can tell scheduler traffic apart.
pub const USER_AGENT_VALUE: &str = concat!("spine-scheduler/", env!("CARGO_PKG_VERSION"));

/// Headers the pipeline sets itself; configuring them would make the request
/// contradict its own body or signature.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    IDEMPOTENCY_HEADER,
    "user-agent",
    SIGNATURE_HEADER,
];

type HmacSha256 = Hmac<Sha256>;

/// What an `http` pipeline sends, and where.
#[derive(Clone)]
pub struct HttpConfig {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// The HTTP method (default `POST`).
    pub method: String,
    /// Extra request headers (names are case-insensitive).
    pub headers: BTreeMap<String, String>,
    /// How long one run may take, from connecting to the end of the response body.
    pub timeout: Duration,
    /// When set, each request is signed with HMAC-SHA256 under this key.
    pub hmac_secret: Option<Vec<u8>>,
}

impl HttpConfig {
    /// A `POST` to `url` with the default timeout, no extra headers and no signature.
    pub fn new(url: impl Into<String>) -> Self {
        HttpConfig {
            url: url.into(),
            method: "POST".to_string(),
            headers: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            hmac_secret: None,
        }
    }
}

// Hand-written so the secret never reaches a log line.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why the shared HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientError(String);

/// Builds the HTTP client that `http` pipelines share (one connection pool
/// for all of them).
///
/// TLS is rustls with the `ring` provider: reqwest's default provider
/// (aws-lc-rs) compiles a large C library, and ring is enough for a client.
/// Server certificates are checked against the operating system's roots.
pub fn build_client() -> Result<reqwest::Client, ClientError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed a provider first; reqwest
        // then uses that one, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .user_agent(USER_AGENT_VALUE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError(error_chain(&e)))
}

/// Sends each run to an HTTP endpoint; see the [module documentation](self).
#[derive(Clone)]
pub struct HttpPipeline {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    method: Method,
    url: Url,
    /// The URL as shown in messages: without credentials.
    shown_url: String,
    headers: HeaderMap,
    timeout: Duration,
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for HttpPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPipeline")
            .field("method", &self.inner.method)
            .field("url", &self.inner.shown_url)
            .field("timeout", &self.inner.timeout)
            .field("signed", &self.inner.mac.is_some())
            .finish()
    }
}

impl HttpPipeline {
    /// Checks `config` (every problem, each naming its field as the pipelines
    /// file spells it) and builds a pipeline sending through `client`.
    pub fn new(config: HttpConfig, client: reqwest::Client) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let url = match Url::parse(&config.url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                errors.push(ValidationError::new(
                    "url",
                    format!(
                        "scheme {:?} is not supported; use http:// or https://",
                        url.scheme()
                    ),
                ));
                None
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                errors.push(ValidationError::new("url", "has no host"));
                None
            }
            Ok(url) => Some(url),
            Err(e) => {
                errors.push(ValidationError::new(
                    "url",
                    format!("{:?} is not a valid URL ({e})", config.url),
                ));
                None
            }
        };
        let method = match Method::from_bytes(config.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                errors.push(ValidationError::new(
                    "method",
                    format!("{:?} is not a valid HTTP method", config.method),
                ));
                None
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let field = format!("headers.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(ValidationError::new(field, "is not a valid header name"));
                continue;
            };
            if RESERVED_HEADERS.contains(&header.as_str()) {
                errors.push(ValidationError::new(
                    field,
                    "is set by the scheduler on every request and cannot be configured",
                ));
                continue;
            }
            if headers.contains_key(&header) {
                errors.push(ValidationError::new(
                    field,
                    "is given twice (header names are case-insensitive)",
                ));
                continue;
            }
            match HeaderValue::from_str(value) {
                Ok(mut v) => {
                    // Configured headers often carry tokens; keep them out of debug output.
                    v.set_sensitive(true);
                    headers.insert(header, v);
                }
                Err(_) => errors.push(ValidationError::new(
                    field,
                    "value must be visible ASCII (no control characters or line breaks)",
                )),
            }
        }
        if config.timeout.is_zero() {
            errors.push(ValidationError::new("timeout", "must be greater than 0"));
        }
        let mac = match config.hmac_secret.as_deref() {
            None => None,
            Some([]) => {
                errors.push(ValidationError::new("hmac_secret", "must not be empty"));
                None
            }
            Some(secret) => match HmacSha256::new_from_slice(secret) {
                Ok(mac) => Some(mac),
                Err(e) => {
                    errors.push(ValidationError::new("hmac_secret", e.to_string()));
                    None
                }
            },
        };
        match (url, method) {
            (Some(url), Some(method)) if errors.is_empty() => {
                let shown_url = without_credentials(&url);
                Ok(HttpPipeline {
                    inner: Arc::new(Inner {
                        client,
                        method,
                        url,
                        shown_url,
                        headers,
                        timeout: config.timeout,
                        mac,
                    }),
                })
            }
            _ => Err(ValidationErrors(errors)),
        }
    }
}

impl Pipeline for HttpPipeline {
    fn run(&self, ctx: RunContext) -> PipelineFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.execute(&ctx).await })
    }
}

/// The JSON document each run sends.
pub fn request_body(ctx: &RunContext) -> Value {
    json!({
        "run_id": ctx.run_id,
        "schedule": ctx.schedule,
        "pipeline": ctx.pipeline,
        "scheduled_at": ctx.scheduled_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "attempt": ctx.attempt,
        "trigger": ctx.trigger.as_str(),
        "params": Value::Object(ctx.params.clone()),
    })
}

impl Inner {
    async fn execute(&self, ctx: &RunContext) -> PipelineOutcome {
        let body = serde_json::to_vec(&request_body(ctx))
            .map_err(|e| PipelineError::new(format!("cannot encode the request body: {e}")))?;
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(IDEMPOTENCY_HEADER, ctx.run_id.to_string());
        if let Some(mac) = &self.mac {
            request = request.header(SIGNATURE_HEADER, signature(mac, &body));
        }
        let request = request.body(body);
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(PipelineError::new(format!(
                "{} {} timed out after {}",
                self.method,
                self.shown_url,
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> PipelineOutcome {
        let mut response = request.send().await.map_err(|e| {
            PipelineError::new(format!(
                "{} {} failed: {}",
                self.method,
                self.shown_url,
                error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        let body = read_capped(&mut response, MAX_RESULT_BODY).await;
        if status.is_success() {
            let mut result = json!({ "status": status.as_u16() });
            if let Ok(Capped::Whole(bytes)) = &body {
                if let Ok(parsed) = serde_json::from_slice::<Value>(bytes) {
                    result["body"] = parsed;
                }
            }
            return Ok(Some(result));
        }
        let excerpt = match &body {
            Ok(Capped::Whole(bytes) | Capped::Truncated(bytes)) => excerpt(bytes),
            Err(e) => format!("(the body could not be read: {})", error_chain(e)),
        };
        Err(PipelineError {
            message: failure_message(&self.method, &self.shown_url, status, &excerpt),
            result: Some(json!({ "status": status.as_u16(), "body": excerpt })),
        })
    }
}

/// A response body read up to a limit.
enum Capped {
    Whole(Vec<u8>),
    /// The first bytes of a body longer than the limit.
    Truncated(Vec<u8>),
}

async fn read_capped(response: &mut reqwest::Response, limit: usize) -> reqwest::Result<Capped> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            // Stop reading: the rest is not kept, and the connection is
            // dropped instead of being drained back into the pool.
            return Ok(Capped::Truncated(bytes));
        }
    }
    Ok(Capped::Whole(bytes))
}

/// `sha256=<lowercase hex>` of the HMAC of `body`.
fn signature(mac: &HmacSha256, body: &[u8]) -> String {
    let mut mac = mac.clone();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim()
        .chars()
        .take(ERROR_EXCERPT_CHARS)
        .collect()
}

fn failure_message(method: &Method, url: &str, status: StatusCode, excerpt: &str) -> String {
    if excerpt.is_empty() {
        format!("{method} {url} returned {status}")
    } else {
        format!("{method} {url} returned {status}: {excerpt}")
    }
}

/// The URL with any `user:password@` removed, so messages stored in the
/// ledger do not leak credentials.
fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The error and its causes, `a: b: c`: reqwest's own message alone
/// ("error sending request") does not say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RunTrigger;
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::Map;
    use uuid::Uuid;

    fn client() -> reqwest::Client {
        build_client().expect("client")
    }

    fn fields(e: ValidationErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231, test case 2.
        let mac = HmacSha256::new_from_slice(b"Jefe").expect("any key length");
        assert_eq!(
            signature(&mac, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The keyed state is reused across runs; each signature starts fresh.
        assert_eq!(signature(&mac, b"x"), signature(&mac, b"x"));
    }

    #[test]
    fn body_has_every_field() {
        let mut params = Map::new();
        params.insert("tier".into(), json!("T1"));
        let run_id = Uuid::now_v7();
        let at: DateTime<Utc> = Utc.with_ymd_and_hms(2027, 1, 4, 11, 0, 0).unwrap();
        let body = request_body(&RunContext {
            run_id,
            schedule: "finra_otc_t1".into(),
            pipeline: "finra.ingest".into(),
            scheduled_at: at,
            attempt: 2,
            trigger: RunTrigger::Retry,
            params,
            cancel: crate::pipeline::CancelSignal::never(),
        });
        assert_eq!(
            body,
            json!({
                "run_id": run_id.to_string(),
                "schedule": "finra_otc_t1",
                "pipeline": "finra.ingest",
                "scheduled_at": "2027-01-04T11:00:00Z",
                "attempt": 2,
                "trigger": "retry",
                "params": {"tier": "T1"},
            })
        );
    }

    #[test]
    fn valid_config_builds() {
        let mut c = HttpConfig::new("https://user:pw@example.com/hook?x=1");
        c.method = "put".into();
        c.headers.insert("X-Team".into(), "prices".into());
        c.hmac_secret = Some(b"k".to_vec());
        let p = HttpPipeline::new(c, client()).expect("valid");
        assert_eq!(p.inner.method, Method::PUT);
        assert_eq!(p.inner.shown_url, "https://example.com/hook?x=1");
        assert!(!format!("{p:?}").contains("pw"));
    }

    #[test]
    fn every_config_problem_is_named() {
        let mut c = HttpConfig::new("ftp://example.com/");
        c.method = "P OST".into();
        c.headers.insert("Idempotency-Key".into(), "x".into());
        c.headers.insert("bad header".into(), "x".into());
        c.headers.insert("X-A".into(), "line\nbreak".into());
        c.headers.insert("x-b".into(), "1".into());
        c.headers.insert("X-B".into(), "2".into());
        c.timeout = Duration::ZERO;
        c.hmac_secret = Some(Vec::new());
        let e = HttpPipeline::new(c, client()).expect_err("invalid");
        assert_eq!(
            fields(e),
            [
                "url",
                "method",
                "headers.Idempotency-Key",
                "headers.X-A",
                "headers.bad header",
                "headers.x-b",
                "timeout",
                "hmac_secret"
            ]
        );
        for (url, wanted) in [
            ("not a url", "is not a valid URL"),
            ("http://", "is not a valid URL"),
            ("mailto:a@example.com", "scheme \"mailto\""),
        ] {
            let e = HttpPipeline::new(HttpConfig::new(url), client()).expect_err(url);
            assert!(e.0[0].message.contains(wanted), "{url}: {e}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut c = HttpConfig::new("http://example.com/");
        c.hmac_secret = Some(b"hunter2".to_vec());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn failure_messages_and_excerpts() {
        assert_eq!(
            failure_message(
                &Method::POST,
                "http://h/x",
                StatusCode::SERVICE_UNAVAILABLE,
                "down"
            ),
            "POST http://h/x returned 503 Service Unavailable: down"
        );
        assert_eq!(
            failure_message(&Method::GET, "http://h/x", StatusCode::NOT_FOUND, ""),
            "GET http://h/x returned 404 Not Found"
        );
        let long = "é".repeat(2000);
        assert_eq!(
            excerpt(long.as_bytes()).chars().count(),
            ERROR_EXCERPT_CHARS
        );
        assert_eq!(excerpt(b"  hi \n"), "hi");
    }
}
