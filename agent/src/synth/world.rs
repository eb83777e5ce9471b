//! The generation context: the population, the settings, row counts, weighted pools of people
//! and places, and the shared "cores" of events that more than one agency records (an assault
//! seen by the ED and the police, a re-offence seen by probation and the police). Each core is a
//! pure function of (seed, index), so the datasets that share it agree without holding rows.

use super::config::{Shape, SynthConfig, Volume};
use super::errors::{self, Agency, Recorded, Role};
use super::geography::lsoas;
use super::population::{self, CSC_KNOWN, DA_VICTIM, Person, REFERENCE_DATE, VULNERABLE};
use super::sample::{Sampler, stream, tag};
use rand::Rng;
use rand::rngs::StdRng;
use skp_core::catalog::Field;
use std::collections::HashMap;
use time::{Date, PrimitiveDateTime, Time};

/// Police crimes at indices `≡ REOFFENCE_RESIDUE (mod STRIDE)` carry a probation re-offence,
/// those `≡ ASSAULT_RESIDUE` an assault seen at the ED.
pub const STRIDE: u64 = 16;
const REOFFENCE_RESIDUE: u64 = 0;
const ASSAULT_RESIDUE: u64 = 8;

/// A value of one field, before it is written in a shape.
#[derive(Debug, Clone)]
pub enum Val {
    /// A catalog spelling (enum value, code).
    S(&'static str),
    /// Text.
    T(String),
    /// Whole number.
    I(i64),
    /// Flag.
    B(bool),
    /// Date.
    D(Date),
    /// Date and time.
    Dt(PrimitiveDateTime),
    /// Subset of an enum.
    Set(Vec<&'static str>),
    /// NHS number digits (written spaced by health sources).
    Nhs(String),
}

/// A person role of a row, for the truth file.
#[derive(Debug, Clone)]
pub struct TruthRole {
    /// Role name.
    pub role: &'static str,
    /// Hidden person id.
    pub person: u64,
    /// 0 main record, 1 duplicate.
    pub record: u8,
    /// Error bits of the recorded identity.
    pub errors: u32,
}

/// One row being built: values by catalog field, and the truth of its person roles.
pub struct RowBuf<'d> {
    index: &'d HashMap<&'d str, usize>,
    /// Values in catalog field order.
    pub vals: Vec<Option<Val>>,
    /// Person roles.
    pub truth: Vec<TruthRole>,
}

impl<'d> RowBuf<'d> {
    /// An empty row for a dataset's field index.
    pub fn new(index: &'d HashMap<&'d str, usize>, fields: &[Field]) -> Self {
        Self {
            index,
            vals: vec![None; fields.len()],
            truth: Vec::new(),
        }
    }
    /// Clears every value and role.
    pub fn clear(&mut self) {
        self.vals.iter_mut().for_each(|v| *v = None);
        self.truth.clear();
    }
    /// Sets a field. A name the catalog lacks is ignored in release builds and panics in debug
    /// builds (so every test run checks the generators against the catalog).
    pub fn set(&mut self, field: &str, v: Val) {
        debug_assert!(
            self.index.contains_key(field),
            "generator sets {field:?}, which the catalog does not define"
        );
        if let Some(i) = self.index.get(field) {
            self.vals[*i] = Some(v);
        }
    }
    /// Removes a field's value.
    pub fn unset(&mut self, field: &str) {
        if let Some(i) = self.index.get(field) {
            self.vals[*i] = None;
        }
    }
    /// Sets a field when `v` is `Some`.
    pub fn opt(&mut self, field: &str, v: Option<Val>) {
        if let Some(v) = v {
            self.set(field, v);
        }
    }
}

/// The catalog field names of one person role.
pub struct PersonFields {
    /// Role name (truth file).
    pub role: &'static str,
    /// Surname field.
    pub surname: &'static str,
    /// Forename field.
    pub forename: &'static str,
    /// Date-of-birth field.
    pub dob: &'static str,
    /// Sex field.
    pub sex: &'static str,
    /// PNC field, if the dataset has one.
    pub pnc: Option<&'static str>,
    /// NHS number field, if the dataset has one.
    pub nhs: Option<&'static str>,
}

/// Weighted pools of people and places.
pub struct Pools {
    /// Victims of crime.
    pub victims: Sampler,
    /// Offenders.
    pub offenders: Sampler,
    /// Offenders weighted towards the prolific (probation caseload).
    pub supervised: Sampler,
    /// Victims of domestic abuse.
    pub da_victims: Sampler,
    /// People who report ASB.
    pub asb_callers: Sampler,
    /// Children known to social care.
    pub children: Sampler,
    /// Lead applicants of homelessness approaches.
    pub homeless: Sampler,
    /// ED attenders after an injury.
    pub patients: Sampler,
    /// Places (LSOA indices) where incidents happen.
    pub places: Sampler,
}

/// An assault seen at the ED (and, if reported, by the police).
pub struct AssaultCore {
    /// Patient (population index).
    pub person: usize,
    /// When it happened.
    pub at: PrimitiveDateTime,
    /// ISTV assault method code.
    pub method: &'static str,
    /// ISTV assault location type code.
    pub location: &'static str,
    /// LSOA index of the place.
    pub lsoa: u16,
    /// Also reported to the police.
    pub reported: bool,
}

/// A proven re-offence of a supervised person.
pub struct Reoffence {
    /// Person (population index).
    pub person: usize,
    /// Offence date.
    pub date: Date,
    /// HO offence code.
    pub code: &'static str,
    /// Committed in Kingston (so also a police crime).
    pub local: bool,
}

/// Everything generators read.
pub struct World<'a> {
    /// The population.
    pub people: &'a [Person],
    /// Settings.
    pub cfg: &'a SynthConfig,
    /// Write deliberately invalid identifiers.
    pub invalid: bool,
    /// Household member ranges.
    pub households: Vec<(u32, u32)>,
    /// Pools.
    pub pools: Pools,
    days: i32,
}

