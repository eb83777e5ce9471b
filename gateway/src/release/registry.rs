//! Which people each release included, kept so an IG officer can answer "who saw this person's
//! data" (a subject access request, a breach) without anyone seeing the data.
//!
//! For each release, `data/releases/<release id>.persons` holds a JSON header line (release id,
//! kind, agreement, purpose, requester, time, datasets, the linkage scope: token kinds and, per
//! dataset, the roles and rows linked) and then the store sequence numbers of the released rows
//! that showed a linked person, ascending, each as the LEB128 varint of its difference from the
//! one before (one or two bytes a row for a large release). The people a release included are
//! the linked person roles of those records: the scope names them. It is made durable before
//! the release's audit entry is written; `<release id>.entry` (the audit entry index) after,
//! atomically (temporary file, fsync, rename, directory fsync). At start-up
//! ([`Registry::open_audited`]) a `.persons` file without a readable `.entry` is completed if
//! the audit log holds the release's entry (a `release` entry whose `release` is the id: the
//! gateway stopped between the entry and the commit; nothing was sent, but the release is on
//! the log, so it must stay findable); otherwise its entry was never written (the gateway
//! stopped before it, or the audit log refused it), so it is removed.
//!
//! For each aggregate table, `<release id>.<dataset key>.units` (a JSON line: agreement,
//! purpose, dataset, release time, the purpose's `min_cell`, the `by` fields, the number of
//! units counted and the population digest; the dataset key is the first 16 hex digits of a
//! SHA-256 of the dataset name, so a table's comparisons read only its own dataset's files)
//! names the set of record versions it counted, kept once per distinct set in
//! `population-<dataset key>-<digest>.fp` (each unit an 8-byte fingerprint, ascending: see
//! [`super::differencing`]), so a later table of the dataset can be compared with it. Both are
//! written before the `.persons` file and follow its fate: they count only once the release's
//! `.entry` is there, and at start-up a `.units` file without one is removed with the person
//! list, and a population file no `.units` file names is removed. A table that was never
//! delivered (its call ended before it was sent) has its `.units` file removed
//! ([`Registry::remove_table`]) and stays registered. Per dataset, whatever the agreement and
//! purpose, only the tables of the [`MAX_POPULATIONS_PER_DATASET`] most recently released
//! distinct populations are kept (and of each, the [`MAX_RELEASES_PER_POPULATION`] most recent
//! releases); older ones are dropped once a newer release is committed
//! ([`Registry::prune_tables`]). A damaged `.units` or population file refuses the tables of
//! its own dataset (fail closed; the error names the file) and no other.
//!
//! Files are replaced durably with [`crate::durable::replace`].
//!
//! Holds no token and no field value: sequence numbers name stored records and never leave the
//! gateway; unit fingerprints are truncated hashes of record-key tokens and content hashes. A
//! registered record later replaced or withdrawn is still read from the segment that holds it
//! (the store keeps every version's bytes), so the release stays findable.

use super::differencing::{
    Earlier, MAX_POPULATIONS_PER_DATASET, MAX_RELEASES_PER_POPULATION, Units, is_digest,
};
use super::linkset::{LinkKey, LinkScope};
use crate::audit::entry::{Action, Decision, Entry};
use crate::audit::log::AuditLog;
use crate::durable::{self, sync_dir};
use crate::linkage::{KindSet, TokenKind};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

const PERSONS_EXT: &str = "persons";
const ENTRY_EXT: &str = "entry";
const UNITS_EXT: &str = "units";
const POPULATION_PREFIX: &str = "population-";
const POPULATION_EXT: &str = "fp";

/// The set of records an aggregate table counted, as the registry keeps it
/// (`<release id>.<dataset key>.units`); the fingerprints themselves are in the population file
/// its digest names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableUnits {
    /// Release id (32 hex).
    pub release_id: String,
    /// Agreement id.
    pub agreement: String,
    /// Purpose id.
    pub purpose: String,
    /// Dataset counted.
    pub dataset: String,
    /// RFC 3339 time of the release.
    pub released: String,
    /// The purpose's `min_cell`.
    pub min_cell: u64,
    /// The `by` fields, `field:transform`, sorted.
    pub by: Vec<String>,
    /// Units (records) counted.
    pub units: u64,
    /// Population digest ([`Units::digest`]).
    pub population: String,
}

