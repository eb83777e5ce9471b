//! The synthetic Kingston population: households of people with a borough-like age and sex
//! structure, ethnicity mix and home LSOA, with the hidden traits that decide who meets which
//! agency (offending, victimisation, ASB calls, domestic abuse, children known to social care).
//! Pure and deterministic for a seed.

use super::geography::lsoas;
use super::identifiers::{NhsAllocator, Pnc, nhs_digits, permute6};
use super::names::{self, Tradition};
use super::sample::{Sampler, stream};
use rand::Rng;
use rand::rngs::StdRng;
use time::Date;

/// The date ages in the population refer to.
pub const REFERENCE_DATE: Date = time::macros::date!(2024 - 12 - 31);

/// A synthetic person: the hidden truth that every agency's records are derived from.
#[derive(Clone)]
pub struct Person {
    /// Hidden ground-truth id (index in the population).
    pub id: u64,
    /// Surname as the person would give it.
    pub surname: &'static str,
    /// First forename.
    pub forename: &'static str,
    /// Date of birth.
    pub dob: Date,
    /// `F` or `M`.
    pub sex: &'static str,
    /// NHS number (999 test range, valid mod-11), as a number; see [`Person::nhs`].
    pub nhs_number: u64,
    /// PNC id, for people with a police record.
    pub pnc_id: Option<Pnc>,
    /// Index into [`ETHNICITIES`].
    pub ethnicity: u8,
    /// Index of the home LSOA in the geography lookup.
    pub lsoa: u16,
    /// Household number (people of one household are contiguous).
    pub household: u32,
    /// Hidden traits.
    pub traits: Traits,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Synthetic, but shaped like personal data: keep it out of logs all the same.
        f.debug_struct("Person")
            .field("id", &self.id)
            .field("household", &self.household)
            .finish_non_exhaustive()
    }
}

impl Person {
    /// NHS number, ten digits.
    pub fn nhs(&self) -> String {
        nhs_digits(self.nhs_number)
    }
    /// PNC id in canonical form.
    pub fn pnc(&self) -> Option<String> {
        self.pnc_id.map(|p| p.canonical())
    }
    /// Date of birth, ISO.
    pub fn dob_iso(&self) -> String {
        iso(self.dob)
    }
    /// Age in whole years on a date.
    pub fn age_on(&self, d: Date) -> i32 {
        age(self.dob, d)
    }
    /// Whether the person is female.
    pub fn female(&self) -> bool {
        self.sex == "F"
    }
}

/// Age in whole years of someone born on `dob`, on `d`.
pub fn age(dob: Date, d: Date) -> i32 {
    let mut a = d.year() - dob.year();
    if (u8::from(d.month()), d.day()) < (u8::from(dob.month()), dob.day()) {
        a -= 1;
    }
    a
}

/// `YYYY-MM-DD`.
pub fn iso(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Hidden traits that decide who appears in which agency's data.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traits {
    /// Offending propensity (0 = never offends).
    pub offending: f32,
    /// Victimisation propensity.
    pub victim: f32,
    /// Propensity to report ASB (0 = never calls).
    pub asb: f32,
    /// Partner in the same household, if any (population index).
    pub partner: Option<u32>,
    /// Flags: see the `DA_VICTIM` … constants.
    pub flags: u8,
}

/// The person is a victim of domestic abuse by their partner.
pub const DA_VICTIM: u8 = 1;
/// The person abuses their partner.
pub const DA_PERPETRATOR: u8 = 2;
/// A child known to children's social care (or a care leaver up to 24).
pub const CSC_KNOWN: u8 = 4;
/// Vulnerable adult (mental health, disability): more often a victim, a repeat caller.
pub const VULNERABLE: u8 = 8;

/// An ONS 2021 ethnic group with its share in Kingston and its codes in other systems.
#[derive(Debug, Clone, Copy)]
pub struct Ethnicity {
    /// Catalog (ONS 19-group) value.
    pub ons: &'static str,
    /// Share of Kingston residents (Census 2021, approximate [inf]).
    pub share: f64,
    /// Police self-defined ethnicity code (16+1 scheme).
    pub sde: &'static str,
    /// Police officer-defined ethnicity code (IC1–IC6).
    pub ic: &'static str,
    /// NHS ETHNIC CATEGORY letter.
    pub nhs: &'static str,
    /// Naming traditions and their weights.
    pub names: &'static [(Tradition, f64)],
}

