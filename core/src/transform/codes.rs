//! Code-list transforms: Home Office offence code → ONS offence group, and ethnicity → ONS 5
//! groups, from `policies/lookups/ho_offence_group.csv` and `ethnicity_5.csv` compiled in.
//! Each table also maps its output labels to themselves, so the transforms are idempotent.

use super::csv::rows;
use super::{Transform, TransformError};
use std::collections::HashMap;
use std::sync::LazyLock;

pub(super) const OFFENCE_FILE: &str = "policies/lookups/ho_offence_group.csv";
pub(super) const OFFENCE_CSV: &str = include_str!("../../../policies/lookups/ho_offence_group.csv");
pub(super) const ETHNICITY_FILE: &str = "policies/lookups/ethnicity_5.csv";
pub(super) const ETHNICITY_CSV: &str = include_str!("../../../policies/lookups/ethnicity_5.csv");

/// The labels `ethnicity_5` releases.
#[cfg(test)]
pub(super) const ETHNICITY_GROUPS: [&str; 6] =
    ["Asian", "Black", "Mixed", "White", "Other", "Not stated"];

/// Offence code or group → group.
pub(super) static OFFENCE_GROUP: LazyLock<HashMap<&'static str, &'static str>> =
    LazyLock::new(|| {
        let mut map = HashMap::new();
        for row in rows(OFFENCE_CSV, &["ho_code", "ons_group"]) {
            map.insert(row[0], row[1]);
            map.insert(row[1], row[1]);
        }
        map
    });

/// Ethnicity value (any scheme) or group → group.
pub(super) static ETHNICITY: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
    rows(ETHNICITY_CSV, &["value", "group"])
        .map(|row| (row[0], row[1]))
        .collect()
});

/// Applies `offence_group` or `ethnicity_5` to a code.
pub(super) fn apply(t: Transform, code: &str) -> Result<&'static str, TransformError> {
    let (map, table) = match t {
        Transform::OffenceGroup => (&*OFFENCE_GROUP, OFFENCE_FILE),
        _ => (&*ETHNICITY, ETHNICITY_FILE),
    };
    map.get(code).copied().ok_or(TransformError::UnknownCode {
        transform: t,
        table,
    })
}
