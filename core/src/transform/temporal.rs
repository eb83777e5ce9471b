//! Date and time-of-day transforms. Parses by hand (no regex): this runs per record per field.
//!
//! Reads a stored date (`YYYY-MM-DD`), datetime (`YYYY-MM-DDTHH:MM[:SS]`, `T` or space), an hour
//! as a number, or the text a coarser-or-equal transform released (`2024-07`, `2024-Q3`, `2024`,
//! `2025-W01`, `Mon`, `06`, `06-11`), so transforms chain.

use super::{Cell, Transform, TransformError};
use std::borrow::Cow;
use time::{Date, Weekday};

/// Hour-band labels, one per six hours. Domain research names no bands; six-hour bands keep the
/// night-time economy (`18-23`, `00-05`) apart from the working day.
pub(super) const HOUR_BANDS: [&str; 4] = ["00-05", "06-11", "12-17", "18-23"];

const HOURS: [&str; 24] = [
    "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15",
    "16", "17", "18", "19", "20", "21", "22", "23",
];

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Years a date may have; the same window as `normalise::date`.
const YEARS: std::ops::RangeInclusive<i32> = 1800..=2200;

/// A parsed temporal value, at whatever precision it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Instant(Date, u8),
    Day(Date),
    Week(i32, u8),
    Month(i32, u8),
    Quarter(i32, u8),
    Year(i32),
    DayOfWeek(Weekday),
    Hour(u8),
    HourBand(u8),
}

/// Applies a date or time-of-day transform. Where the bucket is a prefix of the stored text
/// (`day`, `month`, `year` of a date or datetime, or a value already at that precision) the
/// output borrows it: no allocation.
pub(super) fn apply<'a>(t: Transform, cell: Cell<'a>) -> Result<Cow<'a, str>, TransformError> {
    let shape = TransformError::Shape { transform: t };
    let when = parse(t, cell)?;
    let src = match cell {
        Cell::Date(s) | Cell::Datetime(s) | Cell::Text(s) => s,
        _ => "",
    };
    // `parse` accepted `src` only in its canonical shape, so these prefixes are the buckets.
    let prefix = |n: usize| src.get(..n).map(Cow::Borrowed).ok_or(shape);
    let day = match when {
        When::Instant(d, _) | When::Day(d) => Some(d),
        _ => None,
    };
    let out = match (t, when) {
        (Transform::Day, When::Instant(..) | When::Day(_)) => prefix(10)?,
        (Transform::Week, When::Week(..)) => prefix(8)?,
        (Transform::Week, _) => {
            let (y, w, _) = day.ok_or(shape)?.to_iso_week_date();
            Cow::Owned(label(y, "-W", w, 2))
        }
        (Transform::Month, When::Instant(..) | When::Day(_) | When::Month(..)) => prefix(7)?,
        (Transform::Quarter, When::Quarter(..)) => prefix(7)?,
        (Transform::Quarter, _) => {
            let (y, q) = quarter_of(when).ok_or(shape)?;
            Cow::Owned(label(y, "-Q", q, 1))
        }
        (
            Transform::Year,
            When::Instant(..) | When::Day(_) | When::Month(..) | When::Quarter(..) | When::Year(_),
        ) => prefix(4)?,
        (Transform::DayOfWeek, When::DayOfWeek(w)) => Cow::Borrowed(day_label(w)),
        (Transform::DayOfWeek, _) => Cow::Borrowed(day_label(day.ok_or(shape)?.weekday())),
        (Transform::Hour, When::Instant(_, h) | When::Hour(h)) => {
            Cow::Borrowed(HOURS[usize::from(h)])
        }
        (Transform::HourBand, When::Instant(_, h) | When::Hour(h) | When::HourBand(h)) => {
            Cow::Borrowed(HOUR_BANDS[usize::from(h / 6)])
        }
        _ => return Err(shape),
    };
    Ok(out)
}

fn month_of(w: When) -> Option<(i32, u8)> {
    match w {
        When::Instant(d, _) | When::Day(d) => Some((d.year(), u8::from(d.month()))),
        When::Month(y, m) => Some((y, m)),
        _ => None,
    }
}

