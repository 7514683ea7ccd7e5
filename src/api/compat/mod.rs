//! The original service's `/scheduler/…` API, served beside `/v1` so its
//! clients can switch by changing a host name (issue 21; the seed's
//! `spine/api/scheduler.py`).
//!
//! A translation layer only: the routes read the original's request
//! shapes, call the same functions as the `/v1` handlers (validation,
//! store, ownership and concurrency rules, log lines), and answer with the
//! original's response models. Errors carry FastAPI's `{"detail": "…"}`
//! shape, in the original's words where it had words ([`detail`]).
//!
//! Here: the route list's parts. `schedules.rs`: the original's six
//! operations; `runs.rs`: its `JobRun` records; `input.rs`: the
//! `ScheduleCreate` body; `types.rs`: the response models; `detail.rs`:
//! the error shape and its declared responses.

mod detail;
pub(super) mod input;
pub(super) mod runs;
pub(super) mod schedules;
mod types;

pub(super) use self::detail::detail_shape;

/// The tag of these routes in the OpenAPI document.
pub const TAG: &str = "compat";

/// The path prefix of these routes.
pub const PREFIX: &str = "/scheduler";
