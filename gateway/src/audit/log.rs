//! The durable audit log: entries appended by one writer thread with group commit, kept as the
//! leaves of an RFC 9162 Merkle tree, with signed checkpoints.
//!
//! Layout under the data directory: `audit/entries.log`, frames
//! `u32 LE length ‖ u32 LE CRC-32 ‖ canonical entry bytes`, and `audit/checkpoint`, the latest
//! signed checkpoint (C2SP signed note), replaced atomically (write, fsync, rename, fsync dir).
//!
//! - **Appends** go to one writer thread, which takes every queued entry, fills in `seq` (the leaf
//!   index), `prev` (the root of the tree before it) and `time`, writes them with one `write` and
//!   one `fdatasync`, and only then answers the callers: an append returns only when durable.
//! - **Fail closed**: if a write or fsync fails, the log refuses appends and says why. It cuts
//!   the file back to the last durable length at once (reopened: a failed fsync is never retried
//!   on the same handle), so an entry whose append failed is not found after a restart, and
//!   again before each later group; once that works (space freed), appends work again.
//! - **Checkpoints** are signed on demand ([`AuditLog::checkpoint`]) and at most once a second
//!   after appends; each signed one is persisted before it is handed out.
//! - **Start-up** reads the last checkpoint first, then every frame: CRC, canonical decoding,
//!   `seq` = position and the `prev` chain. A torn tail (a frame cut short or failing its CRC at
//!   the very end: a crash mid-write, never acknowledged) is cut off, unless that would drop an
//!   entry the checkpoint covers: then start-up fails loudly, as it does for a bad frame before
//!   the tail or a log whose root at the checkpoint's size differs from the signed one.
//!
//! A checkpoint carries no time of its own (C2SP checkpoints have none and we refuse extension
//! lines); its time is the `time` of the last entry it covers, which its root commits to.

use super::entry::{Entry, rfc3339_millis};
use skp_core::checkpoint::{self, Checkpoint, SigningKey};
use skp_core::merkle::{self, CompactRange, Hash};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Largest entry accepted (an entry is a few hundred bytes; this bounds a corrupt length).
const MAX_ENTRY: usize = 1024 * 1024;
/// Most entries one group commit takes.
const MAX_GROUP: usize = 8192;
/// Least time between two automatic checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const ENTRIES_FILE: &str = "entries.log";
const CHECKPOINT_FILE: &str = "checkpoint";

/// Audit log failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be written now (disk full, I/O error); actions that need an entry are refused.
    #[error(
        "the audit log cannot be written ({0}); the gateway refuses every action that needs an audit entry until it can"
    )]
    Unavailable(String),
    /// The writer has stopped (shutdown).
    #[error("the audit log is shutting down")]
    Closed,
    /// The stored log is damaged or does not match its signed checkpoint: start-up refused.
    #[error("the audit log in {dir} cannot be trusted: {reason}")]
    Corrupt {
        /// The audit directory.
        dir: String,
        /// What is wrong.
        reason: String,
    },
    /// A file system error outside the append path.
    #[error("audit log I/O error: {0}")]
    Io(String),
    /// A proof or checkpoint request that cannot be answered as asked.
    #[error("{0}")]
    Request(String),
}

/// A signed checkpoint and its note text.
#[derive(Debug, Clone)]
pub struct SignedCheckpoint {
    /// Origin, size and root.
    pub checkpoint: Checkpoint,
    /// The C2SP signed note.
    pub note: String,
}

struct Tree {
    /// Leaf hash of every entry.
    leaves: Vec<Hash>,
    /// File offset of every entry's frame.
    offsets: Vec<u64>,
    /// Root of all leaves.
    root: Hash,
}

struct Inner {
    dir: PathBuf,
    origin: String,
    key: SigningKey,
    tree: RwLock<Tree>,
    /// Why appends are refused, while they are.
    failure: Mutex<Option<String>>,
    /// The latest persisted checkpoint.
    persisted: Mutex<Option<SignedCheckpoint>>,
    /// Group commits (fdatasyncs of the entries file) since open.
    groups: std::sync::atomic::AtomicU64,
    /// Test fault: the writer refuses this many more jobs, writing nothing.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicUsize,
    /// Test fault: this many more fdatasyncs fail after the group's bytes are written.
    #[cfg(test)]
    fail_sync: std::sync::atomic::AtomicUsize,
    /// Test fault: while true, the writer holds the group it has taken (see
    /// [`AuditLog::stall_appends`]).
    #[cfg(test)]
    stall: (Mutex<bool>, std::sync::Condvar),
}

struct Job {
    entries: Vec<Entry>,
    reply: oneshot::Sender<Result<Vec<u64>, AuditError>>,
}

