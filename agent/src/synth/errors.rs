//! Identifier corruption: how one agency records one person. A recorded identity is derived
//! deterministically from (seed, agency, role, person, record), so the same errors recur in every
//! row of that record, and a duplicate record of the person draws its own. Pure.

use super::config::ErrorRates;
use super::geography::lsoas;
use super::identifiers::{nhs_broken, nhs_digits};
use super::names::{self, variants};
use super::population::{Person, REFERENCE_DATE};
use super::sample::{mix, stream, tag};
use rand::Rng;
use rand::rngs::StdRng;
use time::Date;

/// The kind of agency, which decides which identifiers it holds and how often they are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agency {
    /// Metropolitan Police.
    Police,
    /// Council housing and community safety.
    Council,
    /// Council children's social care.
    SocialCare,
    /// London Fire Brigade.
    Fire,
    /// Probation Service.
    Probation,
    /// NHS (ED, ICB).
    Health,
}

/// The part a person plays in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A victim, caller or patient.
    Victim,
    /// A suspect or perpetrator.
    Suspect,
    /// A supervised person on probation or in a PNC-linked extract.
    Supervised,
    /// Anyone else (household member, child).
    Other,
}

/// One identifier error (a bit in [`Recorded::errors`]).
pub mod error {
    /// Typo in the forename.
    pub const FORENAME_TYPO: u32 = 1;
    /// Typo in the surname.
    pub const SURNAME_TYPO: u32 = 1 << 1;
    /// Nickname or variant spelling of the forename.
    pub const NICKNAME: u32 = 1 << 2;
    /// Forename and surname swapped.
    pub const NAME_SWAP: u32 = 1 << 3;
    /// Changed surname.
    pub const SURNAME_CHANGE: u32 = 1 << 4;
    /// Hyphenated surname.
    pub const SURNAME_HYPHENATED: u32 = 1 << 5;
    /// Day and month of birth transposed.
    pub const DOB_DAY_MONTH_SWAP: u32 = 1 << 6;
    /// Other date-of-birth error.
    pub const DOB_OTHER: u32 = 1 << 7;
    /// NHS number missing.
    pub const NHS_MISSING: u32 = 1 << 8;
    /// NHS number with a wrong check digit.
    pub const NHS_INVALID: u32 = 1 << 9;
    /// PNC id missing.
    pub const PNC_MISSING: u32 = 1 << 10;
    /// Stale (older, duplicate) PNC id.
    pub const PNC_STALE: u32 = 1 << 11;
    /// PNC id with a wrong check letter.
    pub const PNC_INVALID: u32 = 1 << 12;
    /// Previous address.
    pub const ADDRESS_STALE: u32 = 1 << 13;
    /// A duplicate record of the person at this agency.
    pub const DUPLICATE_RECORD: u32 = 1 << 14;
    /// Date of birth not recorded (a police ASB caller's, 30 %): the role carries only names
    /// and sex, so no linker can tell it from a namesake with certainty.
    pub const DOB_MISSING: u32 = 1 << 15;
    /// Every error with its name, as written in truth files.
    pub const NAMES: &[(u32, &str)] = &[
        (FORENAME_TYPO, "forename_typo"),
        (SURNAME_TYPO, "surname_typo"),
        (NICKNAME, "nickname"),
        (NAME_SWAP, "name_swap"),
        (SURNAME_CHANGE, "surname_change"),
        (SURNAME_HYPHENATED, "surname_hyphenated"),
        (DOB_DAY_MONTH_SWAP, "dob_day_month_swap"),
        (DOB_OTHER, "dob_other"),
        (NHS_MISSING, "nhs_missing"),
        (NHS_INVALID, "nhs_invalid"),
        (PNC_MISSING, "pnc_missing"),
        (PNC_STALE, "pnc_stale"),
        (PNC_INVALID, "pnc_invalid"),
        (ADDRESS_STALE, "address_stale"),
        (DUPLICATE_RECORD, "duplicate_record"),
        (DOB_MISSING, "dob_missing"),
    ];
}

