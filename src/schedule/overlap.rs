//! What a tick does when its schedule already has `max_instances` runs
//! unfinished across the cluster: the overlap policy. The names and
//! meanings are Temporal Schedules' (`ScheduleOverlapPolicy`), with
//! Kubernetes CronJob's `concurrencyPolicy` as the common subset
//! (Forbid = `skip`, Allow = `allow_all`, Replace = `cancel_other`).
//!
//! | policy | the new tick, when the limit is reached |
//! |---|---|
//! | `skip` (default) | recorded `skipped`, naming the run it overlapped |
//! | `buffer_one` | waits, and starts when the newest unfinished run ends; if a tick already waits, recorded `skipped` |
//! | `buffer_all` | waits its turn behind every unfinished run (FIFO) |
//! | `allow_all` | starts at once: `max_instances` is not a limit |
//! | `cancel_other` | the unfinished runs are cancelled (pipelines told; a command gets SIGTERM, then SIGKILL after its kill grace) and the new tick starts when they have ended |
//! | `terminate_other` | the same, but the running runs are killed at once |
//!
//! How it combines with `max_instances`: the limit is the number of runs
//! that may be unfinished at once (N); the policy says what the tick that
//! would be N + 1st does. A waiting tick still honours its misfire grace: if
//! it cannot start within it, it is recorded `missed`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ValidationError;

/// The overlap policy of a schedule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Record the new tick `skipped`.
    #[default]
    Skip,
    /// At most one tick waits for the running ones.
    BufferOne,
    /// Every tick waits its turn.
    BufferAll,
    /// No limit: every tick starts.
    AllowAll,
    /// Cancel the unfinished runs gracefully, then start.
    CancelOther,
    /// Kill the unfinished runs, then start.
    TerminateOther,
}

impl OverlapPolicy {
    /// Every policy, in the order messages list them.
    pub const ALL: [OverlapPolicy; 6] = [
        OverlapPolicy::Skip,
        OverlapPolicy::BufferOne,
        OverlapPolicy::BufferAll,
        OverlapPolicy::AllowAll,
        OverlapPolicy::CancelOther,
        OverlapPolicy::TerminateOther,
    ];

    /// As written in files, the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::BufferOne => "buffer_one",
            OverlapPolicy::BufferAll => "buffer_all",
            OverlapPolicy::AllowAll => "allow_all",
            OverlapPolicy::CancelOther => "cancel_other",
            OverlapPolicy::TerminateOther => "terminate_other",
        }
    }

    /// Reads a policy; the error names the field and lists the choices.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
                ValidationError::new(
                    "overlap_policy",
                    format!("{s:?} is not a policy; expected one of: {}", all.join(", ")),
                )
            })
    }

    /// Whether the unfinished runs are cancelled for the new tick.
    pub fn cancels(self) -> bool {
        matches!(
            self,
            OverlapPolicy::CancelOther | OverlapPolicy::TerminateOther
        )
    }
}

impl std::fmt::Display for OverlapPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_reads_back_and_unknown_ones_list_the_choices() {
        for p in OverlapPolicy::ALL {
            assert_eq!(OverlapPolicy::parse(p.as_str()), Ok(p));
            assert_eq!(
                serde_json::to_value(p).expect("json"),
                serde_json::Value::String(p.as_str().into())
            );
        }
        let e = OverlapPolicy::parse("replace").expect_err("unknown");
        assert_eq!(e.field, "overlap_policy");
        assert!(e.message.contains("buffer_one"), "{}", e.message);
        assert_eq!(OverlapPolicy::default(), OverlapPolicy::Skip);
    }
}
