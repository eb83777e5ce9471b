//! Synthetic Kingston data for demos, tests and linkage studies: no real person by construction.
//!
//! One synthetic population ([`population`]) of households with a borough-like age, sex and
//! ethnicity structure and home LSOAs from the real Kingston LSOA list. The same people appear
//! across agencies at realistic rates: victims and suspects in police crime, repeat ASB callers
//! with the police and the council, households approaching the council as homeless (domestic
//! abuse victims leaving with their children), people on probation whose re-offences are also
//! police crimes, ED assault attendances also reported to the police, children known to social
//! care in homes with domestic abuse; fires and incidents at places, by station ground.
//!
//! Each agency records each person through its own [`ErrorRates`]: typos, nicknames, swapped
//! names, changed and hyphenated surnames, transposed dates of birth, missing, stale or invalid
//! identifiers, old addresses and duplicate records. The hidden truth (which person each role of
//! each row is, and which errors it carries) goes to `truth/`, never pushed.
//!
//! Pure apart from [`write_datasets`] and [`generate`], which stream files to disk: memory grows
//! with the population, never with the rows.

mod config;
mod crime;
mod datasets;
pub mod errors;
mod geography;
pub mod identifiers;
mod names;
mod population;
mod sample;
mod shape;
mod world;
mod writer;

pub use config::{DEFAULT_VOLUMES, ErrorRates, EventRates, Shape, SynthConfig, Volume};
pub use geography::{Lsoa, lsoas, postcode};
pub use population::{
    AGE_BANDS, CSC_KNOWN, DA_PERPETRATOR, DA_VICTIM, ETHNICITIES, Ethnicity, Person,
    REFERENCE_DATE, Traits, VULNERABLE, age, population,
};
pub use shape::agent_mapping;
pub use writer::{Written, error_names, generate};

use anyhow::Result;
use skp_core::catalog::Dataset;
use std::path::{Path, PathBuf};

/// The most people [`population`] can give distinct NHS numbers from the 999 test range.
pub const MAX_PERSONS: usize = identifiers::NHS_999_CAPACITY;

/// Rows of a dataset in catalog field names and spellings (`(field, value)`, empty values
/// left out): `n` rows drawn from `people`, every identifier valid. References are numbered
/// from 1 in each call, so rows of two calls may share a record key.
pub fn rows(ds: &Dataset, people: &[Person], n: usize, seed: u64) -> Vec<Vec<(String, String)>> {
    let dir = Scratch::new(seed);
    let cfg = SynthConfig::new(seed, Shape::Catalog, Volume::PerDataset(n));
    let out = match dir.path() {
        Ok(p) => generate([ds], people, &cfg, &p)
            .ok()
            .and_then(|w| w.into_iter().next())
            .and_then(|w| read_rows(&w.path).ok()),
        Err(_) => None,
    };
    out.unwrap_or_default()
}

/// Writes one CSV per dataset (catalog field names, every row valid, `rows_per_dataset` rows
/// each) into `dir`, with the truth under `dir/truth/`; returns `(dataset, file)` pairs.
pub fn write_datasets<'a>(
    datasets: impl IntoIterator<Item = &'a Dataset>,
    people: &[Person],
    rows_per_dataset: usize,
    seed: u64,
    dir: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    let cfg = SynthConfig::new(seed, Shape::Catalog, Volume::PerDataset(rows_per_dataset));
    Ok(generate(datasets, people, &cfg, dir)?
        .into_iter()
        .map(|w| (w.dataset, w.path))
        .collect())
}

fn read_rows(path: &Path) -> Result<Vec<Vec<(String, String)>>> {
    let mut rdr = csv::Reader::from_path(path)?;
    let header: Vec<String> = rdr.headers()?.iter().map(str::to_string).collect();
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        out.push(
            header
                .iter()
                .zip(rec.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(h, v)| (h.clone(), v.to_string()))
                .collect(),
        );
    }
    Ok(out)
}

/// A private temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(seed: u64) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("skp-synth-{}-{seed}-{n}", std::process::id())))
    }
    fn path(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.0)?;
        Ok(self.0.clone())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
