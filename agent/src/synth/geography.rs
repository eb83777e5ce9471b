//! Kingston upon Thames geography: the borough's LSOAs (from `policies/lookups/kingston_lsoa.csv`,
//! compiled in) with postcode district, LFB station ground and ward, and synthetic addresses
//! (postcode, UPRN) inside them. Pure.

use std::sync::LazyLock;

/// One LSOA of the borough.
#[derive(Debug, Clone, PartialEq)]
pub struct Lsoa {
    /// LSOA 2021 code (E01…).
    pub code: &'static str,
    /// LSOA name, e.g. "Kingston upon Thames 014A".
    pub name: &'static str,
    /// Postcode district its addresses get (KT1 … KT9).
    pub district: &'static str,
    /// LFB station ground.
    pub station: &'static str,
    /// Ward code (illustrative; see the lookup's header).
    pub ward: &'static str,
    /// Relative weight as a place where incidents happen.
    pub place_weight: f64,
}

const LOOKUP: &str = include_str!("../../../policies/lookups/kingston_lsoa.csv");

static LSOAS: LazyLock<Vec<Lsoa>> = LazyLock::new(|| parse(LOOKUP));

/// Every LSOA of the borough, in lookup order.
pub fn lsoas() -> &'static [Lsoa] {
    &LSOAS
}

fn parse(text: &'static str) -> Vec<Lsoa> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .skip(1)
        .map(|l| {
            let c: Vec<&'static str> = l.split(',').collect();
            // The file is compiled in and checked by `lookup_is_well_formed` below.
            assert_eq!(c.len(), 8, "kingston_lsoa.csv rows have 8 columns");
            Lsoa {
                code: c[0],
                name: c[1],
                district: c[4],
                station: c[5],
                ward: c[6],
                place_weight: c[7]
                    .parse()
                    .expect("kingston_lsoa.csv place_weight is a number"),
            }
        })
        .collect()
}

/// Letters used in the inward code of a postcode (C I K M O V never appear).
const INWARD: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

/// A synthetic postcode in an LSOA for an address number: the LSOA's district, a sector digit
/// fixed per LSOA and two unit letters from the address.
pub fn postcode(lsoa: usize, address: u64) -> String {
    let l = &lsoas()[lsoa % lsoas().len()];
    let sector = (lsoa % 9) + 1;
    let a = INWARD[(address % 20) as usize] as char;
    let b = INWARD[((address / 20) % 20) as usize] as char;
    format!("{} {sector}{a}{b}", l.district)
}

/// A synthetic 12-digit UPRN in the borough's range for an address number.
pub fn uprn(address: u64) -> u64 {
    128_000_000_000 + (address.wrapping_mul(2_654_435_761) % 999_999_999)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skp_core::normalise;

    #[test]
    fn lookup_is_well_formed() {
        let all = lsoas();
        assert_eq!(all.len(), 98);
        let mut codes: Vec<&str> = all.iter().map(|l| l.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 98, "codes are unique");
        for l in all {
            assert!(l.code.starts_with("E01") && l.code.len() == 9, "{}", l.code);
            assert!(l.ward.starts_with("E05") && l.ward.len() == 9);
            assert!(l.name.starts_with("Kingston upon Thames "));
            assert!(["Kingston", "Surbiton", "New Malden"].contains(&l.station));
            assert!(l.place_weight > 0.0);
        }
    }

    #[test]
    fn addresses_are_valid() {
        for i in 0..500u64 {
            let pc = postcode(i as usize, i * 7919);
            assert_eq!(normalise::postcode(&pc).as_deref(), Ok(pc.as_str()));
            assert!(normalise::uprn(&uprn(i).to_string()).is_ok());
        }
    }
}
