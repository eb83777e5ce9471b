//! `bench pair`: two agencies' person files rendered from ONE synthetic population, for
//! comparing fuzzy person linkers on the same records (`scripts/linkage-compare.sh` runs Splink
//! and clkhash + anonlink on them with `bench/compare/compare.py`).
//!
//! Agency A is the police, agency B the council; each records each of its people through the
//! agent's own synthetic-data error model (`agent::synth::errors::recorded` with the default
//! [`ErrorRates`]: typos, nicknames, swapped and changed names, date-of-birth errors, old
//! addresses) and holds a duplicate record of some of them (`has_duplicate`). A share
//! `--overlap` of each file's people is also in the other file; the rest are in one file only.
//! The hidden person id is written as `true_id` so the linkers' output can be scored.
//!
//! Writes `a.csv` and `b.csv` (`rec_id,forename,surname,dob,sex,postcode,true_id`); prints
//! counts only, never a row. Synthetic people only, but never logged all the same.

use crate::thousands;
use agent::synth::errors::{Agency, Recorded, Role, has_duplicate, recorded};
use agent::synth::{ErrorRates, Person, population};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::Path;

/// The header of both files.
pub const HEADER: [&str; 7] = [
    "rec_id", "forename", "surname", "dob", "sex", "postcode", "true_id",
];

/// The agency and role of each file.
const SIDES: [(Agency, Role, &str); 2] = [
    (Agency::Police, Role::Victim, "A"),
    (Agency::Council, Role::Victim, "B"),
];

/// One row of a pair file: a person as one agency recorded them.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// Record id, unique in its file (`A000001`, `B000001`, …), in shuffled order.
    pub rec_id: String,
    /// Forename as recorded.
    pub forename: String,
    /// Surname as recorded.
    pub surname: String,
    /// Date of birth as recorded, `YYYY-MM-DD`.
    pub dob: String,
    /// `F` or `M`.
    pub sex: &'static str,
    /// Home postcode as recorded (the synthetic datasets' derivation).
    pub postcode: String,
    /// The hidden person id (index in the population).
    pub true_id: u64,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Synthetic, but shaped like personal data: keep the values out of logs.
        f.debug_struct("Row")
            .field("rec_id", &self.rec_id)
            .field("true_id", &self.true_id)
            .finish_non_exhaustive()
    }
}

/// The two files and what they hold.
#[derive(Debug)]
pub struct Pair {
    /// Agency A's rows (police).
    pub a: Vec<Row>,
    /// Agency B's rows (council).
    pub b: Vec<Row>,
    /// Size of the population drawn from.
    pub population: usize,
}

impl Pair {
    /// Pairs `(a row, b row)` of the same person: the pairs a perfect linker reports.
    pub fn true_pairs(&self) -> u64 {
        true_pairs(&self.a, &self.b)
    }
}

/// Writes `out/a.csv` and `out/b.csv` and prints the counts (and a JSON line).
pub fn run(out: &Path, persons: usize, overlap: f64, seed: u64) -> Result<()> {
    let pair = build(persons, overlap, seed)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output directory {}", out.display()))?;
    let (path_a, path_b) = (out.join("a.csv"), out.join("b.csv"));
    write(&path_a, &pair.a)?;
    write(&path_b, &pair.b)?;
    let true_pairs = pair.true_pairs();
    let (people_a, dup_a) = people_and_duplicates(&pair.a);
    let (people_b, dup_b) = people_and_duplicates(&pair.b);
    let shared = shared_people(&pair.a, &pair.b);
    println!(
        "wrote {} ({} rows: {} people, {} duplicate records; police as recorded)",
        path_a.display(),
        thousands(pair.a.len() as f64),
        thousands(people_a as f64),
        thousands(dup_a as f64),
    );
    println!(
        "wrote {} ({} rows: {} people, {} duplicate records; council as recorded)",
        path_b.display(),
        thousands(pair.b.len() as f64),
        thousands(people_b as f64),
        thousands(dup_b as f64),
    );
    println!(
        "people in both files: {} (overlap asked {overlap}); population {}, seed {seed}",
        thousands(shared as f64),
        thousands(pair.population as f64),
    );
    println!("true cross-file pairs: {true_pairs}");
    println!(
        "{}",
        serde_json::json!({
            "bench": "pair",
            "rows_a": pair.a.len(),
            "rows_b": pair.b.len(),
            "people_a": people_a,
            "people_b": people_b,
            "duplicates_a": dup_a,
            "duplicates_b": dup_b,
            "people_both": shared,
            "true_pairs": true_pairs,
            "overlap": overlap,
            "seed": seed,
            "population": pair.population,
        })
    );
    Ok(())
}

