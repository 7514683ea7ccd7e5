//! Schedules from files and from the API side by side: who manages each,
//! the 409 and the take-over, conflicts between files, adoption of
//! unclaimed schedules, and the audit trail that names who did what
//! (README, "Schedules from files and from the API").

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api_replica::{
    assert_error, start_api_replica_with, ApiReplica, Body, Http, ADMIN, PIPELINE,
};
use crate::harness::{binary, TestDb};
use crate::replica::temp_dir;

/// Named tokens of these tests (`--api-tokens-file`), beside the harness's
/// `admin` and `read-only`.
const ALICE: &str = "alice-token-0123456789abcdef";
const AUDITOR: &str = "auditor-token-0123456789abcdef";

fn tokens_file(dir: &Path) -> PathBuf {
    let path = dir.join("named.tokens");
    std::fs::write(
        &path,
        format!("# name:role:token\nalice:admin:{ALICE}\n\nauditor:read-only:{AUDITOR}\n"),
    )
    .expect("write tokens file");
    path
}

/// A schedules file in `dir` named `file`, with a `source:` key if given.
fn schedules_file(dir: &Path, file: &str, source: Option<&str>, items: &[(&str, &str)]) -> PathBuf {
    let mut text = String::new();
    if let Some(s) = source {
        text.push_str(&format!("source: {s}\n"));
    }
    text.push_str("schedules:\n");
    for (name, cron) in items {
        text.push_str(&format!(
            "  - name: {name}\n    pipeline: {PIPELINE}\n    cron: \"{cron}\"\n"
        ));
    }
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write schedules file");
    path
}

/// `spine-scheduler apply -f FILE ARGS…` against `url`.
fn apply(url: &str, file: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("apply")
        .args(["-f", &file.display().to_string()])
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .expect("run apply")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn start(url: &str, dir: &Path, fleet: &Path, tokens: &Path) -> ApiReplica {
    let (fleet, tokens) = (fleet.display().to_string(), tokens.display().to_string());
    start_api_replica_with(
        url,
        dir,
        "ownership",
        &[(PIPELINE, "0s")],
        &[
            "--schedules",
            &fleet,
            "--prune-schedules",
            "--api-tokens-file",
            &tokens,
        ],
    )
    .await
}

async fn send(
    http: &Http,
    method: Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> crate::api_replica::Reply {
    let body = body.map_or(Body::None, Body::Json);
    http.call(method, &url, Some(token), &[], body).await
}

async fn schedule(http: &Http, base: &str, name: &str) -> Value {
    let r = http
        .get(base, &format!("/v1/schedules/{name}"), Some(AUDITOR))
        .await;
    assert_eq!(r.status, 200, "GET {name}: {}", r.text);
    r.json()
}

async fn history(http: &Http, base: &str, name: &str) -> Vec<Value> {
    let r = http
        .get(
            base,
            &format!("/v1/schedules/{name}/history"),
            Some(AUDITOR),
        )
        .await;
    assert_eq!(r.status, 200, "history of {name}: {}", r.text);
    r.json()["items"].as_array().cloned().unwrap_or_default()
}

/// Each row's (action, actor kind, actor name).
fn who(rows: &[Value]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
            (
                s(&r["action"]),
                s(&r["actor"]["kind"]),
                s(&r["actor"]["name"]),
            )
        })
        .collect()
}

fn row(action: &str, kind: &str, name: &str) -> (String, String, String) {
    (action.into(), kind.into(), name.into())
}

