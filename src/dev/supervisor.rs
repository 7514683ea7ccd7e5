//! The replicas as a group: wait until all are ready, watch them while they
//! run, and stop them — SIGTERM, then SIGKILL after the stop timeout (or at
//! a second signal) — until every one is reaped and its output flushed.
//!
//! Signals go through each replica's supervising task (`replica.rs`), so
//! only our own unreaped children are ever signalled, by PID, never by name.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::replica::{ExitReport, Replica, StopRequest};
use super::signals::Interrupts;
use super::{say_err, DevError};
use crate::pipeline;

/// How long each replica may take to report ready (`/readyz` 200).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the replicas' last log lines after they exit.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What ended a wait.
pub(super) enum Event {
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted,
    /// A replica exited; the sentence says which and how.
    Exited(String),
    /// The replicas could not be got going.
    Failed(DevError),
}

impl Event {
    fn from_exit(report: Option<ExitReport>, replicas: &mut [Replica]) -> Event {
        match report {
            Some((index, status)) => Event::Exited(record_exit(replicas, index, status)),
            None => Event::Failed(DevError::Replica(
                "lost track of the replicas (their supervisors ended)".into(),
            )),
        }
    }
}

/// Notes a replica's exit; returns a sentence about it.
fn record_exit(
    replicas: &mut [Replica],
    index: usize,
    status: std::io::Result<ExitStatus>,
) -> String {
    let how = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("cannot be waited for: {e}"),
    };
    match replicas.get_mut(index) {
        Some(r) => {
            let sentence = format!("replica {} exited ({how}); see its lines above", r.name);
            r.exited = Some(how);
            sentence
        }
        None => format!("a replica exited ({how})"),
    }
}

/// Runs until a signal, or until no replica is left. A replica that exits
/// once all were up is reported and the others go on: killing one is how a
/// newcomer sees its ticks move to the others.
pub(super) async fn watch(
    replicas: &mut [Replica],
    exits: &mut mpsc::UnboundedReceiver<ExitReport>,
    interrupts: &mut Interrupts,
) -> Event {
    loop {
        tokio::select! {
            exit = exits.recv() => match Event::from_exit(exit, replicas) {
                Event::Exited(message) if replicas.iter().any(|r| r.exited.is_none()) => {
                    say_err(&format!(
                        "{message}; the other replicas take over its ticks (Ctrl-C stops them all)"
                    ));
                }
                Event::Exited(message) => return Event::Exited(format!("{message}; no replica is left")),
                other => return other,
            },
            () = interrupts.next() => return Event::Interrupted,
        }
    }
}

/// Polls each replica's `/readyz` until all answer 200 (`None`), or returns
/// what came first: an exit, a signal, or [`READY_TIMEOUT`] passing.
pub(super) async fn wait_ready(
    replicas: &mut [Replica],
    exits: &mut mpsc::UnboundedReceiver<ExitReport>,
    interrupts: &mut Interrupts,
) -> Option<Event> {
    let client = match pipeline::http::build_client() {
        Ok(c) => c,
        Err(e) => {
            return Some(Event::Failed(DevError::Replica(format!(
                "HTTP client for the readiness checks: {e}"
            ))))
        }
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for r in replicas.iter_mut().filter(|r| !r.ready) {
            let url = format!("http://127.0.0.1:{}/readyz", r.port);
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            r.ready = answer.is_ok_and(|a| a.status().is_success());
        }
        if replicas.iter().all(|r| r.ready) {
            return None;
        }
        if Instant::now() >= deadline {
            let slow: Vec<&str> = replicas
                .iter()
                .filter(|r| !r.ready)
                .map(|r| r.name.as_str())
                .collect();
            return Some(Event::Failed(DevError::Replica(format!(
                "replica(s) {} not ready within {}s (GET /readyz); see their lines above",
                slow.join(", "),
                READY_TIMEOUT.as_secs()
            ))));
        }
        tokio::select! {
            exit = exits.recv() => return Some(Event::from_exit(exit, replicas)),
            () = interrupts.next() => return Some(Event::Interrupted),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// SIGTERM to every replica still running; SIGKILL to those still running
/// after `timeout` (or at once on another signal). Returns when every
/// replica has been reaped and its output flushed.
pub(super) async fn stop(
    replicas: &mut [Replica],
    exits: &mut mpsc::UnboundedReceiver<ExitReport>,
    interrupts: &mut Interrupts,
    timeout: Duration,
) {
    for r in replicas.iter().filter(|r| r.exited.is_none()) {
        let _ = r.stop.send(StopRequest::Term);
    }
    let mut deadline = Instant::now() + timeout;
    let mut killed = false;
    while replicas.iter().any(|r| r.exited.is_none()) {
        let kill = tokio::select! {
            exit = exits.recv() => match exit {
                Some((index, status)) => {
                    record_exit(replicas, index, status);
                    false
                }
                // Every supervisor is gone, so every process is reaped.
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                if killed {
                    // SIGKILL cannot be ignored; this only guards a hang of our own.
                    say_err("replicas did not report their exit after SIGKILL; giving up waiting");
                    break;
                }
                let slow: Vec<&str> = replicas.iter().filter(|r| r.exited.is_none()).map(|r| r.name.as_str()).collect();
                say_err(&format!("{} still running after {}s: killing", slow.join(", "), timeout.as_secs_f32()));
                true
            }
            () = interrupts.next(), if !killed => {
                say_err("second signal: killing the replicas");
                true
            }
        };
        if kill && !killed {
            killed = true;
            deadline = Instant::now() + Duration::from_secs(10);
            for r in replicas.iter().filter(|r| r.exited.is_none()) {
                let _ = r.stop.send(StopRequest::Kill);
            }
        }
    }
    for r in replicas.iter_mut() {
        for log in r.logs.drain(..) {
            // A grandchild could hold the pipe open; don't wait for it forever.
            let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, log).await;
        }
    }
    let stopped: Vec<String> = replicas
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.name,
                r.exited.as_deref().unwrap_or("state unknown")
            )
        })
        .collect();
    if !stopped.is_empty() {
        say_err(&format!("replicas stopped: {}", stopped.join(", ")));
    }
}
