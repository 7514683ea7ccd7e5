//! The deployment files checked against the binary they deploy, one module
//! per artifact: the Dockerfile and docker-compose.yml, the kustomize base
//! in deploy/kubernetes, the Prometheus rules and config, the Grafana
//! dashboard and the README's quick start.
//!
//! No Docker engine or Kubernetes cluster runs here, so the files are parsed
//! and every setting is checked against what `spine-scheduler` accepts (its
//! `--help`, its metrics, `validate` on the mounted files). The external
//! checkers — `promtool` (rules, rule tests, config), `kubectl kustomize`
//! and `kubernetes-validate` (offline Kubernetes schemas) — are required
//! under CI (.ci/run installs them) and skipped with a note elsewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use spine_scheduler::api::auth;
use spine_scheduler::metrics::Metrics;
use spine_scheduler::types::{RunStatus, RunTrigger};

use crate::harness::{binary, external_tool};

mod docker;
mod grafana;
mod kubernetes;
mod prometheus;
mod readme;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The label (and value) the alerts select the replicas' series by: the
/// ServiceMonitor's relabeling and the compose Prometheus set it on every
/// series of the replicas' targets, whatever the job or Deployment is named.
const SERIES_LABEL: (&str, &str) = ("spine_scheduler", "true");

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        text(out)
    );
}

fn bin() -> PathBuf {
    PathBuf::from(binary())
}

/// `spine-scheduler <sub> --help`.
fn help(sub: &str) -> String {
    let out = run(&bin(), &[sub, "--help"], &[]);
    assert_ok(&format!("{sub} --help"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names in `[env: NAME=…]` of a help text.
fn help_env(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// Environment variables the binary reads: those of its flags (from
/// `--help`) and the API tokens, which have no flag (a secret belongs in
/// the environment) and which the library names in `api::auth`.
fn accepted_env() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for sub in ["serve", "apply", "migrate", "validate", "dev"] {
        names.extend(help_env(&help(sub)));
    }
    names.extend([auth::TOKEN_ENV, auth::READONLY_TOKEN_ENV, auth::TOKENS_ENV].map(String::from));
    names
}

/// The `hmac_secret_env` variables a pipelines file names: the replicas read
/// those, so a deployment must provide them.
fn hmac_env(pipelines: &Path) -> BTreeSet<String> {
    yaml(pipelines)["pipelines"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["hmac_secret_env"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn duration(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("duration {s:?}: {e}"))
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("SPINE_LISTEN {listen:?} has no port"))
}

/// `spine-scheduler validate -f SCHEDULES --pipelines PIPELINES` succeeds.
fn assert_validates(schedules: &Path, pipelines: &Path, env: &[(&str, &str)]) {
    let out = run(
        &bin(),
        &[
            "validate",
            "-f",
            &schedules.display().to_string(),
            "--pipelines",
            &pipelines.display().to_string(),
        ],
        env,
    );
    assert_ok(
        &format!(
            "validate {} with {}",
            schedules.display(),
            pipelines.display()
        ),
        &out,
    );
}

/// Metric names (`spine_…`, `process_…`, `up`, `kube_…`) in a PromQL
/// expression, quoted strings left out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quoted = false;
    for ch in expr.chars() {
        if ch == '"' {
            quoted = !quoted;
            unquoted.push(' ');
        } else if !quoted {
            unquoted.push(ch);
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            (w.starts_with("spine_") && *w != SERIES_LABEL.0)
                || w.starts_with("process_")
                || w.starts_with("kube_")
                || *w == "up"
        })
        .map(str::to_string)
        .collect()
}

/// What the replicas export: every family a registry encodes once each of
/// its recorders has been called (a labelled family has no series, and is
/// not encoded, until its first observation).
fn exported_metrics() -> BTreeSet<String> {
    let metrics = Metrics::new(Default::default()).expect("metrics");
    metrics.fired("s", RunStatus::Completed, RunTrigger::Schedule);
    metrics.skipped("s");
    metrics.missed("s");
    metrics.fire_lag(0.1);
    metrics.run_duration("s", 1.0);
    metrics.claims(1, 1);
    metrics.handoff_checks(1, 1);
    metrics.claim_round_trip(0.001);
    metrics.runs_in_flight(1);
    metrics.database_unreachable_since(Some(chrono::Utc::now()));
    metrics.set_leader(true);
    metrics.schedules_by_state(1, 1);
    metrics.pool(
        "engine",
        deadpool_postgres::Status {
            max_size: 8,
            size: 1,
            available: 1,
            waiting: 0,
        },
    );
    metrics.next_fire("s", Some(1.0));
    metrics.expected_interval("s", Some(60.0));
    metrics.last_successes(&[("s".to_string(), 1.0)]);
    metrics.pending_runs(0);
    metrics.replicas_alive(1);
    metrics.clock_offset(0.0);
    metrics.http_request("/v1/schedules", "GET", 200, 0.001);
    metrics
        .encode()
        .expect("encode")
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
/// Whether `name` is exported, counting a histogram's `_bucket`, `_sum`
/// and `_count` series.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| exported.contains(base))
        })
}

fn promtool() -> Option<PathBuf> {
    external_tool("SPINE_PROMTOOL", "promtool")
}