/// The key of a dataset in file names: the first 16 hex digits of
/// SHA-256("skp-table-dataset-v1" ‖ dataset).
fn dataset_key(dataset: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"skp-table-dataset-v1");
    h.update(dataset.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// A `.units` file name: (release id, dataset key).
fn units_name(name: &str) -> Option<(&str, &str)> {
    name.strip_suffix(".units")?.rsplit_once('.')
}

/// The fingerprints of a kept population, read in order ([`Registry::population`]).
pub struct PopulationReader {
    r: BufReader<File>,
    left: u64,
    prev: Option<u64>,
    path: PathBuf,
}

impl Iterator for PopulationReader {
    type Item = std::io::Result<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut b = [0u8; 8];
        if let Err(e) = self.r.read_exact(&mut b) {
            self.left = 0;
            return Some(Err(std::io::Error::other(format!(
                "{}: {e}",
                self.path.display()
            ))));
        }
        let v = u64::from_be_bytes(b);
        if self.prev.is_some_and(|p| p >= v) {
            self.left = 0;
            return Some(Err(std::io::Error::other(format!(
                "{} is damaged (its fingerprints are not ascending); remove the .units files \
                 naming it to stop comparing tables with that population",
                self.path.display()
            ))));
        }
        self.prev = Some(v);
        Some(Ok(v))
    }
}

/// What a release was, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHeader {
    /// Release id (32 hex).
    pub release_id: String,
    /// `extract` or `aggregate`.
    pub kind: String,
    /// Agreement id.
    pub agreement: String,
    /// Purpose id.
    pub purpose: String,
    /// JWT subject of the requester.
    pub requester: String,
    /// RFC 3339 time of the release.
    pub time: String,
    /// Datasets released.
    pub datasets: Vec<String>,
    /// Token kinds the release's purpose linked on.
    pub link_kinds: Vec<String>,
    /// Per dataset: the roles and rows it linked.
    pub link_scope: Vec<LinkScope>,
    /// The fuzzy match threshold, if the purpose also linked fuzzily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_fuzzy: Option<f64>,
}

impl ReleaseHeader {
    /// The linker of the release's purpose.
    pub fn link_key(&self) -> LinkKey {
        let kinds: Vec<TokenKind> = self
            .link_kinds
            .iter()
            .filter_map(|k| TokenKind::parse(k))
            .collect();
        LinkKey::of_scope(KindSet::of(&kinds), self.link_scope.iter().cloned())
            .with_fuzzy(self.link_fuzzy)
    }
}

/// A registered release.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Its header.
    pub header: ReleaseHeader,
    /// Its audit entry index.
    pub audit_entry: u64,
    path: PathBuf,
}

impl Registered {
    /// Store sequence numbers of its released rows that showed a linked person, ascending.
    pub fn seqs(&self) -> std::io::Result<Vec<u64>> {
        let mut r = BufReader::new(File::open(&self.path)?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?;
        let damaged = || {
            std::io::Error::other(format!(
                "{} is damaged (its record list is not a run of varints)",
                self.path.display()
            ))
        };
        let mut out = Vec::new();
        let (mut prev, mut v, mut shift) = (0u64, 0u64, 0u32);
        for b in rest {
            if shift > 63 {
                return Err(damaged());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                prev = prev.checked_add(v).ok_or_else(damaged)?;
                out.push(prev);
                (v, shift) = (0, 0);
            } else {
                shift += 7;
            }
        }
        if shift != 0 {
            return Err(damaged());
        }
        Ok(out)
    }
}

/// The release registry under `data/releases`.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Opens (creating) the registry under `data_dir/releases` without an audit log: what
    /// unfinished releases left behind is removed (see [`Registry::open_audited`]), including
    /// person lists whose release did reach the audit log.
    pub fn open(data_dir: &Path) -> std::io::Result<Registry> {
        Self::open_audited(data_dir, None)
    }

