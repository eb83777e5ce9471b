//! End-to-end Parquet extracts: a real `gateway serve`, real agents pushing synthetic police and
//! fire data over mutual TLS, and `gateway extract --format parquet` as an analyst runs it. Each
//! released CSV gets a `<name>.parquet` beside it that reads back (with the parquet crate) to
//! exactly the CSV's header and rows; the CSV files and the manifest are unchanged, so
//! `gateway audit verify-release` still verifies the folder, and it refuses a Parquet copy that
//! does not match its CSV. An unknown `--format` is refused before anything is asked.

use anyhow::{Context, Result, ensure};
use e2e::{GatewayProc, Pki, push_ok, run_extract, synth_catalog, text, verify_release_cli};
use gateway::release::manifest::{MANIFEST_FILE, Manifest};
use gateway::release::parquet_out::{csv_to_parquet, parquet_name, read_parquet_rows};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
/// police_crime narrowed to fields whose quasi-identifiers leave classes of at least k = 5 in a
/// small population; lfb_incident keeps every field the agreement releases.
const CRIME_FIELDS: &str = "police_crime.ho_offence_code,police_crime.ho_offence_group,police_crime.committed_from:quarter,police_crime.victim_sex,police_crime.wd22cd,police_crime.knife_flag";
const PERSONS: usize = 1200;
const SEED: u64 = 11;

fn succeeded(o: Output, what: &str) -> Result<Output> {
    ensure!(o.status.success(), "{what} failed: {}", text(&o));
    Ok(o)
}

