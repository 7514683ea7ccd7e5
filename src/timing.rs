//! How late is late: the thresholds a tick passes through, in one place,
//! with the order they must keep. Pure: no clock reads.
//!
//! For a tick due at `t` of a schedule whose misfire grace is `g` — `t`
//! being its due instant (`Schedule::due_at`: the tick plus its jitter
//! delay; the tick itself without a jitter):
//!
//! 1. `t + BACKLOG_AFTER` (1 s): a tick not yet claimed because this
//!    replica's queue or its database was behind is a *backlog* tick, which
//!    `coalesce` may fold into a newer one (`engine::queue::Tick::backlog`).
//!    A tick handed over from a replica that died is never one.
//! 2. `t + g`: the claim still starts it (`store::claims::INSERT`); a claim
//!    after that records it `missed`.
//! 3. `t + g + OFFER_MARGIN` (1 s): the timer stops offering a tick it
//!    could not claim (`engine::timer`); the sweep takes over.
//! 4. `t + g + SWEEP_MARGIN` (2 s): the leader's sweep records a tick with
//!    no row `missed` (`cluster::duties`) — after 3, so that a replica
//!    claiming at the edge of the grace wins rather than races the sweep.
//!
//! Results: a run whose schedule ticks again within `URGENT_WITHIN` (2 s)
//! writes its result at once instead of waiting for claims (at most
//! `RESULT_HOLD`, `engine::completions`): another replica may claim that
//! next tick as early as the claim lead (at most `MAX_CLAIM_LEAD`) before
//! it, and could not know the run had finished.
//!
//! Membership: a replica whose liveness lock is gone is reaped after
//! `REAP_CONFIRM` (300 ms) more (`cluster::duties`).
//!
//! The orders that do not depend on settings are checked at compile time
//! below; the ones that do, by `EngineConfig::validate` and
//! `ClusterConfig::validate`.

use std::time::Duration;

const BACKLOG_AFTER_MS: i64 = 1_000;
const OFFER_MARGIN_MS: i64 = 1_000;
const SWEEP_MARGIN_MS: i64 = 2_000;
const URGENT_WITHIN_MS: i64 = 2_000;
const RESULT_HOLD_MS: u64 = 500;
const MAX_CLAIM_LEAD_MS: u64 = 1_000;

/// See the module docs, step 1.
pub const BACKLOG_AFTER: chrono::Duration = chrono::Duration::milliseconds(BACKLOG_AFTER_MS);
/// See the module docs, step 3.
pub const OFFER_MARGIN: chrono::Duration = chrono::Duration::milliseconds(OFFER_MARGIN_MS);
/// See the module docs, step 4.
pub const SWEEP_MARGIN: chrono::Duration = chrono::Duration::milliseconds(SWEEP_MARGIN_MS);
/// A result whose schedule ticks again within this is written at once.
pub const URGENT_WITHIN: chrono::Duration = chrono::Duration::milliseconds(URGENT_WITHIN_MS);
/// Longest a result waits for claims to finish.
pub const RESULT_HOLD: Duration = Duration::from_millis(RESULT_HOLD_MS);
/// The longest claim lead a replica accepts (`--claim-lead`).
pub const MAX_CLAIM_LEAD: Duration = Duration::from_millis(MAX_CLAIM_LEAD_MS);
/// How long a keyed replica must stay gone before it is reaped.
pub const REAP_CONFIRM: Duration = Duration::from_millis(300);

// The sweep comes after the timer gives up; the timer gives up after the grace.
const _: () = assert!(SWEEP_MARGIN_MS > OFFER_MARGIN_MS && OFFER_MARGIN_MS > 0);
// An urgent result is written before anyone can claim the next tick.
const _: () = assert!(URGENT_WITHIN_MS as u64 > RESULT_HOLD_MS + MAX_CLAIM_LEAD_MS);

/// A `std` duration as a `chrono` one; durations too long for chrono (over
/// 292 million years) saturate, which no comparison here can tell apart.
pub fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A schedule's misfire grace.
pub fn misfire_grace(s: &crate::schedule::Schedule) -> chrono::Duration {
    chrono(s.misfire_grace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_failing() {
        assert_eq!(chrono(Duration::from_secs(2)), chrono::Duration::seconds(2));
        assert_eq!(chrono(Duration::MAX), chrono::Duration::MAX);
    }
}
