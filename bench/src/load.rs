//! `bench load`: a load test of a real `gateway serve` child process over loopback mutual TLS,
//! bounded in time and in calls. N agent tasks stream ingest batches with their agency's
//! certificate (the agent library's `connect` and `send`, one Ingest stream per batch, each agent
//! task on its own connection as separate agent processes would be) and M analyst tasks loop
//! extracts, a few aggregates and agreement lists, each analyst with its own JWT from the dev
//! identity provider. Every call's latency and outcome (by gRPC status code) is recorded.
//!
//! `RESOURCE_EXHAUSTED` is a configured limit of the gateway (`[limits]`), reported apart as
//! "rate-limited", and the caller backs off as the agent does (the agent's `push.backoff_ms`,
//! doubling, at most [`MAX_BACKOFF`]); any other failure is an error and the run fails. The
//! baseline, in the same run: gRPC health checks on the same listener over the same TLS, first
//! with the gateway idle, then every [`PROBE_EVERY`] during the load.
//!
//! Records are made once before the run (synthetic rows of each agency's datasets, pseudonymised
//! by the agent library); each send gives every record a fresh record-key token and recomputes
//! its content hash, so every batch carries new records (accepted, not duplicates) without
//! pseudonymising during the run. The gateway runs with the dev PKI's `gateway.toml`: the
//! default limits.

use crate::ingest::GatewayChild;
use crate::procfs::{self, CpuSnapshot};
use crate::thousands;
use crate::workload::Workload;
use anyhow::{Context, Result, bail};
use gateway::client::{Bearer, ClientConfig};
use prost::Message;
use sha2::{Digest, Sha256};
use sharing_proto::v1 as pb;
use sharing_proto::v1::agent_service_client::AgentServiceClient;
use sharing_proto::v1::analyst_service_client::AnalystServiceClient;
use skp_core::Dataset;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Longest back-off after a rate-limited call.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Pause after an error before the task's next call (errors fail the run anyway).
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// How often the probe task checks health during the load.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Health checks of the idle baseline.
const IDLE_CHECKS: usize = 200;
/// Batches made per dataset before the run; sends cycle through them with fresh record keys.
const POOL_BATCHES: usize = 4;
/// How often the gateway's RSS is sampled.
const RSS_EVERY: Duration = Duration::from_millis(250);
/// Agreement, purpose and fields of the serious-violence extract (coarse enough that
/// k-anonymity keeps most rows; as `tests/release.rs` asks).
const SV: (&str, &str) = ("SKP-ISA-SV-01", "serious-violence-sna");
const SV_FIELDS: [&str; 4] = [
    "police_crime.ho_offence_group",
    "police_crime.committed_from:year",
    "police_crime.victim_sex",
    "police_crime.suspect_sex",
];
const REOFF: (&str, &str) = ("SKP-ISA-REOFF-01", "reoffending-iom-cohort");
/// The dataset the analysts release: its owner's agent tasks send it first.
const RELEASED_DATASET: &str = "police_crime";
/// Subjects of the analysts' JWTs are `<prefix>NN`, all of agency rbk-council.
const ANALYST_PREFIX: &str = "load-analyst-";

/// What `bench load` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Agent tasks, dealt round-robin over the five agencies.
    pub agents: usize,
    /// Analyst tasks, each with its own identity.
    pub analysts: usize,
    /// Seconds of load.
    pub secs: u64,
    /// Records in each ingest batch.
    pub records_per_batch: usize,
    /// Most calls all tasks together start (the probe's health checks not counted).
    pub max_requests: u64,
    /// Longest a single call may take before it counts as an error.
    pub call_timeout: Duration,
    /// Print the table to stderr and a JSON report to stdout.
    pub json: bool,
}

