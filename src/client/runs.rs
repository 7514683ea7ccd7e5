//! `spine-scheduler runs …`: the run ledger (list, get) and its controls
//! (cancel, rerun), over `/v1/runs`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::Api;
use super::error::ClientError;
use super::output::{status_style, Printer};
use super::relative_time::duration;
use super::table::{fields, Cell, Table};
use super::Connection;

/// `spine-scheduler runs`: the flags every subcommand shares, and the
/// subcommand.
#[derive(Debug, clap::Args)]
#[command(after_long_help = concat!("\
Examples:
  spine-scheduler runs list --schedule finra_otc_t1
  spine-scheduler runs list --status failed,abandoned --since 6h
  spine-scheduler runs get 0190c6d2-5b7e-7c4a-9d1e-2f3a4b5c6d7e
  spine-scheduler runs rerun 0190c6d2-5b7e-7c4a-9d1e-2f3a4b5c6d7e
  spine-scheduler runs cancel 0190c6d2-5b7e-7c4a-9d1e-2f3a4b5c6d7e --immediate
  spine-scheduler runs list --status running -o json | jq -r '.items[].run_id'

", crate::client::exit_codes_help!()))]
pub struct RunsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: RunsCommand,
}

/// What to do with runs.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// List runs, newest tick first.
    List(ListArgs),
    /// Show one run: status, times, node, error and result, params.
    Get {
        /// The run's id (a UUID).
        run_id: String,
    },
    /// Cancel a running (or waiting) run; it ends `cancelled`.
    Cancel {
        /// The run's id (a UUID).
        run_id: String,
        /// Kill it at once instead of telling the pipeline and waiting 10 s (SIGTERM, then SIGKILL).
        #[arg(long)]
        immediate: bool,
    },
    /// Run a finished run again: a new manual run with the same schedule and params.
    Rerun {
        /// The run's id (a UUID).
        run_id: String,
    },
}

/// `runs list` filters and paging.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs of this schedule.
    #[arg(long)]
    schedule: Option<String>,
    /// Only runs in these statuses, comma-separated (pending, running, completed, failed, skipped, missed, abandoned, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only runs with this trigger (schedule, manual, retry, backfill).
    #[arg(long)]
    trigger: Option<String>,
    /// Only ticks at or after this: RFC 3339, or a duration back from now (`90s`, `6h`, `2days`).
    #[arg(long)]
    since: Option<String>,
    /// Only ticks before this: RFC 3339, or a duration back from now.
    #[arg(long)]
    until: Option<String>,
    /// Most runs to show (a page, 1–1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Continue after a previous page (the cursor it printed).
    #[arg(long)]
    cursor: Option<String>,
}

/// A run as the API shows it (the fields this client prints).
#[derive(Debug, Deserialize)]
struct Run {
    run_id: String,
    schedule: String,
    pipeline: String,
    trigger: String,
    scheduled_at: DateTime<Utc>,
    attempt: i32,
    node_id: Option<String>,
    status: String,
    claimed_at: DateTime<Utc>,
    not_before: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    duration_seconds: Option<f64>,
    error: Option<String>,
    result: Option<Value>,
    overlapped_run_id: Option<String>,
    params: Option<Map<String, Value>>,
    rerun_of: Option<String>,
    backfill_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunPage {
    items: Vec<Run>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CancelAccepted {
    run_id: String,
    mode: String,
}

/// The longest error shown in a list row; `runs get` shows all of it.
const LIST_ERROR_CHARS: usize = 60;

fn path(run_id: &str, rest: &str) -> String {
    format!("/v1/runs/{}{rest}", Api::segment(run_id))
}

/// Runs a `runs` command.
///
/// # Errors
/// Whatever the API or the input refuses (see [`ClientError`]).
pub async fn run(args: RunsArgs) -> Result<(), ClientError> {
    let api = args.connection.api()?;
    let out = Printer::new(args.connection.output);
    match args.command {
        RunsCommand::List(list) => {
            let reply = api.get("/v1/runs", &list.query(out.now)?).await?;
            out.answer(&reply, || Ok(list_view(&reply.parse()?, &out)))
        }
        RunsCommand::Get { run_id } => {
            let reply = api.get(&path(&run_id, ""), &[]).await?;
            out.answer(&reply, || Ok(detail_view(&reply.parse()?, &out)))
        }
        RunsCommand::Cancel { run_id, immediate } => {
            let body = immediate.then(|| json!({"mode": "immediate"}));
            let reply = api.post(&path(&run_id, "/cancel"), body.as_ref()).await?;
            out.answer(&reply, || {
                let c: CancelAccepted = reply.parse()?;
                Ok(format!(
                    "cancel ({}) requested for run {}: it ends cancelled shortly\n",
                    c.mode, c.run_id
                ))
            })
        }
        RunsCommand::Rerun { run_id } => {
            let reply = api.post(&path(&run_id, "/rerun"), None).await?;
            out.answer(&reply, || {
                let r: Run = reply.parse()?;
                Ok(format!(
                    "rerun of {run_id}: run {} of {} ({})\nfollow it: spine-scheduler runs get {}\n",
                    r.run_id, r.schedule, r.status, r.run_id
                ))
            })
        }
    }
}

impl ListArgs {
    /// The list's query parameters; durations in `--since`/`--until` are
    /// counted back from `now`.
    fn query(&self, now: DateTime<Utc>) -> Result<Vec<(&'static str, String)>, ClientError> {
        let mut q = vec![("limit", self.limit.to_string())];
        let given = [
            ("schedule", &self.schedule),
            ("status", &self.status),
            ("trigger", &self.trigger),
            ("cursor", &self.cursor),
        ];
        q.extend(
            given
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))),
        );
        for (key, flag, value) in [
            ("since", "--since", &self.since),
            ("until", "--until", &self.until),
        ] {
            if let Some(v) = value {
                q.push((key, instant_or_ago(flag, v, now)?));
            }
        }
        Ok(q)
    }
}

