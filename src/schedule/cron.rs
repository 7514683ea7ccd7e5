//! Crontab expressions read the way Vixie cron and cronie read them.
//!
//! We use `croner` as the field matcher (it reads day-of-week the POSIX way:
//! 0 and 7 are Sunday, `1-5` is Monday to Friday) but never let it decide
//! anything about time zones. Its DST policy classifies a job as "fixed time"
//! only when second, minute and hour are single values, so `30 2,14 * * *`
//! would be skipped on a spring-forward day and fire twice on a fall-back day.
//! Instead `croner` walks *wall-clock* time (naive date-times, no zone) and
//! this module maps every wall-clock match onto real instants with cron's own
//! rule (cronie `cron.c`):
//!
//! * a **fixed-time** job (neither the minute nor the hour field starts with
//!   `*`) whose local time falls in a spring-forward gap runs once, at the
//!   first instant after the jump; whose local time repeats runs once, on the
//!   first pass;
//! * a **wildcard** job (minute or hour starts with `*`) follows real time:
//!   a skipped wall time never fires, a repeated one fires on both passes.
//!
//! Three more places where we wrap `croner` to match crontab:
//!
//! * every field is read by cronie's grammar first (`field`, after cronie
//!   master's `entry.c`): `*` inside a list, day-of-week ranges ending at 0
//!   (`6-0` is Saturday and Sunday), names that stand for their own number
//!   (`SUN-SUN` is Sunday only), and reversed ranges, which cronie silently
//!   reads as no value, refused saying so. `croner` gets the field rewritten
//!   only where it would read it differently.
//! * day-of-month/day-of-week: cron ORs them only when *neither* field
//!   starts with `*`; `croner` treats `*/2` as restricted. We switch croner to
//!   AND mode whenever either field starts with `*` (`*` itself is then
//!   neutral, exactly as in cronie).
//! * names are checked per field (`MON` in the month field is an error, not
//!   January), and every error names the field and its column.
//!
//! `reference` (tests only) holds all of this to a brute-force port of
//! cronie over random expressions, zones and instants around DST changes.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

mod field;
#[cfg(test)]
mod reference;

/// Why a cron expression was refused, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The expression is empty or only whitespace.
    #[error("cron expression is empty")]
    Empty,
    /// Not 5 or 6 whitespace-separated fields.
    #[error("cron expression has {found} fields; expected 5 (min hour dom month dow) or 6 (sec min hour dom month dow)")]
    FieldCount {
        /// How many fields were found.
        found: usize,
    },
    /// An `@macro` that crontab does not define (or that we cannot honour, like `@reboot`).
    #[error("unknown macro {macro_name:?}; expected one of @yearly @annually @monthly @weekly @daily @midnight @hourly")]
    UnknownMacro {
        /// The macro as written.
        macro_name: String,
    },
    /// One field is malformed or out of range.
    #[error("invalid {field} field {token:?} at column {column}: {reason}")]
    Field {
        /// The field's name (`minute`, `hour`, `day-of-month`, ...).
        field: &'static str,
        /// The offending token as written.
        token: String,
        /// 1-based character column where the token starts.
        column: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The fields are individually valid but no date can ever match (e.g. `0 0 30 2 *`).
    #[error("cron expression never matches any date")]
    NeverMatches,
}

/// How a job behaves across a DST change (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstPolicy {
    /// Minute and hour are fixed: a skipped time runs after the jump, a repeated one runs once.
    FixedTime,
    /// Minute or hour is a wildcard: follows real time.
    Wildcard,
}