/// Runs the load test, prints the report and fails if any call failed other than by a
/// configured limit, or a kind of call never succeeded.
pub fn run(opts: &Options) -> Result<()> {
    if opts.agents + opts.analysts == 0 {
        bail!("--agents and --analysts are both 0: nothing to run");
    }
    if opts.secs == 0 || opts.max_requests == 0 || opts.records_per_batch == 0 {
        bail!("--secs, --max-requests and --records-per-batch must be at least 1");
    }
    let load_before = crate::loadavg();
    let gateway_exe = crate::gateway_exe()?;
    let scratch = tempfile::Builder::new()
        .prefix("skp-bench-load-")
        .tempdir()?;
    let pki_dir = scratch.path().join("pki");
    let pki = gateway::pki::make_dev_pki(&pki_dir, &gateway::pki::DevPkiOptions::default())?;
    let gateway_cfg = gateway::config::GatewayConfig::load(&pki.gateway_config)?;
    let catalog = gateway_cfg.load_catalog()?;

    // Agent task i: agency i mod 5; its k-th task of that agency sends the agency's datasets in
    // turn (the released dataset first).
    let mut agencies = Vec::new();
    for (id, path) in &pki.agent_configs {
        let cfg = agent::config::AgentConfig::load(path)?;
        let mut datasets: Vec<&Dataset> = catalog
            .datasets()
            .filter(|d| d.owner.as_str() == id.as_str())
            .collect();
        datasets.sort_by_key(|d| (d.name.as_str() != RELEASED_DATASET, d.name.to_string()));
        if datasets.is_empty() {
            bail!("the catalog has no dataset owned by {id}");
        }
        agencies.push((cfg, datasets));
    }
    let key = agencies[0].0.linkage_key()?;
    let t0 = Instant::now();
    let mut pools: HashMap<String, Arc<Vec<pb::IngestBatch>>> = HashMap::new();
    let mut plan = Vec::new();
    for i in 0..opts.agents {
        let (cfg, datasets) = &agencies[i % agencies.len()];
        let ds = datasets[(i / agencies.len()) % datasets.len()];
        if !pools.contains_key(ds.name.as_str()) {
            let n = POOL_BATCHES * opts.records_per_batch;
            let w = Workload::make(ds, &key, n, opts.records_per_batch)?;
            pools.insert(ds.name.to_string(), Arc::new(w.batches));
        }
        plan.push((cfg.clone(), pools[ds.name.as_str()].clone()));
    }
    eprintln!(
        "made {} batches of {} records for {} datasets in {:.1} s (not timed)",
        pools.values().map(|p| p.len()).sum::<usize>(),
        thousands(opts.records_per_batch as f64),
        pools.len(),
        t0.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let log = pki_dir.join("gateway.log");
        let gw = GatewayChild::start(&gateway_exe, &pki.gateway_config, log.clone()).await?;
        let measured = measure(opts, &pki, &gw, plan).await;
        let stopped = gw.stop().await;
        let mut report = measured.with_context(|| format!("gateway log: {}", log.display()))?;
        if let Err(e) = stopped {
            report.stop_error = Some(format!("{e:#}"));
        }
        Ok::<_, anyhow::Error>(report)
    })?;
    let load_after = crate::loadavg();
    let json = report.json(opts, load_before, load_after);
    if opts.json {
        eprint!("{}", report.table(opts, load_before, load_after));
        println!("{json}");
    } else {
        print!("{}", report.table(opts, load_before, load_after));
    }
    let failures = report.failures();
    if !failures.is_empty() {
        bail!("the load test failed: {}", failures.join("; "));
    }
    Ok(())
}

/// The kinds of call measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// One Ingest stream carrying one batch, until the gateway's durable summary.
    IngestBatch,
    /// A linked record extract, until the last chunk (manifest.json) arrived.
    Extract,
    /// A counts table, until its manifest arrived.
    Aggregate,
    /// `ListAgreements`.
    Agreements,
    /// Health check on the same listener during the load.
    HealthUnderLoad,
    /// Health check with the gateway idle, before the load (the baseline).
    HealthIdle,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::IngestBatch,
        Kind::Extract,
        Kind::Aggregate,
        Kind::Agreements,
        Kind::HealthUnderLoad,
        Kind::HealthIdle,
    ];

    fn key(self) -> &'static str {
        match self {
            Kind::IngestBatch => "ingest_batch",
            Kind::Extract => "extract",
            Kind::Aggregate => "aggregate",
            Kind::Agreements => "agreements",
            Kind::HealthUnderLoad => "health_under_load",
            Kind::HealthIdle => "baseline_health_idle",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::IngestBatch => "ingest batch (durable ack)",
            Kind::Extract => "extract (SV / REOFF)",
            Kind::Aggregate => "aggregate (SV by ward, group)",
            Kind::Agreements => "list agreements",
            Kind::HealthUnderLoad => "health check, under load",
            Kind::HealthIdle => "baseline: health check, idle",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// Refused by a configured rule, named: a `[limits]` setting (`RESOURCE_EXHAUSTED`), or
    /// disclosure control over time (`disclosure.differencing`, `PERMISSION_DENIED`: a table
    /// asked again when fewer than `min_cell` records changed since the last one).
    RateLimited(String),
    /// Anything else: the status code (or a bench-side failure) and the message.
    Error(String, String),
}

/// One call.
#[derive(Debug, Clone)]
struct Sample {
    kind: Kind,
    micros: u64,
    outcome: Outcome,
}

/// What one task did.
#[derive(Debug, Default)]
struct TaskLog {
    samples: Vec<Sample>,
    records_accepted: u64,
    release_bytes: u64,
}

impl TaskLog {
    fn push(&mut self, kind: Kind, started: Instant, outcome: Outcome) {
        self.samples.push(Sample {
            kind,
            micros: started.elapsed().as_micros() as u64,
            outcome,
        });
    }
}

/// Stops every task at the deadline or once `max_requests` calls have started.
#[derive(Debug)]
pub struct Bounds {
    deadline: Instant,
    left: AtomicU64,
}

impl Bounds {
    /// Bounds ending at `deadline` or after `calls` calls.
    pub fn new(deadline: Instant, calls: u64) -> Self {
        Self {
            deadline,
            left: AtomicU64::new(calls),
        }
    }

