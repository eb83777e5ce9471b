//! `bench extract`: a linked record extract of N stored records to CSV (`Releaser::extract`,
//! what `gateway extract` runs: policy decision, snapshot, linker kept in step with the store,
//! row filter, transforms, k-anonymity, re-keyed person ids, spool with SHA-256, release
//! registry, durable audit entry, manifest), first with the linker built from the store and then
//! with it already in step, beside the limit: reading the same records from the store and
//! writing every stored value as CSV text with SHA-256, no policy or linkage.
//!
//! The records are synthetic `police_crime` rows in the police source shape (`agent synth`:
//! realistic identifier errors) drawn from a Kingston-sized population, pseudonymised by the
//! agent library with the generated mapping, validated and stored as the gateway does. Each
//! measurement runs in a fresh child process (`bench extract-worker`) that opens the store as
//! the gateway does at start-up, so its `VmHWM` belongs to that measurement alone; after the
//! store is open the peak is reset (`/proc/self/clear_refs`), so the growth an extract causes
//! is measured apart from the store's own indexes.

use crate::linkage::{DatasetCounts, GatewayIngest, agency_config, require_columns};
use crate::{median, thousands};
use agent::pseudonymise::Pseudonymiser;
use agent::source::Row;
use agent::synth::{Shape, SynthConfig, Volume};
use anyhow::{Context, Result, bail};
use gateway::audit::entry::Actor;
use gateway::audit::log::AuditLog;
use gateway::linkage::ReleaseKey;
use gateway::policy::Policy;
use gateway::policy::decide::Requester;
use gateway::release::{ExtractRequest, Releaser};
use gateway::store::{Store, StoreError};
use sha2::{Digest, Sha256};
use skp_core::transform::Cell;
use skp_core::{Catalog, LinkageKey};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Seed of the synthetic population and rows.
const SEED: u64 = 20_240_714;
/// Synthetic people the rows draw from: Kingston upon Thames (2021 census: 168,063 residents).
const PEOPLE: usize = 170_000;
/// The dataset extracted.
const DATASET: &str = "police_crime";
/// Records per batch, as `agent push` sends them by default.
const BATCH: usize = 1000;
/// Origin line of the workers' audit logs.
const ORIGIN: &str = "kingston.skp/audit/v1";
/// Agreement and purpose of the bench-local agreement: the Serious Violence purpose's columns
/// and linkage without its row filter, and k = 1, so every record goes through policy and
/// linkage and is written.
const EVERY_AGREEMENT: &str = "SKP-BENCH-EVERY-01";
const EVERY_PURPOSE: &str = "bench-every-record";

/// What one measurement releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The limit: read every stored record, write every value as CSV text with SHA-256.
    Limit,
    /// SKP-ISA-SV-01 / serious-violence-sna: serious-violence offence codes only, k = 5 over five
    /// quasi-identifiers, linked on pnc + demo.
    Sv,
    /// The bench agreement: the SV purpose without its filter and with k = 1 (every record).
    Every,
    /// SKP-ISA-DHR-01 / dhr-case-chronology (shipped): no filter, full resolution, linked on
    /// nhs + pnc + demo, k = 5 with no quasi-identifiers (a counting pass that suppresses nothing).
    Dhr,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::Limit,
        Scenario::Sv,
        Scenario::Every,
        Scenario::Dhr,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Limit => "limit",
            Scenario::Sv => "sv",
            Scenario::Every => "every",
            Scenario::Dhr => "dhr",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Limit => "limit: read + CSV of every value + SHA-256",
            Scenario::Sv => "SV extract (SV filter, k=5, pnc+demo)",
            Scenario::Every => "every record (SV columns, k=1, pnc+demo)",
            Scenario::Dhr => "DHR chronology (no filter, nhs+pnc+demo)",
        }
    }

    /// Agreement, purpose and requester of the extract (none for the limit).
    fn request(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Scenario::Limit => None,
            Scenario::Sv => Some(("SKP-ISA-SV-01", "serious-violence-sna", "bench.analyst")),
            Scenario::Every => Some((EVERY_AGREEMENT, EVERY_PURPOSE, "bench.analyst")),
            // The DHR purpose is for the named review panel only.
            Scenario::Dhr => Some(("SKP-ISA-DHR-01", "dhr-case-chronology", "dhr.chair")),
        }
    }
}

