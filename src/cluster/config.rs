//! Leader election and housekeeping settings, defaults and validation.

use std::time::Duration;

use crate::engine::ConfigError;
use crate::store::leader::SessionSettings;

/// How replicas elect a leader and what the leader does.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Connection URL for the leader's session when the main URL goes
    /// through a transaction-mode pooler (session locks need a direct
    /// connection). Default: the main URL.
    pub leader_database_url: Option<String>,
    /// How often a follower bids for leadership (default 1 s). A resigning
    /// leader's NOTIFY makes followers bid at once.
    pub leader_retry_interval: Duration,
    /// How often the leader checks its session (default 1 s).
    pub leader_ping_interval: Duration,
    /// How long a ping may take before the leader steps down (default 2 s).
    pub leader_ping_timeout: Duration,
    /// TCP and idle settings of the leader's session; the server must drop a
    /// vanished leader later than the leader itself stops acting.
    pub session: SessionSettings,
    /// How often each replica reads the membership on its liveness session
    /// (default 100 ms): a crashed replica is noticed within this.
    pub liveness_interval: Duration,
    /// How long a membership read may take before the replica counts its
    /// liveness session as lost and switches to lease mode (default 1 s).
    pub liveness_timeout: Duration,
    /// TCP and idle settings of the liveness session: the server drops a
    /// frozen or cut-off replica's session, and so its membership, after
    /// `server_gives_up_after()` (default 2 s).
    pub liveness_session: SessionSettings,
    /// How often the leader runs its duties (default 2 s).
    pub housekeeping_interval: Duration,
    /// Finished runs older than this are deleted (default 30 days).
    pub retention: Duration,
    /// Keep at most this many finished runs per schedule (default: no limit).
    pub retention_keep_last: Option<i64>,
    /// The span of `scheduled_at` each ledger partition covers (default 1
    /// day): whole hours, from 1 h, dividing a day or a whole number of
    /// days up to 31 (`store::partitions`).
    pub ledger_partition_interval: Duration,
    /// Replicas that left or died are forgotten after this (default 1 h).
    pub node_retention: Duration,
    /// A replica whose clock is further than this from the database's does
    /// not take leadership (default 5 s).
    pub max_clock_offset: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            leader_database_url: None,
            leader_retry_interval: Duration::from_secs(1),
            leader_ping_interval: Duration::from_secs(1),
            leader_ping_timeout: Duration::from_secs(2),
            session: SessionSettings {
                keepalive_idle: Duration::from_secs(2),
                keepalive_interval: Duration::from_secs(1),
                keepalive_count: 3,
                tcp_user_timeout: Duration::from_secs(5),
                idle_session_timeout: Duration::from_secs(5),
            },
            liveness_interval: Duration::from_millis(100),
            liveness_timeout: Duration::from_secs(1),
            liveness_session: SessionSettings {
                keepalive_idle: Duration::from_secs(1),
                keepalive_interval: Duration::from_secs(1),
                keepalive_count: 2,
                tcp_user_timeout: Duration::from_secs(2),
                idle_session_timeout: Duration::from_secs(2),
            },
            housekeeping_interval: Duration::from_secs(2),
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_keep_last: None,
            ledger_partition_interval: Duration::from_secs(86_400),
            node_retention: Duration::from_secs(3600),
            max_clock_offset: Duration::from_secs(5),
        }
    }
}

impl ClusterConfig {
    /// Where the dedicated sessions (liveness, leader election) connect:
    /// `leader_database_url`, else the main URL.
    pub fn session_url<'a>(&'a self, main: &'a str) -> &'a str {
        self.leader_database_url.as_deref().unwrap_or(main)
    }

