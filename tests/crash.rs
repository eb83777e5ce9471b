//! Crash safety (issue 8 item 3): a kill -9 loop over the real binaries on loopback mutual TLS.
//!
//! Each iteration starts `gateway serve` on the same data directory, checks what the previous
//! crash left (below), has the analyst receive one extract and one counts table, then runs four
//! agents at once (one per agency, each pushing fresh CSV files with record keys unique to the
//! file, one push after another), two analysts (the same extract and table, in a loop) and an IG
//! officer (`gateway audit tree-head --save` in a loop), and sends SIGKILL to the gateway after
//! a random delay. In some iterations one agent is SIGKILLed first, at a random moment.
//!
//! After each restart:
//! - each agent's spool holds exactly the files whose push was not acknowledged, whole; `agent
//!   run` resends them and the gateway accounts for every resent row (new or already stored);
//!   a file whose push was killed before it reached the spool is pushed again and is found
//!   either wholly stored or not at all;
//! - every row acknowledged before the kill is pushed again and the gateway reports every one a
//!   duplicate (none lost, none changed);
//! - the audit export verifies (`gateway audit verify --thorough`) and is consistent with the
//!   last checkpoint the IG officer saved before the kill, the checkpoint the gateway had
//!   persisted at the kill and the checkpoint of the last release received;
//! - every release received has its entry, byte for byte, at its index; the log holds one
//!   `gateway_start` per start; each agency's ingest entries count at least the rows its agents
//!   were told were stored, and the ingest entries not named by a `storage_failure` entry
//!   ("entries a..=b were not committed") count exactly the stored records: the entries of a
//!   group the kill cut before its records were written are named so at the restart.
//!
//! At the end the gateway stops cleanly and the store, opened offline (every frame's CRC
//! checked), holds exactly one record per row ever generated, and every release entry of the
//! log has its release in the registry (one the kill cut before its registry commit is
//! completed at the restart).
//!
//! Size and replay: `CRASH_ITERATIONS` (default 5, the CI size) and `CRASH_SEED` (printed at
//! the start; the kill moments and file sizes derive from it, the interleaving does not).
//! Full size: `CRASH_ITERATIONS=25 cargo test -p e2e --test crash -- --nocapture`.
//! `CRASH_AGENT_BIN=PATH` runs another `agent` binary (e.g. one built with a candidate fix).

use anyhow::{Context, Result, anyhow, bail, ensure};
use e2e::{GatewayProc, Pki, audit_entries, bin, export_audit, run_gateway, synth_catalog, text};
use gateway::audit::entry::Entry;
use gateway::release::manifest::Manifest;
use prost::Message;
use sharing_proto::v1::IngestBatch;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// (agency, dataset it pushes, the record-key column made unique per row).
const AGENTS: [(&str, &str, &str); 4] = [
    ("met-police", "police_crime", "crime_ref"),
    ("lfb", "lfb_incident", "incident_number"),
    ("rbk-council", "council_asb_case", "asb_case_id"),
    ("swl-icb", "ed_istv", "attendance_ref"),
];
const SV: &str = "SKP-ISA-SV-01";
const SV_PURPOSE: &str = "serious-violence-sna";
const SV_FIELDS: &str = "police_crime.ho_offence_group,police_crime.committed_from:year,police_crime.victim_sex,police_crime.suspect_sex";
/// Records per batch in the agents' configs: a push of a file is a stream of several batches,
/// so a kill can fall between two batches of one acknowledgement.
const BATCH_SIZE: u64 = 40;
/// Rows of a generated file (inclusive range).
const FILE_ROWS: (u64, u64) = (60, 320);
/// Files an agent pushes at most in one iteration (the kill usually comes first).
const MAX_FILES: usize = 40;
/// The gateway is killed this long after the workload starts (ms, inclusive range).
const KILL_AFTER_MS: (u64, u64) = (150, 2500);
/// Percentage of iterations in which one agent is killed too.
const AGENT_KILL_PERCENT: u64 = 40;
/// Ceiling for one agent or client command (never reached unless something hangs).
const COMMAND_CEILING: Duration = Duration::from_secs(300);