/// One timed pass of a worker.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// Wall-clock seconds.
    pub secs: f64,
    /// Peak RSS during the pass (KiB; since the reset before it, or since start if the reset
    /// is not available).
    pub peak_kib: u64,
    /// RSS after the pass (KiB).
    pub rss_after_kib: u64,
    /// Data rows written.
    pub rows: u64,
    /// Rows suppressed by k-anonymity.
    pub suppressed_rows: u64,
    /// Bytes of the dataset's CSV file.
    pub bytes: u64,
    /// SHA-256 of that file.
    pub sha256: String,
}

/// What a worker measured.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// Scenario name.
    pub scenario: String,
    /// RSS when the worker started, before the store was opened (KiB).
    pub rss_start_kib: u64,
    /// Seconds to open the store (scan the log, rebuild the indexes).
    pub open_secs: f64,
    /// RSS with the store open (KiB).
    pub rss_open_kib: u64,
    /// Peak RSS while opening it (KiB).
    pub peak_open_kib: u64,
    /// Live records in the store.
    pub records: u64,
    /// Whether the peak could be reset between phases.
    pub peak_reset: bool,
    /// First pass (extract: linker built from the store) and second (linker in step).
    pub passes: Vec<Pass>,
    /// Person roles in the linkers after the passes.
    pub linker_nodes: u64,
    /// The limit only: seconds to read and decode every record with nothing written.
    pub read_only_secs: f64,
}

/// The figures of every run.
#[derive(Debug, Default)]
pub struct Report {
    /// Records stored.
    pub records: usize,
    /// Runs.
    pub runs: usize,
    /// Seconds to generate, pseudonymise and store the records (not timed otherwise).
    pub setup_secs: f64,
    /// Store files on disk (bytes).
    pub store_bytes: u64,
    /// Every worker's report, by scenario.
    pub workers: Vec<(Scenario, Vec<WorkerReport>)>,
}