/// How an agency recorded a person.
#[derive(Clone)]
pub struct Recorded {
    /// Surname as recorded.
    pub surname: String,
    /// Forename as recorded.
    pub forename: String,
    /// Date of birth as recorded.
    pub dob: Date,
    /// `F` or `M`.
    pub sex: &'static str,
    /// NHS number as recorded (digits; may fail its check digit), if any.
    pub nhs: Option<String>,
    /// PNC id as recorded (canonical form; may fail its check letter), if any.
    pub pnc: Option<String>,
    /// Home LSOA index as recorded.
    pub lsoa: u16,
    /// Address number (for postcode and UPRN) as recorded.
    pub address: u64,
    /// The errors applied ([`error`] bits).
    pub errors: u32,
    /// The errors that could have applied to this person here ([`error`] bits).
    pub eligible: u32,
    /// 0 for the person's main record at the agency, 1 for a duplicate record.
    pub record: u8,
}

/// Whether the agency holds a duplicate record of the person.
pub fn has_duplicate(seed: u64, agency: Agency, person: u64, rates: &ErrorRates) -> bool {
    let u = (mix(seed ^ tag("duplicate") ^ (agency as u64) << 56 ^ person) >> 11) as f64
        / (1u64 << 53) as f64;
    u < rates.duplicate_record
}

/// How `agency` recorded `p` in its record number `record` (0 main, 1 duplicate) for `role`.
/// `invalid` allows deliberately invalid NHS numbers and PNC ids; `pnc_required` means the
/// source always carries the PNC id (a PNC-linked extract), so it is never missing.
#[allow(clippy::too_many_arguments)]
pub fn recorded(
    p: &Person,
    agency: Agency,
    role: Role,
    record: u8,
    rates: &ErrorRates,
    invalid: bool,
    pnc_required: bool,
    seed: u64,
) -> Recorded {
    use error::*;
    let key = (agency as u64) << 8 | (role as u64) << 4 | u64::from(record);
    let mut rng = stream(seed, tag("recorded") ^ key, p.id);
    let mut errors = if record > 0 { DUPLICATE_RECORD } else { 0 };
    let mut eligible = DUPLICATE_RECORD
        | FORENAME_TYPO
        | SURNAME_TYPO
        | NAME_SWAP
        | SURNAME_HYPHENATED
        | DOB_OTHER
        | ADDRESS_STALE;
    let mut hit = |rng: &mut StdRng, bit: u32, rate: f64, ok: bool| -> bool {
        if !ok {
            return false;
        }
        eligible |= bit;
        let yes = rng.random_bool(rate.clamp(0.0, 1.0));
        if yes {
            errors |= bit;
        }
        yes
    };
    let adult = p.age_on(REFERENCE_DATE) >= 18;

    let mut forename = p.forename.to_string();
    let nick = variants(p.forename);
    if hit(&mut rng, NICKNAME, rates.nickname, !nick.is_empty()) {
        forename = nick[rng.random_range(0..nick.len())].to_string();
    }
    let mut surname = p.surname.to_string();
    if hit(
        &mut rng,
        SURNAME_CHANGE,
        rates.surname_change,
        adult && p.female(),
    ) {
        let trad = tradition_of(p);
        for _ in 0..4 {
            let s = names::surname(trad, rng.random(), rng.random());
            if s != p.surname {
                surname = s.to_string();
                break;
            }
        }
    }
    if hit(&mut rng, SURNAME_HYPHENATED, rates.surname_hyphenated, true) {
        let other = names::pick(names::surnames(names::Tradition::British), rng.random());
        surname = format!("{surname}-{other}");
    }
    if hit(&mut rng, FORENAME_TYPO, rates.forename_typo, true) {
        forename = typo(&forename, &mut rng);
    }
    if hit(&mut rng, SURNAME_TYPO, rates.surname_typo, true) {
        surname = typo(&surname, &mut rng);
    }
    if hit(&mut rng, NAME_SWAP, rates.name_swap, true) {
        std::mem::swap(&mut forename, &mut surname);
    }

    let mut dob = p.dob;
    let (m, d) = (u8::from(dob.month()), dob.day());
    if hit(
        &mut rng,
        DOB_DAY_MONTH_SWAP,
        rates.dob_day_month_swap,
        d <= 12 && d != m,
    ) && let Ok(month) = time::Month::try_from(d)
        && let Ok(swapped) = Date::from_calendar_date(dob.year(), month, m)
    {
        dob = swapped;
    }
    if hit(&mut rng, DOB_OTHER, rates.dob_other, true) {
        dob = other_dob_error(dob, &mut rng);
    }

    let nhs_missing = match agency {
        Agency::Health => Some(rates.nhs_missing_health),
        Agency::Council => Some(rates.nhs_missing_council),
        Agency::SocialCare => Some(rates.nhs_missing_social_care),
        _ => None,
    };
    let nhs = match nhs_missing {
        None => None,
        Some(rate) => {
            if hit(&mut rng, NHS_MISSING, rate, true) {
                None
            } else if hit(&mut rng, NHS_INVALID, rates.nhs_invalid, invalid) {
                Some(nhs_broken(p.nhs_number, rng.random_range(0..9)))
            } else {
                Some(nhs_digits(p.nhs_number))
            }
        }
    };

    let holds_pnc = matches!(agency, Agency::Police | Agency::Probation);
    // A PNC-linked extract only holds people with a PNC record: someone drawn into one without
    // (a tiny population's fallback) gets the id their record would have had.
    let pnc_id = p.pnc_id.or_else(|| {
        pnc_required.then(|| super::identifiers::Pnc {
            year: (p.dob.year() + 18).clamp(1980, 2024) as u16,
            serial: super::identifiers::permute6(p.id, 0x5eed).max(1),
        })
    });
    let pnc = match (pnc_id, holds_pnc) {
        (Some(id), true) => {
            let missing_rate = match role {
                Role::Victim | Role::Other => rates.pnc_missing_victim,
                Role::Suspect => rates.pnc_missing_suspect,
                Role::Supervised => rates.pnc_missing_probation,
            };
            if hit(&mut rng, PNC_MISSING, missing_rate, !pnc_required) {
                None
            } else if hit(&mut rng, PNC_INVALID, rates.pnc_invalid, invalid) {
                Some(id.broken())
            } else if hit(&mut rng, PNC_STALE, rates.pnc_stale, id.year > 1981) {
                let older = super::identifiers::Pnc {
                    year: id.year - rng.random_range(1..=id.year.saturating_sub(1980).min(5)),
                    serial: id.serial,
                };
                Some(older.canonical())
            } else {
                Some(id.canonical())
            }
        }
        _ => None,
    };

    let (lsoa, address) = if hit(&mut rng, ADDRESS_STALE, rates.address_stale, true) {
        (
            rng.random_range(0..lsoas().len()) as u16,
            mix(u64::from(p.household) ^ 0x0ad0_0000),
        )
    } else {
        (p.lsoa, u64::from(p.household))
    };

    Recorded {
        surname,
        forename,
        dob,
        sex: p.sex,
        nhs,
        pnc,
        lsoa,
        address,
        errors,
        eligible,
        record,
    }
}