    /// Opens (creating) the registry under `data_dir/releases` and finishes what unfinished
    /// releases left behind: spool folders and temporary files are removed; a `.persons` file
    /// without a readable `.entry` is committed if `audit` holds its release's entry, and
    /// removed otherwise (nothing of it was sent).
    pub fn open_audited(data_dir: &Path, audit: Option<&AuditLog>) -> std::io::Result<Registry> {
        let dir = data_dir.join("releases");
        fs::create_dir_all(&dir)?;
        let registry = Registry { dir };
        let mut pending = Vec::new();
        for e in fs::read_dir(&registry.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with("spool-") {
                fs::remove_dir_all(&path)?;
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(&path)?;
            } else if let Some(id) = name.strip_suffix(".persons")
                && registry.entry_index(id).is_none()
            {
                pending.push(id.to_owned());
            }
        }
        if pending.is_empty() {
            registry.finish_tables();
            return Ok(registry);
        }
        let logged = match audit {
            Some(log) => release_entries(log, &pending)?,
            None => Vec::new(),
        };
        for id in pending {
            match logged.iter().find(|(r, _)| *r == id) {
                Some((_, index)) => {
                    tracing::warn!(
                        release = %id,
                        audit_entry = index,
                        "completing the registration of a release whose audit entry was written but not recorded here (the gateway stopped in between; nothing was sent)"
                    );
                    registry.commit(&id, *index)?;
                }
                None => {
                    tracing::warn!(
                        release = %id,
                        "removing the person list of a release whose audit entry was never written (nothing was sent)"
                    );
                    let _ = fs::remove_file(registry.path(&id, ENTRY_EXT));
                    fs::remove_file(registry.path(&id, PERSONS_EXT))?;
                }
            }
        }
        sync_dir(&registry.dir)?;
        registry.finish_tables();
        Ok(registry)
    }

