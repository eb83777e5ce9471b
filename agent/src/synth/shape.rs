//! What each agency's export looks like: column names, codes and date formats of the source
//! systems the domain research describes (a CRIS-style police extract with DD/MM/YYYY dates and
//! Y/N flags, a council case system with "Yes"/"No", the London Datastore LFB schema, nDelius
//! camelCase, ECDS data-dictionary names with NHS gender codes), and the agent mapping
//! (`[datasets.X.columns]`, `[datasets.X.values]`) that reads each one back onto the catalog.

use super::config::Shape;
use super::population::ETHNICITIES;
use skp_core::catalog::Dataset;
use std::fmt::Write as _;

/// How dates, times and flags are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// ISO: `2024-07-14`, `2024-07-14T23:40`, `true`/`false`.
    Iso,
    /// Police: `14/07/2024`, `14/07/2024 23:40`, `Y`/`N`.
    Police,
    /// Council: `14/07/2024`, `14/07/2024 23:40`, `Yes`/`No`.
    Council,
    /// LFB: ISO dates, `1`/`0`.
    Lfb,
    /// nDelius: ISO dates, `Y`/`N`.
    Probation,
    /// ECDS: ISO dates, `2024-07-14 23:40:00`, `true`/`false`; NHS numbers spaced.
    Health,
}

/// A source code table for one field: `(source code, catalog value)`, one per source code.
pub type Codes = &'static [(&'static str, &'static str)];

/// The export shape of one dataset.
pub struct DatasetShape {
    /// Date, time and flag style.
    pub style: Style,
    /// Catalog field → source column (fields not listed keep their catalog name).
    pub columns: &'static [(&'static str, &'static str)],
    /// Catalog field → its code table.
    pub codes: &'static [(&'static str, Codes)],
}

const SEX_POLICE: Codes = &[("F", "F"), ("M", "M"), ("U", "Unknown")];
const SEX_COUNCIL: Codes = &[("Female", "F"), ("Male", "M"), ("Not known", "Unknown")];
const SEX_NHS: Codes = &[("2", "F"), ("1", "M"), ("9", "Unknown")];
const SEX_DELIUS: Codes = &[("F", "F"), ("M", "M"), ("N", "Unknown")];
const NEEDS: Codes = &[("0", "No need"), ("1", "Standard"), ("2", "Severe")];

/// Police self-defined ethnicity (16+1): one catalog value per code; Gypsy/Roma are written W9
/// and Arab O9, which read back as "White: Other White" and "Other: Any other ethnic group".
const SDE: Codes = &[
    (
        "W1",
        "White: English, Welsh, Scottish, Northern Irish or British",
    ),
    ("W2", "White: Irish"),
    ("W9", "White: Other White"),
    ("M1", "Mixed: White and Black Caribbean"),
    ("M2", "Mixed: White and Black African"),
    ("M3", "Mixed: White and Asian"),
    ("M9", "Mixed: Other Mixed"),
    ("A1", "Asian: Indian"),
    ("A2", "Asian: Pakistani"),
    ("A3", "Asian: Bangladeshi"),
    ("A9", "Asian: Other Asian"),
    ("B1", "Black: Caribbean"),
    ("B2", "Black: African"),
    ("B9", "Black: Other Black"),
    ("O1", "Asian: Chinese"),
    ("O9", "Other: Any other ethnic group"),
    ("NS", "Not stated"),
];

/// The export shape of a dataset in the `Source` shape, if it has its own.
pub fn source_shape(dataset: &str) -> Option<&'static DatasetShape> {
    Some(match dataset {
        "police_crime" => &POLICE_CRIME,
        "police_asb_incident" => &POLICE_ASB,
        "council_hclic" => &HCLIC,
        "council_asb_case" => &COUNCIL_ASB,
        "council_csc_flags" => &CSC,
        "lfb_incident" => &LFB,
        "probation_caseload" => &CASELOAD,
        "probation_reoffending_events" => &REOFFENDING,
        "ed_istv" => &ISTV,
        "icb_ed_assault_mh_linked" => &ICB,
        _ => return None,
    })
}

