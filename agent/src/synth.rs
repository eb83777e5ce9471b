//! Synthetic source exports shaped by the catalog, for demos and tests (no real person's data).
//!
//! One synthetic population is shared by every dataset so the same people appear across
//! agencies. Pure apart from [`write_agency`], which writes the CSV files.

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skp_core::catalog::{Dataset, FieldType};
use skp_core::normalise::pnc_check_letter;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SURNAMES: &[&str] = &[
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes",
    "Green", "Hall", "Khan", "Patel", "Ahmed", "Ali", "Kim", "Nowak", "O'Brien", "Okafor",
    "Mensah", "Begum", "Singh", "Lee", "Park", "Da Silva",
];
const FORENAMES_F: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Sophia", "Grace", "Lily", "Freya", "Emily", "Aisha",
    "Fatima", "Zoë", "Maria", "Hannah", "Chloe", "Jessica", "Priya", "Seo-yeon", "Amara",
];
const FORENAMES_M: &[&str] = &[
    "Oliver", "George", "Noah", "Arthur", "Harry", "Leo", "Jack", "Charlie", "Oscar", "Jacob",
    "Mohammed", "Ali", "Kwame", "Tomasz", "Ravi", "Daniel", "James", "Joshua", "Min-jun", "Chidi",
];
/// Kingston upon Thames LSOA 2021 codes (a subset of the borough's).
pub const KINGSTON_LSOAS: &[&str] = &[
    "E01002913",
    "E01002914",
    "E01002915",
    "E01002916",
    "E01002917",
    "E01002918",
    "E01002919",
    "E01002920",
    "E01002921",
    "E01002922",
    "E01002923",
    "E01002924",
    "E01002925",
    "E01002926",
    "E01002927",
    "E01002928",
];
const KINGSTON_WARDS: &[&str] = &[
    "E05013922",
    "E05013923",
    "E05013924",
    "E05013925",
    "E05013926",
    "E05013927",
    "E05013928",
    "E05013929",
];
const POSTCODE_DISTRICTS: &[&str] = &["KT1", "KT2", "KT3", "KT4", "KT5", "KT6", "KT9"];

/// A synthetic person.
#[derive(Debug, Clone)]
pub struct Person {
    /// Hidden ground-truth id.
    pub id: u64,
    /// Surname.
    pub surname: String,
    /// Forename.
    pub forename: String,
    /// Date of birth, ISO.
    pub dob: String,
    /// `F` or `M`.
    pub sex: &'static str,
    /// A valid NHS number.
    pub nhs: String,
    /// A valid PNC id, for some.
    pub pnc: Option<String>,
}

/// A population of `n` synthetic people, reproducible from `seed`.
pub fn population(n: usize, seed: u64) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n as u64)
        .map(|id| {
            let female = rng.random_bool(0.5);
            let forename = if female {
                pick(&mut rng, FORENAMES_F)
            } else {
                pick(&mut rng, FORENAMES_M)
            };
            let year = rng.random_range(1940..=2012);
            let dob = format!(
                "{year:04}-{:02}-{:02}",
                rng.random_range(1..=12),
                rng.random_range(1..=28)
            );
            let pnc = rng.random_bool(0.3).then(|| {
                let yy = format!("{:02}", rng.random_range(0..=25));
                let serial = rng.random_range(1..=999_999u32);
                format!(
                    "20{yy}/{serial:07}{}",
                    pnc_check_letter(&yy, serial) as char
                )
            });
            Person {
                id,
                surname: pick(&mut rng, SURNAMES).to_string(),
                forename: forename.to_string(),
                dob,
                sex: if female { "F" } else { "M" },
                nhs: nhs_number(&mut rng),
                pnc,
            }
        })
        .collect()
}

fn pick<'a>(rng: &mut StdRng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// A random NHS number with a valid mod-11 check digit.
pub fn nhs_number(rng: &mut StdRng) -> String {
    loop {
        let d: Vec<u32> = (0..9).map(|_| rng.random_range(0..10)).collect();
        let sum: u32 = d.iter().enumerate().map(|(i, x)| x * (10 - i as u32)).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => continue,
            c => c,
        };
        return d.iter().map(|x| x.to_string()).collect::<String>() + &check.to_string();
    }
}

