//! Writing a release's files: record extracts (row filter, transforms, re-keyed person ids,
//! k-anonymity) and counts tables (transforms, primary and secondary suppression), streamed
//! from the store to a spool folder with their SHA-256 computed on the way.

use super::linkset::LinkState;
use crate::disclosure::{self, Cell as DCell, Settings, Table};
use crate::linkage::{ClusterId, Linker, PersonNode, ReleaseKeys};
use crate::policy::apply::ReleasePlan;
use crate::store::{Snapshot, Store, StoreError, Want};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What was written to one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// File name.
    pub name: String,
    /// Dataset it came from.
    pub dataset: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Data rows written (extract) or table rows (aggregate, totals row excluded).
    pub rows: u64,
    /// Rows suppressed by k-anonymity.
    pub suppressed_rows: u64,
    /// Cells released empty because their transform could not read the stored value.
    pub withheld_cells: u64,
    /// Table entries suppressed (primary + secondary).
    pub suppressed_cells: u64,
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// People seen in released rows, for the manifest's linkage summary and the registry.
#[derive(Default)]
pub struct PeopleSeen {
    /// A cluster's least slot in the linker → 1 + its index in `order` (0: not seen yet).
    by_slot: Vec<u32>,
    /// Per cluster seen, in order: (first agency seen, seen in another agency too).
    info: Vec<(u16, bool)>,
    /// Per released row with people: indices of its people's clusters, `u32::MAX`-terminated.
    row_clusters: Vec<u32>,
    order: Vec<ClusterId>,
    /// Released person ids (32 hex characters) by index in `order`, computed once per person
    /// (not per row); all zero bytes until computed.
    ids: Vec<[u8; 32]>,
    /// Sequence numbers of rows with a linked person.
    seqs: Vec<u64>,
    agencies: Vec<String>,
    /// Person roles released.
    pub person_nodes: u64,
}