/// The two files' rows for `persons` rows a file, a share `overlap` of people in both files.
/// Pure and deterministic for a seed.
///
/// People are drawn in a seeded random order: the first `round(persons × overlap)` go to both
/// files, then each file takes people of its own until it has `persons` rows. A person's
/// duplicate record (at the default rate) is a second row of that person in that file, so a
/// person in both files with a duplicate gives two true pairs.
pub fn build(persons: usize, overlap: f64, seed: u64) -> Result<Pair> {
    if persons == 0 {
        bail!("--persons 0: give at least 1 row a file");
    }
    if !(0.0..=1.0).contains(&overlap) {
        bail!("--overlap {overlap}: give a share between 0 and 1 (0.5 = half the people in both)");
    }
    let both = ((persons as f64) * overlap).round() as usize;
    let own = persons - both.min(persons);
    let total = both + 2 * own;
    if total > agent::synth::MAX_PERSONS {
        bail!(
            "--persons {persons} --overlap {overlap} needs {total} people; the synthetic \
             population holds at most {} (the NHS 999 test range)",
            agent::synth::MAX_PERSONS
        );
    }
    let people = population(total, seed);
    let mut order: Vec<usize> = (0..people.len()).collect();
    order.sort_by_key(|&i| (mix(seed ^ 0x7061_6972 ^ mix(i as u64)), i));
    let (shared, rest) = order.split_at(both.min(order.len()));
    let (only_a, only_b) = rest.split_at(own.min(rest.len()));
    let rates = ErrorRates::default();
    let [
        (police, police_role, prefix_a),
        (council, council_role, prefix_b),
    ] = SIDES;
    let render = |agency, role, own_people: &[usize], prefix| {
        let mut rows = Vec::with_capacity(persons + persons / 16);
        'fill: for &i in shared.iter().chain(own_people) {
            let p = &people[i];
            let records = if has_duplicate(seed, agency, p.id, &rates) {
                2
            } else {
                1
            };
            for record in 0..records {
                if rows.len() == persons {
                    break 'fill;
                }
                let r = recorded(p, agency, role, record, &rates, false, false, seed);
                rows.push(row(p, &r));
            }
        }
        shuffle_and_number(&mut rows, seed, prefix);
        rows
    };
    let a = render(police, police_role, only_a, prefix_a);
    let b = render(council, council_role, only_b, prefix_b);
    Ok(Pair {
        a,
        b,
        population: total,
    })
}

/// Pairs `(a row, b row)` that share a `true_id`.
pub fn true_pairs(a: &[Row], b: &[Row]) -> u64 {
    let mut count_b: HashMap<u64, u64> = HashMap::new();
    for r in b {
        *count_b.entry(r.true_id).or_default() += 1;
    }
    a.iter()
        .map(|r| count_b.get(&r.true_id).copied().unwrap_or(0))
        .sum()
}

fn row(p: &Person, r: &Recorded) -> Row {
    Row {
        rec_id: String::new(),
        forename: r.forename.clone(),
        surname: r.surname.clone(),
        dob: format!(
            "{:04}-{:02}-{:02}",
            r.dob.year(),
            u8::from(r.dob.month()),
            r.dob.day()
        ),
        sex: r.sex,
        postcode: agent::synth::postcode(usize::from(r.lsoa), r.address),
        true_id: p.id,
    }
}

/// Puts the rows in a seeded random order (so row order tells nothing about the truth) and
/// numbers them `A000001`, ….
fn shuffle_and_number(rows: &mut [Row], seed: u64, prefix: &str) {
    let side = u64::from(prefix.as_bytes().first().copied().unwrap_or(0));
    let mut keyed: Vec<(u64, usize)> = (0..rows.len())
        .map(|i| (mix(seed ^ side << 48 ^ mix(i as u64 + 1)), i))
        .collect();
    keyed.sort_unstable();
    let mut shuffled: Vec<Row> = keyed.iter().map(|&(_, i)| rows[i].clone()).collect();
    for (n, r) in shuffled.iter_mut().enumerate() {
        r.rec_id = format!("{prefix}{:06}", n + 1);
    }
    rows.clone_from_slice(&shuffled);
}

/// Distinct people in a file and its duplicate records (rows beyond a person's first).
fn people_and_duplicates(rows: &[Row]) -> (usize, usize) {
    let mut ids: Vec<u64> = rows.iter().map(|r| r.true_id).collect();
    ids.sort_unstable();
    ids.dedup();
    (ids.len(), rows.len() - ids.len())
}