/// Rows of a dataset: column → value, one map per row, in catalog field names.
pub fn rows(ds: &Dataset, people: &[Person], n: usize, seed: u64) -> Vec<Vec<(String, String)>> {
    let mut rng = StdRng::seed_from_u64(seed ^ fxhash(ds.name.as_str()));
    // Which person field each identifier field takes, via the role recipes.
    let mut role_of: HashMap<&str, (usize, &str)> = HashMap::new();
    for (ri, role) in ds.roles.iter().enumerate() {
        for r in &role.tokens {
            let parts: &[&str] = match r.kind.as_str() {
                "demo" => &["surname", "forename", "dob", "sex"],
                "nhs" => &["nhs"],
                "pnc" => &["pnc"],
                "ref" => &["ref"],
                _ => &[],
            };
            for (f, part) in r.fields.iter().zip(parts) {
                role_of.insert(f.as_str(), (ri, part));
            }
        }
    }
    (0..n)
        .map(|i| {
            let chosen: Vec<&Person> = ds
                .roles
                .iter()
                .map(|_| &people[rng.random_range(0..people.len())])
                .collect();
            ds.fields
                .iter()
                .filter_map(|f| {
                    let name = f.name.as_str();
                    let v = if let Some((ri, part)) = role_of.get(name) {
                        let p = chosen[*ri];
                        match *part {
                            "surname" => Some(p.surname.clone()),
                            "forename" => Some(p.forename.clone()),
                            "dob" => Some(p.dob.clone()),
                            "sex" => Some(p.sex.to_string()),
                            "nhs" => rng.random_bool(0.8).then(|| p.nhs.clone()),
                            "pnc" => p.pnc.clone(),
                            _ => Some(format!("P{:07}", p.id)),
                        }
                    } else {
                        value_for(&mut rng, f, i)
                    };
                    let v = if f.required {
                        v.or_else(|| value_for(&mut rng, f, i))
                    } else {
                        v
                    };
                    v.map(|v| (name.to_string(), v))
                })
                .collect()
        })
        .collect()
}

fn value_for(rng: &mut StdRng, f: &skp_core::Field, i: usize) -> Option<String> {
    let name = f.name.as_str();
    if !f.required && rng.random_bool(0.1) {
        return None;
    }
    Some(match f.ty {
        FieldType::Reference => format!("{}-{:06}", name.to_uppercase().replace('_', ""), i + 1),
        FieldType::Int if name.contains("age") => rng.random_range(10..80).to_string(),
        FieldType::Int if name.ends_with("_no") || name.ends_with("_seq") => (i + 1).to_string(),
        FieldType::Int => rng.random_range(0..10).to_string(),
        FieldType::Date => format!(
            "2024-{:02}-{:02}",
            rng.random_range(1..=12),
            rng.random_range(1..=28)
        ),
        FieldType::Datetime => format!(
            "2024-{:02}-{:02}T{:02}:{:02}",
            rng.random_range(1..=12),
            rng.random_range(1..=28),
            rng.random_range(0..24),
            rng.random_range(0..60)
        ),
        FieldType::Bool => if rng.random_bool(0.15) {
            "true"
        } else {
            "false"
        }
        .into(),
        FieldType::Enum => f.values[rng.random_range(0..f.values.len())].clone(),
        FieldType::Set => {
            let k = rng.random_range(0..3usize).min(f.values.len());
            let mut items: Vec<&str> = Vec::new();
            for _ in 0..k {
                let v = &f.values[rng.random_range(0..f.values.len())];
                if !items.contains(&v.as_str()) {
                    items.push(v);
                }
            }
            items.join(";")
        }
        FieldType::Str if name.contains("lsoa") => pick(rng, KINGSTON_LSOAS).into(),
        FieldType::Str if name.contains("wd") || name.contains("ward") => {
            pick(rng, KINGSTON_WARDS).into()
        }
        FieldType::Str => "Kingston".chars().take(f.max_len as usize).collect(),
        FieldType::Postcode => format!(
            "{} {}{}{}",
            pick(rng, POSTCODE_DISTRICTS),
            rng.random_range(1..10),
            (b'A' + rng.random_range(0..26u8)) as char,
            (b'A' + rng.random_range(0..26u8)) as char
        ),
        FieldType::Uprn => format!("1280{:08}", rng.random_range(0..100_000_000u64)),
        FieldType::NhsNumber => nhs_number(rng),
        FieldType::PncId => {
            let serial = rng.random_range(1..=999_999u32);
            format!("2019/{serial:07}{}", pnc_check_letter("19", serial) as char)
        }
        FieldType::Name => pick(rng, SURNAMES).into(),
    })
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Writes one CSV per dataset (catalog field names as columns) into `dir`; returns the files.
pub fn write_datasets<'a>(
    datasets: impl IntoIterator<Item = &'a Dataset>,
    people: &[Person],
    rows_per_dataset: usize,
    seed: u64,
    dir: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    for ds in datasets {
        let path = dir.join(format!("{}.csv", ds.name));
        let mut w = csv::Writer::from_path(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let cols: Vec<&str> = ds.fields.iter().map(|f| f.name.as_str()).collect();
        w.write_record(&cols)?;
        for row in rows(ds, people, rows_per_dataset, seed) {
            let map: HashMap<String, String> = row.into_iter().collect();
            w.write_record(
                cols.iter()
                    .map(|c| map.get(*c).map(String::as_str).unwrap_or("")),
            )?;
        }
        w.flush()?;
        out.push((ds.name.to_string(), path));
    }
    Ok(out)
}
