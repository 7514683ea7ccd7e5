//! The safety net's two sides, with digests instead of a probe per tick
//! (see `digest` for why this can only save work, never lose a tick).
//!
//! - As an owner, the claimer records every tick of its own share that has a
//!   committed row ([`Settled`]) and publishes the digests after each batch.
//! - As a checker, before claiming other replicas' ticks after the handoff
//!   delay, it compares each (owner, instant) group with the owner's digest
//!   ([`confirm`]) and drops the groups that match.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::digest::TickDigest;
use super::outage::Reporter;
use super::queue::Tick;
use super::{share, DbClock};
use crate::cluster::Membership;
use crate::metrics::Metrics;
use crate::store::digests;

/// How long an owner keeps (and publishes) the digest of an instant. A check
/// comes one handoff delay after the tick, or a little later when it rides
/// along with a batch; one that comes after this finds no digest and probes.
const KEEP: chrono::Duration = chrono::Duration::minutes(2);

/// The owner's side: digests of its own share's settled ticks, per instant.
#[derive(Debug, Default)]
pub struct Settled {
    by_instant: BTreeMap<DateTime<Utc>, TickDigest>,
    changed: HashSet<DateTime<Utc>>,
}

impl Settled {
    /// Records ticks that now have a committed row, keeping those of this
    /// replica's own `share` (as it sees the share now).
    pub fn record<'a>(
        &mut self,
        share: share::Share,
        ticks: impl IntoIterator<Item = (&'a str, DateTime<Utc>)>,
    ) {
        for (name, at) in ticks {
            if share.prefers(name) {
                self.by_instant.entry(at).or_default().add(name);
                self.changed.insert(at);
            }
        }
    }

    /// Writes the digests that changed since the last call, as `node_id`'s.
    /// A failure only means that the others probe these ticks one by one.
    pub async fn publish(&mut self, node_id: Uuid, pool: &Pool, clock: &DbClock, db: &Reporter) {
        if self.changed.is_empty() {
            return;
        }
        let forget_before = clock.now() - KEEP;
        self.by_instant = self.by_instant.split_off(&forget_before);
        let changed: Vec<(DateTime<Utc>, digests::Parts)> = self
            .changed
            .drain()
            .filter_map(|at| self.by_instant.get(&at).map(|d| (at, d.to_parts())))
            .collect();
        let result = match pool.get().await {
            Ok(client) => digests::publish(&client, node_id, &changed, forget_before)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            // Only means that the others probe these ticks one by one.
            db.failed("publishing settled-tick digests", &error);
        }
    }
}

/// The checker's side: drops from `batch` the other replicas' ticks whose
/// owner's digest matches what this replica (`node_id`) expects of it, and
/// returns the rest (its own ticks, and others' that still need the
/// per-tick check).
pub async fn confirm(
    node_id: Uuid,
    membership: &Membership,
    pool: &Pool,
    metrics: &Metrics,
    batch: Vec<Tick>,
) -> Vec<Tick> {
    // One read of the membership for both: the owner of a tick and this
    // replica's own share must come from the same view.
    let peers = membership.members();
    let share = share::Share::of(&peers, node_id);
    let mut groups: HashMap<(Uuid, DateTime<Utc>), Vec<Tick>> = HashMap::new();
    let mut rest = Vec::with_capacity(batch.len());
    for tick in batch {
        match share::owner(&peers, tick.name()) {
            Some(owner) if !share.prefers(tick.name()) && *owner != node_id => {
                groups.entry((*owner, tick.at)).or_default().push(tick)
            }
            _ => rest.push(tick),
        }
    }
    if groups.is_empty() {
        return rest;
    }
    let keys: Vec<(Uuid, DateTime<Utc>)> = groups.keys().copied().collect();
    let published = match pool.get().await {
        Ok(client) => digests::fetch(&client, &keys)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let published = published.unwrap_or_else(|error| {
        tracing::debug!(%error, "could not read settled-tick digests; probing");
        HashMap::new()
    });
    let (mut by_digest, mut probed) = (0u64, 0u64);
    for (key, ticks) in groups {
        let expected = TickDigest::of(ticks.iter().map(|t| t.name()));
        let matches = published
            .get(&key)
            .is_some_and(|&(hi, lo, n)| TickDigest::from_parts(hi, lo, n) == expected);
        if matches {
            by_digest += ticks.len() as u64;
        } else {
            probed += ticks.len() as u64;
            rest.extend(ticks);
        }
    }
    metrics.handoff_checks(by_digest, probed);
    metrics.claims(0, by_digest);
    rest
}
