//! A brute-force reference of cronie, and the property test that holds
//! [`CronExpr`] to it over random expressions, zones and instants around
//! DST changes.
//!
//! Nothing here is shared with the implementation:
//!
//! * parsing is cronie master's `src/entry.c` ported state by state
//!   (`get_list`, `get_range`, `get_number`, `set_element`, the `*` flags and
//!   Sunday folding of `load_entry`), quirks included;
//! * a minute matches by `cron.c`'s rule (day-of-month and day-of-week are
//!   ORed unless either field starts with `*`);
//! * fire instants follow cron's DST rule: a wall time that does not exist
//!   fires a fixed-time job (no `*` first in minute or hour) at the first
//!   instant after the gap and a wildcard job never; a wall time that exists
//!   twice fires a fixed-time job on the first pass and a wildcard job on
//!   both;
//! * the next fire is found by enumerating wall-clock minutes, not by search.
//!
//! Where cronie accepts what we refuse by design (see `field`'s docs), the
//! reference says so ([`Entry::deviations`]) and the test expects a refusal.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};
use chrono_tz::Tz;

use super::{CronError, CronExpr};

/// cronie's bit strings for one entry, by value (`dow` 0–7, `month` 1–12).
#[derive(Debug)]
pub(super) struct Entry {
    minute: [bool; 60],
    hour: [bool; 24],
    dom: [bool; 32],
    month: [bool; 13],
    dow: [bool; 8],
    min_star: bool,
    hr_star: bool,
    dom_star: bool,
    dow_star: bool,
    /// What cronie accepted here that we refuse on purpose.
    pub deviations: Vec<&'static str>,
}

const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
// cronie's DowNames: Sunday twice; the lookup takes the first.
const DOW_NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A character stream with cronie's `get_char`/`unget_char`.
struct Stream {
    chars: Vec<char>,
    at: usize,
}

const EOF: Option<char> = None;

impl Stream {
    fn get(&mut self) -> Option<char> {
        let c = self.chars.get(self.at).copied();
        self.at += 1;
        c
    }
    fn unget(&mut self) {
        self.at -= 1;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Ast,
    Step,
    Terms,
    Num1,
    Range,
    RangeNum2,
    Random,
    Finish,
}

fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\n' | ' ' | ',')
}

struct Field<'a> {
    bits: &'a mut [bool],
    low: i64,
    high: i64,
    names: Option<&'a [&'a str]>,
    is_dow: bool,
}

/// cronie's `get_number`: an alnum run, a number if strtol takes all of it,
/// else a name (`i + low`).
fn get_number(s: &mut Stream, low: i64, names: Option<&[&str]>) -> Option<i64> {
    let mut temp = String::new();
    let mut ch = s.get();
    while let Some(c) = ch.filter(char::is_ascii_alphanumeric) {
        temp.push(c);
        ch = s.get();
    }
    s.unget();
    if temp.is_empty() {
        return None;
    }
    if temp.bytes().all(|b| b.is_ascii_digit()) {
        return temp.parse().ok();
    }
    let names = names?;
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(&temp))
        .map(|i| i as i64 + low)
}

/// cronie's `get_range`: the separator that ended the range, or `None` (EOF: error).
fn get_range(
    s: &mut Stream,
    f: &mut Field<'_>,
    deviations: &mut Vec<&'static str>,
) -> Option<char> {
    let (mut low_, mut high_, mut step) = (0, 0, 1);
    let mut state = State::Start;
    let mut ch = EOF;
    while state != State::Finish {
        ch = s.get();
        let c = ch?;
        state = match state {
            State::Start if c == '*' => {
                low_ = f.low;
                high_ = f.high;
                State::Ast
            }
            State::Start if c == '~' => State::Random,
            State::Start => {
                s.unget();
                low_ = get_number(s, f.low, f.names)?;
                State::Num1
            }
            State::Ast if c == '/' => State::Step,
            State::Ast | State::Terms if is_separator(c) => State::Finish,
            State::Step => {
                s.unget();
                step = get_number(s, 0, None).filter(|n| *n != 0)?;
                State::Terms
            }
            State::Num1 if c == '-' => State::Range,
            State::Num1 if c == '~' => State::Random,
            State::Num1 if is_separator(c) => {
                high_ = low_;
                State::Finish
            }
            State::Range => {
                s.unget();
                high_ = get_number(s, f.low, f.names)?;
                State::RangeNum2
            }
            State::RangeNum2 if c == '/' => State::Step,
            State::RangeNum2 => {
                if low_ > high_ && high_ == 0 {
                    high_ = 7;
                    if !f.is_dow {
                        deviations.push("a range ending at 0 outside day-of-week");
                    }
                }
                if !is_separator(c) {
                    return None;
                }
                State::Finish
            }
            // `~` picks a random value: refused here, as by the implementation.
            State::Random => {
                deviations.push("random value");
                return None;
            }
            _ => return None,
        };
    }
    if low_ > high_ {
        deviations.push("a reversed range (no value)");
    }
    let mut i = low_;
    while i <= high_ {
        if i < f.low || i > f.high {
            return None;
        }
        f.bits[(i - f.low) as usize] = true;
        i += step;
    }
    if high_ > f.high && low_ <= high_ {
        deviations.push("a range end out of bounds that no step reaches");
    }
    ch
}

