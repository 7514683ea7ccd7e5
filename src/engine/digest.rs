//! Settled-tick digests: how a replica checks another's share without a
//! probe per tick.
//!
//! Every tick has a preferred replica (see `share`); the others check it
//! after the handoff delay and claim it if it has no ledger row. Checked
//! one by one, that is two existence probes per tick on three replicas —
//! two thirds of all probes. Instead the owner publishes, per tick instant,
//! a digest of the ticks of its share that have a committed row
//! (`store::digests`), and a checker computes the digest of the ticks it
//! expects that owner to have settled. Equal digests mean equal sets: every
//! tick the checker expected has its row, and it skips them. Anything else —
//! the two disagree on membership, one does not know a schedule yet, a tick
//! is still being retried, the digest is not written yet — makes them
//! differ, and the checker probes each tick as before. So a digest can only
//! save work, never lose a tick.
//!
//! The digest is the XOR of a 128-bit hash (SHA-256, truncated) of each
//! schedule name, with the count: independent of order, so it can be built
//! up chunk by chunk, and the same on every replica and version.

use sha2::{Digest as _, Sha256};

/// An order-independent digest of a set of schedule names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickDigest {
    hi: u64,
    lo: u64,
    count: u32,
}

impl TickDigest {
    /// Adds one schedule (adding the same name twice does not cancel out:
    /// the count still differs).
    pub fn add(&mut self, schedule: &str) {
        let h = Sha256::digest(schedule.as_bytes());
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&h[..8]);
        lo.copy_from_slice(&h[8..16]);
        self.hi ^= u64::from_be_bytes(hi);
        self.lo ^= u64::from_be_bytes(lo);
        self.count = self.count.saturating_add(1);
    }

    /// The digest of these names.
    pub fn of<'a>(schedules: impl IntoIterator<Item = &'a str>) -> TickDigest {
        let mut d = TickDigest::default();
        for s in schedules {
            d.add(s);
        }
        d
    }

    /// As stored: two signed 64-bit halves and the count.
    pub fn to_parts(self) -> (i64, i64, i32) {
        (
            i64::from_be_bytes(self.hi.to_be_bytes()),
            i64::from_be_bytes(self.lo.to_be_bytes()),
            i32::try_from(self.count).unwrap_or(i32::MAX),
        )
    }

    /// From the stored parts.
    pub fn from_parts(hi: i64, lo: i64, count: i32) -> TickDigest {
        TickDigest {
            hi: u64::from_be_bytes(hi.to_be_bytes()),
            lo: u64::from_be_bytes(lo.to_be_bytes()),
            count: u32::try_from(count).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_chunking_do_not_matter() {
        let whole = TickDigest::of(["a", "b", "c"]);
        let mut chunked = TickDigest::of(["c"]);
        chunked.add("a");
        chunked.add("b");
        assert_eq!(whole, chunked);
    }

    #[test]
    fn any_difference_in_the_set_shows() {
        let expected = TickDigest::of(["a", "b", "c"]);
        assert_ne!(expected, TickDigest::of(["a", "b"]), "one missing");
        assert_ne!(expected, TickDigest::of(["a", "b", "d"]), "one different");
        assert_ne!(expected, TickDigest::of(["a", "b", "c", "d"]), "one more");
        // XOR alone would let a duplicate cancel out; the count does not.
        assert_ne!(TickDigest::of(["a"]), TickDigest::of(["a", "b", "b"]));
        assert_ne!(TickDigest::default(), TickDigest::of(["a", "a"]));
    }

    #[test]
    fn survives_the_round_trip_through_the_database_columns() {
        let d = TickDigest::of(
            (0..1000)
                .map(|i| format!("s{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        let (hi, lo, n) = d.to_parts();
        assert_eq!(TickDigest::from_parts(hi, lo, n), d);
        assert_eq!(n, 1000);
        // A known value, so that every version computes the same digest.
        assert_eq!(TickDigest::of(["a"]).to_parts().2, 1);
        assert_eq!(
            TickDigest::of(["a"]).to_parts().0,
            i64::from_be_bytes([0xca, 0x97, 0x81, 0x12, 0xca, 0x1b, 0xbd, 0xca])
        );
    }
}
