//! Known-answer, negative and property tests for the transforms.

use super::age::{MAX_AGE, SV_BANDS};
use super::codes::{
    ETHNICITY, ETHNICITY_CSV, ETHNICITY_GROUPS, OFFENCE_CSV, OFFENCE_FILE, OFFENCE_GROUP,
};
use super::csv::data_lines;
use super::geo::{GEOGRAPHY, LSOA_FILE};
use super::temporal::HOUR_BANDS;
use super::*;
use crate::Catalog;
use proptest::prelude::*;
use time::{Date, Duration, Weekday};

/// Applies and unwraps to an owned string; `None` for nothing released.
fn out(t: Transform, cell: Cell<'_>) -> Option<String> {
    t.apply(cell)
        .unwrap_or_else(|e| panic!("{t} failed: {e}"))
        .map(Cow::into_owned)
}

fn err(t: Transform, cell: Cell<'_>) -> TransformError {
    match t.apply(cell) {
        Err(e) => e,
        Ok(v) => panic!("{t} should fail, released {v:?}"),
    }
}

fn iso(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn lsoas() -> Vec<&'static str> {
    let mut v: Vec<_> = GEOGRAPHY.ward_of.keys().copied().collect();
    v.sort_unstable();
    v
}

fn offence_codes() -> Vec<&'static str> {
    let mut v: Vec<_> = super::csv::rows(OFFENCE_CSV, &["ho_code"])
        .map(|r| r[0])
        .collect();
    v.sort_unstable();
    v
}

fn ethnicity_values() -> Vec<&'static str> {
    let mut v: Vec<_> = super::csv::rows(ETHNICITY_CSV, &["value", "scheme"])
        .filter(|r| r[1] != "group")
        .map(|r| r[0])
        .collect();
    v.sort_unstable();
    v
}

fn catalog() -> Catalog {
    Catalog::embedded().expect("embedded catalog is valid")
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn every_name_round_trips() {
    for t in Transform::ALL {
        assert_eq!(Transform::parse(t.name()), Ok(*t));
        assert_eq!(t.name().parse::<Transform>(), Ok(*t));
        assert_eq!(t.to_string(), t.name());
    }
    let names = Transform::names();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "names are unique");
}

#[test]
fn the_brief_s_names_parse() {
    for n in [
        "month",
        "age_band_sv",
        "ward",
        "ethnicity_5",
        "offence_group",
        "round5",
        "deny",
    ] {
        assert!(Transform::parse(n).is_ok(), "{n}");
    }
}

#[test]
fn unknown_names_list_the_valid_ones_and_suggest_the_nearest() {
    let e = Transform::parse("mnth").expect_err("unknown");
    assert_eq!(e.nearest(), Some("month"));
    let text = e.to_string();
    assert!(text.starts_with("unknown transform \"mnth\" (did you mean \"month\"?)"));
    for n in Transform::names() {
        assert!(text.contains(n), "lists {n}");
    }
    assert_eq!(
        Transform::parse("agebands").expect_err("unknown").nearest(),
        Some("age_band_sv")
    );
    assert_eq!(
        Transform::parse("Month")
            .expect_err("names are exact")
            .nearest(),
        Some("month")
    );
    assert_eq!(
        Transform::parse("round_5").expect_err("unknown").nearest(),
        Some("round5")
    );
    let far = Transform::parse("zzz").expect_err("unknown");
    assert_eq!(far.nearest(), None);
    assert_eq!(far.hint, "");
    assert!(Transform::parse("").is_err());
}

// ---------------------------------------------------------------------------------------------
// Known answers: dates and times

#[test]
fn iso_weeks_at_year_boundaries() {
    for (date, week) in [
        ("2024-12-30", "2025-W01"),
        ("2021-01-03", "2020-W53"),
        ("2026-01-01", "2026-W01"),
        ("2027-01-01", "2026-W53"),
        ("2020-12-31", "2020-W53"),
        ("2019-12-30", "2020-W01"),
        ("2024-02-14", "2024-W07"),
    ] {
        assert_eq!(
            out(Transform::Week, Cell::Date(date)).as_deref(),
            Some(week),
            "{date}"
        );
    }
    assert_eq!(
        out(Transform::Week, Cell::Datetime("2024-12-30T23:59:59")).as_deref(),
        Some("2025-W01")
    );
}

