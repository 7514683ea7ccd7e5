//! `spine-scheduler cluster`: the replicas, their heartbeats and the
//! leader, from `/v1/cluster`.

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ClientError;
use super::output::Printer;
use super::relative_time::duration;
use super::table::{Cell, Table};
use super::Connection;

/// `spine-scheduler cluster`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = concat!("\
Examples:
  spine-scheduler cluster
  spine-scheduler cluster --api-url http://spine-2:8080
  spine-scheduler cluster -o json | jq -r '.leader.hostname'

", crate::client::exit_codes_help!()))]
pub struct ClusterArgs {
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Deserialize)]
struct ClusterView {
    leader: Option<Leader>,
    nodes: Vec<Node>,
}

#[derive(Debug, Deserialize)]
struct Leader {
    hostname: String,
    since: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct Node {
    node_id: String,
    hostname: String,
    version: String,
    state: String,
    started_at: DateTime<Utc>,
    heartbeat_age_seconds: f64,
    alive: bool,
    is_leader: bool,
    is_self: bool,
}

/// Shows the cluster.
///
/// # Errors
/// Whatever the API refuses (see [`ClientError`]).
pub async fn run(args: ClusterArgs) -> Result<(), ClientError> {
    let api = args.connection.api()?;
    let out = Printer::new(args.connection.output);
    let reply = api.get("/v1/cluster", &[]).await?;
    out.answer(&reply, || Ok(view(&reply.parse()?, &out)))
}

fn view(c: &ClusterView, out: &Printer) -> String {
    let mut text = match &c.leader {
        Some(l) => format!("leader: {}, elected {}\n", l.hostname, out.ago(l.since)),
        None => out.paint(
            "no leader: housekeeping (reaping, retries, missed ticks) waits for one\n",
            Style::new().fg_color(Some(AnsiColor::Red.into())),
        ),
    };
    if c.nodes.is_empty() {
        text.push_str("no replicas\n");
        return text;
    }
    let mut table = Table::new(&[
        "NODE",
        "NODE ID",
        "STATE",
        "ALIVE",
        "HEARTBEAT",
        "ROLE",
        "VERSION",
        "STARTED",
    ]);
    for n in &c.nodes {
        let alive = if n.alive {
            Cell::styled("yes", Style::new().fg_color(Some(AnsiColor::Green.into())))
        } else {
            Cell::styled("no", Style::new().fg_color(Some(AnsiColor::Red.into())))
        };
        let mut role = if n.is_leader { "leader" } else { "follower" }.to_string();
        if n.is_self {
            // The replica that answered: which one --api-url reached.
            role.push_str(" (answered)");
        }
        table.row(vec![
            n.hostname.as_str().into(),
            n.node_id.as_str().into(),
            n.state.as_str().into(),
            alive,
            format!("{} ago", duration(n.heartbeat_age_seconds.max(0.0))).into(),
            role.into(),
            n.version.as_str().into(),
            out.ago(n.started_at).into(),
        ]);
    }
    text.push_str(&table.render(out));
    text
}
