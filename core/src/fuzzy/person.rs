//! The normalised person a fuzzy encoding is computed from: names split into words, date of
//! birth, sex and postcode, each checked and put in one canonical form.
//!
//! Reuses [`crate::normalise`] (names, dates, postcodes) and adds only what the exact tokens did
//! not need: names kept as words (so `O'Brien` and `O Brien` can match on the compact form while
//! `exact` keeps the spacing) and sex. A value that is empty or invalid is *missing*: it gives no
//! token and no Bloom-filter bits, never a token of the empty string.
//!
//! Holds personal data: `Debug` says only which fields are present, and [`InvalidField`] names
//! the field and the reason, never the value.

use super::tokens::FieldId;
use crate::normalise::{self, NormaliseError};
use std::fmt;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// One person's identifying values as read from a source row, before normalisation. `None` or
/// a blank string means not recorded. `Debug` shows only which are present.
#[derive(Clone, Copy, Default)]
pub struct RawPerson<'a> {
    /// Forenames (first and middle names), in order.
    pub forenames: Option<&'a str>,
    /// Surname.
    pub surname: Option<&'a str>,
    /// Date of birth, in a form [`normalise::date`] accepts.
    pub dob: Option<&'a str>,
    /// Sex: `F`/`M`, `Female`/`Male` (any case), or the NHS codes `2`/`1`.
    pub sex: Option<&'a str>,
    /// UK postcode, any spacing or case.
    pub postcode: Option<&'a str>,
}

impl fmt::Debug for RawPerson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = [
            ("forenames", self.forenames.is_some()),
            ("surname", self.surname.is_some()),
            ("dob", self.dob.is_some()),
            ("sex", self.sex.is_some()),
            ("postcode", self.postcode.is_some()),
        ];
        write_present(f, "RawPerson", &given)
    }
}

/// A date of birth that exists in the calendar.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dob {
    /// Year, 1800–2200 (what [`normalise::date`] accepts).
    pub year: i32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
}

impl fmt::Debug for Dob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dob(<redacted>)")
    }
}

impl Dob {
    /// The date as `YYYYMMDD`, the digits its Bloom-filter unigrams are taken from.
    pub fn digits(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Sex as recorded, when it is one of the two values every agency records the same way.
/// Anything else (`Unknown`, not stated, indeterminate) is missing, so it never agrees or
/// disagrees by accident.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// `F`, `Female` or NHS code `2`.
    Female,
    /// `M`, `Male` or NHS code `1`.
    Male,
}

impl fmt::Debug for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sex(<redacted>)")
    }
}

impl Sex {
    /// The canonical code, `F` or `M`.
    pub fn code(self) -> &'static str {
        match self {
            Sex::Female => "F",
            Sex::Male => "M",
        }
    }
}

/// A canonical UK postcode (`KT1 1EE`, as [`normalise::postcode`] gives it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Postcode(String);

impl fmt::Debug for Postcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Postcode(<redacted>)")
    }
}

impl Postcode {
    /// The full postcode, `KT1 1EE`.
    pub fn full(&self) -> &str {
        &self.0
    }

    /// The outward code (postal district), `KT1`.
    pub fn district(&self) -> &str {
        self.0
            .split_once(' ')
            .map_or(self.0.as_str(), |(out, _)| out)
    }

    /// The sector: outward code, space, first character of the inward code, `KT1 1`.
    pub fn sector(&self) -> &str {
        let end = self.district().len() + 2;
        self.0.get(..end).unwrap_or(self.0.as_str())
    }

    /// The postcode without its space, `KT11EE`, the string its Bloom-filter bigrams are taken
    /// from.
    pub fn compact(&self) -> String {
        self.0.replace(' ', "")
    }
}

/// A person's identifying values in canonical form. Empty word lists and `None` are missing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PersonFields {
    /// Forename words, upper-case A–Z only, in order (first forename first).
    pub forenames: Vec<String>,
    /// Surname words, upper-case A–Z only, in order (`O'Brien-Smith` → `O`, `BRIEN`, `SMITH`).
    pub surname: Vec<String>,
    /// Date of birth.
    pub dob: Option<Dob>,
    /// Sex.
    pub sex: Option<Sex>,
    /// Postcode.
    pub postcode: Option<Postcode>,
}

impl fmt::Debug for PersonFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = [
            ("forenames", !self.forenames.is_empty()),
            ("surname", !self.surname.is_empty()),
            ("dob", self.dob.is_some()),
            ("sex", self.sex.is_some()),
            ("postcode", self.postcode.is_some()),
        ];
        write_present(f, "PersonFields", &given)
    }
}

/// A value that was given but could not be normalised, and so was treated as missing. Never
/// holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The field.
    pub field: FieldId,
    /// Why, e.g. "not a real calendar date or time".
    pub reason: NormaliseError,
}

