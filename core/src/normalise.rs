//! Normalisation of identifiers and values before tokenisation or sending.
//!
//! Each function takes raw text from a source export and returns the canonical form or a reason
//! the value is invalid. The reasons never repeat the value: they may end up in logs.

use std::sync::LazyLock;
use unicode_normalization::UnicodeNormalization;

/// Why a value could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    /// Wrong shape for the type; the text says which shape is expected.
    #[error("{0}")]
    Shape(&'static str),
    /// An NHS number whose mod-11 check digit does not match.
    #[error("NHS number fails its mod-11 check digit")]
    NhsCheckDigit,
    /// A PNC id whose check letter does not match.
    #[error("PNC id fails its mod-23 check letter")]
    PncCheckLetter,
    /// A date or time that does not exist in the calendar.
    #[error("not a real calendar date or time")]
    Calendar,
}

/// NHS number: 10 digits (spaces and hyphens ignored) with a valid mod-11 check digit.
pub fn nhs_number(raw: &str) -> Result<String, NormaliseError> {
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NormaliseError::Shape(
            "NHS number must be 10 digits, e.g. 943 476 5919",
        ));
    }
    if nhs_check_ok(digits.as_bytes()) {
        Ok(digits)
    } else {
        Err(NormaliseError::NhsCheckDigit)
    }
}

/// Whether 10 ASCII digits carry a valid NHS mod-11 check digit.
pub fn nhs_check_ok(d: &[u8]) -> bool {
    if d.len() != 10 {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * (10 - i as u32))
        .sum();
    let check = match 11 - (sum % 11) {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == u32::from(d[9] - b'0')
}

const PNC_LETTERS: &[u8; 23] = b"ZABCDEFGHJKLMNPQRTUVWXY";

static PNC_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^(\d{2}|\d{4})/?(\d{1,7})([A-Z])$").expect("static regex")
});

/// PNC id: canonical `YYYY/NNNNNNNC` with a valid mod-23 check letter. The short form `YY/N…C`
/// is expanded with a pivot: `00`–`39` → 20YY, `40`–`99` → 19YY.
pub fn pnc_id(raw: &str) -> Result<String, NormaliseError> {
    let s: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let caps = PNC_RE.captures(&s).ok_or(NormaliseError::Shape(
        "PNC id must look like YYYY/NNNNNNNC or YY/NNNNNNNC",
    ))?;
    let year = &caps[1];
    let serial: u32 = caps[2]
        .parse()
        .map_err(|_| NormaliseError::Shape("PNC serial must be digits"))?;
    let letter = caps[3].as_bytes()[0];
    let yy = &year[year.len() - 2..];
    let full_year = if year.len() == 4 {
        year.to_string()
    } else if yy < "40" {
        format!("20{yy}")
    } else {
        format!("19{yy}")
    };
    if pnc_check_letter(yy, serial) != letter {
        return Err(NormaliseError::PncCheckLetter);
    }
    Ok(format!("{full_year}/{serial:07}{}", letter as char))
}

/// The PNC check letter for a two-digit year and a serial number.
pub fn pnc_check_letter(yy: &str, serial: u32) -> u8 {
    let n: u64 = format!("{yy}{serial:07}").parse().unwrap_or(0);
    PNC_LETTERS[(n % 23) as usize]
}

/// Person name: diacritics removed, upper-case, letters A–Z only (spaces, hyphens, apostrophes
/// and other punctuation dropped).
pub fn name(raw: &str) -> Result<String, NormaliseError> {
    let out: String = raw
        .nfkd()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if out.is_empty() {
        Err(NormaliseError::Shape("name has no letters"))
    } else {
        Ok(out)
    }
}

static POSTCODE_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}$").expect("static regex")
});

/// UK postcode in PCDS form: upper-case, one space before the inward code.
pub fn postcode(raw: &str) -> Result<String, NormaliseError> {
    let s: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if !POSTCODE_RE.is_match(&s) {
        return Err(NormaliseError::Shape("postcode must look like KT1 1EE"));
    }
    let (out, inw) = s.split_at(s.len() - 3);
    Ok(format!("{out} {inw}"))
}

/// UPRN: 1–12 digits, leading zeros dropped; 0 (a redacted dwelling) is invalid.
pub fn uprn(raw: &str) -> Result<String, NormaliseError> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NormaliseError::Shape("UPRN must be 1-12 digits"));
    }
    let n: u64 = s
        .parse()
        .map_err(|_| NormaliseError::Shape("UPRN must be 1-12 digits"))?;
    if n == 0 {
        return Err(NormaliseError::Shape(
            "UPRN 0 means redacted; leave the cell empty instead",
        ));
    }
    Ok(n.to_string())
}

/// A case or record reference: trimmed, upper-case, inner whitespace collapsed, 1–64 characters.
pub fn reference(raw: &str) -> Result<String, NormaliseError> {
    let out = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    if out.is_empty() || out.chars().count() > 64 {
        return Err(NormaliseError::Shape("reference must be 1-64 characters"));
    }
    Ok(out)
}