static POLICE_CRIME: DatasetShape = DatasetShape {
    style: Style::Police,
    columns: &[
        ("crime_ref", "CRIME_REF"),
        ("victim_no", "VICTIM_NO"),
        ("ho_offence_code", "HO_CODE"),
        ("ho_offence_class", "HO_CLASS_DESC"),
        ("ho_offence_group", "HO_GROUP"),
        ("cjs_offence_code", "CJS_CODE"),
        ("committed_from", "COMMITTED_FROM_DT"),
        ("committed_to", "COMMITTED_TO_DT"),
        ("reported_dt", "REPORTED_DT"),
        ("location_postcode", "LOC_POSTCODE"),
        ("location_uprn", "LOC_UPRN"),
        ("lsoa21cd", "LOC_LSOA"),
        ("wd22cd", "LOC_WARD"),
        ("location_type", "LOC_TYPE"),
        ("victim_surname", "VIC_SURNAME"),
        ("victim_forename", "VIC_FORENAME"),
        ("victim_dob", "VIC_DOB"),
        ("victim_sex", "VIC_SEX"),
        ("victim_pnc_id", "VIC_PNC"),
        ("victim_age", "VIC_AGE"),
        ("victim_ethnicity_sde", "VIC_SDE"),
        ("suspect_surname", "SUS_SURNAME"),
        ("suspect_forename", "SUS_FORENAME"),
        ("suspect_dob", "SUS_DOB"),
        ("suspect_sex", "SUS_SEX"),
        ("suspect_pnc_id", "SUS_PNC"),
        ("suspect_age", "SUS_AGE"),
        ("suspect_ethnicity_ode", "SUS_ODE"),
        ("victim_suspect_relationship", "VIC_SUS_REL"),
        ("da_flag", "DA_FLAG"),
        ("hate_race", "HATE_RACE"),
        ("hate_religion", "HATE_FAITH"),
        ("hate_sexual_orientation", "HATE_SEXUAL_ORIENT"),
        ("hate_disability", "HATE_DISAB"),
        ("hate_transgender", "HATE_TRANS"),
        ("hate_antisemitic", "HATE_ANTISEMITIC"),
        ("hate_islamophobic", "HATE_ISLAMOPHOBIC"),
        ("knife_flag", "KNIFE_FLAG"),
        ("firearm_flag", "FIREARM_FLAG"),
        ("cse_flag", "CSE_FLAG"),
        ("csa_flag", "CSA_FLAG"),
        ("online_flag", "ONLINE_FLAG"),
        ("modern_slavery_flag", "MOD_SLAVERY_FLAG"),
        ("weapon_type", "WEAPON"),
        ("outcome_code", "OUTCOME"),
        ("outcome_date", "OUTCOME_DATE"),
        ("sv_flag", "SV_FLAG"),
    ],
    codes: &[
        ("victim_sex", SEX_POLICE),
        ("suspect_sex", SEX_POLICE),
        ("victim_ethnicity_sde", SDE),
    ],
};

static POLICE_ASB: DatasetShape = DatasetShape {
    style: Style::Police,
    columns: &[
        ("cad_ref", "CAD_REF"),
        ("incident_dt", "OPENED_DT"),
        ("asb_heading", "ASB_TYPE"),
        ("nsir_qualifier", "NSIR_CAT"),
        ("location_postcode", "LOC_POSTCODE"),
        ("location_uprn", "LOC_UPRN"),
        ("lsoa21cd", "LOC_LSOA"),
        ("wd22cd", "LOC_WARD"),
        ("caller_surname", "CALLER_SURNAME"),
        ("caller_forename", "CALLER_FORENAME"),
        ("caller_dob", "CALLER_DOB"),
        ("caller_sex", "CALLER_SEX"),
        ("repeat_caller_count_12m", "REPEAT_CALLS_12M"),
        ("vulnerable_victim_flag", "VULNERABLE_FLAG"),
    ],
    codes: &[
        ("caller_sex", SEX_POLICE),
        (
            "nsir_qualifier",
            &[("P", "Personal"), ("N", "Nuisance"), ("E", "Environmental")],
        ),
    ],
};