impl PeopleSeen {
    /// A new, empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    fn agency(&mut self, name: &str) -> u16 {
        match self.agencies.iter().position(|a| a == name) {
            Some(i) => i as u16,
            None => {
                self.agencies.push(name.to_owned());
                (self.agencies.len() - 1) as u16
            }
        }
    }

    /// Notes a released person role of cluster `c` (whose least linker slot is `least`);
    /// returns the cluster's index in order of first sight and whether this is the first.
    fn see(&mut self, least: u32, c: ClusterId, agency: u16) -> (usize, bool) {
        self.person_nodes += 1;
        let at = least as usize;
        if self.by_slot.len() <= at {
            self.by_slot.resize(at + 1, 0);
        }
        let (i, new) = match self.by_slot[at] {
            0 => {
                self.order.push(c);
                self.info.push((agency, false));
                self.by_slot[at] = self.order.len() as u32;
                (self.order.len() - 1, true)
            }
            n => {
                let i = n as usize - 1;
                if self.info[i].0 != agency {
                    self.info[i].1 = true;
                }
                (i, false)
            }
        };
        self.row_clusters.push(i as u32);
        (i, new)
    }

    /// Adds what `other` saw after what this one saw, as if one tally had seen both in turn.
    pub fn absorb(&mut self, other: PeopleSeen) {
        // other's index → its least slot.
        let mut least_of = vec![0u32; other.order.len()];
        for (slot, v) in other.by_slot.iter().enumerate() {
            if *v > 0 {
                least_of[*v as usize - 1] = slot as u32;
            }
        }
        let agency_map: Vec<u16> = other.agencies.iter().map(|a| self.agency(a)).collect();
        let mut remap = Vec::with_capacity(other.order.len());
        for (j, c) in other.order.iter().enumerate() {
            let at = least_of[j] as usize;
            if self.by_slot.len() <= at {
                self.by_slot.resize(at + 1, 0);
            }
            let (first, multi) = other.info[j];
            let first = agency_map.get(first as usize).copied().unwrap_or(first);
            match self.by_slot[at] {
                0 => {
                    self.order.push(*c);
                    self.info.push((first, multi));
                    if self.ids.len() < self.order.len() - 1 {
                        self.ids.resize(self.order.len() - 1, [0; 32]);
                    }
                    self.ids.push(other.ids.get(j).copied().unwrap_or([0; 32]));
                    self.by_slot[at] = self.order.len() as u32;
                    remap.push(self.order.len() as u32 - 1);
                }
                n => {
                    let i = n as usize - 1;
                    if self.info[i].0 != first || multi {
                        self.info[i].1 = true;
                    }
                    remap.push(i as u32);
                }
            }
        }
        self.row_clusters.extend(other.row_clusters.iter().map(|x| {
            if *x == u32::MAX {
                u32::MAX
            } else {
                remap[*x as usize]
            }
        }));
        self.seqs.extend(other.seqs);
        self.person_nodes += other.person_nodes;
    }

    /// The released id of the `i`th cluster seen.
    fn person_id(&mut self, i: usize, keys: &ReleaseKeys) -> &str {
        if self.ids.len() < self.order.len() {
            self.ids.resize(self.order.len(), [0; 32]);
        }
        let c = self.order[i];
        let id = &mut self.ids[i];
        if id[0] == 0 {
            let p = keys.person_id(c);
            let b = p.as_str().as_bytes();
            if b.len() == 32 {
                id.copy_from_slice(b);
            }
        }
        std::str::from_utf8(id).unwrap_or_default()
    }

    fn end_row(&mut self, seq: u64) {
        if self.row_clusters.last().is_some_and(|x| *x != u32::MAX) {
            self.row_clusters.push(u32::MAX);
            self.seqs.push(seq);
        }
    }

    /// Store sequence numbers of the released rows that showed a linked person, sorted.
    pub fn seqs(&self) -> Vec<u64> {
        let mut v = self.seqs.clone();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// (clusters, clusters seen in two or more person roles, clusters seen in two or more
    /// agencies, released rows with a person in a cross-agency cluster).
    pub fn summary(&self) -> (u64, u64, u64, u64) {
        let mut counts = vec![0u32; self.order.len()];
        for x in &self.row_clusters {
            if let Some(n) = counts.get_mut(*x as usize) {
                *n += 1;
            }
        }
        let cross: Vec<bool> = self.info.iter().map(|e| e.1).collect();
        let mut linked_rows = 0;
        let mut row_linked = false;
        for x in &self.row_clusters {
            if *x == u32::MAX {
                if row_linked {
                    linked_rows += 1;
                }
                row_linked = false;
            } else if cross.get(*x as usize).copied().unwrap_or(false) {
                row_linked = true;
            }
        }
        (
            self.order.len() as u64,
            counts.iter().filter(|n| **n >= 2).count() as u64,
            cross.iter().filter(|m| **m).count() as u64,
            linked_rows,
        )
    }
}

/// One dataset of an extract.
pub struct ExtractPart<'a> {
    /// Dataset name.
    pub dataset: &'a str,
    /// The compiled decision.
    pub plan: &'a ReleasePlan,
    /// Person roles whose ids are released, in column order.
    pub persons: &'a [String],
    /// Indices into `plan.columns` of the quasi-identifiers.
    pub qi: Vec<usize>,
    /// The records, as of the release.
    pub snapshot: Snapshot,
}

/// Failures while writing a release.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spool could not be written.
    #[error("cannot write the release spool: {0}")]
    Io(#[from] std::io::Error),
    /// CSV encoding failed.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Disclosure control refused the table.
    #[error(transparent)]
    Disclosure(#[from] disclosure::DisclosureError),
}

/// A writer that hashes and counts what passes through it.
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

fn csv_writer(path: &Path) -> Result<csv::Writer<Hashing<BufWriter<File>>>, BuildError> {
    let f = File::create(path)?;
    Ok(csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Hashing {
            inner: BufWriter::with_capacity(1 << 20, f),
            hash: Sha256::new(),
            bytes: 0,
        }))
}

fn finish(
    w: csv::Writer<Hashing<BufWriter<File>>>,
    stats: &mut FileStats,
) -> Result<(), BuildError> {
    let h = w.into_inner().map_err(|e| e.into_error())?;
    finish_inner(h, stats)
}