impl<'a> World<'a> {
    /// Builds pools over a population.
    pub fn new(people: &'a [Person], cfg: &'a SynthConfig) -> Self {
        let idx = |i: usize| i as u32;
        let adult = |p: &Person| p.age_on(REFERENCE_DATE) >= 18;
        let pools = Pools {
            victims: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.age_on(REFERENCE_DATE) >= 10)
                    .map(|(i, p)| (idx(i), f64::from(p.traits.victim))),
            ),
            offenders: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (idx(i), f64::from(p.traits.offending))),
            ),
            supervised: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| adult(p))
                    .map(|(i, p)| (idx(i), f64::from(p.traits.offending).powf(1.5))),
            ),
            da_victims: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.traits.flags & DA_VICTIM != 0)
                    .map(|(i, _)| (idx(i), 1.0)),
            ),
            asb_callers: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (idx(i), f64::from(p.traits.asb))),
            ),
            children: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.traits.flags & CSC_KNOWN != 0)
                    .map(|(i, _)| (idx(i), 1.0)),
            ),
            homeless: Sampler::new(people.iter().enumerate().filter(|(_, p)| adult(p)).map(
                |(i, p)| {
                    let a = p.age_on(REFERENCE_DATE);
                    let mut w = if a <= 25 { 2.0 } else { 0.4 };
                    if p.traits.flags & DA_VICTIM != 0 {
                        w += 12.0;
                    }
                    if p.traits.offending > 0.0 {
                        w += 4.0;
                    }
                    if p.traits.flags & VULNERABLE != 0 {
                        w += 3.0;
                    }
                    (idx(i), w)
                },
            )),
            patients: Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.age_on(REFERENCE_DATE) >= 10)
                    .map(|(i, p)| {
                        let a = p.age_on(REFERENCE_DATE);
                        let young = if (16..=34).contains(&a) { 3.0 } else { 1.0 };
                        (idx(i), f64::from(p.traits.victim) * young)
                    }),
            ),
            places: Sampler::new(
                lsoas()
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (idx(i), l.place_weight)),
            ),
        };
        // A small population may have nobody with a trait: fall back to anyone plausible, so
        // every dataset still gets its rows.
        let anyone = || Sampler::new((0..people.len()).map(|i| (idx(i), 1.0)));
        let subset = |keep: &dyn Fn(&Person) -> bool| {
            let s = Sampler::new(
                people
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| keep(p))
                    .map(|(i, _)| (idx(i), 1.0)),
            );
            if s.is_empty() { anyone() } else { s }
        };
        let or =
            |s: Sampler, fallback: &dyn Fn() -> Sampler| if s.is_empty() { fallback() } else { s };
        let adults = || subset(&adult);
        let young = || subset(&|p: &Person| p.age_on(REFERENCE_DATE) < 25);
        let pools = Pools {
            victims: or(pools.victims, &anyone),
            offenders: or(pools.offenders, &adults),
            supervised: or(pools.supervised, &adults),
            da_victims: pools.da_victims,
            asb_callers: pools.asb_callers,
            children: or(pools.children, &young),
            homeless: or(pools.homeless, &adults),
            patients: or(pools.patients, &anyone),
            places: pools.places,
        };
        Self {
            people,
            cfg,
            invalid: cfg.shape == Shape::Source,
            households: population::household_ranges(people),
            pools,
            days: (cfg.to.to_julian_day() - cfg.from.to_julian_day()).max(0),
        }
    }

    /// Rows the dataset gets.
    pub fn count(&self, dataset: &str) -> u64 {
        match self.cfg.volume {
            Volume::PerDataset(n) => n as u64,
            Volume::Realistic => {
                let v = self.cfg.events.volume(dataset) * self.people.len() as f64 / 1000.0
                    * self.cfg.years();
                v.round() as u64
            }
        }
    }

    /// A random day in the window.
    pub fn day(&self, rng: &mut StdRng) -> Date {
        let j = self.cfg.from.to_julian_day() + rng.random_range(0..=self.days);
        Date::from_julian_day(j).unwrap_or(self.cfg.from)
    }

    /// A random moment in the window, with hours drawn from `hours` weights (24 entries).
    pub fn moment(&self, rng: &mut StdRng, hours: &[u8; 24]) -> PrimitiveDateTime {
        let d = self.day(rng);
        let total: u32 = hours.iter().map(|h| u32::from(*h)).sum();
        let mut x = rng.random_range(0..total.max(1));
        let mut hour = 0u8;
        for (h, w) in hours.iter().enumerate() {
            if x < u32::from(*w) {
                hour = h as u8;
                break;
            }
            x -= u32::from(*w);
        }
        let t = Time::from_hms(hour, rng.random_range(0..60), 0).unwrap_or(Time::MIDNIGHT);
        PrimitiveDateTime::new(d, t)
    }

    /// The members of a person's household.
    pub fn household_of(&self, person: usize) -> std::ops::Range<usize> {
        let h = self.people[person].household as usize;
        match self.households.get(h) {
            Some((a, b)) if (*a as usize..*b as usize).contains(&person) => {
                *a as usize..*b as usize
            }
            _ => person..person + 1,
        }
    }

    /// Which record (main or duplicate) of a person a row uses at an agency.
    pub fn record_for(&self, agency: Agency, person: usize, rng: &mut StdRng) -> u8 {
        let p = &self.people[person];
        u8::from(
            errors::has_duplicate(self.cfg.seed, agency, p.id, &self.cfg.errors)
                && rng.random_bool(0.5),
        )
    }

    /// How `agency` recorded a person in one of its records.
    pub fn recorded(
        &self,
        agency: Agency,
        role: Role,
        person: usize,
        record: u8,
        pnc_required: bool,
    ) -> Recorded {
        errors::recorded(
            &self.people[person],
            agency,
            role,
            record,
            &self.cfg.errors,
            self.invalid,
            pnc_required,
            self.cfg.seed,
        )
    }

    /// Writes a person's recorded identity into a row and notes the truth; returns it.
    #[allow(clippy::too_many_arguments)]
    pub fn put_person(
        &self,
        row: &mut RowBuf<'_>,
        agency: Agency,
        role: Role,
        f: &PersonFields,
        person: usize,
        rng: &mut StdRng,
        pnc_required: bool,
    ) -> Recorded {
        let record = self.record_for(agency, person, rng);
        let r = self.recorded(agency, role, person, record, pnc_required);
        row.set(f.surname, Val::T(r.surname.clone()));
        row.set(f.forename, Val::T(r.forename.clone()));
        row.set(f.dob, Val::D(r.dob));
        row.set(f.sex, Val::S(r.sex));
        if let (Some(field), Some(pnc)) = (f.pnc, &r.pnc) {
            let short = self.cfg.shape == Shape::Source && agency == Agency::Police;
            row.set(
                field,
                Val::T(if short { short_pnc(pnc) } else { pnc.clone() }),
            );
        }
        if let (Some(field), Some(nhs)) = (f.nhs, &r.nhs) {
            row.set(field, Val::Nhs(nhs.clone()));
        }
        row.truth.push(TruthRole {
            role: f.role,
            person: self.people[person].id,
            record,
            errors: r.errors,
        });
        r
    }

    /// The person on probation caseload row `c`.
    pub fn supervised_person(&self, c: u64) -> Option<usize> {
        let mut rng = stream(self.cfg.seed, tag("probation_person"), c);
        self.pools.supervised.pick(&mut rng).map(|i| i as usize)
    }

    /// Re-offence `r`, if the caseload is not empty.
    pub fn reoffence(&self, r: u64) -> Option<Reoffence> {
        let caseload = self.count("probation_caseload");
        if caseload == 0 || r >= self.count("probation_reoffending_events") {
            return None;
        }
        let mut rng = stream(self.cfg.seed, tag("reoffence"), r);
        let person = self.supervised_person(rng.random_range(0..caseload))?;
        let code = super::crime::pick(&super::crime::REOFFENCES, &mut rng).code;
        Some(Reoffence {
            person,
            date: self.day(&mut rng),
            code,
            local: rng.random_bool(self.cfg.events.reoffence_local),
        })
    }

    /// Assault `k` seen at the ED, if there is such an attendance.
    pub fn assault(&self, k: u64) -> Option<AssaultCore> {
        if k >= self.count("ed_istv") {
            return None;
        }
        let mut rng = stream(self.cfg.seed, tag("assault"), k);
        let person = self.pools.patients.pick(&mut rng)? as usize;
        let at = self.moment(&mut rng, &NIGHT);
        let method = weighted(
            &mut rng,
            &[
                ("01", 55),
                ("02", 10),
                ("03", 12),
                ("04", 6),
                ("05", 1),
                ("06", 1),
                ("98", 6),
                ("99", 9),
            ],
        );
        let location = weighted(
            &mut rng,
            &[
                ("01", 35),
                ("02", 20),
                ("03", 20),
                ("04", 8),
                ("05", 4),
                ("06", 3),
                ("07", 3),
                ("98", 4),
                ("99", 3),
            ],
        );
        let lsoa = if location == "03" {
            self.people[person].lsoa
        } else {
            self.pools.places.pick(&mut rng).unwrap_or(0) as u16
        };
        Some(AssaultCore {
            person,
            at,
            method,
            location,
            lsoa,
            reported: rng.random_bool(self.cfg.events.ed_assault_reported),
        })
    }

    /// What police crime `i` shares with another agency, if anything.
    pub fn police_link(&self, i: u64) -> PoliceLink {
        match i % STRIDE {
            REOFFENCE_RESIDUE => match self.reoffence(i / STRIDE) {
                Some(r) if r.local => PoliceLink::Reoffence(r),
                _ => PoliceLink::None,
            },
            ASSAULT_RESIDUE => match self.assault(i / STRIDE) {
                Some(a) if a.reported => PoliceLink::Assault(a),
                _ => PoliceLink::None,
            },
            _ => PoliceLink::None,
        }
    }
}

