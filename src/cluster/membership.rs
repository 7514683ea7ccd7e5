//! Liveness from the database session, and the membership it gives.
//!
//! Each replica holds a session-level advisory lock keyed by its liveness
//! key on a dedicated session (never a pooled one, which could be recycled
//! and drop the lock; through `--leader-database-url` where a
//! transaction-mode pooler sits in front). A crashed replica's session ends
//! at once and the server frees the lock, so every replica, reading the
//! held locks every `liveness_interval` on that same session
//! (`store::membership::read`, which doubles as the session's ping), learns
//! of it within one interval: shares move before the next tick, followers
//! bid at once, and the leader reaps the dead replica's runs.
//!
//! Heartbeats stay for what they are good at: metadata, and replicas
//! without a liveness session (lease mode, or an older version), which are
//! judged by their heartbeat's age as before.
//!
//! A live replica whose liveness session is lost — recycled by a proxy,
//! killed with `pg_terminate_backend`, cut off by the network while the
//! pool still works — must not be declared dead while it still acts. So
//! the moment it notices (the connection closes, or a read takes longer
//! than `liveness_timeout`, which `ClusterConfig::validate` keeps shorter
//! than the server's own timeouts on a silent session), it switches itself
//! to lease mode through the pool, then opens a new session with a new
//! key. The leader reaps a keyed replica only after it has stayed gone for
//! `timing::REAP_CONFIRM`, which covers the switch.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::context::Context;
use super::Leadership;
use crate::engine::outage::Backoff;
use crate::store::membership::{self, View};
use crate::store::session::{self, Session};
use crate::store::StoreError;

/// `application_name` of the liveness session (find it in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "spine-scheduler liveness";

/// This replica's latest view of the cluster.
#[derive(Debug)]
pub struct Membership {
    known: RwLock<Known>,
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Known {
    view: View,
    read_at: Option<Instant>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            known: RwLock::new(Known::default()),
            changes: watch::Sender::new(0),
        }
    }
}

