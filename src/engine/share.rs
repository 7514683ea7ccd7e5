//! Spreading the work: every tick has a *preferred* replica.
//!
//! Left alone, the replica whose timer fires first would take every
//! schedule's lock and run everything while the others only learn they lost.
//! Instead each replica claims its own share at once — schedules whose name
//! hashes to its index among the live replicas — and the rest only after the
//! handoff delay, as a safety net for a share whose owner died. The claim's
//! unique key still decides; this only decides who asks first. Replicas that
//! briefly disagree on membership just race (safe) or claim a share late
//! (by at most the handoff delay).
//!
//! Shares are made of whole claim-lock stripes (`store::locks::stripe`), so
//! replicas claiming their own shares at the same instant never want the
//! same lock.

use uuid::Uuid;

use crate::cluster::Membership;
use crate::store::locks;

/// This replica's slot among the live replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    index: usize,
    of: usize,
}

impl Share {
    /// The share of `me` among `active` (sorted ids). A replica that does not
    /// see itself in the list (not yet registered) takes everything.
    pub fn of(active: &[Uuid], me: Uuid) -> Share {
        match active.iter().position(|id| *id == me) {
            Some(index) => Share {
                index,
                of: active.len(),
            },
            None => Share { index: 0, of: 1 },
        }
    }

    /// The share of `me` as `membership` stands now. Read afresh at each
    /// use, never kept: the membership changes under the tasks that ask.
    pub(crate) fn current(membership: &Membership, me: Uuid) -> Share {
        Share::of(&membership.members(), me)
    }

    /// Whether this replica is the first to claim `schedule`'s ticks.
    pub fn prefers(&self, schedule: &str) -> bool {
        self.of <= 1 || slot(schedule, self.of) == self.index
    }
}

/// The replica among `active` (sorted ids) that prefers `schedule`: the one
/// whose [`Share::prefers`] says yes when every replica sees the same list.
pub fn owner<'a>(active: &'a [Uuid], schedule: &str) -> Option<&'a Uuid> {
    active.get(slot(schedule, active.len().max(1)))
}

fn slot(schedule: &str, of: usize) -> usize {
    locks::stripe(schedule) as usize % of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schedule_has_exactly_one_preferred_replica() {
        let mut ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        ids.sort();
        let shares: Vec<Share> = ids.iter().map(|id| Share::of(&ids, *id)).collect();
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let name = format!("schedule-{i}");
            let owners: Vec<usize> = (0..3).filter(|&r| shares[r].prefers(&name)).collect();
            assert_eq!(owners.len(), 1, "{name}");
            assert_eq!(owner(&ids, &name), Some(&ids[owners[0]]), "{name}");
            counts[owners[0]] += 1;
        }
        // Roughly even: each replica gets a third, give or take.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_replica_missing_from_the_list_takes_everything() {
        let s = Share::of(&[Uuid::now_v7()], Uuid::now_v7());
        assert!(s.prefers("a") && s.prefers("b"));
    }

    #[test]
    fn a_stripe_belongs_to_one_replica() {
        let mut ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        ids.sort();
        let mut owners = std::collections::HashMap::new();
        for i in 0..5000 {
            let name = format!("s{i}");
            let owner = owner(&ids, &name).copied();
            assert_eq!(
                *owners.entry(locks::stripe(&name)).or_insert(owner),
                owner,
                "{name}"
            );
        }
    }
}