impl PersonFields {
    /// Normalises raw values. Blank values are missing; invalid ones are missing too and are
    /// listed in the second element so the caller can report them (by field, never by value).
    pub fn from_raw(raw: &RawPerson<'_>) -> (Self, Vec<InvalidField>) {
        let mut invalid = Vec::new();
        let forenames =
            keep(&mut invalid, FieldId::Forename, name_field(raw.forenames)).unwrap_or_default();
        let surname =
            keep(&mut invalid, FieldId::Surname, name_field(raw.surname)).unwrap_or_default();
        let dob = keep(
            &mut invalid,
            FieldId::Dob,
            non_blank(raw.dob).map(dob).transpose(),
        );
        let sex = keep(
            &mut invalid,
            FieldId::Sex,
            non_blank(raw.sex).map(sex).transpose(),
        )
        .flatten();
        let postcode = keep(
            &mut invalid,
            FieldId::Postcode,
            non_blank(raw.postcode)
                .map(|p| normalise::postcode(p).map(Postcode))
                .transpose(),
        );
        (
            Self {
                forenames,
                surname,
                dob,
                sex,
                postcode,
            },
            invalid,
        )
    }

    /// The first forename, if any.
    pub fn first_forename(&self) -> Option<&str> {
        self.forenames.first().map(String::as_str)
    }

    /// The surname words joined by one space (`O BRIEN SMITH`), if any.
    pub fn surname_exact(&self) -> Option<String> {
        (!self.surname.is_empty()).then(|| self.surname.join(" "))
    }

    /// The surname without spaces or punctuation (`OBRIENSMITH`), if any: what
    /// [`normalise::name`] gives for the whole surname.
    pub fn surname_compact(&self) -> Option<String> {
        (!self.surname.is_empty()).then(|| self.surname.concat())
    }
}

/// Splits a name into normalised words: NFKD with combining marks dropped (so a decomposed
/// accent does not split a word), cut at every character that is not a letter (spaces,
/// hyphens, apostrophes, dots, digits), then each piece through [`normalise::name`]. Pieces with
/// no letter A–Z left are dropped.
pub fn name_words(raw: &str) -> Vec<String> {
    let folded: String = raw.nfkd().filter(|c| !is_combining_mark(*c)).collect();
    folded
        .split(|c: char| !c.is_alphabetic())
        .filter_map(|piece| normalise::name(piece).ok())
        .collect()
}

/// Sex from the forms agencies use: `F`/`M`, `Female`/`Male` (any case, surrounding space
/// ignored), NHS codes `2`/`1`. `Ok(None)` for the recognised "not known" forms (`U`,
/// `Unknown`, `X`, `I`, `Indeterminate`, `9`, `0`, `Not known`, `Not stated`); an error for
/// anything else.
pub fn sex(raw: &str) -> Result<Option<Sex>, NormaliseError> {
    let s = raw.trim().to_ascii_uppercase();
    match s.as_str() {
        "F" | "FEMALE" | "2" => Ok(Some(Sex::Female)),
        "M" | "MALE" | "1" => Ok(Some(Sex::Male)),
        "U" | "UNKNOWN" | "X" | "I" | "INDETERMINATE" | "9" | "0" | "NOT KNOWN" | "NOT STATED" => {
            Ok(None)
        }
        _ => Err(NormaliseError::Shape(
            "sex must be F, M, Female, Male, 2, 1 or Unknown",
        )),
    }
}

/// A date of birth from any form [`normalise::date`] accepts.
pub fn dob(raw: &str) -> Result<Dob, NormaliseError> {
    let iso = normalise::date(raw)?;
    let part = |r: std::ops::Range<usize>| -> Result<u32, NormaliseError> {
        iso.get(r)
            .and_then(|t| t.parse().ok())
            .ok_or(NormaliseError::Calendar)
    };
    let year = i32::try_from(part(0..4)?).map_err(|_| NormaliseError::Calendar)?;
    let month = u8::try_from(part(5..7)?).map_err(|_| NormaliseError::Calendar)?;
    let day = u8::try_from(part(8..10)?).map_err(|_| NormaliseError::Calendar)?;
    Ok(Dob { year, month, day })
}

fn name_field(raw: Option<&str>) -> Result<Option<Vec<String>>, NormaliseError> {
    let Some(raw) = non_blank(raw) else {
        return Ok(None);
    };
    let words = name_words(raw);
    if words.is_empty() {
        Err(NormaliseError::Shape("name has no letters"))
    } else {
        Ok(Some(words))
    }
}

/// The value, or `None` with the reason recorded when it was given but invalid.
fn keep<T>(
    invalid: &mut Vec<InvalidField>,
    field: FieldId,
    r: Result<Option<T>, NormaliseError>,
) -> Option<T> {
    r.unwrap_or_else(|reason| {
        invalid.push(InvalidField { field, reason });
        None
    })
}

fn non_blank(raw: Option<&str>) -> Option<&str> {
    raw.filter(|s| !s.trim().is_empty())
}

