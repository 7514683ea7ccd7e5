//! One crontab field read the way cronie reads it, then written out for
//! `croner`, which only matches.
//!
//! The source is cronie master's `src/entry.c` (`get_list`, `get_range`,
//! `get_number`, `set_element`, and `load_entry` for the field order,
//! bounds and names). Its rules, and what we do with each:
//!
//! * `list = range {"," range}`; every item is one of `*`, `*/step`,
//!   `number`, `number-number` or `number-number/step`. An empty item (`1,`,
//!   `1,,2`) and a single number with a step (`5/15`) are errors, in cronie
//!   and here. (`croner` alone accepts the first.)
//! * **`*` is an item like any other**: `*` means `low-high` and may take a
//!   step, also inside a list (`*,5`, `*/20,5`). `croner` refuses `*` in a
//!   list, so it gets `low-high` there.
//! * **Names** (`get_number`): case-insensitive, three letters, looked up in
//!   the field's table — months `JAN`=1 … `DEC`=12, days `SUN`=0 … `SAT`=6
//!   (cronie's `DowNames` lists `Sun` again at 7, but the lookup stops at the
//!   first match, so `SUN` is always 0). A name anywhere — alone, at either
//!   end of a range — stands for that number and nothing else. `croner`
//!   rewrites a `-SUN` to `-7`, which makes `SUN-SUN` every day (cronie:
//!   Sunday only) and `MON-SUN/2` Monday, Wednesday, Friday and Sunday; so
//!   every name reaches `croner` as its number.
//! * **A range ending at 0** (`get_range`, state `R_RANGE_NUM2`): when the
//!   end is 0, the start is greater and *no step follows*, the end is read as
//!   7. In day-of-week that is Sunday, so `6-0` (and `SAT-SUN`) is Saturday
//!   and Sunday, `1-0` Monday to Sunday, `7-0` Sunday; `0-0` and `SUN-SUN`
//!   stay Sunday only. With a step the end stays 0: `MON-SUN/2` is `1-0/2`.
//!   cronie applies the rewrite in every field (so minute `5-0` is minutes
//!   5–7 there); outside day-of-week that is an accident of the day-of-week
//!   fix, and we refuse such a range as reversed instead.
//! * **A reversed range** (start greater than end, after the rule above)
//!   sets no value in cronie: `5-3`, `22-2` or `MON-SUN/2` are accepted and
//!   silently never match. We refuse them, saying so.
//! * **Bounds**: cronie checks only the values a range actually sets, so
//!   `50-61/15` (minutes 50 only) passes there. We refuse any number outside
//!   the field's bounds. A step larger than the range is accepted (cronie
//!   only warns): the range's first value alone.
//! * `~` (cronie's random value) is refused: every replica must compute the
//!   same ticks.
//!
//! Day-of-week 7 is folded onto 0 afterwards (by `croner`, as by
//! `load_entry`). The flags cronie derives from a field's *first character*
//! (`*` makes `MIN_STAR`, `HR_STAR`, `DOM_STAR`, `DOW_STAR`) are read from
//! the text as written by the caller, so `*,5` in day-of-week still sets
//! `DOW_STAR` and `5,*` does not.
//!
//! `croner`'s extensions (`L`, `W`, `#`, `?` in the day fields) are not
//! cronie's; items using them are passed to `croner` unchanged.

/// A field's bounds and names.
#[derive(Debug)]
pub(super) struct Spec {
    /// The field's name in messages.
    pub name: &'static str,
    /// Smallest value.
    pub low: u32,
    /// Largest value (7 for day-of-week: Sunday again).
    pub high: u32,
    /// Names: `names[i]` stands for `name_base + i` (cronie's `MonthNames`, `DowNames`).
    names: &'static [&'static str],
    /// The value of `names[0]`.
    name_base: u32,
    /// Whether `croner`'s day extensions may appear.
    extensions: Extensions,
    /// What the field allows, for messages.
    pub allowed: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
