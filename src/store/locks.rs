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
