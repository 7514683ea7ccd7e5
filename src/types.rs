//! The ledger's and the cluster's vocabulary: what a run's status and
//! trigger are, what state a replica is in. Plain types (after River's
//! `rivertype`), so that the engine, metrics and pipelines name them
//! without importing the SQL layer; `store` reads and writes them as text.

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database and shown in the API.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where a run is in its life.
    RunStatus {
        /// Created, waiting to start (a manual run, or a retry before its backoff ends).
        Pending = "pending",
        /// Claimed by a replica and executing.
        Running = "running",
        /// The pipeline succeeded.
        Completed = "completed",
        /// The pipeline failed or timed out.
        Failed = "failed",
        /// Not run: `max_instances` runs had started and not finished (the
        /// row names the oldest in `overlapped_run_id`).
        Skipped = "skipped",
        /// Not run: it could not start within the misfire grace.
        Missed = "missed",
        /// Its replica died while running it.
        Abandoned = "abandoned",
        /// Stopped on request: by a newer tick (`cancel_other`,
        /// `terminate_other`; the request names its run) or through the API.
        Cancelled = "cancelled",
    }
}

string_enum! {
    /// Why a run exists.
    RunTrigger {
        /// A due tick of the schedule.
        Schedule = "schedule",
        /// Asked for through the API or CLI.
        Manual = "manual",
        /// A retry of a failed or abandoned attempt.
        Retry = "retry",
        /// A past tick run by a backfill (`POST /v1/schedules/{name}/backfill`).
        Backfill = "backfill",
    }
}

impl RunStatus {
    /// Whether the run has reached its final state.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

string_enum! {
    /// A replica's state in `scheduler_nodes`.
    NodeState {
        /// Claiming its share of the ticks.
        Active = "active",
        /// Shutting down: no new claims, in-flight runs finishing.
        Draining = "draining",
        /// Gone cleanly.
        Left = "left",
        /// Declared dead by the leader (its liveness lock or its heartbeat
        /// lease is gone); its next heartbeat, if it lives, makes it active.
        Dead = "dead",
    }
}

string_enum! {
    /// Which ticks of its range a backfill runs.
    BackfillMode {
        /// Only ticks with no ledger row at all (whatever its trigger or status).
        Missing = "missing",
        /// Every tick, also those that already have rows (each gets one more attempt).
        All = "all",
    }
}

string_enum! {
    /// Where a backfill is in its life.
    BackfillState {
        /// Accepted; no replica has worked on it yet.
        Queued = "queued",
        /// Creating its runs, one step at a time.
        Running = "running",
        /// Every tick of its range was dealt with and every run it created has settled.
        Done = "done",
        /// Stopped through the API: no more runs are created (those created finish).
        Cancelled = "cancelled",
        /// Stopped by a problem (the schedule was deleted, or its trigger changed).
        Failed = "failed",
    }
}

impl BackfillState {
    /// Whether a replica still works on it.
    pub fn is_active(self) -> bool {
        matches!(self, BackfillState::Queued | BackfillState::Running)
    }
}

string_enum! {
    /// What a change to a schedule did (a row of its history).
    ChangeAction {
        /// Created (through the API or by an apply).
        Create = "create",
        /// Its definition changed (or an apply adopted it).
        Update = "update",
        /// Deleted.
        Delete = "delete",
        /// Paused (with the pause's note, if any).
        Pause = "pause",
        /// Resumed.
        Resume = "resume",
        /// Taken over from its schedules file by an API write (the row also
        /// names the definition keys that changed with it).
        TakeOver = "take_over",
    }
}

string_enum! {
    /// What kind of actor made a change.
    ActorKind {
        /// An API token, by its name.
        Token = "token",
        /// A schedules file's apply, by its source name.
        File = "file",
        /// Nobody known: the API without authentication (`--insecure-no-auth`).
        Anonymous = "anonymous",
    }
}

/// Who made a change to a schedule: what its history row names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token, file or nobody known.
    pub kind: ActorKind,
    /// The token's name or the file's source name (`None` for anonymous).
    pub name: Option<String>,
}

impl Actor {
    /// An API token, by its name.
    pub fn token(name: impl Into<String>) -> Actor {
        Actor {
            kind: ActorKind::Token,
            name: Some(name.into()),
        }
    }

    /// A schedules file's apply, by its source name.
    pub fn file(source: impl Into<String>) -> Actor {
        Actor {
            kind: ActorKind::File,
            name: Some(source.into()),
        }
    }

    /// The API without authentication.
    pub fn anonymous() -> Actor {
        Actor {
            kind: ActorKind::Anonymous,
            name: None,
        }
    }
}
