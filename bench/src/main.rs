//! `bench`: measures the gateway's durable ingest end to end (the real `gateway` binary over
//! mutual TLS) against two baselines in one run: a bare tonic server over the same TLS that only
//! counts records, and raw sled 0.34 inserts of the same records. `bench policy`, `bench audit`
//! and `bench extract` measure policy decisions, the audit log and linked extracts, each beside
//! its limit in the same run; `bench linkage` scores the gateway's exact linkage against the
//! synthetic data's hidden truth; `bench load` runs concurrent agents and analysts against a
//! real gateway for a bounded time and reports latencies, errors and memory; `bench pair`
//! writes two agencies' person files from one synthetic population for comparing fuzzy linkers
//! (`scripts/linkage-compare.sh`).
//!
//! Build both binaries in the same profile first: `cargo build --release -p gateway -p bench`,
//! then `./target/release/bench ingest --records 200000`.

#![forbid(unsafe_code)]

mod audit;
mod extract;
mod ingest;
mod linkage;
mod load;
mod pair;
mod pair_link;
mod policy;
mod procfs;
mod workload;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ingest::{Setup, SledKeys, Timed};
use std::time::Instant;
use workload::Workload;

/// Benchmarks of the Safer Kingston Partnership gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Durable ingest through the real gateway vs bare tonic mTLS vs raw sled.
    Ingest {
        /// Records to send in each measurement.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Records per IngestBatch (and per sled::Batch).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Dataset of the synthetic records.
        #[arg(long, default_value = "police_asb_incident")]
        dataset: String,
        /// Repeat each measurement this many times and report the median.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Also measure raw sled with the gateway's sled mode and with the gateway's key layout
        /// (record + record-key index + token index per record, with the index lookup).
        #[arg(long)]
        sled_variants: bool,
    },
    /// Policy decisions in a release (filter + transforms) vs reading the records with no policy.
    Policy {
        /// Stored records to release.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Repeat each measurement this many times and report the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A linked record extract of stored records to CSV (first with the linker built from the
    /// store, then in step) vs reading the records and writing CSV with no policy or linkage.
    Extract {
        /// Stored `police_crime` records to extract.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Repeat each measurement this many times and report the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Measure in this process instead of one child process per measurement (peak RSS then
        /// includes building the store).
        #[arg(long)]
        in_process: bool,
        /// Keep the store (and the bench agreement) in this directory and reuse it on later
        /// runs with the same --records, instead of building it in a temporary directory.
        #[arg(long)]
        keep: Option<std::path::PathBuf>,
    },
    /// One measurement of `bench extract` in its own process (run by `bench extract`).
    #[command(hide = true)]
    ExtractWorker {
        /// The store's data directory.
        #[arg(long)]
        data: std::path::PathBuf,
        /// Directory for the audit log, the release registry and spools.
        #[arg(long)]
        work: std::path::PathBuf,
        /// What to measure.
        #[arg(long, value_enum)]
        scenario: extract::Scenario,
        /// Agreements directory (default: the compiled-in agreements).
        #[arg(long)]
        policy_dir: Option<std::path::PathBuf>,
    },
    /// Exact linkage of synthetic source data of all five agencies scored against the hidden
    /// truth: pairwise precision, recall and F1, overall and per agency pair.
    Linkage {
        /// Size of the synthetic population.
        #[arg(long, default_value_t = 1000)]
        persons: usize,
        /// Random seed of the population and exports.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rows per dataset (default: realistic volumes for the population over one year).
        #[arg(long)]
        rows: Option<usize>,
        /// Match-weight threshold of the fuzzy configurations.
        #[arg(long, default_value_t = linkage::DEFAULT_THRESHOLD)]
        threshold: f64,
        /// Records of police_crime pushed only after a fuzzy linker is built, to time bringing
        /// it up to date (0: skip).
        #[arg(long, default_value_t = 1000)]
        incremental: usize,
    },
    /// Our fuzzy linkage on `bench pair`'s files: agent-side encoding and gateway matching
    /// timed apart (medians), predicted cross-file pairs written for `compare.py`.
    PairLink {
        /// Directory holding `a.csv` and `b.csv`.
        #[arg(long)]
        data: std::path::PathBuf,
        /// Where to write the predicted pairs (`a_rec_id,b_rec_id`).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Timed runs (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Match-weight threshold (default: the matcher's).
        #[arg(long)]
        threshold: Option<f64>,
        /// Also encode and compare the postcode (the catalog's demo recipes carry none).
        #[arg(long)]
        postcode: bool,
    },
    /// Two agencies' person files (police `a.csv`, council `b.csv`) from one synthetic
    /// population through the agent's identifier-error model, with the hidden `true_id`, for
    /// comparing fuzzy linkers (`scripts/linkage-compare.sh`). Prints counts, never rows.
    Pair {
        /// Directory to write `a.csv` and `b.csv` into (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Rows in each file.
        #[arg(long, default_value_t = 5000)]
        persons: usize,
        /// Share of each file's people who are also in the other file (0 to 1).
        #[arg(long, default_value_t = 0.5)]
        overlap: f64,
        /// Random seed of the population and the recording errors.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Load test: concurrent agents streaming ingest batches and analysts extracting against a
    /// real gateway over loopback mutual TLS, bounded in time and calls; p50/p90/p99 latency per
    /// kind of call, errors by status code (RESOURCE_EXHAUSTED counted apart as rate-limited),
    /// the gateway's peak RSS. Exits non-zero if any call failed otherwise.
    Load {
        /// Agent tasks streaming ingest batches (dealt over the five agencies' certificates).
        #[arg(long, default_value_t = 25)]
        agents: usize,
        /// Analyst tasks looping extracts (and a few aggregates and agreement lists).
        #[arg(long, default_value_t = 10)]
        analysts: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Records per ingest batch (one batch per Ingest stream).
        #[arg(long, default_value_t = 1000)]
        records_per_batch: usize,
        /// Stop once this many calls have started, even before --secs.
        #[arg(long, default_value_t = 1_000_000)]
        max_requests: u64,
        /// A call taking longer than this counts as an error.
        #[arg(long, default_value_t = 120)]
        call_timeout_secs: u64,
        /// Print the table to stderr and a JSON report to stdout.
        #[arg(long)]
        json: bool,
    },
    /// Durable audit appends (1, 8, 64 writers) and offline verification vs raw SHA-256.
    Audit {
        /// Appends per measurement with 8 and 64 writers (a tenth of it with 1 writer).
        #[arg(long, default_value_t = 200_000)]
        appends: usize,
        /// Entries in the export that is verified.
        #[arg(long, default_value_t = 1_000_000)]
        verify_entries: usize,
        /// Repeat each measurement this many times and report the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    gateway::tls::install_crypto_provider();
    let result = match cli.command {
        Command::Ingest {
            records,
            batch,
            dataset,
            runs,
            sled_variants,
        } => run_ingest(records, batch, &dataset, runs, sled_variants),
        Command::Policy { records, runs } => policy::run(records, runs),
        Command::Extract {
            records,
            runs,
            in_process,
            keep,
        } => extract::run(records, runs, in_process, keep.as_deref()).map(|_| ()),
        Command::ExtractWorker {
            data,
            work,
            scenario,
            policy_dir,
        } => extract::run_worker(&data, &work, scenario, policy_dir),
        Command::Linkage {
            persons,
            seed,
            rows,
            threshold,
            incremental,
        } => linkage::run(persons, seed, rows, threshold, incremental),
        Command::PairLink {
            data,
            out,
            runs,
            threshold,
            postcode,
        } => pair_link::run(&data, &out, runs, threshold, postcode),
        Command::Pair {
            out,
            persons,
            overlap,
            seed,
        } => pair::run(&out, persons, overlap, seed),
        Command::Audit {
            appends,
            verify_entries,
            runs,
        } => audit::run(appends, verify_entries, runs),
        Command::Load {
            agents,
            analysts,
            secs,
            records_per_batch,
            max_requests,
            call_timeout_secs,
            json,
        } => load::run(&load::Options {
            agents,
            analysts,
            secs,
            records_per_batch,
            max_requests,
            call_timeout: std::time::Duration::from_secs(call_timeout_secs.max(1)),
            json,
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The figures of every run of one measurement.
#[derive(Default)]
struct Series {
    runs: Vec<Timed>,
}

impl Series {
    fn rps(&self) -> f64 {
        median(self.runs.iter().map(|t| t.rps).collect())
    }
    fn secs(&self) -> f64 {
        median(self.runs.iter().map(|t| t.secs).collect())
    }
    fn peak_rss_mib(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|t| t.peak_rss_kib)
            .map(|k| k as f64 / 1024.0)
            .collect();
        (!v.is_empty()).then(|| median(v))
    }
    fn server_cpu(&self) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|t| t.server_cpu).collect();
        (!v.is_empty()).then(|| median(v))
    }
    fn bench_cpu(&self) -> f64 {
        median(self.runs.iter().map(|t| t.bench_cpu).collect())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "records_per_s": self.rps().round(),
            "secs": round3(self.secs()),
            "peak_rss_mib": self.peak_rss_mib().map(|m| m.round()),
            "server_cpu_s": self.server_cpu().map(round3),
            "bench_cpu_s": round3(self.bench_cpu()),
            "runs_records_per_s": self.runs.iter().map(|t| t.rps.round()).collect::<Vec<_>>(),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `1234567.8` → `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn describe(t: &Timed) -> String {
    let mut s = format!("{} records/s ({:.2} s)", thousands(t.rps), t.secs);
    if let Some(k) = t.peak_rss_kib {
        s += &format!(", peak RSS {:.0} MiB", k as f64 / 1024.0);
    }
    if let Some(c) = t.server_cpu {
        s += &format!(", gateway CPU {c:.2} s");
        let top: Vec<String> = t
            .server_threads
            .iter()
            .take(4)
            .map(|(n, s)| format!("{n} {s:.2}"))
            .collect();
        if !top.is_empty() {
            s += &format!(" [{}]", top.join(", "));
        }
    }
    s += &format!(", bench CPU {:.2} s", t.bench_cpu);
    s
}

/// `target/<profile>` hint for the build command.
fn build_hint(exe: &std::path::Path) -> &'static str {
    if exe
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "release")
    {
        "cargo build --release -p gateway -p bench"
    } else {
        "cargo build -p gateway -p bench"
    }
}

/// The `gateway` binary next to this one (both built in the same profile).
fn gateway_exe() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running bench executable")?;
    let gateway_exe = exe.with_file_name(format!("gateway{}", std::env::consts::EXE_SUFFIX));
    if !gateway_exe.is_file() {
        bail!(
            "the gateway binary is missing at {}; build it next to bench with `{}` (run from the workspace root)",
            gateway_exe.display(),
            build_hint(&exe)
        );
    }
    Ok(gateway_exe)
}

/// The 1-minute load average (the machine is shared: figures drift with load).
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn run_ingest(
    records: usize,
    batch: usize,
    dataset: &str,
    runs: usize,
    sled_variants: bool,
) -> Result<()> {
    let load_before = loadavg();
    if records == 0 || batch == 0 || runs == 0 {
        bail!("--records, --batch and --runs must be at least 1");
    }
    let gateway_exe = gateway_exe()?;
    let scratch = tempfile::Builder::new().prefix("skp-bench-").tempdir()?;
    let pki_dir = scratch.path().join("pki");
    gateway::pki::make_dev_pki(&pki_dir, &gateway::pki::DevPkiOptions::default())?;
    let gateway_cfg = gateway::config::GatewayConfig::load(&pki_dir.join("gateway.toml"))?;
    let catalog = gateway_cfg.load_catalog()?;
    let Some(ds) = catalog.dataset(dataset) else {
        let names: Vec<&str> = catalog.datasets().map(|d| d.name.as_str()).collect();
        bail!(
            "unknown dataset {dataset:?}; the catalog has: {}",
            names.join(", ")
        );
    };
    let agent_cfg = agent::config::AgentConfig::load(
        &pki_dir
            .join("agents")
            .join(format!("{}.toml", ds.owner.as_str())),
    )?;
    let key = agent_cfg.linkage_key()?;

    let t0 = Instant::now();
    let work = Workload::make(ds, &key, records, batch)?;
    eprintln!(
        "generated {} records of {} in {} batches in {:.1} s (not timed)",
        thousands(work.records as f64),
        ds.name,
        work.batches.len(),
        t0.elapsed().as_secs_f64()
    );
    let encoded = work.encoded_records();

    let setup = Setup {
        pki: pki_dir,
        gateway_cfg,
        agent_cfg,
        gateway_exe,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let mut gw1 = Series::default();
    let mut gw2 = Series::default();
    let mut a1 = Series::default();
    let mut a2 = Series::default();
    let mut sled_seq = Series::default();
    let mut sled_rand = Series::default();
    let layout = |lookup, key_index, token_index| SledKeys::GatewayLayout {
        lookup,
        key_index,
        token_index,
    };
    let mut extra: Vec<(&str, SledKeys, bool, Series)> = if sled_variants {
        [
            (
                "raw sled, sequential keys, gateway mode",
                SledKeys::Sequential,
                true,
            ),
            ("raw sled, gateway key layout", SledKeys::GATEWAY, false),
            (
                "raw sled, gateway key layout, gateway mode",
                SledKeys::GATEWAY,
                true,
            ),
            (
                "  same, without the index lookup",
                layout(false, true, true),
                true,
            ),
            (
                "  same, without the token index",
                layout(true, true, false),
                true,
            ),
            (
                "  same, records only (no lookup, no indexes)",
                layout(false, false, false),
                true,
            ),
        ]
        .into_iter()
        .map(|(n, k, ht)| (n, k, ht, Series::default()))
        .collect()
    } else {
        Vec::new()
    };
    let mut gateway_runs = 0usize;
    for r in 0..runs {
        let tag = if runs > 1 {
            format!("run {}/{runs}: ", r + 1)
        } else {
            String::new()
        };
        for (streams, series) in [(1usize, &mut gw1), (2, &mut gw2)] {
            let t = rt.block_on(ingest::gateway(&setup, &work, streams, gateway_runs))?;
            gateway_runs += 1;
            println!(
                "{tag}gateway durable ingest ({streams} stream{}): {}",
                if streams == 1 { "" } else { "s" },
                describe(&t)
            );
            series.runs.push(t);
        }
        for (streams, series) in [(1usize, &mut a1), (2, &mut a2)] {
            let t = rt.block_on(ingest::bare_tonic(&setup, &work, streams))?;
            println!(
                "{tag}baseline A, bare tonic mTLS ({streams} stream{}): {}",
                if streams == 1 { "" } else { "s" },
                describe(&t)
            );
            series.runs.push(t);
        }
        for (keys, series) in [
            (SledKeys::Sequential, &mut sled_seq),
            (SledKeys::Random, &mut sled_rand),
        ] {
            let t = ingest::raw_sled(
                scratch.path(),
                ds.name.as_str(),
                &encoded,
                batch,
                keys,
                false,
            )?;
            println!(
                "{tag}baseline B, raw sled ({} keys): {}",
                if keys == SledKeys::Random {
                    "random 32-byte"
                } else {
                    "sequential u64"
                },
                describe(&t)
            );
            series.runs.push(t);
        }
        for (name, keys, high_throughput, series) in extra.iter_mut() {
            let t = ingest::raw_sled(
                scratch.path(),
                ds.name.as_str(),
                &encoded,
                batch,
                *keys,
                *high_throughput,
            )?;
            println!("{tag}{name}: {}", describe(&t));
            series.runs.push(t);
        }
    }
    let load_after = loadavg();

    let median_note = if runs > 1 {
        format!(" (median of {runs} runs)")
    } else {
        String::new()
    };
    println!();
    println!(
        "ingest benchmark: {} records of {}, batches of {}, record {:.0} B encoded (batch {:.0} KiB){median_note}",
        thousands(records as f64),
        ds.name,
        thousands(batch as f64),
        work.record_bytes,
        work.batch_bytes / 1024.0
    );
    println!(
        "load average (1 min) before/after: {} / {} on {} CPUs",
        load_before.map_or("?".into(), |l| format!("{l:.2}")),
        load_after.map_or("?".into(), |l| format!("{l:.2}")),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:-<100}", "");
    let rss = |s: &Series| {
        s.peak_rss_mib()
            .map(|m| format!(", peak RSS {m:.0} MiB"))
            .unwrap_or_default()
    };
    let rows: [(&str, &Series); 6] = [
        ("gateway durable ingest (1 stream)", &gw1),
        ("gateway durable ingest (2 streams)", &gw2),
        ("baseline A, bare tonic mTLS (1 stream)", &a1),
        ("baseline A, bare tonic mTLS (2 streams)", &a2),
        ("baseline B, raw sled, sequential keys", &sled_seq),
        ("baseline B, raw sled, random keys", &sled_rand),
    ];
    let extra_rows = extra.iter().map(|(n, _, _, s)| (*n, s));
    for (name, s) in rows.into_iter().chain(extra_rows) {
        println!(
            "{:<42} {:>11} records/s  {:>7.2} s{}",
            format!("{name}:"),
            thousands(s.rps()),
            s.secs(),
            rss(s)
        );
    }
    let ratio = |a: &Series, b: &Series| a.rps() / b.rps();
    let ratios = [
        ("gateway / baseline A (1 stream)", ratio(&gw1, &a1)),
        ("gateway / baseline A (2 streams)", ratio(&gw2, &a2)),
        (
            "gateway (1 stream) / baseline B (sequential)",
            ratio(&gw1, &sled_seq),
        ),
        (
            "gateway (2 streams) / baseline B (sequential)",
            ratio(&gw2, &sled_seq),
        ),
    ];
    println!("{:-<100}", "");
    for (name, r) in ratios {
        println!("{:<46} {r:.2}", format!("{name}:"));
    }
    let json = serde_json::json!({
        "bench": "ingest",
        "dataset": ds.name.as_str(),
        "records": records,
        "batch": batch,
        "runs": runs,
        "record_encoded_bytes": round3(work.record_bytes),
        "batch_encoded_bytes": work.batch_bytes.round(),
        "gateway_1_stream": gw1.json(),
        "gateway_2_streams": gw2.json(),
        "baseline_a_1_stream": a1.json(),
        "baseline_a_2_streams": a2.json(),
        "baseline_b_sled_sequential": sled_seq.json(),
        "baseline_b_sled_random": sled_rand.json(),
        "ratio_gateway_1_to_a_1": round3(ratio(&gw1, &a1)),
        "ratio_gateway_2_to_a_2": round3(ratio(&gw2, &a2)),
        "ratio_gateway_1_to_b_seq": round3(ratio(&gw1, &sled_seq)),
        "ratio_gateway_2_to_b_seq": round3(ratio(&gw2, &sled_seq)),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sled_variants": extra
            .iter()
            .map(|(n, _, _, s)| (n.to_string(), s.json()))
            .collect::<serde_json::Map<_, _>>(),
    });
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }
}
