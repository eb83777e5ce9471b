//! Geography transforms: LSOA 2021 → ward (May 2022 boundaries) → borough, for Kingston upon
//! Thames, from `policies/lookups/kingston_lsoa.csv` compiled in. The table is read once.
//!
//! The file's ward codes are ILLUSTRATIVE (see `policies/lookups/README.md`): replace the file's
//! `wd22cd` column from the ONS LSOA21→WD22 best-fit lookup before any real release.

use super::csv::rows;
use super::{Transform, TransformError};
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// ONS code of the Royal Borough of Kingston upon Thames.
pub const BOROUGH_CODE: &str = "E09000021";
/// Name of the borough whose lookups are compiled in.
pub const BOROUGH_NAME: &str = "Kingston upon Thames";

pub(super) const LSOA_FILE: &str = "policies/lookups/kingston_lsoa.csv";
const LSOA_CSV: &str = include_str!("../../../policies/lookups/kingston_lsoa.csv");

/// The compiled-in geography.
pub(super) struct Geography {
    /// LSOA 2021 code → ward code.
    pub(super) ward_of: HashMap<&'static str, &'static str>,
    /// Every ward code.
    pub(super) wards: HashSet<&'static str>,
}

pub(super) static GEOGRAPHY: LazyLock<Geography> = LazyLock::new(|| {
    let mut ward_of = HashMap::new();
    let mut wards = HashSet::new();
    for row in rows(LSOA_CSV, &["lsoa21cd", "wd22cd"]) {
        ward_of.insert(row[0], row[1]);
        wards.insert(row[1]);
    }
    Geography { ward_of, wards }
});

/// Applies `ward` or `borough` to an area code.
pub(super) fn apply(t: Transform, code: &str) -> Result<&'static str, TransformError> {
    let g = &*GEOGRAPHY;
    let unknown = TransformError::UnknownCode {
        transform: t,
        table: LSOA_FILE,
    };
    let ward = g
        .ward_of
        .get(code)
        .copied()
        .or_else(|| g.wards.get(code).copied());
    match t {
        Transform::Ward => ward.ok_or(unknown),
        _ if ward.is_some() || code == BOROUGH_CODE => Ok(BOROUGH_CODE),
        _ => Err(unknown),
    }
}