/// Runs the benchmark and prints a table and a JSON report; `in_process` measures in this
/// process instead of one child per measurement (RSS figures then include earlier phases).
pub fn run(records: usize, runs: usize, in_process: bool, keep: Option<&Path>) -> Result<Report> {
    if records == 0 || runs == 0 {
        bail!("--records and --runs must be at least 1");
    }
    let load_before = crate::loadavg();
    let temp;
    let root = match keep {
        Some(dir) => dir.join(format!("records-{records}")),
        None => {
            temp = tempfile::Builder::new()
                .prefix("skp-bench-extract-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let scratch = ScratchDir(root);
    let data = scratch.path().join("data");
    let done = scratch.path().join("built");
    let t0 = Instant::now();
    if keep.is_some() && done.exists() {
        eprintln!("reusing the store in {}", data.display());
    } else {
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot clear {}", data.display()))?;
        }
        let counts = build_store(scratch.path(), &data, records)?;
        if keep.is_some() {
            std::fs::write(&done, b"")?;
        }
        report_built(&counts, t0.elapsed().as_secs_f64());
    }
    let setup_secs = t0.elapsed().as_secs_f64();
    let policy_dir = scratch.path().join("policy");
    write_every_agreement(&policy_dir)?;
    let exe = std::env::current_exe().context("cannot find the running bench executable")?;
    let mut report = Report {
        records,
        runs,
        setup_secs,
        store_bytes: dir_bytes(&data.join("records")),
        workers: Scenario::ALL.iter().map(|s| (*s, Vec::new())).collect(),
    };
    for r in 0..runs {
        for (scenario, series) in report.workers.iter_mut() {
            let work = scratch.path().join(format!("work-{r}-{}", scenario.name()));
            let policy = (*scenario == Scenario::Every).then_some(policy_dir.as_path());
            let w = if in_process {
                worker(&data, &work, *scenario, policy)?
            } else {
                spawn_worker(&exe, &data, &work, *scenario, policy)?
            };
            let _ = std::fs::remove_dir_all(&work);
            if w.records != records as u64 {
                bail!(
                    "the {} worker saw {} records, not {records}",
                    scenario.name(),
                    w.records
                );
            }
            let tag = if runs > 1 {
                format!("run {}/{runs}: ", r + 1)
            } else {
                String::new()
            };
            eprintln!("{tag}{}: {}", scenario.label(), describe(&w, records));
            series.push(w);
        }
    }
    report.print(load_before, crate::loadavg(), in_process);
    println!("{}", report.json());
    Ok(report)
}

/// The bench's working directory (a temporary one, or `--keep`'s).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

fn report_built(counts: &DatasetCounts, secs: f64) {
    eprintln!(
        "stored {} {DATASET} records in {secs:.1} s (not timed; {} export rows read, {} refused by the agent, {} duplicates, {} replaced)",
        thousands(counts.accepted as f64),
        thousands(counts.rows as f64),
        counts.agent_rejected,
        counts.duplicates,
        counts.replaced
    );
}

/// Runs one measurement in a child process and reads its JSON report.
fn spawn_worker(
    exe: &Path,
    data: &Path,
    work: &Path,
    scenario: Scenario,
    policy: Option<&Path>,
) -> Result<WorkerReport> {
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("extract-worker")
        .arg("--data")
        .arg(data)
        .arg("--work")
        .arg(work)
        .args(["--scenario", scenario.name()]);
    if let Some(p) = policy {
        cmd.arg("--policy-dir").arg(p);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {} extract-worker", exe.display()))?;
    if !out.status.success() {
        bail!(
            "the {} worker failed ({}); its errors are above",
            scenario.name(),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("the worker printed no report")?;
    WorkerReport::from_json(&serde_json::from_str(line).context("the worker's report")?)
}

/// The worker: opens the store as the gateway does at start-up, then runs two passes of the
/// scenario, the peak RSS reset before each.
pub fn worker(
    data: &Path,
    work: &Path,
    scenario: Scenario,
    policy_dir: Option<&Path>,
) -> Result<WorkerReport> {
    let rss_start_kib = status_kib("VmRSS")?;
    let t = Instant::now();
    let store = Store::open(data)
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    let open_secs = t.elapsed().as_secs_f64();
    let mut report = WorkerReport {
        scenario: scenario.name().into(),
        rss_start_kib,
        open_secs,
        rss_open_kib: status_kib("VmRSS")?,
        peak_open_kib: status_kib("VmHWM")?,
        records: store.count_records()?,
        ..WorkerReport::default()
    };
    std::fs::create_dir_all(work)?;
    if scenario == Scenario::Limit {
        for _ in 0..2 {
            report.peak_reset = reset_peak();
            report.passes.push(limit_pass(&store, work)?);
        }
        report.read_only_secs = read_only_pass(&store)?;
        return Ok(report);
    }
    let Some((agreement, purpose, sub)) = scenario.request() else {
        bail!("internal: scenario {} has no request", scenario.name());
    };
    let catalog = Arc::new(Catalog::embedded()?);
    let now = time::OffsetDateTime::now_utc();
    let policy = Policy::load(policy_dir, &catalog, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signing = skp_core::checkpoint::SigningKey::generate("kingston.skp/audit")?;
    let audit = AuditLog::open(work, signing, ORIGIN)?;
    let releaser = Releaser::new(
        store.clone(),
        audit.clone(),
        catalog,
        ReleaseKey::from_bytes(&[0x42; 32]),
        work,
    )?;
    let who = Requester {
        sub: sub.into(),
        agency: Some("rbk-council".into()),
        roles: vec!["analyst".into()],
    };
    let actor = Actor {
        kind: "analyst".into(),
        id: who.sub.clone(),
        agency: who.agency.clone(),
    };
    let req = ExtractRequest {
        agreement: agreement.into(),
        purpose: purpose.into(),
        datasets: vec![DATASET.into()],
    };
    for _ in 0..2 {
        report.peak_reset = reset_peak();
        let t = Instant::now();
        let prepared = releaser
            .extract(&policy, &who, &actor, &req, now)
            .map_err(|e| anyhow::anyhow!("extract {agreement}/{purpose}: {e}"))?;
        let secs = t.elapsed().as_secs_f64();
        let peak_kib = status_kib("VmHWM")?;
        let file = prepared
            .manifest
            .release
            .files
            .iter()
            .find(|f| f.dataset == DATASET)
            .context("the release has no police_crime file")?;
        report.passes.push(Pass {
            secs,
            peak_kib,
            rss_after_kib: status_kib("VmRSS")?,
            rows: file.rows,
            suppressed_rows: file.suppressed_rows,
            bytes: file.bytes,
            sha256: file.sha256.clone(),
        });
        // Dropping it removes the spool, as sending does.
        drop(prepared);
    }
    for key in releaser.links().keys() {
        report.linker_nodes += releaser.links().synced(&key)?.lock().linker.len() as u64;
    }
    drop(releaser);
    drop(audit);
    Ok(report)
}

/// The limit: every stored record read from the store and written as CSV text (every value,
/// header of the sent field names, CRLF) through SHA-256 to a file, then fsynced, as a release
/// file is written — split across the cores the same way an extract is (contiguous parts, the
/// later ones spooled and appended in order), so the ratio measures policy and linkage alone.
fn limit_pass(store: &Store, work: &Path) -> Result<Pass> {
    let catalog = Catalog::embedded()?;
    let ds = catalog.dataset(DATASET).context("police_crime")?;
    let path = work.join("limit.csv");
    let t = Instant::now();
    let snap = store.snapshot(&[DATASET], 0)?;
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
        });
    w.write_record(ds.sent_fields().map(|f| f.name.as_str()))?;
    let n = snap.len();
    let parts = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 4)
        .min(n.max(1));
    let size = n.div_ceil(parts);
    let ranges: Vec<std::ops::Range<usize>> = (0..parts)
        .map(|i| (i * size).min(n)..((i + 1) * size).min(n))
        .collect();
    let temps: Vec<PathBuf> = (1..parts)
        .map(|i| work.join(format!("limit.part{i}")))
        .collect();
    let snap = &snap;
    let (first, rest) = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .skip(1)
            .zip(&temps)
            .map(|(r, temp)| {
                let r = r.clone();
                scope.spawn(move || -> Result<u64, LimitError> {
                    let f = std::fs::File::create(temp).map_err(csv::Error::from)?;
                    let mut tw = csv::WriterBuilder::new()
                        .terminator(csv::Terminator::CRLF)
                        .from_writer(BufWriter::with_capacity(1 << 20, f));
                    let rows = limit_rows(store, snap, r, &mut tw)?;
                    tw.flush().map_err(csv::Error::from)?;
                    Ok(rows)
                })
            })
            .collect();
        let first = limit_rows(store, snap, ranges[0].clone(), &mut w);
        let rest: Vec<Result<u64, LimitError>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Ok(0)))
            .collect();
        (first, rest)
    });
    let mut rows = first?;
    let mut h = w.into_inner().map_err(|e| e.into_error())?;
    for (r, temp) in rest.into_iter().zip(&temps) {
        rows += r?;
        std::io::copy(&mut std::fs::File::open(temp)?, &mut h)?;
        std::fs::remove_file(temp)?;
    }
    let f = h.inner.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    let secs = t.elapsed().as_secs_f64();
    let pass = Pass {
        secs,
        peak_kib: status_kib("VmHWM")?,
        rss_after_kib: status_kib("VmRSS")?,
        rows,
        suppressed_rows: 0,
        bytes: h.bytes,
        sha256: hex::encode(h.hash.finalize()),
    };
    std::fs::remove_file(&path)?;
    Ok(pass)
}

