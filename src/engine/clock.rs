//! The database clock as seen from this replica (G4).
//!
//! Every claim and heartbeat returns the database's `now()`; the replica
//! keeps a smoothed estimate of `db − local` from round trips short enough to
//! trust, and schedules its timers on database time. Claims themselves are
//! still checked against `now()` in SQL, so a bad estimate can only make a
//! replica late (it retries), never early or double.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Samples from round trips longer than this carry too much uncertainty.
const MAX_SAMPLE_RTT: Duration = Duration::from_millis(20);
/// Sentinel: no sample yet.
const UNSET: i64 = i64::MIN;

/// A shared estimate of the offset between the database clock and ours.
#[derive(Debug)]
pub struct DbClock {
    offset_micros: AtomicI64,
    /// Test-only error added to the local clock (see `EngineConfig::test_clock_skew`).
    skew: chrono::Duration,
}

impl Default for DbClock {
    fn default() -> Self {
        Self::with_skew(chrono::Duration::zero())
    }
}

impl DbClock {
    /// No estimate yet (offset taken as zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock whose local reading is off by `skew` (for tests of G4).
    pub fn with_skew(skew: chrono::Duration) -> Self {
        DbClock {
            offset_micros: AtomicI64::new(UNSET),
            skew,
        }
    }

    /// This replica's own clock (skewed in tests).
    pub fn local_now(&self) -> DateTime<Utc> {
        Utc::now() + self.skew
    }

    /// Feeds one observation: we sent at `sent`, got the answer at `received`
    /// (both `Utc::now()` readings), and the database said `db_now` in between.
    pub fn observe(&self, sent: DateTime<Utc>, received: DateTime<Utc>, db_now: DateTime<Utc>) {
        let (sent, received) = (sent + self.skew, received + self.skew);
        let rtt = received - sent;
        if rtt < chrono::Duration::zero() || rtt.to_std().map_or(true, |r| r > MAX_SAMPLE_RTT) {
            return;
        }
        let midpoint = sent + rtt / 2;
        let sample = (db_now - midpoint).num_microseconds().unwrap_or(0);
        let old = self.offset_micros.load(Ordering::Relaxed);
        let new = if old == UNSET {
            sample
        } else {
            // Smooth out jitter; a real step in either clock converges in a few samples.
            old + (sample - old) / 4
        };
        self.offset_micros.store(new, Ordering::Relaxed);
    }

    /// `db − local`, zero before the first sample.
    pub fn offset(&self) -> chrono::Duration {
        match self.offset_micros.load(Ordering::Relaxed) {
            UNSET => chrono::Duration::zero(),
            us => chrono::Duration::microseconds(us),
        }
    }

    /// Whether any sample has been taken.
    pub fn is_calibrated(&self) -> bool {
        self.offset_micros.load(Ordering::Relaxed) != UNSET
    }

    /// The database's time now, estimated.
    pub fn now(&self) -> DateTime<Utc> {
        self.local_now() + self.offset()
    }

    /// How long to sleep until the database clock reads `at`.
    pub fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_and_smooths_the_offset() {
        let c = DbClock::new();
        assert_eq!(c.offset(), chrono::Duration::zero());
        let t0 = DateTime::UNIX_EPOCH;
        let ms = chrono::Duration::milliseconds;
        // Database 500 ms ahead, 2 ms round trip.
        c.observe(t0, t0 + ms(2), t0 + ms(501));
        assert_eq!(c.offset(), ms(500));
        // A slow round trip is ignored.
        c.observe(t0, t0 + ms(900), t0 + ms(5000));
        assert_eq!(c.offset(), ms(500));
        c.observe(t0, t0 + ms(2), t0 + ms(541));
        assert_eq!(c.offset(), ms(510));
    }

    #[test]
    fn a_skewed_local_clock_is_compensated() {
        let c = DbClock::with_skew(chrono::Duration::seconds(30));
        let t0 = Utc::now();
        c.observe(
            t0,
            t0 + chrono::Duration::milliseconds(2),
            t0 + chrono::Duration::milliseconds(1),
        );
        assert!(
            (c.offset() + chrono::Duration::seconds(30))
                .num_milliseconds()
                .abs()
                <= 1
        );
        assert!((c.now() - Utc::now()).num_milliseconds().abs() < 50);
    }
}
