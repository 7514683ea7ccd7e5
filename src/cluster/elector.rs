//! Leader election: small gain / keep / resign loops (after River's elector).
//!
//! * gain: a follower bids with `pg_try_advisory_lock` every retry interval,
//!   at once when a resigning leader NOTIFYs, and at once when a member
//!   vanishes from the membership (`membership`: a crashed leader's session,
//!   and with it its liveness lock, is gone within one membership read);
//! * keep: the leader pings its session every ping interval and steps down
//!   at the first error, timeout or change of backend (a pooler);
//! * resign: on shutdown the leader unlocks and NOTIFYs, so a follower takes
//!   over in milliseconds rather than a retry period.
//!
//! [`Leadership::is_leader`] is only true while the last successful ping is
//! recent (monotonic clock): a leader frozen by SIGSTOP wakes up *not*
//! leading, before it can act, and the server has meanwhile ended its
//! silent session (`idle_session_timeout`) and released the lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::context::Context;
use crate::engine::outage::Backoff;
use crate::store::leader::{self, LeaderSession};

/// This replica's view of its own leadership.
#[derive(Debug, Default)]
pub struct Leadership {
    leading: AtomicBool,
    valid_until: Mutex<Option<Instant>>,
    changes: AtomicU64,
    /// Woken when a member vanishes from the membership: bid now. (A
    /// resigning leader's NOTIFY reaches the election session itself.)
    pub wake: Notify,
    /// Notified when this replica becomes leader: its duties start at once.
    pub gained: Notify,
}

impl Leadership {
    /// Whether this replica leads, as of a recent successful ping.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
            && self
                .valid_until
                .lock()
                .map(|v| v.is_some_and(|t| Instant::now() < t))
                .unwrap_or(false)
    }

    /// How many times leadership was gained or lost here.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn extend(&self, until: Instant) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = Some(until);
        }
    }

    fn set(&self, leading: bool) {
        if self.leading.swap(leading, Ordering::AcqRel) != leading {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        if !leading {
            if let Ok(mut v) = self.valid_until.lock() {
                *v = None;
            }
        }
    }
}

enum Ended {
    Shutdown,
    Lost(String),
}

/// Runs until shutdown; resigns on the way out.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let cfg = &ctx.config;
    let url = cfg.session_url(&ctx.database_url).to_string();
    let node = ctx.node_id;
    let mut session: Option<LeaderSession> = None;
    let mut first = true;
    // While the database does not answer, bids back off beyond the retry
    // interval (see `engine::outage`).
    let mut backoff = Backoff::default();
    let mut failing = false;
    loop {
        if !first {
            let wait = if failing {
                backoff.next_delay().max(cfg.leader_retry_interval)
            } else {
                backoff.reset();
                cfg.leader_retry_interval
            };
            // A resigning leader NOTIFYs the election sessions; a vanished
            // member (a crashed leader, maybe) wakes us through `wake`.
            let resigned = async {
                match session.as_mut() {
                    Some(s) => s.notices.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
                Some(_) = resigned => {
                    tracing::debug!("leader resigned; bidding now");
                }
                _ = ctx.leadership.wake.notified() => {
                    tracing::debug!("a member vanished; bidding now");
                }
            }
        }
        first = false;
        // Signed as everywhere else: database clock minus this replica's.
        let offset = ctx.clock.offset();
        if ctx.clock.is_calibrated()
            && offset.abs().to_std().unwrap_or(Duration::MAX) > cfg.max_clock_offset
        {
            tracing::warn!(offset_ms = offset.num_milliseconds(),
                max = ?cfg.max_clock_offset, "clock too far from the database's; not bidding for leadership");
            continue;
        }
        let s = match session.take() {
            Some(s) if !s.connection.is_finished() => s,
            _ => match open_listening(&url, &cfg.session).await {
                Ok(s) => s,
                Err(e) => {
                    failing = true;
                    tracing::debug!(error = %e, "cannot open the leader election session");
                    continue;
                }
            },
        };
        match leader::try_acquire(&s).await {
            Ok(true) => failing = false,
            Ok(false) => {
                failing = false;
                session = Some(s);
                continue;
            }
            Err(e) => {
                failing = true;
                tracing::debug!(error = %e, "leader bid failed");
                continue;
            }
        }
        // Session locks need one server session; a transaction-mode pooler
        // hands statements to different backends and would elect many leaders.
        match leader::ping(&s).await {
            Ok(pid) if pid == s.backend_pid => {}
            Ok(_) => {
                tracing::error!("the database connection goes through a transaction-mode pooler: session locks cannot elect a leader; \
                     point --leader-database-url at PostgreSQL directly");
                let _ = leader::resign(&s, node).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
            Err(_) => continue,
        }
        ctx.leadership
            .extend(Instant::now() + cfg.leader_ping_interval + cfg.leader_ping_timeout);
        ctx.leadership.set(true);
        ctx.metrics.set_leader(true);
        if let Err(e) = leader::record_leader(&s, node).await {
            tracing::warn!(error = %e, "could not record leadership");
        }
        tracing::info!(node_name = %ctx.node_name, "became leader");
        ctx.leadership.gained.notify_one();
        match keep(&ctx, &s, &mut shutdown).await {
            Ended::Shutdown => {
                ctx.leadership.set(false);
                ctx.metrics.set_leader(false);
                // Bounded: with the database away, the lock goes with the
                // session when the process exits.
                match tokio::time::timeout(Duration::from_secs(1), leader::resign(&s, node)).await {
                    Ok(Ok(())) => tracing::info!("resigned leadership"),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "resigning failed; the lock goes with the session")
                    }
                    Err(_) => {
                        tracing::warn!("resigning timed out; the lock goes with the session")
                    }
                }
                return;
            }
            Ended::Lost(why) => {
                ctx.leadership.set(false);
                ctx.metrics.set_leader(false);
                tracing::warn!(reason = %why, "stepped down as leader");
                // Dropping the session closes it; the server frees the lock.
                drop(s);
            }
        }
    }
}

/// Opens the election session and listens on it for resignations.
async fn open_listening(
    url: &str,
    settings: &leader::SessionSettings,
) -> Result<LeaderSession, crate::store::StoreError> {
    let s = leader::open(url, settings).await?;
    leader::listen_for_resignations(&s).await?;
    Ok(s)
}

async fn keep(ctx: &Context, s: &LeaderSession, shutdown: &mut watch::Receiver<bool>) -> Ended {
    let cfg = &ctx.config;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ended::Shutdown,
            _ = tokio::time::sleep(cfg.leader_ping_interval) => {}
        }
        if s.connection.is_finished() {
            return Ended::Lost("the leader session closed".into());
        }
        let sent = Instant::now();
        match tokio::time::timeout(cfg.leader_ping_timeout, leader::ping(s)).await {
            Ok(Ok(pid)) if pid == s.backend_pid => {
                ctx.leadership
                    .extend(sent + cfg.leader_ping_interval + cfg.leader_ping_timeout);
            }
            Ok(Ok(pid)) => {
                return Ended::Lost(format!(
                    "backend changed from {} to {pid} (a transaction-mode pooler?)",
                    s.backend_pid
                ))
            }
            Ok(Err(e)) => return Ended::Lost(format!("ping failed: {e}")),
            Err(_) => {
                return Ended::Lost(format!(
                    "ping took longer than {}",
                    humantime::format_duration(cfg.leader_ping_timeout)
                ))
            }
        }
    }
}