/// What a police crime shares with another agency.
pub enum PoliceLink {
    /// Nothing.
    None,
    /// A probation re-offence (the supervised person is the suspect).
    Reoffence(Reoffence),
    /// An ED assault (the patient is the victim).
    Assault(AssaultCore),
}

/// Hour weights: evenings and nights.
pub const NIGHT: [u8; 24] = [
    9, 8, 6, 4, 2, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 7, 8, 9, 10, 11, 11,
];
/// Hour weights: daytime and evening.
pub const DAY: [u8; 24] = [
    2, 1, 1, 1, 1, 1, 2, 4, 6, 7, 8, 8, 8, 8, 8, 8, 9, 9, 9, 8, 7, 6, 4, 3,
];

/// Picks from `(value, weight)`.
pub fn weighted<T: Copy>(rng: &mut StdRng, options: &[(T, u32)]) -> T {
    let total: u32 = options.iter().map(|o| o.1).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (v, w) in options {
        if x < *w {
            return *v;
        }
        x -= w;
    }
    options[0].0
}

/// `YYYY/NNNNNNNC` → `YY/NNNNNNC` (the short form police systems often show).
fn short_pnc(canonical: &str) -> String {
    match canonical.split_once('/') {
        Some((y, rest)) if y.len() == 4 && rest.len() == 8 => {
            let serial = rest[..7].trim_start_matches('0');
            format!(
                "{}/{}{}",
                &y[2..],
                if serial.is_empty() { "0" } else { serial },
                &rest[7..]
            )
        }
        _ => canonical.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_pnc_normalises_back() {
        let p = super::super::identifiers::Pnc {
            year: 2019,
            serial: 123,
        };
        let s = short_pnc(&p.canonical());
        assert_eq!(
            skp_core::normalise::pnc_id(&s).as_deref(),
            Ok(p.canonical().as_str())
        );
    }
}