    /// At start-up: removes the `.units` files of releases never committed and the population
    /// files no `.units` file names (a failure is logged, per dataset: what is left is only
    /// compared with more, never less).
    fn finish_tables(&self) {
        let tidy = |what: &str, result: std::io::Result<()>| {
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot tidy the release registry's table unit lists ({what})");
            }
        };
        let mut keys = Vec::new();
        tidy(
            "uncommitted tables",
            (|| {
                for (id, key, path) in self.units_files(None)? {
                    if self.entry_index(&id).is_none() {
                        tracing::warn!(release = %id, "removing the unit list of a release that was never committed (nothing was sent)");
                        fs::remove_file(&path)?;
                    }
                    keys.push(key);
                }
                keys.extend(self.population_keys()?);
                Ok(())
            })(),
        );
        keys.sort();
        keys.dedup();
        for key in &keys {
            tidy(
                &format!("dataset key {key}"),
                self.collect_populations(key).map(|_| ()),
            );
        }
        tidy("directory", sync_dir(&self.dir));
    }

    /// Where releases are spooled before they are sent.
    pub fn spool_dir(&self, release_id: &str) -> PathBuf {
        self.dir.join(format!("spool-{release_id}"))
    }

    /// Writes a release's person list durably (before its audit entry).
    pub fn write_persons(&self, header: &ReleaseHeader, seqs: &[u64]) -> std::io::Result<()> {
        let mut body = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        body.reserve(seqs.len() * 2 + 1);
        body.push(b'\n');
        let mut prev = 0u64;
        for &s in seqs {
            let mut d = s.checked_sub(prev).ok_or_else(|| {
                std::io::Error::other("internal: release record list is not ascending")
            })?;
            prev = s;
            loop {
                let b = (d & 0x7f) as u8;
                d >>= 7;
                if d == 0 {
                    body.push(b);
                    break;
                }
                body.push(b | 0x80);
            }
        }
        durable::replace(
            &self.path(&header.release_id, PERSONS_EXT),
            &body,
            durable::DEFAULT_MODE,
        )
    }

    /// Records the audit entry index of a release, completing its registration. The file is
    /// replaced atomically: a crash leaves it whole or absent, never empty.
    pub fn commit(&self, release_id: &str, audit_entry: u64) -> std::io::Result<()> {
        durable::replace(
            &self.path(release_id, ENTRY_EXT),
            audit_entry.to_string().as_bytes(),
            durable::DEFAULT_MODE,
        )
    }

    /// Forgets a release whose audit entry could not be written.
    pub fn abandon(&self, release_id: &str) {
        let _ = fs::remove_file(self.path(release_id, PERSONS_EXT));
        let _ = fs::remove_dir_all(self.spool_dir(release_id));
        if let Err(e) = self.remove_table(release_id) {
            tracing::warn!(release = %release_id, error = %e, "cannot remove the unit list of an abandoned table");
        }
    }

    /// Removes a release's table unit list, if it has one, and the population file no other
    /// table names: the table is no longer compared with later ones. The release itself stays
    /// registered. The caller holds the lock comparisons are made under.
    pub fn remove_table(&self, release_id: &str) -> std::io::Result<()> {
        let mut keys = Vec::new();
        for (id, key, path) in self.units_files(None)? {
            if id == release_id {
                fs::remove_file(&path)?;
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        for key in &keys {
            self.collect_populations(key)?;
        }
        sync_dir(&self.dir)
    }

    /// Writes a table's unit list durably (before its person list): `<id>.units`, then the
    /// population file unless a kept table already counted the same records.
    pub fn write_table_units(&self, table: &TableUnits, units: &Units) -> std::io::Result<()> {
        if !is_digest(&table.population) {
            return Err(std::io::Error::other(
                "internal: a table's population digest is not 64 hex characters",
            ));
        }
        let key = dataset_key(&table.dataset);
        let mut line = serde_json::to_vec(table).map_err(std::io::Error::other)?;
        line.push(b'\n');
        durable::replace(
            &self.units_path(&table.release_id, &key),
            &line,
            durable::DEFAULT_MODE,
        )?;
        let population = self.population_path(&key, &table.population);
        if !population.exists() {
            durable::replace(&population, &units.to_bytes(), durable::DEFAULT_MODE)?;
        }
        Ok(())
    }

    /// The committed tables of `dataset` still kept (under any agreement and purpose), newest
    /// first. Reads only that dataset's `.units` files.
    pub fn tables(&self, dataset: &str) -> std::io::Result<Vec<Earlier>> {
        let mut out: Vec<Earlier> = self
            .table_units(dataset)?
            .into_iter()
            .filter_map(|(t, entry)| {
                Some(Earlier {
                    release_id: t.release_id,
                    audit_entry: entry?,
                    agreement: t.agreement,
                    purpose: t.purpose,
                    released: t.released,
                    min_cell: t.min_cell,
                    by: t.by,
                    units: t.units,
                    population: t.population,
                })
            })
            .collect();
        out.sort_by_key(|t| std::cmp::Reverse(t.audit_entry));
        Ok(out)
    }

    /// The fingerprints of a kept population of `dataset` of `units` units, ascending.
    pub fn population(
        &self,
        dataset: &str,
        digest: &str,
        units: u64,
    ) -> std::io::Result<PopulationReader> {
        if !is_digest(digest) {
            return Err(std::io::Error::other(format!(
                "a .units file under {} names the population {:?}, which is not a digest; remove it",
                self.dir.display(),
                digest.chars().take(80).collect::<String>()
            )));
        }
        let path = self.population_path(&dataset_key(dataset), digest);
        let f = File::open(&path).map_err(|e| {
            std::io::Error::other(format!(
                "{}: {e}; remove the .units files naming it to stop comparing tables with that population",
                path.display()
            ))
        })?;
        let len = f.metadata()?.len();
        if Some(len) != units.checked_mul(8) {
            return Err(std::io::Error::other(format!(
                "{} is damaged ({len} bytes for {units} units); remove the .units files naming it \
                 to stop comparing tables with that population",
                path.display()
            )));
        }
        Ok(PopulationReader {
            r: BufReader::with_capacity(1 << 16, f),
            left: units,
            prev: None,
            path,
        })
    }

    /// Keeps, of the committed tables of `dataset` (any agreement and purpose), those of the
    /// [`MAX_POPULATIONS_PER_DATASET`] most recently released distinct populations (of each,
    /// the [`MAX_RELEASES_PER_POPULATION`] most recent releases); removes the other `.units`
    /// files and the population files of the dataset no `.units` file names any more.
    pub fn prune_tables(&self, dataset: &str) -> std::io::Result<()> {
        let tables = self.tables(dataset)?;
        let key = dataset_key(dataset);
        let mut kept: Vec<(&str, usize)> = Vec::new();
        let mut removed = false;
        for t in &tables {
            let keep = match kept.iter().position(|(p, _)| *p == t.population) {
                Some(i) => {
                    kept[i].1 += 1;
                    kept[i].1 <= MAX_RELEASES_PER_POPULATION
                }
                None if kept.len() < MAX_POPULATIONS_PER_DATASET => {
                    kept.push((t.population.as_str(), 1));
                    true
                }
                None => false,
            };
            if !keep {
                fs::remove_file(self.units_path(&t.release_id, &key))?;
                removed = true;
            }
        }
        if removed {
            self.collect_populations(&key)?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The `.units` files, of one dataset key or all: (release id, dataset key, path). Only
    /// names are read.
    fn units_files(&self, key: Option<&str>) -> std::io::Result<Vec<(String, String, PathBuf)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Some((id, k)) = units_name(&name) else {
                continue;
            };
            if key.is_none_or(|key| key == k) {
                out.push((id.to_owned(), k.to_owned(), e.path()));
            }
        }
        Ok(out)
    }

    /// The `.units` files of `dataset`, parsed, each with its release's audit entry index if
    /// committed. A damaged one is an error naming it (the dataset's tables cannot be
    /// compared); other datasets' files are not read.
    fn table_units(&self, dataset: &str) -> std::io::Result<Vec<(TableUnits, Option<u64>)>> {
        let key = dataset_key(dataset);
        let mut out = Vec::new();
        for (id, _, path) in self.units_files(Some(&key))? {
            let t = self.read_units(&id, &path)?;
            if t.dataset != dataset {
                return Err(std::io::Error::other(format!(
                    "{} counts dataset {:?}, not {dataset:?} as its name says; restore it from a \
                     backup or remove it",
                    path.display(),
                    t.dataset.chars().take(64).collect::<String>()
                )));
            }
            let entry = self.entry_index(&id);
            out.push((t, entry));
        }
        Ok(out)
    }

    /// Reads the `.units` file `path` of release `id`.
    fn read_units(&self, id: &str, path: &Path) -> std::io::Result<TableUnits> {
        let text = fs::read_to_string(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let t: TableUnits = serde_json::from_str(text.trim_end()).map_err(|e| {
            std::io::Error::other(format!(
                "{}: {e}; the file is damaged: restore it from a backup or remove it (its table is then no longer compared)",
                path.display()
            ))
        })?;
        if t.release_id != id {
            return Err(std::io::Error::other(format!(
                "{} names release {:?}; restore it from a backup or remove it",
                path.display(),
                t.release_id.chars().take(64).collect::<String>()
            )));
        }
        Ok(t)
    }

    /// Removes the population files of dataset key `key` no `.units` file of it names; whether
    /// any was removed.
    fn collect_populations(&self, key: &str) -> std::io::Result<bool> {
        let mut named = std::collections::HashSet::new();
        for (id, _, path) in self.units_files(Some(key))? {
            named.insert(self.read_units(&id, &path)?.population);
        }
        let prefix = format!("{POPULATION_PREFIX}{key}-");
        let mut removed = false;
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(digest) = name
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(POPULATION_EXT))
                .and_then(|n| n.strip_suffix('.'))
                && !named.contains(digest)
            {
                fs::remove_file(self.dir.join(&name))?;
                removed = true;
            }
        }
        Ok(removed)
    }

    /// The dataset keys of the population files.
    fn population_keys(&self) -> std::io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some((key, _)) = name
                .strip_prefix(POPULATION_PREFIX)
                .and_then(|n| n.split_once('-'))
                && !keys.iter().any(|k| k == key)
            {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }

    fn units_path(&self, release_id: &str, key: &str) -> PathBuf {
        self.dir.join(format!("{release_id}.{key}.{UNITS_EXT}"))
    }

    fn population_path(&self, key: &str, digest: &str) -> PathBuf {
        self.dir.join(format!(
            "{POPULATION_PREFIX}{key}-{digest}.{POPULATION_EXT}"
        ))
    }

    /// Every registered release, oldest entry first.
    pub fn list(&self) -> std::io::Result<Vec<Registered>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".entry") else {
                continue;
            };
            let persons = self.path(id, PERSONS_EXT);
            let entry: u64 = match fs::read_to_string(e.path())
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                Some(n) => n,
                None => {
                    tracing::error!(release = id, "unreadable release entry index; skipped");
                    continue;
                }
            };
            let mut line = String::new();
            BufReader::new(File::open(&persons)?).read_line(&mut line)?;
            let header: ReleaseHeader = serde_json::from_str(line.trim_end())
                .map_err(|e| std::io::Error::other(format!("{}: {e}", persons.display())))?;
            out.push(Registered {
                header,
                audit_entry: entry,
                path: persons,
            });
        }
        out.sort_by_key(|r| r.audit_entry);
        Ok(out)
    }

    fn path(&self, release_id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{release_id}.{ext}"))
    }

    /// The audit entry index a release's `.entry` file records, if it is there and readable.
    fn entry_index(&self, release_id: &str) -> Option<u64> {
        fs::read_to_string(self.path(release_id, ENTRY_EXT))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }
}