#[test]
fn kill_9_loop_loses_nothing_acknowledged() -> Result<()> {
    let iterations: usize = match std::env::var("CRASH_ITERATIONS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("CRASH_ITERATIONS={v:?} is not a number"))?,
        Err(_) => 5,
    };
    let seed: u64 = match std::env::var("CRASH_SEED") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("CRASH_SEED={v:?} is not a number"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    println!(
        "crash loop: {iterations} iterations, seed {seed} (replay with CRASH_SEED={seed} CRASH_ITERATIONS={iterations})"
    );
    let pki = Pki::new()?;
    let result = crash_loop(&pki, iterations, seed);
    if let Err(e) = &result {
        let kept = pki.dir.keep();
        eprintln!(
            "crash loop FAILED (seed {seed}); the PKI, data directory, agent state and gateway logs are kept in {}:\n{e:#}",
            kept.display()
        );
    }
    result
}

/// The whole loop: setup, `iterations` kills, the last restart and the final checks.
fn crash_loop(pki: &Pki, iterations: usize, seed: u64) -> Result<()> {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let work = pki.path().join("crash");
    std::fs::create_dir_all(&work)?;
    let mut gw = GatewayProc::start(&pki.gateway_config())?;
    let mut starts = 1u64;
    let mut ledgers = Vec::new();
    for (i, (agency, dataset, key)) in AGENTS.iter().enumerate() {
        ledgers.push(Ledger::new(
            pki,
            &work,
            agency,
            dataset,
            key,
            Rng(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1))),
        )?);
    }
    // Each agent caches the catalog once, so a push that finds the gateway dead still spools.
    for l in &ledgers {
        let o = run_cmd(Command::new(agent_bin()?).args([
            "check",
            "--config",
            &l.config.display().to_string(),
            "--gateway",
            &gw.url(),
        ]))?;
        ensure!(
            o.status.success(),
            "agent check for {}: {}",
            l.agency,
            text(&o)
        );
    }

    let mut figures: Vec<Figures> = Vec::new();
    let mut seen = Seen::default();
    for it in 0..=iterations {
        let t0 = Instant::now();
        if it > 0 {
            gw = GatewayProc::start(&pki.gateway_config()).map_err(|e| {
                anyhow!("BUG (crash safety): the gateway does not start again after kill -9 #{it}: {e:#}")
            })?;
            starts += 1;
            let prev = figures.last_mut().context("no figures")?;
            prev.torn_store = gw
                .log()
                .matches("cutting a torn tail off the record log")
                .count();
            prev.torn_audit = gw.log().matches("ended in a torn entry").count();
            recover_agents(&gw, &mut ledgers, it, prev)?;
            check_audit(pki, &gw, &work, it, starts, &ledgers, &mut seen, prev)?;
            prev.secs += t0.elapsed().as_secs_f64();
        }
        if it == iterations {
            break;
        }
        let t1 = Instant::now();
        let mut f = Figures {
            iteration: it + 1,
            ..Figures::default()
        };
        // One extract and one table received before the workload, so every kill has releases
        // to look for (under load, releases in the workload often outlast the kill window).
        for kind in ["extract", "aggregate"] {
            let out = work.join(format!("releases/i{:02}-{kind}-before", it + 1));
            let o = release_once(kind, &pki.analyst_config(), &gw.url(), &out)?;
            // A table whose records differ from the last one's by 1..min_cell-1 (a few rows
            // pushed since) is refused as differencing: correct, and no release to look for
            // (at least one table must be received over the whole test: checked at the end).
            if kind == "aggregate"
                && !o.status.success()
                && text(&o).contains("disclosure.differencing")
            {
                f.tables_refused += 1;
                continue;
            }
            ensure!(
                o.status.success(),
                "{kind} before the workload: {}",
                text(&o)
            );
            seen.releases.push((out.clone(), manifest(&out)?));
            f.releases_before += 1;
        }
        workload(
            pki,
            &mut gw,
            &work,
            it,
            &mut rng,
            &mut ledgers,
            &mut seen,
            &mut f,
        )?;
        f.secs = t1.elapsed().as_secs_f64();
        println!(
            "iteration {:>2}: killed after {} ms{}; {} pushes, {} rows acknowledged, {} file(s) / {} rows not acknowledged, {} + {} releases received",
            f.iteration,
            f.kill_after_ms,
            f.agent_killed
                .as_deref()
                .map(|a| format!(" (agent {a} killed first)"))
                .unwrap_or_default(),
            f.pushes,
            f.acked_rows,
            f.unacked_files,
            f.unacked_rows,
            f.releases_before,
            f.releases_ok
        );
        figures.push(f);
    }

    // The differencing refusals above must not hide the tables: at least one was received whole
    // (before or during a workload) and checked after its kill.
    let tables = seen
        .releases
        .iter()
        .filter(|(_, m)| m.release.kind == "aggregate")
        .count();
    ensure!(
        tables > 0,
        "no table was received in {iterations} iteration(s) ({} refused as differencing before \
         the workloads): the crash test checked no aggregate release",
        figures.iter().map(|f| f.tables_refused).sum::<u64>()
    );

    // Final: a last export, a clean stop, and the store opened offline.
    let export = work.join("audit-final.txt");
    export_audit(pki, &gw, &export)?;
    verify(pki, &export, None)?;
    let entries = audit_entries(&export)?;
    gw.stop()?;
    let store = open_store(pki)?;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for l in &ledgers {
        let rows: u64 = l.files.iter().map(|f| f.rows).sum();
        ensure!(
            l.files.iter().all(|f| f.state == State::Acked),
            "{}: every file is acknowledged at the end",
            l.agency
        );
        *expected.entry(l.dataset.clone()).or_default() += rows;
        total += rows;
    }
    let counts: BTreeMap<String, u64> = store.counts()?.into_iter().collect();
    ensure!(
        counts == expected,
        "BUG (crash safety): the store must hold exactly one record per row pushed: store {counts:?}, pushed {expected:?}"
    );
    ensure!(store.count_records()? == total, "count_records vs counts");
    let audited_accepted: u64 = entries
        .iter()
        .filter(|e| e.action.as_str() == "ingest" && e.decision.as_str() == "allow")
        .filter_map(|e| e.counts.and_then(|c| c.accepted))
        .sum();
    ensure!(
        audited_accepted >= total,
        "every stored record has an ingest entry counting it: entries count {audited_accepted} accepted, store holds {total}"
    );
    let committed = committed_accepted(&entries);
    ensure!(
        committed == total,
        "BUG (audit vs store): the ingest entries not named by a storage_failure entry count {committed} accepted records, the store holds {total}: a kill between a group's audit entries and its records must be named at the restart ({} storage_failure entries in the log)",
        count(&entries, "storage_failure", "deny")
    );
    let logged_releases = entries
        .iter()
        .filter(|e| e.action.as_str() == "release" && e.decision.as_str() == "allow")
        .count();
    let mut registered = 0;
    for e in std::fs::read_dir(pki.path().join("data/releases"))? {
        let e = e?;
        if e.file_name().to_string_lossy().ends_with(".entry") {
            let text = std::fs::read_to_string(e.path())?;
            ensure!(
                text.trim().parse::<u64>().is_ok(),
                "BUG (release registry): {} holds {text:?}, not an audit entry index",
                e.path().display()
            );
            registered += 1;
        }
    }
    ensure!(
        logged_releases == registered,
        "BUG (release registry): {logged_releases} release entries in the log but {registered} releases in the registry: a release whose audit entry was written before a kill must be completed in the registry at the restart, so `gateway audit person` finds it"
    );

    print_figures(&figures);
    println!(
        "final: {total} records stored, each once ({counts:?}); {} audit entries, verified; ingest entries count {audited_accepted} records accepted; {logged_releases} release entries, {registered} releases in the registry; {starts} gateway starts; {:.1} s in all",
        entries.len(),
        started.elapsed().as_secs_f64()
    );
    if audited_accepted > total {
        println!(
            "final: ingest entries named by storage_failure entries (a kill fell between their audit entries and their records) count {} accepted records that were resent and stored later",
            audited_accepted - total
        );
    }
    Ok(())
}

