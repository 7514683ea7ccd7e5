//! Engine settings, with their defaults and their validation in one place.

use std::time::Duration;

use crate::cluster::ClusterConfig;

/// How a replica runs. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Host or pod name recorded in `scheduler_nodes` (default: `$HOSTNAME`).
    pub node_name: String,
    /// Pooled database connections (default 8).
    pub pool_size: usize,
    /// Runs executing at once on this replica (default 64).
    pub max_concurrent_runs: usize,
    /// About how many (schedule, tick) pairs are claimed in one transaction
    /// (default 1000). A stripe's ticks are never split, so a chunk may
    /// exceed it by one stripe's.
    pub claim_batch_size: usize,
    /// Most claim transactions open at once (default 1; at most the pool
    /// size less one, so results and pickups still get a connection). The
    /// chunks of a batch are claimed one after another; above 1, the next
    /// starts as soon as the one before has written its rows and only waits
    /// for its tick (see `claimer`): thousands of ticks due at one instant
    /// start sooner, at some cost in sustained throughput (BENCHMARKS.md).
    pub claim_concurrency: usize,
    /// Full reload of the schedules, the safety net under NOTIFY (default 30 s).
    pub resync_interval: Duration,
    /// How often the replica records that it is alive (default 2 s).
    pub heartbeat_interval: Duration,
    /// A replica whose heartbeat is older than this is presumed dead: its
    /// share of ticks moves to the others and (issue: cluster) its running
    /// runs are reaped (default 10 s).
    pub node_lease: Duration,
    /// How long after a tick the replicas other than its preferred owner
    /// claim it, in case that owner is gone (default 1 s; see `engine::share`).
    pub handoff_delay: Duration,
    /// How often pending runs (run-now, retries) are looked for without a NOTIFY (default 1 s).
    pub pending_poll_interval: Duration,
    /// How long in-flight runs may finish after SIGTERM (default 30 s).
    pub shutdown_grace: Duration,
    /// Leader election and housekeeping.
    pub cluster: ClusterConfig,
    /// Test-only: pretend this replica's clock is off by this much, to show
    /// that claims follow the database clock (G4). Zero in production.
    pub test_clock_skew: chrono::Duration,
    /// How soon a tick of this replica's own share whose schedule another
    /// replica was claiming is asked for again (default 50 ms).
    pub claim_retry_delay: Duration,
    /// How long before its ticks fall due a batch starts its claim
    /// transaction (default 100 ms). The existence check and the advisory
    /// locks are done ahead; at the due instant only the INSERT is left,
    /// which is what keeps the fire lag to milliseconds.
    pub claim_lead: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_name: std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string()),
            pool_size: 8,
            max_concurrent_runs: 64,
            claim_batch_size: 1000,
            claim_concurrency: 1,
            resync_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(2),
            node_lease: Duration::from_secs(10),
            handoff_delay: Duration::from_secs(1),
            pending_poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            claim_retry_delay: Duration::from_millis(50),
            claim_lead: Duration::from_millis(100),
            cluster: ClusterConfig::default(),
            test_clock_skew: chrono::Duration::zero(),
        }
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    /// The setting's name (as a CLI flag, without dashes).
    pub setting: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl EngineConfig {
    /// Claim transactions open at once: `claim_concurrency`, leaving one
    /// pooled connection for everything else.
    pub fn claim_chunks_at_once(&self) -> usize {
        self.claim_concurrency
            .min(self.pool_size.saturating_sub(1))
            .max(1)
    }

    /// The idle-in-transaction timeout of a claim transaction: its longest
    /// wait between statements (the claim lead, or a 200 ms clock re-check)
    /// and a margin. A replica frozen mid-claim holds its stripes' locks no
    /// longer than this (`store::claims::LOCK`).
    pub fn claim_idle_timeout(&self) -> Duration {
        self.claim_lead.max(Duration::from_millis(200)) + Duration::from_millis(300)
    }

    /// Checks every setting; the engine refuses to start on the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting, reason: &str| {
            Err(ConfigError {
                setting,
                reason: reason.to_string(),
            })
        };
        if self.node_name.trim().is_empty() {
            return err("node-name", "must not be empty");
        }
        if self.pool_size < 2 {
            return err(
                "pool-size",
                "must be at least 2 (claims and completions run side by side)",
            );
        }
        if self.max_concurrent_runs == 0 {
            return err("max-concurrent-runs", "must be at least 1");
        }
        if !(1..=5000).contains(&self.claim_batch_size) {
            return err("claim-batch-size", "must be between 1 and 5000");
        }
        if self.claim_concurrency == 0 {
            return err("claim-concurrency", "must be at least 1");
        }
        if self.node_lease < self.heartbeat_interval * 2 {
            return err(
                "node-lease",
                "must be at least twice the heartbeat interval, or live replicas look dead",
            );
        }
        if self.claim_lead > crate::timing::MAX_CLAIM_LEAD {
            // Urgent results are written within the lead of the next tick
            // (see `timing`), and the claim transaction idles for the lead.
            return err("claim-lead", "must be at most 1s");
        }
        if self.handoff_delay > Duration::from_secs(60) {
            return err("handoff-delay", "must be at most 60s");
        }
        for (setting, d, min) in [
            (
                "resync-interval",
                self.resync_interval,
                Duration::from_secs(1),
            ),
            (
                "heartbeat-interval",
                self.heartbeat_interval,
                Duration::from_millis(100),
            ),
            (
                "pending-poll-interval",
                self.pending_poll_interval,
                Duration::from_millis(50),
            ),
            (
                "claim-retry-delay",
                self.claim_retry_delay,
                Duration::from_millis(10),
            ),
        ] {
            if d < min {
                return err(
                    setting,
                    &format!("must be at least {}", humantime::format_duration(min)),
                );
            }
        }
        self.cluster.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        assert_eq!(EngineConfig::default().validate(), Ok(()));
        let bad = EngineConfig {
            pool_size: 1,
            ..Default::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.setting), Err("pool-size"));
        let bad = EngineConfig {
            heartbeat_interval: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().map_err(|e| e.setting),
            Err("heartbeat-interval")
        );
        let bad = EngineConfig {
            claim_concurrency: 0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().map_err(|e| e.setting),
            Err("claim-concurrency")
        );
    }

    #[test]
    fn claims_leave_one_pooled_connection_for_the_rest() {
        let c = |claim_concurrency, pool_size| {
            EngineConfig {
                claim_concurrency,
                pool_size,
                ..Default::default()
            }
            .claim_chunks_at_once()
        };
        assert_eq!(c(1, 8), 1);
        assert_eq!(c(4, 8), 4);
        assert_eq!(c(8, 8), 7);
        assert_eq!(c(4, 2), 1);
    }
}
