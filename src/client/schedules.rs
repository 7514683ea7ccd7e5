//! `spine-scheduler schedules …`: list, get, create, pause, resume,
//! trigger, delete, next and backfill, over `/v1/schedules`.

use std::path::{Path, PathBuf};

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::api::Api;
use super::error::ClientError;
use super::output::{status_style, Printer};
use super::relative_time::span;
use super::table::{fields, Cell, Table};
use super::Connection;

/// `spine-scheduler schedules`: the flags every subcommand shares, and the
/// subcommand.
#[derive(Debug, clap::Args)]
#[command(after_long_help = concat!("\
Examples:
  spine-scheduler schedules list
  spine-scheduler schedules get finra_otc_t1
  spine-scheduler schedules create -f schedule.yaml
  spine-scheduler schedules pause finra_otc_t1 --note 'feed down, INC-1234' --by alice
  spine-scheduler schedules trigger finra_otc_t1 --params '{\"tier\": \"T2\"}'
  spine-scheduler schedules next finra_otc_t1 --count 5
  spine-scheduler schedules backfill finra_otc_t1 --start 2027-01-01T00:00:00Z --end 2027-02-01T00:00:00Z
  spine-scheduler schedules list -o json | jq -r '.items[].name'

", crate::client::exit_codes_help!()))]
pub struct SchedulesArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: SchedulesCommand,
}

/// What to do with schedules.
#[derive(Debug, clap::Subcommand)]
pub enum SchedulesCommand {
    /// List schedules by name: trigger, state, next and last run.
    List(ListArgs),
    /// Show one schedule: its definition, pause note, next and last run.
    Get {
        /// The schedule's name.
        name: String,
    },
    /// Create a schedule from a YAML or JSON file: one entry of a schedules file.
    Create {
        /// The definition (`.json` is read as JSON, anything else as YAML; `-` reads stdin as YAML).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Pause a schedule on every replica, optionally saying why.
    Pause {
        /// The schedule's name.
        name: String,
        /// Why (up to 1000 characters), shown by `get` until it is resumed.
        #[arg(long)]
        note: Option<String>,
        /// Who pauses it, in your words (the schedule's history also names the token).
        #[arg(long)]
        by: Option<String>,
    },
    /// Resume a paused schedule (its pause note is forgotten).
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Run a schedule now, once, outside its ticks (trigger `manual`).
    Trigger {
        /// The schedule's name.
        name: String,
        /// A JSON object merged over the schedule's params for this run only (top-level keys replace).
        #[arg(long, value_name = "JSON")]
        params: Option<String>,
    },
    /// Delete a schedule (its run history stays).
    Delete {
        /// The schedule's name.
        name: String,
        /// Delete it even though a schedules file manages it (the API takes it over first).
        #[arg(long)]
        take_over: bool,
    },
    /// Every change to a schedule, newest first: what changed, who changed it (token or file).
    History {
        /// The schedule's name (a deleted schedule's history stays readable).
        name: String,
        /// Most changes to show (1–1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
    },
    /// The next fire times of a stored schedule (none while paused or ended).
    Next {
        /// The schedule's name.
        name: String,
        /// How many fire times.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
        count: u16,
    },
    /// Run a schedule's past ticks in [start, end): those never run, or all of them again.
    Backfill(BackfillArgs),
}

/// `schedules list` filters and paging.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only paused schedules.
    #[arg(long, conflicts_with = "enabled")]
    paused: bool,
    /// Only enabled (not paused) schedules.
    #[arg(long)]
    enabled: bool,
    /// Only schedules of this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only names starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Most schedules to show (a page, 1–1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Continue after a previous page (the cursor it printed).
    #[arg(long)]
    cursor: Option<String>,
}

/// `schedules backfill`: the API's backfill request.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The schedule's name.
    name: String,
    /// First instant of the range, inclusive (RFC 3339, not in the future).
    #[arg(long)]
    start: String,
    /// End of the range, exclusive (RFC 3339).
    #[arg(long)]
    end: String,
    /// `missing`: only ticks never run; `all`: every tick once more.
    #[arg(long, value_enum, default_value_t = BackfillMode::Missing)]
    mode: BackfillMode,
    /// Overlap policy for the backfill's runs (`allow_all` runs up to max_instances at once; default one at a time).
    #[arg(long)]
    overlap_policy: Option<String>,
    /// Allow up to 100,000 ticks (else more than 10,000 is refused).
    #[arg(long)]
    allow_large: bool,
    /// Makes the request safe to repeat: the same key answers with the first backfill.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `--mode` of a backfill.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BackfillMode {
    /// Only ticks with no ledger row.
    Missing,
    /// Every tick in the range.
    All,
}