/// The records counted as accepted by the allowed ingest entries that no `storage_failure`
/// entry names as not committed (`entries a..=b were not committed: …`).
fn committed_accepted(entries: &[Entry]) -> u64 {
    let named: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e.action.as_str() == "storage_failure")
        .filter_map(|e| {
            let range = e.reason.as_deref()?.strip_prefix("entries ")?;
            let (a, b) = range.split(' ').next()?.split_once("..=")?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    entries
        .iter()
        .filter(|e| e.action.as_str() == "ingest" && e.decision.as_str() == "allow")
        .filter(|e| !named.iter().any(|(a, b)| (*a..=*b).contains(&e.seq)))
        .filter_map(|e| e.counts.and_then(|c| c.accepted))
        .sum()
}

/// What the analysts and the IG officer saw acknowledged, across iterations.
#[derive(Default)]
struct Seen {
    /// Releases received whole: (folder, manifest).
    releases: Vec<(PathBuf, Manifest)>,
    /// The last checkpoint `gateway audit tree-head --save` saved before the last kill.
    tree_head: Option<PathBuf>,
    /// A copy of `data/audit/checkpoint` taken just after the last kill.
    persisted: Option<PathBuf>,
    /// Records counted as accepted by ingest entries but never stored, so far.
    orphans: u64,
}

/// Per-iteration figures.
#[derive(Default, Debug)]
struct Figures {
    iteration: usize,
    kill_after_ms: u64,
    agent_killed: Option<String>,
    pushes: u64,
    acked_rows: u64,
    unacked_files: u64,
    unacked_rows: u64,
    unknown_files: u64,
    resent_rows: u64,
    resent_new: u64,
    resent_dup: u64,
    unknown_new: u64,
    unknown_dup: u64,
    rechecked: u64,
    releases_before: u64,
    /// Tables before the workload refused as differencing.
    tables_refused: u64,
    releases_ok: u64,
    releases_failed: u64,
    tree_heads: u64,
    checkpoint_size: u64,
    audit_entries: usize,
    torn_store: usize,
    torn_audit: usize,
    spool_tmp: usize,
    cached_catalog: u64,
    orphans: u64,
    secs: f64,
}

fn print_figures(fs: &[Figures]) {
    println!(
        "\n{:>3} {:>7} {:>12} {:>6} {:>6} {:>7} {:>11} {:>17} {:>9} {:>8} {:>9} {:>6} {:>8} {:>7} {:>5} {:>6} {:>6}",
        "it",
        "kill ms",
        "agent killed",
        "pushes",
        "cached",
        "acked",
        "unacked f/r",
        "resent (new/dup)",
        "unknown",
        "recheck",
        "releases",
        "heads",
        "cp size",
        "entries",
        "torn",
        "orphan",
        "secs"
    );
    for f in fs {
        println!(
            "{:>3} {:>7} {:>12} {:>6} {:>6} {:>7} {:>11} {:>17} {:>9} {:>8} {:>9} {:>6} {:>8} {:>7} {:>5} {:>6} {:>6.1}",
            f.iteration,
            f.kill_after_ms,
            f.agent_killed.as_deref().unwrap_or("-"),
            f.pushes,
            f.cached_catalog,
            f.acked_rows,
            format!("{}/{}", f.unacked_files, f.unacked_rows),
            format!("{} ({}/{})", f.resent_rows, f.resent_new, f.resent_dup),
            format!("{} ({}/{})", f.unknown_files, f.unknown_new, f.unknown_dup),
            f.rechecked,
            format!(
                "{}+{}/{}",
                f.releases_before, f.releases_ok, f.releases_failed
            ),
            f.tree_heads,
            f.checkpoint_size,
            f.audit_entries,
            f.torn_store + f.torn_audit,
            f.orphans,
            f.secs
        );
    }
    println!(
        "columns: pushes (cached: of which worked from the cached catalog: the gateway was gone), rows acknowledged in the workload, files/rows not acknowledged at the kill, rows resent by `agent run` after the restart (new to the gateway / already stored), pushes killed before their file reached the spool (rows new / already stored when re-pushed), acknowledged rows pushed again and found stored, releases received before the workload + during it / cut by the kill, tree heads saved, size of the newest checkpoint kept before the kill, audit entries after the restart, torn tails cut at the restart, records counted by ingest entries but cut by the kill (orphan), seconds"
    );
    let sum = |g: fn(&Figures) -> u64| fs.iter().map(g).sum::<u64>();
    println!(
        "totals: {} pushes, {} rows acknowledged during the workloads, {} not acknowledged at a kill and resent ({} new to the gateway, {} already stored), {} files killed before the spool (re-pushed: {} rows new, {} already stored), {} rows re-pushed after a restart and all found stored, {} releases received (all found in the log), {} torn tails cut, {} spool .tmp files left behind by killed agents (never removed)",
        sum(|f| f.pushes),
        sum(|f| f.acked_rows),
        sum(|f| f.resent_rows),
        sum(|f| f.resent_new),
        sum(|f| f.resent_dup),
        sum(|f| f.unknown_files),
        sum(|f| f.unknown_new),
        sum(|f| f.unknown_dup),
        sum(|f| f.rechecked),
        sum(|f| f.releases_before + f.releases_ok),
        fs.iter()
            .map(|f| f.torn_store + f.torn_audit)
            .sum::<usize>(),
        fs.last().map_or(0, |f| f.spool_tmp),
    );
}

/// A pushed file's state as the test knows it from the agent's exit, report and spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the agent's spool: not acknowledged.
    Unacked,
    /// Left the spool after the gateway's summary.
    Acked,
    /// The agent was killed and the file is not in the spool: never spooled, or acknowledged
    /// just before the kill.
    Unknown,
}

struct FileRec {
    /// The file name (the agent's batch ids are `LABEL#n`).
    label: String,
    path: PathBuf,
    rows: u64,
    state: State,
    /// Iteration whose workload saw it acknowledged (re-pushed after the next restart).
    acked_in_workload: Option<usize>,
}

/// One agent: its config, its files and what it reported.
struct Ledger {
    agency: String,
    dataset: String,
    config: PathBuf,
    spool: PathBuf,
    out: PathBuf,
    header: csv::StringRecord,
    template: Vec<csv::StringRecord>,
    key_col: usize,
    files: Vec<FileRec>,
    /// Rows the agent's reports called stored (accepted + duplicates + replaced), all runs.
    reported: u64,
    rng: Rng,
}

/// The agent process running now, where the killer can reach it.
#[derive(Default)]
struct Slot {
    child: Option<Child>,
    killed: bool,
}

impl Slot {
    /// SIGKILLs the process running now, if any; true if it did.
    fn kill_running(m: &Mutex<Slot>) -> Result<bool> {
        let mut s = lock(m)?;
        let Some(c) = s.child.as_mut() else {
            return Ok(false);
        };
        if c.try_wait()?.is_some() {
            return Ok(false);
        }
        c.kill().context("cannot kill the agent")?;
        s.killed = true;
        Ok(true)
    }
}