use Tradition as T;
/// The 19 ONS groups.
pub const ETHNICITIES: &[Ethnicity] = &[
    eth(
        "White: English, Welsh, Scottish, Northern Irish or British",
        52.0,
        "W1",
        "IC1",
        "A",
        &[(T::British, 1.0)],
    ),
    eth(
        "White: Irish",
        1.5,
        "W2",
        "IC1",
        "B",
        &[(T::Irish, 0.8), (T::British, 0.2)],
    ),
    eth(
        "White: Gypsy or Irish Traveller",
        0.1,
        "W9",
        "IC1",
        "C",
        &[(T::Irish, 0.5), (T::British, 0.5)],
    ),
    eth("White: Roma", 0.2, "W9", "IC2", "C", &[(T::European, 1.0)]),
    eth(
        "White: Other White",
        14.2,
        "W9",
        "IC2",
        "C",
        &[(T::European, 0.8), (T::British, 0.2)],
    ),
    eth(
        "Mixed: White and Black Caribbean",
        0.8,
        "M1",
        "IC3",
        "D",
        &[(T::British, 0.9), (T::African, 0.1)],
    ),
    eth(
        "Mixed: White and Black African",
        0.6,
        "M2",
        "IC3",
        "E",
        &[(T::British, 0.5), (T::African, 0.5)],
    ),
    eth(
        "Mixed: White and Asian",
        1.6,
        "M3",
        "IC4",
        "F",
        &[
            (T::British, 0.5),
            (T::Indian, 0.2),
            (T::Korean, 0.15),
            (T::Chinese, 0.15),
        ],
    ),
    eth(
        "Mixed: Other Mixed",
        1.4,
        "M9",
        "IC1",
        "G",
        &[(T::British, 0.5), (T::European, 0.3), (T::Arab, 0.2)],
    ),
    eth(
        "Asian: Indian",
        4.0,
        "A1",
        "IC4",
        "H",
        &[(T::Indian, 0.9), (T::SouthAsianMuslim, 0.1)],
    ),
    eth(
        "Asian: Pakistani",
        2.3,
        "A2",
        "IC4",
        "J",
        &[(T::SouthAsianMuslim, 1.0)],
    ),
    eth(
        "Asian: Bangladeshi",
        0.6,
        "A3",
        "IC4",
        "K",
        &[(T::SouthAsianMuslim, 1.0)],
    ),
    eth(
        "Asian: Chinese",
        2.0,
        "O1",
        "IC5",
        "R",
        &[(T::Chinese, 1.0)],
    ),
    eth(
        "Asian: Other Asian",
        10.4,
        "A9",
        "IC5",
        "L",
        &[
            (T::Korean, 0.55),
            (T::Indian, 0.3),
            (T::SouthAsianMuslim, 0.15),
        ],
    ),
    eth(
        "Black: African",
        1.7,
        "B2",
        "IC3",
        "N",
        &[(T::African, 1.0)],
    ),
    eth(
        "Black: Caribbean",
        0.6,
        "B1",
        "IC3",
        "M",
        &[(T::British, 0.95), (T::African, 0.05)],
    ),
    eth(
        "Black: Other Black",
        0.3,
        "B9",
        "IC3",
        "P",
        &[(T::British, 0.5), (T::African, 0.5)],
    ),
    eth("Other: Arab", 1.4, "O9", "IC6", "S", &[(T::Arab, 1.0)]),
    eth(
        "Other: Any other ethnic group",
        3.3,
        "O9",
        "IC9",
        "S",
        &[
            (T::Arab, 0.3),
            (T::European, 0.3),
            (T::SouthAsianMuslim, 0.3),
            (T::Korean, 0.1),
        ],
    ),
];

const fn eth(
    ons: &'static str,
    share: f64,
    sde: &'static str,
    ic: &'static str,
    nhs: &'static str,
    names: &'static [(Tradition, f64)],
) -> Ethnicity {
    Ethnicity {
        ons,
        share,
        sde,
        ic,
        nhs,
        names,
    }
}

