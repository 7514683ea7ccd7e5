//! Running the scheduler inside your own tokio application, with pipelines
//! written as async Rust functions (the seed's `set_executor`, in Rust).
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example embedded
//! ```
//!
//! Start it two or three times in different terminals: each tick is run by
//! exactly one of them. Ctrl-C drains and stops.

use std::time::Duration;

use serde_json::json;
use spine_scheduler::engine::{EngineConfig, Scheduler};
use spine_scheduler::pipeline::{PipelineError, RunContext};
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::{self, schedules, StoreError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());

    // Schedules usually come from a file or the API; here one is created in code.
    let mut client = store::connect(&url).await?;
    store::migrate::migrate(&mut client).await?;
    let every_ten_seconds = Schedule::cron("example.tick", "example.greet", "*/10 * * * * *")?
        .with_params(
            json!({"greeting": "hello"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )?;
    match schedules::insert(&client, &every_ten_seconds).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }

    let scheduler = Scheduler::builder(&url)
        .pipeline("example.greet", |run: RunContext| async move {
            let greeting = run.params.get("greeting").and_then(|g| g.as_str());
            let Some(greeting) = greeting else {
                return Err(PipelineError::new("params.greeting is missing"));
            };
            println!(
                "{greeting} from run {} (tick {})",
                run.run_id, run.scheduled_at
            );
            Ok(Some(json!({"greeted": true})))
        })?
        .config(EngineConfig {
            shutdown_grace: Duration::from_secs(5),
            ..EngineConfig::default()
        })
        .build()?;
    scheduler
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