/// What the writer thread is sent.
enum Msg {
    Append(Job),
    /// Stop after the queued appends; answered once the writer has written its last byte.
    Stop(oneshot::Sender<()>),
}

/// Handle to the audit log (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .field("size", &self.size())
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `data_dir/audit`, checks it against its last signed
    /// checkpoint and starts the writer thread.
    pub fn open(data_dir: &Path, key: SigningKey, origin: &str) -> Result<AuditLog, AuditError> {
        let dir = data_dir.join("audit");
        std::fs::create_dir_all(&dir).map_err(|e| io_at(&dir, e))?;
        Checkpoint::new(origin, 0, merkle::EMPTY_ROOT).map_err(|e| {
            AuditError::Request(format!("audit origin {origin:?} cannot be used: {e}"))
        })?;
        let corrupt = |reason: String| AuditError::Corrupt {
            dir: dir.display().to_string(),
            reason,
        };
        let persisted = read_checkpoint(&dir, &key, origin).map_err(corrupt)?;
        let path = dir.join(ENTRIES_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_at(&path, e))?;
        let covered = persisted.as_ref().map(|c| c.checkpoint.size).unwrap_or(0);
        let scan = scan(&mut file, persisted.as_ref().map(|c| &c.checkpoint)).map_err(corrupt)?;
        if let Some(cut) = scan.torn_at {
            if scan.offsets.len() < covered as usize {
                return Err(corrupt(format!(
                    "the log ends in a damaged entry at byte {cut} after {} entries, but the last signed checkpoint covers {covered}: entries covered by a signed checkpoint are missing; refusing to start (restore the audit directory from a backup)",
                    scan.offsets.len()
                )));
            }
            tracing::warn!(
                entries = scan.offsets.len(),
                cut_at = cut,
                "the audit log ended in a torn entry (a crash mid-write, never acknowledged); cutting it off"
            );
            file.set_len(cut).map_err(|e| io_at(&path, e))?;
            file.sync_all().map_err(|e| io_at(&path, e))?;
        }
        if (scan.offsets.len() as u64) < covered {
            return Err(corrupt(format!(
                "the log has {} entries but the last signed checkpoint covers {covered}: entries covered by a signed checkpoint are missing; refusing to start (restore the audit directory from a backup)",
                scan.offsets.len()
            )));
        }
        fsync_dir(&dir)?;
        let len = file.seek(SeekFrom::End(0)).map_err(|e| io_at(&path, e))?;
        let root = scan.range.root();
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            origin: origin.to_owned(),
            key,
            tree: RwLock::new(Tree {
                leaves: scan.leaves,
                offsets: scan.offsets,
                root,
            }),
            failure: Mutex::new(None),
            groups: std::sync::atomic::AtomicU64::new(0),
            persisted: Mutex::new(persisted),
            #[cfg(test)]
            fail_next: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            fail_sync: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            stall: (Mutex::new(false), std::sync::Condvar::new()),
        });
        let (tx, rx) = mpsc::channel::<Msg>(4096);
        let writer = Writer {
            inner: inner.clone(),
            file,
            path,
            len,
            range: scan.range,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Io(format!("cannot start the audit writer: {e}")))?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("audit-checkpoints".into())
            .spawn(move || checkpoint_loop(weak))
            .map_err(|e| AuditError::Io(format!("cannot start the audit checkpointer: {e}")))?;
        Ok(AuditLog { inner, tx })
    }

    /// Appends entries (their `seq`, `prev` and `time` are filled in) and returns their
    /// indexes once they are durable.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<Vec<u64>, AuditError> {
        let t = std::time::Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Job { entries, reply }))
            .await
            .map_err(|_| AuditError::Closed)?;
        let r = rx.await.map_err(|_| AuditError::Closed)?;
        if r.is_ok() {
            crate::metrics::global().audit_append(t.elapsed().as_secs_f64());
        }
        r
    }

    /// Appends one entry; returns its index once durable.
    pub async fn append_one(&self, entry: Entry) -> Result<u64, AuditError> {
        let seqs = self.append(vec![entry]).await?;
        seqs.first()
            .copied()
            .ok_or_else(|| AuditError::Io("internal: no index returned".into()))
    }

    /// [`AuditLog::append`] for a thread outside the async runtime (the store's writer).
    pub fn append_blocking(&self, entries: Vec<Entry>) -> Result<Vec<u64>, AuditError> {
        let t = std::time::Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Append(Job { entries, reply }))
            .map_err(|_| AuditError::Closed)?;
        let r = rx.blocking_recv().map_err(|_| AuditError::Closed)?;
        if r.is_ok() {
            crate::metrics::global().audit_append(t.elapsed().as_secs_f64());
        }
        r
    }

    /// Number of durable entries.
    pub fn size(&self) -> u64 {
        self.inner
            .tree
            .read()
            .map(|t| t.leaves.len() as u64)
            .unwrap_or(0)
    }

    /// Why appends are refused now, if they are.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.lock().ok().and_then(|f| f.clone())
    }

    /// The log's origin (first line of its checkpoints).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The verifier key text IG officers pin.
    pub fn verifier_key(&self) -> String {
        self.inner.key.verifier_key_string()
    }

    /// Signs a checkpoint of the current tree, persists it if it is newer than the last
    /// persisted one, and returns it.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        let (size, root) = {
            let t = self.inner.tree.read().map_err(|_| lock_err())?;
            (t.leaves.len() as u64, t.root)
        };
        self.inner.sign_and_persist(size, root)
    }

    /// The latest persisted checkpoint, if any.
    pub fn last_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.inner.persisted.lock().ok().and_then(|p| p.clone())
    }

    /// Leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        let t = self.inner.tree.read().ok()?;
        t.leaves.get(index as usize).copied()
    }

    /// Root of the tree of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        let t = self.inner.tree.read().map_err(|_| lock_err())?;
        merkle::root_from_source(t.leaves.as_slice(), size)
            .map_err(|e| AuditError::Request(format!("no root at size {size}: {e}")))
    }

    /// Inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        let t = self.inner.tree.read().map_err(|_| lock_err())?;
        merkle::inclusion_proof(t.leaves.as_slice(), index, size).map_err(|e| {
            AuditError::Request(format!(
                "no inclusion proof for entry {index} in a tree of {size}: {e}"
            ))
        })
    }

    /// Consistency proof between the trees of `old_size` and `new_size` entries.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, AuditError> {
        let t = self.inner.tree.read().map_err(|_| lock_err())?;
        merkle::consistency_proof(t.leaves.as_slice(), old_size, new_size).map_err(|e| {
            AuditError::Request(format!(
                "no consistency proof from size {old_size} to {new_size}: {e}"
            ))
        })
    }

    /// Reads the canonical bytes of entries `start..end` in order (streaming from disk).
    pub fn read(&self, start: u64, end: u64) -> Result<EntryReader, AuditError> {
        let offset = {
            let t = self.inner.tree.read().map_err(|_| lock_err())?;
            if start > end || end > t.leaves.len() as u64 {
                return Err(AuditError::Request(format!(
                    "entries {start}..{end} are not in the log of {} entries",
                    t.leaves.len()
                )));
            }
            t.offsets.get(start as usize).copied().unwrap_or(0)
        };
        let path = self.inner.dir.join(ENTRIES_FILE);
        let mut f = File::open(&path).map_err(|e| io_at(&path, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io_at(&path, e))?;
        Ok(EntryReader {
            r: BufReader::with_capacity(1 << 16, f),
            next: start,
            end,
        })
    }

    /// Group commits since open: one write and one fdatasync of the entries file each, however
    /// many appends they carried.
    pub fn groups_committed(&self) -> u64 {
        self.inner.groups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the writer after the queued appends and waits until it has written its last byte
    /// (and the final checkpoint): a process exiting right after cannot cut an append in half.
    /// Later appends, through any handle, fail with [`AuditError::Closed`].
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Test fault: the writer refuses the next `n` append jobs with
    /// [`AuditError::Unavailable`], touching neither the file nor the tree.
    #[cfg(test)]
    pub(crate) fn fail_next_appends(&self, n: usize) {
        self.inner
            .fail_next
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test fault: the next `n` fdatasyncs of the log fail after the group's bytes were written
    /// (as a failed fsync does).
    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: usize) {
        self.inner
            .fail_sync
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test fault: while `stalled`, the writer holds every append it takes (a disk that stopped
    /// answering): it writes nothing, leaves the tree as it is and answers no caller; appends
    /// queue behind it. `stall_appends(false)` releases them, and they are written and answered
    /// as usual. Stop the stall before [`AuditLog::shutdown`], which waits for the writer.
    #[cfg(test)]
    pub(crate) fn stall_appends(&self, stalled: bool) {
        let (flag, changed) = &self.inner.stall;
        let mut f = crate::unpoisoned(flag.lock());
        *f = stalled;
        changed.notify_all();
    }
}

impl Inner {
    fn sign_and_persist(&self, size: u64, root: Hash) -> Result<SignedCheckpoint, AuditError> {
        let cp = Checkpoint::new(&self.origin, size, root)
            .map_err(|e| AuditError::Request(e.to_string()))?;
        let note = checkpoint::sign(&cp, &self.key)
            .map_err(|e| AuditError::Request(format!("cannot sign a checkpoint: {e}")))?;
        let signed = SignedCheckpoint {
            checkpoint: cp,
            note,
        };
        let mut persisted = self.persisted.lock().map_err(|_| lock_err())?;
        let newer = persisted.as_ref().is_none_or(|p| p.checkpoint.size < size);
        if newer {
            let tmp = self.dir.join("checkpoint.tmp");
            let write = || -> std::io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(signed.note.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, self.dir.join(CHECKPOINT_FILE))
            };
            write().map_err(|e| {
                AuditError::Unavailable(format!("cannot persist the signed checkpoint: {e}"))
            })?;
            fsync_dir(&self.dir)?;
            *persisted = Some(signed.clone());
        }
        Ok(signed)
    }
}

#[cfg(test)]
impl Inner {
    /// Blocks the writer while [`AuditLog::stall_appends`] holds it.
    fn wait_while_stalled(&self) {
        let (flag, changed) = &self.stall;
        let mut f = crate::unpoisoned(flag.lock());
        while *f {
            f = crate::unpoisoned(changed.wait(f));
        }
    }

    /// Answers jobs with the injected fault while [`AuditLog::fail_next_appends`] asks for it.
    fn refuse_injected(&self, jobs: Vec<Job>) -> Vec<Job> {
        use std::sync::atomic::Ordering::SeqCst;
        jobs.into_iter()
            .filter_map(|j| {
                let refuse = self
                    .fail_next
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if !refuse {
                    return Some(j);
                }
                let _ = j
                    .reply
                    .send(Err(AuditError::Unavailable("injected test fault".into())));
                None
            })
            .collect()
    }
}

/// Reads entries' canonical bytes from the log file in order.
pub struct EntryReader {
    r: BufReader<File>,
    next: u64,
    end: u64,
}

impl Iterator for EntryReader {
    type Item = Result<Vec<u8>, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        self.next += 1;
        Some(match read_frame(&mut self.r) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(AuditError::Io("the audit log ended early".into())),
            Err(FrameError::Io(e)) => Err(AuditError::Io(e.to_string())),
            Err(FrameError::Torn(r)) | Err(FrameError::Bad(r)) => Err(AuditError::Io(r)),
        })
    }
}