impl Ledger {
    fn new(
        pki: &Pki,
        work: &Path,
        agency: &str,
        dataset: &str,
        key: &str,
        rng: Rng,
    ) -> Result<Ledger> {
        // The dev config with small batches and a quick give-up, so a push against a dead
        // gateway ends fast and leaves its batches spooled.
        let config = pki.path().join(format!("agents/crash-{agency}.toml"));
        std::fs::write(
            &config,
            format!(
                "agency = \"{agency}\"\ngateway = \"https://localhost:7443\"\nstate_dir = \"../agent-state/{agency}\"\n\n[tls]\nca = \"../ca.pem\"\ncert = \"{agency}.pem\"\nkey = \"{agency}.key\"\n\n[linkage_key]\nfile = \"../linkage.key\"\nversion = 1\n\n[push]\nbatch_size = {BATCH_SIZE}\nretries = 1\nbackoff_ms = 100\nconnect_timeout_secs = 10\n"
            ),
        )?;
        let templates = synth_catalog(agency, 300, 17, &work.join("templates"))?;
        let tpl = templates
            .get(dataset)
            .with_context(|| format!("agent synth wrote no {dataset}"))?;
        let mut r = csv::Reader::from_path(tpl)?;
        let header = r.headers()?.clone();
        let key_col = header
            .iter()
            .position(|h| h == key)
            .with_context(|| format!("{dataset} has no column {key}"))?;
        let template = r.records().collect::<Result<Vec<_>, _>>()?;
        ensure!(!template.is_empty(), "{dataset}: empty template");
        let out = work.join("files").join(agency);
        std::fs::create_dir_all(&out)?;
        Ok(Ledger {
            agency: agency.into(),
            dataset: dataset.into(),
            spool: pki.path().join(format!("agent-state/{agency}/spool")),
            config,
            out,
            header,
            template,
            key_col,
            files: Vec::new(),
            reported: 0,
            rng,
        })
    }

    /// Writes a fresh file of template rows whose record keys are unique to it.
    fn new_file(&mut self, it: usize, n: usize) -> Result<usize> {
        let rows = self.rng.range(FILE_ROWS.0, FILE_ROWS.1);
        let label = format!("i{:02}-{}-f{n:02}.csv", it + 1, self.agency);
        let path = self.out.join(&label);
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record(&self.header)?;
        for k in 0..rows {
            let pick = self.rng.range(0, self.template.len() as u64 - 1) as usize;
            let mut row: Vec<String> = self.template[pick].iter().map(str::to_owned).collect();
            row[self.key_col] = format!("crash-{}-{k:04}", label.trim_end_matches(".csv"));
            w.write_record(&row)?;
        }
        w.flush()?;
        self.files.push(FileRec {
            label,
            path,
            rows,
            state: State::Unacked,
            acked_in_workload: None,
        });
        Ok(self.files.len() - 1)
    }

    /// Runs `agent ARGS --config C --gateway URL [more]` as a child the killer can reach; returns
    /// its status, stdout, stderr and whether it was killed.
    fn run_agent(&self, slot: &Mutex<Slot>, args: &[&str], url: &str, tag: &str) -> Result<Ran> {
        let out = self.out.join(format!("{tag}.stdout"));
        let err = self.out.join(format!("{tag}.stderr"));
        let mut cmd = Command::new(agent_bin()?);
        cmd.arg(args[0])
            .arg("--config")
            .arg(&self.config)
            .arg("--gateway")
            .arg(url)
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?);
        let child = cmd.spawn().context("cannot start the agent")?;
        {
            let mut s = lock(slot)?;
            s.child = Some(child);
            s.killed = false;
        }
        let t0 = Instant::now();
        let (status, killed) = loop {
            {
                let mut s = lock(slot)?;
                let c = s.child.as_mut().context("the agent child vanished")?;
                if let Some(st) = c.try_wait()? {
                    s.child = None;
                    break (st, s.killed);
                }
                if t0.elapsed() > COMMAND_CEILING {
                    let _ = c.kill();
                    let _ = c.wait();
                    s.child = None;
                    bail!("agent {args:?} did not finish within {COMMAND_CEILING:?}");
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Ran {
            status,
            killed,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        })
    }

    /// Spool files of the agent: records per source-file label, and `.tmp` leftovers.
    fn spool(&self) -> Result<(BTreeMap<String, u64>, usize)> {
        let mut by_label = BTreeMap::new();
        let mut tmp = 0;
        let Ok(dir) = std::fs::read_dir(&self.spool) else {
            return Ok((by_label, 0));
        };
        for e in dir {
            let p = e?.path();
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".tmp") {
                tmp += 1;
                continue;
            }
            if !name.ends_with(".spool") {
                continue;
            }
            for b in read_spool(&p)? {
                let label = b
                    .batch_id
                    .rsplit_once('#')
                    .map(|(l, _)| l.to_owned())
                    .unwrap_or(b.batch_id.clone());
                *by_label.entry(label).or_default() += b.records.len() as u64;
            }
        }
        Ok((by_label, tmp))
    }

