//! Keeps every replica's view of the schedules current (G6): LISTEN for
//! changes announced by the table's trigger, re-read the changed row, and
//! reload everything periodically and after every reconnect as the safety net.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch, Notify};

use super::cancel::{CancelMode, CancelRequest};
use super::catalog::Catalog;
use super::outage::{Backoff, Reporter};
use super::timer::Change;
use crate::store::backfills::BACKFILLS_CHANNEL;
use crate::store::listen::{self, SCHEDULES_CHANNEL};
use crate::store::schedules;
use crate::store::StoreError;

/// What the sync task uses of the replica.
pub(crate) struct Deps {
    /// Whose runs' standing cancel requests are read after (re)listening.
    pub node_id: uuid::Uuid,
    /// LISTEN needs a session of its own, outside the pool.
    pub database_url: String,
    /// How often everything is compared again, NOTIFY or not.
    pub resync_interval: Duration,
    /// The engine's pool (the reads).
    pub pool: Pool,
    /// The schedules this replica knows, kept current here.
    pub catalog: Arc<Catalog>,
    /// Whether the database answers.
    pub db: Reporter,
}

/// Runs until shutdown. `pending` is woken when a run-now or retry is
/// announced, `backfills` when a backfill is; cancel requests go to the
/// executor through `cancels`.
pub async fn run(
    deps: Arc<Deps>,
    changes: mpsc::UnboundedSender<Change>,
    pending: Arc<Notify>,
    cancels: mpsc::UnboundedSender<CancelRequest>,
    backfills: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = true;
    let mut backoff = Backoff::default();
    loop {
        let listener = tokio::select! {
            _ = shutdown.changed() => return,
            l = listen::listen(&deps.database_url) => l,
        };
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                deps.db.failed("LISTEN", &e);
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        backoff.reset();
        // Anything that changed while we were not listening is picked up here.
        if resync(&deps, &changes, first).await.is_ok() {
            first = false;
        }
        // A run-now, a backfill or a cancel may have been announced while we
        // were not listening.
        pending.notify_one();
        backfills.notify_one();
        standing_cancels(&deps, &cancels).await;
        let mut every = tokio::time::interval(deps.resync_interval);
        every.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = every.tick() => {
                    let _ = resync(&deps, &changes, first).await.map(|_| first = false);
                }
                notice = listener.notices.recv() => match notice {
                    None => {
                        tracing::debug!("LISTEN connection closed; reconnecting");
                        break;
                    }
                    Some(n) if n.channel == SCHEDULES_CHANNEL => on_schedule_notice(&deps, &changes, &n.payload).await,
                    Some(n) if n.channel == BACKFILLS_CHANNEL => backfills.notify_one(),
                    Some(n) => match CancelRequest::from_notice(&n.payload) {
                        Some(request) => {
                            let _ = cancels.send(request);
                        }
                        None => pending.notify_one(),
                    },
                },
            }
        }
    }
}

/// The cancel requests standing for this replica's runs (their
/// notifications may have come while it was not listening).
async fn standing_cancels(deps: &Deps, cancels: &mpsc::UnboundedSender<CancelRequest>) {
    let requests = match deps.pool.get().await {
        Ok(client) => crate::store::runs::cancel_requests_of(&**client, deps.node_id)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match requests {
        Ok(requests) => {
            for (run_id, mode, by) in requests {
                let mode = CancelMode::parse(&mode).unwrap_or(CancelMode::Graceful);
                let _ = cancels.send(CancelRequest { run_id, mode, by });
            }
        }
        Err(error) => deps.db.failed("reading cancel requests", &error),
    }
}

/// How many definitions are read (and held as rows) at a time.
const PAGE: usize = 1000;

async fn resync(
    deps: &Deps,
    changes: &mpsc::UnboundedSender<Change>,
    first: bool,
) -> Result<(), StoreError> {
    let change = if first {
        load_all(deps).await
    } else {
        reload_changed(deps).await
    };
    match change {
        Ok(change) => {
            let _ = changes.send(change);
            Ok(())
        }
        Err(e) => {
            deps.db.failed("schedule resync", &e);
            Err(e)
        }
    }
}

/// Reads every enabled schedule, a page at a time, so a large catalog's rows
/// are never all held next to their parsed definitions.
async fn load_all(deps: &Deps) -> Result<Change, StoreError> {
    let mut client = deps.pool.get().await?;
    let mut all = Vec::new();
    schedules::each_enabled_page(&mut client, PAGE as i32, |page| {
        log_invalid(&page.invalid);
        all.extend(page.schedules.into_iter().map(Arc::new));
    })
    .await?;
    tracing::debug!(schedules = all.len(), "loaded schedules");
    deps.catalog.replace_all(&all);
    Ok(Change::Load(all))
}

/// The periodic safety net: compares who every enabled schedule is (name,
/// creation, version) with what this replica holds, and reads only the
/// definitions that differ. A quiet catalog costs one narrow query, not a
/// re-read and re-parse of every schedule.
async fn reload_changed(deps: &Deps) -> Result<Change, StoreError> {
    let client = deps.pool.get().await?;
    let identities = schedules::enabled_identities(&**client).await?;
    let (stale, mut gone) = deps.catalog.diff(&identities);
    drop(identities);
    let mut changed = Vec::with_capacity(stale.len());
    for names in stale.chunks(PAGE) {
        let page = schedules::list_enabled_named(&**client, names).await?;
        log_invalid(&page.invalid);
        let found: std::collections::HashSet<&str> =
            page.schedules.iter().map(|s| s.schedule.name()).collect();
        // Paused, deleted or invalid since the identities were read.
        gone.extend(
            names
                .iter()
                .filter(|n| !found.contains(n.as_str()))
                .cloned(),
        );
        changed.extend(page.schedules.into_iter().map(Arc::new));
    }
    for s in &changed {
        deps.catalog.put(s.clone());
    }
    for name in &gone {
        deps.catalog.remove(name);
    }
    tracing::debug!(
        changed = changed.len(),
        gone = gone.len(),
        "resynced schedules"
    );
    Ok(Change::Resync { changed, gone })
}

fn log_invalid(invalid: &[schedules::InvalidRow]) {
    for bad in invalid {
        tracing::error!(schedule = %bad.name, error = %bad.error, "stored schedule is invalid and will not fire");
    }
}

async fn on_schedule_notice(deps: &Deps, changes: &mpsc::UnboundedSender<Change>, payload: &str) {
    let Some(name) = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
    else {
        tracing::warn!(payload, "unreadable schedule notification");
        return;
    };
    // Re-read the row: the notification only says that something changed.
    let read = async {
        let client = deps.pool.get().await?;
        schedules::get(&**client, &name).await
    }
    .await;
    match read {
        Ok(Some(s)) => {
            tracing::debug!(schedule = %name, version = s.version, "schedule changed");
            let s = Arc::new(s);
            deps.catalog.put(s.clone());
            let _ = changes.send(Change::Upsert(s));
        }
        Ok(None) => {
            tracing::debug!(schedule = %name, "schedule deleted");
            deps.catalog.remove(&name);
            let _ = changes.send(Change::Remove(name));
        }
        Err(StoreError::InvalidRow { name, errors }) => {
            tracing::error!(schedule = %name, %errors, "stored schedule is invalid; it stops firing");
            deps.catalog.remove(&name);
            let _ = changes.send(Change::Remove(name));
        }
        Err(e) => {
            // The periodic resync will catch up.
            tracing::warn!(schedule = %name, error = %e, "could not read a changed schedule");
        }
    }
}