/// Writes every value of the records at positions `range` of `snap` as CSV text.
fn limit_rows<W: Write>(
    store: &Store,
    snap: &gateway::store::Snapshot,
    range: std::ops::Range<usize>,
    w: &mut csv::Writer<W>,
) -> Result<u64, LimitError> {
    let mut reader = store.reader();
    let mut cell = String::new();
    let mut rows = 0u64;
    snap.for_each_in(
        range,
        &mut reader,
        gateway::store::Want::ALL,
        |_, rec| -> Result<(), LimitError> {
            for v in &rec.values {
                cell.clear();
                match v {
                    Cell::Text(s) | Cell::Date(s) | Cell::Datetime(s) => cell.push_str(s),
                    Cell::Int(i) => {
                        let _ = write!(cell, "{i}");
                    }
                    Cell::Flag(b) => cell.push_str(if *b { "true" } else { "false" }),
                    Cell::Set(s) => cell.push_str(&s.join(";")),
                    Cell::Missing => {}
                }
                w.write_field(cell.as_bytes())?;
            }
            w.write_record(None::<&[u8]>)?;
            rows += 1;
            Ok(())
        },
    )?;
    Ok(rows)
}

/// Every stored record read and decoded, nothing written: what any pass over the store costs.
fn read_only_pass(store: &Store) -> Result<f64> {
    let t = Instant::now();
    let snap = store.snapshot(&[DATASET], 0)?;
    let mut reader = store.reader();
    let mut values = 0usize;
    snap.for_each(&mut reader, |_, rec| -> Result<(), StoreError> {
        values += rec.values.len();
        Ok(())
    })?;
    std::hint::black_box(values);
    Ok(t.elapsed().as_secs_f64())
}

/// Failures inside the limit's record loop.
#[derive(Debug)]
enum LimitError {
    Store(StoreError),
    Csv(csv::Error),
}

impl From<StoreError> for LimitError {
    fn from(e: StoreError) -> Self {
        LimitError::Store(e)
    }
}

impl From<csv::Error> for LimitError {
    fn from(e: csv::Error) -> Self {
        LimitError::Csv(e)
    }
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitError::Store(e) => write!(f, "{e}"),
            LimitError::Csv(e) => write!(f, "cannot write CSV: {e}"),
        }
    }
}

impl std::error::Error for LimitError {}