    /// After an agent process ended: moves files that left the spool to Acked (or Unknown for
    /// the file of a killed push), checks the exit and report against the spool, and returns
    /// the rows newly acknowledged.
    fn settle(&mut self, ran: &Ran, new_file: Option<usize>, it: usize) -> Result<u64> {
        let (spooled, _) = self.spool()?;
        let mut newly = 0u64;
        let mut newly_files = Vec::new();
        for (i, f) in self.files.iter_mut().enumerate() {
            let in_spool = spooled.contains_key(&f.label);
            match f.state {
                State::Unacked if !in_spool => {
                    if ran.killed && Some(i) == new_file {
                        f.state = State::Unknown;
                    } else {
                        f.state = State::Acked;
                        f.acked_in_workload = Some(it);
                        newly += f.rows;
                        newly_files.push(f.label.clone());
                    }
                }
                State::Acked | State::Unknown if in_spool => {
                    bail!(
                        "{}: {} is in the spool again after it left it",
                        self.agency,
                        f.label
                    );
                }
                _ => {}
            }
        }
        if ran.killed {
            return Ok(newly);
        }
        let code = ran.status.code();
        if let (Some(1), Some(i)) = (code, new_file)
            && ran.stderr.contains("GetCatalog refused by the gateway")
        {
            bail!(
                "BUG (agent, crash safety): `agent push` of {} exited 1 without spooling it when the gateway went away during GetCatalog ({}). A push the gateway drops must spool its batches and exit 3, so that `agent run` resends exactly what was not acknowledged; here nothing would resend it. Fix: fall back to the cached catalog when GetCatalog fails with a retryable status, as when the gateway cannot be reached.",
                self.files[i].label,
                ran.stderr.trim()
            );
        }
        ensure!(
            matches!(code, Some(0) | Some(3)),
            "{}: agent exited {:?} (0 or 3 expected):\n{}\n{}",
            self.agency,
            code,
            ran.stdout,
            ran.stderr
        );
        if code == Some(0) {
            ensure!(
                spooled.is_empty(),
                "{}: the agent reported everything stored but its spool still holds {spooled:?}",
                self.agency
            );
        }
        if let (Some(3), Some(i)) = (code, new_file) {
            ensure!(
                spooled.contains_key(&self.files[i].label),
                "{}: the agent exited 3 (gateway unreachable) but {} is not in its spool",
                self.agency,
                self.files[i].label
            );
        }
        let r = Report::parse(&ran.stdout)?;
        ensure!(
            r.rejected_at_source == 0 && r.rejected_by_gateway == 0,
            "{}: rows rejected: {}",
            self.agency,
            ran.stdout
        );
        ensure!(
            r.stored() == newly,
            "{}: the agent reported {} rows stored but the files that left its spool ({newly_files:?}) hold {newly}:\n{}",
            self.agency,
            r.stored(),
            ran.stdout
        );
        self.reported += r.stored();
        Ok(newly)
    }
}

struct Ran {
    status: ExitStatus,
    killed: bool,
    stdout: String,
    stderr: String,
}

/// The counts line `agent push` / `agent run` prints.
#[derive(Debug, Default)]
struct Report {
    rejected_at_source: u64,
    accepted: u64,
    duplicates: u64,
    replaced: u64,
    rejected_by_gateway: u64,
}

impl Report {
    fn parse(stdout: &str) -> Result<Report> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("rows read "))
            .with_context(|| format!("no counts line in the agent's output:\n{stdout}"))?;
        let mut r = Report::default();
        for part in line.split(", ") {
            let Some((name, n)) = part.rsplit_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match name {
                "rejected at source" => r.rejected_at_source = n,
                "accepted" => r.accepted = n,
                "duplicates" => r.duplicates = n,
                "replaced" => r.replaced = n,
                "rejected by gateway" => r.rejected_by_gateway = n,
                _ => {}
            }
        }
        Ok(r)
    }

    fn stored(&self) -> u64 {
        self.accepted + self.duplicates + self.replaced
    }
}

/// One iteration's workload, ended by the kill.
#[allow(clippy::too_many_arguments)]
fn workload(
    pki: &Pki,
    gw: &mut GatewayProc,
    work: &Path,
    it: usize,
    rng: &mut Rng,
    ledgers: &mut [Ledger],
    seen: &mut Seen,
    f: &mut Figures,
) -> Result<()> {
    let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
    f.kill_after_ms = kill_after.as_millis() as u64;
    let agent_kill = if rng.range(1, 100) <= AGENT_KILL_PERCENT {
        let who = rng.range(0, ledgers.len() as u64 - 1) as usize;
        let at = Duration::from_millis(rng.range(50, f.kill_after_ms.max(100) - 50));
        Some((who, at))
    } else {
        None
    };
    let names: Vec<String> = ledgers.iter().map(|l| l.agency.clone()).collect();
    let slots: Vec<Mutex<Slot>> = ledgers.iter().map(|_| Mutex::default()).collect();
    let url = gw.url();
    let stop = AtomicBool::new(false);
    let rel_dir = work.join("releases");
    let heads_dir = work.join("heads");
    std::fs::create_dir_all(&rel_dir)?;
    std::fs::create_dir_all(&heads_dir)?;
    let analyst = pki.analyst_config();
    let auditor = pki.auditor_config();

    let (agents, releases, heads) = std::thread::scope(|s| {
        let (url, stop) = (&url, &stop);
        let agents: Vec<_> = ledgers
            .iter_mut()
            .zip(&slots)
            .map(|(l, slot)| s.spawn(move || push_loop(l, slot, url, stop, it)))
            .collect();
        let analysts: Vec<_> = ["extract", "aggregate"]
            .into_iter()
            .map(|kind| {
                let (analyst, rel_dir) = (&analyst, &rel_dir);
                s.spawn(move || release_loop(kind, analyst, url, stop, rel_dir, it))
            })
            .collect();
        let heads = {
            let (auditor, heads_dir) = (&auditor, &heads_dir);
            s.spawn(move || tree_head_loop(auditor, url, stop, heads_dir, it))
        };

        let t0 = Instant::now();
        let mut killed_agent = Ok(None);
        if let Some((who, at)) = agent_kill {
            std::thread::sleep(at.saturating_sub(t0.elapsed()));
            // Give the agent a moment to be inside a push, so the kill lands in one.
            let until = Instant::now() + Duration::from_millis(500);
            killed_agent = loop {
                match Slot::kill_running(&slots[who]) {
                    Ok(true) => break Ok(Some(names[who].clone())),
                    Ok(false) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(false) => break Ok(None),
                    Err(e) => break Err(e),
                }
            };
        }
        std::thread::sleep(kill_after.saturating_sub(t0.elapsed()));
        gw.kill9();
        stop.store(true, Ordering::SeqCst);
        let agents: Vec<Result<AgentIter>> = agents
            .into_iter()
            .map(|a| join(a.join(), "agent"))
            .collect();
        let releases: Vec<Result<Releases>> = analysts
            .into_iter()
            .map(|a| join(a.join(), "analyst"))
            .collect();
        let heads = join(heads.join(), "auditor");
        f.agent_killed = killed_agent?;
        Ok::<_, anyhow::Error>((agents, releases, heads))
    })?;

    for a in agents {
        let a = a?;
        f.pushes += a.pushes;
        f.acked_rows += a.acked;
        f.cached_catalog += a.cached_catalog;
    }
    for l in ledgers.iter() {
        for file in l.files.iter().filter(|x| x.state == State::Unacked) {
            f.unacked_files += 1;
            f.unacked_rows += file.rows;
        }
        f.spool_tmp += l.spool()?.1;
    }
    for r in releases {
        let r = r?;
        f.releases_ok += r.ok.len() as u64;
        f.releases_failed += r.failed;
        if r.ok.is_empty()
            && let Some(why) = &r.last_failure
        {
            println!(
                "iteration {}: note: no release received in this iteration; the last failure:\n{}",
                it + 1,
                e2e::tail(why, 8)
            );
        }
        seen.releases.extend(r.ok);
    }
    let (n, last) = heads?;
    f.tree_heads = n;
    if last.is_some() {
        seen.tree_head = last;
    }
    let persisted = pki.path().join("data/audit/checkpoint");
    if persisted.exists() {
        let copy = work.join(format!("persisted-checkpoint-{:02}.txt", it + 1));
        std::fs::copy(&persisted, &copy)?;
        seen.persisted = Some(copy);
    }
    f.checkpoint_size = [&seen.tree_head, &seen.persisted]
        .into_iter()
        .flatten()
        .filter_map(|p| checkpoint_size(p).ok())
        .max()
        .unwrap_or(0);
    Ok(())
}

