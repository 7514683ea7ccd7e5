use std::process::{Command, Output};

use crate::harness::{binary, TestDb};

fn run(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).env_remove("DATABASE_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run spine-scheduler")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spine-cli-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

#[test]
fn next_weekdays_across_spring_forward() {
    let out = run(
        &[
            "next",
            "0 6 * * 1-5",
            "--tz",
            "America/New_York",
            "--from",
            "2027-03-12T00:00:00Z",
            "--count",
            "5",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "Fri 2027-03-12 06:00:00 EST (-05:00)  2027-03-12T11:00:00Z",
            "Mon 2027-03-15 06:00:00 EDT (-04:00)  2027-03-15T10:00:00Z",
            "Tue 2027-03-16 06:00:00 EDT (-04:00)  2027-03-16T10:00:00Z",
            "Wed 2027-03-17 06:00:00 EDT (-04:00)  2027-03-17T10:00:00Z",
            "Thu 2027-03-18 06:00:00 EDT (-04:00)  2027-03-18T10:00:00Z",
        ]
    );
}

#[test]
fn next_skipped_and_repeated_local_times() {
    let spring = run(
        &[
            "next",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2027-03-13T12:00:00Z",
            "--count",
            "3",
        ],
        None,
    );
    let text = stdout(&spring);
    assert!(text.starts_with("Sun 2027-03-14 03:00:00 EDT"), "{text}");
    assert_eq!(
        text.matches("2027-03-14").count(),
        2,
        "one fire on the 14th: {text}"
    );
    let fall = run(
        &[
            "next",
            "30 1 * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2027-11-06T12:00:00Z",
            "--count",
            "3",
        ],
        None,
    );
    let text = stdout(&fall);
    assert_eq!(
        text.matches("2027-11-07").count(),
        2,
        "one fire on the 7th: {text}"
    );
}

#[test]
fn next_reports_the_bad_field() {
    let out = run(&["next", "0 25 * * *"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("hour field \"25\" at column 3"), "{err}");
    let out = run(&["next", "@daily", "--tz", "Mars/Base"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown time zone"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_accepts_the_seed_file() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schedules.yaml");
    let out = run(&["validate", "-f", seed], None);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("5 schedules, all valid"));
}

#[test]
fn validate_names_every_problem() {
    let path = write_temp(
        "bad.yaml",
        "schedules:\n  - name: bad_cron\n    pipeline: p\n    cron: \"0 6 * * 9\"\n  - name: bad_zone\n    pipeline: p\n    cron: \"@daily\"\n    timezone: Mars/Base\n  - name: bad_cron\n    pipeline: p\n    cron: \"@hourly\"\n",
    );
    let out = run(&["validate", "-f", &path.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("schedule bad_cron (line 2): cron: invalid day-of-week field"),
        "{text}"
    );
    assert!(
        text.contains("schedule bad_zone (line 5): timezone: unknown time zone"),
        "{text}"
    );
    assert!(
        text.contains("schedule bad_cron (line 9): name: duplicate name"),
        "{text}"
    );
    assert!(text.contains("3 problem(s)"), "{text}");
}

#[test]
fn validate_reports_unreadable_files() {
    let out = run(&["validate", "-f", "/nonexistent/schedules.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read /nonexistent/schedules.yaml"));
    let path = write_temp("broken.yaml", "schedules: [\n");
    let out = run(&["validate", "-f", &path.display().to_string()], None);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn apply_syncs_and_dry_run_changes_nothing() {
    let db = TestDb::new().await;
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schedules.yaml");
    let dry = run(&["apply", "-f", seed, "--dry-run"], Some(&db.url));
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("5 to create"), "{}", stdout(&dry));
    let c = db.client().await;
    let count = || async {
        c.query_one("SELECT count(*) FROM scheduler_schedules", &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    assert_eq!(count().await, 0);
    let real = run(&["apply", "-f", seed], Some(&db.url));
    assert!(real.status.success(), "{}", stderr(&real));
    assert_eq!(count().await, 5);
    let again = run(&["apply", "-f", seed], Some(&db.url));
    assert!(stdout(&again).contains("5 unchanged"), "{}", stdout(&again));
}

#[tokio::test]
async fn apply_of_an_invalid_file_writes_nothing() {
    let db = TestDb::migrated().await;
    let path = write_temp(
        "half.yaml",
        "schedules:\n  - name: good\n    pipeline: p\n    cron: \"@daily\"\n  - name: bad\n    pipeline: p\n    cron: \"61 * * * *\"\n",
    );
    let out = run(&["apply", "-f", &path.display().to_string()], Some(&db.url));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing was applied"),
        "{}",
        stderr(&out)
    );
    let c = db.client().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM scheduler_schedules", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["next", "--help"],
        vec!["migrate", "--help"],
        vec!["validate", "--help"],
        vec!["apply", "--help"],
    ] {
        let out = run(&cmd, None);
        assert!(out.status.success(), "{cmd:?}");
        assert!(stdout(&out).contains("Usage:"), "{cmd:?}");
    }
    let out = run(&["migrate", "--help"], None);
    assert!(stdout(&out).contains("DATABASE_URL"));
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let out = run(
        &["migrate"],
        Some("postgres://postgres@127.0.0.1:1/postgres"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: database error"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_and_apply_refuse_unknown_pipelines() {
    let pipelines = write_temp(
        "pipelines.yaml",
        "pipelines:\n  - name: known.one\n    kind: log\n",
    );
    let schedules = write_temp(
        "schedules.yaml",
        "schedules:\n  - name: fine\n    pipeline: known.one\n    cron: \"@daily\"\n  - name: typo\n    pipeline: knwon.one\n    cron: \"@daily\"\n",
    );
    let (p, s) = (
        pipelines.display().to_string(),
        schedules.display().to_string(),
    );
    let out = run(&["validate", "-f", &s, "--pipelines", &p], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("schedule typo (line 5): pipeline: unknown pipeline \"knwon.one\""),
        "{text}"
    );
    assert!(text.contains("1 problem(s)"), "{text}");
    let out = run(
        &[
            "apply",
            "-f",
            &s,
            "--pipelines",
            &p,
            "--database-url",
            "postgres://127.0.0.1:1/x",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing was applied"),
        "{}",
        stderr(&out)
    );
    // The seed's example files agree with each other.
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schedules.yaml");
    let seed_pipelines = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pipelines.yaml");
    let out = run(
        &["validate", "-f", seed, "--pipelines", seed_pipelines],
        None,
    );
    assert!(out.status.success(), "{}", stdout(&out));
}
