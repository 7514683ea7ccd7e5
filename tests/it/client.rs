//! The command-line client (`schedules`, `runs`, `cluster`) as a user runs
//! it: the real binary against a real replica's API, checking what it
//! prints (tables, relative times, `-o json`) and its exit codes.

use std::process::Output;
use std::time::Duration;

use chrono::Timelike;
use serde_json::Value;
use uuid::Uuid;

use crate::api_replica::{start_api_replica, Http, ADMIN, PIPELINE, READER};
use crate::harness::{binary, external_tool, wait_for, TestDb};
use crate::replica::temp_dir;

/// How the client is pointed at the API and given a token.
#[derive(Clone, Copy)]
enum Token<'a> {
    /// `SPINE_API_TOKEN`.
    Env(&'a str),
    /// None at all.
    None,
}

/// Runs `spine-scheduler ARGS` against `base` with `token`, no colour
/// settings inherited from the test's environment.
async fn client(base: &str, token: Token<'_>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(args)
        .env("SPINE_API_URL", base)
        .env_remove("SPINE_API_TOKEN")
        .env_remove("SPINE_API_TOKEN_FILE")
        .env_remove("SPINE_API_TIMEOUT")
        .env_remove("NO_COLOR");
    if let Token::Env(t) = token {
        cmd.env("SPINE_API_TOKEN", t);
    }
    cmd.output().await.expect("run spine-scheduler")
}

/// The admin's `spine-scheduler ARGS`, which must succeed; its stdout.
async fn ok(base: &str, args: &[&str]) -> String {
    let out = client(base, Token::Env(ADMIN), args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: stdout {}\nstderr {}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        !text.contains('\x1b'),
        "{args:?}: no colour into a pipe: {text:?}"
    );
    text
}

/// `spine-scheduler ARGS` (as `token`) must fail with `code`; its stderr.
async fn fails(base: &str, token: Token<'_>, args: &[&str], code: i32) -> String {
    let out = client(base, token, args).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: exit code; stdout {}\nstderr {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{args:?}: nothing on stdout");
    stderr(&out)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("-o json is not JSON ({e}): {text}"))
}

/// The line of `text` whose first column is `first`.
fn row<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

/// The value of `key` in a `get` view (`Key:  value`).
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
}

/// The columns of a header line, split on runs of two or more spaces.
fn columns(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// True when `text` has a relative time such as `in 4 s`, `in 17 h 3 min`
/// or `3 min ago`.
fn has_relative(text: &str, future: bool) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let unit = |w: &str| ["s", "min", "h", "d"].contains(&w.trim_end_matches(')'));
    let number = |w: &str| w.trim_start_matches('(').parse::<u64>().is_ok();
    words.windows(3).any(|w| {
        if future {
            w[0].ends_with("in") && number(w[1]) && unit(w[2])
        } else {
            number(w[0]) && unit(w[1]) && w[2].starts_with("ago")
        }
    })
}

/// The message of the API's error for `GET path` as the admin: what the
/// client must show.
async fn api_message(base: &str, path: &str) -> String {
    let r = Http::new().get(base, path, Some(ADMIN)).await;
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", r.text))
        .to_string()
}