/// Kingston's age structure, Census 2021 (approximate [inf]): (lowest age, highest age, %).
pub const AGE_BANDS: &[(u8, u8, f64)] = &[
    (0, 4, 5.8),
    (5, 9, 6.1),
    (10, 14, 6.0),
    (15, 17, 3.6),
    (18, 19, 2.7),
    (20, 24, 7.6),
    (25, 29, 6.6),
    (30, 34, 7.3),
    (35, 39, 7.7),
    (40, 44, 7.5),
    (45, 49, 7.0),
    (50, 54, 6.6),
    (55, 59, 6.0),
    (60, 64, 5.0),
    (65, 69, 4.1),
    (70, 74, 3.8),
    (75, 79, 2.9),
    (80, 84, 2.0),
    (85, 89, 1.2),
    (90, 99, 0.6),
];

/// A population of `n` synthetic people, reproducible from `seed`.
///
/// NHS numbers are distinct up to [`super::identifiers::NHS_999_CAPACITY`] people (the size of
/// the 999 test range); PNC serials are distinct below a million people.
pub fn population(n: usize, seed: u64) -> Vec<Person> {
    let mut out: Vec<Person> = Vec::with_capacity(n);
    let mut nhs = NhsAllocator::new(seed);
    let eth_pick = Sampler::new(
        ETHNICITIES
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u32, e.share)),
    );
    let mut household: u32 = 0;
    while out.len() < n {
        let mut rng = stream(seed, tag::HOUSEHOLD, u64::from(household));
        let lsoa = rng.random_range(0..lsoas().len()) as u16;
        let e = eth_pick.pick(&mut rng).unwrap_or(0) as u8;
        let kind: f64 = rng.random();
        let start = out.len();
        let mut add = |rng: &mut StdRng,
                       out: &mut Vec<Person>,
                       female: bool,
                       age: u8,
                       eth: u8,
                       surname: Option<&'static str>| {
            if out.len() >= n {
                return None;
            }
            let id = out.len() as u64;
            let p = person(
                rng, id, female, age, eth, surname, lsoa, household, &mut nhs,
            );
            out.push(p);
            Some(out.len() - 1)
        };
        if kind < 0.29 {
            let age = adult_age(&mut rng, 18, 99);
            let female = rng_female(&mut rng, age);
            add(&mut rng, &mut out, female, age, e, None);
        } else if kind < 0.84 {
            // Couple, without (22%) or with (25%) dependent children, or a lone parent (8%).
            let with_kids = kind >= 0.51;
            let lone = kind >= 0.76;
            let (lo, hi) = if with_kids { (22, 58) } else { (20, 90) };
            let age = adult_age(&mut rng, lo, hi);
            let female = if lone {
                rng.random_bool(0.88)
            } else {
                rng.random_bool(0.5)
            };
            let a = add(&mut rng, &mut out, female, age, e, None);
            let mut surname = a.map(|i| out[i].surname);
            if !lone {
                let e2 = if rng.random_bool(0.85) {
                    e
                } else {
                    eth_pick.pick(&mut rng).unwrap_or(0) as u8
                };
                let age2 = (i32::from(age) + rng.random_range(-4..=4)).clamp(18, 99) as u8;
                let same_sex = rng.random_bool(0.03);
                let married = rng.random_bool(0.7);
                let b = add(
                    &mut rng,
                    &mut out,
                    if same_sex { female } else { !female },
                    age2,
                    e2,
                    if married { surname } else { None },
                );
                if let (Some(a), Some(b)) = (a, b) {
                    out[a].traits.partner = Some(b as u32);
                    out[b].traits.partner = Some(a as u32);
                    if !married && rng.random_bool(0.5) {
                        surname = Some(out[b].surname);
                    }
                }
            }
            if with_kids {
                let kids =
                    1 + usize::from(rng.random_bool(0.55)) + usize::from(rng.random_bool(0.2));
                let oldest = (i32::from(age) - 19).clamp(0, 17) as u8;
                for _ in 0..kids {
                    let k_age = rng.random_range(0..=oldest);
                    let female = rng.random_bool(0.49);
                    add(&mut rng, &mut out, female, k_age, e, surname);
                }
            }
        } else {
            // Sharers and other multi-adult households (students, young workers, extended family).
            let m = rng.random_range(2..=4);
            for _ in 0..m {
                let age = adult_age(&mut rng, 18, 40);
                let e2 = if rng.random_bool(0.6) {
                    e
                } else {
                    eth_pick.pick(&mut rng).unwrap_or(0) as u8
                };
                let female = rng.random_bool(0.5);
                add(&mut rng, &mut out, female, age, e2, None);
            }
        }
        set_household_traits(&mut out[start..], start, &mut rng);
        household += 1;
    }
    out
}

