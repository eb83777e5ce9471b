//! Generator settings as plain data: identifier-error rates, event rates, volumes, output shape
//! and window. Defaults are documented here; a TOML file (`agent synth --config FILE`) overrides
//! any of them (`deny_unknown_fields`), and [`SynthConfig::validate`] collects every problem.

use serde::Deserialize;
use std::collections::BTreeMap;
use time::Date;

/// How often each identifier-quality problem appears in an agency's recorded identity of a
/// person. A recorded identity is fixed per (agency, person, record): the same errors recur in
/// every row of that record, as in a real master person index; a duplicate record of the same
/// person at the same agency draws its own.
///
/// Defaults are orders of magnitude from the record-linkage literature, not calibrated to any
/// Kingston system: single-character errors make up about 80% of misspellings, split roughly
/// substitution > insertion ≈ deletion > transposition (Damerau 1964; Christen, *Data Matching*,
/// 2012, GeCo corrupter defaults); name disagreement in a few per cent of true-match pairs and
/// DOB disagreement in 1–3% (Winkler 2009; Harron et al. 2017, *Big Data & Society*); NHS number
/// recorded in nearly all hospital records but often not outside health (Hagger-Johnson et al.
/// 2017); duplicate person records in 1–5% of an operational index.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRates {
    /// One-character typo in the forename (substitution, insertion, deletion or transposition).
    pub forename_typo: f64,
    /// One-character typo in the surname.
    pub surname_typo: f64,
    /// Forename recorded as a nickname or variant spelling (William → Bill, Mohammed → Muhammad).
    pub nickname: f64,
    /// Forename and surname recorded the wrong way round.
    pub name_swap: f64,
    /// Surname changed (marriage, divorce): a different surname from the same naming tradition.
    pub surname_change: f64,
    /// Surname recorded hyphenated with a second surname.
    pub surname_hyphenated: f64,
    /// Day and month of birth transposed (only where the result is a real, different date).
    pub dob_day_month_swap: f64,
    /// Other date-of-birth error: a neighbouring day or a one-digit year error.
    pub dob_other: f64,
    /// NHS number not recorded, in health records.
    pub nhs_missing_health: f64,
    /// NHS number not recorded, in council records (housing, ASB).
    pub nhs_missing_council: f64,
    /// NHS number not recorded, in children's social care.
    pub nhs_missing_social_care: f64,
    /// NHS number recorded with a wrong check digit (the agent refuses the row, naming the reason).
    pub nhs_invalid: f64,
    /// PNC id not recorded for a suspect who has one.
    pub pnc_missing_suspect: f64,
    /// PNC id not recorded for a victim who has one.
    pub pnc_missing_victim: f64,
    /// PNC id not recorded on a probation or reoffending record of a person who has one.
    pub pnc_missing_probation: f64,
    /// A stale PNC id: the person's older, duplicate PNC record.
    pub pnc_stale: f64,
    /// PNC id recorded with a wrong check letter (the agent refuses the row, naming the reason).
    pub pnc_invalid: f64,
    /// The agency holds a previous address (another postcode and LSOA).
    pub address_stale: f64,
    /// The agency holds a second, duplicate record of the person (own identifiers and errors).
    pub duplicate_record: f64,
}

impl Default for ErrorRates {
    fn default() -> Self {
        Self {
            forename_typo: 0.015,
            surname_typo: 0.015,
            nickname: 0.04,
            name_swap: 0.005,
            surname_change: 0.02,
            surname_hyphenated: 0.01,
            dob_day_month_swap: 0.005,
            dob_other: 0.005,
            nhs_missing_health: 0.02,
            nhs_missing_council: 0.45,
            nhs_missing_social_care: 0.10,
            nhs_invalid: 0.003,
            pnc_missing_suspect: 0.10,
            pnc_missing_victim: 0.60,
            pnc_missing_probation: 0.02,
            pnc_stale: 0.01,
            pnc_invalid: 0.003,
            address_stale: 0.12,
            duplicate_record: 0.02,
        }
    }
}

