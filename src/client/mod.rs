//! The command-line client of the admin API: `spine-scheduler schedules …`,
//! `spine-scheduler runs …` and `spine-scheduler cluster` talk to a running
//! replica over HTTP, as any other API client does (nothing here touches
//! the database).
//!
//! Each command group parses its own flags (clap), calls the API through
//! [`Api`], and prints either the API's JSON (`-o json`, for scripts) or a
//! human view (aligned tables, relative times). Every failure is a
//! [`ClientError`], whose [`exit_code`](ClientError::exit_code) tells a
//! script what happened without parsing the message.

mod api;
mod cluster;
mod error;
mod output;
mod relative_time;
mod runs;
mod schedules;
mod table;

use std::path::PathBuf;
use std::time::Duration;

pub use api::{Api, Reply};
pub use cluster::ClusterArgs;
pub use error::{ClientError, ExitStatus};
pub use output::OutputFormat;
pub use runs::{RunsArgs, RunsCommand};
pub use schedules::{SchedulesArgs, SchedulesCommand};

/// The API address when neither `--api-url` nor `SPINE_API_URL` is given:
/// what `serve` listens on by default.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// The exit codes, as `--help` and the README list them (a macro, so that
/// each group's help can `concat!` it after its examples).
macro_rules! exit_codes_help {
    () => {
        "\
Exit codes:
  0  success
  1  any other error (input the API refused with 400 or 422, an unreadable file, a bad flag value)
  2  usage error (unknown command or flag, missing argument)
  3  not found (404: no such schedule, run or backfill)
  4  conflict or failed precondition (409, 412: name taken, stale version, run not running)
  5  not authorised (401: no or wrong token; 403: the read-only token tried to change something)
  6  server unreachable, timed out, or answering 5xx (e.g. 503 while its database is away)"
    };
}
pub(crate) use exit_codes_help;

/// The exit codes, as `--help` and the README list them.
pub const EXIT_CODES_HELP: &str = exit_codes_help!();

/// How to reach the API and how to print: the flags every client command
/// takes (after the group or after the command).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "API connection and output")]
pub struct Connection {
    /// Base URL of a replica's admin API (any replica answers any request).
    #[arg(long, global = true, env = "SPINE_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// File holding the API token (instead of SPINE_API_TOKEN); the admin token for
    /// changes, the read-only one is enough to read.
    #[arg(long, global = true, env = "SPINE_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// How long one request may take, connecting included.
    #[arg(long, global = true, env = "SPINE_API_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// `table` for people; `json` prints the API's JSON as it answered, for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// The environment variable holding the token (as for `serve`).
pub const TOKEN_ENV: &str = "SPINE_API_TOKEN";

impl Connection {
    /// The API client these flags describe, with the token from
    /// `SPINE_API_TOKEN` or `--api-token-file` (not both).
    ///
    /// # Errors
    /// A URL that is not `http(s)://…`, an unreadable or empty token file,
    /// or a token given both ways.
    pub fn api(&self) -> Result<Api, ClientError> {
        let from_env = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let token = match (from_env, &self.api_token_file) {
            (Some(_), Some(path)) => {
                return Err(ClientError::Token(format!(
                    "the token is set both in {TOKEN_ENV} and in {}; set it once",
                    path.display()
                )))
            }
            (Some(t), None) => Some(t),
            (None, Some(path)) => Some(read_token(path)?),
            (None, None) => None,
        };
        Api::new(&self.api_url, token, self.timeout)
    }
}

/// The token in `path`, without the newline editors and `echo` leave.
fn read_token(path: &std::path::Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::Token(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Runs `spine-scheduler schedules …`.
///
/// # Errors
/// Whatever the API or the input refuses; [`ClientError::exit_code`] says
/// which class it is.
pub async fn run_schedules(args: SchedulesArgs) -> Result<(), ClientError> {
    schedules::run(args).await
}

/// Runs `spine-scheduler runs …`.
///
/// # Errors
/// As [`run_schedules`].
pub async fn run_runs(args: RunsArgs) -> Result<(), ClientError> {
    runs::run(args).await
}

/// Runs `spine-scheduler cluster`.
///
/// # Errors
/// As [`run_schedules`].
pub async fn run_cluster(args: ClusterArgs) -> Result<(), ClientError> {
    cluster::run(args).await
}
