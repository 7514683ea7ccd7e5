//! The schedules this replica knows, by name: loaded at start and kept
//! current by `sync` (LISTEN/NOTIFY and the periodic resync); read by the
//! pending-run pickup and the leader's misfire sweep. The timer keeps its
//! own queue of next ticks, fed by the same changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};

use crate::store::schedules::StoredSchedule;

/// Schedules by name.
#[derive(Debug, Default)]
pub struct Catalog {
    by_name: RwLock<HashMap<String, Arc<StoredSchedule>>>,
    /// Whether the initial load has happened: before it, "no schedule"
    /// means "not read yet", not "none".
    loaded: AtomicBool,
}

impl Catalog {
    // Single inserts, removals and whole replacements: a panic while holding
    // the lock cannot leave the map half-updated, so a poisoned lock is
    // still usable.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<StoredSchedule>>> {
        self.by_name.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<StoredSchedule>>> {
        self.by_name.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces everything with `all` (the initial load).
    pub fn replace_all(&self, all: &[Arc<StoredSchedule>]) {
        *self.write() = all
            .iter()
            .map(|s| (s.schedule.name().to_string(), s.clone()))
            .collect();
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether the schedules have been read once ([`Catalog::replace_all`]).
    /// The leader's misfire sweep waits for it: a pass over an empty,
    /// not-yet-loaded catalog would record itself complete and move the
    /// durable watermark past ticks it never looked at.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Compares the database's enabled schedules (name, creation, version)
    /// with the catalog: the names whose definition must be read again, and
    /// the catalog's names the database no longer has enabled.
    pub fn diff(&self, identities: &[(String, DateTime<Utc>, i64)]) -> (Vec<String>, Vec<String>) {
        let catalog = self.read();
        let stale = identities
            .iter()
            .filter(|(name, created_at, version)| {
                catalog
                    .get(name)
                    .is_none_or(|s| s.created_at != *created_at || s.version != *version)
            })
            .map(|(name, _, _)| name.clone())
            .collect();
        let enabled: HashSet<&str> = identities.iter().map(|(n, _, _)| n.as_str()).collect();
        let gone = catalog
            .keys()
            .filter(|n| !enabled.contains(n.as_str()))
            .cloned()
            .collect();
        (stale, gone)
    }

    /// Adds or replaces one schedule.
    pub fn put(&self, s: Arc<StoredSchedule>) {
        self.write().insert(s.schedule.name().to_string(), s);
    }

    /// Forgets one schedule.
    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    /// Every enabled schedule.
    pub fn enabled(&self) -> Vec<Arc<StoredSchedule>> {
        self.read()
            .values()
            .filter(|s| s.schedule.enabled())
            .cloned()
            .collect()
    }

    /// One schedule by name.
    pub fn get(&self, name: &str) -> Option<Arc<StoredSchedule>> {
        self.read().get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_catalog_is_not_a_loaded_one() {
        let catalog = Catalog::default();
        assert!(!catalog.is_loaded());
        catalog.replace_all(&[]);
        assert!(catalog.is_loaded(), "loaded, with no schedules");
        assert!(catalog.enabled().is_empty());
    }
}