impl BackfillMode {
    fn name(self) -> &'static str {
        match self {
            BackfillMode::Missing => "missing",
            BackfillMode::All => "all",
        }
    }
}

/// A schedule as the API shows it (the fields this client prints).
#[derive(Debug, Deserialize)]
struct Schedule {
    name: String,
    pipeline: String,
    schedule_type: String,
    cron: Option<String>,
    interval_seconds: Option<u64>,
    start_at: Option<DateTime<Utc>>,
    run_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    timezone: String,
    #[serde(default)]
    params: Map<String, Value>,
    enabled: bool,
    max_instances: u32,
    overlap_policy: String,
    misfire_grace_time: u64,
    coalesce: bool,
    timeout: Option<u64>,
    jitter: u64,
    retry: Retry,
    description: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    next_run: Option<DateTime<Utc>>,
    ended: bool,
    pause: Option<Pause>,
    last_run: Option<LastRun>,
    #[serde(default)]
    managed_by: Option<ManagedBy>,
}

/// Who manages a schedule's definition (`{"kind": "api"}` or
/// `{"kind": "file", "source": …}`).
#[derive(Debug, Deserialize)]
struct ManagedBy {
    kind: String,
    source: Option<String>,
}

impl ManagedBy {
    /// `api`, `file:fleet`; `-` for an unclaimed schedule.
    fn text(m: Option<&ManagedBy>) -> String {
        match m {
            None => "-".into(),
            Some(ManagedBy {
                kind,
                source: Some(source),
            }) => format!("{kind}:{source}"),
            Some(m) => m.kind.clone(),
        }
    }
}

