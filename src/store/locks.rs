//! Advisory lock keys, one per cluster-wide critical section.
//!
//! Keys are fixed 64-bit numbers (ASCII "spine" in the high bytes) so an
//! operator can find them in `pg_locks` (`objid` holds the low 32 bits).

/// Held (transaction-scoped) while migrations run: replicas starting together
/// apply them one after another, and the later ones find nothing to do.
pub const MIGRATE: i64 = 0x7370_696e_6500_0001;
/// Held (transaction-scoped) while a schedules file is applied.
pub const APPLY: i64 = 0x7370_696e_6500_0002;
/// Held (session-scoped, dedicated connection) by the leader.
pub const LEADER: i64 = 0x7370_696e_6500_0003;

/// First key of every replica's liveness lock (session-scoped, on its
/// liveness session): `pg_advisory_lock(LIVENESS_CLASS, liveness_key)`,
/// seen in `pg_locks` as `classid` 1936746860 ("spil"), `objid` the
/// replica's `scheduler_nodes.liveness_key`, `objsubid` 2.
pub const LIVENESS_CLASS: i32 = 0x7370_696c;

/// Takes `key` (transaction-scoped) inside `tx`, waiting for whoever holds it.
pub async fn lock_for_transaction(
    tx: &tokio_postgres::Transaction<'_>,
    key: i64,
) -> Result<(), super::StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await?;
    Ok(())
}

/// How many claim-lock stripes schedule names fall into.
///
/// A claim locks the *stripe* of each schedule it writes, not the schedule:
/// a replica's share is a set of whole stripes (see `engine::share`), so its
/// claims hold at most as many locks as it owns stripes, however many ticks
/// fall due together — 20,000 at once would need 20,000 slots of the
/// server's shared lock table otherwise, which by default holds 6,400 for
/// everyone. Any lock that covers a schedule serializes its claims, which is
/// all the overlap count (`max_instances`) needs.
pub const STRIPES: u32 = 1024;

/// The first claim-stripe key; stripe `s` is locked as `CLAIM_STRIPE + s`.
const CLAIM_STRIPE: i64 = 0x7370_696e_6501_0000;

/// The stripe of `schedule`: stable across processes and versions, which is
/// the point — every replica must lock (and share out) the same stripes.
pub fn stripe(schedule: &str) -> u32 {
    (fnv1a(schedule) % u64::from(STRIPES)) as u32
}

/// The advisory lock key of `stripe`.
pub fn claim_key(stripe: u32) -> i64 {
    CLAIM_STRIPE + i64::from(stripe)
}

/// FNV-1a (std's SipHash keys differ between processes).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_stable_and_keys_distinct_from_the_fixed_ones() {
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stripe("a"), (0xaf63_dc4c_8601_ec8c_u64 % 1024) as u32);
        let keys = [claim_key(0), claim_key(STRIPES - 1)];
        assert!(keys.iter().all(|k| ![MIGRATE, APPLY, LEADER].contains(k)));
        assert_eq!(keys[1] - keys[0], i64::from(STRIPES - 1));
    }
}