/// A CSV file as the csv crate reads it: its header and records.
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
    let header = r.headers()?.iter().map(str::to_owned).collect();
    let rows = r
        .records()
        .map(|row| row.map(|row| row.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()?;
    Ok((header, rows))
}

fn folder_names(dir: &Path) -> Result<BTreeSet<String>> {
    std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect()
}

fn manifest_in(dir: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(dir.join(MANIFEST_FILE))?;
    Manifest::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

#[test]
fn parquet_extract_reads_back_equal_to_the_csv() -> Result<()> {
    let pki = Pki::new()?;
    let gw = GatewayProc::start(&pki.gateway_config())?;
    let data = pki.path().join("exports");
    let crime = synth_catalog("met-police", PERSONS, SEED, &data)?
        .remove("police_crime")
        .context("no police_crime export")?;
    let fires = synth_catalog("lfb", PERSONS, SEED, &data)?
        .remove("lfb_incident")
        .context("no lfb_incident export")?;
    push_ok(&pki, &gw, "met-police", "police_crime", &crime)?;
    push_ok(&pki, &gw, "lfb", "lfb_incident", &fires)?;

    let analyst = pki.analyst_config();
    let base = pki.path().join("releases");
    let extract = |out: &Path, format: &[&str]| {
        let mut extra = vec![
            "--datasets",
            "police_crime,lfb_incident",
            "--fields",
            CRIME_FIELDS,
        ];
        extra.extend_from_slice(format);
        run_extract(&analyst, &gw, SV, SV_PURPOSE, &extra, out)
    };

    // --format parquet: the release as with CSV, plus one Parquet copy per CSV.
    let dir = base.join("sv-parquet");
    let o = succeeded(
        extract(&dir, &["--format", "parquet"])?,
        "gateway extract --format parquet",
    )?;
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{stdout}");
    let m = manifest_in(&dir)?;
    let csvs: Vec<_> = m
        .release
        .files
        .iter()
        .filter(|f| f.name.ends_with(".csv"))
        .collect();
    ensure!(
        csvs.len() == 2,
        "expected two CSV files: {:?}",
        m.release.files
    );
    let mut expected_names = BTreeSet::from([MANIFEST_FILE.to_owned()]);
    for f in &m.release.files {
        expected_names.insert(f.name.clone());
    }
    let mut rows_total = 0;
    let mut empty_cells = 0;
    for f in &csvs {
        let pq = parquet_name(&f.name).context("a CSV name")?;
        ensure!(
            stdout.contains(&pq),
            "the extract does not report {pq}:\n{stdout}"
        );
        expected_names.insert(pq.clone());
        let (header, rows) = read_csv(&dir.join(&f.name))?;
        let (pq_header, pq_rows) = read_parquet_rows(&dir.join(&pq))?;
        assert_eq!(pq_header, header, "{pq}: columns vs the CSV header");
        assert_eq!(header, f.columns, "{}: header vs manifest", f.name);
        assert_eq!(pq_rows.len() as u64, f.rows, "{pq}: rows vs manifest");
        assert!(pq_rows == rows, "{pq}: rows differ from {}", f.name);
        rows_total += rows.len();
        empty_cells += rows.iter().flatten().filter(|c| c.is_empty()).count();
        eprintln!(
            "{pq}: {} rows x {} columns equal to {}",
            rows.len(),
            header.len(),
            f.name
        );
    }
    ensure!(rows_total > 0, "the extract released no rows");
    eprintln!("{empty_cells} empty cells kept as empty strings");
    assert_eq!(
        folder_names(&dir)?,
        expected_names,
        "the folder holds the CSV files, the manifest and one Parquet copy per CSV, nothing else"
    );

    // The folder still verifies offline, the copies checked against their CSV files.
    let o = succeeded(verify_release_cli(&pki, &dir, None)?, "verify-release")?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure!(
        out.contains(": OK:") && out.contains("2 Parquet copy(ies)"),
        "verify-release output: {out}"
    );

    // A Parquet copy that does not hold its CSV's rows is refused, naming it (here: one cell
    // changed, written properly as Parquet, so only the content differs).
    let target = csvs
        .iter()
        .find(|f| f.rows > 0)
        .context("a CSV with rows")?;
    let target_pq = parquet_name(&target.name).context("a CSV name")?;
    let (header, mut rows) = read_csv(&dir.join(&target.name))?;
    let last = rows.len() - 1;
    let cell = rows[last].last_mut().context("a cell")?;
    cell.push('x');
    let altered = pki.path().join("altered.csv");
    let mut w = csv::Writer::from_path(&altered)?;
    w.write_record(&header)?;
    for r in &rows {
        w.write_record(r)?;
    }
    w.flush()?;
    drop(w);
    csv_to_parquet(&altered, &dir.join(&target_pq))?;
    let o = verify_release_cli(&pki, &dir, None)?;
    let all = text(&o);
    ensure!(
        !o.status.success()
            && all.contains("VERIFICATION FAILED")
            && all.contains(&target_pq)
            && all.contains(&format!("row {}, column", rows.len())),
        "an altered Parquet copy was not refused: {all}"
    );
    // Without the copy the folder is the plain release again.
    std::fs::remove_file(dir.join(&target_pq))?;
    succeeded(
        verify_release_cli(&pki, &dir, None)?,
        "verify-release without one copy",
    )?;
    // A Parquet file that is the copy of no released CSV is an unexpected file.
    std::fs::write(dir.join("extra.parquet"), b"PAR1")?;
    let o = verify_release_cli(&pki, &dir, None)?;
    ensure!(
        !o.status.success() && text(&o).contains("unexpected file extra.parquet"),
        "a stray Parquet file was not refused: {}",
        text(&o)
    );

    // --format csv (the default): no Parquet file.
    let plain = base.join("sv-csv");
    succeeded(
        extract(&plain, &["--format", "csv"])?,
        "gateway extract --format csv",
    )?;
    ensure!(
        folder_names(&plain)?
            .iter()
            .all(|n| !n.ends_with(".parquet")),
        "--format csv wrote Parquet files: {:?}",
        folder_names(&plain)?
    );

    // An unknown format is refused before anything is asked or written.
    let bogus = base.join("sv-bogus");
    let o = extract(&bogus, &["--format", "bogus"])?;
    let all = text(&o);
    ensure!(
        !o.status.success()
            && all.contains("invalid value 'bogus' for '--format <FORMAT>'")
            && all.contains("[possible values: csv, parquet]"),
        "--format bogus was not refused clearly: {all}"
    );
    ensure!(!bogus.exists(), "--format bogus created the output folder");
    Ok(())
}