static HCLIC: DatasetShape = DatasetShape {
    style: Style::Council,
    columns: &[
        ("case_id", "Case Reference"),
        ("person_no", "Person Number"),
        ("approach_date", "Approach Date"),
        ("household_type", "Household Type"),
        ("duty_owed", "Duty Owed"),
        (
            "reason_loss_settled_home",
            "Reason For Loss Of Settled Home",
        ),
        ("accommodation_at_approach", "Accommodation At Approach"),
        ("ta_placed", "TA Placed"),
        ("last_settled_uprn", "Last Settled UPRN"),
        ("lsoa21cd", "LSOA"),
        ("nhs_number", "NHS Number"),
        ("surname", "Surname"),
        ("forename", "First Name"),
        ("dob", "Date Of Birth"),
        ("sex", "Gender"),
        ("age_at_approach", "Age At Approach"),
        ("ethnicity", "Ethnicity"),
        ("support_needs", "Support Needs"),
    ],
    codes: &[("sex", SEX_COUNCIL)],
};

static COUNCIL_ASB: DatasetShape = DatasetShape {
    style: Style::Council,
    columns: &[
        ("asb_case_id", "Case Ref"),
        ("opened", "Date Opened"),
        ("closed", "Date Closed"),
        ("category", "Category"),
        ("nsir_qualifier", "NSIR"),
        ("tenure", "Tenure"),
        ("interventions", "Interventions"),
        ("location_postcode", "Location Postcode"),
        ("location_uprn", "Location UPRN"),
        ("lsoa21cd", "LSOA"),
        ("victim_surname", "Victim Surname"),
        ("victim_forename", "Victim First Name"),
        ("victim_dob", "Victim DOB"),
        ("victim_sex", "Victim Gender"),
        ("perpetrator_surname", "Perpetrator Surname"),
        ("perpetrator_forename", "Perpetrator First Name"),
        ("perpetrator_dob", "Perpetrator DOB"),
        ("perpetrator_sex", "Perpetrator Gender"),
        ("perpetrator_age", "Perpetrator Age"),
    ],
    codes: &[
        ("victim_sex", SEX_COUNCIL),
        ("perpetrator_sex", SEX_COUNCIL),
    ],
};

static CSC: DatasetShape = DatasetShape {
    style: Style::Council,
    columns: &[
        ("child_id", "Person ID"),
        ("as_at_date", "Snapshot Date"),
        ("nhs_number", "NHS Number"),
        ("surname", "Surname"),
        ("forename", "Forename"),
        ("dob", "DOB"),
        ("sex", "Gender"),
        ("age_band_at_date", "Age Band"),
        ("home_postcode", "Postcode"),
        ("home_lsoa21cd", "LSOA"),
        ("cin_status", "CIN"),
        ("cp_plan", "CP Plan"),
        ("cla", "CLA"),
        ("care_leaver", "Care Leaver"),
        ("cin_factors", "CIN Factors"),
        ("missing_episodes_12m", "Missing Episodes 12m"),
        ("yot_known", "YOT Known"),
    ],
    codes: &[("sex", SEX_COUNCIL)],
};

static LFB: DatasetShape = DatasetShape {
    style: Style::Lfb,
    columns: &[
        ("incident_number", "IncidentNumber"),
        ("date_of_call", "DateOfCall"),
        ("hour_of_call", "HourOfCall"),
        ("incident_group", "IncidentGroup"),
        ("stop_code_description", "StopCodeDescription"),
        ("special_service_type", "SpecialServiceType"),
        ("property_category", "PropertyCategory"),
        ("property_type", "PropertyType"),
        ("fire_motive", "IRS_FireMotive"),
        ("postcode_full", "Postcode_full"),
        ("uprn", "UPRN"),
        ("wd22cd", "IncGeo_WardCode"),
        ("lsoa21cd", "LSOA_Code"),
        ("incident_station_ground", "IncidentStationGround"),
        (
            "first_pump_arriving_attendance_time",
            "FirstPumpArriving_AttendanceTime",
        ),
        ("num_pumps_attending", "NumPumpsAttending"),
        ("casualty_count", "CasualtyCount"),
        ("hfsv_referral_flag", "HFSV_Referral"),
    ],
    codes: &[],
};