/// One row of a schedule's history.
#[derive(Debug, Deserialize)]
struct ChangeRow {
    at: DateTime<Utc>,
    action: String,
    actor: Actor,
    version_after: Option<i64>,
    #[serde(default)]
    fields: Vec<String>,
    note: Option<String>,
    former_manager: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    kind: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HistoryPage {
    items: Vec<ChangeRow>,
}

#[derive(Debug, Deserialize)]
struct Retry {
    max_attempts: u32,
    backoff: u64,
    backoff_max: u64,
}

#[derive(Debug, Deserialize)]
struct Pause {
    at: Option<DateTime<Utc>>,
    by: Option<String>,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LastRun {
    run_id: String,
    status: String,
    trigger: String,
    scheduled_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct SchedulePage {
    items: Vec<Schedule>,
    #[serde(default)]
    invalid: Vec<InvalidSchedule>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InvalidSchedule {
    name: String,
    error: String,
}

#[derive(Debug, Deserialize)]
struct RunAccepted {
    run_id: String,
    status: String,
    #[serde(default)]
    params: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct NextFires {
    paused: bool,
    ended: bool,
    timezone: String,
    fires: Vec<FireTime>,
}

#[derive(Debug, Deserialize)]
struct FireTime {
    at: DateTime<Utc>,
    local: String,
}

#[derive(Debug, Deserialize)]
struct Backfill {
    backfill_id: String,
    state: String,
    ticks_planned: i64,
    ticks_existing: i64,
}

/// `/v1/schedules/{name}` and below.
fn path(name: &str, rest: &str) -> String {
    format!("/v1/schedules/{}{rest}", Api::segment(name))
}

/// Runs a `schedules` command.
///
/// # Errors
/// Whatever the API or the input refuses (see [`ClientError`]).
pub async fn run(args: SchedulesArgs) -> Result<(), ClientError> {
    let api = args.connection.api()?;
    let out = Printer::new(args.connection.output);
    match args.command {
        SchedulesCommand::List(list) => {
            let reply = api.get("/v1/schedules", &list.query()).await?;
            out.answer(&reply, || Ok(list_view(&reply.parse()?, &out)))
        }
        SchedulesCommand::Get { name } => {
            let reply = api.get(&path(&name, ""), &[]).await?;
            out.answer(&reply, || Ok(detail_view(&reply.parse()?, &out)))
        }
        SchedulesCommand::Create { file } => {
            let body = read_definition(&file)?;
            let reply = api.post("/v1/schedules", Some(&body)).await?;
            out.answer(&reply, || {
                let s: Schedule = reply.parse()?;
                Ok(format!(
                    "created schedule {} (version {}){}\n",
                    s.name,
                    s.version,
                    next_clause(&s, &out)
                ))
            })
        }
        SchedulesCommand::Pause { name, note, by } => {
            let mut body = Map::new();
            if let Some(note) = note {
                body.insert("note".into(), note.into());
            }
            if let Some(by) = by {
                body.insert("by".into(), by.into());
            }
            let body = (!body.is_empty()).then_some(Value::Object(body));
            let reply = api.post(&path(&name, "/pause"), body.as_ref()).await?;
            out.answer(&reply, || {
                let s: Schedule = reply.parse()?;
                let note = s.pause.as_ref().and_then(|p| p.note.as_deref());
                Ok(match note {
                    Some(note) => format!("paused {} ({note})\n", s.name),
                    None => format!("paused {}\n", s.name),
                })
            })
        }
        SchedulesCommand::Resume { name } => {
            let reply = api.post(&path(&name, "/resume"), None).await?;
            out.answer(&reply, || {
                let s: Schedule = reply.parse()?;
                Ok(format!("resumed {}{}\n", s.name, next_clause(&s, &out)))
            })
        }
        SchedulesCommand::Trigger { name, params } => {
            let body = params
                .map(|p| parse_json_object("--params", &p).map(|p| json!({ "params": p })))
                .transpose()?;
            let reply = api.post(&path(&name, "/run"), body.as_ref()).await?;
            out.answer(&reply, || {
                let r: RunAccepted = reply.parse()?;
                let params = if r.params.is_empty() {
                    String::new()
                } else {
                    format!(" with params {}", Value::Object(r.params))
                };
                Ok(format!(
                    "triggered {name}: run {} ({}){params}\nfollow it: spine-scheduler runs get {}\n",
                    r.run_id, r.status, r.run_id
                ))
            })
        }
        SchedulesCommand::Delete { name, take_over } => {
            let query: Vec<(&str, String)> = if take_over {
                vec![("take_over", "true".into())]
            } else {
                Vec::new()
            };
            let reply = api
                .send(Method::DELETE, &path(&name, ""), &query, None, &[])
                .await?;
            out.answer(&reply, || {
                Ok(format!("deleted schedule {name} (its run history stays)\n"))
            })
        }
        SchedulesCommand::Next { name, count } => {
            let reply = api
                .get(&path(&name, "/next"), &[("count", count.to_string())])
                .await?;
            out.answer(&reply, || Ok(next_view(&name, &reply.parse()?, &out)))
        }
        SchedulesCommand::History { name, limit } => {
            let reply = api
                .get(&path(&name, "/history"), &[("limit", limit.to_string())])
                .await?;
            out.answer(&reply, || Ok(history_view(&reply.parse()?, &out)))
        }
        SchedulesCommand::Backfill(b) => backfill(&api, &out, b).await,
    }
}

fn history_view(page: &HistoryPage, out: &Printer) -> String {
    if page.items.is_empty() {
        return "no changes recorded\n".to_string();
    }
    let mut table = Table::new(&["WHEN", "ACTION", "BY", "VERSION", "WHAT"]);
    for c in &page.items {
        let by = match &c.actor.name {
            Some(name) => format!("{}:{name}", c.actor.kind),
            None => c.actor.kind.clone(),
        };
        let mut what = c.fields.join(", ");
        if let Some(note) = &c.note {
            what = format!("note: {note}");
        }
        if let Some(from) = &c.former_manager {
            what = format!("{what} (from {from})");
        }
        table.row(vec![
            out.ago(c.at).into(),
            c.action.as_str().into(),
            by.into(),
            c.version_after.map_or("-".into(), |v| v.to_string()).into(),
            what.into(),
        ]);
    }
    table.render(out)
}

impl ListArgs {
    /// The list's query parameters.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("limit", self.limit.to_string())];
        if self.paused {
            q.push(("paused", "true".into()));
        }
        if self.enabled {
            q.push(("enabled", "true".into()));
        }
        let optional = [
            ("pipeline", &self.pipeline),
            ("name_prefix", &self.prefix),
            ("cursor", &self.cursor),
        ];
        q.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))),
        );
        q
    }
}