impl ErrorRates {
    /// No identifier errors at all: every agency records every person exactly.
    pub fn none() -> Self {
        Self {
            forename_typo: 0.0,
            surname_typo: 0.0,
            nickname: 0.0,
            name_swap: 0.0,
            surname_change: 0.0,
            surname_hyphenated: 0.0,
            dob_day_month_swap: 0.0,
            dob_other: 0.0,
            nhs_missing_health: 0.0,
            nhs_missing_council: 0.0,
            nhs_missing_social_care: 0.0,
            nhs_invalid: 0.0,
            pnc_missing_suspect: 0.0,
            pnc_missing_victim: 0.0,
            pnc_missing_probation: 0.0,
            pnc_stale: 0.0,
            pnc_invalid: 0.0,
            address_stale: 0.0,
            duplicate_record: 0.0,
        }
    }

    fn named(&self) -> [(&'static str, f64); 19] {
        [
            ("forename_typo", self.forename_typo),
            ("surname_typo", self.surname_typo),
            ("nickname", self.nickname),
            ("name_swap", self.name_swap),
            ("surname_change", self.surname_change),
            ("surname_hyphenated", self.surname_hyphenated),
            ("dob_day_month_swap", self.dob_day_month_swap),
            ("dob_other", self.dob_other),
            ("nhs_missing_health", self.nhs_missing_health),
            ("nhs_missing_council", self.nhs_missing_council),
            ("nhs_missing_social_care", self.nhs_missing_social_care),
            ("nhs_invalid", self.nhs_invalid),
            ("pnc_missing_suspect", self.pnc_missing_suspect),
            ("pnc_missing_victim", self.pnc_missing_victim),
            ("pnc_missing_probation", self.pnc_missing_probation),
            ("pnc_stale", self.pnc_stale),
            ("pnc_invalid", self.pnc_invalid),
            ("address_stale", self.address_stale),
            ("duplicate_record", self.duplicate_record),
        ]
    }
}

/// Relative frequencies of events and of the links between agencies. Shares are of rows of the
/// dataset named; defaults are plausible for an outer London borough [inf], not measured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventRates {
    /// Share of police crimes flagged domestic abuse (MPS: roughly one in seven).
    pub da_share: f64,
    /// Share of police crimes with at least one hate-crime strand flagged.
    pub hate_share: f64,
    /// Share of police crimes with a suspect identified.
    pub suspect_identified: f64,
    /// Share of ED assault attendances also reported to police (the victim is in police_crime).
    pub ed_assault_reported: f64,
    /// Share of probation re-offences committed locally (the person is a police_crime suspect).
    pub reoffence_local: f64,
    /// Share of police ASB calls made anonymously (no caller recorded).
    pub asb_anonymous: f64,
    /// Share of recorded ethnicity given as "Not stated".
    pub ethnicity_not_stated: f64,
    /// Rows per 1,000 residents per year, by dataset (missing datasets use the defaults).
    pub volumes: BTreeMap<String, f64>,
}

impl Default for EventRates {
    fn default() -> Self {
        Self {
            da_share: 0.14,
            hate_share: 0.025,
            suspect_identified: 0.45,
            ed_assault_reported: 0.5,
            reoffence_local: 0.7,
            asb_anonymous: 0.25,
            ethnicity_not_stated: 0.06,
            volumes: BTreeMap::new(),
        }
    }
}

/// Default rows per 1,000 residents per year [inf]: Kingston records about 11–12k crimes, 4k ASB
/// calls and 3k LFB incidents a year for 168k residents.
pub const DEFAULT_VOLUMES: &[(&str, f64)] = &[
    ("police_crime", 72.0),
    ("police_asb_incident", 25.0),
    ("council_hclic", 18.0),
    ("council_asb_case", 2.0),
    ("council_csc_flags", 24.0),
    ("lfb_incident", 18.0),
    ("probation_caseload", 5.0),
    ("probation_reoffending_events", 4.0),
    ("ed_istv", 4.0),
    ("icb_ed_assault_mh_linked", 10.0),
];

impl EventRates {
    /// Rows per 1,000 residents per year for a dataset.
    pub fn volume(&self, dataset: &str) -> f64 {
        self.volumes.get(dataset).copied().unwrap_or_else(|| {
            DEFAULT_VOLUMES
                .iter()
                .find(|(d, _)| *d == dataset)
                .map(|(_, v)| *v)
                .unwrap_or(10.0)
        })
    }
}

