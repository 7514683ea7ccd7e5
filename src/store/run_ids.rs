//! Run ids that carry their tick, so that a run looked up by id alone is
//! found in one or two of the ledger's partitions instead of all of them.
//!
//! A run id is a UUIDv7 (RFC 9562 §5.7) whose 48-bit Unix-millisecond
//! field holds the run's `scheduled_at` (its tick; for a manual run, when
//! it was asked for) rather than the instant the id was made; the other 74
//! bits are random as usual. The ledger is partitioned by `scheduled_at`,
//! and a statement that names only `run_id` plans and probes every
//! partition's primary key: with a month of daily partitions that was
//! 3.8 ms per `GET /v1/runs/{id}`, 2.9 ms of it planning (`spine-bench
//! history`). With the tick read back from the id, the lookup adds a range
//! on `scheduled_at` and is pruned to the partition(s) the range covers.
//!
//! The range is [`SLACK`] either side of the id's instant, not the exact
//! millisecond, because not every id carries its exact tick: ids made
//! by earlier versions carry the instant they were made (a claim's is
//! within seconds of its tick, a retry's within its backoff), and ids are
//! not checked when they are written. A lookup that finds nothing in the
//! range therefore looks again over every tick ([`ranges`]): the range
//! only ever makes a lookup cheaper, never wrong.

use chrono::{DateTime, Utc};
use uuid::{NoContext, Timestamp, Uuid};

/// How far either side of the instant in its id a run's tick may lie and
/// still be found by the pruned lookup (a range of two hours spans at most
/// two daily partitions).
pub const SLACK: chrono::Duration = chrono::Duration::hours(1);

/// A new run id for a run whose `scheduled_at` is `tick`: a UUIDv7 with
/// the tick's Unix milliseconds and 74 random bits. Ticks before 1970 (no
/// schedule has them) are taken as the epoch.
pub fn for_tick(tick: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(tick.timestamp_millis()).unwrap_or(0);
    let ts = Timestamp::from_unix(NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    Uuid::new_v7(ts)
}

/// The range of `scheduled_at` `[from, to)` in which the run `id` is
/// looked for first: [`SLACK`] either side of the instant in the id.
/// `None` for ids that are not UUIDv7 (made by hand, or by other tools):
/// those are looked up without a range.
pub fn tick_range(id: Uuid) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let at = DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)?;
    Some((at - SLACK, at + SLACK))
}

/// Every tick a run can have: the last range [`ranges`] gives.
fn every_tick() -> (DateTime<Utc>, DateTime<Utc>) {
    // Within PostgreSQL's timestamptz range (4713 BC – 294276 AD), which
    // chrono's own extremes are not.
    let from = DateTime::from_timestamp(-2_208_988_800, 0).unwrap_or_default(); // 1900-01-01
    let to = DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default(); // 9999-12-31
    (from, to)
}

/// The ranges of `scheduled_at` `[from, to)` to look for the run `id` in,
/// in turn, until one finds it: its [`tick_range`] if it has one, then
/// every tick. A statement that takes the range as parameters
/// (`run_id = $1 AND scheduled_at >= $2 AND scheduled_at < $3`) is pruned
/// to the range's partitions whether planned for the values or generic.
pub fn ranges(id: Uuid) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> {
    tick_range(id)
        .into_iter()
        .chain(std::iter::once(every_tick()))
}

/// SQL for the run id of a row written by a statement that computes its
/// tick itself (a manual run's `now()`, a retry's original tick): `id`, an
/// expression for a UUIDv7 made by the caller, with its 48-bit time field
/// replaced by the milliseconds of `tick`, an expression for a
/// `timestamptz` — the same layout as [`for_tick`] (version and variant
/// bits lie after the time field and are kept).
pub fn sql_for_tick(id: &str, tick: &str) -> String {
    format!(
        "encode(overlay(uuid_send({id}) PLACING \
           substring(int8send(floor(extract(epoch FROM {tick}) * 1000)::int8) FROM 3) \
           FROM 1), 'hex')::uuid"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_id_carries_its_ticks_millisecond() {
        let tick = Utc.with_ymd_and_hms(2026, 11, 30, 13, 0, 5).unwrap()
            + chrono::Duration::microseconds(123_456);
        let id = for_tick(tick);
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(
            (secs as i64, nanos),
            (tick.timestamp(), 123_000_000),
            "the id's time field is the tick, to the millisecond"
        );
        let (from, to) = tick_range(id).unwrap();
        assert!(from <= tick && tick < to);
        assert_eq!(to - from, SLACK * 2);
    }

    #[test]
    fn ids_for_one_tick_differ_and_sort_by_tick() {
        let t = Utc.with_ymd_and_hms(2026, 11, 30, 13, 0, 0).unwrap();
        let (a, b) = (for_tick(t), for_tick(t));
        assert_ne!(a, b, "74 random bits tell runs of one tick apart");
        let later = for_tick(t + chrono::Duration::milliseconds(1));
        assert!(later > a && later > b, "ids order by tick first");
    }

    #[test]
    fn a_lookup_tries_the_ids_range_then_every_tick() {
        let tick = Utc.with_ymd_and_hms(2026, 11, 30, 13, 0, 0).unwrap();
        let tried: Vec<_> = ranges(for_tick(tick)).collect();
        assert_eq!(tried.len(), 2);
        assert_eq!(tried[0], (tick - SLACK, tick + SLACK));
        let (from, to) = tried[1];
        assert!(from.timestamp() < 0 && to.timestamp() > 250_000_000_000);
        assert_eq!(ranges(Uuid::nil()).count(), 1, "no range of its own");
    }

    #[test]
    fn ids_that_are_not_v7_have_no_range() {
        assert_eq!(tick_range(Uuid::nil()), None);
        assert_eq!(tick_range(Uuid::max()), None);
        let v4 = Uuid::from_u128(0x0190_0000_0000_4000_8000_0000_0000_0001);
        assert_eq!(tick_range(v4), None);
    }
}
