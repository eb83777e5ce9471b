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
//! Holds no token and no field value: sequence numbers name stored records and never leave the
//! gateway. A registered record later replaced or withdrawn is still read from the segment
//! that holds it (the store keeps every version's bytes), so the release stays findable.

use super::linkset::{LinkKey, LinkScope};
use crate::audit::entry::{Action, Decision, Entry};
use crate::audit::log::AuditLog;
use crate::linkage::{KindSet, TokenKind};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

const PERSONS_EXT: &str = "persons";
const ENTRY_EXT: &str = "entry";

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
        Ok(registry)
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

    /// Records the audit entry index of a release, completing its registration. The file is
    /// replaced atomically: a crash leaves it whole or absent, never empty.
    pub fn commit(&self, release_id: &str, audit_entry: u64) -> std::io::Result<()> {
        let path = self.path(release_id, ENTRY_EXT);
        let tmp = self.dir.join(format!(".{release_id}.{ENTRY_EXT}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(audit_entry.to_string().as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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