struct Writer {
    inner: Arc<Inner>,
    file: File,
    path: PathBuf,
    /// Durable length of the file.
    len: u64,
    range: CompactRange,
}

/// Signs and persists a checkpoint about once a second while the log grows; ends when the log
/// is dropped.
fn checkpoint_loop(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (size, root) = match inner.tree.read() {
            Ok(t) => (t.leaves.len() as u64, t.root),
            Err(_) => return,
        };
        let behind = inner
            .persisted
            .lock()
            .map(|p| p.as_ref().is_none_or(|p| p.checkpoint.size < size))
            .unwrap_or(false);
        if behind && let Err(e) = inner.sign_and_persist(size, root) {
            tracing::warn!(error = %e, "cannot persist an audit checkpoint; will retry");
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut stopped: Option<oneshot::Sender<()>> = None;
        while stopped.is_none() {
            let first = match rx.blocking_recv() {
                Some(Msg::Append(j)) => j,
                Some(Msg::Stop(done)) => {
                    stopped = Some(done);
                    break;
                }
                None => break,
            };
            let mut jobs = vec![first];
            let mut n = jobs[0].entries.len();
            while n < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Msg::Append(j)) => {
                        n += j.entries.len();
                        jobs.push(j);
                    }
                    Ok(Msg::Stop(done)) => {
                        stopped = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            #[cfg(test)]
            self.inner.wait_while_stalled();
            #[cfg(test)]
            let mut jobs = self.inner.refuse_injected(jobs);
            if let Err(reason) = self.recover_if_failed() {
                for j in jobs {
                    let _ = j.reply.send(Err(AuditError::Unavailable(reason.clone())));
                }
                continue;
            }
            match self.commit(&mut jobs) {
                Ok(seqs) => {
                    for (j, s) in jobs.into_iter().zip(seqs) {
                        let _ = j.reply.send(Ok(s));
                    }
                }
                Err(reason) => {
                    tracing::error!(error = %reason, "audit log append failed; refusing actions that need an entry (fail closed)");
                    if let Ok(mut f) = self.inner.failure.lock() {
                        *f = Some(reason.clone());
                    }
                    // Cut what the failed group left off now: a restart before the next
                    // append must not find an entry whose append was refused.
                    if let Err(e) = self.cut_back() {
                        tracing::error!(error = %e, "cannot cut the audit log back after a failed append yet; retried before the next append");
                    }
                    for j in jobs {
                        let _ = j.reply.send(Err(AuditError::Unavailable(reason.clone())));
                    }
                }
            }
        }
        // Later appends fail with Closed rather than wait on a writer that has gone.
        rx.close();
        // Closed: a final checkpoint covering everything appended.
        let (size, root) = (self.range.size(), self.range.root());
        if let Err(e) = self.inner.sign_and_persist(size, root) {
            tracing::warn!(error = %e, "cannot persist the final audit checkpoint");
        }
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    /// After a failure, reopens the file and cuts it back to its durable length. Err while the
    /// fault persists.
    fn recover_if_failed(&mut self) -> Result<(), String> {
        let failed = self
            .inner
            .failure
            .lock()
            .map_err(|_| "internal lock poisoned".to_string())?
            .clone();
        let Some(reason) = failed else {
            return Ok(());
        };
        match self.cut_back() {
            Ok(()) => {
                if let Ok(mut fl) = self.inner.failure.lock() {
                    *fl = None;
                }
                tracing::info!("audit log writable again after: {reason}");
                Ok(())
            }
            Err(e) => Err(format!("{reason}; recovery failed: {e}")),
        }
    }

    /// Reopens the file and cuts it back to its durable length, dropping whatever a failed
    /// append left after it (a failed fsync is never retried on the same handle).
    fn cut_back(&mut self) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        f.set_len(self.len)?;
        f.sync_all()?;
        self.file = f;
        Ok(())
    }

    fn commit(&mut self, jobs: &mut [Job]) -> Result<Vec<Vec<u64>>, String> {
        let now = rfc3339_millis(time::OffsetDateTime::now_utc());
        let mut buf = Vec::new();
        let mut range = self.range.clone();
        let mut leaves = Vec::new();
        let mut offsets = Vec::new();
        let mut seqs = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            let mut js = Vec::with_capacity(job.entries.len());
            for e in job.entries.iter_mut() {
                let seq = range.size();
                e.v = super::entry::ENTRY_VERSION;
                e.seq = seq;
                e.prev = hex::encode(range.root());
                e.time.clone_from(&now);
                let bytes = e.encode();
                if bytes.len() > MAX_ENTRY {
                    return Err(format!(
                        "an audit entry of {} bytes is too large",
                        bytes.len()
                    ));
                }
                let leaf = merkle::leaf_hash(&bytes);
                range
                    .append(leaf)
                    .map_err(|e| format!("internal: the tree cannot grow: {e}"))?;
                offsets.push(self.len + buf.len() as u64);
                buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
                buf.extend_from_slice(&bytes);
                leaves.push(leaf);
                js.push(seq);
            }
            seqs.push(js);
        }
        if buf.is_empty() {
            return Ok(seqs);
        }
        self.file
            .write_all(&buf)
            .map_err(|e| format!("cannot append to the audit log: {e}"))?;
        #[cfg(test)]
        if self
            .inner
            .fail_sync
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err("fsync of the audit log failed: injected test fault".into());
        }
        self.file
            .sync_data()
            .map_err(|e| format!("fsync of the audit log failed: {e}"))?;
        self.len += buf.len() as u64;
        self.inner
            .groups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = range.root();
        self.range = range;
        let mut t = self
            .inner
            .tree
            .write()
            .map_err(|_| "internal lock poisoned".to_string())?;
        t.leaves.extend(leaves);
        t.offsets.extend(offsets);
        t.root = root;
        Ok(seqs)
    }
}