/// A parsed, validated crontab expression.
#[derive(Clone)]
pub struct CronExpr {
    source: String,
    // Shared: schedules are cloned into the engine's queue and the API's views.
    matcher: Arc<Cron>,
    policy: DstPolicy,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronExpr")
            .field("source", &self.source)
            .field("policy", &self.policy)
            .finish()
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const FIELDS_5: [&field::Spec; 5] = [
    &field::MINUTE,
    &field::HOUR,
    &field::DAY_OF_MONTH,
    &field::MONTH,
    &field::DAY_OF_WEEK,
];
const FIELDS_6: [&field::Spec; 6] = [
    &field::SECOND,
    &field::MINUTE,
    &field::HOUR,
    &field::DAY_OF_MONTH,
    &field::MONTH,
    &field::DAY_OF_WEEK,
];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// How far (in wall-clock time) a DST shift can move a local time. Real
/// zones shift by at most two hours; three leaves a margin.
const MAX_DST_SHIFT: Duration = Duration::hours(3);

impl CronExpr {
    /// Parses a 5-field crontab line, a 6-field line with leading seconds, or an `@macro`.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        // Installations reuse a handful of expressions across thousands of
        // schedules, and croner's parse (tens of µs) dominated loading
        // 100,000 schedules and listing them: parse each distinct text once.
        if let Some(hit) = cache::get(expr) {
            return Ok(hit);
        }
        let parsed = Self::parse_uncached(expr)?;
        cache::put(expr, &parsed);
        Ok(parsed)
    }