/// A writer that hashes and counts what passes through it (as the release writer does).
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Generates police source exports, pseudonymises them with the agent library and stores them
/// through the gateway's validation until `records` are stored.
fn build_store(scratch: &Path, data: &Path, records: usize) -> Result<DatasetCounts> {
    let catalog = Catalog::embedded()?;
    let ds = catalog.dataset(DATASET).context("police_crime")?;
    let exports = scratch.join("exports");
    let people = agent::synth::population(PEOPLE.min(agent::synth::MAX_PERSONS), SEED);
    // A few per cent more rows than needed: the agent refuses rows with invalid identifiers and
    // the store keeps one version of a duplicated row.
    let rows = records + records / 20 + 100;
    let cfg = SynthConfig::new(SEED, Shape::Source, Volume::PerDataset(rows));
    let written = agent::synth::generate([ds], &people, &cfg, &exports)
        .with_context(|| format!("cannot write synthetic exports into {}", exports.display()))?;
    drop(people);
    let export = written.first().context("synth wrote no file")?;
    let acfg = agency_config(&exports, ds.owner.as_str())?;
    let mapping = acfg.mapping(DATASET);
    let key = LinkageKey::from_bytes(&[0x5c; 32]);
    let p = Pseudonymiser::new(ds, &mapping, &key);
    let store = Store::open(data)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut gw = GatewayIngest::new(&catalog, &store, ds.owner.as_str())?;
    let mut counts = DatasetCounts {
        dataset: DATASET.into(),
        agency: ds.owner.to_string(),
        ..DatasetCounts::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(&export.path)
        .with_context(|| format!("cannot open {}", export.path.display()))?;
    // As `agent::source` reads a CSV export: trimmed header, trimmed cells, empty cells absent.
    let header: Vec<String> = rdr
        .headers()?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    require_columns(&p, &header, &export.path)?;
    let mut rec = csv::StringRecord::new();
    while (counts.accepted as usize) < records {
        let want = (records - counts.accepted as usize).min(BATCH);
        if !rdr.read_record(&mut rec)? {
            bail!(
                "the synthetic export ran out after {} stored records; generate more rows",
                counts.accepted
            );
        }
        counts.rows += 1;
        let row = Row {
            line: rec.position().map_or(0, |p| p.line()),
            cells: header
                .iter()
                .zip(rec.iter())
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(h, v)| (h.clone(), v.trim().to_string()))
                .collect::<HashMap<_, _>>(),
        };
        match p.record(&row) {
            Ok(r) => batch.push(r),
            Err(_) => counts.agent_rejected += 1,
        }
        if batch.len() >= want {
            gw.push(&rt, ds, std::mem::take(&mut batch), &mut counts)?;
        }
    }
    if counts.gateway_rejected > 0 {
        bail!(
            "the gateway refused {} pseudonymised records; the agent and gateway disagree",
            counts.gateway_rejected
        );
    }
    Ok(counts)
}

/// The bench agreement: the shipped SV agreement's first purpose with its police row filter
/// removed and k = 1, under its own agreement and purpose ids. Fails if the shipped text no
/// longer has what is edited.
fn write_every_agreement(dir: &Path) -> Result<()> {
    let Some((_, sv)) = gateway::policy::EMBEDDED_AGREEMENTS
        .iter()
        .find(|(n, _)| *n == "sv-sna.toml")
    else {
        bail!("the compiled-in agreements have no sv-sna.toml");
    };
    let first_purpose_end = sv
        .match_indices("\n[[purpose]]")
        .nth(1)
        .map_or(sv.len(), |(i, _)| i);
    let mut text = sv[..first_purpose_end].to_string();
    let edits: [(&str, String); 4] = [
        (
            "id = \"SKP-ISA-SV-01\"",
            format!("id = \"{EVERY_AGREEMENT}\""),
        ),
        (
            "id = \"serious-violence-sna\"",
            format!("id = \"{EVERY_PURPOSE}\""),
        ),
        ("\nk = 5\n", "\nk = 1\n".into()),
        (
            "\nfilter = [{ field = \"ho_offence_code\"",
            "\n# no filter: every record\n#".into(),
        ),
    ];
    for (from, to) in edits {
        if text.matches(from).count() != 1 {
            bail!(
                "sv-sna.toml no longer has exactly one `{}`; update the bench agreement edits in bench/src/extract.rs",
                from.trim()
            );
        }
        text = text.replacen(from, &to, 1);
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("bench-every-record.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A line of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> Result<u64> {
    let text =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("/proc/self/status has no {field} line"))
}

/// Resets this process's peak RSS to its current RSS (Linux ≥ 4.0); false if not allowed.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn describe(w: &WorkerReport, records: usize) -> String {
    let mut s = format!(
        "store open {:.2} s, RSS {:.0} MiB",
        w.open_secs,
        mib(w.rss_open_kib as f64)
    );
    for (i, p) in w.passes.iter().enumerate() {
        s += &format!(
            "; pass {}: {:.2} s = {} records/s, {} rows, {:.1} MB, peak RSS {:.0} MiB",
            i + 1,
            p.secs,
            thousands(records as f64 / p.secs),
            thousands(p.rows as f64),
            p.bytes as f64 / 1e6,
            mib(p.peak_kib as f64)
        );
    }
    s
}