    /// Takes one call from the budget; `false` once the time or the calls are used up.
    pub fn take(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Whether the load still runs.
    pub fn running(&self) -> bool {
        Instant::now() < self.deadline && self.left.load(Ordering::Acquire) > 0
    }

    /// Sleeps `d`, or less if the load ends first.
    async fn sleep(&self, d: Duration) {
        let until = (Instant::now() + d).min(self.deadline);
        tokio::time::sleep_until(until.into()).await;
    }
}

/// The agent's retry back-off: doubles after each rate-limited call, resets after a success.
struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration) -> Self {
        let first = first.max(Duration::from_millis(10));
        Self { first, next: first }
    }
    fn reset(&mut self) {
        self.next = self.first;
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }
}

/// The outcome of a failed call.
pub fn classify(s: &Status) -> Outcome {
    if s.code() == Code::ResourceExhausted {
        Outcome::RateLimited(limit_name(s.message()))
    } else if s.code() == Code::PermissionDenied && s.message().contains(DIFFERENCING) {
        Outcome::RateLimited(DIFFERENCING.into())
    } else {
        Outcome::Error(format!("{:?}", s.code()), s.message().to_string())
    }
}

/// The rule refusing a table too close to an earlier one.
const DIFFERENCING: &str = "disclosure.differencing";

