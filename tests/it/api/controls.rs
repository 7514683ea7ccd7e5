//! The run controls through a real replica: run now with a params override,
//! rerun, pause with a note, next fire times, and `end_at` — and the 4xx of
//! every body they refuse, which stores nothing.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use spine_scheduler::apply::{connect_and_apply, ApplyOptions};
use spine_scheduler::schedule::spec::parse_schedule;
use spine_scheduler::store::schedules;
use tokio_postgres::Client;

use super::snapshot;
use crate::api_replica::{
    assert_error, start_api_replica, Body, Http, Reply, ADMIN, PIPELINE, READER,
};
use crate::harness::{db_second, eventually, sleep_until_db, wait_for, TestDb};
use crate::replica::temp_dir;

fn instant(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not an instant: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// POST `path` with a JSON body as `token`.
async fn post_json(http: &Http, base: &str, path: &str, token: &str, body: Value) -> Reply {
    http.call(
        Method::POST,
        &format!("{base}{path}"),
        Some(token),
        &[],
        Body::Json(body),
    )
    .await
}

/// POST `path` with raw bytes of a content type, as the admin.
async fn post_raw(http: &Http, base: &str, path: &str, ct: &'static str, body: &[u8]) -> Reply {
    http.call(
        Method::POST,
        &format!("{base}{path}"),
        Some(ADMIN),
        &[],
        Body::Raw(ct, body.to_vec()),
    )
    .await
}

/// Waits until run `id` has reached `status`; returns it.
async fn run_reaches(http: &Http, base: &str, id: &str, status: &str) -> Value {
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        &format!("run {id} {status}"),
        || async move {
            let r = http
                .get(base, &format!("/v1/runs/{id}"), Some(READER))
                .await;
            (r.status == 200 && r.json()["status"] == status).then(|| r.json())
        },
    )
    .await
}

/// The params the log pipeline was handed for run `id`, from the
/// replica's JSON log (`log pipeline ran`, with `params` as JSON text).
async fn params_logged(log: &Path, id: &str) -> Value {
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        &format!("the log pipeline's line for run {id}"),
        || async move {
            let text = std::fs::read_to_string(log).ok()?;
            text.lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                let f = v.get("fields")?;
                (f.get("message")?.as_str()? == "log pipeline ran"
                    && f.get("run_id")?.as_str()? == id)
                    .then(|| serde_json::from_str(f.get("params")?.as_str()?).ok())
                    .flatten()
            })
        },
    )
    .await
}

