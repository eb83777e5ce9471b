//! Identifiers that are valid by construction, and their deliberately broken forms: NHS numbers
//! from the 999 test range (never issued to a patient), PNC ids with their mod-23 check letter,
//! nDelius CRNs and local case references. Pure.

use skp_core::normalise::{nhs_check_ok, pnc_check_letter};

/// How many distinct valid NHS numbers the 999 range holds (999 + 6 digits + check digit, less
/// the serials whose check digit would be 10).
pub const NHS_999_CAPACITY: usize = 909_091;

/// The check digit of nine NHS digits, or `None` when the number cannot be valid (remainder 10).
fn nhs_check(d: &[u32; 9]) -> Option<u32> {
    let sum: u32 = d.iter().enumerate().map(|(i, x)| x * (10 - i as u32)).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => Some(c),
    }
}

/// The NHS number `999 sss sss c` for a six-digit serial, if its check digit exists.
pub fn nhs_999(serial: u32) -> Option<u64> {
    let s = serial % 1_000_000;
    let mut d = [9, 9, 9, 0, 0, 0, 0, 0, 0];
    for (i, slot) in d[3..].iter_mut().enumerate() {
        *slot = (s / 10u32.pow(5 - i as u32)) % 10;
    }
    let check = nhs_check(&d)?;
    Some(9_990_000_000 + u64::from(s) * 10 + u64::from(check))
}

/// Yields distinct valid 999-range NHS numbers in a seed-dependent order: a bijection of the
/// six-digit serials (multiplier coprime with 10⁶), skipping serials without a check digit.
/// After [`NHS_999_CAPACITY`] numbers it starts again (numbers repeat).
pub struct NhsAllocator {
    a: u64,
    b: u64,
    k: u64,
}

impl NhsAllocator {
    /// An allocator for a seed.
    pub fn new(seed: u64) -> Self {
        let mut a = ((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1_000_000) | 1;
        if a.is_multiple_of(5) {
            a += 2;
        }
        Self {
            a,
            b: seed % 1_000_000,
            k: 0,
        }
    }
}

impl Iterator for NhsAllocator {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        loop {
            let s = (self.k.wrapping_mul(self.a).wrapping_add(self.b)) % 1_000_000;
            self.k = (self.k + 1) % 1_000_000;
            if let Some(n) = nhs_999(s as u32) {
                return Some(n);
            }
        }
    }
}

/// The ten digits of an NHS number.
pub fn nhs_digits(n: u64) -> String {
    format!("{n:010}")
}

/// An NHS number in the display form `999 123 4567`.
pub fn nhs_spaced(n: u64) -> String {
    let d = nhs_digits(n);
    format!("{} {} {}", &d[..3], &d[3..6], &d[6..])
}

/// The same NHS number with a wrong check digit (fails mod-11).
pub fn nhs_broken(n: u64, shift: u64) -> String {
    let body = n / 10;
    let good = n % 10;
    let bad = (good + 1 + shift % 9) % 10;
    let s = format!("{:09}{bad}", body);
    debug_assert!(!nhs_check_ok(s.as_bytes()));
    s
}

/// A PNC id: year of the first record and a serial unique to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pnc {
    /// Four-digit year.
    pub year: u16,
    /// Serial, 1–999,999 (written with 7 digits).
    pub serial: u32,
}

impl Pnc {
    fn yy(&self) -> String {
        format!("{:02}", self.year % 100)
    }
    /// The check letter.
    pub fn letter(&self) -> char {
        pnc_check_letter(&self.yy(), self.serial) as char
    }
    /// Canonical form `YYYY/NNNNNNNC`.
    pub fn canonical(&self) -> String {
        format!("{}/{:07}{}", self.year, self.serial, self.letter())
    }
    /// Short form `YY/NNNNNNC` (no zero padding).
    pub fn short(&self) -> String {
        format!("{}/{}{}", self.yy(), self.serial, self.letter())
    }
    /// Canonical form with a wrong check letter.
    pub fn broken(&self) -> String {
        const L: &[u8] = b"ZABCDEFGHJKLMNPQRTUVWXY";
        let good = self.letter() as u8;
        let i = L.iter().position(|c| *c == good).unwrap_or(0);
        format!(
            "{}/{:07}{}",
            self.year,
            self.serial,
            L[(i + 7) % L.len()] as char
        )
    }
}

/// A bijection of 0..10⁶ (for ids below a million) used to spread serials.
pub fn permute6(id: u64, salt: u64) -> u32 {
    let a: u64 = 826_363; // coprime with 10⁶
    ((id % 1_000_000)
        .wrapping_mul(a)
        .wrapping_add(salt % 1_000_000)
        % 1_000_000) as u32
}

/// An nDelius case reference number (1 letter + 6 digits), unique per person and record.
pub fn crn(person: u64, variant: u8) -> String {
    let letter = [b'X', b'E', b'D', b'F'][usize::from(variant % 4)] as char;
    format!("{letter}{:06}", permute6(person, 371_911))
}

/// A children's social care person id, unique per person and record.
pub fn child_id(person: u64, variant: u8) -> String {
    format!("LCS{:08}", person * 4 + u64::from(variant % 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skp_core::normalise;

    #[test]
    fn nhs_numbers_are_valid_distinct_and_in_the_999_range() {
        let mut seen = std::collections::HashSet::new();
        for n in NhsAllocator::new(42).take(50_000) {
            let s = nhs_digits(n);
            assert!(s.starts_with("999"), "{s}");
            assert_eq!(normalise::nhs_number(&s).as_deref(), Ok(s.as_str()));
            assert_eq!(
                normalise::nhs_number(&nhs_spaced(n)).as_deref(),
                Ok(s.as_str())
            );
            assert_eq!(
                normalise::nhs_number(&nhs_broken(n, 3)),
                Err(normalise::NormaliseError::NhsCheckDigit)
            );
            assert!(seen.insert(n));
        }
        let valid = (0..1_000_000u32).filter(|s| nhs_999(*s).is_some()).count();
        assert_eq!(valid, NHS_999_CAPACITY);
    }

    #[test]
    fn pnc_ids_are_valid_and_broken_ones_are_not() {
        for i in 0..2000u64 {
            let p = Pnc {
                year: 1980 + (i % 45) as u16,
                serial: permute6(i, 5).max(1),
            };
            assert_eq!(
                normalise::pnc_id(&p.canonical()).as_deref(),
                Ok(p.canonical().as_str())
            );
            assert_eq!(
                normalise::pnc_id(&p.short()).as_deref(),
                Ok(p.canonical().as_str())
            );
            assert_eq!(
                normalise::pnc_id(&p.broken()),
                Err(normalise::NormaliseError::PncCheckLetter)
            );
        }
    }

    #[test]
    fn references_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for id in 0..100_000u64 {
            assert!(seen.insert(crn(id, 0)));
            assert!(seen.insert(crn(id, 1)));
            assert!(normalise::reference(&child_id(id, 1)).is_ok());
        }
    }
}
