//! The schedules resource through two replicas: create, list, fire, run
//! now, pause, resume, update and delete, each seen through the other one.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::api_replica::{assert_error, start_api_replica, Body, Http, ADMIN, PIPELINE, READER};
use crate::harness::{db_now, eventually, TestDb};
use crate::replica::temp_dir;

/// Scheduled (not manual) ledger rows of `schedule` with a tick after `after`.
async fn ticks_after(c: &Client, schedule: &str, after: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    c.query(
        "SELECT scheduled_at FROM scheduler_runs \
         WHERE schedule_name = $1 AND trigger = 'schedule' AND scheduled_at > $2 \
         ORDER BY scheduled_at",
        &[&schedule, &after],
    )
    .await
    .expect("ticks query")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn instant(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not an instant: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_lifecycle_through_two_replicas() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-lifecycle");
    let a = start_api_replica(&db.url, &dir, "api-a").await;
    let b = start_api_replica(&db.url, &dir, "api-b").await;
    let http = Http::new();
    let (ua, ub) = (a.base.clone(), b.base.clone());
    let url = |base: &str, p: &str| format!("{base}{p}");

    // Create through A: it appears, with a next fire time, through B.
    let created = http
        .create_schedule(
            &ua,
            json!({
                "name": "tick", "pipeline": PIPELINE, "cron": "* * * * * *",
                "params": {"from": "api"}, "description": "every second"
            }),
        )
        .await;
    assert_eq!(created.status, 201, "create: {}", created.text);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.header("location"), Some("/v1/schedules/tick"));
    let body = created.json();
    assert_eq!(body["cron"], "* * * * * *");
    assert_eq!(body["params"]["from"], "api");
    let next = instant(&body["next_run"]);
    let now = db_now(&c).await;
    assert!(
        next > now - chrono::Duration::seconds(2) && next <= now + chrono::Duration::seconds(2),
        "next_run {next} vs db now {now}"
    );
    let listed = http
        .get(&ub, "/v1/schedules?name_prefix=ti", Some(READER))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let items = listed.json()["items"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    assert!(items[0]["next_run"].is_string());

    // It fires, and the history shows it (through either replica).
    eventually(
        Duration::from_secs(20),
        "two completed scheduled runs",
        || {
            let http = http.clone();
            let ub = ub.clone();
            async move {
                let r = http
                    .get(
                        &ub,
                        "/v1/schedules/tick/runs?status=completed&trigger=schedule",
                        Some(READER),
                    )
                    .await;
                r.status == 200 && r.json()["items"].as_array().is_some_and(|i| i.len() >= 2)
            }
        },
    )
    .await;
    let got = http.get(&ua, "/v1/schedules/tick", Some(ADMIN)).await;
    assert_eq!(got.status, 200);
    assert!(
        got.json()["last_run"]["run_id"].is_string(),
        "last_run: {}",
        got.text
    );
    // Across schedules, newest first, paged with a cursor.
    let page1 = http.get(&ua, "/v1/runs?limit=1", Some(ADMIN)).await.json();
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_string();
    let page2 = http
        .get(
            &ua,
            &format!("/v1/runs?limit=1&cursor={cursor}"),
            Some(ADMIN),
        )
        .await
        .json();
    assert!(
        instant(&page2["items"][0]["scheduled_at"]) <= instant(&page1["items"][0]["scheduled_at"]),
        "newest first: {page1} then {page2}"
    );
    assert_ne!(page1["items"][0]["run_id"], page2["items"][0]["run_id"]);

    // Run now: 202 with the run id; it runs, with trigger manual.
    let run = http.post(&ub, "/v1/schedules/tick/run", Some(ADMIN)).await;
    assert_eq!(run.status, 202, "{}", run.text);
    let run_id = run.json()["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        run.header("location").map(str::to_string),
        Some(format!("/v1/runs/{run_id}"))
    );
    eventually(Duration::from_secs(15), "the manual run completes", || {
        let http = http.clone();
        let ua = ua.clone();
        let path = format!("/v1/runs/{run_id}");
        async move {
            let r = http.get(&ua, &path, Some(READER)).await;
            r.status == 200 && r.json()["status"] == "completed" && r.json()["trigger"] == "manual"
        }
    })
    .await;

    // Pause through B: no tick fires on any replica.
    let paused = http
        .post(&ub, "/v1/schedules/tick/pause", Some(ADMIN))
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json()["enabled"], false);
    assert!(paused.json()["next_run"].is_null());
    // Ticks just after the pause may already be claimed: the change takes
    // ~100 ms to reach the engines; 2 s leaves room for a loaded machine.
    let settle = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = ticks_after(&c, "tick", settle).await;
    assert!(late.is_empty(), "ticks fired while paused: {late:?}");

    // Resume through A: firing restarts.
    let resumed_at = db_now(&c).await;
    let resumed = http
        .post(&ua, "/v1/schedules/tick/resume", Some(ADMIN))
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.json()["enabled"], true);
    eventually(Duration::from_secs(10), "a tick after resume", || {
        let c = &c;
        async move { !ticks_after(c, "tick", resumed_at).await.is_empty() }
    })
    .await;

    // Update through A (every other second); B serves the new definition
    // and next fire time, and both engines fire on even seconds only.
    let version = http
        .get(&ub, "/v1/schedules/tick", Some(ADMIN))
        .await
        .json()["version"]
        .as_i64()
        .expect("version");
    let patched = http
        .call(
            Method::PATCH,
            &url(&ua, "/v1/schedules/tick"),
            Some(ADMIN),
            // A list (RFC 9110): any strong tag may match; a weak one never does.
            &[(
                "if-match",
                &format!("\"999\", W/\"{version}\", \"{version}\""),
            )],
            Body::Raw(
                "application/merge-patch+json",
                br#"{"cron": "*/2 * * * * *"}"#.to_vec(),
            ),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json()["version"], version + 1);
    assert_eq!(
        patched.json()["params"]["from"],
        "api",
        "untouched keys stay"
    );
    let via_b = http
        .get(&ub, "/v1/schedules/tick", Some(READER))
        .await
        .json();
    assert_eq!(via_b["cron"], "*/2 * * * * *");
    assert_eq!(via_b["version"], version + 1);
    assert_eq!(instant(&via_b["next_run"]).second() % 2, 0, "{via_b}");
    let changed = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Two even ticks fall in those 4 s; under a loaded CI host the second
    // may be claimed by the safety net, a handoff delay or two late.
    eventually(
        Duration::from_secs(5),
        "two ticks after the update",
        || async { ticks_after(&c, "tick", changed).await.len() >= 2 },
    )
    .await;
    let after_update = ticks_after(&c, "tick", changed).await;
    assert!(after_update.len() >= 2, "still firing: {after_update:?}");
    assert!(
        after_update.iter().all(|t| t.second() % 2 == 0),
        "odd-second ticks after the update: {after_update:?}"
    );

    // Delete through B (a stale version first: 409, nothing deleted).
    let stale = http
        .call(
            Method::DELETE,
            &url(&ub, "/v1/schedules/tick"),
            Some(ADMIN),
            &[("if-match", &format!("\"1\", W/\"{}\"", version + 1))],
            Body::None,
        )
        .await;
    assert_error("stale delete", &stale, 409, "version_conflict");
    let deleted = http
        .call(
            Method::DELETE,
            &url(&ub, "/v1/schedules/tick"),
            Some(ADMIN),
            &[("if-match", &format!("\"1\", \"{}\"", version + 1))],
            Body::None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let gone = http.get(&ua, "/v1/schedules/tick", Some(ADMIN)).await;
    assert_error("get deleted", &gone, 404, "not_found");
    let stop = db_now(&c).await + chrono::Duration::seconds(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = ticks_after(&c, "tick", stop).await;
    assert!(late.is_empty(), "ticks fired after delete: {late:?}");
    // History outlives the schedule.
    let history = http.get(&ua, "/v1/schedules/tick/runs", Some(ADMIN)).await;
    assert!(
        history.json()["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "{}",
        history.text
    );

    for r in [a.replica, b.replica] {
        assert!(
            r.terminate(Duration::from_secs(30)),
            "replica exited uncleanly"
        );
    }
}
