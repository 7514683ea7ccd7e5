//! The in-memory priority queue of next due ticks. Pure: no I/O, no clock.
//!
//! Ordered and taken by *due instant* (`Schedule::due_at`: the tick plus
//! its jitter), not by tick: a schedule's due instants keep its ticks'
//! order (each falls due before the next tick), so taking by due instant
//! still yields each schedule's ticks oldest first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::store::schedules::StoredSchedule;

/// A (schedule, tick) that is due.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The schedule as the queue knew it when the tick fell due.
    pub schedule: Arc<StoredSchedule>,
    /// The instant: the tick, as the ledger records it (`scheduled_at`).
    pub at: DateTime<Utc>,
    /// When it falls due: `at` plus the schedule's jitter delay
    /// (`Schedule::due_at`). Everything about "is it time, how late is it"
    /// counts from here.
    pub due: DateTime<Utc>,
    /// Whether it is part of a backlog: this replica's queue or its
    /// database was behind, and the tick could not be claimed within
    /// `timing::BACKLOG_AFTER` of falling due. Only backlog ticks are coalesced
    /// (with `coalesce`, when a newer tick of the schedule is due too). A
    /// tick that is merely late — handed over from a replica that died, or
    /// held up by a database hiccup shorter than that — is not: it runs.
    pub backlog: bool,
}

impl Tick {
    /// The schedule's name.
    pub fn name(&self) -> &str {
        self.schedule.schedule.name()
    }

    /// A tick of `schedule` at `at`, with its due instant.
    pub fn new(schedule: Arc<StoredSchedule>, at: DateTime<Utc>, backlog: bool) -> Self {
        let due = schedule.schedule.due_at(at);
        Tick {
            schedule,
            at,
            due,
            backlog,
        }
    }
}

struct Entry {
    schedule: Arc<StoredSchedule>,
    next: DateTime<Utc>,
    due: DateTime<Utc>,
    generation: u64,
}

/// Enabled schedules by next due instant. Replacing or removing a schedule
/// leaves its old heap entry behind; the generation number makes the heap
/// skip it (lazy deletion keeps every operation O(log n)).
#[derive(Default)]
pub struct DueQueue {
    entries: HashMap<String, Entry>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, String)>>,
    generation: u64,
}

/// At most this many backlog ticks of one schedule are produced per take;
/// older ones are left to the leader's misfire sweep.
pub const MAX_BACKLOG_PER_TAKE: usize = 100;