/// A calendar date as `YYYY-MM-DD`. Accepts ISO `YYYY-MM-DD`, `YYYYMMDD` and the UK forms
/// `DD/MM/YYYY`, `DD-MM-YYYY`, `DD.MM.YYYY`.
pub fn date(raw: &str) -> Result<String, NormaliseError> {
    let (y, m, d) = split_date(raw.trim())?;
    let month = time::Month::try_from(m).map_err(|_| NormaliseError::Calendar)?;
    let date = time::Date::from_calendar_date(y, month, d).map_err(|_| NormaliseError::Calendar)?;
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

const DATE_SHAPE: &str = "date must be YYYY-MM-DD or DD/MM/YYYY";

fn split_date(s: &str) -> Result<(i32, u8, u8), NormaliseError> {
    let num = |t: &str| -> Result<u32, NormaliseError> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NormaliseError::Shape(DATE_SHAPE));
        }
        t.parse().map_err(|_| NormaliseError::Shape(DATE_SHAPE))
    };
    let parts: Vec<&str> = s.split(['-', '/', '.']).collect();
    let (y, m, d) = match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => (num(y)?, num(m)?, num(d)?),
        [d, m, y] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => (num(y)?, num(m)?, num(d)?),
        [one] if one.len() == 8 && one.is_ascii() => {
            (num(&one[..4])?, num(&one[4..6])?, num(&one[6..])?)
        }
        _ => return Err(NormaliseError::Shape(DATE_SHAPE)),
    };
    let y = i32::try_from(y).map_err(|_| NormaliseError::Calendar)?;
    if !(1800..=2200).contains(&y) {
        return Err(NormaliseError::Calendar);
    }
    Ok((
        y,
        u8::try_from(m).map_err(|_| NormaliseError::Calendar)?,
        u8::try_from(d).map_err(|_| NormaliseError::Calendar)?,
    ))
}

/// A local date and time as `YYYY-MM-DDTHH:MM:SS`. The date part takes the forms of [`date`];
/// the separator may be `T` or a space; seconds are optional.
pub fn datetime(raw: &str) -> Result<String, NormaliseError> {
    const SHAPE: &str = "datetime must be YYYY-MM-DDTHH:MM[:SS] or DD/MM/YYYY HH:MM[:SS]";
    let s = raw.trim();
    let (d, t) = s
        .split_once(['T', ' '])
        .ok_or(NormaliseError::Shape(SHAPE))?;
    let d = date(d)?;
    let parts: Vec<&str> = t.trim().split(':').collect();
    let p = |x: &str| -> Result<u8, NormaliseError> {
        if x.len() != 2 || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NormaliseError::Shape(SHAPE));
        }
        x.parse().map_err(|_| NormaliseError::Shape(SHAPE))
    };
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (p(h)?, p(m)?, 0),
        [h, m, s] => (p(h)?, p(m)?, p(s)?),
        _ => return Err(NormaliseError::Shape(SHAPE)),
    };
    time::Time::from_hms(h, m, sec).map_err(|_| NormaliseError::Calendar)?;
    Ok(format!("{d}T{h:02}:{m:02}:{sec:02}"))
}

/// Whether an ISO date (`YYYY-MM-DD`) as sent by an agent is canonical and real.
pub fn is_canonical_date(s: &str) -> bool {
    s.len() == 10 && date(s).is_ok_and(|d| d == s)
}

/// Whether an ISO datetime (`YYYY-MM-DDTHH:MM:SS`) as sent by an agent is canonical and real.
pub fn is_canonical_datetime(s: &str) -> bool {
    s.len() == 19 && datetime(s).is_ok_and(|d| d == s)
}

static RAW_NHS_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?:^|[^0-9])(\d{3}[ -]?\d{3}[ -]?\d{4})(?:$|[^0-9])").expect("static regex")
});
static RAW_PNC_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)(?:^|[^0-9])((?:\d{2}|\d{4})/\d{1,7}[A-Z])(?:$|[^A-Z0-9])")
        .expect("static regex")
});
static RAW_POSTCODE_RE: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)(?:^|[^A-Z0-9])([A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2})(?:$|[^A-Z0-9])",
    )
    .expect("static regex")
});