fn finish_inner(h: Hashing<BufWriter<File>>, stats: &mut FileStats) -> Result<(), BuildError> {
    let f = h.inner.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    stats.bytes = h.bytes;
    stats.sha256 = hex::encode(h.hash.finalize());
    Ok(())
}

/// Writes one dataset of an extract to `dir/<dataset>.csv`: rows the filter admits, person id
/// columns first (`<role>_person_id`), then the released columns; rows whose quasi-identifier
/// class has fewer than `k` rows are suppressed (a first pass counts the classes).
///
/// Both passes split the snapshot into contiguous parts read by one thread each (as many as
/// the machine has cores, at most [`MAX_PARTS`]): the first part writes the file, the others
/// temporary files appended to it in order, so the file and its SHA-256 are exactly what one
/// thread would write; the people each part saw are merged in the same order.
pub fn write_extract(
    store: &Store,
    dir: &Path,
    part: &ExtractPart<'_>,
    k: u64,
    links: &mut LinkState,
    keys: &ReleaseKeys,
    people: &mut PeopleSeen,
) -> Result<FileStats, BuildError> {
    let name = format!("{}.csv", part.dataset);
    let mut stats = FileStats {
        name: name.clone(),
        dataset: part.dataset.to_owned(),
        columns: part
            .persons
            .iter()
            .map(|r| format!("{r}_person_id"))
            .chain(part.plan.columns.iter().map(|c| c.name.clone()))
            .collect(),
        ..FileStats::default()
    };
    let ranges = split(part.snapshot.len());
    // Pass 1: class sizes (k-anonymity), reading only the filter's fields and the
    // quasi-identifiers. With k <= 1 every row is kept. With no quasi-identifier released,
    // every admitted row is in one class: with no filter its size is the snapshot's.
    let mut classes: HashMap<String, u64> = HashMap::new();
    let one_class = part.qi.is_empty() && !part.plan.has_filter();
    if k > 1 && one_class {
        classes.insert(String::new(), part.snapshot.len() as u64);
    } else if k > 1 {
        let counted = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|r| scope.spawn(|| count_classes(store, part, r.clone())))
                .collect();
            handles.into_iter().map(join).collect::<Vec<_>>()
        });
        for c in counted {
            for (key, n) in c? {
                *classes.entry(key).or_default() += n;
            }
        }
    }
    // Pass 2: write.
    links.linker.freeze();
    let linker = &links.linker;
    let path = dir.join(&name);
    let mut w = csv_writer(&path)?;
    w.write_record(&stats.columns)?;
    let temps: Vec<PathBuf> = (1..ranges.len())
        .map(|i| dir.join(format!(".{name}.part{i}")))
        .collect();
    let classes = &classes;
    let results = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, r) in ranges.iter().enumerate().skip(1) {
            let temp = &temps[i - 1];
            let r = r.clone();
            handles.push(scope.spawn(move || -> Result<Written, BuildError> {
                let f = File::create(temp)?;
                let mut tw = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(BufWriter::with_capacity(1 << 20, f));
                let out = write_rows(store, part, k, classes, linker, keys, r, &mut tw)?;
                tw.flush()?;
                Ok(out)
            }));
        }
        let first = match ranges.first() {
            Some(r) => write_rows(store, part, k, classes, linker, keys, r.clone(), &mut w),
            None => Ok(Written::default()),
        };
        let rest: Vec<_> = handles.into_iter().map(join).collect();
        (first, rest)
    });
    let (first, rest) = results;
    let mut all = vec![first];
    all.extend(rest);
    let mut h = w.into_inner().map_err(|e| e.into_error())?;
    let mut outcome = Ok(());
    for (i, written) in all.into_iter().enumerate() {
        match written {
            Ok(written) => {
                stats.rows += written.rows;
                stats.suppressed_rows += written.suppressed;
                stats.withheld_cells += written.withheld;
                people.absorb(written.people);
                if i > 0 && outcome.is_ok() {
                    outcome = File::open(&temps[i - 1])
                        .and_then(|mut t| std::io::copy(&mut t, &mut h))
                        .map(|_| ());
                }
            }
            Err(e) => {
                if outcome.is_ok() {
                    outcome = Err(std::io::Error::other(e.to_string()));
                }
            }
        }
    }
    for t in &temps {
        let _ = std::fs::remove_file(t);
    }
    outcome?;
    finish_inner(h, &mut stats)?;
    Ok(stats)
}

