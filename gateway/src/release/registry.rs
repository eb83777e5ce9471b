//! Which people each release included, kept so an IG officer can answer "who saw this person's
//! data" (a subject access request, a breach) without anyone seeing the data.
//!
//! For each release, `data/releases/<release id>.persons` holds a JSON header line (release id,
//! kind, agreement, purpose, requester, time, datasets, the linkage scope: token kinds and, per
//! dataset, the roles and rows linked) and then the store sequence numbers of the released rows
//! that showed a linked person, ascending, each as the LEB128 varint of its difference from the
//! one before (one or two bytes a row for a large release). The people a release included are
//! the linked person roles of those records: the scope names them. It is made durable before
//! the release's audit entry is written; `<release id>.entry` (the audit entry index) after. A
//! `.persons` file without its `.entry` is a release whose entry was never written (the gateway
//! stopped in between, or the audit log refused it): nothing was sent, so it is ignored and
//! removed at start-up.
//!
//! Holds no token and no field value: sequence numbers name stored records and never leave the
//! gateway. A registered record later replaced or withdrawn is still read from the segment
//! that holds it (the store keeps every version's bytes), so the release stays findable.

use super::linkset::{LinkKey, LinkScope};
use crate::linkage::{KindSet, TokenKind};
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
    /// Token kinds the release's purpose linked on.
    pub link_kinds: Vec<String>,
    /// Per dataset: the roles and rows it linked.
    pub link_scope: Vec<LinkScope>,
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
    pub fn write_persons(&self, header: &ReleaseHeader, seqs: &[u64]) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(seqs.len() * 2);
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
        let path = self.path(&header.release_id, PERSONS_EXT);
        let tmp = self.dir.join(format!(".{}.tmp", header.release_id));
        {
            let mut f = std::io::BufWriter::new(File::create(&tmp)?);
            f.write_all(&serde_json::to_vec(header).map_err(std::io::Error::other)?)?;
            f.write_all(b"\n")?;
            f.write_all(&body)?;
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