    fn parse_uncached(expr: &str) -> Result<Self, CronError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        let expanded = if trimmed.starts_with('@') {
            expand_macro(trimmed)?.to_string()
        } else {
            trimmed.to_string()
        };
        let tokens = tokenize(expr, &expanded);
        let specs: &[&field::Spec] = match tokens.len() {
            5 => &FIELDS_5,
            6 => &FIELDS_6,
            found => return Err(CronError::FieldCount { found }),
        };
        // Normalise to six fields (seconds first) so field indices are fixed:
        // `fields` as written (cronie's `*` flags are read from them), and
        // `readable` as croner is to read them (see `field`).
        let mut fields: Vec<&str> = tokens.iter().map(|t| t.text).collect();
        let mut readable: Vec<String> = Vec::with_capacity(6);
        if fields.len() == 5 {
            fields.insert(0, "0");
            readable.push("0".to_string());
        }
        for (token, spec) in tokens.iter().zip(specs) {
            let refuse = |reason: String| CronError::Field {
                field: spec.name,
                token: token.text.to_string(),
                column: token.column,
                reason,
            };
            check_letters(spec.name, token.text).map_err(refuse)?;
            let (prefix, items) = field::translate(spec, token.text).map_err(refuse)?;
            let text = field::join(prefix, &items);
            // Parse the field alone (every other field `*`) to pin croner's
            // errors (its extensions) on it.
            let mut probe = ["*"; 6];
            probe[readable.len()] = &text;
            parser(false).parse(&probe.join(" ")).map_err(|e| {
                refuse(format!(
                    "{} (allowed: {})",
                    describe_croner_error(&e),
                    spec.allowed
                ))
            })?;
            readable.push(text);
        }
        let dom_and_dow = fields[3].starts_with('*') || fields[5].starts_with('*');
        let matcher = parser(dom_and_dow)
            .parse(&readable.join(" "))
            .map_err(|e| CronError::Field {
                field: "expression",
                token: trimmed.to_string(),
                column: 1,
                reason: describe_croner_error(&e),
            })?;
        let policy = if fields[1].starts_with('*') || fields[2].starts_with('*') {
            DstPolicy::Wildcard
        } else {
            DstPolicy::FixedTime
        };
        let parsed = CronExpr {
            source: trimmed.to_string(),
            matcher: Arc::new(matcher),
            policy,
        };
        // `0 0 30 2 *` parses but can never fire; refuse it now rather than
        // carry a schedule that silently never runs.
        let probe_from = NaiveDateTime::default();
        if parsed
            .matcher
            .find_next_occurrence(&probe_from, false)
            .is_err()
        {
            return Err(CronError::NeverMatches);
        }
        Ok(parsed)
    }

    /// The expression as the user wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this job is fixed-time or wildcard for DST purposes.
    pub fn dst_policy(&self) -> DstPolicy {
        self.policy
    }

    /// The first fire instant strictly after `after`, in zone `tz`.
    ///
    /// Returns `None` only when no wall-clock time matches within croner's
    /// search horizon (patterns like `0 0 29 2 1` that match rarely still work).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // A wall-clock time earlier than `after`'s own can still map to an
        // instant after it when the clocks fall back soon after `after`, so
        // start the wall-clock walk at the smallest offset in force nearby.
        let offset_now = utc_offset(tz, after);
        let offset_soon = utc_offset(tz, after + MAX_DST_SHIFT);
        let mut cursor = after.naive_utc() + offset_now.min(offset_soon);
        let mut best: Option<DateTime<Utc>> = None;
        // Bounded: at most one DST fold (an hour or two of matches) is walked
        // past before the first candidate beyond `after` ends the search.
        for _ in 0..100_000 {
            let wall = self.matcher.find_next_occurrence(&cursor, false).ok()?;
            let instants = self.instants_of(wall, tz);
            for instant in instants.iter().flatten() {
                if *instant > after && best.is_none_or(|b| *instant < b) {
                    best = Some(*instant);
                }
            }
            // Wall-clock order and real-time order agree for the *earliest*
            // instant of each wall time (see module docs), so once the earliest
            // instant of a candidate is past `after`, no later candidate can
            // beat what we have.
            if let Some(first) = instants[0] {
                if first > after {
                    return best;
                }
            }
            cursor = wall;
        }
        best
    }

    /// The real instants a matching wall-clock time stands for, earliest first.
    fn instants_of(&self, wall: NaiveDateTime, tz: Tz) -> [Option<DateTime<Utc>>; 2] {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => [Some(t.with_timezone(&Utc)), None],
            LocalResult::Ambiguous(first, second) => match self.policy {
                DstPolicy::FixedTime => [Some(first.with_timezone(&Utc)), None],
                DstPolicy::Wildcard => [
                    Some(first.with_timezone(&Utc)),
                    Some(second.with_timezone(&Utc)),
                ],
            },
            LocalResult::None => match self.policy {
                DstPolicy::FixedTime => [end_of_gap(wall, tz), None],
                DstPolicy::Wildcard => [None, None],
            },
        }
    }

    /// The next `count` fire instants strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count);
        let mut cursor = after;
        while out.len() < count {
            match self.next_after(cursor, tz) {
                Some(next) => {
                    out.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }
}

/// A bounded memo of parsed expressions (shared, immutable once parsed).
mod cache {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::CronExpr;

    /// Past this many distinct expressions the memo starts over: memory stays
    /// bounded whatever the input.
    const CAPACITY: usize = 4096;

    fn memo() -> &'static Mutex<HashMap<String, CronExpr>> {
        static MEMO: OnceLock<Mutex<HashMap<String, CronExpr>>> = OnceLock::new();
        MEMO.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub fn get(expr: &str) -> Option<CronExpr> {
        memo().lock().ok()?.get(expr).cloned()
    }

    pub fn put(expr: &str, parsed: &CronExpr) {
        if let Ok(mut m) = memo().lock() {
            if m.len() >= CAPACITY {
                m.clear();
            }
            m.insert(expr.to_string(), parsed.clone());
        }
    }
}

/// The first real instant after a spring-forward gap that swallowed `wall`.
fn end_of_gap(wall: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    // Gaps are whole minutes in every zone we can schedule in the future;
    // walk forward a minute at a time (at most a day, for Samoa's 2011 jump).
    let start = wall.with_second(0).unwrap_or(wall);
    (1..=24 * 60).find_map(
        |m| match tz.from_local_datetime(&(start + Duration::minutes(m))) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
            LocalResult::None => None,
        },
    )
}

fn utc_offset(tz: Tz, at: DateTime<Utc>) -> Duration {
    use chrono::Offset;
    let local = at.with_timezone(&tz);
    Duration::seconds(i64::from(local.offset().fix().local_minus_utc()))
}

fn parser(dom_and_dow: bool) -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(dom_and_dow)
        .build()
}