#[tokio::test]
async fn a_file_and_the_api_manage_schedules_side_by_side() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("ownership");
    let tokens = tokens_file(&dir);
    let fleet = schedules_file(
        &dir,
        "fleet.yaml",
        Some("fleet"),
        &[("nightly", "0 3 * * *"), ("hourly", "0 * * * *")],
    );
    let node = start(&db.url, &dir, &fleet, &tokens).await;
    let (http, base) = (Http::new(), node.base.clone());
    let url = |path: &str| format!("{base}{path}");

    // The file's schedules are the file's; one made through the API is the API's.
    let nightly = schedule(&http, &base, "nightly").await;
    assert_eq!(
        nightly["managed_by"],
        json!({"kind": "file", "source": "fleet"})
    );
    let made = send(
        &http,
        Method::POST,
        url("/v1/schedules"),
        ALICE,
        Some(json!({"name": "oneoff", "pipeline": PIPELINE, "cron": "30 2 * * *"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    assert_eq!(made.json()["managed_by"], json!({"kind": "api"}));

    // Definition changes to the file's schedule: 409 naming the file.
    for (method, body) in [
        (
            Method::PUT,
            Some(json!({"pipeline": PIPELINE, "cron": "0 4 * * *"})),
        ),
        (Method::PATCH, Some(json!({"cron": "0 4 * * *"}))),
        (Method::DELETE, None),
    ] {
        let r = send(
            &http,
            method.clone(),
            url("/v1/schedules/nightly"),
            ALICE,
            body,
        )
        .await;
        let e = assert_error(
            &format!("{method} of a file's schedule"),
            &r,
            409,
            "managed_by_file",
        );
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("\"fleet\"") && message.contains("take_over=true"),
            "{message}"
        );
    }
    // So is a replace through the original service's routes, in its words.
    let compat = send(
        &http,
        Method::POST,
        url("/scheduler/schedules"),
        ALICE,
        Some(json!({"name": "nightly", "pipeline": PIPELINE, "cron": "0 4 * * *"})),
    )
    .await;
    assert_eq!(compat.status, 409, "{}", compat.text);
    let detail = compat.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("\"fleet\""), "{detail}");
    assert_eq!(
        schedule(&http, &base, "nightly").await["version"],
        nightly["version"]
    );
    // Pausing is open to the API whoever manages the definition.
    let paused = send(
        &http,
        Method::POST,
        url("/v1/schedules/nightly/pause"),
        ALICE,
        Some(json!({"note": "feed down, INC-7", "by": "alice"})),
    )
    .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    // The read-only token reads the trail but changes nothing; its refusal names it.
    let refused = send(
        &http,
        Method::POST,
        url("/v1/schedules/hourly/pause"),
        AUDITOR,
        None,
    )
    .await;
    let e = assert_error("pause with a read-only token", &refused, 403, "forbidden");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"auditor\""),
        "{e}"
    );

    // A restart re-applies the file with pruning: the API's schedule stays,
    // the pause and its note stay.
    assert!(node.replica.terminate(Duration::from_secs(30)));
    let node = start(&db.url, &dir, &fleet, &tokens).await;
    let base = node.base.clone();
    let url = |path: &str| format!("{base}{path}");
    assert_eq!(
        schedule(&http, &base, "oneoff").await["managed_by"]["kind"],
        "api"
    );
    let nightly = schedule(&http, &base, "nightly").await;
    assert_eq!(nightly["pause"]["note"], "feed down, INC-7");
    assert_eq!(nightly["cron"], "0 3 * * *");

    // Taken over explicitly: the API manages it from now on.
    let taken = send(
        &http,
        Method::PATCH,
        url("/v1/schedules/nightly?take_over=true"),
        ALICE,
        Some(json!({"cron": "0 4 * * *"})),
    )
    .await;
    assert_eq!(taken.status, 200, "{}", taken.text);
    assert_eq!(taken.json()["managed_by"], json!({"kind": "api"}));
    assert_eq!(taken.json()["cron"], "0 4 * * *");

    // The file's dry run says it no longer manages it; an apply with --prune
    // of a file that drops it leaves it alone; a restart does not undo it.
    let dry = apply(&db.url, &fleet, &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("not managed nightly: the API manages it"),
        "{}",
        text(&dry)
    );
    assert!(text(&dry).contains("unchanged hourly"), "{}", text(&dry));
    let without = schedules_file(
        &dir,
        "fleet.yaml",
        Some("fleet"),
        &[("hourly", "0 * * * *")],
    );
    let pruned = apply(&db.url, &without, &["--prune"]);
    assert!(pruned.status.success(), "{}", text(&pruned));
    assert!(
        !text(&pruned).contains("delete    nightly"),
        "{}",
        text(&pruned)
    );
    assert!(node.replica.terminate(Duration::from_secs(30)));
    let node = start(&db.url, &dir, &without, &tokens).await;
    let base = node.base.clone();
    assert_eq!(schedule(&http, &base, "nightly").await["cron"], "0 4 * * *");
    assert_eq!(schedule(&http, &base, "oneoff").await["cron"], "30 2 * * *");

    // The trail: who did what, newest first, each version following the last.
    let rows = history(&http, &base, "nightly").await;
    assert_eq!(
        who(&rows),
        [
            row("take_over", "token", "alice"),
            row("pause", "token", "alice"),
            row("create", "file", "fleet"),
        ]
    );
    assert_eq!(rows[0]["fields"], json!(["trigger", "managed_by"]));
    assert_eq!(rows[0]["before"]["cron"], "0 3 * * *");
    assert_eq!(rows[0]["after"]["cron"], "0 4 * * *");
    assert_eq!(rows[0]["former_manager"], "the schedules file \"fleet\"");
    assert_eq!(rows[1]["note"], "feed down, INC-7");
    assert_eq!(rows[1]["paused_by"], "alice");
    assert_eq!(rows[2]["before"], Value::Null);
    assert_eq!(rows[2]["after"]["cron"], "0 3 * * *");
    for pair in rows.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert_eq!(
            newer["version_before"], older["version_after"],
            "{newer} after {older}"
        );
    }
    // Paging: one at a time, the cursor walks back to the create.
    let first = http
        .get(&base, "/v1/schedules/nightly/history?limit=1", Some(ADMIN))
        .await
        .json();
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
    let second = http
        .get(
            &base,
            &format!("/v1/schedules/nightly/history?limit=1&cursor={cursor}"),
            Some(ADMIN),
        )
        .await
        .json();
    assert_eq!(second["items"][0]["action"], "pause");

    // A deleted schedule's history stays readable; an unknown one is a 404.
    let gone = send(
        &http,
        Method::DELETE,
        format!("{base}/v1/schedules/oneoff"),
        ALICE,
        None,
    )
    .await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert_eq!(
        who(&history(&http, &base, "oneoff").await),
        [
            row("delete", "token", "alice"),
            row("create", "token", "alice")
        ]
    );
    let unknown = http
        .get(&base, "/v1/schedules/never-was/history", Some(AUDITOR))
        .await;
    assert_error("history of an unknown schedule", &unknown, 404, "not_found");
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test]
async fn files_conflict_unless_forced_and_unclaimed_schedules_are_adopted() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("ownership-files");
    // A schedule stored before managers were recorded.
    c.batch_execute(&format!(
        "INSERT INTO scheduler_schedules (name, pipeline, schedule_type, cron_expression) \
         VALUES ('legacy', '{PIPELINE}', 'cron', '0 6 * * *')"
    ))
    .await
    .expect("insert an unclaimed schedule");

    let a = schedules_file(
        &dir,
        "a.yaml",
        Some("team-a"),
        &[("legacy", "0 6 * * *"), ("shared", "0 7 * * *")],
    );
    let first = apply(&db.url, &a, &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("update    legacy (managed_by; adopted by source \"team-a\")"),
        "{}",
        text(&first)
    );

    // Another file naming `shared`: refused, naming the owner; nothing changes.
    let b = schedules_file(&dir, "b.yaml", Some("team-b"), &[("shared", "0 8 * * *")]);
    let dry = apply(&db.url, &b, &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry));
    assert!(
        text(&dry).contains("conflict  shared: managed by source \"team-a\""),
        "{}",
        text(&dry)
    );
    let refused = apply(&db.url, &b, &[]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("schedule shared is managed by source \"team-a\"")
            && text(&refused).contains("--force-conflicts"),
        "{}",
        text(&refused)
    );
    let manager = "SELECT managed_by, managed_source, cron_expression FROM scheduler_schedules WHERE name = $1";
    let got = c.query_one(manager, &[&"shared"]).await.expect("read");
    assert_eq!(got.get::<_, Option<String>>(1).as_deref(), Some("team-a"));
    assert_eq!(got.get::<_, String>(2), "0 7 * * *");

    // Forced: taken, and the trail says from whom.
    let forced = apply(&db.url, &b, &["--force-conflicts"]);
    assert!(forced.status.success(), "{}", text(&forced));
    let got = c.query_one(manager, &[&"shared"]).await.expect("read");
    assert_eq!(got.get::<_, Option<String>>(1).as_deref(), Some("team-b"));
    let trail = c
        .query(
            "SELECT action, actor_kind, actor_name, former_manager FROM scheduler_schedule_changes \
             WHERE schedule_name = 'shared' ORDER BY id",
            &[],
        )
        .await
        .expect("trail");
    let trail: Vec<(String, String, Option<String>, Option<String>)> = trail
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        trail,
        [
            ("create".into(), "file".into(), Some("team-a".into()), None),
            (
                "update".into(),
                "file".into(),
                Some("team-b".into()),
                Some("the schedules file \"team-a\"".into())
            ),
        ]
    );

    // `--source` names the source; without it or a key, the file's name does.
    let plain = schedules_file(&dir, "plain.yaml", None, &[("named-by-file", "0 9 * * *")]);
    assert!(apply(&db.url, &plain, &[]).status.success());
    let flagged = schedules_file(
        &dir,
        "c.yaml",
        Some("ignored"),
        &[("named-by-flag", "0 9 * * *")],
    );
    assert!(apply(&db.url, &flagged, &["--source", "ops"])
        .status
        .success());
    for (name, source) in [
        ("named-by-file", "plain.yaml"),
        ("named-by-flag", "ops"),
        ("legacy", "team-a"),
    ] {
        let got = c.query_one(manager, &[&name]).await.expect("read");
        assert_eq!(
            got.get::<_, Option<String>>(1).as_deref(),
            Some(source),
            "{name}"
        );
    }
    // A bad source name is refused before anything is written.
    let bad = apply(&db.url, &plain, &["--source", "has space"]);
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(text(&bad).contains("source"), "{}", text(&bad));
}
