//! Every error the API gives: its status, its code, the field it names and
//! its shape, and that it stores nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::snapshot;
use crate::api_replica::{assert_error, start_api_replica, Body, Http, ADMIN, PIPELINE};
use crate::harness::TestDb;
use crate::replica::temp_dir;

/// One error case: a request, and the status, code and field it must give.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    message_has: Option<&'static str>,
}

fn case(what: &'static str, method: Method, path: &str, body: Body) -> Case {
    Case {
        what,
        method,
        path: path.to_string(),
        headers: Vec::new(),
        body,
        status: 400,
        code: "invalid_input",
        field: None,
        message_has: None,
    }
}

impl Case {
    fn gives(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }
    fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
    fn says(mut self, part: &'static str) -> Self {
        self.message_has = Some(part);
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

fn schedule(extra: Value) -> Body {
    let mut base = json!({"name": "fresh", "pipeline": PIPELINE, "cron": "0 6 * * 1-5"});
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    Body::Json(base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_shape_and_stores_nothing() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-errors");
    let node = start_api_replica(&db.url, &dir, "api-errors").await;
    let http = Http::new();
    // One schedule to conflict with; paused, so the ledger stays still.
    let keep = http
        .create_schedule(
            &node.base,
            json!({
                "name": "keep", "pipeline": PIPELINE, "cron": "0 6 * * *", "enabled": false
            }),
        )
        .await;
    assert_eq!(keep.status, 201, "{}", keep.text);
    let before = snapshot(&c).await;

    let post = |what, body| case(what, Method::POST, "/v1/schedules", body);
    let big_params: String = "x".repeat(70 * 1024);
    let too_big = vec![b' '; spine_scheduler::api::BODY_LIMIT + 1];
    let cases =
        vec![
        post("bad cron", schedule(json!({"cron": "0 25 * * *"})))
            .gives(422, "invalid_input")
        .field("cron")
            .says("column 3"),
        post(
            "7-field cron",
            schedule(json!({"cron": "0 0 6 * * 1-5 2030"})),
        )
        .gives(422, "invalid_input")
        .field("cron"),
        post(
            "unknown timezone",
            schedule(json!({"timezone": "Mars/Olympus"})),
        )
        .gives(422, "invalid_input")
        .field("timezone"),
        post(
            "unknown pipeline",
            schedule(json!({"pipeline": "no.such.pipeline"})),
        )
        .gives(422, "invalid_input")
        .field("pipeline")
        .says(PIPELINE),
        post("bad name", schedule(json!({"name": "has space"}))).gives(422, "invalid_input")
        .field("name"),
        post("unknown key", schedule(json!({"colesce": true}))).gives(422, "invalid_input")
        .field("colesce"),
        post("two triggers", schedule(json!({"interval": 5}))).gives(422, "invalid_input")
        .field("schedule"),
        post(
            "params too large",
            schedule(json!({"params": {"x": big_params}})),
        )
        .gives(422, "invalid_input")
        .field("params"),
        post("not an object", Body::Json(json!(["keep"]))),
        post("name taken", schedule(json!({"name": "keep"}))).gives(409, "already_exists"),
        post(
            "a key twice",
            Body::Raw(
                "application/json",
                format!(
                    r#"{{"name": "a", "name": "b", "pipeline": "{PIPELINE}", "cron": "@daily"}}"#
                )
                .into_bytes(),
            ),
        )
        .gives(400, "invalid_json")
        .says("\"name\""),
        case(
            "a nested key twice in PATCH",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Raw(
                "application/merge-patch+json",
                br#"{"params": {"x": 1, "x": 2}}"#.to_vec(),
            ),
        )
        .gives(400, "invalid_json")
        .says("\"params.x\""),
        case(
            "a key twice in a control's body",
            Method::POST,
            "/v1/schedules/keep/pause",
            Body::Raw(
                "application/json",
                br#"{"note": "a", "note": "b"}"#.to_vec(),
            ),
        )
        .gives(400, "invalid_json")
        .says("\"note\""),
        post(
            "U+0000 in a string",
            schedule(json!({"description": "a\u{0}b"})),
        )
        .gives(400, "invalid_json")
        .says("\"description\""),
        case(
            "U+0000 in a pause note",
            Method::POST,
            "/v1/schedules/keep/pause",
            Body::Json(json!({"note": "\u{0}"})),
        )
        .gives(400, "invalid_json")
        .says("\"note\""),
        case(
            "U+0000 in a run's params key",
            Method::POST,
            "/v1/schedules/keep/run",
            Body::Json(json!({"params": {"a\u{0}": 1}})),
        )
        .gives(400, "invalid_json")
        .says("U+0000"),
        case(
            "a cursor hiding U+0000",
            Method::GET,
            "/v1/schedules?cursor=s1.00455c",
            Body::None,
        )
        .gives(422, "invalid_input")
        .field("cursor"),
        case(
            "a key twice in a cancel body",
            Method::POST,
            "/v1/runs/01900000-0000-7000-8000-000000000000/cancel",
            Body::Raw(
                "application/json",
                br#"{"mode": "graceful", "mode": "immediate"}"#.to_vec(),
            ),
        )
        .gives(400, "invalid_json")
        .says("\"mode\""),
        post(
            "malformed JSON",
            Body::Raw("application/json", b"{\"name\": ".to_vec()),
        )
        .gives(400, "invalid_json"),
        post("not JSON", Body::Raw("text/plain", b"name=keep".to_vec()))
            .gives(415, "unsupported_media_type"),
        post("no content type", Body::Raw("", b"{}".to_vec())).gives(415, "unsupported_media_type"),
        post(
            "over the body limit",
            Body::Raw("application/json", too_big),
        )
        .gives(413, "payload_too_large"),
        case(
            "stale If-Match on PUT",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "keep"})),
        )
        .header("if-match", "\"41\"")
        .gives(409, "version_conflict")
        .field("version"),
        case(
            "stale version in a PATCH body",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"version": 41, "description": "x"})),
        )
        .gives(409, "version_conflict"),
        case(
            "If-Match and version disagree",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"version": 1, "description": "x"})),
        )
        .header("if-match", "\"2\"")
        .gives(409, "version_conflict")
        .field("version"),
        case(
            "bad cron in PUT",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "keep", "cron": "61 * * * *"})),
        )
        .gives(422, "invalid_input")
        .field("cron"),
        case(
            "rename in PUT",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "other"})),
        )
        .gives(422, "invalid_input")
        .field("name"),
        case(
            "bad timezone in PATCH",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"timezone": "Nowhere/Land"})),
        )
        .gives(422, "invalid_input")
        .field("timezone"),
        case(
            "unknown pipeline in PATCH",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"pipeline": "no.such.pipeline"})),
        )
        .gives(422, "invalid_input")
        .field("pipeline"),
        case(
            "PATCH of a missing schedule",
            Method::PATCH,
            "/v1/schedules/ghost",
            Body::Json(json!({"description": "x"})),
        )
        .gives(404, "not_found"),
        case(
            "PUT of a missing schedule",
            Method::PUT,
            "/v1/schedules/ghost",
            schedule(json!({"name": "ghost"})),
        )
        .gives(404, "not_found"),
        case(
            "DELETE of a missing schedule",
            Method::DELETE,
            "/v1/schedules/ghost",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "stale DELETE",
            Method::DELETE,
            "/v1/schedules/keep",
            Body::None,
        )
        .header("if-match", "\"41\"")
        .gives(409, "version_conflict"),
        case(
            "bad If-Match",
            Method::DELETE,
            "/v1/schedules/keep",
            Body::None,
        )
        .header("if-match", "yesterday")
        .field("If-Match"),
        case(
            "If-Match list without the version",
            Method::DELETE,
            "/v1/schedules/keep",
            Body::None,
        )
        .header("if-match", "\"40\", \"41\"")
        .gives(409, "version_conflict")
        .field("version"),
        case(
            "weak If-Match",
            Method::PATCH,
            "/v1/schedules/keep",
            Body::Json(json!({"description": "x"})),
        )
        .header("if-match", "W/\"1\"")
        .gives(409, "version_conflict")
        .field("version"),
        case(
            "malformed If-Match list",
            Method::PUT,
            "/v1/schedules/keep",
            schedule(json!({"name": "keep"})),
        )
        .header("if-match", "\"1\" \"2\"")
        .field("If-Match"),
        case(
            "run a missing schedule",
            Method::POST,
            "/v1/schedules/ghost/run",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "pause a missing schedule",
            Method::POST,
            "/v1/schedules/ghost/pause",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "resume a missing schedule",
            Method::POST,
            "/v1/schedules/ghost/resume",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "get a missing schedule",
            Method::GET,
            "/v1/schedules/ghost",
            Body::None,
        )
        .gives(404, "not_found"),
        case(
            "invalid name in the path",
            Method::GET,
            "/v1/schedules/bad%20name",
            Body::None,
        )
        .field("name"),
        case(
            "run id not a UUID",
            Method::GET,
            "/v1/runs/not-a-uuid",
            Body::None,
        )
        .field("run_id"),
        case(
            "missing run",
            Method::GET,
            "/v1/runs/01900000-0000-7000-8000-000000000000",
            Body::None,
        )
        .gives(404, "not_found"),
        case("limit 0", Method::GET, "/v1/schedules?limit=0", Body::None).field("limit"),
        case(
            "enabled=maybe",
            Method::GET,
            "/v1/schedules?enabled=maybe",
            Body::None,
        )
        .gives(400, "invalid_query"),
        case(
            "unknown filter",
            Method::GET,
            "/v1/schedules?state=on",
            Body::None,
        )
        .gives(400, "invalid_query"),
        case(
            "foreign cursor",
            Method::GET,
            "/v1/schedules?cursor=zzz",
            Body::None,
        )
        .gives(422, "invalid_input")
        .field("cursor"),
        case(
            "unknown status",
            Method::GET,
            "/v1/runs?status=bogus",
            Body::None,
        )
        .field("status"),
        case(
            "unknown trigger",
            Method::GET,
            "/v1/runs?trigger=cron",
            Body::None,
        )
        .field("trigger"),
        case(
            "bad since",
            Method::GET,
            "/v1/runs?since=yesterday",
            Body::None,
        )
        .field("since"),
        case(
            "runs cursor from another listing",
            Method::GET,
            "/v1/schedules/keep/runs?cursor=s1.6b656570",
            Body::None,
        )
        .gives(422, "invalid_input")
        .field("cursor"),
        case(
            "preview of a bad cron",
            Method::GET,
            "/v1/preview?cron=0%2025%20*%20*%20*",
            Body::None,
        )
        .gives(422, "invalid_input")
        .field("cron")
        .says("column 3"),
        case(
            "preview in an unknown zone",
            Method::GET,
            "/v1/preview?cron=0%206%20*%20*%20*&timezone=Mars/Olympus",
            Body::None,
        )
        .gives(422, "invalid_input")
        .field("timezone"),
        case(
            "preview without a trigger",
            Method::GET,
            "/v1/preview",
            Body::None,
        )
        .gives(422, "invalid_input")
        .field("schedule"),
        case(
            "preview count 0",
            Method::GET,
            "/v1/preview?cron=@daily&count=0",
            Body::None,
        )
        .field("count"),
        case("oversized headers", Method::GET, "/v1/schedules", Body::None)
            .header("x-padding", &"x".repeat(spine_scheduler::api::HEADER_LIMIT))
            .gives(431, "headers_too_large"),
        case("no such route", Method::GET, "/v1/nothing", Body::None).gives(404, "not_found"),
        case("wrong method", Method::DELETE, "/v1/schedules", Body::None)
            .gives(405, "method_not_allowed"),
    ];
    for c in cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http
            .call(
                c.method.clone(),
                &format!("{}{}", node.base, c.path),
                Some(ADMIN),
                &headers,
                c.body,
            )
            .await;
        let e = assert_error(c.what, &r, c.status, c.code);
        if let Some(f) = c.field {
            assert_eq!(e["field"], f, "{}: field; {e}", c.what);
            assert!(
                e["details"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|p| p["field"] == f)),
                "{}: details name {f}: {e}",
                c.what
            );
        }
        if let Some(part) = c.message_has {
            assert!(
                e["message"].as_str().is_some_and(|m| m.contains(part)),
                "{}: message should mention {part:?}: {e}",
                c.what
            );
        }
        if c.status == 405 {
            assert!(r.header("allow").is_some(), "{}: Allow header", c.what);
        }
    }
    // Filters with U+0000 match nothing (no name or pipeline has it), and
    // are no error.
    for query in ["name_prefix=%00", "pipeline=a%00b"] {
        let r = http
            .get(&node.base, &format!("/v1/schedules?{query}"), Some(ADMIN))
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        assert_eq!(r.json()["items"], json!([]), "{query}");
    }
    assert_eq!(snapshot(&c).await, before, "an error changed the database");
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
