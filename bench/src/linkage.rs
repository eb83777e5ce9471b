//! `bench linkage`: how well the gateway's exact linkage finds the same person across the five
//! agencies' records, scored against the synthetic data's hidden truth (issue 4's linkage
//! report).
//!
//! Synthetic source-shape exports of every dataset (`agent synth`: each agency's own columns and
//! codes, realistic identifier errors, a few deliberately invalid identifiers) are pseudonymised
//! exactly as `agent push` does (the agency's generated mapping, the agent's reader and
//! pseudonymiser; rows the agent refuses are skipped and counted), validated and stored as the
//! gateway does (`validate::plan` + `check`, a real [`Store`]), and linked by the linkers the
//! releases use ([`LinkSet`]) on several token-kind sets. Every stored person role is mapped back
//! to its hidden person through `truth/<dataset>.csv` and scored pairwise: precision, recall and
//! F1 over pairs of person roles, overall and per agency pair. Pairs are counted from group sizes
//! (n·(n−1)/2 per cluster, per true person and per both), never enumerated.
//!
//! The gateway stores `source_line` as 0 (`validate.rs`), so stored records are mapped back to
//! their source rows by (dataset, record-key token, content hash), remembered while pushing.

use crate::thousands;
use agent::config::AgentConfig;
use agent::pseudonymise::Pseudonymiser;
use agent::synth::{Shape, SynthConfig, Volume};
use anyhow::{Context, Result, bail};
use gateway::linkage::{ClusterId, KindSet, TokenKind};
use gateway::release::linkset::{LinkKey, LinkSet};
use gateway::store::{Outcome, Store, StoreError};
use sharing_proto::v1::{IngestBatch, Record};
use skp_core::ids::KINGSTON_AGENCIES;
use skp_core::{AgencyId, Catalog, Dataset, LinkageKey};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// The default fuzzy match threshold (an agreement's default).
pub const DEFAULT_THRESHOLD: f64 = gateway::policy::isa::DEFAULT_FUZZY_THRESHOLD;

/// Agencies, in the order of the tables.
const AGENCIES: usize = KINGSTON_AGENCIES.len();

/// The configurations measured: every person kind the catalog has (the DHR purpose's set), the
/// Serious Violence purpose's set, and names and date of birth alone, each exact only and then
/// with fuzzy demographic linkage (at the `--threshold` match weight) beside the exact kinds.
const KIND_SETS: [(&str, &[TokenKind], bool); 6] = [
    (
        "nhs+pnc+demo",
        &[TokenKind::Nhs, TokenKind::Pnc, TokenKind::Demo],
        false,
    ),
    ("pnc+demo", &[TokenKind::Pnc, TokenKind::Demo], false),
    ("demo", &[TokenKind::Demo], false),
    (
        "nhs+pnc+demo fuzzy",
        &[TokenKind::Nhs, TokenKind::Pnc, TokenKind::Demo],
        true,
    ),
    ("pnc+demo fuzzy", &[TokenKind::Pnc, TokenKind::Demo], true),
    ("demo fuzzy", &[TokenKind::Demo], true),
];

/// Records per batch, as `agent push` sends them by default.
const BATCH: usize = 1000;

/// Runs the benchmark and prints the tables and a JSON report.
pub fn run(
    persons: usize,
    seed: u64,
    rows: Option<usize>,
    threshold: f64,
    incremental: usize,
) -> Result<()> {
    if persons == 0 || persons > agent::synth::MAX_PERSONS {
        bail!(
            "--persons {persons}: give between 1 and {} (the NHS 999 test range)",
            agent::synth::MAX_PERSONS
        );
    }
    let report = measure(persons, seed, rows, threshold, incremental)?;
    report.print();
    println!("{}", report.json());
    Ok(())
}

/// What one dataset's push did.
#[derive(Debug, Default, Clone)]
pub struct DatasetCounts {
    /// Dataset name.
    pub dataset: String,
    /// Owning agency.
    pub agency: String,
    /// Rows in the export.
    pub rows: u64,
    /// Rows the agent refused (unreadable or failing pseudonymisation).
    pub agent_rejected: u64,
    /// Records the gateway refused.
    pub gateway_rejected: u64,
    /// Records stored as new.
    pub accepted: u64,
    /// Records the store already had unchanged.
    pub duplicates: u64,
    /// Records that replaced an earlier version.
    pub replaced: u64,
    /// Person roles in the truth file.
    pub truth_roles: u64,
    /// Person roles of live stored records matched to a true person (the scored nodes).
    pub nodes: u64,
}

/// Pair counts indexed by agency pair (`[a][b]`, `a <= b`; the diagonal holds pairs within one
/// agency).
type PairMatrix = [[u64; AGENCIES]; AGENCIES];

