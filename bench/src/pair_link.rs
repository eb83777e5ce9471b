//! `bench pair-link`: our fuzzy linkage on the two files `bench pair` writes, timed as the
//! other tools are in `scripts/linkage-compare.sh`: the agents' encoding (keyed per-field
//! tokens, `skp_core::fuzzy`) and the gateway's matching (model estimation without labels,
//! blocking, scoring, clustering with `skp_core::fuzzy::link`) are timed apart, medians of
//! `--runs`. Writes the predicted cross-file pairs (`a_rec_id,b_rec_id`) for `compare.py` to
//! score against `true_id` by the same code as Splink and anonlink. Never prints a row.

use anyhow::{Context, Result, bail};
use skp_core::LinkageKey;
use skp_core::fuzzy::link::{MatchSettings, Matcher, Model, cluster};
use skp_core::fuzzy::{PersonFields, RawPerson, TokenSet};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// One input row (the columns this linkage uses).
struct Input {
    rec_id: String,
    forename: String,
    surname: String,
    dob: String,
    sex: String,
    postcode: String,
}

fn read(path: &Path) -> Result<Vec<Input>> {
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = rdr.headers()?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no column {name}", path.display()))
    };
    let (id, f, s, d, x, p) = (
        col("rec_id")?,
        col("forename")?,
        col("surname")?,
        col("dob")?,
        col("sex")?,
        col("postcode")?,
    );
    let mut out = Vec::new();
    for (i, r) in rdr.records().enumerate() {
        let r = r.with_context(|| format!("{}:{}", path.display(), i + 2))?;
        let get = |c: usize| r.get(c).unwrap_or_default().to_owned();
        out.push(Input {
            rec_id: get(id),
            forename: get(f),
            surname: get(s),
            dob: get(d),
            sex: get(x),
            postcode: get(p),
        });
    }
    Ok(out)
}

fn encode(rows: &[Input], key: &LinkageKey, postcode: bool) -> Vec<TokenSet> {
    rows.iter()
        .map(|r| {
            let (fields, _) = PersonFields::from_raw(&RawPerson {
                forenames: Some(&r.forename),
                surname: Some(&r.surname),
                dob: Some(&r.dob),
                sex: Some(&r.sex),
                postcode: postcode.then_some(r.postcode.as_str()),
            });
            key.fuzzy().encode(&fields)
        })
        .collect()
}

/// Estimates, inserts every node, clusters; returns the cross-file pairs (index in a, index
/// in b) that share a cluster.
fn link(sets: &[TokenSet], n_a: usize, settings: &MatchSettings) -> Vec<(usize, usize)> {
    let model = Model::estimate(sets, settings);
    let mut m = Matcher::new(model, settings.clone());
    let mut pairs = Vec::new();
    let mut out = Vec::new();
    for (i, s) in sets.iter().enumerate() {
        m.insert(i as u32, s, &mut out);
        pairs.extend(out.iter().map(|&(j, w)| (j, i as u32, w)));
    }
    // Every record is its own group: a record holds one person here.
    let groups: Vec<u64> = (0..sets.len() as u64).collect();
    let labels = cluster(&groups, pairs);
    let mut members: HashMap<u32, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        let e = members.entry(*l).or_default();
        if i < n_a {
            e.0.push(i);
        } else {
            e.1.push(i - n_a);
        }
    }
    let mut cross = Vec::new();
    for (a, b) in members.values() {
        for x in a {
            for y in b {
                cross.push((*x, *y));
            }
        }
    }
    cross.sort_unstable();
    cross
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the linkage `runs` times on `dir/a.csv` and `dir/b.csv`, writes `out`, prints the
/// median seconds as JSON.
pub fn run(
    dir: &Path,
    out: &Path,
    runs: usize,
    threshold: Option<f64>,
    postcode: bool,
) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let a = read(&dir.join("a.csv"))?;
    let b = read(&dir.join("b.csv"))?;
    let all: Vec<Input> = a.into_iter().chain(b).collect();
    let n_a = all.iter().take_while(|r| r.rec_id.starts_with('A')).count();
    let key = LinkageKey::from_hex(&LinkageKey::generate_hex())
        .context("internal: a generated linkage key does not parse")?;
    let mut settings = MatchSettings::default();
    if let Some(t) = threshold {
        settings.threshold = t;
    }
    let (mut enc, mut mat) = (Vec::new(), Vec::new());
    let mut pairs = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let sets = encode(&all, &key, postcode);
        enc.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        pairs = link(&sets, n_a, &settings);
        mat.push(t.elapsed().as_secs_f64());
    }
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?,
    );
    writeln!(f, "a_rec_id,b_rec_id")?;
    for (x, y) in &pairs {
        writeln!(f, "{},{}", all[*x].rec_id, all[n_a + *y].rec_id)?;
    }
    f.flush()?;
    let (e, m) = (median(enc), median(mat));
    println!(
        "{}",
        serde_json::json!({
            "bench": "pair-link",
            "records": all.len(),
            "pairs": pairs.len(),
            "threshold": settings.threshold,
            "postcode": postcode,
            "encode_secs": e,
            "match_secs": m,
            "total_secs": e + m,
            "peak_rss_mib": crate::procfs::peak_rss_kib(std::process::id()).ok().map(|k| k / 1024),
        })
    );
    Ok(())
}