impl WorkerReport {
    /// The report as JSON (what a worker prints).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "rss_start_kib": self.rss_start_kib,
            "open_secs": self.open_secs,
            "rss_open_kib": self.rss_open_kib,
            "peak_open_kib": self.peak_open_kib,
            "records": self.records,
            "peak_reset": self.peak_reset,
            "linker_nodes": self.linker_nodes,
            "read_only_secs": self.read_only_secs,
            "passes": self.passes.iter().map(|p| serde_json::json!({
                "secs": p.secs,
                "peak_kib": p.peak_kib,
                "rss_after_kib": p.rss_after_kib,
                "rows": p.rows,
                "suppressed_rows": p.suppressed_rows,
                "bytes": p.bytes,
                "sha256": p.sha256,
            })).collect::<Vec<_>>(),
        })
    }

    /// Reads what [`WorkerReport::to_json`] wrote.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let u = |v: &serde_json::Value, k: &str| {
            v[k].as_u64()
                .with_context(|| format!("worker report: {k} is not a count"))
        };
        let f = |v: &serde_json::Value, k: &str| {
            v[k].as_f64()
                .with_context(|| format!("worker report: {k} is not a number"))
        };
        let mut passes = Vec::new();
        for p in v["passes"].as_array().into_iter().flatten() {
            passes.push(Pass {
                secs: f(p, "secs")?,
                peak_kib: u(p, "peak_kib")?,
                rss_after_kib: u(p, "rss_after_kib")?,
                rows: u(p, "rows")?,
                suppressed_rows: u(p, "suppressed_rows")?,
                bytes: u(p, "bytes")?,
                sha256: p["sha256"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if passes.len() != 2 {
            bail!("worker report: {} passes, expected 2", passes.len());
        }
        Ok(Self {
            scenario: v["scenario"].as_str().unwrap_or_default().to_owned(),
            rss_start_kib: u(v, "rss_start_kib")?,
            open_secs: f(v, "open_secs")?,
            rss_open_kib: u(v, "rss_open_kib")?,
            peak_open_kib: u(v, "peak_open_kib")?,
            records: u(v, "records")?,
            peak_reset: v["peak_reset"].as_bool().unwrap_or(false),
            passes,
            linker_nodes: u(v, "linker_nodes")?,
            read_only_secs: v["read_only_secs"].as_f64().unwrap_or(0.0),
        })
    }
}

/// Medians of one scenario over its runs.
struct Medians {
    secs: [f64; 2],
    peak_mib: [f64; 2],
    rows: u64,
    suppressed: u64,
    bytes: u64,
    open_secs: f64,
    rss_start_mib: f64,
    rss_open_mib: f64,
    peak_open_mib: f64,
    linker_nodes: u64,
    read_only_secs: f64,
    runs_secs: [Vec<f64>; 2],
}

impl Medians {
    fn of(ws: &[WorkerReport]) -> Self {
        let m = |f: &dyn Fn(&WorkerReport) -> f64| median(ws.iter().map(f).collect());
        let pass = |i: usize, f: &dyn Fn(&Pass) -> f64| {
            median(ws.iter().filter_map(|w| w.passes.get(i)).map(f).collect())
        };
        let secs = |i: usize| -> Vec<f64> {
            ws.iter()
                .filter_map(|w| w.passes.get(i))
                .map(|p| p.secs)
                .collect()
        };
        Self {
            secs: [pass(0, &|p| p.secs), pass(1, &|p| p.secs)],
            peak_mib: [
                pass(0, &|p| mib(p.peak_kib as f64)),
                pass(1, &|p| mib(p.peak_kib as f64)),
            ],
            rows: pass(0, &|p| p.rows as f64) as u64,
            suppressed: pass(0, &|p| p.suppressed_rows as f64) as u64,
            bytes: pass(0, &|p| p.bytes as f64) as u64,
            open_secs: m(&|w| w.open_secs),
            rss_start_mib: m(&|w| mib(w.rss_start_kib as f64)),
            rss_open_mib: m(&|w| mib(w.rss_open_kib as f64)),
            peak_open_mib: m(&|w| mib(w.peak_open_kib as f64)),
            linker_nodes: m(&|w| w.linker_nodes as f64) as u64,
            read_only_secs: m(&|w| w.read_only_secs),
            runs_secs: [secs(0), secs(1)],
        }
    }
}

impl Report {
    fn medians(&self, s: Scenario) -> Option<Medians> {
        self.workers
            .iter()
            .find(|(x, _)| *x == s)
            .filter(|(_, ws)| !ws.is_empty())
            .map(|(_, ws)| Medians::of(ws))
    }

    fn print(&self, load_before: Option<f64>, load_after: Option<f64>, in_process: bool) {
        let n = self.records as f64;
        let median_note = if self.runs > 1 {
            format!(", median of {} runs", self.runs)
        } else {
            String::new()
        };
        println!();
        println!(
            "extract benchmark: {} stored {DATASET} records (police source shape, {} synthetic people; store {:.0} MB on disk){median_note}",
            thousands(n),
            thousands(PEOPLE as f64),
            self.store_bytes as f64 / 1e6
        );
        println!(
            "load average (1 min) before/after: {} / {} on {} CPUs{}",
            load_before.map_or("?".into(), |l| format!("{l:.2}")),
            load_after.map_or("?".into(), |l| format!("{l:.2}")),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if in_process {
                "; measured in-process (RSS includes earlier phases)"
            } else {
                ""
            }
        );
        if let Some(l) = self.medians(Scenario::Limit) {
            println!(
                "store opened in {:.2} s: RSS {:.0} MiB with the store open ({:.0} MiB before opening; the store's indexes ≈ {:.0} MiB), peak while opening {:.0} MiB",
                l.open_secs,
                l.rss_open_mib,
                l.rss_start_mib,
                l.rss_open_mib - l.rss_start_mib,
                l.peak_open_mib
            );
        }
        let limit = self.medians(Scenario::Limit);
        let limit_secs = self.limit_secs();
        if let Some(l) = &limit {
            println!(
                "reading and decoding every record alone (nothing written): {:.2} s = {} records/s",
                l.read_only_secs,
                thousands(n / l.read_only_secs)
            );
        }
        println!("{:-<142}", "");
        println!(
            "{:<44} {:>9} {:>7} {:>6} {:>7} {:>9} {:>7} {:>9} {:>7} {:>7} {:>15} {:>9}",
            "",
            "rows",
            "k-supp",
            "MB",
            "1st s",
            "rec/s",
            "2nd s",
            "rec/s",
            "1st ÷",
            "2nd ÷",
            "peak RSS MiB",
            "growth"
        );
        for s in Scenario::ALL {
            let Some(m) = self.medians(s) else {
                continue;
            };
            println!(
                "{:<44} {:>9} {:>7} {:>6.0} {:>7.2} {:>9} {:>7.2} {:>9} {:>7.2} {:>7.2} {:>7.0} / {:<5.0} {:>+9.0}",
                s.label(),
                thousands(m.rows as f64),
                thousands(m.suppressed as f64),
                m.bytes as f64 / 1e6,
                m.secs[0],
                thousands(n / m.secs[0]),
                m.secs[1],
                thousands(n / m.secs[1]),
                m.secs[0] / limit_secs,
                m.secs[1] / limit_secs,
                m.peak_mib[0],
                m.peak_mib[1],
                m.peak_mib[0].max(m.peak_mib[1]) - m.rss_open_mib
            );
        }
        println!("{:-<142}", "");
        println!(
            "1st = first extract of a fresh gateway process (builds the linker from the store); 2nd = the next one (linker in step); for the limit, two identical passes"
        );
        println!(
            "rec/s = stored records per second (every record is read; the SV filter admits some); ÷ = time ÷ the limit's time ({limit_secs:.2} s, median of its passes)"
        );
        println!(
            "peak RSS = VmHWM of the worker process during the 1st / 2nd pass (reset after the store was open); growth = the higher peak − RSS with the store open"
        );
        if let Some(m) = self.medians(Scenario::Every) {
            println!(
                "linkers after the extracts: {} person roles",
                thousands(m.linker_nodes as f64)
            );
        }
    }

    /// The limit's time: median of both passes of every run.
    fn limit_secs(&self) -> f64 {
        let secs: Vec<f64> = self
            .workers
            .iter()
            .filter(|(s, _)| *s == Scenario::Limit)
            .flat_map(|(_, ws)| ws.iter().flat_map(|w| w.passes.iter().map(|p| p.secs)))
            .collect();
        median(secs)
    }

    fn json(&self) -> serde_json::Value {
        let n = self.records as f64;
        let limit_secs = self.limit_secs();
        let read_only = self
            .medians(Scenario::Limit)
            .map_or(f64::NAN, |l| l.read_only_secs);
        let scenarios: serde_json::Map<String, serde_json::Value> = Scenario::ALL
            .iter()
            .filter_map(|s| self.medians(*s).map(|m| (*s, m)))
            .map(|(s, m)| {
                (
                    s.name().to_string(),
                    serde_json::json!({
                        "rows": m.rows,
                        "suppressed_rows": m.suppressed,
                        "bytes": m.bytes,
                        "first_secs": crate::round3(m.secs[0]),
                        "first_records_per_s": (n / m.secs[0]).round(),
                        "second_secs": crate::round3(m.secs[1]),
                        "second_records_per_s": (n / m.secs[1]).round(),
                        "first_ratio_to_limit": crate::round3(m.secs[0] / limit_secs),
                        "second_ratio_to_limit": crate::round3(m.secs[1] / limit_secs),
                        "peak_rss_first_mib": m.peak_mib[0].round(),
                        "peak_rss_second_mib": m.peak_mib[1].round(),
                        "rss_store_open_mib": m.rss_open_mib.round(),
                        "rss_before_open_mib": m.rss_start_mib.round(),
                        "peak_rss_open_mib": m.peak_open_mib.round(),
                        "store_open_secs": crate::round3(m.open_secs),
                        "linker_nodes": m.linker_nodes,
                        "runs_first_secs": m.runs_secs[0].iter().map(|x| crate::round3(*x)).collect::<Vec<_>>(),
                        "runs_second_secs": m.runs_secs[1].iter().map(|x| crate::round3(*x)).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "bench": "extract",
            "dataset": DATASET,
            "records": self.records,
            "people": PEOPLE,
            "runs": self.runs,
            "setup_secs": crate::round3(self.setup_secs),
            "store_bytes": self.store_bytes,
            "limit_secs": crate::round3(limit_secs),
            "read_only_secs": crate::round3(read_only),
            "scenarios": scenarios,
        })
    }
}

/// `bench extract-worker`: one measurement, its report printed as one JSON line.
pub fn run_worker(
    data: &Path,
    work: &Path,
    scenario: Scenario,
    policy_dir: Option<PathBuf>,
) -> Result<()> {
    let report = worker(data, work, scenario, policy_dir.as_deref())?;
    println!("{}", report.to_json());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_agreement_loads_and_admits_every_record() -> Result<()> {
        let dir = tempfile::tempdir()?;
        write_every_agreement(dir.path())?;
        let catalog = Catalog::embedded()?;
        let policy = Policy::load(Some(dir.path()), &catalog, time::OffsetDateTime::now_utc())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let a = policy.agreement(EVERY_AGREEMENT).context("agreement")?;
        let p = a
            .purposes
            .iter()
            .find(|p| p.id == EVERY_PURPOSE)
            .context("purpose")?;
        assert_eq!(p.disclosure.k, 1);
        assert_eq!(a.purposes.len(), 1);
        Ok(())
    }

    #[test]
    fn small_extract_runs_every_scenario_in_process() -> Result<()> {
        let records = 2000;
        let report = run(records, 1, true, None)?;
        let get = |s: Scenario| {
            report
                .workers
                .iter()
                .find(|(x, _)| *x == s)
                .and_then(|(_, w)| w.first().cloned())
                .context("scenario missing")
        };
        let limit = get(Scenario::Limit)?;
        let every = get(Scenario::Every)?;
        let sv = get(Scenario::Sv)?;
        let dhr = get(Scenario::Dhr)?;
        for w in [&limit, &every, &sv, &dhr] {
            assert_eq!(w.records, records as u64, "{}", w.scenario);
            assert_eq!(w.passes.len(), 2);
            assert!(w.passes.iter().all(|p| p.bytes > 0 && p.secs > 0.0));
        }
        assert_eq!(limit.passes[0].rows, records as u64);
        assert_eq!(
            every.passes[0].rows, records as u64,
            "k = 1 keeps every row"
        );
        assert_eq!(every.passes[0].suppressed_rows, 0);
        assert_eq!(dhr.passes[0].rows, records as u64, "no quasi-identifiers");
        assert!(sv.passes[0].rows + sv.passes[0].suppressed_rows < records as u64);
        // The second pass writes the same file: the same people get the same ids.
        for w in [&limit, &every, &sv, &dhr] {
            assert_eq!(w.passes[0].sha256, w.passes[1].sha256, "{}", w.scenario);
        }
        assert!(every.linker_nodes > 0);
        Ok(())
    }
}
