//! The `spine-scheduler` command line. Errors become messages here, at the edge.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use spine_scheduler::apply::{self, ApplyOptions};
use spine_scheduler::schedule::{parse_timezone, CronExpr};
use spine_scheduler::schedule_file;
use spine_scheduler::store;

/// A distributed cron scheduler: run N replicas against one PostgreSQL and
/// every tick fires exactly once.
#[derive(Parser)]
#[command(name = "spine-scheduler", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the next fire times of a cron expression, in its zone and in UTC.
    Next {
        /// A crontab expression: 5 fields, 6 with leading seconds, or @daily etc.
        expression: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// How many fire times to print.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
        /// Start after this RFC 3339 instant (default: now).
        #[arg(long)]
        from: Option<String>,
    },
    /// Create or upgrade the database schema (safe to run from many replicas at once).
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Check a schedules file and report every problem; exit 1 if there is any.
    Validate {
        /// The schedules file (YAML).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Sync a schedules file into the database in one transaction.
    Apply {
        /// The schedules file (YAML).
        #[arg(short, long)]
        file: PathBuf,
        /// Delete schedules that the file does not name.
        #[arg(long)]
        prune: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(clap::Args)]
struct DbArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    database_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Next {
            expression,
            tz,
            count,
            from,
        } => next(&expression, &tz, count, from.as_deref()),
        Command::Migrate { db } => {
            let mut client = store::connect(&db.database_url).await?;
            let report = store::migrate::migrate(&mut client).await?;
            if report.applied.is_empty() {
                println!(
                    "schema is up to date (version {})",
                    report.already_applied.last().copied().unwrap_or(0)
                );
            } else {
                for v in &report.applied {
                    println!("applied migration {v}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { file } => {
            let checked = schedule_file::load(&file)?;
            for p in &checked.problems {
                println!("{}: {p}", file.display());
            }
            if checked.problems.is_empty() {
                println!(
                    "{}: {} schedules, all valid",
                    file.display(),
                    checked.schedules.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{}: {} problem(s)", file.display(), checked.problems.len());
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Apply {
            file,
            prune,
            dry_run,
            db,
        } => {
            let checked = schedule_file::load(&file)?;
            if !checked.problems.is_empty() {
                for p in &checked.problems {
                    eprintln!("{}: {p}", file.display());
                }
                anyhow::bail!(
                    "{} problem(s) in {}; nothing was applied",
                    checked.problems.len(),
                    file.display()
                );
            }
            let mut client = store::connect(&db.database_url).await?;
            store::migrate::migrate(&mut client)
                .await
                .context("bringing the schema up to date")?;
            let plan = apply::apply(
                &mut client,
                &checked.schedules,
                ApplyOptions { prune, dry_run },
            )
            .await?;
            println!("{plan}");
            if dry_run {
                println!("dry run: nothing was changed");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn next(expression: &str, tz: &str, count: u16, from: Option<&str>) -> anyhow::Result<ExitCode> {
    let cron = CronExpr::parse(expression).with_context(|| format!("expression {expression:?}"))?;
    let zone = parse_timezone(tz)?;
    let from = match from {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| {
                format!("--from {s:?} is not an RFC 3339 instant such as 2027-03-12T00:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let fires = cron.upcoming(from, zone, usize::from(count));
    if fires.is_empty() {
        println!("no fire times after {}", from.to_rfc3339());
    }
    for t in fires {
        let local = t.with_timezone(&zone);
        println!(
            "{}  {}",
            local.format("%a %Y-%m-%d %H:%M:%S %Z (%:z)"),
            t.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
