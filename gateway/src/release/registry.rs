//! Which people each release included, kept so an IG officer can answer "who saw this person's
//! data" (a subject access request, a breach) without anyone seeing the data.
//!
//! For each release, `data/releases/<release id>.persons` holds a JSON header line (release id,
//! kind, agreement, purpose, requester, time, datasets, the linker's token kinds and datasets)
//! and then the sorted 12-byte cluster ids of the people whose rows were released. It is made
//! durable before the release's audit entry is written; `<release id>.entry` (the audit entry
//! index) after. A `.persons` file without its `.entry` is a release whose entry was never
//! written (the gateway stopped in between, or the audit log refused it): nothing was sent, so
//! it is ignored and removed at start-up.
//!
//! Holds no token and no field value: cluster ids name stored records and never leave the
//! gateway.

use super::linkset::LinkKey;
use crate::linkage::{ClusterId, KindSet, PersonNode, TokenKind};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

const PERSONS_EXT: &str = "persons";
const ENTRY_EXT: &str = "entry";

/// What a release was, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Token kinds of the linker the cluster ids belong to.
    pub link_kinds: Vec<String>,
    /// Datasets of that linker.
    pub link_datasets: Vec<String>,
}

impl ReleaseHeader {
    /// The linker the cluster ids belong to.
    pub fn link_key(&self) -> LinkKey {
        let kinds: Vec<TokenKind> = self
            .link_kinds
            .iter()
            .filter_map(|k| TokenKind::parse(k))
            .collect();
        LinkKey::new(KindSet::of(&kinds), self.link_datasets.iter().cloned())
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
    /// The cluster ids of the people it included.
    pub fn clusters(&self) -> std::io::Result<Vec<ClusterId>> {
        let mut r = BufReader::new(File::open(&self.path)?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?;
        if rest.len() % 12 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is damaged (its cluster list is not a whole number of ids)",
                self.path.display()
            )));
        }
        Ok(rest
            .chunks_exact(12)
            .map(|c| {
                let mut s = [0u8; 8];
                s.copy_from_slice(&c[..8]);
                let mut r = [0u8; 4];
                r.copy_from_slice(&c[8..]);
                ClusterId(PersonNode::new(
                    u64::from_be_bytes(s),
                    u32::from_be_bytes(r),
                ))
            })
            .collect())
    }
}

/// The release registry under `data/releases`.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// Opens (creating) the registry under `data_dir/releases` and removes what unfinished
    /// releases left behind: spool folders and `.persons` files without an audit entry index.
    pub fn open(data_dir: &Path) -> std::io::Result<Registry> {
        let dir = data_dir.join("releases");
        fs::create_dir_all(&dir)?;
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with("spool-") {
                fs::remove_dir_all(&path)?;
            } else if let Some(id) = name.strip_suffix(".persons")
                && !dir.join(format!("{id}.{ENTRY_EXT}")).exists()
            {
                tracing::warn!(
                    release = id,
                    "removing the person list of a release whose audit entry was never written (nothing was sent)"
                );
                fs::remove_file(&path)?;
            }
        }
        Ok(Registry { dir })
    }

    /// Where releases are spooled before they are sent.
    pub fn spool_dir(&self, release_id: &str) -> PathBuf {
        self.dir.join(format!("spool-{release_id}"))
    }

    /// Writes a release's person list durably (before its audit entry).
    pub fn write_persons(
        &self,
        header: &ReleaseHeader,
        clusters: &mut [ClusterId],
    ) -> std::io::Result<()> {
        clusters.sort_unstable();
        let path = self.path(&header.release_id, PERSONS_EXT);
        let tmp = self.dir.join(format!(".{}.tmp", header.release_id));
        {
            let mut f = std::io::BufWriter::new(File::create(&tmp)?);
            f.write_all(&serde_json::to_vec(header).map_err(std::io::Error::other)?)?;
            f.write_all(b"\n")?;
            for c in clusters.iter() {
                f.write_all(&c.to_bytes())?;
            }
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Records the audit entry index of a release, completing its registration.
    pub fn commit(&self, release_id: &str, audit_entry: u64) -> std::io::Result<()> {
        let path = self.path(release_id, ENTRY_EXT);
        let mut f = File::create(&path)?;
        f.write_all(audit_entry.to_string().as_bytes())?;
        f.sync_all()?;
        sync_dir(&self.dir)
    }

    /// Forgets a release whose audit entry could not be written.
    pub fn abandon(&self, release_id: &str) {
        let _ = fs::remove_file(self.path(release_id, PERSONS_EXT));
        let _ = fs::remove_dir_all(self.spool_dir(release_id));
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
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
