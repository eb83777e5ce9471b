//! The shell: streams each dataset's rows to `<dir>/<dataset>.csv` and the hidden truth to
//! `<dir>/truth/<dataset>.csv`, one row at a time (memory does not grow with rows), plus the
//! agent mapping of `Source`-shaped exports and the population truth.

use super::config::{Shape, SynthConfig};
use super::datasets::{self, GenState};
use super::errors::error;
use super::geography::{self, lsoas};
use super::population::{ETHNICITIES, Person};
use super::shape::{Style, Writer};
use super::world::{RowBuf, Val, World};
use anyhow::{Context, Result, bail};
use skp_core::catalog::{Dataset, FieldType};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use time::{Date, PrimitiveDateTime};

/// One file written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Dataset name.
    pub dataset: String,
    /// The export.
    pub path: PathBuf,
    /// Its truth file.
    pub truth: PathBuf,
    /// Data rows written.
    pub rows: u64,
}

/// Writes every dataset given, its truth file, and (in the `Source` shape) the agent mapping of
/// each agency as `<dir>/<agency>.agent.toml`; also `<dir>/truth/persons.csv`.
pub fn generate<'a>(
    datasets: impl IntoIterator<Item = &'a Dataset>,
    people: &[Person],
    cfg: &SynthConfig,
    dir: &Path,
) -> Result<Vec<Written>> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        bail!("invalid synthetic-data settings: {}", problems.join("; "));
    }
    let datasets: Vec<&Dataset> = datasets.into_iter().collect();
    let truth_dir = dir.join("truth");
    std::fs::create_dir_all(&truth_dir)
        .with_context(|| format!("cannot create {}", truth_dir.display()))?;
    let world = World::new(people, cfg);
    let mut out = Vec::new();
    for ds in &datasets {
        out.push(write_one(ds, &world, dir, &truth_dir)?);
    }
    if cfg.shape == Shape::Source {
        let mut agencies: Vec<&str> = datasets.iter().map(|d| d.owner.as_str()).collect();
        agencies.sort_unstable();
        agencies.dedup();
        for a in agencies {
            let path = dir.join(format!("{a}.agent.toml"));
            let text = super::shape::agent_mapping(
                datasets.iter().copied().filter(|d| d.owner.as_str() == a),
            );
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    write_persons(people, &truth_dir.join("persons.csv"))?;
    Ok(out)
}

fn write_one(ds: &Dataset, w: &World<'_>, dir: &Path, truth_dir: &Path) -> Result<Written> {
    let name = ds.name.as_str();
    let path = dir.join(format!("{name}.csv"));
    let truth = truth_dir.join(format!("{name}.csv"));
    let mut csv = csv::Writer::from_writer(std::io::BufWriter::with_capacity(
        1 << 16,
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?,
    ));
    let mut tw = std::io::BufWriter::with_capacity(
        1 << 16,
        std::fs::File::create(&truth)
            .with_context(|| format!("cannot create {}", truth.display()))?,
    );
    writeln!(tw, "line,record_key,role,person_id,record,errors")?;
    let shape = Writer::new(ds, w.cfg.shape);
    csv.write_record(&shape.columns)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let target = w.count(name);
    let index: HashMap<&str, usize> = ds
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    let key_idx: Vec<usize> = ds
        .record_key
        .iter()
        .filter_map(|k| index.get(k.as_str()).copied())
        .collect();
    let mut row = RowBuf::new(&index, &ds.fields);
    let mut st = GenState::default();
    let mut written = 0u64;
    let mut cell = String::new();
    let mut line = String::new();
    let mut event = 0u64;
    let mut idle = 0u64;
    while written < target {
        let before = written;
        let mut emit = |r: &RowBuf<'_>| -> Result<bool> {
            if written >= target {
                return Ok(false);
            }
            let mut key = String::new();
            for (i, f) in ds.fields.iter().enumerate() {
                cell.clear();
                if let Some(v) = &r.vals[i] {
                    format_value(&mut cell, v, f.ty, shape.style, &shape, i);
                }
                csv.write_field(cell.as_bytes())?;
                if key_idx.contains(&i) {
                    if !key.is_empty() {
                        key.push('|');
                    }
                    key.push_str(&cell);
                }
            }
            csv.write_record(None::<&[u8]>)?;
            let line_no = written + 2;
            for t in &r.truth {
                line.clear();
                let _ = write!(line, "{line_no},");
                push_csv(&mut line, &key);
                let _ = write!(line, ",{},{},{},", t.role, t.person, t.record);
                push_csv(&mut line, &error_names(t.errors));
                line.push('\n');
                tw.write_all(line.as_bytes())?;
            }
            written += 1;
            Ok(written < target)
        };
        if datasets::known(name) {
            datasets::generate(name, w, event, &mut st, &mut row, &mut emit)?;
        } else {
            generic(ds, event, &mut row, &mut emit)?;
        }
        event += 1;
        idle = if written == before { idle + 1 } else { 0 };
        if idle > 10_000 {
            bail!(
                "{name}: the population has nobody this dataset can describe; use more --persons"
            );
        }
    }
    csv.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    tw.flush()
        .with_context(|| format!("cannot write {}", truth.display()))?;
    Ok(Written {
        dataset: name.to_string(),
        path,
        truth,
        rows: written,
    })
}

