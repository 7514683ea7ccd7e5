//! Times as people read them at a glance: `in 4 s`, `3 min ago`,
//! `2 h 5 min ago`, `3 d ago`.

use chrono::{DateTime, Utc};

/// `t` relative to `now`: `now` within half a second, else `in …` or
/// `… ago` in the largest unit that fits (with the next one below a day,
/// so `1 h 30 min` does not read as `1 h`).
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let millis = (t - now).num_milliseconds();
    if millis.abs() < 500 {
        return "now".to_string();
    }
    // Rounded to the nearest second: 4.6 s ahead reads `in 5 s`.
    let span = span((millis.unsigned_abs() + 500) / 1000);
    if millis > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A length of time in whole `seconds`, in at most two units.
pub fn span(seconds: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    match seconds {
        s if s < MIN => format!("{s} s"),
        s if s < HOUR => two(s / MIN, "min", s % MIN, "s"),
        s if s < DAY => two(s / HOUR, "h", s % HOUR / MIN, "min"),
        s => two(s / DAY, "d", s % DAY / HOUR, "h"),
    }
}

/// `3 min 4 s`, or `3 min` when the smaller part is 0.
fn two(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big} {big_unit}")
    } else {
        format!("{big} {big_unit} {small} {small_unit}")
    }
}

/// A run's duration in seconds: `0.25 s` below ten seconds (runs are often
/// short), whole units above.
pub fn duration(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        // Durations are non-negative and far below u64::MAX seconds.
        span(seconds.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn past_and_future_read_naturally() {
        let now = Utc::now();
        let at = |ms: i64| relative(now + Duration::milliseconds(ms), now);
        assert_eq!(at(0), "now");
        assert_eq!(at(-499), "now");
        assert_eq!(at(4_000), "in 4 s");
        assert_eq!(at(4_600), "in 5 s");
        assert_eq!(at(-180_000), "3 min ago");
        assert_eq!(at(-184_000), "3 min 4 s ago");
        assert_eq!(at(5_400_000), "in 1 h 30 min");
        assert_eq!(at(-3 * 86_400_000 - 3_600_000), "3 d 1 h ago");
    }

    #[test]
    fn durations_keep_fractions_only_when_short() {
        assert_eq!(duration(0.254), "0.25 s");
        assert_eq!(duration(12.4), "12 s");
        assert_eq!(duration(125.0), "2 min 5 s");
    }
}