impl DueQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of schedules queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Which stored row is queued for `name`: (created_at, version). A schedule
    /// deleted and created again restarts at version 1 but has a new created_at.
    pub fn identity_of(&self, name: &str) -> Option<(DateTime<Utc>, i64)> {
        self.entries
            .get(name)
            .map(|e| (e.schedule.created_at, e.schedule.version))
    }

    /// Queues (or replaces) a schedule with its first tick after `after`.
    /// Disabled schedules and schedules with no future tick are removed instead.
    pub fn upsert(&mut self, schedule: Arc<StoredSchedule>, after: DateTime<Utc>) {
        let name = schedule.schedule.name().to_string();
        let next = if schedule.schedule.enabled() {
            schedule.schedule.next_fire_after(after)
        } else {
            None
        };
        match next {
            Some(next) => self.insert(name, schedule, next),
            None => {
                self.entries.remove(&name);
            }
        }
    }

    fn insert(&mut self, name: String, schedule: Arc<StoredSchedule>, next: DateTime<Utc>) {
        self.generation += 1;
        let generation = self.generation;
        let due = schedule.schedule.due_at(next);
        self.heap.push(Reverse((due, generation, name.clone())));
        self.entries.insert(
            name,
            Entry {
                schedule,
                next,
                due,
                generation,
            },
        );
    }

    /// Stops tracking `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// Names currently queued.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The earliest due instant (of any schedule's next tick).
    pub fn next_due(&mut self) -> Option<DateTime<Utc>> {
        self.discard_stale();
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next tick of one schedule (the tick, not its due instant: a
    /// changed schedule restarts from it, and it is what `next_fire` exports).
    pub fn next_of(&self, name: &str) -> Option<DateTime<Utc>> {
        self.entries.get(name).map(|e| e.next)
    }

    /// The gap in seconds between a schedule's next tick and the one after,
    /// or `None` when it is not queued or has no tick after the next.
    pub fn interval_of(&self, name: &str) -> Option<f64> {
        let e = self.entries.get(name)?;
        let after = e.schedule.schedule.next_fire_after(e.next)?;
        Some((after - e.next).num_milliseconds() as f64 / 1000.0)
    }

    fn discard_stale(&mut self) {
        while let Some(Reverse((_, generation, name))) = self.heap.peek() {
            match self.entries.get(name) {
                Some(e) if e.generation == *generation => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    /// Every tick whose due instant is at or before `now`, oldest first per
    /// schedule; each schedule advances to its next tick after the last one
    /// taken.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Tick> {
        let mut out = Vec::new();
        loop {
            self.discard_stale();
            let Some(Reverse((t, _, _))) = self.heap.peek() else {
                break;
            };
            if *t > now {
                break;
            }
            let Some(Reverse((_, _, name))) = self.heap.pop() else {
                break;
            };
            let Some(entry) = self.entries.remove(&name) else {
                continue;
            };
            let schedule = &entry.schedule.schedule;
            let (mut tick, mut due) = (entry.next, entry.due);
            let mut taken = 0;
            let next = loop {
                out.push(Tick {
                    schedule: entry.schedule.clone(),
                    at: tick,
                    due,
                    backlog: false,
                });
                taken += 1;
                let Some(n) = schedule.next_fire_after(tick) else {
                    break None;
                };
                let n_due = schedule.due_at(n);
                if n_due > now {
                    break Some(n);
                }
                if taken == MAX_BACKLOG_PER_TAKE {
                    // Skip the rest of an enormous backlog in one step (to
                    // the first tick that may not be due yet; never back).
                    let jitter = crate::timing::chrono(schedule.jitter());
                    break schedule.next_fire_after((now - jitter).max(tick));
                }
                (tick, due) = (n, n_due);
            };
            if let Some(next) = next {
                self.insert(name, entry.schedule, next);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use std::time::Duration;

    fn stored(s: Schedule, version: i64) -> Arc<StoredSchedule> {
        Arc::new(StoredSchedule {
            schedule: s,
            version,
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            pause: None,
            manager: None,
        })
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    fn every(name: &str, secs: u64) -> Arc<StoredSchedule> {
        stored(
            Schedule::interval(name, "p", Duration::from_secs(secs)).expect("valid"),
            1,
        )
    }

    #[test]
    fn takes_what_is_due_and_advances() {
        let mut q = DueQueue::new();
        q.upsert(every("a", 10), at(0));
        q.upsert(every("b", 15), at(0));
        assert_eq!(q.next_due(), Some(at(10)));
        assert!(q.take_due(at(9)).is_empty());
        let due: Vec<(String, DateTime<Utc>)> = q
            .take_due(at(15))
            .iter()
            .map(|t| (t.name().to_string(), t.at))
            .collect();
        assert_eq!(due, [("a".into(), at(10)), ("b".into(), at(15))]);
        assert_eq!(q.next_due(), Some(at(20)));
    }

    #[test]
    fn a_backlog_comes_out_oldest_first_and_bounded() {
        let mut q = DueQueue::new();
        q.upsert(every("a", 1), at(0));
        let due = q.take_due(at(5));
        let ticks: Vec<DateTime<Utc>> = due.iter().map(|t| t.at).collect();
        assert_eq!(ticks, [at(1), at(2), at(3), at(4), at(5)]);
        let huge = q.take_due(at(10_000));
        assert_eq!(huge.len(), MAX_BACKLOG_PER_TAKE);
        assert_eq!(q.next_due(), Some(at(10_001)));
    }

    #[test]
    fn jittered_ticks_are_taken_at_their_due_instant() {
        let s = Schedule::interval("j", "p", Duration::from_secs(10))
            .and_then(|s| s.with_jitter(Duration::from_secs(8)))
            .expect("valid");
        let first_due = s.due_at(at(10));
        let mut q = DueQueue::new();
        q.upsert(stored(s.clone(), 1), at(0));
        assert_eq!(q.next_due(), Some(first_due));
        assert_eq!(q.next_of("j"), Some(at(10)), "the tick itself");
        if first_due > at(10) {
            assert!(q.take_due(at(10)).is_empty(), "not due at its tick");
        }
        let due = q.take_due(first_due);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].at, due[0].due), (at(10), first_due));
        // A backlog: every tick whose due instant has passed, in order.
        let due = q.take_due(at(100));
        let ticks: Vec<DateTime<Utc>> = due.iter().map(|t| t.at).collect();
        let want: Vec<DateTime<Utc>> = (2..=10)
            .map(|k| at(10 * k))
            .filter(|t| s.due_at(*t) <= at(100))
            .collect();
        assert_eq!(ticks, want);
        assert!(due.iter().all(|t| t.due == s.due_at(t.at)));
    }

    #[test]
    fn replace_remove_disable_and_once() {
        let mut q = DueQueue::new();
        q.upsert(every("a", 10), at(0));
        q.upsert(
            stored(
                Schedule::interval("a", "p", Duration::from_secs(3)).expect("v"),
                2,
            ),
            at(0),
        );
        assert_eq!(q.identity_of("a").map(|i| i.1), Some(2));
        assert_eq!(q.next_due(), Some(at(3)));
        q.remove("a");
        assert_eq!(q.next_due(), None);
        assert!(q.take_due(at(100)).is_empty());
        let paused = Schedule::interval("p", "p", Duration::from_secs(3))
            .expect("v")
            .with_enabled(false);
        q.upsert(stored(paused, 1), at(0));
        assert!(q.is_empty());
        let once = Schedule::once("o", "p", at(7)).expect("v");
        q.upsert(stored(once, 1), at(0));
        assert_eq!(q.take_due(at(8)).len(), 1);
        assert!(q.is_empty(), "a one-time schedule leaves after firing");
    }
}