    /// Checks the settings, and that a vanished leader stops acting before
    /// the server can hand its lock to someone else.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting, reason: String| Err(ConfigError { setting, reason });
        if self.leader_ping_interval < Duration::from_millis(100) {
            return err("leader-ping-interval", "must be at least 100ms".into());
        }
        if self.leader_retry_interval < Duration::from_millis(100) {
            return err("leader-retry-interval", "must be at least 100ms".into());
        }
        let acts_until = self.leader_ping_interval + self.leader_ping_timeout;
        if self.session.idle_session_timeout <= acts_until {
            return err(
                "leader-ping-timeout",
                format!(
                    "ping interval + timeout ({}) must be shorter than the server's idle session timeout ({}), \
                     or two replicas could act as leader at once",
                    humantime::format_duration(acts_until),
                    humantime::format_duration(self.session.idle_session_timeout)
                ),
            );
        }
        if self.liveness_interval < Duration::from_millis(20) {
            return err("liveness-interval", "must be at least 20ms".into());
        }
        // A replica whose liveness session went silent must notice (and
        // switch to lease mode) before the server frees its lock, or it is
        // declared dead while it still acts.
        let notices_within = self.liveness_interval + self.liveness_timeout;
        let server = self.liveness_session.server_gives_up_after();
        if notices_within >= server {
            return err(
                "liveness-timeout",
                format!(
                    "liveness interval + timeout ({}) must be shorter than the time the server keeps a silent liveness session ({})",
                    humantime::format_duration(notices_within),
                    humantime::format_duration(server)
                ),
            );
        }
        if self.housekeeping_interval < Duration::from_millis(100) {
            return err("housekeeping-interval", "must be at least 100ms".into());
        }
        if self.retention < Duration::from_secs(60) {
            return err("retention", "must be at least 1m".into());
        }
        if self.retention_keep_last.is_some_and(|n| n < 1) {
            return err("retention-keep-last", "must be at least 1".into());
        }
        if let Some(reason) = partition_interval_problem(self.ledger_partition_interval) {
            return err("ledger-partition-interval", reason.into());
        }
        Ok(())
    }
}

/// Why `interval` cannot be the ledger's partition interval, if it cannot:
/// partitions sit on a grid from the Unix epoch, so a day must hold a whole
/// number of them (midnight UTC is always a bound) or they must be whole days.
fn partition_interval_problem(interval: Duration) -> Option<&'static str> {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    let secs = interval.as_secs();
    if interval.subsec_nanos() != 0 || !secs.is_multiple_of(HOUR) || secs == 0 {
        return Some("must be a whole number of hours, at least 1h");
    }
    if secs > 31 * DAY {
        return Some("must be at most 31days");
    }
    if !(DAY.is_multiple_of(secs) || secs.is_multiple_of(DAY)) {
        return Some("must divide a day (1h, 2h, 3h, 4h, 6h, 8h, 12h) or be whole days");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unsafe_timings_refused() {
        assert_eq!(ClusterConfig::default().validate(), Ok(()));
        // A leader that could keep acting after the server freed its lock.
        let unsafe_ping = ClusterConfig {
            leader_ping_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        assert_eq!(
            unsafe_ping.validate().map_err(|e| e.setting),
            Err("leader-ping-timeout")
        );
        let slow_liveness = ClusterConfig {
            liveness_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        assert_eq!(
            slow_liveness.validate().map_err(|e| e.setting),
            Err("liveness-timeout")
        );
        let bad_keep = ClusterConfig {
            retention_keep_last: Some(0),
            ..Default::default()
        };
        assert!(bad_keep.validate().is_err());
    }

    #[test]
    fn partition_intervals_divide_a_day_or_are_whole_days() {
        for ok in [1, 2, 3, 4, 6, 8, 12, 24, 48, 7 * 24, 31 * 24] {
            assert_eq!(
                partition_interval_problem(Duration::from_secs(ok * 3600)),
                None,
                "{ok}h"
            );
        }
        for bad in [0, 1800, 5 * 3600, 36 * 3600, 32 * 86_400] {
            let cfg = ClusterConfig {
                ledger_partition_interval: Duration::from_secs(bad),
                ..Default::default()
            };
            assert_eq!(
                cfg.validate().map_err(|e| e.setting),
                Err("ledger-partition-interval"),
                "{bad}s"
            );
        }
    }
}
