//! Cancel requests for runs this replica executes. A request is written on
//! the run's ledger row (`cancel_requested_at`, `cancel_mode`,
//! `cancel_requested_by`: by a newer tick's claim under `cancel_other` /
//! `terminate_other`, or by `POST /v1/runs/{id}/cancel`) and announced with
//! `NOTIFY spine_runs 'cancel:<run_id>:<mode>:<by>'`. Every replica hears
//! it (`sync`); the one running the run stops it (`executor`). A replica
//! that was not listening reads the requests for its own runs when it
//! listens again, so none is lost with a notification.

use uuid::Uuid;

/// How a run is to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// Tell the pipeline; a command gets SIGTERM, then SIGKILL after
    /// `pipeline::command::KILL_GRACE`.
    Graceful,
    /// Drop the pipeline at once (a command's process group gets SIGKILL).
    Immediate,
}

impl CancelMode {
    /// As stored in `cancel_mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelMode::Graceful => "graceful",
            CancelMode::Immediate => "immediate",
        }
    }

    /// From `cancel_mode`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "graceful" => Some(CancelMode::Graceful),
            "immediate" => Some(CancelMode::Immediate),
            _ => None,
        }
    }
}

/// A request to stop one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelRequest {
    /// The run to stop.
    pub run_id: Uuid,
    /// How.
    pub mode: CancelMode,
    /// The run of the tick that asked (overlap policy), or `None` (the API).
    pub by: Option<Uuid>,
}

/// The prefix of a cancel notification's payload on `spine_runs` (other
/// payloads there are run ids of new pending runs).
pub const NOTICE_PREFIX: &str = "cancel:";

impl CancelRequest {
    /// Reads `cancel:<run_id>:<mode>:<by or empty>`; `None` for any other
    /// payload.
    pub fn from_notice(payload: &str) -> Option<Self> {
        let mut parts = payload.strip_prefix(NOTICE_PREFIX)?.split(':');
        let run_id = parts.next()?.parse().ok()?;
        let mode = CancelMode::parse(parts.next()?)?;
        let by = parts.next().and_then(|b| b.parse().ok());
        Some(CancelRequest { run_id, mode, by })
    }

    /// The ledger's `error` for the run it stopped.
    pub fn reason(&self) -> String {
        let who = match self.by {
            Some(run) => format!("by run {run} (a newer tick, overlap policy)"),
            None => "through the API".to_string(),
        };
        format!("cancelled {who}, {}", self.mode.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_read_back() {
        let run = Uuid::now_v7();
        let by = Uuid::now_v7();
        assert_eq!(
            CancelRequest::from_notice(&format!("cancel:{run}:graceful:{by}")),
            Some(CancelRequest {
                run_id: run,
                mode: CancelMode::Graceful,
                by: Some(by)
            })
        );
        let api = CancelRequest::from_notice(&format!("cancel:{run}:immediate:"));
        assert_eq!(
            api.map(|r| (r.mode, r.by)),
            Some((CancelMode::Immediate, None))
        );
        assert_eq!(CancelRequest::from_notice(&run.to_string()), None);
        assert_eq!(CancelRequest::from_notice("cancel:nope:graceful:"), None);
        assert!(api.is_some_and(|r| r.reason().contains("through the API")));
    }
}
