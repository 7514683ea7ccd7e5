//! The admin API end to end: real `serve` processes, real HTTP on loopback,
//! real Postgres, one module per concern. Every error case also checks that
//! the tables are untouched.

use tokio_postgres::Client;

mod auth;
mod cluster_view;
mod compat;
mod controls;
mod errors;
mod openapi;
mod schedules;
mod schemathesis;

/// Everything stored, as text: the schedules (every column) and the ledger.
async fn snapshot(c: &Client) -> (Vec<String>, Vec<String>) {
    let schedules = c
        .query(
            "SELECT to_jsonb(s)::text FROM scheduler_schedules s ORDER BY name",
            &[],
        )
        .await
        .expect("schedules snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let runs = c
        .query(
            "SELECT run_id::text || ' ' || schedule_name || ' ' || trigger \
             FROM scheduler_runs ORDER BY run_id",
            &[],
        )
        .await
        .expect("runs snapshot")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (schedules, runs)
}