/// cronie's `get_list` over one field's text (followed by a blank).
fn get_list(text: &str, f: &mut Field<'_>, deviations: &mut Vec<&'static str>) -> Option<()> {
    let mut s = Stream {
        chars: text.chars().chain([' ']).collect(),
        at: 0,
    };
    loop {
        match get_range(&mut s, f, deviations)? {
            ',' => continue,
            _ => return Some(()),
        }
    }
}

/// Parses a 5-field expression as cronie's `load_entry` does; `None` is
/// cronie's "bad minute/hour/…" (or a random value).
pub(super) fn parse(expr: &str) -> Option<Entry> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let [min, hr, dom, mon, dow] = fields[..] else {
        return None;
    };
    let mut dev = Vec::new();
    let mut minute = [false; 60];
    let mut hour = [false; 24];
    let mut dom_bits = [false; 31];
    let mut month = [false; 12];
    let mut dow_bits = [false; 8];
    let mut field = |text: &str, bits: &mut [bool], low, high, names, is_dow| {
        get_list(
            text,
            &mut Field {
                bits,
                low,
                high,
                names,
                is_dow,
            },
            &mut dev,
        )
    };
    field(min, &mut minute, 0, 59, None, false)?;
    field(hr, &mut hour, 0, 23, None, false)?;
    field(dom, &mut dom_bits, 1, 31, None, false)?;
    field(mon, &mut month, 1, 12, Some(&MONTH_NAMES), false)?;
    field(dow, &mut dow_bits, 0, 7, Some(&DOW_NAMES), true)?;
    let mut e = Entry {
        minute,
        hour,
        dom: [false; 32],
        month: [false; 13],
        dow: dow_bits,
        min_star: min.starts_with('*'),
        hr_star: hr.starts_with('*'),
        dom_star: dom.starts_with('*'),
        dow_star: dow.starts_with('*'),
        deviations: dev,
    };
    e.dom[1..].copy_from_slice(&dom_bits);
    e.month[1..].copy_from_slice(&month);
    // load_entry: "make sundays equivalent".
    if e.dow[0] || e.dow[7] {
        e.dow[0] = true;
        e.dow[7] = true;
    }
    Some(e)
}

impl Entry {
    /// cron.c's day test.
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dow = self.dow[d.weekday().num_days_from_sunday() as usize];
        let dom = self.dom[d.day() as usize];
        self.month[d.month() as usize]
            && if self.dom_star || self.dow_star {
                dow && dom
            } else {
                dow || dom
            }
    }

    fn fixed_time(&self) -> bool {
        !self.min_star && !self.hr_star
    }

    /// Whether no day in 28 years (the calendar's weekday cycle) matches.
    fn never_matches(&self) -> bool {
        let mut d = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
        for _ in 0..(28 * 366) {
            if self.day_matches(d) {
                return false;
            }
            d = d.succ_opt().unwrap_or(d);
        }
        true
    }

    /// The real instants a wall-clock minute fires at (cron's DST rule).
    fn instants(&self, wall: NaiveDateTime, tz: Tz) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, _) if self.fixed_time() => vec![a.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
            LocalResult::None if self.fixed_time() => {
                let mut w = wall;
                loop {
                    w += Duration::minutes(1);
                    match tz.from_local_datetime(&w) {
                        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                            return vec![t.with_timezone(&Utc)]
                        }
                        LocalResult::None => {}
                    }
                }
            }
            LocalResult::None => vec![],
        }
    }

    /// The first fire strictly after `after`, by enumerating wall minutes.
    pub(super) fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // A wall time and any instant it fires at are less than MARGIN apart.
        const MARGIN: Duration = Duration::hours(4);
        let local_after = after.with_timezone(&tz).naive_local();
        let from = local_after - MARGIN;
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        let mut day = from.date();
        for _ in 0..(30 * 366) {
            if self.day_matches(day) {
                for h in (0..24).filter(|h| self.hour[*h as usize]) {
                    for m in (0..60).filter(|m| self.minute[*m as usize]) {
                        let wall =
                            day.and_time(NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default());
                        if wall < from {
                            continue;
                        }
                        if let Some((_, best_wall)) = best {
                            if wall > best_wall + MARGIN {
                                return best.map(|(t, _)| t);
                            }
                        }
                        for t in self.instants(wall, tz) {
                            if t > after && best.is_none_or(|(b, _)| t < b) {
                                best = Some((t, t.with_timezone(&tz).naive_local()));
                            }
                        }
                    }
                }
            }
            if let Some((_, best_wall)) = best {
                if day.and_hms_opt(0, 0, 0).unwrap_or_default() > best_wall + MARGIN {
                    break;
                }
            }
            day = day.succ_opt()?;
        }
        best.map(|(t, _)| t)
    }
}

