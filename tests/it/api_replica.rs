//! A replica serving the admin API, and an HTTP client to talk to it: the
//! common setup of the API, metrics and handoff tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use crate::harness::eventually;
use crate::replica::{log_pipelines, Replica};

/// The admin token the test replicas accept.
pub const ADMIN: &str = "spine-test-admin-token-0123456789";
/// The read-only token the test replicas accept.
pub const READER: &str = "spine-test-reader-token-0123456789";
/// The pipeline the test schedules run.
pub const PIPELINE: &str = "test.record";

/// A replica with its API address.
pub struct ApiReplica {
    /// The process.
    pub replica: Replica,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// Writes the token files and a pipelines file of `log` pipelines (name,
/// sleep) into `dir`.
fn setup_files(dir: &Path, pipelines: &[(&str, &str)]) -> (PathBuf, PathBuf, PathBuf) {
    let admin = dir.join("admin.token");
    let reader = dir.join("reader.token");
    std::fs::write(&admin, format!("{ADMIN}\n")).expect("write admin token");
    std::fs::write(&reader, READER).expect("write reader token");
    let pipelines = log_pipelines(dir, pipelines);
    (pipelines, admin, reader)
}

/// Starts a replica serving the API on a free loopback port (port 0: the
/// kernel picks, so parallel tests never collide), and waits until it is ready.
pub async fn start_api_replica(db_url: &str, dir: &Path, name: &str) -> ApiReplica {
    start_api_replica_with(db_url, dir, name, &[(PIPELINE, "0s")], &[]).await
}

/// [`start_api_replica`] with other `log` pipelines (name, sleep) and more
/// `serve` flags. Replicas sharing `dir` share its token and pipelines files.
pub async fn start_api_replica_with(
    db_url: &str,
    dir: &Path,
    name: &str,
    pipelines: &[(&str, &str)],
    extra: &[&str],
) -> ApiReplica {
    let (pipelines, admin, reader) = setup_files(dir, pipelines);
    let (admin, reader) = (admin.display().to_string(), reader.display().to_string());
    let mut args = vec![
        "--log-format",
        "json",
        "--listen",
        "127.0.0.1:0",
        "--api-token-file",
        &admin,
        "--api-readonly-token-file",
        &reader,
    ];
    args.extend_from_slice(extra);
    let replica = Replica::start(db_url, &pipelines, name, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(a) = listening_addr(&replica.log) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not report its API address; log:\n{}",
            replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = ApiReplica {
        replica,
        base: format!("http://{addr}"),
    };
    let api = Http::new();
    let base = node.base.clone();
    eventually(Duration::from_secs(30), &format!("{name} ready"), || {
        let api = api.clone();
        let base = base.clone();
        async move { api.get(&base, "/readyz", None).await.status == 200 }
    })
    .await;
    node
}

/// The address in the replica's "admin API listening" log line (JSON logs).
pub(crate) fn listening_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = v.get("fields")?;
        (fields.get("message")?.as_str()? == "admin API listening")
            .then(|| fields.get("addr")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// An HTTP answer.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub text: String,
}

impl Reply {
    /// The body as JSON (the test fails if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A request body.
pub enum Body {
    /// No body.
    None,
    /// JSON with `Content-Type: application/json`.
    Json(Value),
    /// Bytes with a content type of our choosing.
    Raw(&'static str, Vec<u8>),
}

/// A small HTTP client for the tests.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client (the crate's own, with TLS set up and redirects off).
    pub fn new() -> Http {
        Http {
            client: spine_scheduler::pipeline::http::build_client().expect("HTTP client"),
        }
    }

    /// Sends one request.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut req = self
            .client
            .request(method.clone(), url)
            .timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&v).expect("encode body")),
            Body::Raw(ct, bytes) => req.header("content-type", ct).body(bytes),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            text,
        }
    }

    /// GET `base + path`.
    pub async fn get(&self, base: &str, path: &str, token: Option<&str>) -> Reply {
        self.call(
            Method::GET,
            &format!("{base}{path}"),
            token,
            &[],
            Body::None,
        )
        .await
    }

    /// POST `base + path` without a body.
    pub async fn post(&self, base: &str, path: &str, token: Option<&str>) -> Reply {
        self.call(
            Method::POST,
            &format!("{base}{path}"),
            token,
            &[],
            Body::None,
        )
        .await
    }

    /// Creates a schedule through the API (`POST /v1/schedules` with the
    /// admin token); the reply, for the test to check.
    pub async fn create_schedule(&self, base: &str, schedule: Value) -> Reply {
        self.call(
            Method::POST,
            &format!("{base}/v1/schedules"),
            Some(ADMIN),
            &[],
            Body::Json(schedule),
        )
        .await
    }
}

/// Asserts the error shape and the status/code; returns the `error` object.
pub fn assert_error(what: &str, r: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{what}: status; body {}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        r.header("content-type")
    );
    let body = r.json();
    let obj = body.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "{what}: only `error` at the top: {body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{what}: code; body {body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: message: {body}"
    );
    assert!(
        e["field"].is_null() || e["field"].is_string(),
        "{what}: field: {body}"
    );
    assert!(e["details"].is_array(), "{what}: details: {body}");
    assert_eq!(
        e.as_object().map(|o| o.len()),
        Some(4),
        "{what}: exactly code, message, field, details: {body}"
    );
    e.clone()
}