/// Column names and codes of the files written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The catalog's field names and spellings, ISO dates: pushes with no agent mapping. Never
    /// writes a deliberately invalid identifier, so every row is accepted (pipeline fixtures).
    Catalog,
    /// Each agency's own export: its column names, codes and date formats, with the agent
    /// mapping to read it, and the configured share of invalid identifiers.
    Source,
}

/// How many rows each dataset gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volume {
    /// Exactly this many rows in every dataset.
    PerDataset(usize),
    /// Rows from [`EventRates::volume`] × population / 1,000 × years in the window.
    Realistic,
}

/// Everything the generator needs besides the population.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Seed: the same seed and settings give byte-identical files.
    pub seed: u64,
    /// Column names and codes.
    pub shape: Shape,
    /// Rows per dataset.
    pub volume: Volume,
    /// First day of events.
    pub from: Date,
    /// Last day of events.
    pub to: Date,
    /// Identifier-quality problems.
    pub errors: ErrorRates,
    /// Event frequencies and cross-agency links.
    pub events: EventRates,
}

impl SynthConfig {
    /// The given shape and volume with the default rates, over calendar year 2024.
    pub fn new(seed: u64, shape: Shape, volume: Volume) -> Self {
        Self {
            seed,
            shape,
            volume,
            from: time::macros::date!(2024 - 01 - 01),
            to: time::macros::date!(2024 - 12 - 31),
            errors: ErrorRates::default(),
            events: EventRates::default(),
        }
    }

    /// Every problem with the settings, each saying how to fix it.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in self.errors.named() {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!("errors.{name} = {v} must be between 0 and 1"));
            }
        }
        for (name, v) in [
            ("da_share", self.events.da_share),
            ("hate_share", self.events.hate_share),
            ("suspect_identified", self.events.suspect_identified),
            ("ed_assault_reported", self.events.ed_assault_reported),
            ("reoffence_local", self.events.reoffence_local),
            ("asb_anonymous", self.events.asb_anonymous),
            ("ethnicity_not_stated", self.events.ethnicity_not_stated),
        ] {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!("events.{name} = {v} must be between 0 and 1"));
            }
        }
        for (d, v) in &self.events.volumes {
            if !(v.is_finite() && *v >= 0.0) {
                out.push(format!(
                    "events.volumes.{d} = {v} must be a non-negative number"
                ));
            }
        }
        if self.to < self.from {
            out.push(format!(
                "the window ends ({}) before it starts ({}); swap --from and --to",
                self.to, self.from
            ));
        }
        out
    }

    /// Years covered by the window (at least one day).
    pub fn years(&self) -> f64 {
        f64::from(self.to.to_julian_day() - self.from.to_julian_day() + 1) / 365.25
    }

    /// Applies overrides from a TOML text (`[errors]` and `[events]` tables, `[events.volumes]`).
    pub fn apply_toml(&mut self, text: &str) -> Result<(), toml::de::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            errors: Option<ErrorRates>,
            #[serde(default)]
            events: Option<EventRates>,
        }
        let f: File = toml::from_str(text)?;
        if let Some(e) = f.errors {
            self.errors = e;
        }
        if let Some(e) = f.events {
            self.events = e;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_overrides_apply() {
        let mut c = SynthConfig::new(1, Shape::Source, Volume::Realistic);
        assert!(c.validate().is_empty());
        c.apply_toml("[errors]\nnickname = 0.5\n[events.volumes]\npolice_crime = 1.0\n")
            .expect("toml");
        assert_eq!(c.errors.nickname, 0.5);
        assert_eq!(c.errors.surname_typo, ErrorRates::default().surname_typo);
        assert_eq!(c.events.volume("police_crime"), 1.0);
        assert!(c.apply_toml("[errors]\nnicknam = 0.5\n").is_err());
        c.errors.nickname = 1.5;
        c.to = time::macros::date!(2023 - 01 - 01);
        assert_eq!(c.validate().len(), 2);
    }
}