/// Rows for a dataset the generator does not model: plausible values by type, no person roles.
fn generic(
    ds: &Dataset,
    i: u64,
    row: &mut RowBuf<'_>,
    emit: &mut super::datasets::Emit<'_>,
) -> Result<()> {
    row.clear();
    for f in &ds.fields {
        let n = f.name.as_str();
        let v = match f.ty {
            FieldType::Reference => Val::T(format!(
                "{}-{:07}",
                n.to_uppercase().replace('_', ""),
                i + 1
            )),
            FieldType::Int => Val::I((i % 10) as i64),
            FieldType::Date => Val::D(time::macros::date!(2024 - 01 - 01)),
            FieldType::Datetime => Val::Dt(time::macros::datetime!(2024 - 01 - 01 12:00)),
            FieldType::Bool => Val::B(i.is_multiple_of(7)),
            FieldType::Enum => match f.values.first() {
                Some(v) => Val::T(v.clone()),
                None => continue,
            },
            FieldType::Str if n.contains("lsoa") => {
                Val::S(lsoas()[(i as usize) % lsoas().len()].code)
            }
            FieldType::Str => Val::T("synthetic".chars().take(f.max_len as usize).collect()),
            FieldType::Postcode => Val::T(geography::postcode(i as usize, i)),
            FieldType::Uprn => Val::I(geography::uprn(i) as i64),
            _ => continue,
        };
        row.set(n, v);
    }
    emit(row)?;
    Ok(())
}

/// Writes one value in a style.
fn format_value(out: &mut String, v: &Val, ty: FieldType, style: Style, shape: &Writer, i: usize) {
    match v {
        Val::S(s) => out.push_str(shape.code(i, s)),
        Val::T(s) => out.push_str(shape.code(i, s)),
        Val::I(n) => {
            let _ = write!(out, "{n}");
        }
        Val::B(b) => out.push_str(match (style, b) {
            (Style::Police | Style::Probation, true) => "Y",
            (Style::Police | Style::Probation, false) => "N",
            (Style::Council, true) => "Yes",
            (Style::Council, false) => "No",
            (Style::Lfb, true) => "1",
            (Style::Lfb, false) => "0",
            (_, true) => "true",
            (_, false) => "false",
        }),
        Val::D(d) => date(out, *d, style),
        Val::Dt(t) => datetime(out, *t, style),
        Val::Set(items) => {
            for (k, s) in items.iter().enumerate() {
                if k > 0 {
                    out.push(';');
                }
                out.push_str(s);
            }
        }
        Val::Nhs(n) => {
            if style == Style::Health && n.len() == 10 && ty == FieldType::NhsNumber {
                let _ = write!(out, "{} {} {}", &n[..3], &n[3..6], &n[6..]);
            } else {
                out.push_str(n);
            }
        }
    }
}

fn date(out: &mut String, d: Date, style: Style) {
    let (y, m, day) = (d.year(), u8::from(d.month()), d.day());
    let _ = match style {
        Style::Police | Style::Council => write!(out, "{day:02}/{m:02}/{y:04}"),
        _ => write!(out, "{y:04}-{m:02}-{day:02}"),
    };
}

fn datetime(out: &mut String, t: PrimitiveDateTime, style: Style) {
    date(out, t.date(), style);
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    let _ = match style {
        Style::Police | Style::Council => write!(out, " {h:02}:{mi:02}"),
        Style::Health => write!(out, " {h:02}:{mi:02}:{s:02}"),
        _ => write!(out, "T{h:02}:{mi:02}"),
    };
}

/// The names of error bits, `;`-separated.
pub fn error_names(bits: u32) -> String {
    let mut s = String::new();
    for (bit, name) in error::NAMES {
        if bits & bit != 0 {
            if !s.is_empty() {
                s.push(';');
            }
            s.push_str(name);
        }
    }
    s
}

fn push_csv(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// `truth/persons.csv`: every person's true identifiers and hidden traits.
fn write_persons(people: &[Person], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(std::io::BufWriter::with_capacity(
        1 << 16,
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    ));
    w.write_record([
        "person_id",
        "household",
        "surname",
        "forename",
        "dob",
        "sex",
        "nhs_number",
        "pnc_id",
        "ethnicity",
        "home_lsoa21cd",
        "home_postcode",
        "offending",
        "victim",
        "asb",
        "flags",
    ])?;
    for p in people {
        w.write_record([
            p.id.to_string(),
            p.household.to_string(),
            p.surname.to_string(),
            p.forename.to_string(),
            p.dob_iso(),
            p.sex.to_string(),
            p.nhs(),
            p.pnc().unwrap_or_default(),
            ETHNICITIES[usize::from(p.ethnicity)].ons.to_string(),
            lsoas()[usize::from(p.lsoa) % lsoas().len()]
                .code
                .to_string(),
            geography::postcode(usize::from(p.lsoa), u64::from(p.household)),
            p.traits.offending.to_string(),
            p.traits.victim.to_string(),
            p.traits.asb.to_string(),
            p.traits.flags.to_string(),
        ])?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