fn expand_macro(text: &str) -> Result<&'static str, CronError> {
    match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        _ => Err(CronError::UnknownMacro {
            macro_name: text.to_string(),
        }),
    }
}

struct Token<'a> {
    text: &'a str,
    column: usize,
}

/// Splits into whitespace-separated tokens with their 1-based columns in
/// `original` (for macros the columns all point at the macro itself).
fn tokenize<'a>(original: &str, expanded: &'a str) -> Vec<Token<'a>> {
    let is_macro = original.trim_start().starts_with('@');
    let lead = original.len() - original.trim_start().len();
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in expanded.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, &expanded[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &expanded[s..]));
    }
    out.into_iter()
        .map(|(byte, text)| Token {
            text,
            column: if is_macro {
                lead + 1
            } else {
                original[..lead + byte].chars().count() + 1
            },
        })
        .collect()
}

/// Letters are only allowed where crontab allows them: month names in the
/// month field, day names in the day-of-week field, and croner's `L`/`W`/`#`
/// extensions in the day fields.
fn check_letters(field: &str, token: &str) -> Result<(), String> {
    let upper = token.to_ascii_uppercase();
    let mut rest = upper.as_str();
    while let Some(pos) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        let word_len = rest[pos..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len() - pos);
        let word = &rest[pos..pos + word_len];
        let ok = match field {
            "month" => MONTH_NAMES.contains(&word),
            "day-of-week" => DAY_NAMES.contains(&word) || word == "L",
            "day-of-month" => word == "L" || word == "W" || word == "LW",
            _ => false,
        };
        if !ok {
            return Err(match field {
                "month" => format!("{word:?} is not a month name (JAN..DEC)"),
                "day-of-week" => format!("{word:?} is not a day name (SUN..SAT)"),
                _ => format!("letters are not allowed in the {field} field"),
            });
        }
        rest = &rest[pos + word_len..];
    }
    Ok(())
}

