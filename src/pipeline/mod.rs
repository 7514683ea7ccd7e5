//! Pipelines: what a run does.
//!
//! A schedule names a pipeline; pipelines are defined by the operator, never
//! by API callers (API access must not mean code execution). Two sources:
//!
//! * a program embedding the engine registers async Rust handlers by name
//!   ([`Registry::register`]);
//! * the binary reads a pipelines file ([`config`]) defining `http`,
//!   `command` and `log` pipelines.
//!
//! Cancellation contract: the engine enforces timeouts, shutdown and
//! immediate cancels by *dropping* the future returned by [`Pipeline::run`].
//! Implementations must release what they hold on drop (a command pipeline
//! kills its process group). A graceful cancel is asked for first through
//! [`RunContext::cancel`] (see [`cancel`]).

pub mod cancel;
pub mod command;
pub mod config;
pub mod http;
mod log;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::types::RunTrigger;

pub use self::cancel::{CancelHandle, CancelSignal};
pub use self::log::LogPipeline;

/// Everything a pipeline is told about the run it executes.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    /// The ledger row's id; stable across the run, unique across runs (use it as an idempotency key).
    pub run_id: Uuid,
    /// The schedule's name.
    pub schedule: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The tick this run stands for (for manual runs: when it was asked for).
    pub scheduled_at: DateTime<Utc>,
    /// 1 for the first attempt, 2, 3, … for retries.
    pub attempt: i32,
    /// Why the run exists.
    pub trigger: RunTrigger,
    /// The schedule's parameters.
    pub params: Map<String, Value>,
    /// Set when the run is asked to stop gracefully (see [`cancel`]).
    pub cancel: CancelSignal,
}

/// A failed run: the message goes to the ledger's `error`, the optional
/// result (e.g. an exit code and output tail) to its `result`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PipelineError {
    /// What went wrong, for the ledger and the logs.
    pub message: String,
    /// Structured detail, stored as the run's `result`.
    pub result: Option<Value>,
}

impl PipelineError {
    /// A failure with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        PipelineError {
            message: message.into(),
            result: None,
        }
    }
}

/// What running a pipeline yields: an optional JSON result, or an error.
pub type PipelineOutcome = Result<Option<Value>, PipelineError>;

/// The future a pipeline returns. Dropping it cancels the run.
pub type PipelineFuture = Pin<Box<dyn Future<Output = PipelineOutcome> + Send>>;

/// Something that can execute a run.
pub trait Pipeline: Send + Sync {
    /// Starts executing `ctx`; completes when the run is done.
    fn run(&self, ctx: RunContext) -> PipelineFuture;
}

impl<F, Fut> Pipeline for F
where
    F: Fn(RunContext) -> Fut + Send + Sync,
    Fut: Future<Output = PipelineOutcome> + Send + 'static,
{
    fn run(&self, ctx: RunContext) -> PipelineFuture {
        Box::pin(self(ctx))
    }
}

/// Pipelines by name.
#[derive(Clone, Default)]
pub struct Registry {
    pipelines: BTreeMap<String, Arc<dyn Pipeline>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.pipelines.keys()).finish()
    }
}

/// Registering a pipeline failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is not a valid pipeline name.
    #[error("invalid pipeline name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The name is taken.
    #[error("pipeline {0:?} is registered twice")]
    Duplicate(String),
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pipeline under `name` (the charset of schedule names, ≤ 200 characters).
    pub fn register(
        &mut self,
        name: &str,
        pipeline: impl Pipeline + 'static,
    ) -> Result<&mut Self, RegistryError> {
        self.register_arc(name, Arc::new(pipeline))
    }

    /// Adds a shared pipeline under `name`.
    pub fn register_arc(
        &mut self,
        name: &str,
        pipeline: Arc<dyn Pipeline>,
    ) -> Result<&mut Self, RegistryError> {
        crate::schedule::validate_pipeline(name).map_err(|e| RegistryError::InvalidName {
            name: name.to_string(),
            reason: e.message,
        })?;
        if self.pipelines.contains_key(name) {
            return Err(RegistryError::Duplicate(name.to_string()));
        }
        self.pipelines.insert(name.to_string(), pipeline);
        Ok(self)
    }

    /// The pipeline registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Pipeline>> {
        self.pipelines.get(name).cloned()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.pipelines.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    /// Adds every pipeline of `other`; fails on the first name defined in both.
    pub fn merge(&mut self, other: Registry) -> Result<(), RegistryError> {
        for (name, p) in other.pipelines {
            self.register_arc(&name, p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RunContext {
        RunContext {
            run_id: Uuid::now_v7(),
            schedule: "s".into(),
            pipeline: "p".into(),
            scheduled_at: DateTime::UNIX_EPOCH,
            attempt: 1,
            trigger: RunTrigger::Schedule,
            params: Map::new(),
            cancel: CancelSignal::never(),
        }
    }

    #[tokio::test]
    async fn closures_are_pipelines() -> Result<(), RegistryError> {
        let mut r = Registry::new();
        r.register("echo.params", |c: RunContext| async move {
            Ok(Some(Value::String(c.schedule)))
        })?;
        let p = r
            .get("echo.params")
            .ok_or_else(|| RegistryError::Duplicate("missing".into()))?;
        assert_eq!(p.run(ctx()).await, Ok(Some(Value::String("s".into()))));
        assert!(matches!(
            r.register("echo.params", |_c: RunContext| async { Ok(None) }),
            Err(RegistryError::Duplicate(_))
        ));
        assert!(matches!(
            r.register("bad name", |_c: RunContext| async { Ok(None) }),
            Err(RegistryError::InvalidName { .. })
        ));
        Ok(())
    }
}