/// The (release id, entry index) of the allowed `release` entries of `audit` naming one of
/// `ids`.
fn release_entries(audit: &AuditLog, ids: &[String]) -> std::io::Result<Vec<(String, u64)>> {
    let unreadable = |e: String| {
        std::io::Error::other(format!(
            "cannot read the audit log to finish unfinished releases: {e}"
        ))
    };
    let mut out = Vec::new();
    let entries = audit
        .read(0, audit.size())
        .map_err(|e| unreadable(e.to_string()))?;
    for bytes in entries {
        let bytes = bytes.map_err(|e| unreadable(e.to_string()))?;
        let e = Entry::decode(&bytes).map_err(|e| unreadable(e.to_string()))?;
        if e.action == Action::Release
            && e.decision == Decision::Allow
            && let Some(id) = e.release
            && ids.contains(&id)
        {
            out.push((id, e.seq));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::Actor;

    fn audit_log(dir: &Path) -> AuditLog {
        let key = skp_core::checkpoint::SigningKey::from_seed_bytes("kingston.skp/audit", &[7; 32])
            .expect("key");
        AuditLog::open(dir, key, "kingston.skp/audit/v1").expect("audit")
    }

    fn header(id: &str) -> ReleaseHeader {
        ReleaseHeader {
            release_id: id.to_owned(),
            kind: "extract".into(),
            agreement: "SKP-ISA-SV-01".into(),
            purpose: "serious-violence-sna".into(),
            requester: "a.analyst".into(),
            time: "2026-12-05T10:11:12.000Z".into(),
            datasets: vec!["police_crime".into()],
            link_kinds: Vec::new(),
            link_scope: Vec::new(),
            link_fuzzy: None,
        }
    }

    /// Appends an allowed release entry for `id` (and an unrelated entry before it).
    fn log_release(audit: &AuditLog, id: &str) -> u64 {
        let other = Entry::new(Actor::gateway(), Action::Ingest, Decision::Allow);
        let mut e = Entry::new(Actor::gateway(), Action::Release, Decision::Allow);
        e.release = Some(id.to_owned());
        audit.append_blocking(vec![other, e]).expect("append")[1]
    }

    fn ids(r: &Registry) -> Vec<(String, u64)> {
        r.list()
            .expect("list")
            .into_iter()
            .map(|r| (r.header.release_id, r.audit_entry))
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.join("releases"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_leaves_a_whole_entry_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Registry::open(dir.path()).expect("open");
        r.write_persons(&header("aa"), &[3, 5, 900])
            .expect("persons");
        r.commit("aa", 17).expect("commit");
        assert_eq!(names(dir.path()), ["aa.entry", "aa.persons"]);
        assert_eq!(ids(&r), [("aa".to_owned(), 17)]);
        // Committed again (start-up re-commit): replaced, never appended to.
        r.commit("aa", 17).expect("commit");
        assert_eq!(
            fs::read_to_string(dir.path().join("releases/aa.entry")).expect("read"),
            "17"
        );
    }

    #[test]
    fn a_release_on_the_audit_log_is_completed_at_start_up_and_one_off_it_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let r = Registry::open_audited(dir.path(), Some(&audit)).expect("open");
        // Committed normally.
        r.write_persons(&header("aa"), &[1]).expect("persons");
        let a = log_release(&audit, "aa");
        r.commit("aa", a).expect("commit");
        // Stopped between the audit entry and the commit.
        r.write_persons(&header("bb"), &[2, 3]).expect("persons");
        let b = log_release(&audit, "bb");
        // Stopped between creating `.entry` and writing it (as the old commit could).
        r.write_persons(&header("cc"), &[4]).expect("persons");
        let c = log_release(&audit, "cc");
        fs::write(dir.path().join("releases/cc.entry"), b"").expect("empty entry");
        // Stopped before the audit entry: nothing was sent.
        r.write_persons(&header("dd"), &[5]).expect("persons");
        // Leftovers of a write and a commit cut short.
        fs::write(dir.path().join("releases/.ee.tmp"), b"{").expect("tmp");
        fs::write(dir.path().join("releases/.ee.entry.tmp"), b"1").expect("tmp");
        fs::create_dir(dir.path().join("releases/spool-ff")).expect("spool");

        let r = Registry::open_audited(dir.path(), Some(&audit)).expect("reopen");
        assert_eq!(
            ids(&r),
            [
                ("aa".to_owned(), a),
                ("bb".to_owned(), b),
                ("cc".to_owned(), c)
            ]
        );
        assert_eq!(
            names(dir.path()),
            [
                "aa.entry",
                "aa.persons",
                "bb.entry",
                "bb.persons",
                "cc.entry",
                "cc.persons"
            ]
        );
        let bb = r.list().expect("list").remove(1);
        assert_eq!(bb.seqs().expect("seqs"), [2, 3]);
        // Nothing changes on a second start.
        let r = Registry::open_audited(dir.path(), Some(&audit)).expect("reopen");
        assert_eq!(ids(&r).len(), 3);
    }

    /// Registers a table of dataset `dataset` (purpose `purpose`) of `units` counted by `by` as
    /// release `id` with audit entry `entry`.
    fn register_table(
        r: &Registry,
        (dataset, purpose): (&str, &str),
        id: &str,
        entry: u64,
        by: &str,
        units: &[u64],
    ) {
        let units = Units::new(units.to_vec());
        let t = TableUnits {
            release_id: id.to_owned(),
            agreement: "A".into(),
            purpose: purpose.into(),
            dataset: dataset.into(),
            released: "2026-12-05T10:11:12.000Z".into(),
            min_cell: 10,
            by: vec![by.to_owned()],
            units: units.len(),
            population: units.digest(),
        };
        r.write_table_units(&t, &units).expect("units");
        r.write_persons(&header(id), &[]).expect("persons");
        r.commit(id, entry).expect("commit");
        r.prune_tables(dataset).expect("prune");
    }

    #[test]
    fn the_window_keeps_the_most_recent_distinct_populations_of_a_dataset_and_reads_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Registry::open(dir.path()).expect("open");
        // Population 0, then the latest one asked again (never pushes others out), then
        // MAX_POPULATIONS_PER_DATASET more, under two purposes in turn: one window per dataset.
        register_table(
            &r,
            ("D", "P"),
            &format!("{:032x}", 0),
            0,
            "x:keep",
            &[0, 1, 2],
        );
        let n = MAX_POPULATIONS_PER_DATASET as u64;
        for i in 1..=n {
            let purpose = if i % 2 == 0 { "P" } else { "Q" };
            let units = [i, i + 1, 1000];
            register_table(
                &r,
                ("D", purpose),
                &format!("{i:032x}"),
                i,
                "x:keep",
                &units,
            );
            let again = format!("{:032x}", 1000 * i);
            register_table(&r, ("D", "P"), &again, 1000 * i, "y:keep", &units);
        }
        // Another dataset's tables are kept apart.
        register_table(&r, ("E", "P"), &"e".repeat(32), 5000, "x:keep", &[0, 1, 2]);
        let tables = r.tables("D").expect("tables");
        let populations: std::collections::BTreeSet<&str> =
            tables.iter().map(|t| t.population.as_str()).collect();
        assert_eq!(populations.len(), MAX_POPULATIONS_PER_DATASET);
        assert!(
            !tables.iter().any(|t| t.audit_entry == 0),
            "the oldest population is dropped"
        );
        assert!(
            tables
                .windows(2)
                .all(|w| w[0].audit_entry > w[1].audit_entry)
        );
        assert_eq!(tables.len(), 2 * MAX_POPULATIONS_PER_DATASET);
        let fps = names(dir.path())
            .into_iter()
            .filter(|n| n.starts_with(POPULATION_PREFIX))
            .count();
        assert_eq!(
            fps,
            MAX_POPULATIONS_PER_DATASET + 1,
            "one file per kept population"
        );
        let newest = &tables[0];
        let read: Vec<u64> = r
            .population("D", &newest.population, newest.units)
            .expect("population")
            .collect::<std::io::Result<_>>()
            .expect("read");
        assert_eq!(read, [n, n + 1, 1000]);
        let e = r.tables("E").expect("tables");
        assert_eq!(e.len(), 1);
        assert_eq!(
            r.population("E", &e[0].population, 3)
                .expect("population")
                .collect::<std::io::Result<Vec<u64>>>()
                .expect("read")
                .len(),
            3
        );
        // Other datasets are not touched, and damage is reported, not read as a population.
        assert!(r.tables("other").expect("tables").is_empty());
        let path = r.population_path(&dataset_key("D"), &newest.population);
        fs::write(&path, [0u8; 7]).expect("damage");
        let e = r
            .population("D", &newest.population, newest.units)
            .err()
            .expect("a damaged population is refused");
        assert!(e.to_string().contains("is damaged"), "{e}");
        assert!(r.population("D", "../x", 1).is_err());
    }

    #[test]
    fn a_damaged_unit_list_refuses_only_its_own_datasets_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Registry::open(dir.path()).expect("open");
        register_table(&r, ("D", "P"), &"d".repeat(32), 1, "x:keep", &[1, 2, 3]);
        register_table(&r, ("E", "P"), &"e".repeat(32), 2, "x:keep", &[4, 5]);
        let e_units = r.units_path(&"e".repeat(32), &dataset_key("E"));
        fs::write(&e_units, b"{ not json").expect("damage");
        // D's tables are read, and pruned, as if E had none.
        let d = r.tables("D").expect("D is not blocked by E's damaged file");
        assert_eq!(d.len(), 1);
        register_table(&r, ("D", "P"), &"f".repeat(32), 3, "x:keep", &[1, 2]);
        assert_eq!(r.tables("D").expect("tables").len(), 2);
        // E's are refused, the error naming the file.
        let err = r
            .tables("E")
            .expect_err("a damaged unit list refuses its dataset");
        assert!(
            err.to_string().contains(&e_units.display().to_string())
                && err.to_string().contains("damaged"),
            "{err}"
        );
        // A start-up keeps E's population (it cannot tell which are named) and D's.
        let r = Registry::open(dir.path()).expect("reopen");
        assert_eq!(r.tables("D").expect("tables").len(), 2);
        let fps = names(dir.path())
            .into_iter()
            .filter(|n| n.starts_with(POPULATION_PREFIX))
            .count();
        assert_eq!(fps, 3);
        // Removing a table removes its unit list and its population, not the release.
        r.remove_table(&"f".repeat(32)).expect("remove");
        assert_eq!(r.tables("D").expect("tables").len(), 1);
        assert!(ids(&r).iter().any(|(id, _)| *id == "f".repeat(32)));
        let fps = names(dir.path())
            .into_iter()
            .filter(|n| n.starts_with(POPULATION_PREFIX))
            .count();
        assert_eq!(fps, 2);
    }

    #[test]
    fn a_denied_release_entry_does_not_complete_a_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let r = Registry::open_audited(dir.path(), Some(&audit)).expect("open");
        r.write_persons(&header("aa"), &[1]).expect("persons");
        let mut e = Entry::new(Actor::gateway(), Action::Release, Decision::Deny);
        e.release = Some("aa".into());
        audit.append_blocking(vec![e]).expect("append");
        let r = Registry::open_audited(dir.path(), Some(&audit)).expect("reopen");
        assert!(ids(&r).is_empty());
        assert!(names(dir.path()).is_empty());
    }
}