#[derive(Default)]
struct AgentIter {
    pushes: u64,
    acked: u64,
    /// Pushes that found the gateway gone and worked from the cached catalog.
    cached_catalog: u64,
}

/// An agent pushing fresh files one after another until the gateway is killed.
fn push_loop(
    l: &mut Ledger,
    slot: &Mutex<Slot>,
    url: &str,
    stop: &AtomicBool,
    it: usize,
) -> Result<AgentIter> {
    let mut r = AgentIter::default();
    for n in 0..MAX_FILES {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let i = l.new_file(it, n)?;
        let path = l.files[i].path.display().to_string();
        let dataset = l.dataset.clone();
        let ran = l.run_agent(
            slot,
            &["push", "--dataset", &dataset, &path],
            url,
            &format!("i{:02}-push-{n:02}", it + 1),
        )?;
        r.pushes += 1;
        if ran.stderr.contains("checked against the cached catalog") {
            r.cached_catalog += 1;
        }
        r.acked += l.settle(&ran, Some(i), it)?;
    }
    Ok(r)
}

struct Releases {
    ok: Vec<(PathBuf, Manifest)>,
    failed: u64,
    last_failure: Option<String>,
}

/// An analyst asking for a release again and again until the gateway is killed.
fn release_loop(
    kind: &str,
    analyst: &str,
    url: &str,
    stop: &AtomicBool,
    dir: &Path,
    it: usize,
) -> Result<Releases> {
    let mut r = Releases {
        ok: Vec::new(),
        failed: 0,
        last_failure: None,
    };
    for n in 1.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let out = dir.join(format!("i{:02}-{kind}-{n:03}", it + 1));
        let o = release_once(kind, analyst, url, &out)?;
        if o.status.success() {
            r.ok.push((out.clone(), manifest(&out)?));
        } else {
            r.failed += 1;
            r.last_failure = Some(text(&o));
            if !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(r)
}

/// `gateway extract` (serious-violence extract of police_crime, coarse fields) or `gateway
/// aggregate` (police_crime by ward and offence group) as the analyst, into `out`.
fn release_once(kind: &str, analyst: &str, url: &str, out: &Path) -> Result<std::process::Output> {
    let out_s = out.display().to_string();
    let mut args = vec![
        kind,
        "--config",
        analyst,
        "--gateway",
        url,
        "--agreement",
        SV,
        "--purpose",
        SV_PURPOSE,
        "--out",
        &out_s,
    ];
    if kind == "extract" {
        args.extend(["--datasets", "police_crime", "--fields", SV_FIELDS]);
    } else {
        args.extend([
            "--dataset",
            "police_crime",
            "--by",
            "wd22cd,ho_offence_group",
        ]);
    }
    run_cmd(Command::new(bin("gateway")?).args(&args))
}

/// The manifest of a received release folder.
fn manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    Manifest::parse(&std::fs::read(&path)?).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The IG officer keeping signed checkpoints until the gateway is killed: (how many, the last).
fn tree_head_loop(
    auditor: &str,
    url: &str,
    stop: &AtomicBool,
    dir: &Path,
    it: usize,
) -> Result<(u64, Option<PathBuf>)> {
    let (mut count, mut last) = (0, None);
    for n in 1.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let path = dir.join(format!("i{:02}-{n:04}.txt", it + 1));
        let o = run_cmd(Command::new(bin("gateway")?).args([
            "audit",
            "tree-head",
            "--config",
            auditor,
            "--gateway",
            url,
            "--save",
            &path.display().to_string(),
        ]))?;
        if o.status.success() {
            count += 1;
            last = Some(path);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok((count, last))
}

/// After a restart: the audit log verifies, is consistent with every checkpoint seen before the
/// kill and holds every release received and every start.
#[allow(clippy::too_many_arguments)]
fn check_audit(
    pki: &Pki,
    gw: &GatewayProc,
    work: &Path,
    it: usize,
    starts: u64,
    ledgers: &[Ledger],
    seen: &mut Seen,
    f: &mut Figures,
) -> Result<()> {
    let export = work.join(format!("audit-after-kill-{it:02}.txt"));
    export_audit(pki, gw, &export)?;
    verify(pki, &export, None).with_context(|| {
        format!("BUG (crash safety): the audit log does not verify after kill -9 #{it}")
    })?;
    let mut kept: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(p) = &seen.tree_head {
        kept.push(("the last tree head the IG officer saved", p.clone()));
    }
    if let Some(p) = &seen.persisted {
        kept.push(("the checkpoint persisted at the kill", p.clone()));
    }
    if let Some((_, m)) = seen
        .releases
        .iter()
        .max_by_key(|(_, m)| m.audit.entry_index)
    {
        let p = work.join(format!("release-checkpoint-{it:02}.txt"));
        std::fs::write(&p, &m.audit.checkpoint)?;
        kept.push(("the checkpoint of the last release received", p));
    }
    for (what, p) in &kept {
        verify(pki, &export, Some(p)).with_context(|| {
            format!(
                "BUG (crash safety): the log after kill -9 #{it} is not consistent with {what} ({})",
                p.display()
            )
        })?;
    }
    let entries = audit_entries(&export)?;
    f.audit_entries = entries.len();
    for (i, e) in entries.iter().enumerate() {
        ensure!(e.seq == i as u64, "export entry {i} has seq {}", e.seq);
    }
    for (dir, m) in &seen.releases {
        let e = entries.get(m.audit.entry_index as usize).with_context(|| {
            format!(
                "BUG (crash safety): release {} in {} was received before kill -9 #{it} but the log after the restart has only {} entries",
                m.release.release_id,
                dir.display(),
                entries.len()
            )
        })?;
        ensure!(
            String::from_utf8(e.encode())? == m.audit.entry,
            "BUG (crash safety): release {} in {} was received before kill -9 #{it} but entry {} of the log after the restart is another one",
            m.release.release_id,
            dir.display(),
            m.audit.entry_index
        );
    }
    let logged_starts = count(&entries, "gateway_start", "allow") as u64;
    ensure!(
        logged_starts == starts,
        "the log holds {logged_starts} gateway_start entries after {starts} starts"
    );
    for l in ledgers {
        let audited: u64 = entries
            .iter()
            .filter(|e| e.action.as_str() == "ingest" && e.decision.as_str() == "allow")
            .filter(|e| e.actor.agency.as_deref() == Some(l.agency.as_str()))
            .filter_map(|e| e.counts)
            .map(|c| c.accepted.unwrap_or(0) + c.duplicates.unwrap_or(0) + c.replaced.unwrap_or(0))
            .sum();
        ensure!(
            audited >= l.reported,
            "BUG (crash safety): {}'s agents were told {} rows were stored, but its ingest entries after kill -9 #{it} count only {audited}",
            l.agency,
            l.reported
        );
    }
    // Every file is stored now (resent, re-pushed, rechecked above), each row once: ingest
    // entries counting more accepted records than that counted records a kill kept from being
    // written (their entry is durable before the records are written).
    let stored: u64 = ledgers
        .iter()
        .flat_map(|l| l.files.iter())
        .map(|f| f.rows)
        .sum();
    let accepted: u64 = entries
        .iter()
        .filter(|e| e.action.as_str() == "ingest" && e.decision.as_str() == "allow")
        .filter_map(|e| e.counts.and_then(|c| c.accepted))
        .sum();
    ensure!(
        accepted >= stored,
        "BUG (crash safety): records stored without an ingest entry counting them after kill -9 #{it}: entries count {accepted} accepted, {stored} rows are stored"
    );
    let committed = committed_accepted(&entries);
    let failures = count(&entries, "storage_failure", "deny");
    ensure!(
        committed == stored,
        "BUG (audit vs store): after kill -9 #{it} the ingest entries not named by a storage_failure entry count {committed} accepted records, but {stored} rows are stored: the entries of a group the kill kept from being written must be named at the restart ({failures} storage_failure entries in the log)"
    );
    f.orphans = accepted - stored - seen.orphans;
    seen.orphans = accepted - stored;
    if f.orphans > 0 {
        println!(
            "restart {it:>2}: ingest entries of {} accepted records that kill -9 #{it} kept from being written are named by a storage_failure entry ({failures} in the log)",
            f.orphans
        );
    }
    println!(
        "restart {it:>2}: audit log of {} entries verified (--thorough) and consistent with {} kept checkpoint(s) of sizes {:?}; {} received releases found byte for byte",
        entries.len(),
        kept.len(),
        kept.iter()
            .filter_map(|(_, p)| checkpoint_size(p).ok())
            .collect::<Vec<_>>(),
        seen.releases.len()
    );
    Ok(())
}

#[derive(Default)]
struct Recovered {
    resent: u64,
    resent_new: u64,
    resent_dup: u64,
    unknown: u64,
    unknown_new: u64,
    unknown_dup: u64,
    rechecked: u64,
}

/// After a restart, per agent: the spool holds exactly what was not acknowledged and is resent
/// whole; killed pushes are re-pushed; every acknowledged row is found stored.
fn recover_agents(
    gw: &GatewayProc,
    ledgers: &mut [Ledger],
    it: usize,
    f: &mut Figures,
) -> Result<()> {
    let url = gw.url();
    let results: Vec<Result<Recovered>> = std::thread::scope(|s| {
        let hs: Vec<_> = ledgers
            .iter_mut()
            .map(|l| {
                let url = &url;
                s.spawn(move || recover_agent(l, url, it))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a recovery thread panicked"))?
            })
            .collect()
    });
    for r in results {
        let r = r?;
        f.resent_rows += r.resent;
        f.resent_new += r.resent_new;
        f.resent_dup += r.resent_dup;
        f.unknown_files += r.unknown;
        f.unknown_new += r.unknown_new;
        f.unknown_dup += r.unknown_dup;
        f.rechecked += r.rechecked;
    }
    println!(
        "restart {it:>2}: resent {} rows not acknowledged ({} new to the gateway, {} already stored); re-pushed {} killed push(es) ({} rows new, {} already stored); {} rows acknowledged before the kill all found stored",
        f.resent_rows,
        f.resent_new,
        f.resent_dup,
        f.unknown_files,
        f.unknown_new,
        f.unknown_dup,
        f.rechecked
    );
    Ok(())
}

fn recover_agent(l: &mut Ledger, url: &str, it: usize) -> Result<Recovered> {
    let slot = Mutex::default();
    let mut rec = Recovered::default();
    let (spooled, _) = l.spool()?;
    let unacked: BTreeMap<String, u64> = l
        .files
        .iter()
        .filter(|f| f.state == State::Unacked)
        .map(|f| (f.label.clone(), f.rows))
        .collect();
    ensure!(
        spooled == unacked,
        "BUG (crash safety): {}: after kill -9 #{it} the agent must resend exactly what was not acknowledged, whole: its spool holds {spooled:?} (records per file) but the files not acknowledged are {unacked:?}",
        l.agency
    );
    if !spooled.is_empty() {
        let ran = l.run_agent(&slot, &["run"], url, &format!("restart{it:02}-run"))?;
        ensure!(
            ran.status.success(),
            "{}: agent run after kill -9 #{it}:\n{}\n{}",
            l.agency,
            ran.stdout,
            ran.stderr
        );
        let r = Report::parse(&ran.stdout)?;
        let want: u64 = unacked.values().sum();
        ensure!(
            r.stored() == want && r.replaced == 0 && r.rejected_by_gateway == 0,
            "BUG (crash safety): {}: agent run resent the {want} rows not acknowledged before kill -9 #{it}, but the gateway reports {} new, {} already stored, {} replaced, {} rejected",
            l.agency,
            r.accepted,
            r.duplicates,
            r.replaced,
            r.rejected_by_gateway
        );
        ensure!(
            l.spool()?.0.is_empty(),
            "{}: spool not empty after agent run",
            l.agency
        );
        for f in l.files.iter_mut().filter(|f| f.state == State::Unacked) {
            f.state = State::Acked;
        }
        l.reported += r.stored();
        rec.resent = want;
        rec.resent_new = r.accepted;
        rec.resent_dup = r.duplicates;
    }
    let dataset = l.dataset.clone();
    for i in 0..l.files.len() {
        if l.files[i].state != State::Unknown {
            continue;
        }
        let (label, rows) = (l.files[i].label.clone(), l.files[i].rows);
        let path = l.files[i].path.display().to_string();
        let ran = l.run_agent(
            &slot,
            &["push", "--dataset", &dataset, &path],
            url,
            &format!("restart{it:02}-repush-{label}"),
        )?;
        ensure!(
            ran.status.success(),
            "{}: re-push of {label}: {}\n{}",
            l.agency,
            ran.stdout,
            ran.stderr
        );
        let r = Report::parse(&ran.stdout)?;
        ensure!(
            r.stored() == rows && r.replaced == 0 && (r.accepted == 0 || r.duplicates == 0),
            "BUG (crash safety): {}: {label} ({rows} rows; its push was killed and it is not in the spool) must be wholly stored or not at all, but re-pushing it finds {} new, {} already stored, {} replaced",
            l.agency,
            r.accepted,
            r.duplicates,
            r.replaced
        );
        l.files[i].state = State::Acked;
        l.reported += r.stored();
        rec.unknown += 1;
        rec.unknown_new += r.accepted;
        rec.unknown_dup += r.duplicates;
    }
    // Every row acknowledged in the killed workload, pushed again: all must be duplicates.
    let acked: Vec<PathBuf> = l
        .files
        .iter()
        .filter(|f| f.acked_in_workload == Some(it - 1))
        .map(|f| f.path.clone())
        .collect();
    if !acked.is_empty() {
        let path = l.out.join(format!("recheck-after-kill-{it:02}.csv"));
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record(&l.header)?;
        let mut rows = 0u64;
        for p in &acked {
            for row in csv::Reader::from_path(p)?.records() {
                w.write_record(&row?)?;
                rows += 1;
            }
        }
        w.flush()?;
        drop(w);
        let ran = l.run_agent(
            &slot,
            &["push", "--dataset", &dataset, &path.display().to_string()],
            url,
            &format!("restart{it:02}-recheck"),
        )?;
        ensure!(
            ran.status.success(),
            "{}: recheck push: {}\n{}",
            l.agency,
            ran.stdout,
            ran.stderr
        );
        let r = Report::parse(&ran.stdout)?;
        ensure!(
            r.accepted == 0 && r.replaced == 0 && r.duplicates == rows,
            "BUG (crash safety): {}: of the {rows} rows acknowledged before kill -9 #{it}, pushing them again after the restart finds {} missing (stored as new), {} changed (replaced), {} already stored",
            l.agency,
            r.accepted,
            r.replaced,
            r.duplicates
        );
        l.reported += r.stored();
        rec.rechecked = rows;
    }
    Ok(rec)
}

/// `gateway audit verify FILE --pubkey audit.pub --thorough [--checkpoint KEPT]`.
fn verify(pki: &Pki, file: &Path, kept: Option<&Path>) -> Result<()> {
    let pubkey = pki.path().join("audit.pub").display().to_string();
    let file_s = file.display().to_string();
    let mut args = vec![
        "audit",
        "verify",
        &file_s,
        "--pubkey",
        &pubkey,
        "--thorough",
    ];
    let kept_s;
    if let Some(k) = kept {
        kept_s = k.display().to_string();
        args.extend(["--checkpoint", &kept_s]);
    }
    let o = run_gateway(&args)?;
    ensure!(o.status.success(), "gateway {args:?}: {}", text(&o));
    Ok(())
}

/// The size line of a signed checkpoint note.
fn checkpoint_size(p: &Path) -> Result<u64> {
    let t = std::fs::read_to_string(p)?;
    t.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .with_context(|| format!("{}: no size line", p.display()))
}

fn count(es: &[Entry], action: &str, decision: &str) -> usize {
    es.iter()
        .filter(|e| e.action.as_str() == action && e.decision.as_str() == decision)
        .count()
}

/// Reads an agent spool file: frames `u32 BE length ‖ IngestBatch`.
fn read_spool(p: &Path) -> Result<Vec<IngestBatch>> {
    let data = std::fs::read(p)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        ensure!(
            data.len() - at >= 4,
            "{}: truncated frame header",
            p.display()
        );
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        at += 4;
        ensure!(data.len() - at >= len, "{}: truncated frame", p.display());
        out.push(
            IngestBatch::decode(&data[at..at + len])
                .with_context(|| format!("{}: corrupt batch", p.display()))?,
        );
        at += len;
    }
    Ok(out)
}

/// Opens the gateway's store after it stopped (retrying briefly while the old process lets go).
fn open_store(pki: &Pki) -> Result<gateway::store::Store> {
    let dir = pki.path().join("data");
    let mut last = None;
    for _ in 0..100 {
        match gateway::store::Store::open(&dir) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("cannot open the store: {last:?}")
}

/// Runs a command to completion (stdout and stderr collected), killing it past
/// [`COMMAND_CEILING`].
fn run_cmd(cmd: &mut Command) -> Result<std::process::Output> {
    use std::io::Read;
    let mut child = cmd
        .env_remove("SKP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut so = child.stdout.take().context("stdout not piped")?;
    let mut se = child.stderr.take().context("stderr not piped")?;
    let ho = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let he = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() > COMMAND_CEILING {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {COMMAND_CEILING:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: ho.join().unwrap_or_default(),
        stderr: he.join().unwrap_or_default(),
    })
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow!("a lock is poisoned"))
}

/// The agent binary: `CRASH_AGENT_BIN` if set, else the workspace's.
fn agent_bin() -> Result<PathBuf> {
    match std::env::var_os("CRASH_AGENT_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => bin("agent"),
    }
}

/// A finished thread's result, a panic turned into an error.
fn join<T>(r: std::thread::Result<Result<T>>, who: &str) -> Result<T> {
    r.map_err(|_| anyhow!("the {who} thread panicked"))?
}

/// SplitMix64: a small seeded generator, so a run can be replayed with `CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}