struct Scan {
    leaves: Vec<Hash>,
    offsets: Vec<u64>,
    range: CompactRange,
    /// Where a torn tail starts, if there is one.
    torn_at: Option<u64>,
}

enum FrameError {
    Io(std::io::Error),
    /// Cut short or failing its CRC: torn if at the end.
    Torn(String),
    /// Impossible length.
    Bad(String),
}

/// Reads one frame; `Ok(None)` at a clean end of file.
fn read_frame<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Torn("frame header cut short".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_ENTRY {
        return Err(FrameError::Bad(format!("frame length {len}")));
    }
    let mut body = vec![0u8; len];
    match r.read_exact(&mut body) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Torn("frame cut short".into()));
        }
        Err(e) => return Err(FrameError::Io(e)),
    }
    if crc32fast::hash(&body) != crc {
        return Err(FrameError::Torn("frame fails its CRC".into()));
    }
    Ok(Some(body))
}

/// Reads and checks every entry, checking the root at the checkpoint's size on the way.
fn scan(file: &mut File, cp: Option<&Checkpoint>) -> Result<Scan, String> {
    let total = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot read the log: {e}"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read the log: {e}"))?;
    let mut r = BufReader::with_capacity(1 << 20, &mut *file);
    let mut s = Scan {
        leaves: Vec::new(),
        offsets: Vec::new(),
        range: CompactRange::new(),
        torn_at: None,
    };
    let mut offset = 0u64;
    let check_cp = |s: &Scan| -> Result<(), String> {
        if let Some(cp) = cp
            && s.range.size() == cp.size
            && s.range.root() != cp.root
        {
            return Err(format!(
                "the root of the first {} entries differs from the last signed checkpoint's: the log was altered",
                cp.size
            ));
        }
        Ok(())
    };
    check_cp(&s)?;
    let mut damaged: Option<String> = None;
    loop {
        let frame = match read_frame(&mut r) {
            Ok(None) => break,
            Ok(Some(b)) => b,
            Err(FrameError::Io(e)) => return Err(format!("cannot read the log: {e}")),
            Err(FrameError::Torn(why)) | Err(FrameError::Bad(why)) => {
                damaged = Some(why);
                break;
            }
        };
        let index = s.leaves.len() as u64;
        let e = Entry::decode(&frame)
            .map_err(|e| format!("entry {index} (byte {offset}) is not a valid entry: {e}"))?;
        if e.seq != index {
            return Err(format!(
                "entry at position {index} carries seq {}: entries were deleted, inserted or reordered",
                e.seq
            ));
        }
        if e.prev != hex::encode(s.range.root()) {
            return Err(format!(
                "entry {index} does not chain to the entries before it: entry {} or {index} was altered",
                index.saturating_sub(1)
            ));
        }
        let leaf = merkle::leaf_hash(&frame);
        s.range
            .append(leaf)
            .map_err(|e| format!("internal: the tree cannot grow: {e}"))?;
        s.leaves.push(leaf);
        s.offsets.push(offset);
        offset += 8 + frame.len() as u64;
        check_cp(&s)?;
    }
    drop(r);
    if let Some(why) = damaged {
        if !is_torn_tail(file, offset, total) {
            return Err(format!(
                "entry {} (byte {offset}) is damaged ({why}) and data follows it",
                s.leaves.len()
            ));
        }
        s.torn_at = Some(offset);
    }
    Ok(s)
}