/// splitmix64: small, seedable, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }
}

/// A name in a random case (cronie and we read names case-insensitively).
fn random_case(rng: &mut Rng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.chance(50) {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// How to draw the values of one field.
struct Gen {
    /// Likely values (near DST changes, edges), tried most of the time.
    favourites: &'static [u64],
    /// Bounds values are drawn from otherwise (a bit wider than the field,
    /// so out-of-range values come up).
    low: u64,
    high: u64,
    names: &'static [&'static str],
    star_percent: u64,
}

fn value(rng: &mut Rng, g: &Gen) -> String {
    if !g.names.is_empty() && rng.chance(30) {
        let i = rng.below(g.names.len() as u64) as usize;
        return random_case(rng, g.names[i]);
    }
    let v = if rng.chance(70) {
        *rng.pick(g.favourites)
    } else {
        g.low + rng.below(g.high - g.low + 1)
    };
    v.to_string()
}

fn item(rng: &mut Rng, g: &Gen) -> String {
    let step = |rng: &mut Rng| *rng.pick(&[1u64, 2, 2, 3, 5, 7, 10, 15, 20, 30, 100]);
    match rng.below(100) {
        0..=9 => "*".to_string(),
        10..=19 => format!("*/{}", step(rng)),
        20..=54 => value(rng, g),
        55..=84 => format!("{}-{}", value(rng, g), value(rng, g)),
        85..=96 => format!("{}-{}/{}", value(rng, g), value(rng, g), step(rng)),
        // What both refuse.
        _ => rng
            .pick(&["5/15", "", "-5", "*-3", "1-", "**", "*/0", "x"])
            .to_string(),
    }
}

fn field(rng: &mut Rng, g: &Gen) -> String {
    if rng.chance(g.star_percent) {
        return if rng.chance(85) {
            "*".to_string()
        } else {
            format!("*/{}", rng.pick(&[2, 3, 5, 15]))
        };
    }
    let n = 1 + rng.below(3) * u64::from(rng.chance(40));
    (0..n).map(|_| item(rng, g)).collect::<Vec<_>>().join(",")
}

const MINUTE: Gen = Gen {
    favourites: &[0, 0, 1, 15, 29, 30, 30, 45, 59],
    low: 0,
    high: 61,
    names: &[],
    star_percent: 25,
};
const HOUR: Gen = Gen {
    favourites: &[0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 22, 23],
    low: 0,
    high: 24,
    names: &[],
    star_percent: 30,
};
const DOM: Gen = Gen {
    favourites: &[1, 7, 8, 13, 14, 15, 29, 30, 31],
    low: 0,
    high: 32,
    names: &[],
    star_percent: 65,
};
const MONTH: Gen = Gen {
    favourites: &[3, 4, 9, 10, 11, 12, 1],
    low: 0,
    high: 13,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    star_percent: 70,
};
const DOW: Gen = Gen {
    favourites: &[0, 0, 1, 5, 6, 7, 7],
    low: 0,
    high: 8,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    star_percent: 45,
};

fn expression(rng: &mut Rng) -> String {
    // The vectors of the issue come up often on their own.
    let dow = if rng.chance(15) {
        rng.pick(&[
            "6-0",
            "1-0",
            "sun-sun",
            "SUN-SUN/2",
            "mon-sun/2",
            "*,5",
            "5,*",
            "7-0",
            "5-3",
            "sat-SUN",
            "0-0",
        ])
        .to_string()
    } else {
        field(rng, &DOW)
    };
    [
        field(rng, &MINUTE),
        field(rng, &HOUR),
        field(rng, &DOM),
        field(rng, &MONTH),
        dow,
    ]
    .join(" ")
}

/// Zones with DST changes of every kind: an hour at 02:00, at midnight
/// (the date itself changes), half an hour, two hours; and two without.
const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/Berlin",
    "America/Santiago",
    "America/Havana",
    "Australia/Lord_Howe",
    "Antarctica/Troll",
    "America/St_Johns",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "UTC",
];