/// The kind of direct identifier a text value appears to contain, if any: a valid NHS number,
/// a PNC id with a valid check letter, or a full postcode. Used by the gateway to refuse raw
/// identifiers that slipped into a non-identifier field.
pub fn raw_identifier_in(text: &str) -> Option<&'static str> {
    for c in RAW_NHS_RE.captures_iter(text) {
        let d: Vec<u8> = c[1].bytes().filter(u8::is_ascii_digit).collect();
        if nhs_check_ok(&d) {
            return Some("an NHS number");
        }
    }
    for c in RAW_PNC_RE.captures_iter(text) {
        if pnc_id(&c[1]).is_ok() {
            return Some("a PNC id");
        }
    }
    if RAW_POSTCODE_RE.is_match(text) {
        return Some("a full postcode");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nhs_numbers() {
        assert_eq!(nhs_number("943 476 5919").as_deref(), Ok("9434765919"));
        assert_eq!(nhs_number("943-476-5919").as_deref(), Ok("9434765919"));
        assert_eq!(nhs_number("9434765918"), Err(NormaliseError::NhsCheckDigit));
        assert!(matches!(
            nhs_number("94347659"),
            Err(NormaliseError::Shape(_))
        ));
        assert!(matches!(
            nhs_number("94347659AB"),
            Err(NormaliseError::Shape(_))
        ));
    }

    #[test]
    fn pnc_ids() {
        // 2019/0123456 → 190123456 mod 23 = 7 → "G"? compute with the table.
        let letter = pnc_check_letter("19", 123456) as char;
        let good = format!("2019/0123456{letter}");
        assert_eq!(pnc_id(&good).as_deref(), Ok(good.as_str()));
        assert_eq!(
            pnc_id(&format!("19/123456{letter}")).as_deref(),
            Ok(good.as_str())
        );
        assert_eq!(
            pnc_id(&format!("19/123456{}", letter.to_ascii_lowercase())).as_deref(),
            Ok(good.as_str())
        );
        let wrong = if letter == 'A' { 'B' } else { 'A' };
        assert_eq!(
            pnc_id(&format!("2019/0123456{wrong}")),
            Err(NormaliseError::PncCheckLetter)
        );
        assert!(pnc_id("hello").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name("  O'Brien-Smith ").as_deref(), Ok("OBRIENSMITH"));
        assert_eq!(name("Zoë Ångström").as_deref(), Ok("ZOEANGSTROM"));
        assert!(name("  -- ").is_err());
    }

    #[test]
    fn postcodes() {
        assert_eq!(postcode("kt1 1ee").as_deref(), Ok("KT1 1EE"));
        assert_eq!(postcode("KT11EE").as_deref(), Ok("KT1 1EE"));
        assert_eq!(postcode("SW1A1AA").as_deref(), Ok("SW1A 1AA"));
        assert!(postcode("KT1").is_err());
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date("2024-07-14").as_deref(), Ok("2024-07-14"));
        assert_eq!(date("14/07/2024").as_deref(), Ok("2024-07-14"));
        assert_eq!(date("20240714").as_deref(), Ok("2024-07-14"));
        assert_eq!(date("2024-02-30"), Err(NormaliseError::Calendar));
        assert!(date("July 14").is_err());
        assert_eq!(
            datetime("2024-07-14T23:40").as_deref(),
            Ok("2024-07-14T23:40:00")
        );
        assert_eq!(
            datetime("14/07/2024 23:40:05").as_deref(),
            Ok("2024-07-14T23:40:05")
        );
        assert_eq!(datetime("2024-07-14T24:40"), Err(NormaliseError::Calendar));
        assert!(is_canonical_date("2024-07-14"));
        assert!(!is_canonical_date("14/07/2024"));
        assert!(is_canonical_datetime("2024-07-14T23:40:00"));
        assert!(!is_canonical_datetime("2024-07-14T23:40"));
    }

    #[test]
    fn raw_identifiers_are_spotted() {
        assert_eq!(
            raw_identifier_in("seen by 943 476 5919 today"),
            Some("an NHS number")
        );
        assert_eq!(raw_identifier_in("9434765919"), Some("an NHS number"));
        assert_eq!(raw_identifier_in("9434765918"), None);
        let letter = pnc_check_letter("19", 123456) as char;
        assert_eq!(
            raw_identifier_in(&format!("pnc 19/123456{letter}")),
            Some("a PNC id")
        );
        assert_eq!(
            raw_identifier_in("outside 12 High St KT1 1EE"),
            Some("a full postcode")
        );
        assert_eq!(raw_identifier_in("outside Oceana, Clarence St"), None);
        assert_eq!(raw_identifier_in("Scooter"), None);
    }

    proptest! {
        #[test]
        fn nhs_normalisation_is_idempotent(d in "[0-9]{10}") {
            if let Ok(n) = nhs_number(&d) {
                prop_assert_eq!(nhs_number(&n), Ok(n.clone()));
            }
        }

        #[test]
        fn name_output_is_upper_ascii(s in "\\PC{0,30}") {
            if let Ok(n) = name(&s) {
                prop_assert!(n.bytes().all(|b| b.is_ascii_uppercase()));
                prop_assert_eq!(name(&n), Ok(n.clone()));
            }
        }

        #[test]
        fn normalisers_never_panic(s in "\\PC{0,40}") {
            let _ = (nhs_number(&s), pnc_id(&s), postcode(&s), date(&s), datetime(&s), uprn(&s), reference(&s), raw_identifier_in(&s));
        }
    }
}