static CASELOAD: DatasetShape = DatasetShape {
    style: Style::Probation,
    columns: &[
        ("crn", "crn"),
        ("event_no", "eventNumber"),
        ("pnc_id", "pncNumber"),
        ("surname", "surname"),
        ("forename", "firstName"),
        ("dob", "dateOfBirth"),
        ("sex", "gender"),
        ("age_at_start", "ageAtStart"),
        ("ethnicity", "ethnicity"),
        ("home_postcode", "postcode"),
        ("home_lsoa21cd", "lsoa"),
        ("sentence_type", "sentenceType"),
        ("start_date", "startDate"),
        ("end_date", "endDate"),
        ("index_offence_ho_code", "mainOffenceHoCode"),
        ("index_offence_ho_group", "mainOffenceGroup"),
        ("tier", "tier"),
        ("rosh_level", "roshRegister"),
        ("mappa_category", "mappaCategory"),
        ("mappa_level", "mappaLevel"),
        ("da_perpetrator_flag", "daPerpetrator"),
        ("iom_nominal", "iomNominal"),
        ("ogrs_band", "ogrsBand"),
        ("rsr_band", "rsrBand"),
        ("accommodation_start", "accommodationAtStart"),
        ("accommodation_end", "accommodationLatest"),
        ("employment_start", "employmentAtStart"),
        ("employment_end", "employmentLatest"),
        ("need_accommodation", "oasysAccommodation"),
        ("need_ete", "oasysEte"),
        ("need_relationships", "oasysRelationships"),
        ("need_lifestyle", "oasysLifestyle"),
        ("need_drugs", "oasysDrugs"),
        ("need_alcohol", "oasysAlcohol"),
        ("need_thinking", "oasysThinking"),
        ("need_attitudes", "oasysAttitudes"),
    ],
    codes: &[
        ("sex", SEX_DELIUS),
        (
            "sentence_type",
            &[
                ("ORA_CO", "Community order"),
                ("ORA_SSO", "Suspended sentence order"),
                ("LIC", "Licence"),
                ("PSS", "Post-sentence supervision"),
            ],
        ),
        (
            "rosh_level",
            &[
                ("NONE", "Low"),
                ("RMRH", "Medium"),
                ("RHRH", "High"),
                ("RVHR", "Very High"),
            ],
        ),
        ("need_accommodation", NEEDS),
        ("need_ete", NEEDS),
        ("need_relationships", NEEDS),
        ("need_lifestyle", NEEDS),
        ("need_drugs", NEEDS),
        ("need_alcohol", NEEDS),
        ("need_thinking", NEEDS),
        ("need_attitudes", NEEDS),
    ],
};

static REOFFENDING: DatasetShape = DatasetShape {
    style: Style::Probation,
    columns: &[
        ("asn", "ASN"),
        ("offence_seq", "OffenceSequence"),
        ("offence_date", "OffenceDate"),
        ("ho_offence_code", "HOOffenceCode"),
        ("disposal", "Disposal"),
        ("disposal_date", "DisposalDate"),
        ("pnc_id", "PNCID"),
        ("surname", "Surname"),
        ("forename", "Forename"),
        ("dob", "DateOfBirth"),
        ("sex", "Sex"),
    ],
    codes: &[("sex", SEX_DELIUS)],
};

static ISTV: DatasetShape = DatasetShape {
    style: Style::Health,
    columns: &[
        ("attendance_ref", "ATTENDANCE_IDENTIFIER"),
        ("reporting_period_start", "REPORTING_PERIOD_START_DATE"),
        ("reporting_period_end", "REPORTING_PERIOD_END_DATE"),
        ("site_code_of_treatment", "SITE_CODE_OF_TREATMENT"),
        ("arrival_dt", "ARRIVAL_DATE_TIME"),
        ("assault_dt", "ASSAULT_DATE_TIME"),
        ("assault_method", "ASSAULT_METHOD"),
        (
            "assault_method_other_desc",
            "ASSAULT_METHOD_OTHER_DESCRIPTION",
        ),
        ("assault_location_type", "ASSAULT_LOCATION_TYPE"),
        ("assault_location_desc", "ASSAULT_LOCATION_DESCRIPTION"),
        ("location_lsoa21cd", "ASSAULT_LOCATION_LSOA"),
        ("age_band", "AGE_BAND"),
        ("sex", "PERSON_STATED_GENDER_CODE"),
    ],
    codes: &[("sex", SEX_NHS)],
};