/// Stream tags.
pub(crate) mod tag {
    pub const HOUSEHOLD: u64 = 0x686f_7573;
}

fn rng_female(rng: &mut StdRng, age: u8) -> bool {
    rng.random_bool(if age >= 75 {
        0.6
    } else if age >= 50 {
        0.53
    } else {
        0.5
    })
}

/// An age drawn from the borough's structure, restricted to `lo..=hi`.
fn adult_age(rng: &mut StdRng, lo: u8, hi: u8) -> u8 {
    let bands: Vec<(u8, u8, f64)> = AGE_BANDS
        .iter()
        .filter(|(a, b, _)| *b >= lo && *a <= hi)
        .map(|(a, b, w)| ((*a).max(lo), (*b).min(hi), *w))
        .collect();
    let total: f64 = bands.iter().map(|b| b.2).sum();
    let mut x = rng.random::<f64>() * total;
    for (a, b, w) in &bands {
        if x < *w {
            return rng.random_range(*a..=*b);
        }
        x -= w;
    }
    lo
}

#[allow(clippy::too_many_arguments)]
fn person(
    rng: &mut StdRng,
    id: u64,
    female: bool,
    age: u8,
    eth: u8,
    surname: Option<&'static str>,
    lsoa: u16,
    household: u32,
    nhs: &mut NhsAllocator,
) -> Person {
    let e = &ETHNICITIES[usize::from(eth)];
    let trad = pick_tradition(rng, e.names);
    let surname = surname.unwrap_or_else(|| names::surname(trad, rng.random(), rng.random()));
    let ftrad = pick_tradition(rng, e.names);
    let forename = names::pick(names::forenames(ftrad, female), rng.random());
    // Ages are on 31 December, so anyone born in `birth_year` has had their birthday.
    let birth_year = REFERENCE_DATE.year() - i32::from(age);
    let ordinal = rng.random_range(1..=time::util::days_in_year(birth_year));
    let dob = Date::from_ordinal_date(birth_year, ordinal).unwrap_or(REFERENCE_DATE);
    let traits = individual_traits(rng, female, age);
    let pnc_id = (traits.offending > 0.0
        || rng.random_bool(if female { 0.03 } else { 0.12 }) && age >= 18)
        .then(|| {
            let first =
                (birth_year + 12 + rng.random_range(0..=age.saturating_sub(12).max(1) as i32))
                    .clamp(1980, 2024);
            Pnc {
                year: first as u16,
                serial: permute6(id, 0x5eed).max(1),
            }
        });
    Person {
        id,
        surname,
        forename,
        dob,
        sex: if female { "F" } else { "M" },
        nhs_number: nhs.next().unwrap_or(9_990_000_000),
        pnc_id,
        ethnicity: eth,
        lsoa,
        household,
        traits,
    }
}

fn pick_tradition(rng: &mut StdRng, mix: &[(Tradition, f64)]) -> Tradition {
    let total: f64 = mix.iter().map(|m| m.1).sum();
    let mut x = rng.random::<f64>() * total;
    for (t, w) in mix {
        if x < *w {
            return *t;
        }
        x -= w;
    }
    mix.first().map(|m| m.0).unwrap_or(Tradition::British)
}

fn individual_traits(rng: &mut StdRng, female: bool, age: u8) -> Traits {
    let base = match age {
        0..=9 => 0.0,
        10..=15 => 0.012,
        16..=24 => 0.07,
        25..=39 => 0.05,
        40..=59 => 0.025,
        _ => 0.004,
    } * if female { 0.22 } else { 1.0 };
    let offending = if rng.random_bool(base) {
        if rng.random_bool(0.1) { 10.0 } else { 1.0 }
    } else {
        0.0
    };
    let vulnerable = age >= 16 && rng.random_bool(0.04);
    let mut victim = match age {
        0..=9 => 0.15,
        10..=15 => 0.7,
        16..=34 => 1.6,
        35..=64 => 1.0,
        _ => 0.6,
    };
    if rng.random_bool(0.04) || vulnerable {
        victim *= 6.0;
    }
    if offending > 0.0 {
        victim *= 2.0;
    }
    let asb = if age >= 18 && rng.random_bool(if vulnerable { 0.25 } else { 0.05 }) {
        match rng.random_range(0..100) {
            0..70 => 1.0,
            70..95 => 4.0,
            _ => 20.0,
        }
    } else {
        0.0
    };
    Traits {
        offending,
        victim,
        asb,
        partner: None,
        flags: if vulnerable { VULNERABLE } else { 0 },
    }
}

