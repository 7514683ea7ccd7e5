//! Jitter end to end: real replicas start each tick at the delay the
//! domain computes for it (`Schedule::jitter_delay`), the same whichever
//! replica claims it, and the ledger still has exactly one row per tick,
//! its `scheduled_at` the tick and its `started_at` the real start.

use std::time::Duration;

use chrono::{DateTime, Utc};
use spine_scheduler::schedule::Schedule;
use spine_scheduler::store::schedules;

use crate::harness::db_now;
use crate::replica::{audit, ticks};
use crate::test_cluster::TestCluster;

/// The ticks of `s` in `(from, to]`.
fn ticks_between(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut cursor = from;
    while let Some(t) = s.next_fire_after(cursor).filter(|t| *t <= to) {
        out.push(t);
        cursor = t;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_ticks_start_at_their_delay_once_each_on_any_replica() {
    let mut cluster = TestCluster::new("jitter", &[("test.record", "0s")]).await;
    let c = cluster.client().await;
    // 20 schedules every 10 s spread over 8 s, and 5 every 2 s whose
    // jitter (30 s) is longer than their interval: bounded by the gap.
    let mut all: Vec<Schedule> = (0..20)
        .map(|i| {
            Schedule::interval(
                &format!("spread{i:02}"),
                "test.record",
                Duration::from_secs(10),
            )
            .and_then(|s| s.with_jitter(Duration::from_secs(8)))
            .expect("valid")
        })
        .collect();
    all.extend((0..5).map(|i| {
        Schedule::cron(&format!("fast{i}"), "test.record", "*/2 * * * * *")
            .and_then(|s| s.with_jitter(Duration::from_secs(30)))
            .expect("valid")
    }));
    for s in &all {
        schedules::insert(&c, s).await.expect("insert");
    }
    cluster.start(3, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = db_now(&c).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Ticks up to 10 s ago have all fallen due (a delay is below 8 s) and
    // run.
    let to = db_now(&c).await - chrono::Duration::seconds(10);
    cluster.stop_all_within(Duration::from_secs(20));

    let mut wins = std::collections::BTreeMap::new();
    let mut delays = Vec::new();
    let mut worst = chrono::Duration::zero();
    let mut problems = Vec::new();
    for s in &all {
        let expected = ticks_between(s, from, to);
        let found = ticks(&c, s.name(), from, to).await;
        // One row per tick, none doubled, none missed or skipped.
        for (n, k) in audit(s.name(), &expected, &found, &["completed"]) {
            *wins.entry(n).or_insert(0) += k;
        }
        let rows = c
            .query(
                "SELECT scheduled_at, started_at FROM scheduler_runs \
                 WHERE schedule_name = $1 AND trigger = 'schedule' \
                   AND scheduled_at > $2 AND scheduled_at <= $3 ORDER BY scheduled_at",
                &[&s.name(), &from, &to],
            )
            .await
            .expect("rows");
        for r in rows {
            let tick: DateTime<Utc> = r.get(0);
            let started: Option<DateTime<Utc>> = r.get(1);
            let Some(started) = started else {
                problems.push(format!("{} {tick}: no started_at", s.name()));
                continue;
            };
            let want = s.jitter_delay(tick);
            let got = started - tick;
            // Never before its due instant (beyond the clock estimate's
            // error), and about when it fell due: the replicas agree.
            let off = got - want;
            worst = worst.max(off.abs());
            if off < chrono::Duration::milliseconds(-50)
                || off > chrono::Duration::milliseconds(400)
            {
                problems.push(format!(
                    "{} {tick}: started {} ms after the tick, its delay is {} ms",
                    s.name(),
                    got.num_milliseconds(),
                    want.num_milliseconds()
                ));
            }
            if let Some(next) = s.next_fire_after(tick) {
                assert!(
                    tick + want < next,
                    "{} {tick}: due at or past the next tick",
                    s.name()
                );
            }
            delays.push((s.name().starts_with("spread"), want.num_milliseconds()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Spread, not all near 0: the 10 s schedules' delays cover most of [0, 8 s).
    let spread: Vec<i64> = delays.iter().filter(|d| d.0).map(|d| d.1).collect();
    assert!(
        spread.len() >= 30,
        "window too short: {} rows",
        spread.len()
    );
    let (lo, hi) = (
        spread.iter().min().copied().unwrap_or(0),
        spread.iter().max().copied().unwrap_or(0),
    );
    assert!(spread.iter().all(|d| (0..8_000).contains(d)));
    assert!(hi - lo > 4_000, "delays {lo}..{hi} ms are not spread");
    let fast: Vec<i64> = delays.iter().filter(|d| !d.0).map(|d| d.1).collect();
    assert!(fast.iter().all(|d| (0..2_000).contains(d)), "{fast:?}");
    // More than one replica claimed: the delay is the same on each.
    assert!(wins.len() >= 2, "wins {wins:?}");
    println!(
        "jitter: {} rows, delays {lo}..{hi} ms, worst start off its due instant {} ms, wins {wins:?}",
        delays.len(),
        worst.num_milliseconds()
    );
}
