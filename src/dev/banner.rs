//! What `dev` prints for the newcomer once every replica is ready: where
//! each replica answers, when each schedule fires next, where the data is,
//! and commands to paste that show the cluster at work.
//!
//! Printed on stdout, apart from the progress lines on stderr, so it can be
//! read (or captured) on its own.

use chrono::Utc;

use super::replica::Replica;
use super::say;
use super::setup::Setup;
use crate::pg_cluster::PgCluster;

/// Prints where to look, once every replica is ready.
pub(super) fn print(setup: &Setup, url: &str, cluster: Option<&PgCluster>, replicas: &[Replica]) {
    let now = Utc::now();
    let first = replicas.first().map_or(8080, |r| r.port);
    let other = replicas.get(1).map_or(first, |r| r.port);
    let third = replicas.get(2).map_or(other, |r| r.port);
    let auth = if std::env::var_os("SPINE_API_TOKEN").is_some() {
        " -H \"Authorization: Bearer $SPINE_API_TOKEN\""
    } else {
        ""
    };
    let width = setup
        .schedules
        .iter()
        .map(|s| s.schedule.name().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!(
        "\nspine-scheduler dev: {} replica(s) sharing one PostgreSQL, each tick fired by exactly one of them.\n\n",
        replicas.len()
    ));
    out.push_str("  replica  API, /metrics, /readyz, /openapi.json\n");
    for r in replicas {
        out.push_str(&format!("  {:<7}  http://127.0.0.1:{}\n", r.name, r.port));
    }
    out.push_str(&format!(
        "  console  http://127.0.0.1:{first}/ui/  (the web console; any replica serves it)\n"
    ));
    out.push_str(&format!(
        "\n  schedules from {}{} (next fire, in the schedule's zone):\n",
        setup.schedules_shown,
        if setup.demo.is_some() {
            " and examples/demo-schedules.yaml"
        } else {
            ""
        }
    ));
    for s in &setup.schedules {
        let schedule = &s.schedule;
        let next = if setup.demo.as_deref() == Some(schedule.name()) {
            "every 5 seconds: the demo, so you see a fire at once (its runs log \"log pipeline ran\" below)".to_string()
        } else {
            match schedule.next_fire_after(now) {
                Some(t) => t
                    .with_timezone(&schedule.timezone())
                    .format("%a %Y-%m-%d %H:%M %Z")
                    .to_string(),
                None => "never again".to_string(),
            }
        };
        out.push_str(&format!("    {:<width$}  {next}\n", schedule.name()));
    }
    out.push_str(&format!(
        "  pipelines from {}, read from {}\n",
        setup.pipelines_shown,
        setup.pipelines_path.display()
    ));
    match cluster {
        Some(c) => out.push_str(&format!(
            "\n  database  {url}\n            private PostgreSQL, data in {}\n",
            c.data_dir().display()
        )),
        None => out.push_str(&format!(
            "\n  database  {} (from DATABASE_URL)\n",
            describe_url(url)
        )),
    }
    let watched = setup
        .demo
        .clone()
        .or_else(|| {
            setup
                .schedules
                .first()
                .map(|s| s.schedule.name().to_string())
        })
        .unwrap_or_else(|| "NAME".to_string());
    let run_now = setup
        .schedules
        .iter()
        .map(|s| s.schedule.name())
        .find(|n| Some(*n) != setup.demo.as_deref())
        .unwrap_or("NAME");
    out.push_str("\nTry it (any replica answers anything; all state is in the database):\n");
    out.push_str(&format!(
        "  curl -s{auth} 'http://127.0.0.1:{first}/v1/schedules/{watched}/runs?limit=3'\n"
    ));
    out.push_str(&format!(
        "  curl -s{auth} -X POST http://127.0.0.1:{other}/v1/schedules/{run_now}/run     # run now\n"
    ));
    out.push_str(&format!(
        "  curl -s{auth} 'http://127.0.0.1:{third}/v1/runs?schedule={run_now}'\n"
    ));
    out.push_str(&format!(
        "  curl -s{auth} http://127.0.0.1:{first}/v1/cluster                  # replicas and the leader\n"
    ));
    out.push_str(&format!(
        "  curl -s http://127.0.0.1:{first}/metrics | grep '^spine_runs_total'\n"
    ));
    if cluster.is_some() {
        out.push_str(&format!(
            "  psql '{url}' -c 'SELECT schedule_name, scheduled_at, status FROM scheduler_runs ORDER BY claimed_at DESC LIMIT 5'\n"
        ));
    }
    out.push_str(&format!(
        "\nCtrl-C stops the replicas{}.",
        if cluster.is_some() {
            " and PostgreSQL; the data stays in the data folder (delete it to start over)"
        } else {
            ""
        }
    ));
    out.push('\n');
    say(&out);
}

/// host:port/database of a URL, without the user or password.
fn describe_url(url: &str) -> String {
    let Ok((config, _)) = crate::store::settings(url) else {
        return "the database in DATABASE_URL".to_string();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default database)");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_description_hides_credentials() {
        let shown = describe_url("postgres://spine:secret@db.example:6432/jobs");
        assert_eq!(shown, "db.example:6432/jobs");
        assert!(!shown.contains("secret"));
    }
}