async fn backfill(api: &Api, out: &Printer, b: BackfillArgs) -> Result<(), ClientError> {
    let mut body = json!({"start": b.start, "end": b.end, "mode": b.mode.name()});
    if let Some(policy) = &b.overlap_policy {
        body["overlap_policy"] = policy.as_str().into();
    }
    if b.allow_large {
        body["allow_large"] = true.into();
    }
    let headers: Vec<(&str, String)> = b
        .idempotency_key
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .collect();
    let reply = api
        .send(
            Method::POST,
            &path(&b.name, "/backfill"),
            &[],
            Some(&body),
            &headers,
        )
        .await?;
    out.answer(&reply, || {
        let f: Backfill = reply.parse()?;
        // 200: the API answered with the backfill it already had for this
        // work (active, or made with the same idempotency key).
        let what = if reply.status == StatusCode::OK {
            "already requested"
        } else {
            "accepted"
        };
        Ok(format!(
            "backfill {} of {} {what}: {}, {} ticks planned, {} already run\n",
            f.backfill_id, b.name, f.state, f.ticks_planned, f.ticks_existing
        ))
    })
}

/// A definition file as the API's JSON body.
fn read_definition(file: &Path) -> Result<Value, ClientError> {
    let read_error = |e: std::io::Error| ClientError::File {
        path: file.to_path_buf(),
        reason: e.to_string(),
    };
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(read_error)?
    } else {
        std::fs::read_to_string(file).map_err(read_error)?
    };
    let what = file.display().to_string();
    let value: Value = if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| ClientError::Input {
            what,
            reason: format!("not JSON: {e}"),
        })?
    } else {
        serde_saphyr::from_str(&text).map_err(|e| ClientError::Input {
            what,
            reason: format!("not YAML: {e}"),
        })?
    };
    if !value.is_object() {
        return Err(ClientError::Input {
            what: file.display().to_string(),
            reason: "must be one schedule: a mapping of keys such as name, pipeline, cron (one entry of a schedules file)".into(),
        });
    }
    Ok(value)
}

/// `text` (a flag's value) as a JSON object.
fn parse_json_object(what: &str, text: &str) -> Result<Value, ClientError> {
    let input = |reason: String| ClientError::Input {
        what: what.to_string(),
        reason,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| input(format!("not JSON ({e}): {text}")))?;
    if !value.is_object() {
        return Err(input(format!(
            "must be a JSON object such as '{{\"tier\": \"T2\"}}', not {text}"
        )));
    }
    Ok(value)
}