/// An RFC 3339 instant as given, or `now` minus a duration (`6h`).
fn instant_or_ago(flag: &str, value: &str, now: DateTime<Utc>) -> Result<String, ClientError> {
    if DateTime::parse_from_rfc3339(value).is_ok() {
        return Ok(value.to_string());
    }
    let back = humantime::parse_duration(value)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d));
    match back {
        Some(t) => Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => Err(ClientError::Input {
            what: flag.to_string(),
            reason: format!(
                "{value:?} is neither an RFC 3339 instant (2027-03-15T06:00:00Z) nor a duration back from now (6h)"
            ),
        }),
    }
}

/// `text` cut to `max` characters, with `…` when cut; first line only.
fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max && !text.contains('\n') {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn list_view(page: &RunPage, out: &Printer) -> String {
    let mut text = if page.items.is_empty() {
        "no runs\n".to_string()
    } else {
        let mut table = Table::new(&[
            "RUN ID", "SCHEDULE", "TICK", "TRIGGER", "ATTEMPT", "STATUS", "DURATION", "ERROR",
        ]);
        for r in &page.items {
            table.row(vec![
                r.run_id.as_str().into(),
                r.schedule.as_str().into(),
                out.ago(r.scheduled_at).into(),
                r.trigger.as_str().into(),
                r.attempt.to_string().into(),
                Cell::styled(r.status.as_str(), status_style(&r.status)),
                r.duration_seconds.map_or("-".into(), duration).into(),
                r.error
                    .as_deref()
                    .map_or(String::new(), |e| shorten(e, LIST_ERROR_CHARS))
                    .into(),
            ]);
        }
        table.render(out)
    };
    if let Some(cursor) = &page.next_cursor {
        text.push_str(&format!("more: add --cursor {cursor}\n"));
    }
    text
}

fn detail_view(r: &Run, out: &Printer) -> String {
    let optional = |t: Option<DateTime<Utc>>| t.map_or("-".to_string(), |t| out.instant(t));
    let mut pairs: Vec<(&str, String)> = vec![
        ("Run ID", r.run_id.clone()),
        ("Schedule", r.schedule.clone()),
        ("Pipeline", r.pipeline.clone()),
        ("Status", out.paint(&r.status, status_style(&r.status))),
        ("Trigger", r.trigger.clone()),
        ("Attempt", r.attempt.to_string()),
        ("Tick", out.instant(r.scheduled_at)),
        ("Claimed", out.instant(r.claimed_at)),
    ];
    if r.not_before.is_some() {
        pairs.push(("Not before", optional(r.not_before)));
    }
    pairs.push(("Started", optional(r.started_at)));
    pairs.push(("Completed", optional(r.completed_at)));
    pairs.push(("Duration", r.duration_seconds.map_or("-".into(), duration)));
    pairs.push(("Node", r.node_id.clone().unwrap_or_else(|| "-".into())));
    let links = [
        ("Rerun of", &r.rerun_of),
        ("Backfill", &r.backfill_id),
        ("Overlapped run", &r.overlapped_run_id),
    ];
    pairs.extend(
        links
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))),
    );
    if let Some(e) = &r.error {
        pairs.push(("Error", e.clone()));
    }
    if let Some(result) = &r.result {
        pairs.push((
            "Result",
            serde_json::to_string_pretty(result).unwrap_or_default(),
        ));
    }
    if let Some(params) = &r.params {
        pairs.push((
            "Params",
            serde_json::to_string_pretty(params).unwrap_or_default(),
        ));
    }
    fields(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_instant_or_a_duration_back() -> Result<(), ClientError> {
        let now = DateTime::parse_from_rfc3339("2027-03-15T12:00:00Z")
            .expect("an instant")
            .with_timezone(&Utc);
        assert_eq!(
            instant_or_ago("--since", "2027-01-01T00:00:00+01:00", now)?,
            "2027-01-01T00:00:00+01:00"
        );
        assert_eq!(
            instant_or_ago("--since", "6h", now)?,
            "2027-03-15T06:00:00Z"
        );
        let e = instant_or_ago("--since", "yesterday", now)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("--since: \"yesterday\" is neither")),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn long_errors_are_cut_in_lists() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("exactly ten", 11), "exactly ten");
        assert_eq!(shorten("a much longer message", 10), "a much lo…");
        assert_eq!(shorten("first\nsecond", 60), "first…");
    }
}