/// The ticks of `schedule` in the ledger (trigger `schedule`), in order.
async fn ticks(c: &Client, schedule: &str) -> Vec<DateTime<Utc>> {
    c.query(
        "SELECT scheduled_at FROM scheduler_runs \
         WHERE schedule_name = $1 AND trigger = 'schedule' ORDER BY scheduled_at",
        &[&schedule],
    )
    .await
    .expect("ticks")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Records a finished ledger row for `schedule` directly (a tick that ran):
/// trigger `schedule`, no params of its own.
async fn finished_tick(c: &Client, schedule: &str) -> String {
    let id = uuid::Uuid::now_v7();
    c.execute(
        "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                     status, started_at, completed_at) \
         VALUES ($1, $2, $3, 'schedule', date_trunc('second', now()) - interval '1 hour', \
                 'completed', now(), now())",
        &[&id, &schedule, &PIPELINE],
    )
    .await
    .expect("insert a finished tick");
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_merges_params_and_rerun_repeats_a_finished_run() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-controls-run");
    let node = start_api_replica(&db.url, &dir, "api-controls-run").await;
    let (http, base) = (Http::new(), node.base.clone());
    let log = node.replica.log.clone();
    // Yearly: nothing fires by itself while the test runs.
    let schedule_params = json!({"tier": "T1", "days": 7, "opts": {"a": 1, "b": 2}});
    let created = http
        .create_schedule(
            &base,
            json!({"name": "ingest", "pipeline": PIPELINE, "cron": "0 0 1 1 *",
                   "params": schedule_params}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    // Run now with an override: a shallow merge, recorded and handed over.
    let merged = json!({"tier": "T1", "days": 30, "opts": {"a": 9}, "extra": null});
    let run = post_json(
        &http,
        &base,
        "/v1/schedules/ingest/run",
        ADMIN,
        json!({"params": {"days": 30, "opts": {"a": 9}, "extra": null}}),
    )
    .await;
    assert_eq!(run.status, 202, "{}", run.text);
    assert_eq!(run.json()["params"], merged, "the accepted run's params");
    let first = run.json()["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        run.header("location").map(str::to_string),
        Some(format!("/v1/runs/{first}"))
    );
    let done = run_reaches(&http, &base, &first, "completed").await;
    assert_eq!(done["trigger"], "manual");
    assert_eq!(done["params"], merged, "the ledger records the params");
    assert!(done["rerun_of"].is_null());
    assert_eq!(
        params_logged(&log, &first).await,
        merged,
        "the pipeline got them"
    );

    // Without a body: the schedule's own params, recorded too.
    let plain = http
        .post(&base, "/v1/schedules/ingest/run", Some(ADMIN))
        .await;
    assert_eq!(plain.status, 202, "{}", plain.text);
    assert_eq!(plain.json()["params"], schedule_params);
    let plain_id = plain.json()["run_id"].as_str().expect("run id").to_string();
    run_reaches(&http, &base, &plain_id, "completed").await;
    assert_eq!(params_logged(&log, &plain_id).await, schedule_params);

    // Rerun the overridden run: a new manual run, linked, same params.
    let rerun = http
        .post(&base, &format!("/v1/runs/{first}/rerun"), Some(ADMIN))
        .await;
    assert_eq!(rerun.status, 202, "{}", rerun.text);
    let again = rerun.json();
    let again_id = again["run_id"].as_str().expect("run id").to_string();
    assert_ne!(again_id, first);
    assert_eq!(again["rerun_of"], first.as_str());
    assert_eq!(again["trigger"], "manual");
    assert_eq!(again["schedule"], "ingest");
    assert_eq!(again["params"], merged);
    assert_eq!(
        rerun.header("location").map(str::to_string),
        Some(format!("/v1/runs/{again_id}"))
    );
    let done = run_reaches(&http, &base, &again_id, "completed").await;
    assert_eq!(done["rerun_of"], first.as_str());
    assert_eq!(params_logged(&log, &again_id).await, merged);

    // A tick records no params: its rerun takes the schedule's as they are.
    let tick = finished_tick(&c, "ingest").await;
    let rerun = post_json(
        &http,
        &base,
        &format!("/v1/runs/{tick}/rerun"),
        ADMIN,
        json!({}),
    )
    .await;
    assert_eq!(rerun.status, 202, "{}", rerun.text);
    assert_eq!(rerun.json()["params"], schedule_params);
    assert_eq!(rerun.json()["rerun_of"], tick.as_str());
    let tick_rerun = rerun.json()["run_id"].as_str().expect("run id").to_string();
    run_reaches(&http, &base, &tick_rerun, "completed").await;

    // A retry keeps the params its attempt was given. The schedule's
    // pipeline is not defined on the replica (the store takes what the API
    // refuses), so the run fails; its policy allows a second attempt.
    let flaky = parse_schedule(&json!({
        "name": "flaky", "pipeline": "not.defined", "cron": "0 0 1 1 *",
        "params": {"days": 7}, "retry": {"max_attempts": 2, "backoff": 1}
    }))
    .expect("valid definition")
    .schedule;
    schedules::insert(&c, &flaky).await.expect("insert flaky");
    let failing = post_json(
        &http,
        &base,
        "/v1/schedules/flaky/run",
        ADMIN,
        json!({"params": {"days": 1}}),
    )
    .await;
    assert_eq!(failing.status, 202, "{}", failing.text);
    let failing = failing.json()["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    run_reaches(&http, &base, &failing, "failed").await;
    let retry = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        "the retry of the failed manual run",
        || async {
            let r = http
                .get(&base, "/v1/runs?schedule=flaky&trigger=retry", Some(READER))
                .await;
            let items = r.json()["items"].clone();
            items.get(0).cloned()
        },
    )
    .await;
    assert_eq!(retry["attempt"], 2, "{retry}");
    assert_eq!(retry["params"], json!({"days": 1}), "{retry}");
    let retry_id = retry["run_id"].as_str().expect("run id").to_string();
    run_reaches(&http, &base, &retry_id, "failed").await;

    // What a rerun refuses. A retry waiting for its backoff has not finished.
    let waiting = uuid::Uuid::now_v7();
    c.execute(
        "INSERT INTO scheduler_runs (run_id, schedule_name, pipeline, trigger, scheduled_at, \
                                     attempt, status, pending_since, not_before) \
         VALUES ($1, 'ingest', $2, 'retry', now() - interval '2 hours', 2, 'pending', now(), \
                 now() + interval '1 hour')",
        &[&waiting, &PIPELINE],
    )
    .await
    .expect("insert a waiting retry");
    // A schedule deleted after its run finished.
    let doomed = http
        .create_schedule(
            &base,
            json!({"name": "doomed", "pipeline": PIPELINE, "cron": "0 0 1 1 *"}),
        )
        .await;
    assert_eq!(doomed.status, 201, "{}", doomed.text);
    let orphan = finished_tick(&c, "doomed").await;
    let deleted = http
        .call(
            Method::DELETE,
            &format!("{base}/v1/schedules/doomed"),
            Some(ADMIN),
            &[],
            Body::None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    let before = snapshot(&c).await;
    let rerun_of = |id: &str| format!("/v1/runs/{id}/rerun");
    let e = assert_error(
        "rerun of a pending run",
        &http
            .post(&base, &rerun_of(&waiting.to_string()), Some(ADMIN))
            .await,
        409,
        "run_not_finished",
    );
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("pending")),
        "{e}"
    );
    assert_error(
        "rerun of an unknown run",
        &http
            .post(
                &base,
                &rerun_of(&uuid::Uuid::now_v7().to_string()),
                Some(ADMIN),
            )
            .await,
        404,
        "not_found",
    );
    let e = assert_error(
        "rerun of a non-id",
        &http.post(&base, &rerun_of("nope"), Some(ADMIN)).await,
        400,
        "invalid_input",
    );
    assert_eq!(e["field"], "run_id");
    let e = assert_error(
        "rerun of a run whose schedule is gone",
        &http.post(&base, &rerun_of(&orphan), Some(ADMIN)).await,
        409,
        "schedule_deleted",
    );
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("doomed")),
        "{e}"
    );
    let e = assert_error(
        "rerun with a body key",
        &post_json(
            &http,
            &base,
            &rerun_of(&first),
            ADMIN,
            json!({"params": {"days": 1}}),
        )
        .await,
        400,
        "invalid_input",
    );
    assert_eq!(e["field"], "params");
    assert_error(
        "rerun with the read-only token",
        &http.post(&base, &rerun_of(&first), Some(READER)).await,
        403,
        "forbidden",
    );

    // What run-now refuses: never a run with params it did not mean.
    let run_path = "/v1/schedules/ingest/run";
    for (what, body, field) in [
        ("a list", json!([1]), "body"),
        ("a string", json!("days=30"), "body"),
        ("params not an object", json!({"params": [1]}), "params"),
        ("params a string", json!({"params": "days=30"}), "params"),
        ("a misspelt key", json!({"parms": {"days": 30}}), "parms"),
        (
            "merged params over 64 KiB",
            json!({"params": {"big": "x".repeat(70_000)}}),
            "params",
        ),
    ] {
        let e = assert_error(
            &format!("run now with {what}"),
            &post_json(&http, &base, run_path, ADMIN, body).await,
            400,
            "invalid_input",
        );
        assert_eq!(e["field"], field, "run now with {what}: {e}");
    }
    assert_error(
        "run now with malformed JSON",
        &post_raw(&http, &base, run_path, "application/json", b"{\"params\": ").await,
        400,
        "invalid_json",
    );
    assert_error(
        "run now with a text body",
        &post_raw(&http, &base, run_path, "text/plain", b"days=30").await,
        415,
        "unsupported_media_type",
    );
    let huge = format!(
        "{{\"params\": {{\"big\": \"{}\"}}}}",
        "x".repeat(300 * 1024)
    );
    assert_error(
        "run now with a body over the limit",
        &post_raw(&http, &base, run_path, "application/json", huge.as_bytes()).await,
        413,
        "payload_too_large",
    );
    assert_error(
        "run now with the read-only token",
        &post_json(&http, &base, run_path, READER, json!({"params": {}})).await,
        403,
        "forbidden",
    );
    assert_error(
        "run now of a missing schedule",
        &post_json(
            &http,
            &base,
            "/v1/schedules/ghost/run",
            ADMIN,
            json!({"params": {}}),
        )
        .await,
        404,
        "not_found",
    );
    assert_eq!(
        snapshot(&c).await,
        before,
        "a refused control changed the database"
    );
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_note_is_shown_kept_by_apply_and_cleared_by_resume() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-controls-pause");
    let node = start_api_replica(&db.url, &dir, "api-controls-pause").await;
    let (http, base) = (Http::new(), node.base.clone());
    // Managed by a schedules file (source "fleet"); pausing needs no take-over.
    let definition = json!({"name": "nightly", "pipeline": PIPELINE, "cron": "0 3 * * *"});
    let parsed = parse_schedule(&definition).expect("valid definition");
    connect_and_apply(&db.url, &[parsed], &ApplyOptions::new("fleet"))
        .await
        .expect("apply");
    let created = http.get(&base, "/v1/schedules/nightly", Some(READER)).await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert!(created.json()["pause"].is_null(), "{}", created.text);

    let paused = post_json(
        &http,
        &base,
        "/v1/schedules/nightly/pause",
        ADMIN,
        json!({"note": "upstream feed down, INC-1234", "by": "alice"}),
    )
    .await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    let view = paused.json();
    assert_eq!(view["enabled"], false);
    assert!(view["next_run"].is_null());
    assert_eq!(view["pause"]["note"], "upstream feed down, INC-1234");
    assert_eq!(view["pause"]["by"], "alice");
    let since = instant(&view["pause"]["at"]);
    let version = view["version"].as_i64().expect("version");
    // Shown to readers, in the schedule and in the list.
    let got = http
        .get(&base, "/v1/schedules/nightly", Some(READER))
        .await
        .json();
    assert_eq!(got["pause"], view["pause"]);
    let listed = http
        .get(&base, "/v1/schedules?paused=true", Some(READER))
        .await
        .json();
    assert_eq!(listed["items"][0]["pause"]["by"], "alice", "{listed}");
    // `enabled` and `paused` together: both apply.
    let both = |query: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.get(&base, query, Some(READER)).await;
            assert_eq!(r.status, 200, "{query}: {}", r.text);
            r.json()["items"].clone()
        }
    };
    assert_eq!(
        both("/v1/schedules?enabled=false&paused=true").await,
        listed["items"]
    );
    assert_eq!(
        both("/v1/schedules?enabled=true&paused=true").await,
        json!([])
    );
    // A paused schedule has no next fire times.
    let next = http
        .get(&base, "/v1/schedules/nightly/next", Some(READER))
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(next.json()["paused"], true);
    assert_eq!(next.json()["fires"], json!([]));

    // A bare pause of a paused schedule changes nothing.
    let again = http
        .post(&base, "/v1/schedules/nightly/pause", Some(ADMIN))
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["version"], version);
    assert_eq!(again.json()["pause"], view["pause"]);
    // A new note replaces what was said; the pause keeps its start.
    let renoted = post_json(
        &http,
        &base,
        "/v1/schedules/nightly/pause",
        ADMIN,
        json!({"note": "still down"}),
    )
    .await;
    assert_eq!(renoted.status, 200, "{}", renoted.text);
    assert_eq!(renoted.json()["pause"]["note"], "still down");
    assert!(renoted.json()["pause"]["by"].is_null());
    assert_eq!(instant(&renoted.json()["pause"]["at"]), since);

    // Re-applying the schedules file (a changed description, no `enabled`)
    // keeps the pause and its note, as it keeps pauses.
    let mut changed = definition.clone();
    changed["description"] = json!("re-applied");
    let parsed = parse_schedule(&changed).expect("valid definition");
    let plan = connect_and_apply(&db.url, &[parsed], &ApplyOptions::new("fleet"))
        .await
        .expect("apply");
    assert_eq!(plan.changes.len(), 1, "{plan}");
    let got = http
        .get(&base, "/v1/schedules/nightly", Some(READER))
        .await
        .json();
    assert_eq!(got["description"], "re-applied");
    assert_eq!(got["enabled"], false);
    assert_eq!(got["pause"]["note"], "still down");
    assert_eq!(instant(&got["pause"]["at"]), since);

    // What pause and resume refuse, storing nothing.
    let before = snapshot(&c).await;
    let pause_path = "/v1/schedules/nightly/pause";
    for (what, body, field) in [
        ("a note that is a number", json!({"note": 5}), "note"),
        ("an empty by", json!({"by": ""}), "by"),
        (
            "a note over 1000 characters",
            json!({"note": "n".repeat(1001)}),
            "note",
        ),
        ("an unknown key", json!({"reason": "maintenance"}), "reason"),
        ("a string body", json!("maintenance"), "body"),
    ] {
        let e = assert_error(
            &format!("pause with {what}"),
            &post_json(&http, &base, pause_path, ADMIN, body).await,
            400,
            "invalid_input",
        );
        assert_eq!(e["field"], field, "pause with {what}: {e}");
    }
    assert_error(
        "pause with malformed JSON",
        &post_raw(&http, &base, pause_path, "application/json", b"{note:").await,
        400,
        "invalid_json",
    );
    assert_error(
        "pause with a text body",
        &post_raw(&http, &base, pause_path, "text/plain", b"maintenance").await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        "pause with the read-only token",
        &post_json(&http, &base, pause_path, READER, json!({"note": "x"})).await,
        403,
        "forbidden",
    );
    let e = assert_error(
        "resume with a note",
        &post_json(
            &http,
            &base,
            "/v1/schedules/nightly/resume",
            ADMIN,
            json!({"note": "x"}),
        )
        .await,
        400,
        "invalid_input",
    );
    assert_eq!(e["field"], "note");
    assert_eq!(
        snapshot(&c).await,
        before,
        "a refused control changed the database"
    );

    // Resume (an empty object is no body): the note is gone, it fires again.
    let resumed = post_json(
        &http,
        &base,
        "/v1/schedules/nightly/resume",
        ADMIN,
        json!({}),
    )
    .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.json()["enabled"], true);
    assert!(resumed.json()["pause"].is_null(), "{}", resumed.text);
    assert!(resumed.json()["next_run"].is_string());
    let next = http
        .get(&base, "/v1/schedules/nightly/next", Some(READER))
        .await
        .json();
    assert_eq!(next["paused"], false);
    assert_eq!(next["fires"].as_array().map(Vec::len), Some(10), "{next}");
    // Paused again without a note: nothing said, since now.
    let bare = http
        .post(&base, "/v1/schedules/nightly/pause", Some(ADMIN))
        .await
        .json();
    assert!(
        bare["pause"]["note"].is_null() && bare["pause"]["by"].is_null(),
        "{bare}"
    );
    assert!(instant(&bare["pause"]["at"]) > since);
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_at_stops_firing_and_next_lists_fire_times_up_to_it() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let dir = temp_dir("api-controls-end");
    let node = start_api_replica(&db.url, &dir, "api-controls-end").await;
    let (http, base) = (Http::new(), node.base.clone());

    // Every second, ending 4 s from now (a whole second: a tick falls on it).
    let end = db_second(&c).await + chrono::Duration::seconds(4);
    let created = http
        .create_schedule(
            &base,
            json!({"name": "ending", "pipeline": PIPELINE, "cron": "* * * * * *",
                   "end_at": rfc3339(end)}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(instant(&created.json()["end_at"]), end);
    assert_eq!(created.json()["ended"], false);

    // Its next fire times stop at end_at, and are /v1/preview's.
    let next = http
        .get(&base, "/v1/schedules/ending/next?count=100", Some(READER))
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let next = next.json();
    let fires: Vec<DateTime<Utc>> = next["fires"]
        .as_array()
        .expect("fires")
        .iter()
        .map(|f| instant(&f["at"]))
        .collect();
    assert!(!fires.is_empty() && fires.len() <= 5, "{next}");
    assert_eq!(fires.last(), Some(&end), "{next}");
    assert_eq!(next["ended"], false);
    assert_eq!(next["schedule_type"], "cron");
    let after = next["after"].as_str().expect("after").to_string();
    let preview_url = reqwest::Url::parse_with_params(
        &format!("{base}/v1/preview"),
        &[
            ("cron", "* * * * * *"),
            ("end_at", &rfc3339(end)),
            ("after", &after),
            ("count", "100"),
        ],
    )
    .expect("preview URL");
    let preview = http
        .call(
            Method::GET,
            preview_url.as_str(),
            Some(READER),
            &[],
            Body::None,
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.text);
    assert_eq!(preview.json()["fires"], next["fires"]);

    // The engine fires up to end_at, the tick at end_at included, then stops.
    eventually(
        Duration::from_secs(20),
        "the tick at end_at is recorded",
        || async { ticks(&c, "ending").await.contains(&end) },
    )
    .await;
    eventually(Duration::from_secs(10), "GET shows it ended", || async {
        let got = http
            .get(&base, "/v1/schedules/ending", Some(READER))
            .await
            .json();
        got["ended"] == true && got["next_run"].is_null() && got["enabled"] == true
    })
    .await;
    sleep_until_db(&c, end + chrono::Duration::seconds(3)).await;
    let all = ticks(&c, "ending").await;
    assert!(
        all.iter().all(|t| *t <= end),
        "ticks after end_at {end}: {all:?}"
    );
    let next = http
        .get(&base, "/v1/schedules/ending/next", Some(READER))
        .await
        .json();
    assert_eq!(next["ended"], true);
    assert_eq!(next["fires"], json!([]));
    // A merge patch lifts the end: it fires again.
    let lifted = http
        .call(
            Method::PATCH,
            &format!("{base}/v1/schedules/ending"),
            Some(ADMIN),
            &[],
            Body::Json(json!({"end_at": null})),
        )
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.text);
    assert!(lifted.json()["end_at"].is_null());
    assert_eq!(lifted.json()["ended"], false);
    eventually(
        Duration::from_secs(20),
        "a tick after the end was lifted",
        || async { ticks(&c, "ending").await.iter().any(|t| *t > end) },
    )
    .await;

    // An end already past is allowed: the schedule has ended.
    let ended = http
        .create_schedule(
            &base,
            json!({"name": "ended", "pipeline": PIPELINE, "cron": "0 6 * * *",
                   "end_at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(ended.status, 201, "{}", ended.text);
    assert_eq!(ended.json()["ended"], true);
    assert!(ended.json()["next_run"].is_null());

    // What end_at and next refuse.
    let before = snapshot(&c).await;
    for (what, body) in [
        (
            "an end not after start_at",
            json!({"name": "bad", "pipeline": PIPELINE, "interval": "1m",
                   "start_at": "2030-01-01T00:00:00Z", "end_at": "2029-01-01T00:00:00Z"}),
        ),
        (
            "an end before run_at",
            json!({"name": "bad", "pipeline": PIPELINE, "run_at": "2099-01-01T00:00:00Z",
                   "end_at": "2098-01-01T00:00:00Z"}),
        ),
        (
            "an end that is not an instant",
            json!({"name": "bad", "pipeline": PIPELINE, "cron": "@daily", "end_at": "tomorrow"}),
        ),
    ] {
        let e = assert_error(
            &format!("create with {what}"),
            &http.create_schedule(&base, body).await,
            422,
            "invalid_input",
        );
        assert_eq!(e["field"], "end_at", "{what}: {e}");
    }
    for (what, query, status, code) in [
        ("count 0", "?count=0", 400, "invalid_input"),
        ("count 101", "?count=101", 400, "invalid_input"),
        (
            "a count that is not a number",
            "?count=ten",
            400,
            "invalid_query",
        ),
        (
            "an unknown parameter",
            "?after=2027-01-01T00:00:00Z",
            400,
            "invalid_query",
        ),
    ] {
        assert_error(
            &format!("next with {what}"),
            &http
                .get(
                    &base,
                    &format!("/v1/schedules/ended/next{query}"),
                    Some(READER),
                )
                .await,
            status,
            code,
        );
    }
    assert_error(
        "next of a missing schedule",
        &http
            .get(&base, "/v1/schedules/ghost/next", Some(READER))
            .await,
        404,
        "not_found",
    );
    let tail = snapshot(&c).await;
    assert_eq!(tail.0, before.0, "a refused request changed the schedules");
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