enum Extensions {
    None,
    DayOfMonth,
    DayOfWeek,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

pub(super) const SECOND: Spec = Spec {
    name: "second",
    low: 0,
    high: 59,
    names: &[],
    name_base: 0,
    extensions: Extensions::None,
    allowed: "0-59, lists, ranges, */steps",
};
pub(super) const MINUTE: Spec = Spec {
    name: "minute",
    allowed: "0-59, lists, ranges, */steps",
    ..SECOND
};
pub(super) const HOUR: Spec = Spec {
    name: "hour",
    high: 23,
    allowed: "0-23, lists, ranges, */steps",
    ..SECOND
};
pub(super) const DAY_OF_MONTH: Spec = Spec {
    name: "day-of-month",
    low: 1,
    high: 31,
    extensions: Extensions::DayOfMonth,
    allowed: "1-31, L, W, lists, ranges, */steps",
    ..SECOND
};
pub(super) const MONTH: Spec = Spec {
    name: "month",
    low: 1,
    high: 12,
    names: &MONTHS,
    name_base: 1,
    allowed: "1-12 or JAN-DEC, lists, ranges, */steps",
    ..SECOND
};
pub(super) const DAY_OF_WEEK: Spec = Spec {
    name: "day-of-week",
    low: 0,
    high: 7,
    names: &DAYS,
    name_base: 0,
    extensions: Extensions::DayOfWeek,
    allowed: "0-7 (0 and 7 are Sunday) or SUN-SAT, lists, ranges, */steps",
};

/// One item of a field, as `croner` is to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// Read by cronie's rules: the text `croner` reads the same way.
    Cronie(String),
    /// Uses a `croner` extension (`L`, `W`, `#`, `?`): passed on as written,
    /// for `croner` to check.
    Extension(String),
}

/// The field as `croner` is to read it: the items in order (a leading `+`,
/// `croner`'s day-of-week AND modifier, is kept in front of the first).
/// `Err` is what is wrong, in words.
pub(super) fn translate(spec: &Spec, text: &str) -> Result<(Option<char>, Vec<Item>), String> {
    let (prefix, body) = match text.strip_prefix('+') {
        Some(rest) if spec.extensions == Extensions::DayOfWeek => (Some('+'), rest),
        _ => (None, text),
    };
    let raw: Vec<&str> = body.split(',').collect();
    let alone = raw.len() == 1;
    let mut items = Vec::with_capacity(raw.len());
    for item in raw {
        if item.is_empty() {
            return Err("empty list item (a comma with nothing on one side)".to_string());
        }
        if item.contains('~') {
            return Err(format!(
                "{item:?}: cronie's random value (~) is not supported; every replica \
                 must compute the same ticks, so pick the value"
            ));
        }
        if is_extension(spec, item) {
            items.push(Item::Extension(item.to_string()));
        } else {
            items.push(Item::Cronie(read_item(spec, item, alone)?));
        }
    }
    Ok((prefix, items))
}

/// Joins translated items back into a field.
pub(super) fn join(prefix: Option<char>, items: &[Item]) -> String {
    let mut out = String::new();
    out.extend(prefix);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Item::Cronie(s) | Item::Extension(s) => out.push_str(s),
        }
    }
    out
}

/// Whether an item uses one of `croner`'s day extensions.
fn is_extension(spec: &Spec, item: &str) -> bool {
    let upper = item.to_ascii_uppercase();
    match spec.extensions {
        Extensions::None => false,
        Extensions::DayOfMonth => upper.contains(['L', 'W', '?']),
        Extensions::DayOfWeek => {
            upper.contains(['#', '?'])
                || upper
                    .split(|c: char| !c.is_ascii_alphabetic())
                    .any(|word| word == "L")
        }
    }
}