/// Scores of one kind set.
#[derive(Debug, Clone)]
pub struct Scores {
    /// Kind set name.
    pub kinds: &'static str,
    /// Seconds to build the linker from the store (`LinkSet::synced`, first call).
    pub build_secs: f64,
    /// Person nodes scored.
    pub nodes: u64,
    /// Distinct true persons among them.
    pub persons: u64,
    /// Distinct clusters among them.
    pub clusters: u64,
    /// True persons whose nodes are in two or more clusters (missed links).
    pub split_persons: u64,
    /// Clusters holding two or more true persons (false links).
    pub impure_clusters: u64,
    /// Pairs of nodes of one true person.
    pub true_pairs: PairMatrix,
    /// Pairs of nodes in one cluster.
    pub linked_pairs: PairMatrix,
    /// Pairs of nodes in one cluster and of one true person.
    pub correct_pairs: PairMatrix,
    /// True persons with nodes in both agencies (two or more nodes on the diagonal).
    pub persons_in: PairMatrix,
    /// Clusters with nodes in both agencies (two or more nodes on the diagonal).
    pub clusters_in: PairMatrix,
    /// The overall (true, linked, correct) pairs of two nodes that both carry a date of
    /// birth; the rest involve a role recorded without one (truth error `dob_missing`).
    pub dated: (u64, u64, u64),
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Synthetic population.
    pub persons: usize,
    /// Seed.
    pub seed: u64,
    /// Rows per dataset, if fixed.
    pub rows: Option<usize>,
    /// Per dataset.
    pub datasets: Vec<DatasetCounts>,
    /// Stored person roles with no truth row (should be 0).
    pub unmatched_nodes: u64,
    /// Pairs of one true person over every truth role of the datasets with person roles,
    /// including roles that never became nodes (rows the agent refused, roles with no token):
    /// the denominator of the end-to-end recall.
    pub all_true_pairs: PairMatrix,
    /// Per kind set.
    pub scores: Vec<Scores>,
    /// Seconds spent generating, pushing and storing (not timed otherwise).
    pub setup_secs: f64,
    /// The incremental linkage measurement, if records were held back.
    pub incremental: Option<Incremental>,
}

/// The dataset whose last records are held back for the incremental measurement.
const INCREMENTAL_DATASET: &str = "police_crime";

/// A batch added to a store a fuzzy linker was built on.
#[derive(Debug, Clone)]
pub struct Incremental {
    /// Dataset of the batch.
    pub dataset: String,
    /// Records in the batch.
    pub records: u64,
    /// Person nodes linked before and after.
    pub nodes_before: u64,
    /// After.
    pub nodes_after: u64,
    /// Seconds to build the linker on the store without the batch (model estimation included).
    pub full_secs: f64,
    /// Seconds to bring it up to date after the batch.
    pub incremental_secs: f64,
    /// Rebuilds of the linker meanwhile (0: no relink).
    pub rebuilds: u64,
    /// Person nodes whose cluster differs from a linker built on the whole store at once.
    pub differing_nodes: u64,
}

/// One truth row of a source line: role name, true person, recorded with a date of birth.
type TruthRole = (String, u64, bool);

/// A scored node: its record, role index, true person and agency.
#[derive(Debug, Clone, Copy)]
struct Node {
    seq: u64,
    role: usize,
    truth: u64,
    agency: usize,
    /// Index into the report's dataset counts, and the source line of the record.
    dataset: usize,
    line: u64,
    /// The role was recorded with a date of birth (no `dob_missing` in its truth row).
    dated: bool,
}

