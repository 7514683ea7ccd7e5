//! Settled-tick digests (`scheduler_tick_digests`): what each replica has
//! settled of its own share, per tick instant. See `engine::digest` for how
//! they replace per-tick existence checks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;

/// A digest as stored: two 64-bit halves and the number of ticks.
pub type Parts = (i64, i64, i32);

/// Writes this node's digests (absolute values, replacing older ones) and
/// forgets its own rows for ticks before `$6`.
pub const PUBLISH: &str = "\
WITH forgotten AS (
    DELETE FROM scheduler_tick_digests WHERE node_id = $1 AND scheduled_at < $6
)
INSERT INTO scheduler_tick_digests (node_id, scheduled_at, digest_hi, digest_lo, ticks)
SELECT $1, u.t, u.hi, u.lo, u.n
FROM unnest($2::timestamptz[], $3::int8[], $4::int8[], $5::int4[]) AS u(t, hi, lo, n)
ON CONFLICT (node_id, scheduled_at) DO UPDATE
SET digest_hi = excluded.digest_hi, digest_lo = excluded.digest_lo, ticks = excluded.ticks";

/// The digests of these (node, tick instant) pairs, where published.
pub const FETCH: &str = "\
SELECT d.node_id, d.scheduled_at, d.digest_hi, d.digest_lo, d.ticks
FROM scheduler_tick_digests d
JOIN unnest($1::uuid[], $2::timestamptz[]) AS k(node_id, t)
  ON d.node_id = k.node_id AND d.scheduled_at = k.t";

/// Publishes `node_id`'s digests for these instants and drops its rows for
/// instants before `forget_before`.
pub async fn publish(
    client: &impl GenericClient,
    node_id: Uuid,
    digests: &[(DateTime<Utc>, Parts)],
    forget_before: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ticks: Vec<DateTime<Utc>> = digests.iter().map(|d| d.0).collect();
    let his: Vec<i64> = digests.iter().map(|d| d.1 .0).collect();
    let los: Vec<i64> = digests.iter().map(|d| d.1 .1).collect();
    let counts: Vec<i32> = digests.iter().map(|d| d.1 .2).collect();
    let stmt = client.prepare_cached(PUBLISH).await?;
    client
        .execute(
            &stmt,
            &[&node_id, &ticks, &his, &los, &counts, &forget_before],
        )
        .await?;
    Ok(())
}

/// The published digests of these (node, instant) pairs.
pub async fn fetch(
    client: &impl GenericClient,
    keys: &[(Uuid, DateTime<Utc>)],
) -> Result<HashMap<(Uuid, DateTime<Utc>), Parts>, StoreError> {
    let nodes: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let ticks: Vec<DateTime<Utc>> = keys.iter().map(|k| k.1).collect();
    let stmt = client.prepare_cached(FETCH).await?;
    let rows = client.query(&stmt, &[&nodes, &ticks]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get(0)?, r.try_get(1)?),
                (r.try_get(2)?, r.try_get(3)?, r.try_get(4)?),
            ))
        })
        .collect()
}