/// The naming tradition of a person's surname (its first tradition by weight).
fn tradition_of(p: &Person) -> names::Tradition {
    super::population::ETHNICITIES[usize::from(p.ethnicity)]
        .names
        .first()
        .map(|t| t.0)
        .unwrap_or(names::Tradition::British)
}

/// A neighbouring day, or a one-digit error in the year.
fn other_dob_error(dob: Date, rng: &mut StdRng) -> Date {
    match rng.random_range(0..3) {
        0 => dob.next_day().unwrap_or(dob),
        1 => dob.previous_day().unwrap_or(dob),
        _ => {
            let shift = if rng.random_bool(0.5) { 1 } else { 10 };
            let sign = if rng.random_bool(0.5) { 1 } else { -1 };
            let y = (dob.year() + sign * shift).min(REFERENCE_DATE.year());
            Date::from_calendar_date(y, dob.month(), dob.day())
                .or_else(|_| Date::from_calendar_date(y, dob.month(), 28))
                .unwrap_or(dob)
        }
    }
}

const KEYBOARD: &[&str] = &["qwertyuiop", "asdfghjkl", "zxcvbnm"];

/// A letter next to `c` on a QWERTY keyboard (or a random letter).
fn neighbour(c: char, rng: &mut StdRng) -> char {
    let lower = c.to_ascii_lowercase();
    for (r, row) in KEYBOARD.iter().enumerate() {
        if let Some(i) = row.find(lower) {
            let row_b = row.as_bytes();
            let mut options: Vec<u8> = Vec::new();
            if i > 0 {
                options.push(row_b[i - 1]);
            }
            if i + 1 < row_b.len() {
                options.push(row_b[i + 1]);
            }
            if r + 1 < KEYBOARD.len() && i < KEYBOARD[r + 1].len() {
                options.push(KEYBOARD[r + 1].as_bytes()[i]);
            }
            let n = options[rng.random_range(0..options.len())] as char;
            return if c.is_uppercase() {
                n.to_ascii_uppercase()
            } else {
                n
            };
        }
    }
    (b'a' + rng.random_range(0..26u8)) as char
}