#[test]
fn calendar_buckets() {
    let d = Cell::Datetime("2024-07-14T00:52:00");
    assert_eq!(out(Transform::Day, d).as_deref(), Some("2024-07-14"));
    assert_eq!(out(Transform::Month, d).as_deref(), Some("2024-07"));
    assert_eq!(out(Transform::Quarter, d).as_deref(), Some("2024-Q3"));
    assert_eq!(out(Transform::Year, d).as_deref(), Some("2024"));
    assert_eq!(out(Transform::DayOfWeek, d).as_deref(), Some("Sun"));
    assert_eq!(out(Transform::Hour, d).as_deref(), Some("00"));
    assert_eq!(out(Transform::HourBand, d).as_deref(), Some("00-05"));
    for (date, q) in [
        ("2024-01-01", "2024-Q1"),
        ("2024-03-31", "2024-Q1"),
        ("2024-04-01", "2024-Q2"),
        ("2024-12-31", "2024-Q4"),
    ] {
        assert_eq!(
            out(Transform::Quarter, Cell::Date(date)).as_deref(),
            Some(q)
        );
    }
    // Datetimes without seconds, and with a space, as the proto allows.
    assert_eq!(
        out(Transform::Month, Cell::Datetime("2024-02-29 23:10")).as_deref(),
        Some("2024-02")
    );
}

#[test]
fn hour_bands_at_their_boundaries() {
    for (time, band) in [
        ("00:00", "00-05"),
        ("05:59", "00-05"),
        ("06:00", "06-11"),
        ("11:59", "06-11"),
        ("12:00", "12-17"),
        ("17:59", "12-17"),
        ("18:00", "18-23"),
        ("23:59", "18-23"),
    ] {
        let dt = format!("2024-07-14T{time}:00");
        assert_eq!(
            out(Transform::HourBand, Cell::Datetime(&dt)).as_deref(),
            Some(band),
            "{time}"
        );
    }
    // LFB hour_of_call is an int 0-23.
    assert_eq!(
        out(Transform::HourBand, Cell::Int(5)).as_deref(),
        Some("00-05")
    );
    assert_eq!(
        out(Transform::HourBand, Cell::Int(6)).as_deref(),
        Some("06-11")
    );
    assert_eq!(out(Transform::Hour, Cell::Int(7)).as_deref(), Some("07"));
    assert_eq!(
        out(Transform::HourBand, Cell::Int(23)).as_deref(),
        Some("18-23")
    );
    for bad in [-1, 24, i64::MAX, i64::MIN] {
        assert!(matches!(
            err(Transform::HourBand, Cell::Int(bad)),
            TransformError::OutOfRange { .. }
        ));
    }
}