/// Domestic abuse between partners, and children known to social care.
fn set_household_traits(members: &mut [Person], start: usize, rng: &mut StdRng) {
    let mut da = false;
    let mut offender_adult = false;
    for i in 0..members.len() {
        let p = &members[i];
        let a = p.age_on(REFERENCE_DATE);
        offender_adult |= a >= 18 && p.traits.offending > 0.0;
        if let Some(partner) = p.traits.partner
            && (partner as usize) > start + i
            && a < 70
        {
            let j = partner as usize - start;
            // The abused partner is a woman in about four cases in five.
            let (v, o) = match (p.female(), members[j].female()) {
                (true, false) => (i, j),
                (false, true) => (j, i),
                _ => {
                    if rng.random_bool(0.5) {
                        (i, j)
                    } else {
                        (j, i)
                    }
                }
            };
            let rate = if members[v].female() { 0.07 } else { 0.02 };
            if rng.random_bool(rate) {
                members[v].traits.flags |= DA_VICTIM;
                members[v].traits.victim *= 3.0;
                members[o].traits.flags |= DA_PERPETRATOR;
                members[o].traits.offending = members[o].traits.offending.max(1.0);
                if members[o].pnc_id.is_none() {
                    // Every offender has a police record.
                    let year =
                        (members[o].dob.year() + 18 + rng.random_range(0..10)).clamp(1980, 2024);
                    members[o].pnc_id = Some(Pnc {
                        year: year as u16,
                        serial: permute6(members[o].id, 0x5eed).max(1),
                    });
                }
                da = true;
            }
        }
    }
    for p in members.iter_mut() {
        let a = p.age_on(REFERENCE_DATE);
        if a < 18 {
            let rate = if da {
                0.45
            } else if offender_adult {
                0.15
            } else {
                0.025
            };
            if rng.random_bool(rate) {
                p.traits.flags |= CSC_KNOWN;
            }
        } else if a <= 24 && rng.random_bool(0.006) {
            p.traits.flags |= CSC_KNOWN; // care leaver
        }
    }
}

/// The contiguous index ranges of each household's members.
pub fn household_ranges(people: &[Person]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for i in 1..=people.len() {
        if i == people.len() || people[i].household != people[start].household {
            out.push((start as u32, i as u32));
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_is_borough_like_and_deterministic() {
        let a = population(20_000, 3);
        let b = population(20_000, 3);
        assert_eq!(a.len(), 20_000);
        assert!(a.iter().zip(&b).all(|(x, y)| x.surname == y.surname
            && x.dob == y.dob
            && x.nhs_number == y.nhs_number));
        let c = population(20_000, 4);
        assert!(
            a.iter()
                .zip(&c)
                .filter(|(x, y)| x.surname != y.surname)
                .count()
                > 1000
        );
        let kids = a.iter().filter(|p| p.age_on(REFERENCE_DATE) < 18).count() as f64 / 20_000.0;
        assert!((0.17..0.30).contains(&kids), "children {kids}");
        let female = a.iter().filter(|p| p.female()).count() as f64 / 20_000.0;
        assert!((0.47..0.55).contains(&female), "female {female}");
        let wb = a.iter().filter(|p| p.ethnicity == 0).count() as f64 / 20_000.0;
        assert!((0.47..0.57).contains(&wb), "White British {wb}");
        let mut nhs: Vec<u64> = a.iter().map(|p| p.nhs_number).collect();
        nhs.sort_unstable();
        nhs.dedup();
        assert_eq!(nhs.len(), 20_000, "NHS numbers are distinct");
        let da = a.iter().filter(|p| p.traits.flags & DA_VICTIM != 0).count();
        assert!(da > 100, "some DA victims ({da})");
    }
}
