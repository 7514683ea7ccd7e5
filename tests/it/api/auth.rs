//! Bearer tokens: required everywhere but the probes and metrics, the
//! read-only one only reads, and `serve` does not start without one.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::snapshot;
use crate::api_replica::{assert_error, start_api_replica, Body, Http, ADMIN, PIPELINE, READER};
use crate::harness::{binary, TestDb};
use crate::replica::temp_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_read_only_only_reads() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-auth");
    let node = start_api_replica(&db.url, &dir, "api-auth").await;
    let http = Http::new();
    let base = node.base.clone();
    let send = |method: Method, path: &'static str, token: Option<&'static str>, body: Body| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.call(method, &url, token, &[], body).await }
    };
    let new = || Body::Json(json!({"name": "viaauth", "pipeline": PIPELINE, "cron": "@daily"}));

    // No token, a wrong token, another scheme: 401 with a challenge.
    for (what, r) in [
        (
            "no token",
            send(Method::GET, "/v1/schedules", None, Body::None).await,
        ),
        (
            "wrong token",
            send(
                Method::GET,
                "/v1/schedules",
                Some("not-the-token-0123456789"),
                Body::None,
            )
            .await,
        ),
        (
            "no token, write",
            send(Method::POST, "/v1/schedules", None, new()).await,
        ),
        (
            "no token, unknown route",
            send(Method::GET, "/v1/nothing", None, Body::None).await,
        ),
    ] {
        assert_error(what, &r, 401, "unauthorized");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{what}: WWW-Authenticate"
        );
    }
    let basic = http
        .call(
            Method::GET,
            &format!("{}/v1/schedules", node.base),
            None,
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
            Body::None,
        )
        .await;
    assert_error("basic auth", &basic, 401, "unauthorized");

    // The OpenAPI document is open, like the probes.
    let document = send(Method::GET, "/openapi.json", None, Body::None).await;
    assert_eq!(document.status, 200, "{}", document.text);
    assert!(document.json()["paths"].is_object());

    // The read-only token reads, and is refused every write.
    for path in ["/v1/schedules", "/v1/runs", "/v1/cluster", "/openapi.json"] {
        let r = http.get(&node.base, path, Some(READER)).await;
        assert_eq!(r.status, 200, "read-only GET {path}: {}", r.text);
    }
    let before = snapshot(&c).await;
    for (what, r) in [
        (
            "create",
            send(Method::POST, "/v1/schedules", Some(READER), new()).await,
        ),
        (
            "delete",
            send(
                Method::DELETE,
                "/v1/schedules/viaauth",
                Some(READER),
                Body::None,
            )
            .await,
        ),
        (
            "patch",
            send(
                Method::PATCH,
                "/v1/schedules/viaauth",
                Some(READER),
                Body::Json(json!({"description": "x"})),
            )
            .await,
        ),
        (
            "run now",
            send(
                Method::POST,
                "/v1/schedules/viaauth/run",
                Some(READER),
                Body::None,
            )
            .await,
        ),
        (
            "pause",
            send(
                Method::POST,
                "/v1/schedules/viaauth/pause",
                Some(READER),
                Body::None,
            )
            .await,
        ),
    ] {
        assert_error(what, &r, 403, "forbidden");
    }
    assert_eq!(
        snapshot(&c).await,
        before,
        "a refused write changed the database"
    );

    // The admin token writes.
    let created = send(Method::POST, "/v1/schedules", Some(ADMIN), new()).await;
    assert_eq!(created.status, 201, "{}", created.text);

    // Probes and metrics are open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(&node.base, path, None).await;
        assert_eq!(r.status, 200, "open {path}: {}", r.text);
    }
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_token() {
    let db = TestDb::migrated().await;
    let out = tokio::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env_remove("SPINE_API_TOKEN")
        .env_remove("SPINE_API_TOKEN_FILE")
        .env_remove("SPINE_API_READONLY_TOKEN")
        .env_remove("SPINE_API_READONLY_TOKEN_FILE")
        .env_remove("SPINE_INSECURE_NO_AUTH")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("serve exits by itself")
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no API token configured") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    let nodes: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM scheduler_nodes", &[])
        .await
        .expect("count nodes")
        .get(0);
    assert_eq!(nodes, 0, "the engine did not start");
}
