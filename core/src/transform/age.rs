//! Age transforms: Serious Violence bands and the under-25 flag (domain research part C).
//!
//! Reads an age in whole years, or text a coarser-or-equal transform released (a band label,
//! `true` / `false`), so transforms chain. Every band boundary falls on a whole year and 25 is a
//! boundary, so the under-25 flag of a band is well defined.

use super::{Cell, Transform, TransformError};

/// Oldest age accepted, in whole years.
pub(super) const MAX_AGE: i64 = 130;

/// Serious Violence age bands: (lowest age, highest age, label).
pub(super) const SV_BANDS: [(i64, i64, &str); 9] = [
    (0, 9, "0-9"),
    (10, 14, "10-14"),
    (15, 17, "15-17"),
    (18, 24, "18-24"),
    (25, 34, "25-34"),
    (35, 44, "35-44"),
    (45, 54, "45-54"),
    (55, 64, "55-64"),
    (65, MAX_AGE, "65+"),
];

/// Age of the under-25 flag's boundary (London VRU serious-violence definition).
const YOUNG_BELOW: i64 = 25;

/// What an age cell holds.
enum Age {
    Years(i64),
    Band(usize),
    Under25(bool),
}

/// Applies `age_band_sv` or `under25_flag`.
pub(super) fn apply(t: Transform, cell: Cell<'_>) -> Result<&'static str, TransformError> {
    let shape = TransformError::Shape { transform: t };
    let age = match cell {
        Cell::Int(n) if (0..=MAX_AGE).contains(&n) => Age::Years(n),
        Cell::Int(_) => return Err(TransformError::OutOfRange { transform: t }),
        Cell::Text(s) => parse_text(s).ok_or(shape)?,
        other => {
            return Err(TransformError::WrongType {
                transform: t,
                got: other.kind(),
            });
        }
    };
    match (t, age) {
        (Transform::AgeBandSv, Age::Years(n)) => band_of(n).map(|i| SV_BANDS[i].2).ok_or(shape),
        (Transform::AgeBandSv, Age::Band(i)) => Ok(SV_BANDS[i].2),
        (Transform::Under25Flag, Age::Years(n)) => Ok(flag(n < YOUNG_BELOW)),
        (Transform::Under25Flag, Age::Band(i)) => Ok(flag(SV_BANDS[i].1 < YOUNG_BELOW)),
        (Transform::Under25Flag, Age::Under25(b)) => Ok(flag(b)),
        _ => Err(shape),
    }
}

fn parse_text(s: &str) -> Option<Age> {
    match s {
        "true" => Some(Age::Under25(true)),
        "false" => Some(Age::Under25(false)),
        _ => SV_BANDS.iter().position(|b| b.2 == s).map(Age::Band),
    }
}

fn band_of(age: i64) -> Option<usize> {
    SV_BANDS
        .iter()
        .position(|(lo, hi, _)| (*lo..=*hi).contains(&age))
}

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}