#[test]
fn malformed_dates_are_errors_not_panics() {
    for bad in [
        "2024-13-01",
        "2023-02-29",
        "2024-00-10",
        "2024-1-01",
        "24-01-01",
        "",
        "2024-01-01x",
        "２０２４-01-01",
        "1799-12-31",
        "2024-07-14T24:00",
        "2024-07-14T12:60",
        "2024-07-14T12:00:61",
        "2024-07-14X12:00",
        "2024-07-14T12:00:",
    ] {
        for t in [Transform::Month, Transform::Week, Transform::Year] {
            for cell in [Cell::Date(bad), Cell::Datetime(bad), Cell::Text(bad)] {
                assert!(
                    matches!(t.apply(cell), Err(TransformError::Shape { .. })),
                    "{t} on {bad:?}"
                );
            }
        }
    }
    // Coarser text is not finer: a month cannot be made into a week or a day.
    assert!(matches!(
        err(Transform::Week, Cell::Text("2024-07")),
        TransformError::Shape { .. }
    ));
    assert!(matches!(
        err(Transform::Day, Cell::Text("2024-07")),
        TransformError::Shape { .. }
    ));
    assert!(matches!(
        err(Transform::Month, Cell::Text("2024-Q3")),
        TransformError::Shape { .. }
    ));
    // A week is not nested in a calendar year, so year(week) is refused.
    assert!(matches!(
        err(Transform::Year, Cell::Text("2025-W01")),
        TransformError::Shape { .. }
    ));
    assert!(matches!(
        err(Transform::Week, Cell::Text("2026-W54")),
        TransformError::Shape { .. }
    ));
    assert!(matches!(
        err(Transform::Month, Cell::Int(202407)),
        TransformError::WrongType { got: "int", .. }
    ));
    assert!(matches!(
        err(Transform::Hour, Cell::Date("2024-07-14")),
        TransformError::Shape { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Known answers: ages, counts, codes

#[test]
fn age_bands_at_their_boundaries() {
    for (age, band, young) in [
        (0, "0-9", "true"),
        (9, "0-9", "true"),
        (10, "10-14", "true"),
        (14, "10-14", "true"),
        (15, "15-17", "true"),
        (17, "15-17", "true"),
        (18, "18-24", "true"),
        (24, "18-24", "true"),
        (25, "25-34", "false"),
        (64, "55-64", "false"),
        (65, "65+", "false"),
        (MAX_AGE, "65+", "false"),
    ] {
        assert_eq!(
            out(Transform::AgeBandSv, Cell::Int(age)).as_deref(),
            Some(band),
            "{age}"
        );
        assert_eq!(
            out(Transform::Under25Flag, Cell::Int(age)).as_deref(),
            Some(young),
            "{age}"
        );
    }
    for bad in [-1, MAX_AGE + 1, i64::MIN, i64::MAX] {
        for t in [Transform::AgeBandSv, Transform::Under25Flag] {
            assert!(matches!(
                err(t, Cell::Int(bad)),
                TransformError::OutOfRange { .. }
            ));
        }
    }
    assert!(matches!(
        err(Transform::AgeBandSv, Cell::Text("18-25")),
        TransformError::Shape { .. }
    ));
    // A flag cannot be made back into a band.
    assert!(matches!(
        err(Transform::AgeBandSv, Cell::Text("true")),
        TransformError::Shape { .. }
    ));
    assert!(matches!(
        err(Transform::AgeBandSv, Cell::Date("2001-01-01")),
        TransformError::WrongType { .. }
    ));
}

#[test]
fn round5_known_answers() {
    for (n, r) in [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 5),
        (7, 5),
        (8, 10),
        (12, 10),
        (13, 15),
        (-1, 0),
        (-3, -5),
    ] {
        assert_eq!(
            out(Transform::Round5, Cell::Int(n)),
            Some(r.to_string()),
            "{n}"
        );
    }
    // The extremes round without overflow: i64::MIN's nearest multiple of 5 is below it.
    assert_eq!(
        out(Transform::Round5, Cell::Int(i64::MAX)),
        Some((i64::MAX - 2).to_string())
    );
    assert!(matches!(
        err(Transform::Round5, Cell::Int(i64::MIN)),
        TransformError::OutOfRange { .. }
    ));
    assert!(matches!(
        err(Transform::Round5, Cell::Text("12a")),
        TransformError::Shape { .. }
    ));
    assert!(matches!(
        err(Transform::Round5, Cell::Flag(true)),
        TransformError::WrongType { .. }
    ));
}

#[test]
fn offence_groups_follow_the_domain_table() {
    for (code, group) in [
        ("1", "Homicide"),
        ("4/1", "Homicide"),
        ("2", "Violence with injury"),
        ("5D", "Violence with injury"),
        ("8N", "Violence with injury"),
        ("3B", "Violence without injury"),
        ("105A", "Violence without injury"),
        ("8Q", "Stalking and harassment"),
        ("19C", "Rape"),
        ("19H", "Rape"),
        ("20A", "Other sexual offences"),
        ("17B", "Other sexual offences"),
        ("34B", "Robbery"),
        ("58J", "Criminal damage and arson"),
        ("10D", "Possession of weapons offences"),
        ("Violence with injury", "Violence with injury"),
    ] {
        assert_eq!(
            out(Transform::OffenceGroup, Cell::Text(code)).as_deref(),
            Some(group),
            "{code}"
        );
    }
}

#[test]
fn ethnicity_known_answers() {
    for (value, group) in [
        ("White: Irish", "White"),
        ("Other: Arab", "Other"),
        ("Asian: Chinese", "Asian"),
        ("Mixed: White and Black Caribbean", "Mixed"),
        ("Not stated", "Not stated"),
        ("N", "Black"),
        ("R", "Asian"),
        ("Z", "Not stated"),
        ("IC3", "Black"),
        ("IC6", "Other"),
        ("IC9", "Not stated"),
        ("Black", "Black"),
    ] {
        assert_eq!(
            out(Transform::Ethnicity5, Cell::Text(value)).as_deref(),
            Some(group),
            "{value}"
        );
    }
}

#[test]
fn unknown_codes_are_clear_errors_that_never_echo_the_value() {
    let cases = [
        (Transform::OffenceGroup, "ZZ99Q", OFFENCE_FILE),
        (
            Transform::Ethnicity5,
            "Klingon",
            "policies/lookups/ethnicity_5.csv",
        ),
        (Transform::Ward, "E01999999", LSOA_FILE),
        (Transform::Borough, "E05999999", LSOA_FILE),
        (Transform::Ward, BOROUGH_CODE, LSOA_FILE),
        (Transform::Ward, "e01002915", LSOA_FILE),
    ];
    for (t, value, file) in cases {
        let e = err(t, Cell::Text(value));
        assert_eq!(
            e,
            TransformError::UnknownCode {
                transform: t,
                table: file
            }
        );
        let text = e.to_string();
        assert!(!text.contains(value), "{text}");
        assert!(text.contains(t.name()) && text.contains(file), "{text}");
    }
    let e = err(Transform::Month, Cell::Date("2031-02-30"));
    assert!(!e.to_string().contains("2031"), "{e}");
    assert!(matches!(
        err(Transform::Ward, Cell::Int(1)),
        TransformError::WrongType { got: "int", .. }
    ));
}

#[test]
fn geography_maps_lsoa_to_ward_to_borough() {
    assert_eq!(
        out(Transform::Ward, Cell::Text("E01002915")).as_deref(),
        Some("E05013935")
    );
    assert_eq!(
        out(Transform::Ward, Cell::Text("E05013935")).as_deref(),
        Some("E05013935")
    );
    for code in ["E01002915", "E05013935", BOROUGH_CODE] {
        assert_eq!(
            out(Transform::Borough, Cell::Text(code)).as_deref(),
            Some(BOROUGH_CODE)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Keep, deny, missing

#[test]
fn missing_is_missing_for_every_transform() {
    for t in Transform::ALL {
        assert_eq!(t.apply(Cell::Missing), Ok(None), "{t}");
    }
    let none = pb::Value { kind: None };
    assert_eq!(Cell::from(&none), Cell::Missing);
    assert_eq!(Cell::from(None), Cell::Missing);
}

#[test]
fn deny_and_drop_release_nothing() {
    let items = vec!["a".to_string()];
    for cell in [
        Cell::Text("free text"),
        Cell::Int(3),
        Cell::Flag(true),
        Cell::Date("2024-01-01"),
        Cell::Datetime("2024-01-01T00:00:00"),
        Cell::Set(SetItems::decoded(&items)),
    ] {
        assert_eq!(Transform::Deny.apply(cell), Ok(None));
        assert_eq!(Transform::DropFreeText.apply(cell), Ok(None));
    }
}

#[test]
fn keep_releases_the_stored_text() {
    let items = vec!["ABC".to_string(), "CPN".to_string()];
    for (cell, want) in [
        (Cell::Text("E01002915"), "E01002915"),
        (Cell::Int(-4), "-4"),
        (Cell::Flag(true), "true"),
        (Cell::Flag(false), "false"),
        (Cell::Date("2024-01-01"), "2024-01-01"),
        (Cell::Datetime("2024-01-01T10:00:00"), "2024-01-01T10:00:00"),
        (Cell::Set(SetItems::decoded(&items)), "ABC; CPN"),
    ] {
        assert_eq!(out(Transform::Keep, cell).as_deref(), Some(want));
    }
    // Keep on text borrows: no allocation.
    assert!(matches!(
        Transform::Keep.apply(Cell::Text("x")),
        Ok(Some(Cow::Borrowed("x")))
    ));
}

#[test]
fn cells_convert_from_proto_values_and_never_debug_their_value() {
    use pb::value::Kind;
    let v = pb::Value {
        kind: Some(Kind::Datetime("2024-07-14T00:52:00".into())),
    };
    let cell = Cell::from(&v);
    assert_eq!(cell, Cell::Datetime("2024-07-14T00:52:00"));
    assert_eq!(format!("{cell:?}"), "Cell::datetime(..)");
    let set = pb::Value {
        kind: Some(Kind::Set(pb::StringSet {
            items: vec!["x".into()],
        })),
    };
    assert_eq!(
        out(Transform::Keep, Cell::from(Some(&set))).as_deref(),
        Some("x")
    );
}

// ---------------------------------------------------------------------------------------------
// Coarseness order

#[test]
fn coarseness_is_a_partial_order_with_keep_at_the_bottom_and_deny_at_the_top() {
    let all = Transform::ALL;
    for &a in all {
        assert!(coarser_or_equal(a, a), "reflexive {a}");
        assert!(coarser_or_equal(a, Transform::Keep), "{a} ≥ keep");
        assert!(coarser_or_equal(Transform::Deny, a), "deny ≥ {a}");
        for &b in all {
            if coarser_or_equal(a, b) && coarser_or_equal(b, a) {
                assert!(
                    a == b || (a.releases_nothing() && b.releases_nothing()),
                    "antisymmetric {a} {b}"
                );
            }
            if coarser_or_equal(a, b) && !a.releases_nothing() && b != Transform::Keep {
                assert_eq!(a.family(), b.family(), "{a} ≥ {b} crosses families");
            }
            for &c in all {
                if coarser_or_equal(a, b) && coarser_or_equal(b, c) {
                    assert!(coarser_or_equal(a, c), "transitive {a} ≥ {b} ≥ {c}");
                }
            }
        }
    }
}

#[test]
fn finer_requests_are_refused() {
    use Transform as T;
    for (asked, allowed) in [
        (T::Keep, T::Month),
        (T::Month, T::Year),
        (T::Day, T::Month),
        (T::Week, T::Month),
        (T::Week, T::Year),
        (T::Month, T::Week),
        (T::Year, T::Week),
        (T::DayOfWeek, T::Month),
        (T::Hour, T::HourBand),
        (T::AgeBandSv, T::Under25Flag),
        (T::Ward, T::Borough),
        (T::Keep, T::Deny),
        (T::Month, T::AgeBandSv),
        (T::Round5, T::OffenceGroup),
    ] {
        assert!(!coarser_or_equal(asked, allowed), "{asked} where {allowed}");
    }
    for (asked, allowed) in [
        (T::Year, T::Month),
        (T::Quarter, T::Day),
        (T::Under25Flag, T::AgeBandSv),
        (T::Borough, T::Ward),
        (T::HourBand, T::Hour),
        (T::Deny, T::Keep),
        (T::DropFreeText, T::Keep),
    ] {
        assert!(coarser_or_equal(asked, allowed), "{asked} where {allowed}");
    }
}

// ---------------------------------------------------------------------------------------------
// Lookup tables

#[test]
fn every_lookup_row_is_read() {
    assert_eq!(
        GEOGRAPHY.ward_of.len(),
        data_lines(include_str!("../../../policies/lookups/kingston_lsoa.csv"))
    );
    assert!(GEOGRAPHY.ward_of.len() >= 98);
    assert_eq!(offence_codes().len(), data_lines(OFFENCE_CSV));
    assert_eq!(ETHNICITY.len(), data_lines(ETHNICITY_CSV));
    for ward in &GEOGRAPHY.wards {
        assert!(
            ward.starts_with("E05") && ward.len() == 9,
            "ward code shape"
        );
    }
    for lsoa in GEOGRAPHY.ward_of.keys() {
        assert!(
            lsoa.starts_with("E01") && lsoa.len() == 9,
            "LSOA code shape"
        );
    }
    for group in ETHNICITY.values() {
        assert!(ETHNICITY_GROUPS.contains(group), "{group}");
    }
}

#[test]
fn every_catalog_offence_code_has_a_catalog_group() {
    let cat = catalog();
    let mut checked = 0;
    for ds in cat.datasets() {
        let groups: Vec<&str> = ds
            .fields
            .iter()
            .filter(|f| {
                f.name.as_str().ends_with("ho_group") || f.name.as_str() == "ho_offence_group"
            })
            .flat_map(|f| f.values.iter().map(String::as_str))
            .collect();
        for f in ds.fields.iter().filter(|f| {
            let n = f.name.as_str();
            n.ends_with("ho_code") || n == "ho_offence_code"
        }) {
            for code in &f.values {
                let group = out(Transform::OffenceGroup, Cell::Text(code))
                    .unwrap_or_else(|| panic!("{}.{} {code}", ds.name, f.name));
                if !groups.is_empty() {
                    assert!(groups.contains(&group.as_str()), "{code} → {group}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 3 * 100, "checked {checked} codes");
    // And every group the table releases is a catalog group.
    let police = cat.dataset("police_crime").expect("police_crime");
    let groups = &police
        .field("ho_offence_group")
        .expect("group field")
        .values;
    for g in OFFENCE_GROUP.values() {
        assert!(groups.iter().any(|c| c == g), "{g}");
    }
}

#[test]
fn every_catalog_ethnicity_value_has_a_group() {
    let mut checked = 0;
    for ds in catalog().datasets() {
        for f in ds
            .fields
            .iter()
            .filter(|f| f.name.as_str().contains("ethnic"))
        {
            assert!(
                Transform::Ethnicity5.applies_to_field(f),
                "{}.{}",
                ds.name,
                f.name
            );
            checked += f.values.len();
        }
    }
    assert!(checked >= 20 * 3 + 17 + 7, "checked {checked}");
}

// ---------------------------------------------------------------------------------------------
// Applicability to the catalog's fields

#[test]
fn every_generalisation_an_isa_needs_applies_to_the_catalog_fields() {
    use FieldType as T;
    use Transform as X;
    let cat = catalog();
    for ds in cat.datasets() {
        for f in &ds.fields {
            let n = f.name.as_str();
            let applies = |t: X| t.applies_to_field(f);
            let at = format!("{}.{}", ds.name, n);
            assert!(applies(X::Deny), "{at}: deny");
            if !f.is_sent() {
                for t in Transform::ALL.iter().filter(|t| **t != X::Deny) {
                    assert!(!applies(*t), "{at}: identifier takes {t}");
                }
                continue;
            }
            assert!(applies(X::Keep), "{at}: keep");
            let mut want: Vec<X> = Vec::new();
            if matches!(f.ty, T::Date | T::Datetime) {
                want.extend([X::Day, X::Week, X::Month, X::Quarter, X::Year, X::DayOfWeek]);
            }
            if f.ty == T::Datetime || n.contains("hour") {
                want.extend([X::Hour, X::HourBand]);
            }
            if n.ends_with("lsoa21cd") || n.ends_with("wd22cd") {
                want.extend([X::Ward, X::Borough]);
            }
            if n.contains("age") && matches!(f.ty, T::Int | T::Enum) {
                want.extend([X::AgeBandSv, X::Under25Flag]);
            }
            if n.contains("ethnic") {
                want.push(X::Ethnicity5);
            }
            if n.contains("ho_code") || n.contains("ho_offence") || n.contains("ho_group") {
                want.push(X::OffenceGroup);
            }
            if f.ty == T::Int {
                want.push(X::Round5);
            }
            if f.ty == T::Str {
                want.push(X::DropFreeText);
            }
            for t in want {
                assert!(applies(t), "{at}: {t}");
            }
        }
    }
}

#[test]
fn transforms_do_not_apply_where_they_make_no_sense() {
    let cat = catalog();
    let field = |ds: &str, name: &str| -> Field {
        cat.dataset(ds)
            .and_then(|d| d.field(name))
            .cloned()
            .unwrap_or_else(|| panic!("{ds}.{name}"))
    };
    for (t, ds, name) in [
        (Transform::Month, "police_crime", "victim_age"),
        (Transform::AgeBandSv, "police_crime", "victim_no"),
        (Transform::Ward, "lfb_incident", "property_type"),
        (Transform::Ethnicity5, "police_crime", "victim_sex"),
        (Transform::OffenceGroup, "police_crime", "outcome_code"),
        (Transform::HourBand, "police_crime", "outcome_date"),
        (Transform::Hour, "police_crime", "victim_age"),
        (Transform::Round5, "police_crime", "da_flag"),
        (Transform::DropFreeText, "police_crime", "da_flag"),
        (Transform::Keep, "police_crime", "victim_dob"),
        (Transform::Under25Flag, "ed_istv", "assault_method"),
    ] {
        assert!(!t.applies_to_field(&field(ds, name)), "{t} on {ds}.{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

fn date() -> impl Strategy<Value = Date> {
    (1900i32..2100, 1u16..=366)
        .prop_filter_map("a real day", |(y, d)| Date::from_ordinal_date(y, d).ok())
}

/// A stored datetime: date, hour, minute, with or without seconds.
fn datetime() -> impl Strategy<Value = (Date, u8, String)> {
    (date(), 0u8..24, 0u8..60, proptest::option::of(0u8..60)).prop_map(|(d, h, m, s)| {
        let text = match s {
            Some(s) => format!("{}T{h:02}:{m:02}:{s:02}", iso(d)),
            None => format!("{}T{h:02}:{m:02}", iso(d)),
        };
        (d, h, text)
    })
}

fn pick(values: Vec<&'static str>) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(values)
}

/// The week a `YYYY-Www` label names, Monday to Sunday.
fn week_span(label: &str) -> (Date, Date) {
    let (y, w) = label.split_once("-W").expect("week label");
    let monday = Date::from_iso_week_date(
        y.parse().expect("year"),
        w.parse().expect("week"),
        Weekday::Monday,
    )
    .expect("real week");
    (monday, monday + Duration::days(6))
}

/// Checks that for every `a ≥ b` (other than `b = keep`), `a(b(x)) == a(x)`: releasing `a`
/// where `b` is allowed reveals nothing `b` does not. With `a == b` this is idempotence.
fn assert_derivations(cells: &[Cell<'_>]) {
    for &a in Transform::ALL {
        for &b in Transform::ALL {
            if b == Transform::Keep || !coarser_or_equal(a, b) {
                continue;
            }
            for &cell in cells {
                let Ok(Some(via_b)) = b.apply(cell) else {
                    continue;
                };
                let direct = a.apply(cell);
                assert!(direct.is_ok(), "{a} fails where {b} works ({cell:?})");
                assert_eq!(
                    a.apply(Cell::Text(&via_b)).ok().flatten(),
                    direct.ok().flatten(),
                    "{a}({b}(x)) != {a}(x) for {cell:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn date_buckets_contain_the_date(d in date()) {
        let s = iso(d);
        let cell = Cell::Date(&s);
        prop_assert_eq!(out(Transform::Day, cell), Some(s.clone()));
        let month = out(Transform::Month, cell).expect("month");
        prop_assert_eq!(&month, &format!("{:04}-{:02}", d.year(), u8::from(d.month())));
        prop_assert!(s.starts_with(&month) && month.len() == 7);
        let quarter = out(Transform::Quarter, cell).expect("quarter");
        let q: u8 = quarter[6..].parse().expect("quarter number");
        let prefix = format!("{:04}-Q", d.year());
        prop_assert!(quarter.starts_with(&prefix));
        prop_assert!((3 * q - 2..=3 * q).contains(&u8::from(d.month())));
        prop_assert_eq!(out(Transform::Year, cell), Some(format!("{:04}", d.year())));
        let week = out(Transform::Week, cell).expect("week");
        let (monday, sunday) = week_span(&week);
        prop_assert!(monday <= d && d <= sunday, "{} not in {}", s, week);
        let dow = out(Transform::DayOfWeek, cell).expect("day of week");
        prop_assert_eq!(&dow[..], &d.weekday().to_string()[..3]);
        // Never the full date back from a coarser bucket.
        for t in [Transform::Week, Transform::Month, Transform::Quarter, Transform::Year, Transform::DayOfWeek] {
            prop_assert_ne!(out(t, cell), Some(s.clone()));
        }
        assert_derivations(&[cell, Cell::Text(&s)]);
    }

    #[test]
    fn datetime_buckets_contain_the_instant((d, h, s) in datetime()) {
        let cell = Cell::Datetime(&s);
        prop_assert_eq!(out(Transform::Day, cell), Some(iso(d)));
        prop_assert_eq!(out(Transform::Hour, cell), Some(format!("{h:02}")));
        let band = out(Transform::HourBand, cell).expect("band");
        let lo: u8 = band[..2].parse().expect("band start");
        let hi: u8 = band[3..].parse().expect("band end");
        prop_assert!(lo <= h && h <= hi && HOUR_BANDS.contains(&band.as_str()));
        for t in Transform::ALL.iter().filter(|t| **t != Transform::Keep) {
            if let Ok(Some(o)) = t.apply(cell) {
                prop_assert_ne!(&o, &s, "{} returned the datetime", t);
                prop_assert!(!o.contains(':'), "{} released a time of day finer than an hour", t);
            }
        }
        assert_derivations(&[cell, Cell::Int(i64::from(h))]);
    }

    #[test]
    fn age_bands_contain_the_age(age in 0..=MAX_AGE) {
        let band = out(Transform::AgeBandSv, Cell::Int(age)).expect("band");
        let (lo, hi, _) = SV_BANDS.iter().find(|b| b.2 == band).expect("a listed band");
        prop_assert!(*lo <= age && age <= *hi);
        prop_assert_ne!(&band, &age.to_string());
        let young = out(Transform::Under25Flag, Cell::Int(age)).expect("flag");
        prop_assert_eq!(young == "true", age < 25);
        assert_derivations(&[Cell::Int(age)]);
    }

    #[test]
    fn round5_is_a_near_multiple_of_5(n in -1_000_000i64..1_000_000_000) {
        let r: i64 = out(Transform::Round5, Cell::Int(n)).expect("rounded").parse().expect("int");
        prop_assert_eq!(r % 5, 0);
        prop_assert!((r - n).abs() <= 2);
        assert_derivations(&[Cell::Int(n)]);
    }

    #[test]
    fn ward_and_borough_contain_the_lsoa(lsoa in pick(lsoas())) {
        let ward = out(Transform::Ward, Cell::Text(lsoa)).expect("ward");
        prop_assert_eq!(GEOGRAPHY.ward_of.get(lsoa).copied(), Some(ward.as_str()));
        prop_assert_ne!(&ward, lsoa);
        let borough = out(Transform::Borough, Cell::Text(lsoa));
        prop_assert_eq!(borough.as_deref(), Some(BOROUGH_CODE));
        assert_derivations(&[Cell::Text(lsoa)]);
    }

    #[test]
    fn ethnicity_groups_contain_the_category(value in pick(ethnicity_values())) {
        let group = out(Transform::Ethnicity5, Cell::Text(value)).expect("group");
        prop_assert!(ETHNICITY_GROUPS.contains(&group.as_str()));
        if value != "Not stated" {
            prop_assert_ne!(&group, value);
        }
        // ONS labels are "Group: category"; the group is the prefix.
        if let Some((prefix, _)) = value.split_once(':') {
            prop_assert_eq!(prefix, group.as_str());
        }
        assert_derivations(&[Cell::Text(value)]);
    }

    #[test]
    fn offence_groups_are_coarser_than_codes(code in pick(offence_codes())) {
        let group = out(Transform::OffenceGroup, Cell::Text(code)).expect("group");
        prop_assert_ne!(&group, code);
        prop_assert!(OFFENCE_GROUP.get(group.as_str()) == Some(&group.as_str()));
        assert_derivations(&[Cell::Text(code)]);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,24}", n in any::<i64>()) {
        for t in Transform::ALL {
            for cell in [Cell::Text(&s), Cell::Date(&s), Cell::Datetime(&s), Cell::Int(n), Cell::Flag(n % 2 == 0)] {
                if let Err(e) = t.apply(cell) {
                    let msg = e.to_string();
                    prop_assert!(s.len() < 3 || !msg.contains(s.as_str()), "{} echoed the value", t);
                }
            }
        }
    }
}