/// The `limits.*` setting a refusal names (`refused by limits.agency_calls_per_min: ...`).
fn limit_name(message: &str) -> String {
    message
        .find("limits.")
        .map(|i| {
            message[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect::<String>()
                .trim_end_matches('.')
                .to_string()
        })
        .unwrap_or_else(|| "(no setting named)".into())
}

/// Everything measured in one run.
#[derive(Debug, Default)]
struct Report {
    samples: Vec<Sample>,
    /// Seconds from the start of the load until the last task ended.
    elapsed: f64,
    records_accepted: u64,
    release_bytes: u64,
    agencies: usize,
    rss_before_kib: u64,
    rss_max_sampled_kib: u64,
    rss_end_kib: u64,
    peak_rss_kib: u64,
    gateway_cpu: f64,
    gateway_threads: Vec<(String, f64)>,
    bench_cpu: f64,
    stop_error: Option<String>,
}

/// Latency and outcome figures of one kind.
#[derive(Debug, Default)]
struct KindStats {
    calls: u64,
    ok: u64,
    rate_limited: u64,
    errors: u64,
    /// Latencies of successful calls, microseconds, sorted.
    ok_micros: Vec<u64>,
    errors_by_code: BTreeMap<String, u64>,
    rate_limited_by_limit: BTreeMap<String, u64>,
}

impl KindStats {
    fn pct_ms(&self, q: f64) -> Option<f64> {
        percentile(&self.ok_micros, q).map(|us| us as f64 / 1000.0)
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Report {
    fn stats(&self) -> BTreeMap<Kind, KindStats> {
        let mut out: BTreeMap<Kind, KindStats> = BTreeMap::new();
        for s in &self.samples {
            let k = out.entry(s.kind).or_default();
            k.calls += 1;
            match &s.outcome {
                Outcome::Ok => {
                    k.ok += 1;
                    k.ok_micros.push(s.micros);
                }
                Outcome::RateLimited(l) => {
                    k.rate_limited += 1;
                    *k.rate_limited_by_limit.entry(l.clone()).or_default() += 1;
                }
                Outcome::Error(code, _) => {
                    k.errors += 1;
                    *k.errors_by_code.entry(code.clone()).or_default() += 1;
                }
            }
        }
        for k in out.values_mut() {
            k.ok_micros.sort_unstable();
        }
        out
    }

    /// Distinct error messages (code: message), each with its count, most frequent first.
    fn error_messages(&self) -> Vec<(String, u64)> {
        let mut m: HashMap<String, u64> = HashMap::new();
        for s in &self.samples {
            if let Outcome::Error(code, msg) = &s.outcome {
                *m.entry(format!("{}: {code}: {msg}", s.kind.key()))
                    .or_default() += 1;
            }
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Why the run failed: errors, a kind that ran but never succeeded, an unclean stop.
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let stats = self.stats();
        let errors: u64 = stats.values().map(|k| k.errors).sum();
        if errors > 0 {
            let first = self
                .error_messages()
                .first()
                .map(|(m, n)| format!(" (most frequent: {m} ×{n})"))
                .unwrap_or_default();
            out.push(format!("{errors} call(s) failed{first}"));
        }
        for (kind, k) in &stats {
            if k.calls > 0 && k.ok == 0 {
                out.push(format!(
                    "no {} call succeeded ({} made)",
                    kind.label(),
                    k.calls
                ));
            }
        }
        if let Some(e) = &self.stop_error {
            out.push(format!("the gateway did not stop cleanly: {e}"));
        }
        out
    }

    fn table(&self, opts: &Options, load_before: Option<f64>, load_after: Option<f64>) -> String {
        use std::fmt::Write as _;
        let stats = self.stats();
        let mut t = String::new();
        let avg = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
        let _ = writeln!(
            t,
            "\nload test: {} agents ({} agencies), {} analysts, {} s (ran {:.1} s), ingest batches of {} records, at most {} calls",
            opts.agents,
            self.agencies.min(opts.agents),
            opts.analysts,
            opts.secs,
            self.elapsed,
            thousands(opts.records_per_batch as f64),
            thousands(opts.max_requests as f64)
        );
        let _ = writeln!(
            t,
            "load average (1 min) before/after: {} / {} on {} CPUs",
            avg(load_before),
            avg(load_after),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let _ = writeln!(t, "{:-<122}", "");
        let _ = writeln!(
            t,
            "{:<36} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "kind (latency of successful calls)",
            "calls",
            "ok",
            "rate-ltd",
            "errors",
            "ok/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        );
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        for kind in Kind::ALL {
            let Some(k) = stats.get(&kind) else { continue };
            let per_s = if kind == Kind::HealthIdle {
                "-".to_string()
            } else {
                format!("{:.1}", k.ok as f64 / self.elapsed.max(1e-9))
            };
            let _ = writeln!(
                t,
                "{:<36} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                kind.label(),
                thousands(k.calls as f64),
                thousands(k.ok as f64),
                thousands(k.rate_limited as f64),
                thousands(k.errors as f64),
                per_s,
                ms(k.pct_ms(0.50)),
                ms(k.pct_ms(0.90)),
                ms(k.pct_ms(0.99)),
                ms(k.pct_ms(1.0)),
            );
        }
        let _ = writeln!(t, "{:-<122}", "");
        let _ = writeln!(
            t,
            "ingest: {} records accepted durably ({} records/s); releases received: {:.1} MB",
            thousands(self.records_accepted as f64),
            thousands(self.records_accepted as f64 / self.elapsed.max(1e-9)),
            self.release_bytes as f64 / 1e6
        );
        let mib = |k: u64| k as f64 / 1024.0;
        let top: Vec<String> = self
            .gateway_threads
            .iter()
            .take(4)
            .map(|(n, s)| format!("{n} {s:.1}"))
            .collect();
        let _ = writeln!(
            t,
            "gateway: peak RSS {:.0} MiB (VmHWM; {:.0} MiB before the load, {:.0} MiB at the end); CPU {:.1} s = {:.2} cores [{}]; bench CPU {:.1} s",
            mib(self.peak_rss_kib),
            mib(self.rss_before_kib),
            mib(self.rss_end_kib),
            self.gateway_cpu,
            self.gateway_cpu / self.elapsed.max(1e-9),
            top.join(", "),
            self.bench_cpu
        );
        let mut limited: BTreeMap<&str, u64> = BTreeMap::new();
        for k in stats.values() {
            for (l, n) in &k.rate_limited_by_limit {
                *limited.entry(l).or_default() += n;
            }
        }
        let limited: Vec<String> = limited
            .iter()
            .map(|(l, n)| format!("{l} {}", thousands(*n as f64)))
            .collect();
        let _ = writeln!(
            t,
            "rate-limited or refused by rule (RESOURCE_EXHAUSTED by setting; disclosure.differencing): {}",
            if limited.is_empty() {
                "none".into()
            } else {
                limited.join(", ")
            }
        );
        let errors = self.error_messages();
        if errors.is_empty() {
            let _ = writeln!(t, "errors: none");
        } else {
            let _ = writeln!(t, "errors:");
            for (m, n) in errors.iter().take(8) {
                let _ = writeln!(t, "  {n} × {m}");
            }
        }
        if let Some(r) = self.ratios(&stats) {
            let _ = writeln!(t, "ratios to the idle health check (p50 / p99): {r}");
        }
        t
    }

    /// Each kind's p50 and p99 divided by the idle health check's.
    fn ratio_values(&self, stats: &BTreeMap<Kind, KindStats>) -> Vec<(Kind, f64, f64)> {
        let Some(base) = stats.get(&Kind::HealthIdle) else {
            return Vec::new();
        };
        let (Some(b50), Some(b99)) = (base.pct_ms(0.5), base.pct_ms(0.99)) else {
            return Vec::new();
        };
        Kind::ALL
            .iter()
            .filter(|k| **k != Kind::HealthIdle)
            .filter_map(|k| {
                let s = stats.get(k)?;
                Some((*k, s.pct_ms(0.5)? / b50, s.pct_ms(0.99)? / b99))
            })
            .collect()
    }

    fn ratios(&self, stats: &BTreeMap<Kind, KindStats>) -> Option<String> {
        let v = self.ratio_values(stats);
        (!v.is_empty()).then(|| {
            v.iter()
                .map(|(k, a, b)| format!("{} {a:.1} / {b:.1}", k.key()))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    fn json(
        &self,
        opts: &Options,
        load_before: Option<f64>,
        load_after: Option<f64>,
    ) -> serde_json::Value {
        let stats = self.stats();
        let r3 = |x: Option<f64>| x.map(crate::round3);
        let kinds: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|(kind, k)| {
                (
                    kind.key().to_string(),
                    serde_json::json!({
                        "calls": k.calls,
                        "ok": k.ok,
                        "rate_limited": k.rate_limited,
                        "errors": k.errors,
                        "ok_per_s": (*kind != Kind::HealthIdle)
                            .then(|| crate::round3(k.ok as f64 / self.elapsed.max(1e-9))),
                        "p50_ms": r3(k.pct_ms(0.50)),
                        "p90_ms": r3(k.pct_ms(0.90)),
                        "p99_ms": r3(k.pct_ms(0.99)),
                        "max_ms": r3(k.pct_ms(1.0)),
                        "errors_by_code": k.errors_by_code,
                        "rate_limited_by_limit": k.rate_limited_by_limit,
                    }),
                )
            })
            .collect();
        let ratios: serde_json::Map<String, serde_json::Value> = self
            .ratio_values(&stats)
            .into_iter()
            .map(|(k, a, b)| {
                (
                    k.key().to_string(),
                    serde_json::json!({"p50": crate::round3(a), "p99": crate::round3(b)}),
                )
            })
            .collect();
        let mib = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
        serde_json::json!({
            "bench": "load",
            "agents": opts.agents,
            "agencies": self.agencies.min(opts.agents),
            "analysts": opts.analysts,
            "secs": opts.secs,
            "elapsed_secs": crate::round3(self.elapsed),
            "records_per_batch": opts.records_per_batch,
            "max_requests": opts.max_requests,
            "calls": stats.iter().filter(|(k, _)| **k != Kind::HealthIdle && **k != Kind::HealthUnderLoad).map(|(_, k)| k.calls).sum::<u64>(),
            "errors": stats.values().map(|k| k.errors).sum::<u64>(),
            "rate_limited": stats.values().map(|k| k.rate_limited).sum::<u64>(),
            "kinds": kinds,
            "error_messages": self.error_messages().into_iter().take(20).map(|(m, n)| serde_json::json!({"message": m, "count": n})).collect::<Vec<_>>(),
            "records_accepted": self.records_accepted,
            "records_per_s": (self.records_accepted as f64 / self.elapsed.max(1e-9)).round(),
            "release_bytes": self.release_bytes,
            "gateway_peak_rss_mib": mib(self.peak_rss_kib),
            "gateway_rss_before_mib": mib(self.rss_before_kib),
            "gateway_rss_max_sampled_mib": mib(self.rss_max_sampled_kib),
            "gateway_rss_end_mib": mib(self.rss_end_kib),
            "gateway_cpu_s": crate::round3(self.gateway_cpu),
            "bench_cpu_s": crate::round3(self.bench_cpu),
            "ratios_to_idle_health": ratios,
            "stopped_cleanly": self.stop_error.is_none(),
            "failures": self.failures(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        })
    }
}

/// Connects everyone, measures the idle baseline, runs the load and collects the figures.
async fn measure(
    opts: &Options,
    pki: &gateway::pki::DevPki,
    gw: &GatewayChild,
    plan: Vec<(agent::config::AgentConfig, Arc<Vec<pb::IngestBatch>>)>,
) -> Result<Report> {
    let url = format!("https://localhost:{}", gw.addr.port());
    let mut report = Report {
        agencies: pki.agent_configs.len(),
        ..Default::default()
    };

    // Connections first (not timed): each agent task and each analyst its own, as separate
    // processes would have.
    let mut agents = Vec::with_capacity(plan.len());
    for (mut cfg, pool) in plan {
        cfg.gateway = url.clone();
        let client = agent::client::connect(&cfg)
            .await
            .with_context(|| format!("agent {} cannot connect", cfg.agency))?;
        agents.push((client, cfg.backoff, pool));
    }
    let ttl = time::Duration::seconds((opts.secs as i64).saturating_add(3600).min(86_400));
    let mut analysts = Vec::with_capacity(opts.analysts);
    for i in 0..opts.analysts {
        let sub = format!("{ANALYST_PREFIX}{:02}", i + 1);
        let roles = [gateway::jwt::Role::Analyst];
        let token = gateway::jwt::issue_dev_token(
            &pki.idp.key,
            &gateway::jwt::DevTokenRequest {
                agency: Some(gateway::pki::DEV_CLIENT_AGENCY),
                ttl,
                ..gateway::jwt::DevTokenRequest::new(&sub, &roles)
            },
        )?;
        let cfg = client_config(pki, &url, token);
        let (ch, bearer) = gateway::client::connect(&cfg)
            .await
            .with_context(|| format!("analyst {sub} cannot connect"))?;
        analysts.push(AnalystServiceClient::with_interceptor(ch, bearer));
    }
    let probe_cfg = client_config(pki, &url, "none".into());
    let (health_ch, _) = gateway::client::connect(&probe_cfg).await?;

    // Baseline: health checks with the gateway idle.
    let mut idle = TaskLog::default();
    let mut health = Health::new(health_ch.clone());
    for _ in 0..IDLE_CHECKS {
        let started = Instant::now();
        let outcome = match timed(opts.call_timeout, async { Ok(health.check().await) }).await {
            Ok(o) | Err(o) => o,
        };
        idle.push(Kind::HealthIdle, started, outcome);
    }
    report.rss_before_kib = procfs::rss_kib(gw.pid).unwrap_or(0);

    let gw_cpu = CpuSnapshot::take(&gw.pid.to_string());
    let bench_cpu = CpuSnapshot::take("self");
    let start = Instant::now();
    let bounds = Arc::new(Bounds::new(
        start + Duration::from_secs(opts.secs),
        opts.max_requests,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (client, backoff, pool)) in agents.into_iter().enumerate() {
        let b = bounds.clone();
        let timeout = opts.call_timeout;
        tasks.spawn(agent_task(n as u32, client, pool, backoff, b, timeout));
    }
    for (n, client) in analysts.into_iter().enumerate() {
        let b = bounds.clone();
        let timeout = opts.call_timeout;
        tasks.spawn(analyst_task(n, client, b, timeout));
    }
    {
        let b = bounds.clone();
        let timeout = opts.call_timeout;
        tasks.spawn(probe_task(Health::new(health_ch), b, timeout));
    }
    let pid = gw.pid;
    let sampler_bounds = bounds.clone();
    let sampler = tokio::spawn(async move {
        let mut max = 0u64;
        while sampler_bounds.running() {
            max = max.max(procfs::rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(RSS_EVERY).await;
        }
        max
    });

    // Every call has its own timeout, so the tasks end by deadline + call timeout.
    let grace = opts.call_timeout + Duration::from_secs(10);
    let all_done = Instant::now() + Duration::from_secs(opts.secs) + grace;
    let mut logs = vec![idle];
    let mut lost = 0usize;
    loop {
        match tokio::time::timeout_at(all_done.into(), tasks.join_next()).await {
            Ok(Some(Ok(log))) => logs.push(log),
            Ok(Some(Err(e))) => bail!("a load task failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                lost = tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    report.elapsed = start.elapsed().as_secs_f64();
    let (cpu, threads) = gw_cpu.since();
    report.gateway_cpu = cpu;
    report.gateway_threads = threads;
    report.bench_cpu = bench_cpu.since().0;
    report.rss_max_sampled_kib = sampler.await.unwrap_or(0);
    report.rss_end_kib = procfs::rss_kib(gw.pid).unwrap_or(0);
    report.peak_rss_kib = procfs::peak_rss_kib(gw.pid)?;
    for log in logs {
        report.samples.extend(log.samples);
        report.records_accepted += log.records_accepted;
        report.release_bytes += log.release_bytes;
    }
    if lost > 0 {
        report.samples.push(Sample {
            kind: Kind::IngestBatch,
            micros: 0,
            outcome: Outcome::Error(
                "BENCH".into(),
                format!("{lost} task(s) did not end within the call timeout after the deadline"),
            ),
        });
    }
    Ok(report)
}

fn client_config(pki: &gateway::pki::DevPki, url: &str, token: String) -> ClientConfig {
    ClientConfig {
        gateway: url.to_string(),
        ca: pki.dir.join("ca.pem"),
        token,
        pubkey: None,
        origin: None,
    }
}

/// Runs `f` with a timeout; a timeout is an error outcome.
async fn timed<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, Outcome>>,
) -> Result<T, Outcome> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(Outcome::Error(
            "CLIENT_TIMEOUT".into(),
            format!("no answer within {} s", timeout.as_secs()),
        )),
    }
}

/// One agent: an Ingest stream of one batch after the other, backing off when rate-limited.
async fn agent_task(
    agent_no: u32,
    mut client: AgentServiceClient<Channel>,
    pool: Arc<Vec<pb::IngestBatch>>,
    first_backoff: Duration,
    bounds: Arc<Bounds>,
    timeout: Duration,
) -> TaskLog {
    let mut log = TaskLog::default();
    let mut backoff = Backoff::new(first_backoff);
    let mut send_no = 0u64;
    while bounds.take() {
        let batch = rekey(&pool[send_no as usize % pool.len()], agent_no, send_no);
        send_no += 1;
        let n = batch.records.len() as u64;
        let started = Instant::now();
        let result = timed(timeout, async {
            agent::client::send(&mut client, vec![batch])
                .await
                .map_err(|s| classify(&s))
        })
        .await;
        let outcome = match result {
            Ok(s) if s.accepted == n => {
                log.records_accepted += n;
                Outcome::Ok
            }
            Ok(s) => Outcome::Error(
                "NOT_ACCEPTED".into(),
                format!(
                    "accepted {} of {n} records (duplicates {}, replaced {}, rejected {}){}",
                    s.accepted,
                    s.duplicates,
                    s.replaced,
                    s.rejected,
                    s.rejections
                        .first()
                        .map(|r| format!("; first rejection: field {:?}: {}", r.field, r.reason))
                        .unwrap_or_default()
                ),
            ),
            Err(o) => o,
        };
        pause_after(&outcome, &mut backoff, &bounds).await;
        log.push(Kind::IngestBatch, started, outcome);
    }
    log
}

/// Sleeps as a client does after an outcome: back-off when rate-limited, a short pause after
/// an error, nothing after a success.
async fn pause_after(outcome: &Outcome, backoff: &mut Backoff, bounds: &Bounds) {
    match outcome {
        Outcome::Ok => backoff.reset(),
        Outcome::RateLimited(_) => bounds.sleep(backoff.step()).await,
        Outcome::Error(..) => bounds.sleep(ERROR_PAUSE).await,
    }
}

/// The batch with a fresh record-key token per record (so new records, not duplicates) and the
/// content hash recomputed as the agent computes it.
pub fn rekey(batch: &pb::IngestBatch, agent_no: u32, send_no: u64) -> pb::IngestBatch {
    let mut b = batch.clone();
    b.batch_id = format!("load-{agent_no}-{send_no}");
    for r in b.records.iter_mut() {
        let mut h = Sha256::new();
        h.update(b"skp-bench-load-v1");
        h.update(agent_no.to_be_bytes());
        h.update(send_no.to_be_bytes());
        h.update(&r.record_key);
        r.record_key = h.finalize().to_vec();
        r.content_hash = skp_core::content::content_hash(
            &b.dataset,
            b.schema_version,
            &r.record_key,
            &r.persons,
            &r.values,
        )
        .to_vec();
    }
    b
}

/// What an analyst asks for, in turn.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Agreements,
    ExtractSv,
    ExtractReoff,
    Aggregate,
}

/// An analyst's cycle: mostly extracts, a table and an agreement list now and then. Analyst n
/// starts at position n, so they do not all ask the same thing at once.
const CYCLE: [Ask; 6] = [
    Ask::Agreements,
    Ask::ExtractSv,
    Ask::Aggregate,
    Ask::ExtractSv,
    Ask::ExtractReoff,
    Ask::ExtractSv,
];

type Analyst = AnalystServiceClient<InterceptedService<Channel, Bearer>>;

/// One analyst: asks, waits for the whole answer, asks again; backs off when rate-limited.
async fn analyst_task(
    analyst_no: usize,
    mut client: Analyst,
    bounds: Arc<Bounds>,
    timeout: Duration,
) -> TaskLog {
    let mut log = TaskLog::default();
    let mut backoff = Backoff::new(Duration::from_millis(500));
    let mut i = analyst_no;
    while bounds.take() {
        let ask = CYCLE[i % CYCLE.len()];
        i += 1;
        let started = Instant::now();
        let (kind, result) = match ask {
            Ask::Agreements => (
                Kind::Agreements,
                timed(timeout, async {
                    client
                        .list_agreements(pb::ListAgreementsRequest {})
                        .await
                        .map(|_| 0)
                        .map_err(|s| classify(&s))
                })
                .await,
            ),
            Ask::ExtractSv | Ask::ExtractReoff => {
                let req = if matches!(ask, Ask::ExtractSv) {
                    pb::ExtractRequest {
                        agreement: SV.0.into(),
                        purpose: SV.1.into(),
                        datasets: vec![RELEASED_DATASET.into()],
                        fields: SV_FIELDS.iter().map(|f| f.to_string()).collect(),
                    }
                } else {
                    pb::ExtractRequest {
                        agreement: REOFF.0.into(),
                        purpose: REOFF.1.into(),
                        datasets: vec![RELEASED_DATASET.into()],
                        fields: vec!["police_crime.committed_from:year".into()],
                    }
                };
                (
                    Kind::Extract,
                    timed(timeout, async {
                        let stream = client.extract(req).await.map_err(|s| classify(&s))?;
                        receive(stream.into_inner()).await
                    })
                    .await,
                )
            }
            Ask::Aggregate => {
                let req = pb::AggregateRequest {
                    agreement: SV.0.into(),
                    purpose: SV.1.into(),
                    dataset: RELEASED_DATASET.into(),
                    by: vec!["wd22cd".into(), "ho_offence_group".into()],
                };
                (
                    Kind::Aggregate,
                    timed(timeout, async {
                        let stream = client.aggregate(req).await.map_err(|s| classify(&s))?;
                        receive(stream.into_inner()).await
                    })
                    .await,
                )
            }
        };
        let outcome = match result {
            Ok(bytes) => {
                log.release_bytes += bytes;
                Outcome::Ok
            }
            Err(o) => o,
        };
        pause_after(&outcome, &mut backoff, &bounds).await;
        log.push(kind, started, outcome);
    }
    log
}

/// Reads a release stream to its end in memory; returns the bytes received. A stream without a
/// release id or that does not end with `manifest.json` is an error.
async fn receive(mut stream: tonic::Streaming<pb::ReleaseChunk>) -> Result<u64, Outcome> {
    let mut bytes = 0u64;
    let mut release_id = false;
    let mut last_ended = String::new();
    while let Some(chunk) = stream.message().await.map_err(|s| classify(&s))? {
        release_id |= !chunk.release_id.is_empty();
        bytes += chunk.data.len() as u64;
        if chunk.end_of_file {
            last_ended = chunk.file;
        }
    }
    if !release_id || last_ended != "manifest.json" {
        return Err(Outcome::Error(
            "INCOMPLETE_RELEASE".into(),
            format!(
                "the release stream ended without {} (last complete file: {last_ended:?})",
                if release_id {
                    "manifest.json"
                } else {
                    "a release id"
                }
            ),
        ));
    }
    Ok(bytes)
}

/// Health checks every [`PROBE_EVERY`] while the load runs (not counted against the calls).
async fn probe_task(mut health: Health, bounds: Arc<Bounds>, timeout: Duration) -> TaskLog {
    let mut log = TaskLog::default();
    let mut next = Instant::now();
    while bounds.running() {
        let started = Instant::now();
        let outcome = match timed(timeout, async { Ok(health.check().await) }).await {
            Ok(o) | Err(o) => o,
        };
        log.push(Kind::HealthUnderLoad, started, outcome);
        next += PROBE_EVERY;
        bounds
            .sleep(next.saturating_duration_since(Instant::now()))
            .await;
    }
    log
}

/// A `grpc.health.v1.Health/Check` client (the messages defined here: the gateway serves the
/// standard health service; `bench` does not depend on tonic-health).
struct Health {
    grpc: tonic::client::Grpc<Channel>,
}

impl Health {
    fn new(channel: Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// One check of the whole server (`service = ""`); SERVING is a success.
    async fn check(&mut self) -> Outcome {
        if let Err(e) = self.grpc.ready().await {
            return Outcome::Error("UNAVAILABLE".into(), format!("channel not ready: {e}"));
        }
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        match self
            .grpc
            .unary(
                tonic::Request::new(HealthCheckRequest {
                    service: String::new(),
                }),
                path,
                HealthCodec,
            )
            .await
        {
            Ok(r) if r.get_ref().status == SERVING => Outcome::Ok,
            Ok(r) => Outcome::Error(
                "NOT_SERVING".into(),
                format!("health status {}", r.get_ref().status),
            ),
            Err(s) => classify(&s),
        }
    }
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// A protobuf codec for the two health messages.
#[derive(Debug, Clone, Copy)]
struct HealthCodec;

impl Codec for HealthCodec {
    type Encode = HealthCheckRequest;
    type Decode = HealthCheckResponse;
    type Encoder = HealthCodec;
    type Decoder = HealthCodec;

    fn encoder(&mut self) -> Self::Encoder {
        HealthCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        HealthCodec
    }
}

impl Encoder for HealthCodec {
    type Item = HealthCheckRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode a health check: {e}")))
    }
}

impl Decoder for HealthCodec {
    type Item = HealthCheckResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        HealthCheckResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode a health answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_differencing_refusal_is_counted_apart_from_errors() {
        let s = Status::permission_denied(
            "disclosure.differencing: this table's records differ from an earlier table's by fewer than 10",
        );
        assert_eq!(classify(&s), Outcome::RateLimited(DIFFERENCING.into()));
        let other = Status::permission_denied("not-a-recipient: ...");
        assert!(matches!(classify(&other), Outcome::Error(..)));
    }

    #[test]
    fn resource_exhausted_is_rate_limited_by_its_setting() {
        let s = Status::resource_exhausted(
            "refused by limits.agency_calls_per_min: lfb started more than 600 calls a minute",
        );
        assert_eq!(
            classify(&s),
            Outcome::RateLimited("limits.agency_calls_per_min".into())
        );
        assert_eq!(
            classify(&Status::resource_exhausted("busy")),
            Outcome::RateLimited("(no setting named)".into())
        );
        assert!(matches!(
            classify(&Status::unavailable("x")),
            Outcome::Error(c, _) if c == "Unavailable"
        ));
        assert!(matches!(
            classify(&Status::deadline_exceeded("refused by limits.request_timeout_secs")),
            Outcome::Error(c, _) if c == "DeadlineExceeded"
        ));
    }

    #[test]
    fn bounds_stop_at_the_call_budget_and_the_deadline() {
        let b = Bounds::new(Instant::now() + Duration::from_secs(3600), 3);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        assert!(!b.running());
        let past = Bounds::new(Instant::now(), 10);
        assert!(!past.take());
        assert!(!past.running());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        assert_eq!(b.step(), Duration::from_millis(500));
        assert_eq!(b.step(), Duration::from_millis(1000));
        for _ in 0..10 {
            b.step();
        }
        assert_eq!(b.step(), MAX_BACKOFF);
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(500));
    }

    #[test]
    fn rekeyed_records_are_new_and_hash_as_the_gateway_checks() {
        let rec = pb::Record {
            record_key: vec![7; 32],
            content_hash: vec![0; 32],
            persons: Vec::new(),
            values: vec![pb::Value {
                kind: Some(pb::value::Kind::Text("x".into())),
            }],
            source_line: 2,
        };
        let batch = pb::IngestBatch {
            dataset: "police_crime".into(),
            schema_version: 1,
            fields: vec!["f".into()],
            records: vec![rec],
            batch_id: "b".into(),
        };
        let a = rekey(&batch, 1, 0);
        let b = rekey(&batch, 1, 1);
        let c = rekey(&batch, 2, 0);
        let keys = [&a, &b, &c].map(|x| x.records[0].record_key.clone());
        assert!(keys[0] != keys[1] && keys[0] != keys[2] && keys[1] != keys[2]);
        let r = &a.records[0];
        assert_eq!(r.record_key.len(), 32);
        let expect = skp_core::content::content_hash(
            "police_crime",
            1,
            &r.record_key,
            &r.persons,
            &r.values,
        );
        assert_eq!(r.content_hash, expect.to_vec());
    }
}
