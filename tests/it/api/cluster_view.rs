//! `GET /v1/cluster` shows every replica's clock offset, not only the
//! answering one's: each replica records its estimate with its heartbeat.

use std::time::Duration;

use crate::api_replica::{start_api_replica_with, Http, PIPELINE, READER};
use crate::harness::{eventually, TestDb};
use crate::replica::temp_dir;

#[tokio::test]
async fn every_replicas_clock_offset_is_in_the_cluster_view() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("cluster-offsets");
    let pipelines = [(PIPELINE, "0s")];
    let plain = start_api_replica_with(&db.url, &dir, "offset-plain", &pipelines, &[]).await;
    // A replica whose clock runs 3 s behind the database's (test-only flag).
    let skewed = start_api_replica_with(
        &db.url,
        &dir,
        "offset-skewed",
        &pipelines,
        &["--test-clock-skew", "-3s"],
    )
    .await;
    let http = Http::new();
    // Asked of the plain replica, the skewed one's offset (from its
    // heartbeat) is about +3 s: the database clock minus its own.
    eventually(
        Duration::from_secs(20),
        "the skewed replica's offset",
        || {
            let (http, base) = (http.clone(), plain.base.clone());
            async move {
                let view = http.get(&base, "/v1/cluster", Some(READER)).await.json();
                let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
                let offset = |host: &str| {
                    nodes
                        .iter()
                        .find(|n| n["hostname"] == host)
                        .and_then(|n| n["clock_offset_seconds"].as_f64())
                };
                let got = (offset("offset-plain"), offset("offset-skewed"));
                let holds = matches!(got, (Some(mine), Some(other))
                if mine.abs() < 1.0 && (other - 3.0).abs() < 1.0);
                if !holds {
                    eprintln!("offsets (plain, skewed) so far: {got:?}");
                }
                holds
            }
        },
    )
    .await;
    assert!(skewed.replica.terminate(Duration::from_secs(30)));
    assert!(plain.replica.terminate(Duration::from_secs(30)));
}
