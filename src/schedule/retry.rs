//! Retry policy: how often and how soon a failed run is tried again.

use std::time::Duration;

use super::{ValidationError, MAX_POLICY_DURATION};

/// Largest `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 100;

/// Exponential backoff with a cap. `max_attempts` counts the first run, so the
/// default of 1 means "never retry" (the seed had no retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Duration,
    backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// A policy of at most `max_attempts` runs per tick, waiting `backoff`
    /// before the first retry and doubling up to `backoff_max`.
    pub fn new(
        max_attempts: u32,
        backoff: Duration,
        backoff_max: Duration,
    ) -> Result<Self, ValidationError> {
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(ValidationError::new(
                "retry.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}, got {max_attempts}"),
            ));
        }
        for (field, d) in [
            ("retry.backoff", backoff),
            ("retry.backoff_max", backoff_max),
        ] {
            if d > MAX_POLICY_DURATION || d.subsec_nanos() != 0 {
                return Err(ValidationError::new(
                    field,
                    "must be a whole number of seconds, at most 7 days",
                ));
            }
        }
        if backoff_max < backoff {
            return Err(ValidationError::new(
                "retry.backoff_max",
                "must not be shorter than retry.backoff",
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            backoff,
            backoff_max,
        })
    }

    /// Total runs allowed per tick, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// Wait before the first retry.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
    /// Upper bound on any wait.
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }

    /// The wait before attempt `next_attempt` (2 = first retry), or `None`
    /// when the policy allows no such attempt.
    pub fn delay_before(&self, next_attempt: u32) -> Option<Duration> {
        if next_attempt < 2 || next_attempt > self.max_attempts {
            return None;
        }
        let doublings = (next_attempt - 2).min(32);
        let delay = self
            .backoff
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.backoff_max);
        Some(delay.min(self.backoff_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() -> Result<(), ValidationError> {
        let p = RetryPolicy::new(6, Duration::from_secs(10), Duration::from_secs(60))?;
        let delays: Vec<Option<u64>> = (1..=7)
            .map(|a| p.delay_before(a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            [None, Some(10), Some(20), Some(40), Some(60), Some(60), None]
        );
        assert_eq!(RetryPolicy::default().delay_before(2), None);
        Ok(())
    }

    #[test]
    fn bad_policies_are_refused() {
        let s = Duration::from_secs;
        assert!(RetryPolicy::new(0, s(1), s(1)).is_err());
        assert!(RetryPolicy::new(3, s(10), s(5)).is_err());
        assert!(RetryPolicy::new(101, s(1), s(1)).is_err());
    }
}
