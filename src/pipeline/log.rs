//! The `log` pipeline: writes the run to the replica's log, optionally after
//! a pause. Harmless, so it serves local demos, smoke tests and benchmarks.

use std::time::Duration;

use serde_json::json;

use super::{Pipeline, PipelineFuture, RunContext};

/// Logs each run at INFO (with its params) and succeeds after `sleep`.
#[derive(Debug, Clone, Default)]
pub struct LogPipeline {
    /// How long each run takes.
    pub sleep: Duration,
}

impl Pipeline for LogPipeline {
    fn run(&self, ctx: RunContext) -> PipelineFuture {
        let sleep = self.sleep;
        Box::pin(async move {
            tracing::info!(
                run_id = %ctx.run_id,
                schedule = %ctx.schedule,
                pipeline = %ctx.pipeline,
                scheduled_at = %ctx.scheduled_at.to_rfc3339(),
                attempt = ctx.attempt,
                params = %serde_json::Value::Object(ctx.params.clone()),
                "log pipeline ran"
            );
            if !sleep.is_zero() {
                tokio::time::sleep(sleep).await;
            }
            Ok(Some(json!({"logged": true})))
        })
    }
}