/// The instants in 2026–2028 at which `tz`'s UTC offset changes.
fn transitions(tz: Tz) -> Vec<DateTime<Utc>> {
    let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix().local_minus_utc();
    let mut out = Vec::new();
    let mut t = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let end = Utc
        .with_ymd_and_hms(2029, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    while t < end {
        let next = t + Duration::hours(1);
        if offset(t) != offset(next) {
            // Down to the minute.
            let mut lo = t;
            while offset(lo + Duration::minutes(1)) == offset(t) {
                lo += Duration::minutes(1);
            }
            out.push(lo + Duration::minutes(1));
        }
        t = next;
    }
    out
}

#[test]
fn agrees_with_cronie_on_random_expressions_around_dst_changes() {
    let seed = std::env::var("SPINE_CRON_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C201);
    let cases: usize = std::env::var("SPINE_CRON_PROPERTY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let mut rng = Rng(seed);
    let zones: Vec<(Tz, Vec<DateTime<Utc>>)> = ZONES
        .iter()
        .map(|z| {
            let tz: Tz = z.parse().unwrap_or(Tz::UTC);
            (tz, transitions(tz))
        })
        .collect();
    let (mut compared, mut near_change, mut refused, mut deviating) = (0, 0, 0, 0);
    for case in 0..cases {
        let expr = expression(&mut rng);
        let what = format!("case {case} (seed {seed:#x}): {expr:?}");
        let reference = parse(&expr);
        let ours = CronExpr::parse(&expr);
        let (entry, ours) = match (reference, ours) {
            (None, Ok(_)) => panic!("{what}: cronie refuses it, we accept it"),
            (None, Err(_)) => {
                refused += 1;
                continue;
            }
            (Some(e), Err(err)) => {
                if e.deviations.is_empty() {
                    assert!(
                        err == CronError::NeverMatches && e.never_matches(),
                        "{what}: cronie accepts it, we refuse it: {err}"
                    );
                }
                deviating += 1;
                continue;
            }
            (Some(e), Ok(ours)) => {
                assert!(
                    e.deviations.is_empty(),
                    "{what}: accepted, but cronie reads it with {:?}",
                    e.deviations
                );
                (e, ours)
            }
        };
        for _ in 0..2 {
            let (tz, changes) = &zones[rng.below(zones.len() as u64) as usize];
            let mut after = match changes.is_empty() || rng.chance(10) {
                true => {
                    Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                        .single()
                        .unwrap_or_default()
                        + Duration::minutes(rng.below(3 * 366 * 1440) as i64)
                }
                false => {
                    *rng.pick(changes) + Duration::minutes(rng.below(72 * 60) as i64 - 36 * 60)
                }
            };
            if rng.chance(20) {
                after += Duration::seconds(rng.below(60) as i64);
            }
            for step in 0..4 {
                let want = entry.next_after(after, *tz);
                let got = ours.next_after(after, *tz);
                assert_eq!(
                    got.map(|t| t.with_timezone(tz).to_rfc3339()),
                    want.map(|t| t.with_timezone(tz).to_rfc3339()),
                    "{what} in {tz}, fire {step} after {} ({})",
                    after.with_timezone(tz).to_rfc3339(),
                    after
                );
                let Some(next) = want else { break };
                compared += 1;
                if changes
                    .iter()
                    .any(|c| (next - *c).abs() <= Duration::hours(3))
                {
                    near_change += 1;
                }
                after = next;
            }
        }
    }
    eprintln!(
        "{cases} expressions: {compared} fires compared ({near_change} within 3 h of a DST \
         change), {refused} refused by both, {deviating} refused by design"
    );
    // Not vacuous: every outcome came up, and many fires fell near a change.
    assert!(
        compared > cases
            && near_change > cases / 10
            && refused > cases / 50
            && deviating > cases / 50,
        "compared {compared}, near a DST change {near_change}, refused by both {refused}, \
         refused by design {deviating}"
    );
}