/// Generates, pushes, stores, links and scores.
pub fn measure(
    persons: usize,
    seed: u64,
    rows: Option<usize>,
    threshold: f64,
    incremental: usize,
) -> Result<Report> {
    let t0 = Instant::now();
    let scratch = tempfile::Builder::new()
        .prefix("skp-bench-linkage-")
        .tempdir()?;
    // With the dump directory set, the exports are kept there too, to join with the clusters.
    let exports = match std::env::var_os(DUMP_ENV) {
        Some(dir) => Path::new(&dir).join("exports"),
        None => scratch.path().join("exports"),
    };
    let catalog = Catalog::embedded()?;
    let people = agent::synth::population(persons, seed);
    let volume = rows.map_or(Volume::Realistic, Volume::PerDataset);
    let cfg = SynthConfig::new(seed, Shape::Source, volume);
    let written = agent::synth::generate(catalog.datasets(), &people, &cfg, &exports)
        .with_context(|| format!("cannot write synthetic exports into {}", exports.display()))?;
    drop(people);
    let key = LinkageKey::from_bytes(&[0x5c; 32]);
    let store = Store::open(&scratch.path().join("data"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Push every export as the agent does; remember which source line each stored version is.
    let mut lines: HashMap<SourceKey, u64> = HashMap::new();
    let mut counts = Vec::new();
    let mut held: Option<(Dataset, String, Vec<Record>, usize)> = None;
    let mut configs: HashMap<String, AgentConfig> = HashMap::new();
    for w in &written {
        let ds = catalog
            .dataset(&w.dataset)
            .with_context(|| format!("the catalog has no dataset {}", w.dataset))?;
        let owner = ds.owner.as_str().to_owned();
        if !KINGSTON_AGENCIES.contains(&owner.as_str()) {
            bail!(
                "{}: owner {owner} is not one of the five agencies this report covers",
                ds.name
            );
        }
        if !configs.contains_key(&owner) {
            configs.insert(owner.clone(), agency_config(&exports, &owner)?);
        }
        let acfg = &configs[&owner];
        let mapping = acfg.mapping(&w.dataset);
        let p = Pseudonymiser::new(ds, &mapping, &key);
        let (header, source_rows) = agent::source::read(&w.path)?;
        require_columns(&p, &header, &w.path)?;
        let mut c = DatasetCounts {
            dataset: w.dataset.clone(),
            agency: owner.clone(),
            ..DatasetCounts::default()
        };
        let mut gw = GatewayIngest::new(&catalog, &store, &owner)?;
        let mut batch = Vec::with_capacity(BATCH);
        // The last `incremental` records of the incremental dataset are pushed after the
        // first linker is built.
        let hold = if w.dataset == INCREMENTAL_DATASET {
            incremental
        } else {
            0
        };
        let mut queue: std::collections::VecDeque<Record> = std::collections::VecDeque::new();
        for row in source_rows {
            c.rows += 1;
            let rec = match row.map(|r| p.record(&r)) {
                Ok(Ok(rec)) => rec,
                Ok(Err(_)) | Err(_) => {
                    c.agent_rejected += 1;
                    continue;
                }
            };
            if let Some(k) = SourceKey::of(ds, &rec.record_key, &rec.content_hash) {
                lines.entry(k).or_insert(rec.source_line);
            }
            queue.push_back(rec);
            if queue.len() > hold
                && let Some(rec) = queue.pop_front()
            {
                batch.push(rec);
            }
            if batch.len() >= BATCH {
                gw.push(&rt, ds, std::mem::take(&mut batch), &mut c)?;
            }
        }
        if !batch.is_empty() {
            gw.push(&rt, ds, batch, &mut c)?;
        }
        if !queue.is_empty() {
            held = Some((ds.clone(), owner.clone(), Vec::from(queue), counts.len()));
        }
        counts.push(c);
    }

    // The datasets with person roles: what a purpose over every agency links.
    let datasets: Vec<String> = catalog
        .datasets()
        .filter(|d| !d.roles.is_empty())
        .map(|d| d.name.to_string())
        .collect();
    // Incremental linkage: a fuzzy linker built on the store without the held-back records,
    // then brought up to date after they are pushed.
    let fuzzy_key = LinkKey::new(KindSet::of(&[TokenKind::Demo]), datasets.iter().cloned())
        .with_fuzzy(Some(threshold));
    let mut incremental_report = None;
    let kept = LinkSet::new(store.clone(), std::sync::Arc::new(catalog.clone()));
    if let Some((ds, owner, records, at)) = held {
        let t = Instant::now();
        let before = kept.synced(&fuzzy_key)?.lock().linker.len();
        let full_secs = t.elapsed().as_secs_f64();
        let mut gw = GatewayIngest::new(&catalog, &store, &owner)?;
        let n = records.len();
        gw.push(&rt, &ds, records, &mut counts[at])?;
        let t = Instant::now();
        let locked = kept.synced(&fuzzy_key)?;
        let incremental_secs = t.elapsed().as_secs_f64();
        let st = locked.lock();
        incremental_report = Some(Incremental {
            dataset: ds.name.to_string(),
            records: n as u64,
            nodes_before: before as u64,
            nodes_after: st.linker.len() as u64,
            full_secs,
            incremental_secs,
            rebuilds: st.rebuilds,
            differing_nodes: 0,
        });
    }

    // Truth: (dataset, line) → (role, person, recorded with a date of birth).
    let mut truth: HashMap<(String, u64), Vec<TruthRole>> = HashMap::new();
    let mut all_truth: HashMap<u64, [u64; AGENCIES]> = HashMap::new();
    for (w, c) in written.iter().zip(counts.iter_mut()) {
        let linkable = catalog
            .dataset(&w.dataset)
            .is_some_and(|d| !d.roles.is_empty());
        let agency = agency_index(&c.agency);
        let mut rdr = csv::Reader::from_path(&w.truth)
            .with_context(|| format!("cannot read {}", w.truth.display()))?;
        for (i, r) in rdr.records().enumerate() {
            let r = r.with_context(|| format!("{}:{}", w.truth.display(), i + 2))?;
            let (Some(line), Some(role), Some(person)) = (r.get(0), r.get(2), r.get(3)) else {
                bail!(
                    "{}:{}: expected line,record_key,role,person_id,...",
                    w.truth.display(),
                    i + 2
                );
            };
            let line: u64 = line
                .parse()
                .with_context(|| format!("{}:{}: line", w.truth.display(), i + 2))?;
            let person: u64 = person
                .parse()
                .with_context(|| format!("{}:{}: person_id", w.truth.display(), i + 2))?;
            let dated = !r
                .get(5)
                .is_some_and(|e| e.split(';').any(|e| e == "dob_missing"));
            truth.entry((w.dataset.clone(), line)).or_default().push((
                role.to_owned(),
                person,
                dated,
            ));
            c.truth_roles += 1;
            if linkable {
                all_truth.entry(person).or_default()[agency] += 1;
            }
        }
    }
    let mut all_true_pairs = [[0u64; AGENCIES]; AGENCIES];
    for n in all_truth.values() {
        add_pairs(&mut all_true_pairs, n);
    }

    // Every live stored person role, with its true person.
    let mut nodes: Vec<Node> = Vec::new();
    let mut unmatched = 0u64;
    let snap = store.snapshot(&[], 0)?;
    let mut reader = store.reader();
    snap.for_each(&mut reader, |seq, rec| -> Result<(), StoreError> {
        let agency = agency_index(rec.agency);
        let line = catalog
            .dataset(rec.dataset)
            .and_then(|ds| SourceKey::of(ds, rec.record_key, rec.content_hash))
            .and_then(|k| lines.get(&k).copied());
        let roles = line.and_then(|l| truth.get(&(rec.dataset.to_owned(), l)));
        for (i, p) in rec.persons.iter().enumerate() {
            let mut same_role = roles
                .into_iter()
                .flatten()
                .filter(|(role, _, _)| *role == p.role);
            match (same_role.next(), same_role.next()) {
                (Some((_, person, dated)), None) => {
                    nodes.push(Node {
                        seq,
                        role: i,
                        truth: *person,
                        agency,
                        dataset: counts
                            .iter()
                            .position(|c| c.dataset == rec.dataset)
                            .unwrap_or(usize::MAX),
                        line: line.unwrap_or(0),
                        dated: *dated,
                    });
                    if let Some(c) = counts.iter_mut().find(|c| c.dataset == rec.dataset) {
                        c.nodes += 1;
                    }
                }
                _ => unmatched += 1,
            }
        }
        Ok(())
    })?;
    let setup_secs = t0.elapsed().as_secs_f64();

    let mut scores = Vec::new();
    for (name, kinds, fuzzy) in KIND_SETS {
        let set = LinkSet::new(store.clone(), std::sync::Arc::new(catalog.clone()));
        let key = LinkKey::new(KindSet::of(kinds), datasets.iter().cloned())
            .with_fuzzy(fuzzy.then_some(threshold));
        let t = Instant::now();
        let locked = set.synced(&key)?;
        let build_secs = t.elapsed().as_secs_f64();
        let mut st = locked.lock();
        let mut ids: HashMap<ClusterId, u32> = HashMap::new();
        let mut clustered = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let c = st.cluster(n.seq, n.role).with_context(|| {
                format!(
                    "the {name} linker has no cluster for role {} of record {}",
                    n.role, n.seq
                )
            })?;
            let next = ids.len() as u32;
            clustered.push((*ids.entry(c).or_insert(next), *n));
        }
        if key == fuzzy_key
            && let Some(inc) = incremental_report.as_mut()
        {
            // The incrementally kept linker against this one built on the whole store.
            let kept = kept.synced(&fuzzy_key)?;
            let mut kept = kept.lock();
            let mut pairs: HashMap<ClusterId, ClusterId> = HashMap::new();
            let mut back: HashMap<ClusterId, ClusterId> = HashMap::new();
            for n in &nodes {
                let a = st.cluster(n.seq, n.role);
                let b = kept.cluster(n.seq, n.role);
                if let (Some(a), Some(b)) = (a, b) {
                    let same =
                        *pairs.entry(a).or_insert(b) == b && *back.entry(b).or_insert(a) == a;
                    if !same {
                        inc.differing_nodes += 1;
                    }
                } else {
                    inc.differing_nodes += 1;
                }
            }
        }
        if let Some(dir) = std::env::var_os(DUMP_ENV) {
            dump_clusters(Path::new(&dir), name, &counts, &clustered)?;
        }
        scores.push(score(name, build_secs, &clustered));
    }
    Ok(Report {
        persons,
        seed,
        rows,
        datasets: counts,
        unmatched_nodes: unmatched,
        all_true_pairs,
        scores,
        setup_secs,
        incremental: incremental_report,
    })
}

/// Environment variable naming a directory where each configuration's clusters are written
/// (`<name>.csv`: dataset, source line, role index, true person, cluster) for error analysis,
/// beside the synthetic exports and their `truth/` (`exports/`).
pub const DUMP_ENV: &str = "SKP_BENCH_LINKAGE_DUMP";

/// Writes one configuration's node clusters for error analysis (see [`DUMP_ENV`]).
fn dump_clusters(
    dir: &Path,
    name: &str,
    counts: &[DatasetCounts],
    clustered: &[(u32, Node)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{}.csv", name.replace([' ', '+'], "_")));
    let mut w = csv::Writer::from_path(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.write_record(["dataset", "line", "role", "person_id", "cluster"])?;
    for (c, n) in clustered {
        let ds = counts.get(n.dataset).map_or("?", |c| c.dataset.as_str());
        w.write_record([
            ds,
            &n.line.to_string(),
            &n.role.to_string(),
            &n.truth.to_string(),
            &c.to_string(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Index of an agency in [`KINGSTON_AGENCIES`] (the catalog's owners are all among them).
fn agency_index(agency: &str) -> usize {
    KINGSTON_AGENCIES
        .iter()
        .position(|a| *a == agency)
        .unwrap_or(0)
}

/// The identity of one stored version: dataset, record-key token and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    dataset: String,
    record_key: [u8; 32],
    content_hash: [u8; 32],
}

impl SourceKey {
    fn of(ds: &Dataset, record_key: &[u8], content_hash: &[u8]) -> Option<Self> {
        Some(Self {
            dataset: ds.name.to_string(),
            record_key: record_key.try_into().ok()?,
            content_hash: content_hash.try_into().ok()?,
        })
    }
}

/// Pairs within each agency (diagonal) and across each agency pair (upper triangle) of a group
/// with `n[a]` nodes in agency `a`, added to `m`.
fn add_pairs(m: &mut PairMatrix, n: &[u64; AGENCIES]) {
    for a in 0..AGENCIES {
        m[a][a] += n[a] * n[a].saturating_sub(1) / 2;
        for b in a + 1..AGENCIES {
            m[a][b] += n[a] * n[b];
        }
    }
}

/// Groups present in each agency pair: in both agencies, or twice in one.
fn add_presence(m: &mut PairMatrix, n: &[u64; AGENCIES]) {
    for a in 0..AGENCIES {
        m[a][a] += u64::from(n[a] >= 2);
        for b in a + 1..AGENCIES {
            m[a][b] += u64::from(n[a] >= 1 && n[b] >= 1);
        }
    }
}

/// Scores clustered nodes against their true persons.
fn score(kinds: &'static str, build_secs: f64, nodes: &[(u32, Node)]) -> Scores {
    let mut by_cluster: HashMap<u32, [u64; AGENCIES]> = HashMap::new();
    let mut by_person: HashMap<u64, [u64; AGENCIES]> = HashMap::new();
    let mut by_both: HashMap<(u32, u64), [u64; AGENCIES]> = HashMap::new();
    for (c, n) in nodes {
        by_cluster.entry(*c).or_default()[n.agency] += 1;
        by_person.entry(n.truth).or_default()[n.agency] += 1;
        by_both.entry((*c, n.truth)).or_default()[n.agency] += 1;
    }
    let zero = [[0u64; AGENCIES]; AGENCIES];
    let (mut true_pairs, mut linked_pairs, mut correct_pairs) = (zero, zero, zero);
    let (mut persons_in, mut clusters_in) = (zero, zero);
    for n in by_cluster.values() {
        add_pairs(&mut linked_pairs, n);
        add_presence(&mut clusters_in, n);
    }
    for n in by_person.values() {
        add_pairs(&mut true_pairs, n);
        add_presence(&mut persons_in, n);
    }
    for n in by_both.values() {
        add_pairs(&mut correct_pairs, n);
    }
    let mut clusters_of_person: HashMap<u64, u32> = HashMap::new();
    let mut persons_of_cluster: HashMap<u32, u32> = HashMap::new();
    for (c, p) in by_both.keys() {
        *clusters_of_person.entry(*p).or_default() += 1;
        *persons_of_cluster.entry(*c).or_default() += 1;
    }
    // The pairs of dated nodes are the overall pairs of the dated nodes alone.
    let dated_nodes: Vec<(u32, Node)> = nodes.iter().filter(|(_, n)| n.dated).copied().collect();
    let dated = if dated_nodes.len() == nodes.len() {
        (
            total(&true_pairs),
            total(&linked_pairs),
            total(&correct_pairs),
        )
    } else {
        score(kinds, build_secs, &dated_nodes).overall()
    };
    Scores {
        kinds,
        build_secs,
        nodes: nodes.len() as u64,
        persons: by_person.len() as u64,
        clusters: by_cluster.len() as u64,
        split_persons: clusters_of_person.values().filter(|n| **n >= 2).count() as u64,
        impure_clusters: persons_of_cluster.values().filter(|n| **n >= 2).count() as u64,
        true_pairs,
        linked_pairs,
        correct_pairs,
        persons_in,
        clusters_in,
        dated,
    }
}

/// Every agency pair once, `a <= b` (the upper triangle with the diagonal).
fn agency_pairs() -> impl Iterator<Item = (usize, usize)> {
    (0..AGENCIES).flat_map(|a| (a..AGENCIES).map(move |b| (a, b)))
}

/// Sum of the upper triangle (every agency pair, once).
fn total(m: &PairMatrix) -> u64 {
    agency_pairs().map(|(a, b)| m[a][b]).sum()
}

/// True, linked and correct pairs with their precision, recall and F1, as JSON.
fn split_json((t, l, c): (u64, u64, u64)) -> serde_json::Value {
    let (p, r, f) = prf(c, l, t);
    serde_json::json!({
        "true_pairs": t,
        "linked_pairs": l,
        "correct_pairs": c,
        "precision": round4(p),
        "recall": round4(r),
        "f1": round4(f),
    })
}

/// (precision, recall, F1); NaN where undefined (no pairs).
fn prf(correct: u64, linked: u64, truth: u64) -> (f64, f64, f64) {
    let p = correct as f64 / linked as f64;
    let r = correct as f64 / truth as f64;
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        f64::NAN
    };
    (p, r, f)
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}%", x * 100.0)
    } else {
        "n/a".into()
    }
}

fn round4(x: f64) -> Option<f64> {
    x.is_finite().then(|| (x * 10_000.0).round() / 10_000.0)
}

impl Scores {
    fn overall(&self) -> (u64, u64, u64) {
        (
            total(&self.true_pairs),
            total(&self.linked_pairs),
            total(&self.correct_pairs),
        )
    }
}

impl Report {
    /// Prints the per-dataset counts and, per kind set, the overall and per-agency-pair scores.
    pub fn print(&self) {
        println!(
            "linkage benchmark: {} synthetic people (seed {}), source-shape exports of every dataset ({}), pushed as the agent does and stored as the gateway does; set-up {:.1} s",
            thousands(self.persons as f64),
            self.seed,
            self.rows
                .map_or("realistic volumes for one year".to_string(), |r| format!(
                    "{} rows per dataset",
                    thousands(r as f64)
                )),
            self.setup_secs
        );
        println!("{:-<118}", "");
        println!(
            "{:<30} {:<12} {:>8} {:>9} {:>9} {:>9} {:>6} {:>8} {:>11} {:>8}",
            "dataset",
            "agency",
            "rows",
            "agent rej",
            "gw rej",
            "accepted",
            "dups",
            "replaced",
            "truth roles",
            "nodes"
        );
        for c in &self.datasets {
            println!(
                "{:<30} {:<12} {:>8} {:>9} {:>9} {:>9} {:>6} {:>8} {:>11} {:>8}",
                c.dataset,
                c.agency,
                thousands(c.rows as f64),
                c.agent_rejected,
                c.gateway_rejected,
                thousands(c.accepted as f64),
                c.duplicates,
                c.replaced,
                thousands(c.truth_roles as f64),
                thousands(c.nodes as f64)
            );
        }
        if self.unmatched_nodes > 0 {
            println!(
                "stored person roles with no truth row: {}",
                self.unmatched_nodes
            );
        }
        for s in &self.scores {
            let (t, l, c) = s.overall();
            println!();
            println!(
                "linked on {} (linker built from the store in {:.3} s): {} person roles, {} true persons, {} clusters; {} persons split over 2+ clusters, {} clusters joining 2+ persons",
                s.kinds,
                s.build_secs,
                thousands(s.nodes as f64),
                thousands(s.persons as f64),
                thousands(s.clusters as f64),
                thousands(s.split_persons as f64),
                thousands(s.impure_clusters as f64)
            );
            println!(
                "{:<28} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
                "agency pair",
                "true pairs",
                "linked",
                "correct",
                "precision",
                "recall",
                "F1",
                "persons",
                "clusters",
                "e2e recall"
            );
            let row = |label: &str, t: u64, l: u64, c: u64, pi: u64, ci: u64, all: u64| {
                let (p, r, f) = prf(c, l, t);
                println!(
                    "{:<28} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
                    label,
                    thousands(t as f64),
                    thousands(l as f64),
                    thousands(c as f64),
                    pct(p),
                    pct(r),
                    pct(f),
                    thousands(pi as f64),
                    thousands(ci as f64),
                    pct(c as f64 / all as f64)
                );
            };
            for (a, b) in agency_pairs() {
                if s.true_pairs[a][b] == 0 && s.linked_pairs[a][b] == 0 {
                    continue;
                }
                row(
                    &format!("{} × {}", KINGSTON_AGENCIES[a], KINGSTON_AGENCIES[b]),
                    s.true_pairs[a][b],
                    s.linked_pairs[a][b],
                    s.correct_pairs[a][b],
                    s.persons_in[a][b],
                    s.clusters_in[a][b],
                    self.all_true_pairs[a][b],
                );
            }
            row(
                "overall",
                t,
                l,
                c,
                s.persons,
                s.clusters,
                total(&self.all_true_pairs),
            );
            let (dt, dl, dc) = s.dated;
            for (label, t, l, c) in [
                ("pairs both dated", dt, dl, dc),
                ("pairs with an undated role", t - dt, l - dl, c - dc),
            ] {
                let (p, r, f) = prf(c, l, t);
                println!(
                    "{:<28} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9}",
                    label,
                    thousands(t as f64),
                    thousands(l as f64),
                    thousands(c as f64),
                    pct(p),
                    pct(r),
                    pct(f)
                );
            }
        }
        if let Some(i) = &self.incremental {
            println!(
                "incremental (demo fuzzy): {} {} records added to a store of {} person nodes linked in {:.3} s (model estimated); brought up to date in {:.3} s ({} nodes), {} rebuilds, {} nodes clustered differently from a linker built on the whole store at once",
                thousands(i.records as f64),
                i.dataset,
                thousands(i.nodes_before as f64),
                i.full_secs,
                i.incremental_secs,
                thousands(i.nodes_after as f64),
                i.rebuilds,
                i.differing_nodes
            );
        }
        if let Ok(k) = crate::procfs::peak_rss_kib(std::process::id()) {
            println!("peak RSS {} MiB", k / 1024);
        }
        println!(
            "pairs are of person roles of live stored records (nodes); persons / clusters per pair: true persons / clusters with nodes in both agencies (or 2+ nodes in one); e2e recall: correct pairs / true pairs over every truth role of the datasets with person roles, counting roles that never reached the linker (rows the agent refused, roles with no token: no name or date of birth); \"pairs both dated\": pairs of two roles recorded with a date of birth, \"with an undated role\": the rest (police ASB callers recorded without one)"
        );
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let scores: Vec<serde_json::Value> = self
            .scores
            .iter()
            .map(|s| {
                let (t, l, c) = s.overall();
                let (p, r, f) = prf(c, l, t);
                let pairs: Vec<serde_json::Value> = agency_pairs()
                    .map(|(a, b)| {
                        let (pp, rr, ff) = prf(
                            s.correct_pairs[a][b],
                            s.linked_pairs[a][b],
                            s.true_pairs[a][b],
                        );
                        serde_json::json!({
                            "agencies": [KINGSTON_AGENCIES[a], KINGSTON_AGENCIES[b]],
                            "true_pairs": s.true_pairs[a][b],
                            "linked_pairs": s.linked_pairs[a][b],
                            "correct_pairs": s.correct_pairs[a][b],
                            "precision": round4(pp),
                            "recall": round4(rr),
                            "f1": round4(ff),
                            "true_persons": s.persons_in[a][b],
                            "clusters": s.clusters_in[a][b],
                            "end_to_end_true_pairs": self.all_true_pairs[a][b],
                            "end_to_end_recall": round4(
                                s.correct_pairs[a][b] as f64 / self.all_true_pairs[a][b] as f64
                            ),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "kinds": s.kinds,
                    "build_secs": (s.build_secs * 1000.0).round() / 1000.0,
                    "nodes": s.nodes,
                    "true_persons": s.persons,
                    "clusters": s.clusters,
                    "split_persons": s.split_persons,
                    "impure_clusters": s.impure_clusters,
                    "true_pairs": t,
                    "linked_pairs": l,
                    "correct_pairs": c,
                    "precision": round4(p),
                    "recall": round4(r),
                    "f1": round4(f),
                    "end_to_end_true_pairs": total(&self.all_true_pairs),
                    "end_to_end_recall": round4(c as f64 / total(&self.all_true_pairs) as f64),
                    "agency_pairs": pairs,
                    "dated_pairs": split_json(s.dated),
                    "undated_pairs": split_json((t - s.dated.0, l - s.dated.1, c - s.dated.2)),
                })
            })
            .collect();
        let datasets: Vec<serde_json::Value> = self
            .datasets
            .iter()
            .map(|c| {
                serde_json::json!({
                    "dataset": c.dataset,
                    "agency": c.agency,
                    "rows": c.rows,
                    "agent_rejected": c.agent_rejected,
                    "gateway_rejected": c.gateway_rejected,
                    "accepted": c.accepted,
                    "duplicates": c.duplicates,
                    "replaced": c.replaced,
                    "truth_roles": c.truth_roles,
                    "nodes": c.nodes,
                })
            })
            .collect();
        serde_json::json!({
            "bench": "linkage",
            "persons": self.persons,
            "seed": self.seed,
            "rows_per_dataset": self.rows,
            "datasets": datasets,
            "unmatched_nodes": self.unmatched_nodes,
            "kind_sets": scores,
            "incremental": self.incremental.as_ref().map(|i| serde_json::json!({
                "dataset": i.dataset,
                "records": i.records,
                "nodes_before": i.nodes_before,
                "nodes_after": i.nodes_after,
                "full_build_secs": i.full_secs,
                "incremental_secs": i.incremental_secs,
                "rebuilds": i.rebuilds,
                "differing_nodes": i.differing_nodes,
            })),
            "peak_rss_mib": crate::procfs::peak_rss_kib(std::process::id()).ok().map(|k| k / 1024),
        })
    }
}

/// An agent config for `agency` with the mapping `agent synth` wrote beside its exports, as an
/// agency would append it to its `agent.toml` (the TLS and key paths are never read here).
pub(crate) fn agency_config(exports: &Path, agency: &str) -> Result<AgentConfig> {
    let mapping_path = exports.join(format!("{agency}.agent.toml"));
    let mapping = std::fs::read_to_string(&mapping_path)
        .with_context(|| format!("cannot read {}", mapping_path.display()))?;
    let text = format!(
        "agency = \"{agency}\"\ngateway = \"https://localhost:7443\"\nstate_dir = \"state\"\n\
         [tls]\nca = \"ca.pem\"\ncert = \"agent.pem\"\nkey = \"agent.key\"\n\
         [linkage_key]\nfile = \"link.key\"\nversion = 1\n{mapping}"
    );
    let path = exports.join(format!("{agency}-bench-agent.toml"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    AgentConfig::load(&path)
}

/// Refuses an export that lacks a required column, as `agent push` does.
pub(crate) fn require_columns(p: &Pseudonymiser<'_>, header: &[String], file: &Path) -> Result<()> {
    let missing: Vec<String> = p
        .missing_columns(header)
        .into_iter()
        .filter(|(_, _, required)| *required)
        .map(|(f, c, _)| format!("\"{c}\" (field {f})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: the export lacks required column(s) {}",
            file.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The gateway's ingest path in-process: the batch header checked against the catalog, every
/// record re-validated (`validate::plan` + `check`), the accepted ones written to the store.
pub(crate) struct GatewayIngest<'c> {
    catalog: &'c Catalog,
    store: &'c Store,
    agency: AgencyId,
    batches: u64,
}

impl<'c> GatewayIngest<'c> {
    /// The ingest path of `agency`'s agent.
    pub(crate) fn new(catalog: &'c Catalog, store: &'c Store, agency: &str) -> Result<Self> {
        Ok(Self {
            catalog,
            store,
            agency: AgencyId::new(agency)?,
            batches: 0,
        })
    }

    /// Validates and stores one batch, adding its outcomes to `c`.
    pub(crate) fn push(
        &mut self,
        rt: &tokio::runtime::Runtime,
        ds: &Dataset,
        records: Vec<Record>,
        c: &mut DatasetCounts,
    ) -> Result<()> {
        self.batches += 1;
        let batch = IngestBatch {
            dataset: ds.name.to_string(),
            schema_version: ds.version,
            fields: ds.sent_fields().map(|f| f.name.to_string()).collect(),
            records: Vec::new(),
            batch_id: format!("bench#{}", self.batches),
        };
        let plan = gateway::validate::plan(self.catalog, &self.agency, &batch)
            .map_err(|e| anyhow::anyhow!("{}: batch refused: {e}", ds.name))?;
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let mut checked = Vec::with_capacity(records.len());
        for r in records {
            match plan.check(&self.agency, r, now_ms) {
                Ok(n) => checked.push(n),
                Err(_) => c.gateway_rejected += 1,
            }
        }
        if checked.is_empty() {
            return Ok(());
        }
        for o in rt.block_on(self.store.ingest(checked))? {
            match o {
                Outcome::Accepted => c.accepted += 1,
                Outcome::Duplicate => c.duplicates += 1,
                Outcome::Replaced => c.replaced += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(truth: u64, agency: usize) -> Node {
        Node {
            seq: 0,
            role: 0,
            truth,
            agency,
            dataset: 0,
            line: 0,
            dated: true,
        }
    }

    #[test]
    fn pairs_are_counted_from_group_sizes() {
        // Person 1: three nodes (police, police, council), all in cluster 0.
        // Person 2: two nodes (council, icb), split over clusters 1 and 2.
        // Cluster 0 also holds a police node of person 3 (a false link).
        let nodes = [
            (0, node(1, 0)),
            (0, node(1, 0)),
            (
                0,
                Node {
                    dated: false,
                    ..node(1, 1)
                },
            ),
            (1, node(2, 1)),
            (2, node(2, 4)),
            (0, node(3, 0)),
        ];
        let s = score("test", 0.0, &nodes);
        let (t, l, c) = s.overall();
        // True: person 1 has 3 pairs, person 2 has 1. Linked: cluster 0 has 4 nodes, 6 pairs.
        assert_eq!((t, l, c), (4, 6, 3));
        assert_eq!(s.true_pairs[0][0], 1);
        assert_eq!(s.true_pairs[0][1], 2);
        assert_eq!(s.true_pairs[1][4], 1);
        assert_eq!(s.linked_pairs[0][0], 3);
        assert_eq!(s.linked_pairs[0][1], 3);
        assert_eq!(s.correct_pairs[0][1], 2);
        assert_eq!(s.correct_pairs[1][4], 0);
        assert_eq!((s.persons, s.clusters), (3, 3));
        assert_eq!((s.split_persons, s.impure_clusters), (1, 1));
        assert_eq!(s.persons_in[1][4], 1);
        assert_eq!(s.clusters_in[1][4], 0);
        let (p, r, _) = prf(c, l, t);
        assert!((p - 0.5).abs() < 1e-12 && (r - 0.75).abs() < 1e-12);
        // Without person 1's undated council node: true 1 + 1, linked 3 (cluster 0) + 0 + 0,
        // correct 1 (person 1's two police nodes).
        assert_eq!(s.dated, (2, 3, 1));
    }

    #[test]
    fn small_population_links_and_scores_every_stored_role() -> Result<()> {
        let report = measure(300, 3, Some(150), DEFAULT_THRESHOLD, 20)?;
        assert_eq!(
            report.unmatched_nodes, 0,
            "every stored role has a truth row"
        );
        let stored: u64 = report.datasets.iter().map(|c| c.nodes).sum();
        assert!(stored > 500, "{stored} nodes");
        for c in &report.datasets {
            assert_eq!(
                c.rows,
                c.agent_rejected + c.gateway_rejected + c.accepted + c.duplicates + c.replaced,
                "{}",
                c.dataset
            );
        }
        assert_eq!(report.scores.len(), KIND_SETS.len());
        for s in &report.scores {
            assert_eq!(s.nodes, stored);
            let (t, l, c) = s.overall();
            assert!(
                c <= t && c <= l,
                "{}: {c} correct of {t} true, {l} linked",
                s.kinds
            );
            assert!(t > 0 && c > 0, "{}", s.kinds);
            // Pairs of two dated roles are a part of every count; roles without a date of
            // birth (police ASB callers) leave some true pairs outside it.
            let (dt, dl, dc) = s.dated;
            assert!(
                dt < t && dl <= l && dc <= c && dc <= dt,
                "{}: {:?}",
                s.kinds,
                s.dated
            );
        }
        // The demo token needs a date of birth, and callers carry no NHS or PNC number: exact
        // linkage never links an undated role.
        for s in &report.scores[..3] {
            let (t, l, c) = s.overall();
            assert_eq!((s.dated.1, s.dated.2), (l, c), "{}", s.kinds);
            assert!(s.dated.0 < t);
        }
        // More kinds never link less: demo-only pairs are a subset of nhs+pnc+demo pairs.
        let all = report.scores[0].overall();
        let demo = report.scores[2].overall();
        assert!(demo.1 <= all.1 && demo.2 <= all.2);
        // Fuzzy linkage finds at least the correct pairs exact demo linkage finds, and more.
        let fuzzy = report.scores[5].overall();
        assert!(fuzzy.2 > demo.2, "fuzzy {fuzzy:?}, exact {demo:?}");
        let json = report.json();
        assert_eq!(
            json["kind_sets"][0]["agency_pairs"]
                .as_array()
                .map(Vec::len),
            Some(15)
        );
        Ok(())
    }
}