/// A range's parts as written.
struct Range<'a> {
    start: (u64, &'a str),
    end: Option<(u64, &'a str)>,
    step: Option<u64>,
}

/// One item by cronie's grammar, written out for `croner`. `alone`: the
/// item is the whole field (where `croner` reads `*` itself).
fn read_item(spec: &Spec, item: &str, alone: bool) -> Result<String, String> {
    let span = u64::from(spec.high - spec.low + 1);
    // Any step beyond the span selects the first value only, as a step of the span does.
    let step_text = |s: u64| s.min(span).to_string();
    if let Some(rest) = item.strip_prefix('*') {
        let step = match rest {
            "" => None,
            _ => match rest.strip_prefix('/') {
                Some(s) => Some(read_step(s)?),
                None => {
                    return Err(format!(
                        "{item:?}: `*` can only be followed by a step (*/n) or a comma"
                    ))
                }
            },
        };
        return Ok(match (alone, step) {
            (true, None) => "*".to_string(),
            (true, Some(s)) => format!("*/{}", step_text(s)),
            (false, None) => format!("{}-{}", spec.low, spec.high),
            (false, Some(s)) => format!("{}-{}/{}", spec.low, spec.high, step_text(s)),
        });
    }
    let range = parse_range(spec, item)?;
    let Some((end, end_text)) = range.end else {
        let (value, _) = range.start;
        if let Some(step) = range.step {
            return Err(format!(
                "{item:?}: a step needs `*` or a range before it (cronie refuses a single \
                 number with a step); write */{step} or {value}-{}/{step}",
                spec.high
            ));
        }
        check_bounds(spec, range.start)?;
        return Ok(value.to_string());
    };
    check_bounds(spec, range.start)?;
    let (start, _) = range.start;
    // cronie's R_RANGE_NUM2: an end of 0 below the start, with no step, is 7
    // (Sunday, in day-of-week). Applied to day-of-week only: see the module docs.
    let end = if spec.extensions == Extensions::DayOfWeek
        && range.step.is_none()
        && end == 0
        && start > end
    {
        7
    } else {
        end
    };
    check_bounds(spec, (end, end_text))?;
    if start > end {
        return Err(reversed(spec, item, start, end, end_text, range.step));
    }
    Ok(match range.step {
        None => format!("{start}-{end}"),
        Some(s) => format!("{start}-{end}/{}", step_text(s)),
    })
}

fn parse_range<'a>(spec: &Spec, item: &'a str) -> Result<Range<'a>, String> {
    let (head, step) = match item.split_once('/') {
        Some((head, step)) => (head, Some(read_step(step)?)),
        None => (item, None),
    };
    let mut parts = head.split('-');
    let start_text = parts.next().unwrap_or_default();
    let end_text = parts.next();
    if parts.next().is_some() {
        return Err(format!("{item:?}: a range has one `-` (start-end[/step])"));
    }
    let start = (read_value(spec, item, start_text)?, start_text);
    let end = match end_text {
        Some(t) => Some((read_value(spec, item, t)?, t)),
        None => None,
    };
    Ok(Range { start, end, step })
}

/// A number, or one of the field's names (cronie's `get_number`).
fn read_value(spec: &Spec, item: &str, text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than any field allows: out of bounds either way.
        return Ok(text.parse().unwrap_or(u64::MAX));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic()) {
        let upper = text.to_ascii_uppercase();
        if let Some(i) = spec.names.iter().position(|n| *n == upper) {
            return Ok(u64::from(spec.name_base) + i as u64);
        }
    }
    Err(format!(
        "{item:?} is not a value, a range (start-end) or a step (*/n, start-end/n)"
    ))
}

fn read_step(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step {text:?} is not a whole number"));
    }
    match text.parse::<u64>() {
        Ok(0) => Err("a step of 0 is not allowed (steps count from 1)".to_string()),
        Ok(n) => Ok(n),
        // More digits than fit: larger than any span, so the first value alone.
        Err(_) => Ok(u64::MAX),
    }
}

fn check_bounds(spec: &Spec, (value, text): (u64, &str)) -> Result<(), String> {
    if value < u64::from(spec.low) || value > u64::from(spec.high) {
        return Err(format!(
            "{text} is out of range (allowed: {})",
            spec.allowed
        ));
    }
    Ok(())
}