impl Membership {
    fn known(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        // Whole-value replacements only: a poisoned lock still holds a view.
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The replicas that share the ticks (alive, `active`), sorted by id.
    pub fn members(&self) -> Vec<Uuid> {
        self.known().view.members.clone()
    }

    /// Replicas recorded `active`/`draining` whose liveness is gone: their
    /// `running` runs no longer count against `max_instances`.
    pub fn gone(&self) -> Vec<Uuid> {
        self.known().view.gone.clone()
    }

    /// Whether the view was read within `within`.
    pub fn is_fresh(&self, within: Duration) -> bool {
        self.known().read_at.is_some_and(|t| t.elapsed() <= within)
    }

    /// Changes whenever the members or the gone replicas change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Takes a new read; returns the members that vanished from the last
    /// one (empty when nothing changed).
    pub fn update(&self, view: View) -> Vec<Uuid> {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.read_at = Some(Instant::now());
        if known.view == view {
            return Vec::new();
        }
        let vanished = known
            .view
            .members
            .iter()
            .filter(|id| !view.members.contains(id))
            .copied()
            .collect();
        known.view = view;
        drop(known);
        self.changes.send_modify(|g| *g += 1);
        vanished
    }
}

/// Why [`hold`] returned.
enum Ended {
    Shutdown,
    Lost(String),
}

/// Holds the liveness lock and reads the membership until `stop`; on the
/// way out the session closes and the server frees the lock. `registered`
/// is told the first time the lock is held and the view read.
pub(crate) async fn run(
    ctx: Arc<Context>,
    mut registered: Option<tokio::sync::oneshot::Sender<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &ctx.config;
    let url = cfg.session_url(&ctx.database_url).to_string();
    let mut backoff = Backoff::default();
    let mut failing_since: Option<Instant> = None;
    loop {
        let established = tokio::select! {
            _ = stop.changed() => return,
            r = establish(&ctx, &url) => r,
        };
        let (mut session, key) = match established {
            Ok(s) => s,
            Err(e) => {
                // Once at warn, then quietly until it works again.
                if failing_since.is_none() {
                    tracing::warn!(error = %e,
                        "cannot open the liveness session; this replica is judged by its heartbeat meanwhile");
                    failing_since = Some(Instant::now());
                } else {
                    tracing::debug!(error = %e, "liveness session still down");
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        backoff.reset();
        if let Some(since) = failing_since.take() {
            tracing::info!(
                key,
                down_ms = since.elapsed().as_millis() as u64,
                "liveness session back"
            );
        } else {
            tracing::debug!(key, backend_pid = session.backend_pid, "liveness lock held");
        }
        match hold(&ctx, &mut session, &mut registered, &mut stop).await {
            Ended::Shutdown => return,
            Ended::Lost(why) => {
                drop(session);
                tracing::warn!(key, reason = %why,
                    "liveness session lost; switching to heartbeat lease mode and reconnecting");
                failing_since = Some(Instant::now());
                to_lease_mode(&ctx, key).await;
            }
        }
    }
}

/// Opens the session, takes a fresh key's lock, records the key.
async fn establish(ctx: &Context, url: &str) -> Result<(Session, i32), StoreError> {
    let cfg = &ctx.config;
    let session = session::open(url, &cfg.liveness_session, APPLICATION_NAME).await?;
    // A key another session holds (a replica that drew the same one, or our
    // own previous session the server has not dropped yet): draw again.
    for _ in 0..16 {
        let key = random_key();
        if membership::try_lock(&session.client, key).await? {
            membership::register(
                &session.client,
                ctx.node_id,
                &ctx.node_name,
                crate::VERSION,
                ctx.node_state(),
                key,
            )
            .await?;
            return Ok((session, key));
        }
    }
    Err(StoreError::Pool(
        "no free liveness key after 16 draws".to_string(),
    ))
}

/// A positive 31-bit key from a fresh UUIDv7's random bits.
fn random_key() -> i32 {
    let bytes = Uuid::now_v7().into_bytes();
    let n = i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) & i32::MAX;
    n.max(1)
}

/// Reads the membership on the session every interval until shutdown or
/// until the session fails (closed, an error, or a read slower than the
/// liveness timeout).
async fn hold(
    ctx: &Context,
    session: &mut Session,
    registered: &mut Option<tokio::sync::oneshot::Sender<()>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let cfg = &ctx.config;
    // Prepared once per session: the read repeats ten times a second.
    let statement = match membership::prepare(&session.client).await {
        Ok(st) => st,
        Err(e) => return Ended::Lost(e.to_string()),
    };
    loop {
        let sent = Instant::now();
        let read = tokio::time::timeout(
            cfg.liveness_timeout,
            membership::read_prepared(&session.client, &statement, ctx.node_lease),
        )
        .await;
        match read {
            Ok(Ok(view)) => publish(&ctx.membership, &ctx.leadership, view),
            Ok(Err(e)) => return Ended::Lost(e.to_string()),
            Err(_) => {
                return Ended::Lost(format!(
                    "a membership read took longer than {}",
                    humantime::format_duration(cfg.liveness_timeout)
                ))
            }
        }
        if let Some(tx) = registered.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = stop.changed() => return Ended::Shutdown,
            _ = &mut session.connection => return Ended::Lost("the session closed".into()),
            _ = tokio::time::sleep_until(sent + cfg.liveness_interval) => {}
        }
    }
}

/// Takes a membership read: shares follow it, and a member that vanished
/// wakes the elector (it may have been the leader).
pub(crate) fn publish(membership: &Membership, leadership: &Leadership, view: View) {
    let (members, gone) = (view.members.len(), view.gone.len());
    let vanished = membership.update(view);
    if !vanished.is_empty() {
        tracing::info!(?vanished, members, gone, "replicas left the membership");
        leadership.wake.notify_one();
    }
}

/// The liveness session is lost but this process lives: say so through the
/// pool before the server frees the old lock (see the module docs).
async fn to_lease_mode(ctx: &Context, key: i32) {
    let write = async {
        let client = ctx.pool.get().await?;
        membership::lease_mode(&**client, ctx.node_id, key).await
    };
    match tokio::time::timeout(Duration::from_secs(2), write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not switch to lease mode")
        }
        Err(_) => {
            tracing::warn!("could not switch to lease mode in time")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_positive() {
        for _ in 0..1000 {
            assert!(random_key() > 0);
        }
    }

    #[test]
    fn an_update_reports_vanished_members_and_bumps_on_change_only() {
        let m = Membership::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let rx = m.subscribe();
        let view = |members: Vec<Uuid>, gone: Vec<Uuid>| View { members, gone };
        assert!(m.update(view(vec![a, b], vec![])).is_empty());
        assert_eq!(*rx.borrow(), 1);
        assert!(m.update(view(vec![a, b], vec![])).is_empty());
        assert_eq!(*rx.borrow(), 1, "same view, no change");
        assert_eq!(m.update(view(vec![a], vec![b])), vec![b]);
        assert_eq!(*rx.borrow(), 2);
        assert_eq!(m.gone(), vec![b]);
        assert!(m.is_fresh(Duration::from_secs(1)));
    }
}