/// Whether the damaged frame at `offset` is a torn tail (a crash mid-append): its header is
/// incomplete, it claims to run to or past the end of the file, or only zeros follow.
fn is_torn_tail(file: &mut File, offset: u64, total: u64) -> bool {
    if total.saturating_sub(offset) < 8 {
        return true;
    }
    let mut rest = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut rest).is_err() {
        return false;
    }
    let Some(&[a, b, c, d]) = rest.get(0..4) else {
        return true;
    };
    let declared = 8 + u64::from(u32::from_le_bytes([a, b, c, d]));
    offset + declared >= total || rest.iter().all(|&b| b == 0)
}

/// Reads and checks the persisted checkpoint (signature by our own key, origin).
fn read_checkpoint(
    dir: &Path,
    key: &SigningKey,
    origin: &str,
) -> Result<Option<SignedCheckpoint>, String> {
    let path = dir.join(CHECKPOINT_FILE);
    let note = match std::fs::read_to_string(&path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let cp = checkpoint::open(&note, &key.verifier_key(), origin).map_err(|e| {
        format!(
            "{} is not a checkpoint signed by this gateway's audit key for {origin}: {e}",
            path.display()
        )
    })?;
    Ok(Some(SignedCheckpoint {
        checkpoint: cp,
        note,
    }))
}

fn lock_err() -> AuditError {
    AuditError::Io("internal lock poisoned".into())
}

fn io_at(p: &Path, e: std::io::Error) -> AuditError {
    AuditError::Io(format!("{}: {e}", p.display()))
}

fn fsync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_at(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{Action, Actor, Decision};

    fn key() -> SigningKey {
        SigningKey::from_seed_bytes("kingston.skp/audit", &[7; 32]).expect("key")
    }

    const ORIGIN: &str = "kingston.skp/audit/v1";

    fn entry(i: u64) -> Entry {
        let mut e = Entry::new(Actor::gateway(), Action::GatewayStart, Decision::Allow);
        e.reason = Some(format!("test entry {i}"));
        e
    }

    fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open(dir, key(), ORIGIN)
    }

    /// Closes the log and waits until its writer has let go (final checkpoint written).
    fn close(log: AuditLog) {
        let inner = log.inner.clone();
        drop(log);
        for _ in 0..200 {
            if Arc::strong_count(&inner) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("audit writer did not stop");
    }

    fn entries_path(dir: &Path) -> PathBuf {
        dir.join("audit").join(ENTRIES_FILE)
    }

    #[tokio::test]
    async fn appends_are_dense_chained_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = open(dir.path()).expect("open");
        let mut handles = Vec::new();
        for t in 0..16 {
            let log = log.clone();
            handles.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..25 {
                    got.push(log.append_one(entry(t * 100 + i)).await.expect("append"));
                }
                got
            }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.extend(h.await.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..400).collect::<Vec<u64>>());
        let cp = log.checkpoint().expect("checkpoint");
        assert_eq!(cp.checkpoint.size, 400);
        for i in [0, 1, 199, 399] {
            let proof = log.inclusion_proof(i, 400).expect("proof");
            let leaf = log.leaf_hash(i).expect("leaf");
            merkle::verify_inclusion(&leaf, i, 400, &proof, &cp.checkpoint.root).expect("verifies");
        }
        let root_100 = log.root_at(100).expect("root");
        let proof = log.consistency_proof(100, 400).expect("consistency");
        merkle::verify_consistency(100, 400, &root_100, &cp.checkpoint.root, &proof)
            .expect("consistent");
        let bytes: Vec<Vec<u8>> = log
            .read(0, 400)
            .expect("read")
            .map(|b| b.expect("entry"))
            .collect();
        assert_eq!(bytes.len(), 400);
        for (i, b) in bytes.iter().enumerate() {
            let e = Entry::decode(b).expect("decode");
            assert_eq!(e.seq, i as u64);
        }
        close(log);
        let log = open(dir.path()).expect("reopen");
        assert_eq!(log.size(), 400);
        assert_eq!(log.append_one(entry(1)).await.expect("append"), 400);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_but_only_above_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = open(dir.path()).expect("open");
        for i in 0..10 {
            log.append_one(entry(i)).await.expect("append");
        }
        log.checkpoint().expect("checkpoint at 10");
        for i in 10..12 {
            log.append_one(entry(i)).await.expect("append");
        }
        let path = entries_path(dir.path());
        let full = std::fs::metadata(&path).expect("meta").len();
        // Simulate a crash: the writer may have persisted a later checkpoint at close, so
        // rewrite the checkpoint of size 10 after closing.
        let note10 = checkpoint::sign(
            &Checkpoint::new(ORIGIN, 10, log.root_at(10).expect("root")).expect("cp"),
            &key(),
        )
        .expect("sign");
        close(log);
        std::fs::write(dir.path().join("audit").join(CHECKPOINT_FILE), &note10).expect("write");

        // Cut the last entry in half: it is torn and cut off.
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 20).expect("cut");
        drop(f);
        let log = open(dir.path()).expect("torn tail is recovered");
        assert_eq!(log.size(), 11);
        assert_eq!(log.append_one(entry(99)).await.expect("append"), 11);
        close(log);
        std::fs::write(dir.path().join("audit").join(CHECKPOINT_FILE), &note10).expect("write");

        // Garbage appended after the last entry: cut.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0xff; 5]).expect("garbage");
        drop(f);
        let log = open(dir.path()).expect("garbage tail is recovered");
        assert_eq!(log.size(), 12);
        close(log);
        std::fs::write(dir.path().join("audit").join(CHECKPOINT_FILE), &note10).expect("write");

        // Cutting into an entry the checkpoint covers: start-up refuses.
        let offsets = {
            let log = open(dir.path()).expect("open");
            let o = log.inner.tree.read().expect("lock").offsets.clone();
            close(log);
            o
        };
        std::fs::write(dir.path().join("audit").join(CHECKPOINT_FILE), &note10).expect("write");
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(offsets[9] + 10).expect("cut");
        drop(f);
        let err = open(dir.path()).expect_err("must refuse");
        let msg = err.to_string();
        assert!(msg.contains("covers 10"), "{msg}");
    }

    #[tokio::test]
    async fn damage_before_the_tail_or_a_rewritten_log_refuses_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = open(dir.path()).expect("open");
        for i in 0..5 {
            log.append_one(entry(i)).await.expect("append");
        }
        let offsets = log.inner.tree.read().expect("lock").offsets.clone();
        close(log);
        let path = entries_path(dir.path());
        let original = std::fs::read(&path).expect("read");

        // A flipped byte inside entry 2 (CRC fails, data follows): refuse.
        let mut bytes = original.clone();
        bytes[offsets[2] as usize + 30] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let msg = open(dir.path()).expect_err("refuse").to_string();
        assert!(msg.contains("entry 2"), "{msg}");

        // Entry 2 rewritten with a valid CRC but the same seq: the chain breaks at entry 3.
        let mut e2 =
            Entry::decode(&original[offsets[2] as usize + 8..offsets[3] as usize]).expect("decode");
        e2.reason = Some("forged".into());
        let forged = e2.encode();
        let mut bytes = original[..offsets[2] as usize].to_vec();
        bytes.extend_from_slice(&(forged.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&forged).to_le_bytes());
        bytes.extend_from_slice(&forged);
        bytes.extend_from_slice(&original[offsets[3] as usize..]);
        std::fs::write(&path, &bytes).expect("write");
        let msg = open(dir.path()).expect_err("refuse").to_string();
        assert!(msg.contains("entry 3 does not chain"), "{msg}");

        // The checkpoint signed by another key: refuse.
        std::fs::write(&path, &original).expect("write");
        let other = SigningKey::from_seed_bytes("kingston.skp/audit", &[8; 32]).expect("key");
        let note = checkpoint::sign(
            &Checkpoint::new(ORIGIN, 0, merkle::EMPTY_ROOT).expect("cp"),
            &other,
        )
        .expect("sign");
        std::fs::write(dir.path().join("audit").join(CHECKPOINT_FILE), note).expect("write");
        let msg = open(dir.path()).expect_err("refuse").to_string();
        assert!(
            msg.contains("not a checkpoint signed by this gateway"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_failed_write_refuses_appends_until_the_fault_clears() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = open(dir.path()).expect("open");
        log.append_one(entry(0)).await.expect("append");
        // An entry the writer refuses puts the log in its failed state, as an I/O error does
        // (the e2e test fills a real tmpfs for ENOSPC).
        let mut big = entry(1);
        big.reason = Some("x".repeat(MAX_ENTRY + 1));
        let err = log.append_one(big).await.expect_err("too large");
        assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
        assert!(log.failure().is_some());
        // The next append recovers (the file is fine) and the log stays dense.
        assert_eq!(log.append_one(entry(2)).await.expect("append"), 1);
        assert!(log.failure().is_none());
        close(log);
        let log = open(dir.path()).expect("reopen");
        assert_eq!(log.size(), 2);
    }

    #[tokio::test]
    async fn an_entry_whose_fsync_failed_is_cut_at_once_and_never_found_after_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = entries_path(dir.path());
        let log = open(dir.path()).expect("open");
        log.append_one(entry(0)).await.expect("append");
        let durable = std::fs::metadata(&path).expect("meta").len();
        // The group's bytes reach the file, then its fdatasync fails.
        log.fail_next_syncs(1);
        let err = log
            .append(vec![entry(1), entry(2)])
            .await
            .expect_err("fsync failed");
        assert!(
            matches!(&err, AuditError::Unavailable(m) if m.contains("fsync")),
            "{err}"
        );
        assert!(log.failure().is_some(), "appends are refused");
        assert_eq!(log.size(), 1, "the refused entries are not in the tree");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            durable,
            "the refused entries are cut off at once, before any later append"
        );
        // Stopped before any later append (a restart): the refused entries are not there.
        close(log);
        let log = open(dir.path()).expect("reopen");
        assert_eq!(log.size(), 1);
        assert_eq!(log.append_one(entry(3)).await.expect("append"), 1);
        let bytes = log
            .read(1, 2)
            .expect("read")
            .next()
            .expect("one")
            .expect("entry");
        let e = Entry::decode(&bytes).expect("decode");
        assert_eq!(e.reason.as_deref(), Some("test entry 3"));
        // Failed again, and recovered on the next append without a restart.
        log.fail_next_syncs(1);
        log.append_one(entry(4)).await.expect_err("fsync failed");
        assert_eq!(log.append_one(entry(5)).await.expect("recovered"), 2);
        assert!(log.failure().is_none());
        close(log);
        assert_eq!(open(dir.path()).expect("reopen").size(), 3);
    }

    #[tokio::test]
    async fn a_stalled_writer_holds_appends_untouched_until_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = entries_path(dir.path());
        let log = open(dir.path()).expect("open");
        log.append_one(entry(0)).await.expect("append");
        let durable = std::fs::metadata(&path).expect("meta").len();
        log.stall_appends(true);
        let held = {
            let log = log.clone();
            tokio::spawn(async move { log.append(vec![entry(1), entry(2)]).await })
        };
        let later = {
            let log = log.clone();
            tokio::spawn(async move { log.append_one(entry(3)).await })
        };
        // However long it is held, nothing is answered, written or added to the tree.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!held.is_finished() && !later.is_finished());
            assert_eq!(log.size(), 1);
            assert_eq!(std::fs::metadata(&path).expect("meta").len(), durable);
        }
        log.stall_appends(false);
        assert_eq!(held.await.expect("task").expect("append"), vec![1, 2]);
        assert_eq!(later.await.expect("task").expect("append"), 3);
        close(log);
        assert_eq!(open(dir.path()).expect("reopen").size(), 4);
    }
}