/// Most threads one extract pass uses.
pub const MAX_PARTS: usize = 4;

/// Splits `n` records into contiguous parts, one per thread (none when `n` is 0).
fn split(n: usize) -> Vec<std::ops::Range<usize>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, MAX_PARTS);
    let parts = threads.min(n.max(1));
    let size = n.div_ceil(parts);
    (0..parts)
        .map(|i| (i * size).min(n)..((i + 1) * size).min(n))
        .filter(|r| !r.is_empty() || n == 0)
        .take(if n == 0 { 0 } else { parts })
        .collect()
}

/// A thread's result, its panic turned into an error.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, BuildError>>) -> Result<T, BuildError> {
    h.join().unwrap_or_else(|_| {
        Err(BuildError::Io(std::io::Error::other(
            "internal: a release thread panicked",
        )))
    })
}

/// Class sizes of the admitted records at positions `range` of the snapshot.
fn count_classes(
    store: &Store,
    part: &ExtractPart<'_>,
    range: std::ops::Range<usize>,
) -> Result<HashMap<String, u64>, BuildError> {
    let mut classes: HashMap<String, u64> = HashMap::new();
    let mut key = String::new();
    let mut reader = store.reader();
    let count_mask = part.plan.value_mask_of(&part.qi);
    let want = Want {
        persons: false,
        values: Some(&count_mask),
    };
    part.snapshot.for_each_in(
        range,
        &mut reader,
        want,
        |_, rec| -> Result<(), BuildError> {
            let v = rec.values.as_slice();
            if part.plan.admits(v) {
                part.plan.class_key(v, &part.qi, &mut key);
                match classes.get_mut(key.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        classes.insert(key.clone(), 1);
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(classes)
}

/// What one part of the write pass wrote.
#[derive(Default)]
struct Written {
    rows: u64,
    suppressed: u64,
    withheld: u64,
    people: PeopleSeen,
}

/// Writes the released rows of the records at positions `range` of the snapshot to `w`.
#[allow(clippy::too_many_arguments)]
fn write_rows<W: Write>(
    store: &Store,
    part: &ExtractPart<'_>,
    k: u64,
    classes: &HashMap<String, u64>,
    linker: &Linker,
    keys: &ReleaseKeys,
    range: std::ops::Range<usize>,
    w: &mut csv::Writer<W>,
) -> Result<Written, BuildError> {
    let mut out = Written::default();
    let ncols = part.plan.columns.len();
    let mask = part.plan.value_mask();
    let mut withheld = Vec::new();
    let mut key = String::new();
    let mut reader = store.reader();
    let want = Want {
        persons: true,
        values: Some(&mask),
    };
    // Where the linker lookups are (rows come in store order, so nodes ascend).
    let mut hint = 0usize;
    let people = &mut out.people;
    part.snapshot.for_each_in(
        range,
        &mut reader,
        want,
        |seq, rec| -> Result<(), BuildError> {
            let v = rec.values.as_slice();
            if !part.plan.admits(v) {
                return Ok(());
            }
            let mut cells = Vec::with_capacity(ncols);
            part.plan.apply(v, &mut cells, &mut withheld);
            if k > 1 {
                part.plan.class_key(v, &part.qi, &mut key);
                if classes.get(key.as_str()).copied().unwrap_or(0) < k {
                    out.suppressed += 1;
                    withheld.clear();
                    return Ok(());
                }
            }
            out.withheld += withheld.len() as u64;
            withheld.clear();
            let agency = people.agency(rec.agency);
            for role in part.persons {
                let slot = rec
                    .persons
                    .iter()
                    .position(|p| p.role == role)
                    .and_then(|i| {
                        linker.slot_near_shared(&mut hint, PersonNode::new(seq, i as u32))
                    });
                match slot {
                    Some(slot) => {
                        let (least, c) = linker.least_of_shared(slot);
                        let (i, _) = people.see(least, c, agency);
                        w.write_field(people.person_id(i, keys))?;
                    }
                    None => w.write_field("")?,
                }
            }
            people.end_row(seq);
            for c in &cells {
                w.write_field(c.as_deref().unwrap_or(""))?;
            }
            w.write_record(None::<&[u8]>)?;
            out.rows += 1;
            Ok(())
        },
    )?;
    Ok(out)
}

/// One counts table.
pub struct AggregatePart<'a> {
    /// Dataset name.
    pub dataset: &'a str,
    /// The compiled decision over the `by` fields (its columns, in request order).
    pub plan: &'a ReleasePlan,
    /// The records, as of the release.
    pub snapshot: Snapshot,
}

/// Label of an empty cell in a table.
pub const MISSING_LABEL: &str = "(missing)";
/// Rendering of a suppressed table entry (the partnership's SDC default).
pub const SUPPRESSED: &str = "c";
/// Rendering of a suppressed entry under the NHS health rule.
pub const SUPPRESSED_HEALTH: &str = "*";

/// Writes `dir/<dataset>_by_<fields>.csv`: counts of admitted records by the released values of
/// the plan's columns (the first column gives the table's rows, the others together its
/// columns), with primary and secondary suppression and, under the health rule, rounding.
/// People of counted records are noted in `people` (for "who saw this person"), and the
/// fingerprint of every counted record version in `units` (for differencing control: see
/// [`super::differencing`]).
pub fn write_aggregate(
    store: &Store,
    dir: &Path,
    part: &AggregatePart<'_>,
    settings: &Settings,
    links: &mut LinkState,
    people: &mut PeopleSeen,
    units: &mut Vec<u64>,
) -> Result<FileStats, BuildError> {
    let by: Vec<&str> = part.plan.columns.iter().map(|c| c.name.as_str()).collect();
    let name = format!("{}_by_{}.csv", part.dataset, by.join("_"));
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let ncols = part.plan.columns.len();
    let mut withheld = Vec::new();
    let mut withheld_cells = 0u64;
    let mut reader = store.reader();
    let mask = part.plan.value_mask();
    let want = Want {
        persons: true,
        values: Some(&mask),
    };
    let mut hint = 0usize;
    part.snapshot
        .for_each_some(&mut reader, want, |seq, rec| -> Result<(), BuildError> {
            let v = rec.values.as_slice();
            if !part.plan.admits(v) {
                return Ok(());
            }
            let mut cells = Vec::with_capacity(ncols);
            part.plan.apply(v, &mut cells, &mut withheld);
            withheld_cells += withheld.len() as u64;
            withheld.clear();
            let label = |c: &Option<std::borrow::Cow<'_, str>>| {
                c.as_deref().unwrap_or(MISSING_LABEL).to_owned()
            };
            let row = cells.first().map(label).unwrap_or_default();
            let col = if cells.len() > 1 {
                cells[1..].iter().map(label).collect::<Vec<_>>().join(" | ")
            } else {
                "count".to_owned()
            };
            *counts.entry((row, col)).or_default() += 1;
            // The record's version (key and content hash): a correction is another unit.
            units.push(super::differencing::fingerprint(
                part.dataset,
                rec.record_key,
                rec.content_hash,
            ));
            let agency = people.agency(rec.agency);
            let n = rec.persons.len();
            for i in 0..n {
                if let Some((least, c)) = links.cluster_near(&mut hint, seq, i) {
                    people.see(least, c, agency);
                }
            }
            people.end_row(seq);
            Ok(())
        })?;
    let mut rows: Vec<String> = counts.keys().map(|(r, _)| r.clone()).collect();
    rows.dedup();
    let mut cols: Vec<String> = counts.keys().map(|(_, c)| c.clone()).collect();
    cols.sort();
    cols.dedup();
    let table = Table {
        cells: rows
            .iter()
            .map(|r| {
                cols.iter()
                    .map(|c| counts.get(&(r.clone(), c.clone())).copied().unwrap_or(0))
                    .collect()
            })
            .collect(),
        rows,
        cols,
    };
    let p = disclosure::protect_table(&table, settings)?;
    let one_way = p.cols.len() == 1 && by.len() == 1;
    let header_cols: Vec<String> = if by.len() > 1 {
        let mut h = vec![format!("{} \\ {}", by[0], by[1..].join(" | "))];
        h.extend(p.cols.iter().cloned());
        h.push("total".into());
        h
    } else {
        vec![
            by.first().copied().unwrap_or("value").to_owned(),
            "count".into(),
        ]
    };
    let mut stats = FileStats {
        name: name.clone(),
        dataset: part.dataset.to_owned(),
        columns: header_cols.clone(),
        rows: p.rows.len() as u64,
        withheld_cells,
        suppressed_cells: p.suppressed_primary + p.suppressed_secondary,
        ..FileStats::default()
    };
    let show = |c: &DCell| match c {
        DCell::Count(n) => n.to_string(),
        DCell::Suppressed if settings.health_rule => SUPPRESSED_HEALTH.to_owned(),
        DCell::Suppressed => SUPPRESSED.to_owned(),
    };
    let mut w = csv_writer(&dir.join(&name))?;
    w.write_record(&header_cols)?;
    for (i, r) in p.rows.iter().enumerate() {
        let mut line = vec![r.clone()];
        if one_way {
            // The cell and its row total are one number: shown only if both are.
            let both = match (p.cells[i][0], p.row_totals[i]) {
                (DCell::Count(n), DCell::Count(_)) => DCell::Count(n),
                _ => DCell::Suppressed,
            };
            line.push(show(&both));
        } else {
            line.extend(p.cells[i].iter().map(show));
            line.push(show(&p.row_totals[i]));
        }
        w.write_record(&line)?;
    }
    let mut total = vec!["total".to_owned()];
    if !one_way {
        total.extend(p.col_totals.iter().map(show));
    }
    total.push(show(&p.grand_total));
    w.write_record(&total)?;
    finish(w, &mut stats)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rows of people: per row, the (least slot, agency) of each person shown.
    fn rows() -> impl Strategy<Value = Vec<Vec<(u32, u8)>>> {
        proptest::collection::vec(proptest::collection::vec((0u32..30, 0u8..3), 0..4), 0..40)
    }

    fn tally(rows: &[Vec<(u32, u8)>], first_seq: u64) -> PeopleSeen {
        let mut p = PeopleSeen::new();
        for (r, people) in rows.iter().enumerate() {
            for &(least, agency) in people {
                let a = p.agency(&format!("agency-{agency}"));
                p.see(
                    least,
                    ClusterId(PersonNode::new(u64::from(least) + 1, 0)),
                    a,
                );
            }
            p.end_row(first_seq + r as u64);
        }
        p
    }

    proptest! {
        /// Tallies of the parts of a pass, absorbed in order, equal one tally of the pass.
        #[test]
        fn absorbing_parts_equals_one_tally(rows in rows(), cut in any::<prop::sample::Index>()) {
            let at = cut.index(rows.len() + 1);
            let whole = tally(&rows, 1);
            let mut first = tally(&rows[..at], 1);
            first.absorb(tally(&rows[at..], 1 + at as u64));
            prop_assert_eq!(first.summary(), whole.summary());
            prop_assert_eq!(first.seqs(), whole.seqs());
            prop_assert_eq!(&first.order, &whole.order);
            prop_assert_eq!(&first.row_clusters, &whole.row_clusters);
            prop_assert_eq!(first.person_nodes, whole.person_nodes);
        }
    }

    #[test]
    fn splits_cover_every_record_once_in_order() {
        for n in [0usize, 1, 2, 3, 5, 7, 100, 1001] {
            let parts = split(n);
            let mut next = 0;
            for r in &parts {
                assert_eq!(r.start, next);
                assert!(!r.is_empty());
                next = r.end;
            }
            assert_eq!(next, n);
            assert!(parts.len() <= MAX_PARTS);
        }
    }
}