fn describe_croner_error(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match e {
        E::ComponentError(msg) | E::InvalidPattern(msg) | E::IllegalCharacters(msg) => {
            msg.trim_end_matches('.').to_lowercase()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("bad test instant {s}: {e}"))
    }

    fn tz(name: &str) -> Tz {
        name.parse()
            .unwrap_or_else(|e| panic!("bad zone {name}: {e}"))
    }

    fn fires(expr: &str, zone: &str, from: &str, n: usize) -> Vec<DateTime<Tz>> {
        let cron = CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let z = tz(zone);
        cron.upcoming(utc(from), z, n)
            .into_iter()
            .map(|t| t.with_timezone(&z))
            .collect()
    }

    fn local_strings(v: &[DateTime<Tz>]) -> Vec<String> {
        v.iter()
            .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
            .collect()
    }

    #[test]
    fn weekdays_one_to_five_are_monday_to_friday() {
        let got = fires("0 6 * * 1-5", "America/New_York", "2027-03-12T00:00:00Z", 5);
        assert_eq!(
            local_strings(&got),
            [
                "2027-03-12 06:00:00 EST",
                "2027-03-15 06:00:00 EDT",
                "2027-03-16 06:00:00 EDT",
                "2027-03-17 06:00:00 EDT",
                "2027-03-18 06:00:00 EDT",
            ]
        );
        assert_eq!(got[1].with_timezone(&Utc).hour(), 10);
        let many = fires("0 6 * * 1-5", "UTC", "2027-01-01T00:00:00Z", 200);
        assert!(many
            .iter()
            .all(|t| !matches!(t.weekday(), Weekday::Sat | Weekday::Sun)));
    }

    #[test]
    fn names_match_numbers() {
        for (a, b) in [
            ("0 6 * * MON-FRI", "0 6 * * 1-5"),
            ("0 0 1 JAN *", "0 0 1 1 *"),
            ("0 0 * * sun", "0 0 * * 0"),
            ("0 0 * * 7", "0 0 * * 0"),
            ("0 0 * * 0-7", "0 0 * * *"),
        ] {
            assert_eq!(
                fires(a, "UTC", "2027-01-01T00:00:00Z", 20),
                fires(b, "UTC", "2027-01-01T00:00:00Z", 20),
                "{a} vs {b}"
            );
        }
        let sundays = fires("0 0 * * 7", "UTC", "2027-01-01T00:00:00Z", 10);
        assert!(sundays.iter().all(|t| t.weekday() == Weekday::Sun));
    }

    #[test]
    fn dom_and_dow_both_restricted_is_or() {
        let got = fires("0 0 1,15 * 1", "UTC", "2027-03-31T00:00:00Z", 8);
        let days: Vec<String> = got
            .iter()
            .map(|t| t.format("%m-%d %a").to_string())
            .collect();
        // April 2027 starts on a Thursday: the 1st, the 15th and every Monday.
        assert_eq!(
            days,
            [
                "04-01 Thu",
                "04-05 Mon",
                "04-12 Mon",
                "04-15 Thu",
                "04-19 Mon",
                "04-26 Mon",
                "05-01 Sat",
                "05-03 Mon"
            ]
        );
        let got = fires("0 0 1,15 * 2", "UTC", "2027-01-31T00:00:00Z", 4);
        let days: Vec<String> = got
            .iter()
            .map(|t| t.format("%m-%d %a").to_string())
            .collect();
        assert_eq!(days, ["02-01 Mon", "02-02 Tue", "02-09 Tue", "02-15 Mon"]);
    }

    #[test]
    fn star_step_in_a_day_field_makes_it_and_like_cronie() {
        // cronie sets DOM_STAR for any field starting with '*', and then both
        // day fields must match: odd days that are Mondays.
        let got = fires("0 0 */2 * 1", "UTC", "2027-01-01T00:00:00Z", 4);
        assert!(got
            .iter()
            .all(|t| t.weekday() == Weekday::Mon && t.day() % 2 == 1));
    }

    #[test]
    fn lists_ranges_steps_and_seconds() {
        let got = fires("*/15 9-10 * * *", "UTC", "2027-01-01T00:00:00Z", 9);
        let hm: Vec<String> = got.iter().map(|t| t.format("%H:%M").to_string()).collect();
        assert_eq!(
            hm,
            ["09:00", "09:15", "09:30", "09:45", "10:00", "10:15", "10:30", "10:45", "09:00"]
        );
        let got = fires("*/20 * * * * *", "UTC", "2027-01-01T00:00:00Z", 4);
        let s: Vec<String> = got.iter().map(|t| t.format("%M:%S").to_string()).collect();
        assert_eq!(s, ["00:20", "00:40", "01:00", "01:20"]);
        let got = fires("0 8,12-13 * * *", "UTC", "2027-01-01T00:00:00Z", 3);
        let h: Vec<u32> = got.iter().map(|t| t.hour()).collect();
        assert_eq!(h, [8, 12, 13]);
    }

    #[test]
    fn macros() {
        let cases = [
            ("@yearly", "2028-01-01 00:00:00 UTC"),
            ("@annually", "2028-01-01 00:00:00 UTC"),
            ("@monthly", "2027-02-01 00:00:00 UTC"),
            ("@weekly", "2027-01-03 00:00:00 UTC"),
            ("@daily", "2027-01-02 00:00:00 UTC"),
            ("@midnight", "2027-01-02 00:00:00 UTC"),
            ("@hourly", "2027-01-01 01:00:00 UTC"),
        ];
        for (expr, want) in cases {
            let got = fires(expr, "UTC", "2027-01-01T00:00:00Z", 1);
            assert_eq!(local_strings(&got), [want], "{expr}");
        }
        assert!(matches!(
            CronExpr::parse("@reboot"),
            Err(CronError::UnknownMacro { .. })
        ));
    }

    #[test]
    fn spring_forward_fixed_time_runs_right_after_the_jump() {
        let got = fires("30 2 * * *", "America/New_York", "2027-03-13T12:00:00Z", 3);
        assert_eq!(
            local_strings(&got),
            [
                "2027-03-14 03:00:00 EDT",
                "2027-03-15 02:30:00 EDT",
                "2027-03-16 02:30:00 EDT"
            ]
        );
        // The same with a list, which croner on its own would skip.
        let got = fires(
            "30 2,14 * * *",
            "America/New_York",
            "2027-03-13T20:00:00Z",
            3,
        );
        assert_eq!(
            local_strings(&got),
            [
                "2027-03-14 03:00:00 EDT",
                "2027-03-14 14:30:00 EDT",
                "2027-03-15 02:30:00 EDT"
            ]
        );
        // Two skipped times map to the same instant: fired once.
        let got = fires(
            "0,30 2 * * *",
            "America/New_York",
            "2027-03-14T05:00:00Z",
            2,
        );
        assert_eq!(
            local_strings(&got),
            ["2027-03-14 03:00:00 EDT", "2027-03-15 02:00:00 EDT"]
        );
    }

    #[test]
    fn fall_back_fixed_time_runs_once() {
        let got = fires("30 1 * * *", "America/New_York", "2027-11-06T12:00:00Z", 3);
        assert_eq!(
            local_strings(&got),
            [
                "2027-11-07 01:30:00 EDT",
                "2027-11-08 01:30:00 EST",
                "2027-11-09 01:30:00 EST"
            ]
        );
        for expr in ["30 1,13 * * *", "30 1-2 * * *"] {
            let got = fires(expr, "America/New_York", "2027-11-07T00:00:00Z", 3);
            let once = got
                .iter()
                .filter(|t| t.format("%m-%d %H:%M").to_string() == "11-07 01:30")
                .count();
            assert_eq!(once, 1, "{expr}: {:?}", local_strings(&got));
        }
        // Asked from inside the second pass, the fixed job does not re-run.
        let got = fires("30 1 * * *", "America/New_York", "2027-11-07T06:10:00Z", 1);
        assert_eq!(local_strings(&got), ["2027-11-08 01:30:00 EST"]);
    }

    #[test]
    fn wildcard_jobs_follow_real_time_across_dst() {
        // Fall back: every real quarter hour exactly once, in order.
        let got = fires(
            "*/15 * * * *",
            "America/New_York",
            "2027-11-07T04:00:00Z",
            16,
        );
        let real: Vec<DateTime<Utc>> = got.iter().map(|t| t.with_timezone(&Utc)).collect();
        for pair in real.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::minutes(15), "{real:?}");
        }
        // Spring forward: nothing between 02:00 and 03:00 local, no gap in real time.
        let got = fires(
            "*/15 * * * *",
            "America/New_York",
            "2027-03-14T06:00:00Z",
            8,
        );
        let real: Vec<DateTime<Utc>> = got.iter().map(|t| t.with_timezone(&Utc)).collect();
        for pair in real.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::minutes(15));
        }
        assert!(got.iter().all(|t| t.hour() != 2));
        // A wildcard-minute job pinned to the repeated hour runs on both passes.
        let got = fires("0 * * * *", "America/New_York", "2027-11-07T04:30:00Z", 3);
        assert_eq!(
            local_strings(&got),
            [
                "2027-11-07 01:00:00 EDT",
                "2027-11-07 01:00:00 EST",
                "2027-11-07 02:00:00 EST"
            ]
        );
    }

    #[test]
    fn stepping_from_each_result_never_repeats_an_instant() {
        for expr in [
            "*/30 * * * *",
            "30 1 * * *",
            "0,30 1,2 * * *",
            "*/20 1 * * *",
        ] {
            let got = fires(expr, "America/New_York", "2027-11-06T20:00:00Z", 30);
            for pair in got.windows(2) {
                assert!(pair[0] < pair[1], "{expr}: {:?}", local_strings(&got));
            }
        }
    }

    #[test]
    fn errors_name_the_field_and_column() {
        match CronExpr::parse("0 25 * * *") {
            Err(CronError::Field {
                field,
                column,
                token,
                ..
            }) => {
                assert_eq!((field, column, token.as_str()), ("hour", 3, "25"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match CronExpr::parse("*/5  *  *  MON  *") {
            Err(CronError::Field { field, column, .. }) => {
                assert_eq!((field, column), ("month", 12));
            }
            other => panic!("unexpected {other:?}"),
        }
        match CronExpr::parse("0 6 * * 8") {
            Err(CronError::Field { field, column, .. }) => {
                assert_eq!((field, column), ("day-of-week", 9));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            CronExpr::parse("0 6 * *"),
            Err(CronError::FieldCount { found: 4 })
        ));
        assert!(matches!(
            CronExpr::parse("0 0 6 * * * 2030"),
            Err(CronError::FieldCount { found: 7 })
        ));
        assert!(matches!(CronExpr::parse("   "), Err(CronError::Empty)));
        assert!(matches!(
            CronExpr::parse("0 0 30 2 *"),
            Err(CronError::NeverMatches)
        ));
        assert!(CronExpr::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn dst_policy_follows_cronie() {
        let policy = |e: &str| CronExpr::parse(e).map(|c| c.dst_policy());
        assert_eq!(policy("30 2 * * *"), Ok(DstPolicy::FixedTime));
        assert_eq!(policy("30 2,14 * * *"), Ok(DstPolicy::FixedTime));
        assert_eq!(policy("*/15 9-16 * * 1-5"), Ok(DstPolicy::Wildcard));
        assert_eq!(policy("30 * * * *"), Ok(DstPolicy::Wildcard));
    }

    /// The weekdays a daily expression fires on over two weeks, Monday first.
    fn weekdays(expr: &str) -> Vec<String> {
        let mut days: Vec<Weekday> = fires(expr, "UTC", "2027-01-03T12:00:00Z", 14)
            .iter()
            .take_while(|t| t.day() <= 17)
            .map(|t| t.weekday())
            .collect();
        days.sort_by_key(|d| d.num_days_from_monday());
        days.dedup();
        days.iter().map(|d| d.to_string()).collect()
    }

    fn refusal(expr: &str) -> String {
        match CronExpr::parse(expr) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("{expr} accepted: {c:?}"),
        }
    }

    #[test]
    fn day_of_week_ranges_read_as_cronie_reads_them() {
        let all = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        for (expr, want) in [
            // A numeric range ending at 0 ends at 7 (cronie's R_RANGE_NUM2).
            ("0 0 * * 6-0", &["Sat", "Sun"][..]),
            ("0 0 * * 1-0", &all[..]),
            ("0 0 * * 7-0", &["Sun"][..]),
            ("0 0 * * 0-0", &["Sun"][..]),
            ("0 0 * * 5-7", &["Fri", "Sat", "Sun"][..]),
            // A name is its number wherever it stands: SUN is 0.
            ("0 0 * * SAT-SUN", &["Sat", "Sun"][..]),
            ("0 0 * * fri-sun", &["Fri", "Sat", "Sun"][..]),
            ("0 0 * * sun-sun", &["Sun"][..]),
            ("0 0 * * SUN-SUN/2", &["Sun"][..]),
            ("0 0 * * Sun-Wed", &["Mon", "Tue", "Wed", "Sun"][..]),
            ("0 0 * * 1-7/2", &["Mon", "Wed", "Fri", "Sun"][..]),
            ("0 0 * * mon-7/2", &["Mon", "Wed", "Fri", "Sun"][..]),
            // `*` is an item like any other, in a list too.
            ("0 0 * * *,5", &all[..]),
            ("0 0 * * 5,*", &all[..]),
            ("0 0 * * */2,1", &["Mon", "Tue", "Thu", "Sat", "Sun"][..]),
        ] {
            assert_eq!(weekdays(expr), want, "{expr}");
        }
    }

    #[test]
    fn a_star_in_a_list_keeps_cronies_star_flags() {
        // Minutes: all of `*/20` and 5.
        let got = fires("*/20,5 * * * *", "UTC", "2027-01-01T00:00:00Z", 4);
        let m: Vec<u32> = got.iter().map(|t| t.minute()).collect();
        assert_eq!(m, [5, 20, 40, 0]);
        // A day field *starting* with `*` sets cronie's DOM_STAR/DOW_STAR, so
        // the two day fields are ANDed: the 13th only. Not starting with `*`,
        // they are ORed, and `5,*` is every day.
        let thirteenth = fires("0 0 13 * *,5", "UTC", "2027-01-01T00:00:00Z", 3);
        assert!(thirteenth.iter().all(|t| t.day() == 13), "{thirteenth:?}");
        let every_day = fires("0 0 13 * 5,*", "UTC", "2027-01-01T00:00:00Z", 3);
        let days: Vec<u32> = every_day.iter().map(|t| t.day()).collect();
        assert_eq!(days, [2, 3, 4]);
        // The policy still follows the first character.
        assert_eq!(
            CronExpr::parse("*,30 2 * * *").map(|c| c.dst_policy()),
            Ok(DstPolicy::Wildcard)
        );
        assert_eq!(
            CronExpr::parse("30,* 2 * * *").map(|c| c.dst_policy()),
            Ok(DstPolicy::FixedTime)
        );
    }

    #[test]
    fn ranges_that_never_match_are_refused_saying_so() {
        for (expr, says) in [
            (
                "0 0 * * 5-3",
                "range \"5-3\" is reversed (5 is after 3) and never matches",
            ),
            ("0 22-2 * * *", "write 2-22, or 22-23,0-2 to wrap around"),
            ("0 0 1 nov-jan *", "is reversed"),
            // With a step cronie keeps the 0 (a name's own value): 1-0/2 sets nothing.
            (
                "0 0 * * mon-sun/2",
                "cronie reads SUN at the end of a range as 0, not 7; end it at 7 instead: 1-7/2",
            ),
            ("0 0 * * 6-0/1", "end it at 7 instead: 6-7/1"),
            // cronie's end-0 rule is for day-of-week; minutes 5-0 are refused.
            ("5-0 * * * *", "is reversed"),
        ] {
            let got = refusal(expr);
            assert!(got.contains(says), "{expr}: {got}");
            assert!(!got.contains("out of"), "{expr}: {got}");
        }
        for (expr, says) in [
            ("50-61/15 * * * *", "61 is out of range"),
            ("0 0 * * 8", "8 is out of range"),
            ("5/15 * * * *", "write */15 or 5-59/15"),
            ("1, * * * *", "empty list item"),
            ("0 0 * * 1,,2", "empty list item"),
            ("~ * * * *", "random value"),
            ("*/0 * * * *", "step of 0"),
        ] {
            let got = refusal(expr);
            assert!(got.contains(says), "{expr}: {got}");
        }
        // Column and field still point at the token.
        match CronExpr::parse("0 0 * * 5-3") {
            Err(CronError::Field { field, column, .. }) => {
                assert_eq!((field, column), ("day-of-week", 9));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn croner_extensions_still_work() {
        for (a, b) in [
            ("0 6 * * FRI#2", "0 6 * * 5#2"),
            ("0 6 * * FRI#L", "0 6 * * 5L"),
        ] {
            assert_eq!(
                fires(a, "UTC", "2027-01-01T00:00:00Z", 5),
                fires(b, "UTC", "2027-01-01T00:00:00Z", 5),
                "{a} vs {b}"
            );
        }
        assert!(CronExpr::parse("0 6 L * *").is_ok());
        assert!(CronExpr::parse("0 6 15W * *").is_ok());
        assert!(CronExpr::parse("0 6 1 * +MON").is_ok());
        assert!(CronExpr::parse("0 6 ? * MON").is_ok());
        assert!(CronExpr::parse("0 6 * * 5#6").is_err());
    }
}