/// One typing error: substitution by a keyboard neighbour (45%), insertion (20%), deletion
/// (20%) or transposition of adjacent letters (15%). Only ASCII letters are touched, and the
/// result always keeps at least one letter and differs from the input.
pub fn typo(s: &str, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let letters: Vec<usize> = (0..chars.len())
        .filter(|i| chars[*i].is_ascii_alphabetic())
        .collect();
    if letters.is_empty() {
        return s.to_string();
    }
    let op = rng.random_range(0..100);
    let at = letters[rng.random_range(0..letters.len())];
    let pairs: Vec<usize> = letters
        .windows(2)
        .filter(|w| w[1] == w[0] + 1 && !chars[w[0]].eq_ignore_ascii_case(&chars[w[1]]))
        .map(|w| w[0])
        .collect();
    if op < 45 || (op >= 85 && pairs.is_empty()) || ((65..85).contains(&op) && letters.len() < 3) {
        chars[at] = neighbour(chars[at], rng);
    } else if op < 65 {
        let c = neighbour(chars[at], rng).to_ascii_lowercase();
        chars.insert(at + 1, c);
    } else if op < 85 {
        chars.remove(at);
    } else {
        let i = pairs[rng.random_range(0..pairs.len())];
        let (a, b) = (chars[i], chars[i + 1]);
        let upper = a.is_uppercase();
        chars[i] = if upper { b.to_ascii_uppercase() } else { b };
        chars[i + 1] = if upper { a.to_ascii_lowercase() } else { a };
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::population::population;
    use skp_core::normalise;

    #[test]
    fn typos_change_the_name_and_keep_it_a_name() {
        let mut rng = stream(1, 2, 3);
        for name in [
            "Smith",
            "O'Brien",
            "Li",
            "Ng",
            "Wiśniewski",
            "Ji-woo",
            "Al-Sayed",
            "Bo",
        ] {
            for _ in 0..200 {
                let t = typo(name, &mut rng);
                assert_ne!(normalise::name(&t), normalise::name(name), "{name} → {t}");
                assert!(normalise::name(&t).is_ok());
            }
        }
    }

    #[test]
    fn recorded_identities_are_stable_and_valid() {
        let people = population(2000, 9);
        let rates = ErrorRates {
            nhs_invalid: 0.0,
            pnc_invalid: 0.0,
            ..ErrorRates::default()
        };
        for p in &people {
            let a = recorded(p, Agency::Health, Role::Victim, 0, &rates, false, false, 1);
            let b = recorded(p, Agency::Health, Role::Victim, 0, &rates, false, false, 1);
            assert_eq!(
                (a.surname.as_str(), a.dob, a.errors),
                (b.surname.as_str(), b.dob, b.errors)
            );
            assert!(normalise::name(&a.surname).is_ok() && normalise::name(&a.forename).is_ok());
            if let Some(n) = &a.nhs {
                assert!(normalise::nhs_number(n).is_ok());
            }
            let police = recorded(p, Agency::Police, Role::Suspect, 0, &rates, false, false, 1);
            if let Some(pnc) = &police.pnc {
                assert!(normalise::pnc_id(pnc).is_ok());
            }
            assert!(police.nhs.is_none(), "police hold no NHS number");
        }
    }
}