static ICB: DatasetShape = DatasetShape {
    style: Style::Health,
    columns: &[
        ("attendance_ref", "ATTENDANCE_IDENTIFIER"),
        ("attendance_dt", "ARRIVAL_DATE_TIME"),
        ("injury_intent", "INJURY_INTENT"),
        ("injury_mechanism", "INJURY_MECHANISM"),
        ("alcohol_drug_involvement", "ALCOHOL_DRUG_INVOLVEMENT"),
        ("disposal", "DISCHARGE_DESTINATION"),
        ("nhs_number", "NHS_NUMBER"),
        ("surname", "PERSON_FAMILY_NAME"),
        ("forename", "PERSON_GIVEN_NAME"),
        ("dob", "PERSON_BIRTH_DATE"),
        ("sex", "PERSON_STATED_GENDER_CODE"),
        ("age_at_attendance", "AGE_AT_ATTENDANCE"),
        ("ethnic_category", "ETHNIC_CATEGORY"),
        ("home_postcode", "POSTCODE_USUAL_ADDRESS"),
        ("home_lsoa21cd", "LSOA_USUAL_ADDRESS"),
        ("mh_contact_12m", "MH_CONTACTS_12M"),
        ("mh_service_type", "MH_SERVICE_TYPE"),
    ],
    codes: &[("sex", SEX_NHS)],
};

/// How one dataset is written: resolved once per file.
pub struct Writer {
    /// Date, time and flag style.
    pub style: Style,
    /// Source column per catalog field, in catalog order.
    pub columns: Vec<String>,
    /// Code table per catalog field, in catalog order.
    pub codes: Vec<Option<Codes>>,
}

impl Writer {
    /// The writer of a dataset in a shape.
    pub fn new(ds: &Dataset, shape: Shape) -> Self {
        let s = (shape == Shape::Source)
            .then(|| source_shape(ds.name.as_str()))
            .flatten();
        let columns = ds
            .fields
            .iter()
            .map(|f| {
                s.and_then(|s| s.columns.iter().find(|(k, _)| *k == f.name.as_str()))
                    .map(|(_, c)| c.to_string())
                    .unwrap_or_else(|| f.name.to_string())
            })
            .collect();
        let codes = ds
            .fields
            .iter()
            .map(|f| {
                s.and_then(|s| s.codes.iter().find(|(k, _)| *k == f.name.as_str()))
                    .map(|(_, c)| *c)
            })
            .collect();
        Self {
            style: s.map(|s| s.style).unwrap_or(Style::Iso),
            columns,
            codes,
        }
    }

    /// The source code of a catalog value for field `i` (the value itself when not coded).
    pub fn code<'v>(&self, i: usize, catalog_value: &'v str) -> &'v str {
        match self.codes.get(i).copied().flatten() {
            None => catalog_value,
            Some(table) => table
                .iter()
                .find(|(_, c)| *c == catalog_value)
                .map(|(s, _)| *s)
                .or_else(|| sde_alias(catalog_value, table))
                .unwrap_or(catalog_value),
        }
    }
}

/// Catalog values the police SDE scheme has no own code for.
fn sde_alias(catalog_value: &str, table: Codes) -> Option<&'static str> {
    if table.first().map(|(c, _)| *c) != Some("W1") {
        return None;
    }
    let e = ETHNICITIES.iter().find(|e| e.ons == catalog_value)?;
    Some(e.sde)
}

/// The agent mapping for the datasets of an agency in the `Source` shape: TOML tables to add to
/// that agency's `agent.toml` (`[datasets.X.columns]` and `[datasets.X.values.F]`).
pub fn agent_mapping<'a>(datasets: impl IntoIterator<Item = &'a Dataset>) -> String {
    let mut out = String::from(
        "# Agent mapping for synthetic source exports written by `agent synth --shape source`.\n\
         # Append to the agency's agent.toml; `agent push` then reads the exports as they are.\n",
    );
    for ds in datasets {
        let Some(s) = source_shape(ds.name.as_str()) else {
            continue;
        };
        let _ = writeln!(out, "\n[datasets.{}.columns]", ds.name);
        for f in &ds.fields {
            if let Some((_, c)) = s.columns.iter().find(|(k, _)| *k == f.name.as_str()) {
                let _ = writeln!(out, "{} = {}", f.name, toml_str(c));
            }
        }
        for (field, table) in s.codes {
            let _ = writeln!(out, "\n[datasets.{}.values.{}]", ds.name, field);
            for (code, value) in table.iter() {
                let _ = writeln!(out, "{} = {}", toml_str(code), toml_str(value));
            }
        }
    }
    out
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