/// A run's status through `runs get -o json`.
async fn run_status(base: &str, id: &str) -> String {
    let text = ok(base, &["runs", "get", id, "-o", "json"]).await;
    json(&text)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_commands_print_tables_json_and_exit_codes() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("client-schedules");
    let node = start_api_replica(&db.url, &dir, "client-schedules").await;
    let base = node.base.as_str();

    // create -f: one entry of a schedules file, in YAML. Daily at 03:00:
    // nothing fires by itself while the test runs.
    let file = dir.join("nightly.yaml");
    std::fs::write(
        &file,
        format!("name: nightly\npipeline: {PIPELINE}\ncron: \"0 3 * * *\"\ntimezone: Europe/Berlin\nparams:\n  tier: T1\n"),
    )
    .expect("write definition");
    let created = ok(
        base,
        &["schedules", "create", "-f", &file.display().to_string()],
    )
    .await;
    assert!(
        created.starts_with("created schedule nightly (version 1); next run in "),
        "{created}"
    );
    // The same name again: 409, exit 4, in the API's words.
    let taken = fails(
        base,
        Token::Env(ADMIN),
        &["schedules", "create", "-f", &file.display().to_string()],
        4,
    )
    .await;
    assert!(taken.starts_with("error: 409 Conflict: "), "{taken}");
    // A bad definition (JSON this time): 422, exit 1, the API's message naming the field.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        format!(r#"{{"name": "bad", "pipeline": "{PIPELINE}", "cron": "0 25 * * *"}}"#),
    )
    .expect("write bad definition");
    let refused = fails(
        base,
        Token::Env(ADMIN),
        &["schedules", "create", "-f", &bad.display().to_string()],
        1,
    )
    .await;
    assert!(
        refused.starts_with("error: 422 Unprocessable Entity: cron: invalid hour field"),
        "{refused}"
    );

    // list: the header and the schedule's row, next run relative.
    let list = ok(base, &["schedules", "list"]).await;
    let header = list.lines().next().unwrap_or_default();
    assert_eq!(
        columns(header),
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "STATE",
            "NEXT RUN",
            "LAST RUN",
            "PIPELINE",
            "MANAGED BY"
        ],
        "{list}"
    );
    let nightly = row(&list, "nightly");
    assert_eq!(
        columns(nightly)[..4],
        ["nightly", "0 3 * * *", "Europe/Berlin", "enabled"],
        "{list}"
    );
    assert!(has_relative(nightly, true), "next run relative: {nightly}");
    assert_eq!(columns(nightly)[6..], [PIPELINE, "api"], "{nightly}");
    assert!(
        !list.contains("\nbad "),
        "the refused one was not stored: {list}"
    );
    let listed = json(&ok(base, &["schedules", "list", "-o", "json"]).await);
    assert_eq!(listed["items"][0]["name"], "nightly", "{listed}");
    assert_eq!(listed["items"][0]["cron"], "0 3 * * *", "{listed}");
    assert!(listed["items"][0]["next_run"].is_string(), "{listed}");
    assert!(listed["next_cursor"].is_null(), "{listed}");

    // get: absolute times with the relative form, and the params.
    let got = ok(base, &["schedules", "get", "nightly"]).await;
    let next_line = field(&got, "Next run");
    let next_at = json(&ok(base, &["schedules", "get", "nightly", "-o", "json"]).await)["next_run"]
        .as_str()
        .expect("next_run")
        .to_string();
    assert!(
        next_line.contains(&next_at) && has_relative(next_line, true),
        "Next run: {next_at} (in …): {got}"
    );
    assert!(got.contains("\"tier\": \"T1\""), "{got}");
    assert_eq!(field(&got, "State"), "enabled", "{got}");

    // pause with a note: shown by get and list; next has no fire times.
    let paused = ok(
        base,
        &[
            "schedules",
            "pause",
            "nightly",
            "--note",
            "feed down, INC-1234",
            "--by",
            "alice",
        ],
    )
    .await;
    assert_eq!(paused, "paused nightly (feed down, INC-1234)\n");
    let got = ok(base, &["schedules", "get", "nightly"]).await;
    assert_eq!(field(&got, "Pause note"), "feed down, INC-1234", "{got}");
    assert_eq!(field(&got, "Paused by"), "alice", "{got}");
    assert_eq!(field(&got, "State"), "paused", "{got}");
    assert_eq!(
        columns(row(&ok(base, &["schedules", "list"]).await, "nightly"))[3],
        "paused"
    );
    assert_eq!(
        ok(base, &["schedules", "next", "nightly"]).await,
        "nightly is paused: no fire times until it is resumed\n"
    );
    let resumed = ok(base, &["schedules", "resume", "nightly"]).await;
    assert!(
        resumed.starts_with("resumed nightly; next run in "),
        "{resumed}"
    );

    // next: one row per fire time, local (Berlin) and UTC.
    let next = ok(base, &["schedules", "next", "nightly", "--count", "3"]).await;
    let lines: Vec<&str> = next.lines().collect();
    assert_eq!(lines.len(), 5, "title, header, 3 rows: {next}");
    assert_eq!(lines[0], "nightly (Europe/Berlin):");
    assert_eq!(columns(lines[1]), ["LOCAL", "UTC", "IN"]);
    assert!(
        lines[2..]
            .iter()
            .all(|l| l.contains("T03:00:00+0") && has_relative(l, true)),
        "{next}"
    );
    let fires = json(
        &ok(
            base,
            &["schedules", "next", "nightly", "--count", "3", "-o", "json"],
        )
        .await,
    );
    assert_eq!(fires["fires"].as_array().map(Vec::len), Some(3), "{fires}");

    // backfill: a day two days back; -o json is the API's backfill, with
    // the 03:00 Berlin ticks in the range planned (one, or none across a
    // clock change).
    // Whole seconds: the API compares a repeated request's instants with
    // the stored (microsecond) ones.
    let now = chrono::Utc::now().with_nanosecond(0).expect("whole second");
    let (start, end) = (
        now - chrono::Duration::days(3),
        now - chrono::Duration::days(2),
    );
    let berlin = spine_scheduler::schedule::parse_timezone("Europe/Berlin").expect("zone");
    let expected = spine_scheduler::schedule::CronExpr::parse("0 3 * * *")
        .expect("cron")
        .upcoming(start, berlin, 3)
        .into_iter()
        .filter(|t| *t < end)
        .count();
    let backfill = json(
        &ok(
            base,
            &[
                "schedules",
                "backfill",
                "nightly",
                "--start",
                &start.to_rfc3339(),
                "--end",
                &end.to_rfc3339(),
                "--idempotency-key",
                "nightly-1",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(backfill["schedule"], "nightly", "{backfill}");
    assert_eq!(backfill["ticks_planned"], expected, "{backfill}");
    assert!(backfill["backfill_id"].is_string(), "{backfill}");
    // The same key again: the first backfill (200), said so.
    let again = ok(
        base,
        &[
            "schedules",
            "backfill",
            "nightly",
            "--start",
            &start.to_rfc3339(),
            "--end",
            &end.to_rfc3339(),
            "--idempotency-key",
            "nightly-1",
        ],
    )
    .await;
    let id = backfill["backfill_id"].as_str().unwrap_or_default();
    assert!(
        again.starts_with(&format!("backfill {id} of nightly already requested: ")),
        "{again}"
    );
    assert!(
        again.ends_with(&format!("{expected} ticks planned, 0 already run\n")),
        "{again}"
    );
    let missing = fails(
        base,
        Token::Env(ADMIN),
        &[
            "schedules",
            "backfill",
            "nope",
            "--start",
            &start.to_rfc3339(),
            "--end",
            &end.to_rfc3339(),
        ],
        3,
    )
    .await;
    assert!(missing.starts_with("error: 404 Not Found: "), "{missing}");

    // history: who changed it, newest first.
    let history = ok(base, &["schedules", "history", "nightly"]).await;
    let header = history.lines().next().unwrap_or_default();
    assert_eq!(
        columns(header),
        ["WHEN", "ACTION", "BY", "VERSION", "WHAT"],
        "{history}"
    );
    let oldest = history.lines().last().unwrap_or_default();
    assert_eq!(
        columns(oldest)[1..4],
        ["create", "token:admin", "1"],
        "{history}"
    );
    let changes = json(&ok(base, &["schedules", "history", "nightly", "-o", "json"]).await);
    assert!(
        changes["items"].as_array().is_some_and(|i| i.len() >= 2),
        "{changes}"
    );

    // delete; then get is a 404: exit 3 with the API's own message.
    assert_eq!(
        ok(base, &["schedules", "delete", "nightly"]).await,
        "deleted schedule nightly (its run history stays)\n"
    );
    let message = api_message(base, "/v1/schedules/nightly").await;
    let gone = fails(base, Token::Env(ADMIN), &["schedules", "get", "nightly"], 3).await;
    assert_eq!(gone, format!("error: 404 Not Found: {message}\n"));
    assert_eq!(ok(base, &["schedules", "list"]).await, "no schedules\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_cluster_commands_follow_a_trigger() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("client-runs");
    let node = start_api_replica(&db.url, &dir, "client-runs").await;
    let base = node.base.as_str();
    let created = Http::new()
        .create_schedule(
            base,
            serde_json::json!({"name": "ingest", "pipeline": PIPELINE, "cron": "0 0 1 1 *",
                               "params": {"tier": "T1"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    // trigger with params: the run id, and the merged params.
    let triggered = ok(
        base,
        &["schedules", "trigger", "ingest", "--params", r#"{"k":1}"#],
    )
    .await;
    let first = triggered.lines().next().unwrap_or_default();
    let id = first
        .strip_prefix("triggered ingest: run ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{triggered}"))
        .to_string();
    Uuid::parse_str(&id).unwrap_or_else(|e| panic!("{id}: {e}"));
    assert!(
        first.ends_with(r#"with params {"k":1,"tier":"T1"}"#),
        "{triggered}"
    );
    let bad_params = fails(
        base,
        Token::Env(ADMIN),
        &["schedules", "trigger", "ingest", "--params", "[1]"],
        1,
    )
    .await;
    assert!(
        bad_params.starts_with("error: --params: must be a JSON object"),
        "{bad_params}"
    );

    // It shows up in `runs list --schedule`, and finishes.
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        "the run completes",
        || {
            let id = id.clone();
            async move { (run_status(base, &id).await == "completed").then_some(()) }
        },
    )
    .await;
    // Its tick relative, once it is a second old ("now" before that).
    let list = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(200),
        "the tick a second old",
        || {
            let id = id.clone();
            async move {
                let list = ok(base, &["runs", "list", "--schedule", "ingest"]).await;
                has_relative(row(&list, &id), false).then_some(list)
            }
        },
    )
    .await;
    assert_eq!(
        columns(list.lines().next().unwrap_or_default()),
        ["RUN ID", "SCHEDULE", "TICK", "TRIGGER", "ATTEMPT", "STATUS", "DURATION", "ERROR"],
        "{list}"
    );
    let run_row = row(&list, &id);
    assert_eq!(columns(run_row)[..2], [id.as_str(), "ingest"], "{list}");
    assert!(
        run_row.contains("manual") && run_row.contains("completed"),
        "{run_row}"
    );
    let listed = json(
        &ok(
            base,
            &[
                "runs",
                "list",
                "--schedule",
                "ingest",
                "--since",
                "1h",
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(listed["items"][0]["run_id"], id.as_str(), "{listed}");
    assert_eq!(listed["items"][0]["params"]["k"], 1, "{listed}");
    assert_eq!(
        ok(
            base,
            &["runs", "list", "--schedule", "ingest", "--status", "failed"]
        )
        .await,
        "no runs\n"
    );

    // get: absolute and relative times, the params.
    let got = ok(base, &["runs", "get", &id]).await;
    assert_eq!(field(&got, "Status"), "completed", "{got}");
    assert_eq!(field(&got, "Trigger"), "manual", "{got}");
    assert_eq!(field(&got, "Run ID"), id, "{got}");
    let completed = field(&got, "Completed");
    assert!(
        completed.contains('T') && has_relative(completed, false),
        "absolute and relative: {got}"
    );
    assert!(got.contains("\"k\": 1"), "{got}");

    // cancel of a finished run: 409, exit 4. rerun: a new run.
    let not_running = fails(base, Token::Env(ADMIN), &["runs", "cancel", &id], 4).await;
    assert!(
        not_running.starts_with("error: 409 Conflict: "),
        "{not_running}"
    );
    let rerun = ok(base, &["runs", "rerun", &id]).await;
    assert!(
        rerun.starts_with(&format!("rerun of {id}: run ")),
        "{rerun}"
    );
    // An unknown run: 404, exit 3, the API's message.
    let unknown = Uuid::now_v7().to_string();
    let message = api_message(base, &format!("/v1/runs/{unknown}")).await;
    let gone = fails(base, Token::Env(ADMIN), &["runs", "get", &unknown], 3).await;
    assert_eq!(gone, format!("error: 404 Not Found: {message}\n"));

    // The read-only token reads but may not change anything: 403, exit 5.
    let read = client(base, Token::Env(READER), &["runs", "list"]).await;
    assert_eq!(read.status.code(), Some(0), "{}", stderr(&read));
    for args in [
        &["schedules", "pause", "ingest"][..],
        &["schedules", "trigger", "ingest"],
        &["schedules", "delete", "ingest"],
        &["runs", "rerun", &id],
    ] {
        let refused = fails(base, Token::Env(READER), args, 5).await;
        assert!(
            refused.starts_with("error: 403 Forbidden: "),
            "{args:?}: {refused}"
        );
    }
    // No token: 401, exit 5.
    let anonymous = fails(base, Token::None, &["schedules", "list"], 5).await;
    assert!(
        anonymous.starts_with("error: 401 Unauthorized: "),
        "{anonymous}"
    );
    // A token file works as the variable does; both at once is refused.
    let token_file = dir.join("client.token");
    std::fs::write(&token_file, format!("{READER}\n")).expect("write token file");
    let path = token_file.display().to_string();
    let from_file = client(base, Token::None, &["cluster", "--api-token-file", &path]).await;
    assert_eq!(from_file.status.code(), Some(0), "{}", stderr(&from_file));
    let twice = fails(
        base,
        Token::Env(READER),
        &["cluster", "--api-token-file", &path],
        1,
    )
    .await;
    assert!(twice.contains("set it once"), "{twice}");

    // cluster: the leader, and this replica's row.
    let cluster = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        "a leader",
        || async move {
            let text = ok(base, &["cluster"]).await;
            text.starts_with("leader: client-runs, elected ")
                .then_some(text)
        },
    )
    .await;
    let lines: Vec<&str> = cluster.lines().collect();
    assert_eq!(
        columns(lines[1]),
        [
            "NODE",
            "NODE ID",
            "STATE",
            "ALIVE",
            "HEARTBEAT",
            "ROLE",
            "VERSION",
            "STARTED"
        ],
        "{cluster}"
    );
    let me = row(&cluster, "client-runs");
    assert!(
        me.contains("active") && me.contains(" yes ") && me.contains("leader (answered)"),
        "{cluster}"
    );
    assert!(has_relative(me, false), "started relative: {me}");
    terminal_gets_colour_unless_no_color(base).await;
    let view = json(&ok(base, &["cluster", "-o", "json"]).await);
    assert_eq!(view["leader"]["hostname"], "client-runs", "{view}");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(1), "{view}");
}

#[tokio::test]
async fn an_unreachable_api_exits_6_naming_the_url() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let err = fails(&base, Token::Env(ADMIN), &["schedules", "list"], 6).await;
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the API at {base}/v1/schedules?limit=100: "
        )),
        "{err}"
    );
    // A URL that cannot work is a usage problem of its own: exit 1.
    let bad = fails("localhost:8080", Token::None, &["cluster"], 1).await;
    assert!(bad.contains("--api-url \"localhost:8080\""), "{bad}");
}

/// `--help` of a client command (no server needed).
async fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let out = client("http://127.0.0.1:1", Token::None, &all).await;
    assert_eq!(out.status.code(), Some(0), "{all:?}: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Usage: spine-scheduler "), "{all:?}: {text}");
    text
}

#[tokio::test]
async fn every_client_command_has_help_and_the_readme_documents_it() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let section = readme
        .split("## Command-line client")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Command-line client section");
    for group in ["schedules", "runs", "cluster"] {
        let text = help(&[group]).await;
        assert!(
            text.contains("Examples:\n  spine-scheduler "),
            "{group}: {text}"
        );
        assert!(
            text.contains(spine_scheduler::client::EXIT_CODES_HELP),
            "{group}: {text}"
        );
        // Every variable and default the help names is the README's.
        for env in ["SPINE_API_URL", "SPINE_API_TOKEN_FILE", "SPINE_API_TIMEOUT"] {
            assert!(text.contains(&format!("[env: {env}=")), "{group}: {env}");
            assert!(section.contains(&format!("`{env}`")), "README lacks {env}");
        }
        assert!(text.contains("[default: http://127.0.0.1:8080]"), "{text}");
        assert!(text.contains("SPINE_API_TOKEN)"), "{text}");
    }
    assert!(section.contains("`SPINE_API_TOKEN`"));
    assert!(section.contains("| `--api-url` | `SPINE_API_URL` | `http://127.0.0.1:8080` |"));
    assert!(section.contains("| `--timeout` | `SPINE_API_TIMEOUT` | `30s` |"));
    for code in 0..=6 {
        assert!(
            section.contains(&format!("\n| {code} | ")),
            "README: exit code {code}"
        );
    }
    for leaf in [
        &["schedules", "list"][..],
        &["schedules", "get"],
        &["schedules", "create"],
        &["schedules", "pause"],
        &["schedules", "resume"],
        &["schedules", "trigger"],
        &["schedules", "delete"],
        &["schedules", "next"],
        &["schedules", "history"],
        &["schedules", "backfill"],
        &["runs", "list"],
        &["runs", "get"],
        &["runs", "cancel"],
        &["runs", "rerun"],
    ] {
        let text = help(leaf).await;
        let command = leaf.join(" ");
        assert!(
            section.contains(&format!("`{command}")),
            "README lacks `{command}`"
        );
        assert!(
            text.contains("--api-url"),
            "{command}: connection flags: {text}"
        );
    }
    // A missing argument is a usage error: exit 2, clap's message.
    let usage = fails("http://127.0.0.1:1", Token::None, &["schedules", "get"], 2).await;
    assert!(usage.contains("<NAME>"), "{usage}");
}