/// Distinct people present in both files.
fn shared_people(a: &[Row], b: &[Row]) -> usize {
    let in_b: std::collections::HashSet<u64> = b.iter().map(|r| r.true_id).collect();
    let mut ids: Vec<u64> = a
        .iter()
        .map(|r| r.true_id)
        .filter(|id| in_b.contains(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn write(path: &Path, rows: &[Row]) -> Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let mut w = csv::Writer::from_path(path).with_context(ctx)?;
    w.write_record(HEADER).with_context(ctx)?;
    for r in rows {
        let id = r.true_id.to_string();
        w.write_record([
            r.rec_id.as_str(),
            &r.forename,
            &r.surname,
            &r.dob,
            r.sex,
            &r.postcode,
            &id,
        ])
        .with_context(ctx)?;
    }
    w.flush().with_context(ctx)?;
    Ok(())
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_rows_asked_and_are_deterministic() {
        let p = build(2000, 0.5, 7).expect("valid options");
        assert_eq!((p.a.len(), p.b.len()), (2000, 2000));
        let q = build(2000, 0.5, 7).expect("valid options");
        assert!(p.a == q.a && p.b == q.b, "same seed, same files");
        let r = build(2000, 0.5, 8).expect("valid options");
        assert!(p.a != r.a, "another seed, other files");
        for rows in [&p.a, &p.b] {
            let mut ids: Vec<&str> = rows.iter().map(|r| r.rec_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), rows.len(), "rec_id is unique in a file");
        }
        assert!(p.a.iter().all(|r| r.rec_id.starts_with('A')));
        assert!(p.b.iter().all(|r| r.rec_id.starts_with('B')));
    }

    #[test]
    fn overlap_decides_the_shared_people_and_true_pairs() {
        let p = build(2000, 0.5, 1).expect("valid options");
        let shared = shared_people(&p.a, &p.b);
        assert!((950..=1000).contains(&shared), "shared {shared}");
        let pairs = p.true_pairs();
        assert!(pairs >= shared as u64 && pairs < shared as u64 * 11 / 10);
        let none = build(500, 0.0, 1).expect("valid options");
        assert_eq!(none.true_pairs(), 0);
        let all = build(500, 1.0, 1).expect("valid options");
        assert!(shared_people(&all.a, &all.b) >= 480);
    }

    #[test]
    fn rows_carry_the_error_model() {
        let p = build(3000, 1.0, 3).expect("valid options");
        let b: HashMap<u64, &Row> = p.b.iter().map(|r| (r.true_id, r)).collect();
        let (mut same, mut differ) = (0, 0);
        for r in &p.a {
            if let Some(o) = b.get(&r.true_id) {
                if (&r.forename, &r.surname, &r.dob) == (&o.forename, &o.surname, &o.dob) {
                    same += 1;
                } else {
                    differ += 1;
                }
            }
        }
        assert!(same > 2000, "most agree ({same})");
        assert!(differ > 50, "some disagree ({differ})");
        let (_, dups) = people_and_duplicates(&p.a);
        assert!(dups > 10, "duplicate records ({dups})");
    }

    #[test]
    fn values_are_well_formed() {
        let p = build(1000, 0.5, 2).expect("valid options");
        for r in p.a.iter().chain(&p.b) {
            assert!(r.sex == "F" || r.sex == "M");
            assert!(
                time::Date::parse(&r.dob, &time::format_description::well_known::Iso8601::DATE)
                    .is_ok()
            );
            assert_eq!(
                skp_core::normalise::postcode(&r.postcode).as_deref(),
                Ok(r.postcode.as_str())
            );
            assert!(!r.forename.is_empty() && !r.surname.is_empty());
        }
        let debug = format!("{:?}", p.a[0]);
        assert!(!debug.contains(&p.a[0].surname), "Debug redacts names");
    }

    #[test]
    fn bad_options_are_refused_with_the_flag() {
        let e = build(10, 1.5, 1).expect_err("overlap > 1");
        assert!(e.to_string().contains("--overlap"));
        let e = build(0, 0.5, 1).expect_err("no rows");
        assert!(e.to_string().contains("--persons"));
        let e = build(10, f64::NAN, 1).expect_err("NaN");
        assert!(e.to_string().contains("--overlap"));
    }

    #[test]
    fn writes_the_header_and_names_the_file_on_failure() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = build(50, 0.5, 1).expect("valid options");
        let path = dir.path().join("a.csv");
        write(&path, &p.a).expect("writable");
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(text.starts_with("rec_id,forename,surname,dob,sex,postcode,true_id\n"));
        assert_eq!(text.lines().count(), 51);
        let bad = dir.path().join("missing").join("a.csv");
        let e = write(&bad, &p.a).expect_err("no such directory");
        assert!(format!("{e:#}").contains(&bad.display().to_string()));
    }
}