fn write_present(f: &mut fmt::Formatter<'_>, what: &str, given: &[(&str, bool)]) -> fmt::Result {
    let present: Vec<&str> = given.iter().filter(|g| g.1).map(|g| g.0).collect();
    write!(f, "{what}(<redacted>; present: {})", present.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn person(f: &str, s: &str, d: &str, x: &str, p: &str) -> (PersonFields, Vec<InvalidField>) {
        PersonFields::from_raw(&RawPerson {
            forenames: Some(f),
            surname: Some(s),
            dob: Some(d),
            sex: Some(x),
            postcode: Some(p),
        })
    }

    #[test]
    fn names_split_into_words_and_reuse_name_normalisation() {
        assert_eq!(name_words("  O'Brien-Smith "), ["O", "BRIEN", "SMITH"]);
        assert_eq!(name_words("Zoë Ångström"), ["ZOE", "ANGSTROM"]);
        // A decomposed diaeresis does not split the word.
        assert_eq!(name_words("Zoe\u{308}y"), ["ZOEY"]);
        assert_eq!(
            name_words("Mary-Jane  St. John"),
            ["MARY", "JANE", "ST", "JOHN"]
        );
        assert!(name_words(" -- 42 ").is_empty());
        let (p, bad) = person("Mary Ann", "O'Neil", "05/03/1990", "f", "kt11ee");
        assert!(bad.is_empty());
        assert_eq!(p.first_forename(), Some("MARY"));
        assert_eq!(p.surname_exact().as_deref(), Some("O NEIL"));
        assert_eq!(p.surname_compact().as_deref(), Some("ONEIL"));
        assert_eq!(
            p.surname_compact(),
            normalise::name("O'Neil").ok(),
            "compact form is exactly the exact-token normalisation"
        );
        assert_eq!(
            p.dob,
            Some(Dob {
                year: 1990,
                month: 3,
                day: 5
            })
        );
        assert_eq!(p.sex, Some(Sex::Female));
        let pc = p.postcode.as_ref().expect("postcode");
        assert_eq!(
            (pc.full(), pc.sector(), pc.district()),
            ("KT1 1EE", "KT1 1", "KT1")
        );
        assert_eq!(pc.compact(), "KT11EE");
    }

    #[test]
    fn blank_is_missing_and_invalid_is_missing_and_reported_without_the_value() {
        let (p, bad) = person("  ", "", "1990-02-30", "Unknown", "NOT A CODE");
        assert_eq!(p, PersonFields::default());
        let fields: Vec<FieldId> = bad.iter().map(|b| b.field).collect();
        assert_eq!(fields, [FieldId::Dob, FieldId::Postcode]);
        let text = format!("{bad:?}");
        assert!(
            !text.contains("1990") && !text.contains("NOT A CODE"),
            "{text}"
        );
        let (_, bad) = person("--", "Smith", "", "Q", "");
        let fields: Vec<FieldId> = bad.iter().map(|b| b.field).collect();
        assert_eq!(fields, [FieldId::Forename, FieldId::Sex]);
        let (p, bad) = PersonFields::from_raw(&RawPerson::default());
        assert!(bad.is_empty());
        assert_eq!(p, PersonFields::default());
    }

    #[test]
    fn sex_forms() {
        for (raw, want) in [
            ("F", Some(Sex::Female)),
            (" female ", Some(Sex::Female)),
            ("2", Some(Sex::Female)),
            ("m", Some(Sex::Male)),
            ("Male", Some(Sex::Male)),
            ("1", Some(Sex::Male)),
            ("Unknown", None),
            ("9", None),
        ] {
            assert_eq!(sex(raw), Ok(want), "{raw}");
        }
        assert!(sex("yes").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let (p, _) = person("Mary", "Smith", "1990-03-05", "F", "KT1 1EE");
        let text = format!("{p:?} {:?} {:?}", p.dob, p.postcode);
        for secret in ["MARY", "SMITH", "1990", "KT1"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("present: forenames surname dob sex postcode"));
        let raw = RawPerson {
            surname: Some("Smith"),
            ..RawPerson::default()
        };
        assert_eq!(
            format!("{raw:?}"),
            "RawPerson(<redacted>; present: surname)"
        );
    }

    proptest! {
        #[test]
        fn normalisation_never_panics_and_words_are_upper_ascii(
            f in "\\PC{0,30}", s in "\\PC{0,30}", d in "\\PC{0,12}", x in "\\PC{0,8}", p in "\\PC{0,10}",
        ) {
            let (fields, _) = person(&f, &s, &d, &x, &p);
            for w in fields.forenames.iter().chain(&fields.surname) {
                prop_assert!(!w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase()));
            }
        }

        #[test]
        fn valid_dates_round_trip(y in 1900i32..2030, m in 1u8..=12, d in 1u8..=28) {
            let parsed = dob(&format!("{d:02}/{m:02}/{y}")).expect("valid");
            prop_assert_eq!(parsed, Dob { year: y, month: m, day: d });
            prop_assert_eq!(parsed.digits(), format!("{y:04}{m:02}{d:02}"));
        }
    }
}
