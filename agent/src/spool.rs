//! The on-disk spool: batches are written here (fsynced) before they are sent, and removed only
//! after the gateway acknowledged them as durable. A push interrupted at any point loses
//! nothing; re-sending is safe because the gateway is idempotent on record key + content hash.
//!
//! File format: a sequence of frames `u32 big-endian length ‖ encoded IngestBatch`.

use anyhow::{Context, Result, bail};
use prost::Message;
use sharing_proto::v1::IngestBatch;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest frame accepted when reading a spool file back.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A half-written spool file (`*.spool.tmp`) older than this was left by a push that stopped
/// before its rename, and is removed when the spool is opened. Its batches were never spooled:
/// that push failed, and its rows are read from the source again on the next run. Younger ones
/// may belong to a push still writing, and are left alone.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// The spool directory of an agent.
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating if needed) the spool under the agent's state directory.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("spool");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create spool directory {}", dir.display()))?;
        let spool = Self { dir };
        spool.remove_stale_tmp(STALE_TMP)?;
        Ok(spool)
    }

    /// Removes `*.spool.tmp` files last modified more than `age` ago (see [`STALE_TMP`]).
    fn remove_stale_tmp(&self, age: std::time::Duration) -> Result<()> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
        {
            let path = entry?.path();
            let is_tmp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".spool.tmp"));
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
            if is_tmp && old {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::warn!(
                removed,
                dir = %self.dir.display(),
                "removed half-written spool files left by an interrupted push (never acknowledged; their rows are read from the source again)"
            );
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Writes batches as one new spool file, durably (file and directory fsynced).
    pub fn write(&self, label: &str, batches: &[IngestBatch]) -> Result<PathBuf> {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{stamp:024}-{label}-{:08x}.spool", rand::random::<u32>());
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(&name);
        {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            for b in batches {
                let bytes = b.encode_to_vec();
                f.write_all(&(bytes.len() as u32).to_be_bytes())?;
                f.write_all(&bytes)?;
            }
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()
                .with_context(|| format!("cannot fsync {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot rename {}", tmp.display()))?;
        self.sync_dir()?;
        Ok(path)
    }

    /// Spool files waiting to be sent, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "spool"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Reads a spool file's batches.
    pub fn read(path: &Path) -> Result<Vec<IngestBatch>> {
        let mut data = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            if data.len() - at < 4 {
                bail!(
                    "{} is truncated (a frame header is cut off)",
                    path.display()
                );
            }
            let len =
                u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            at += 4;
            if len > MAX_FRAME || data.len() - at < len {
                bail!(
                    "{} is truncated or corrupt (frame of {len} bytes)",
                    path.display()
                );
            }
            out.push(
                IngestBatch::decode(&data[at..at + len])
                    .with_context(|| format!("{} holds a corrupt batch", path.display()))?,
            );
            at += len;
        }
        Ok(out)
    }

    /// Removes a spool file after its batches were acknowledged.
    pub fn remove(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
        self.sync_dir()
    }

    /// Moves a spool file the gateway refused outright aside, so it is kept but not retried.
    pub fn set_aside(&self, path: &Path) -> Result<PathBuf> {
        let dir = self.dir.parent().unwrap_or(&self.dir).join("refused");
        std::fs::create_dir_all(&dir)?;
        let to = dir.join(path.file_name().unwrap_or_default());
        std::fs::rename(path, &to)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        self.sync_dir()?;
        Ok(to)
    }

    fn sync_dir(&self) -> Result<()> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync {}", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Spool::open(dir.path()).expect("open");
        let b = IngestBatch {
            dataset: "d".into(),
            batch_id: "x#1".into(),
            ..Default::default()
        };
        let p = s.write("d", &[b.clone(), b.clone()]).expect("write");
        assert_eq!(s.pending().expect("pending"), vec![p.clone()]);
        assert_eq!(Spool::read(&p).expect("read"), vec![b.clone(), b]);
        let len = std::fs::metadata(&p).expect("meta").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open")
            .set_len(len - 1)
            .expect("truncate");
        assert!(Spool::read(&p).is_err());
        s.remove(&p).expect("remove");
        assert!(s.pending().expect("pending").is_empty());
    }

    #[test]
    fn opening_removes_only_stale_half_written_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).expect("mkdir");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let make = |name: &str, old: bool| {
            let path = spool_dir.join(name);
            let f = std::fs::File::create(&path).expect("create");
            if old {
                f.set_modified(two_hours_ago).expect("set mtime");
            }
            path
        };
        let stale = make("1-d-0.spool.tmp", true);
        let fresh = make("2-d-0.spool.tmp", false);
        let old_spool = make("3-d-0.spool", true);
        let other = make("notes.tmp", true);
        let s = Spool::open(dir.path()).expect("open");
        assert!(!stale.exists(), "a stale half-written file is removed");
        assert!(fresh.exists(), "a push may still be writing a fresh one");
        assert!(
            old_spool.exists() && other.exists(),
            "nothing else is touched"
        );
        assert_eq!(s.pending().expect("pending"), vec![old_spool]);
    }
}