fn quarter_of(w: When) -> Option<(i32, u8)> {
    match w {
        When::Quarter(y, q) => Some((y, q)),
        other => month_of(other).map(|(y, m)| (y, (m - 1) / 3 + 1)),
    }
}

fn parse(t: Transform, cell: Cell<'_>) -> Result<When, TransformError> {
    let shape = TransformError::Shape { transform: t };
    match cell {
        Cell::Date(s) => parse_date(s).map(When::Day).ok_or(shape),
        Cell::Datetime(s) => parse_datetime(s).ok_or(shape),
        Cell::Text(s) => parse_text(s).ok_or(shape),
        Cell::Int(h) if matches!(t, Transform::Hour | Transform::HourBand) => u8::try_from(h)
            .ok()
            .filter(|h| *h < 24)
            .map(When::Hour)
            .ok_or(TransformError::OutOfRange { transform: t }),
        other => Err(TransformError::WrongType {
            transform: t,
            got: other.kind(),
        }),
    }
}

fn parse_text(s: &str) -> Option<When> {
    let b = s.as_bytes();
    match b.len() {
        10 => parse_date(s).map(When::Day),
        16 | 19 => parse_datetime(s),
        4 => year(&b[..4]).map(When::Year),
        7 if b[4] == b'-' && b[5] == b'Q' => {
            let q = num(&b[6..7])? as u8;
            (1..=4)
                .contains(&q)
                .then_some(When::Quarter(year(&b[..4])?, q))
        }
        7 if b[4] == b'-' => {
            let m = num(&b[5..7])? as u8;
            (1..=12)
                .contains(&m)
                .then_some(When::Month(year(&b[..4])?, m))
        }
        8 if b[4] == b'-' && b[5] == b'W' => {
            let y = year(&b[..4])?;
            let w = num(&b[6..8])? as u8;
            (1..=time::util::weeks_in_year(y))
                .contains(&w)
                .then_some(When::Week(y, w))
        }
        2 => num(b).filter(|h| *h < 24).map(|h| When::Hour(h as u8)),
        5 => HOUR_BANDS
            .iter()
            .position(|l| *l == s)
            .map(|i| When::HourBand(i as u8 * 6)),
        3 => DAYS
            .iter()
            .position(|l| *l == s)
            .map(|i| When::DayOfWeek(Weekday::Monday.nth_next(i as u8))),
        _ => None,
    }
}

/// `YYYY-MM-DD`, a real calendar date.
fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let month = time::Month::try_from(num(&b[5..7])? as u8).ok()?;
    Date::from_calendar_date(year(&b[..4])?, month, num(&b[8..10])? as u8).ok()
}

/// `YYYY-MM-DDTHH:MM[:SS]` (or a space for `T`), a real date and time.
fn parse_datetime(s: &str) -> Option<When> {
    let b = s.as_bytes();
    if !matches!(b.len(), 16 | 19) || !matches!(b[10], b'T' | b' ') || b[13] != b':' {
        return None;
    }
    let date = parse_date(s.get(..10)?)?;
    let hour = num(&b[11..13]).filter(|h| *h < 24)?;
    num(&b[14..16]).filter(|m| *m < 60)?;
    if b.len() == 19 && (b[16] != b':' || num(&b[17..19]).filter(|s| *s < 60).is_none()) {
        return None;
    }
    Some(When::Instant(date, hour as u8))
}

fn year(b: &[u8]) -> Option<i32> {
    let y = i32::try_from(num(b)?).ok()?;
    YEARS.contains(&y).then_some(y)
}

/// ASCII decimal digits (at most 4) as a number.
fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `YYYY` + `sep` + `n` zero-padded to `width` digits, without the formatting machinery (this
/// runs per record). Years are four digits by construction (`YEARS`, ISO week-years within one).
fn label(year: i32, sep: &str, n: u8, width: usize) -> String {
    let mut out = String::with_capacity(4 + sep.len() + width);
    let y = year.unsigned_abs();
    for div in [1000, 100, 10, 1] {
        out.push(char::from(b'0' + ((y / div) % 10) as u8));
    }
    out.push_str(sep);
    if width == 2 {
        out.push(char::from(b'0' + n / 10));
    }
    out.push(char::from(b'0' + n % 10));
    out
}

fn day_label(w: Weekday) -> &'static str {
    DAYS[usize::from(w.number_days_from_monday())]
}