/// The message for a range whose start is after its end.
fn reversed(
    spec: &Spec,
    item: &str,
    start: u64,
    end: u64,
    end_text: &str,
    step: Option<u64>,
) -> String {
    if spec.extensions == Extensions::DayOfWeek && end == 0 {
        let step = step.unwrap_or(1);
        let sunday = if end_text.bytes().all(|b| b.is_ascii_digit()) {
            "0"
        } else {
            "SUN"
        };
        return format!(
            "range {item:?} is reversed and never matches: with a step, cronie reads {sunday} \
             at the end of a range as 0, not 7; end it at 7 instead: {start}-7/{step}"
        );
    }
    format!(
        "range {item:?} is reversed ({start} is after {end}) and never matches (cronie reads \
         it as no value at all); write {end}-{start}, or {start}-{},{}-{end} to wrap around",
        spec.high, spec.low
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dow(text: &str) -> Result<String, String> {
        translate(&DAY_OF_WEEK, text).map(|(p, items)| join(p, &items))
    }

    #[test]
    fn items_are_rewritten_only_where_croner_differs() {
        for (input, want) in [
            ("*", "*"),
            ("*/2", "*/2"),
            ("1-5", "1-5"),
            ("MON-FRI", "1-5"),
            ("6-0", "6-7"),
            ("sat-sun", "6-7"),
            ("1-0", "1-7"),
            ("7-0", "7-7"),
            ("0-0", "0-0"),
            ("SUN-SUN", "0-0"),
            ("SUN-SUN/2", "0-0/2"),
            ("*,5", "0-7,5"),
            ("*/3,5", "0-7/3,5"),
            ("5#2", "5#2"),
            ("FRI#L", "FRI#L"),
            ("5L", "5L"),
            ("+1-5", "+1-5"),
            ("*/99999999999999999999", "*/8"),
        ] {
            assert_eq!(dow(input).as_deref(), Ok(want), "{input}");
        }
        let minute = |t: &str| translate(&MINUTE, t).map(|(p, i)| join(p, &i));
        assert_eq!(minute("*/20,5").as_deref(), Ok("0-59/20,5"));
        assert_eq!(minute("*/100").as_deref(), Ok("*/60"));
        let month = |t: &str| translate(&MONTH, t).map(|(p, i)| join(p, &i));
        assert_eq!(month("jan-mar/2,Dec").as_deref(), Ok("1-3/2,12"));
    }

    #[test]
    fn what_cronie_refuses_or_never_matches_is_refused() {
        for (spec, input, says) in [
            (&DAY_OF_WEEK, "5-3", "reversed"),
            (&DAY_OF_WEEK, "MON-SUN/2", "end it at 7 instead: 1-7/2"),
            (
                &DAY_OF_WEEK,
                "6-0/1",
                "reads 0 at the end of a range as 0, not 7; end it at 7 instead: 6-7/1",
            ),
            (&HOUR, "22-2", "22-23,0-2"),
            (&MINUTE, "5-0", "reversed"),
            (&MONTH, "nov-jan", "reversed"),
            (&MINUTE, "50-61/15", "out of range"),
            (&DAY_OF_WEEK, "8", "out of range"),
            (&DAY_OF_MONTH, "0", "out of range"),
            (&MINUTE, "5/15", "*/15 or 5-59/15"),
            (&MINUTE, "1,", "empty list item"),
            (&MINUTE, "1,,2", "empty list item"),
            (&MINUTE, "*/0", "step of 0"),
            (&MINUTE, "*-5", "`*` can only be followed"),
            (&MINUTE, "1-2-3", "one `-`"),
            (&MINUTE, "~", "random"),
            (&MINUTE, "*/x", "not a whole number"),
            (&DAY_OF_WEEK, "MONDAY", "not a value"),
        ] {
            match translate(spec, input) {
                Err(reason) => assert!(reason.contains(says), "{input}: {reason}"),
                Ok(got) => panic!("{input} accepted as {got:?}"),
            }
        }
        let reason = translate(&DAY_OF_WEEK, "5-3").err().unwrap_or_default();
        assert!(!reason.contains("out of"), "{reason}");
    }
}