/// On a terminal (`script` gives it one) the tables are coloured; with
/// `NO_COLOR` set, or into a pipe (every other test), they are not.
async fn terminal_gets_colour_unless_no_color(base: &str) {
    let Some(script) = external_tool("SPINE_TEST_SCRIPT", "script") else {
        return;
    };
    let on_terminal = |no_color: bool| {
        let mut cmd = tokio::process::Command::new(&script);
        // -q: no banner; -e: its exit code; the log goes nowhere.
        cmd.args(["-qec", &format!("'{}' cluster", binary()), "/dev/null"])
            .env("SPINE_API_URL", base)
            .env("SPINE_API_TOKEN", READER)
            .env_remove("SPINE_API_TOKEN_FILE")
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        async move { cmd.output().await.expect("run script") }
    };
    let coloured = on_terminal(false).await;
    assert_eq!(coloured.status.code(), Some(0), "{}", stderr(&coloured));
    let text = stdout(&coloured);
    assert!(
        text.contains("\x1b[1mNODE\x1b[0m") && text.contains("\x1b[32myes\x1b[0m"),
        "bold header, green alive: {text:?}"
    );
    let plain = on_terminal(true).await;
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let text = stdout(&plain);
    assert!(
        text.contains("NODE") && !text.contains('\x1b'),
        "NO_COLOR: {text:?}"
    );
}
