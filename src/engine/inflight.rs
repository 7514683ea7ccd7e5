//! Which `scheduler_inflight` row lists each run this replica is running,
//! and how many of that row's runs have not ended yet — so that the result
//! of a row's last run deletes it in the same statement (no write of its
//! own, see `store::inflight`).
//!
//! The claimer and the pending-run taker record a row's runs once its
//! transaction has committed, before any of them can start; the completion
//! writer asks which rows a batch of results empties and, once the batch
//! is written, forgets those runs. A run recorded nowhere (there should be
//! none) leaves its row to the leader's sweep.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

/// The replica's in-flight rows; see the module docs.
#[derive(Debug, Default)]
pub struct InFlightRows {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Run → the row that lists it.
    row_of: HashMap<Uuid, Uuid>,
    /// Row → its runs not yet written as ended.
    open: HashMap<Uuid, usize>,
}

impl InFlightRows {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change below completes under the lock without panicking.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runs `runs` are listed by the row `claim_id`.
    pub fn record(&self, claim_id: Uuid, runs: impl IntoIterator<Item = Uuid>) {
        let mut state = self.state();
        let mut n = 0;
        for run in runs {
            if state.row_of.insert(run, claim_id).is_none() {
                n += 1;
            }
        }
        if n > 0 {
            *state.open.entry(claim_id).or_default() += n;
        }
    }

    /// The rows whose every open run is among `ended` (each run counted
    /// once): what a write of these results may delete. Changes nothing.
    pub fn emptied_by(&self, ended: &[Uuid]) -> Vec<Uuid> {
        let state = self.state();
        let mut ending: HashMap<Uuid, usize> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for run in ended {
            if !seen.insert(*run) {
                continue;
            }
            if let Some(row) = state.row_of.get(run) {
                *ending.entry(*row).or_default() += 1;
            }
        }
        ending
            .into_iter()
            .filter(|(row, n)| state.open.get(row) == Some(n))
            .map(|(row, _)| row)
            .collect()
    }

    /// The results of `ended` are written: forgets them, and the rows they
    /// emptied.
    pub fn written(&self, ended: &[Uuid]) {
        let mut state = self.state();
        for run in ended {
            let Some(row) = state.row_of.remove(run) else {
                continue;
            };
            if let Some(n) = state.open.get_mut(&row) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.open.remove(&row);
                }
            }
        }
    }

    /// Rows with runs still open.
    #[cfg(test)]
    fn open_rows(&self) -> usize {
        self.state().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_emptied_by_the_results_of_all_its_runs() {
        let flight = InFlightRows::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let runs: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let other = Uuid::now_v7();
        flight.record(a, runs.clone());
        flight.record(b, [other]);
        assert!(flight.emptied_by(&runs[..2]).is_empty());
        flight.written(&runs[..2]);
        // The last run, counted once however often it is listed.
        assert_eq!(flight.emptied_by(&[runs[2], runs[2]]), vec![a]);
        let mut both = flight.emptied_by(&[runs[2], other]);
        both.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(both, expected);
        flight.written(&[runs[2]]);
        assert_eq!(flight.open_rows(), 1);
        // Unknown runs empty nothing and are ignored.
        assert!(flight.emptied_by(&[Uuid::now_v7()]).is_empty());
        flight.written(&[other, Uuid::now_v7()]);
        assert_eq!(flight.open_rows(), 0);
    }
}