/// What fires the schedule: the cron expression, `every 15 min`, `once at …`.
fn trigger_text(s: &Schedule) -> String {
    match (
        s.schedule_type.as_str(),
        &s.cron,
        s.interval_seconds,
        s.run_at,
    ) {
        (_, Some(cron), _, _) => cron.clone(),
        (_, _, Some(seconds), _) => format!("every {}", span(seconds)),
        (_, _, _, Some(at)) => format!("once at {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
        (other, ..) => other.to_string(),
    }
}

/// `paused`, `ended` or `enabled`, coloured.
fn state_cell(s: &Schedule) -> Cell {
    if !s.enabled {
        Cell::styled(
            "paused",
            Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        )
    } else if s.ended {
        Cell::styled("ended", Style::new().dimmed())
    } else {
        Cell::styled(
            "enabled",
            Style::new().fg_color(Some(AnsiColor::Green.into())),
        )
    }
}

/// `; next run in 4 s` when it has one.
fn next_clause(s: &Schedule, out: &Printer) -> String {
    match s.next_run {
        Some(t) => format!("; next run {}", out.ago(t)),
        None if !s.enabled => "; paused".to_string(),
        None => "; it will not fire again".to_string(),
    }
}

fn list_view(page: &SchedulePage, out: &Printer) -> String {
    let mut text = if page.items.is_empty() {
        "no schedules\n".to_string()
    } else {
        let mut table = Table::new(&[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "STATE",
            "NEXT RUN",
            "LAST RUN",
            "PIPELINE",
            "MANAGED BY",
        ]);
        for s in &page.items {
            let last = match &s.last_run {
                Some(r) => Cell::styled(
                    format!("{} {}", r.status, out.ago(r.scheduled_at)),
                    status_style(&r.status),
                ),
                None => "-".into(),
            };
            table.row(vec![
                s.name.as_str().into(),
                trigger_text(s).into(),
                s.timezone.as_str().into(),
                state_cell(s),
                s.next_run.map_or("-".into(), |t| out.ago(t)).into(),
                last,
                s.pipeline.as_str().into(),
                ManagedBy::text(s.managed_by.as_ref()).into(),
            ]);
        }
        table.render(out)
    };
    for bad in &page.invalid {
        text.push_str(&format!(
            "unreadable stored schedule {}: {}\n",
            bad.name, bad.error
        ));
    }
    if let Some(cursor) = &page.next_cursor {
        text.push_str(&format!("more: add --cursor {cursor}\n"));
    }
    text
}

fn detail_view(s: &Schedule, out: &Printer) -> String {
    let optional = |t: Option<DateTime<Utc>>| t.map_or("-".to_string(), |t| out.instant(t));
    let mut pairs: Vec<(&str, String)> = vec![
        ("Name", s.name.clone()),
        ("Pipeline", s.pipeline.clone()),
        ("Schedule", trigger_text(s)),
        ("Timezone", s.timezone.clone()),
    ];
    if let Some(start) = s.start_at {
        pairs.push(("Start at", out.instant(start)));
    }
    let state = state_cell(s);
    pairs.push(("State", out.paint(state.text(), state.style())));
    if let Some(p) = &s.pause {
        pairs.push(("Paused at", optional(p.at)));
        pairs.push(("Paused by", p.by.clone().unwrap_or_else(|| "-".into())));
        pairs.push(("Pause note", p.note.clone().unwrap_or_else(|| "-".into())));
    }
    pairs.push(("Next run", optional(s.next_run)));
    pairs.push((
        "Last run",
        match &s.last_run {
            Some(r) => format!(
                "{} ({}, tick {}) run {}",
                out.paint(&r.status, status_style(&r.status)),
                r.trigger,
                out.instant(r.scheduled_at),
                r.run_id
            ),
            None => "-".into(),
        },
    ));
    pairs.push(("End at", optional(s.end_at)));
    pairs.push(("Max instances", s.max_instances.to_string()));
    pairs.push(("Overlap policy", s.overlap_policy.clone()));
    pairs.push(("Misfire grace", span(s.misfire_grace_time)));
    pairs.push(("Coalesce", s.coalesce.to_string()));
    pairs.push(("Timeout", s.timeout.map_or("none".into(), span)));
    pairs.push(("Jitter", span(s.jitter)));
    pairs.push((
        "Retry",
        if s.retry.max_attempts <= 1 {
            "none".to_string()
        } else {
            format!(
                "{} attempts, backoff {} up to {}",
                s.retry.max_attempts,
                span(s.retry.backoff),
                span(s.retry.backoff_max)
            )
        },
    ));
    if let Some(d) = &s.description {
        pairs.push(("Description", d.clone()));
    }
    pairs.push((
        "Params",
        if s.params.is_empty() {
            "{}".to_string()
        } else {
            serde_json::to_string_pretty(&s.params).unwrap_or_default()
        },
    ));
    pairs.push(("Managed by", ManagedBy::text(s.managed_by.as_ref())));
    pairs.push(("Version", s.version.to_string()));
    pairs.push(("Created", out.instant(s.created_at)));
    pairs.push(("Updated", out.instant(s.updated_at)));
    fields(&pairs)
}

fn next_view(name: &str, n: &NextFires, out: &Printer) -> String {
    if n.paused {
        return format!("{name} is paused: no fire times until it is resumed\n");
    }
    if n.ended {
        return format!("{name} has ended: it will not fire again\n");
    }
    if n.fires.is_empty() {
        return format!("{name}: no fire times\n");
    }
    let mut table = Table::new(&["LOCAL", "UTC", "IN"]);
    for f in &n.fires {
        table.row(vec![
            f.local.as_str().into(),
            f.at.format("%Y-%m-%dT%H:%M:%SZ").to_string().into(),
            out.ago(f.at).into(),
        ]);
    }
    format!("{name} ({}):\n{}", n.timezone, table.render(out))
}
