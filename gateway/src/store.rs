//! The record store: an append-only, CRC-framed segment log (the durable truth) with in-memory
//! indexes rebuilt from it on open.
//!
//! Layout under the data directory: `records/seg-NNNNNN.log`, frames
//! `u32 LE length ‖ u32 LE CRC-32 ‖ payload`, payload `u8 kind ‖ u64 LE seq ‖ u64 LE prior ‖ body`:
//! kind 1 = record (`prior` = the seq it replaces, 0 if none; body = encoded [`StoredRecord`]),
//! kind 2 = tombstone (`prior` = the seq it withdraws; body = dataset name ‖ record key),
//! kind 3 = commit marker (`seq` = `prior` = 0: it takes no sequence number; body empty, or
//! `u64 LE first ‖ u64 LE last`, the audit entry indexes of the group's entries). Records and
//! tombstones are numbered 1, 2, 3… in log order; markers are not numbered.
//!
//! One writer thread owns all writes. It takes every queued batch, decides accepted / duplicate /
//! replaced against the in-memory record-key index, writes the frames with one `write` and one
//! `fdatasync`, and only then publishes the new state and answers the callers (group commit).
//! Every group written ends with its commit marker, in that same write (a group that wrote
//! audit entries has one even if it has no record frame: all duplicates, all rejected, nothing
//! found to withdraw), so a group is on disk whole or not at all:
//!
//! - **Unmarked tail.** Frames after the last marker are a group whose write the gateway never
//!   finished (never acknowledged); they are cut off on open like a torn tail. A log with frames
//!   but no marker at all was written before markers existed (legacy) and is kept as it is.
//! - **Entries without records.** A group's audit entries are durable before its frames are
//!   written (so no record is ever stored without its entry), so a crash in between leaves
//!   entries counting records that were never stored. On open with the audit log
//!   ([`Store::open_audited`]), the ingest and withdraw entries (decision allow) after the
//!   highest entry a marker covers, not already named by a `storage_failure` entry, are named
//!   by one new `storage_failure` entry (`entries a..=b were not committed: the gateway stopped
//!   before their records were written`), written before any new group. A legacy log is not
//!   checked (logged).
//!
//! Fail closed: if a write or fsync fails (disk full, I/O error) the group is refused and the
//! segment is cut back at once to its last durable length through a new handle (a failed fsync
//! is never retried on the same handle), so no frame of a refused group is found after a
//! restart; the `storage_failure` audit entry naming the group's entries is written once that
//! cut has succeeded. Until the cut and the entry have both succeeded the store is poisoned and
//! refuses every write; both are retried before each later group, so the store recovers by
//! itself once the fault clears (space freed), without a restart. On open, the log is
//! scanned: every frame's CRC and sequence number is checked, a torn tail (a crash mid-write,
//! never acknowledged) is cut off, a bad frame anywhere else refuses start-up, and the
//! record-key and token indexes are rebuilt.
//!
//! Why not sled (measured, see the README): with a random-key idempotency index and token index
//! in the commit path sled 0.34 reached ~12k durable records/s and, as a background token index,
//! 600-900 MiB of RSS at 1M records; its `flush` is not an fsync on Linux (sled #1452).
//!
//! Withdrawn and replaced versions are unreachable at once; their bytes stay in the segment until
//! it is compacted. Never sees a raw identifier: records arrive pseudonymised and validated.

use crate::audit::entry::{Action, Actor, Counts, Decision, Entry};
use crate::audit::log::AuditLog;
use prost::Message;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

mod view;
pub use view::{PersonView, RecordView, ViewError, Want};

/// A record as stored: the validated record plus who sent it and when.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredRecord {
    /// Dataset name.
    #[prost(string, tag = "1")]
    pub dataset: String,
    /// Catalog schema version the record was validated against.
    #[prost(uint32, tag = "2")]
    pub schema_version: u32,
    /// Submitting agency (from its certificate).
    #[prost(string, tag = "3")]
    pub agency: String,
    /// Receipt time, Unix milliseconds.
    #[prost(int64, tag = "4")]
    pub received_unix_ms: i64,
    /// The record, values in catalog order of sent fields.
    #[prost(message, optional, tag = "5")]
    pub record: Option<sharing_proto::v1::Record>,
}

/// A validated record ready to be written.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Dataset name.
    pub dataset: String,
    /// Record-key token.
    pub record_key: [u8; 32],
    /// Content hash.
    pub content_hash: [u8; 32],
    /// `(kind, token)` pairs to index.
    pub tokens: Vec<(String, [u8; 32])>,
    /// Encoded [`StoredRecord`].
    pub encoded: Vec<u8>,
}

/// What happened to one submitted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New record key: stored.
    Accepted,
    /// Same key and content hash as a stored record: nothing written.
    Duplicate,
    /// Known key with another content hash: the new version replaced the old.
    Replaced,
}

/// Result of a withdrawal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WithdrawCounts {
    /// Records removed.
    pub withdrawn: u64,
    /// Keys that matched no stored record.
    pub not_found: u64,
}

/// Store failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A write or fsync failed earlier and the store could not yet be cut back to its durable
    /// state; it refuses writes until that succeeds (tried before each write: no restart
    /// needed once the fault clears).
    #[error("the store failed to write durably and refuses writes until the storage fault clears")]
    Poisoned,
    /// The audit entry for the change could not be made durable, so the change was not made.
    #[error("{0}")]
    AuditUnavailable(String),
    /// The writer thread has stopped (shutdown).
    #[error("the store is shutting down")]
    Closed,
    /// The file system reported an error.
    #[error("storage error: {0}")]
    Io(String),
    /// Stored data could not be decoded (corruption).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Largest segment before a new one is started.
const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Most records one group commit takes.
const MAX_GROUP_RECORDS: usize = 20_000;
/// Largest frame accepted when reading the log.
const MAX_FRAME: usize = 64 * 1024 * 1024;
const KIND_RECORD: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const KIND_MARKER: u8 = 3;
/// Why the entries found after the last commit marker on open were not committed.
const STOPPED: &str = "the gateway stopped before their records were written";

/// The identity of a record as indexed: dataset id (2 bytes, big-endian), then the first 14
/// bytes of the record-key token. Record keys are HMAC-SHA256 tokens, so 112 bits tell them
/// apart (a collision among a billion keys of one dataset has probability about 10⁻¹⁶), and
/// the index entry (with [`Live`]) is 32 bytes rather than 64.
type RecordKey = [u8; 16];

/// The index key of a dataset's record key.
fn rk(id: u16, key: &[u8; 32]) -> RecordKey {
    let mut k = [0u8; 16];
    k[..2].copy_from_slice(&id.to_be_bytes());
    k[2..].copy_from_slice(&key[..14]);
    k
}

/// The dataset id of an index key.
fn rk_dataset(k: &RecordKey) -> u16 {
    u16::from_be_bytes([k[0], k[1]])
}

/// A token as indexed: (kind, token).
type TypedToken = (String, [u8; 32]);

/// Where a frame lives.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u32,
    offset: u32,
}

/// In-memory state, rebuilt from the log on open.
#[derive(Default)]
struct State {
    /// (dataset id, record key) → live version.
    keys: HashMap<RecordKey, Live>,
    /// Dataset names by id.
    datasets: Vec<String>,
    /// Live records per dataset id.
    counts: Vec<u64>,
    /// Location of every frame, by seq - 1.
    locs: Vec<Loc>,
    /// Token index: (kind id, first 15 bytes of the token) → seqs of records carrying it.
    /// Entries of replaced or withdrawn versions are filtered out on lookup.
    tokens: HashMap<u128, Postings>,
    /// Token kinds by id.
    kinds: Vec<String>,
    /// Sequence numbers of record versions replaced or withdrawn (their bytes stay in the
    /// segments).
    gone: std::collections::HashSet<u64>,
    /// Records replaced or withdrawn since open: a linker built before a change of this counter
    /// may link on tokens of versions that are gone and must be rebuilt.
    removals: u64,
}

/// The seqs of one token; almost always one.
#[derive(Debug, Clone)]
enum Postings {
    One(u64),
    Many(Vec<u64>),
}

impl Postings {
    fn push(&mut self, seq: u64) {
        match self {
            Postings::One(a) => *self = Postings::Many(vec![*a, seq]),
            Postings::Many(v) => v.push(seq),
        }
    }
    fn seqs(&self) -> &[u64] {
        match self {
            Postings::One(a) => std::slice::from_ref(a),
            Postings::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Live {
    seq: u64,
    /// First 8 bytes of the content hash: a resend with equal bytes here is a duplicate
    /// (an honest change collides with probability 2⁻⁶⁴).
    hash: [u8; 8],
}

impl State {
    fn dataset_id(&mut self, name: &str) -> u16 {
        match self.datasets.iter().position(|d| d == name) {
            Some(i) => i as u16,
            None => {
                self.datasets.push(name.to_string());
                self.counts.push(0);
                (self.datasets.len() - 1) as u16
            }
        }
    }
    fn find_dataset(&self, name: &str) -> Option<u16> {
        self.datasets
            .iter()
            .position(|d| d == name)
            .map(|i| i as u16)
    }
    fn token_key(&mut self, kind: &str, token: &[u8; 32]) -> u128 {
        let id = match self.kinds.iter().position(|k| k == kind) {
            Some(i) => i,
            None => {
                self.kinds.push(kind.to_string());
                self.kinds.len() - 1
            }
        };
        token_key(id as u8, token)
    }
    fn add_tokens(&mut self, seq: u64, tokens: &[TypedToken]) {
        for (kind, tok) in tokens {
            self.add_token(seq, kind, tok);
        }
    }
    fn add_token(&mut self, seq: u64, kind: &str, tok: &[u8; 32]) {
        let k = self.token_key(kind, tok);
        match self.tokens.get_mut(&k) {
            Some(p) => p.push(seq),
            None => {
                self.tokens.insert(k, Postings::One(seq));
            }
        }
    }
}

fn token_key(kind_id: u8, token: &[u8; 32]) -> u128 {
    let mut b = [0u8; 16];
    b[0] = kind_id;
    b[1..].copy_from_slice(&token[..15]);
    u128::from_be_bytes(b)
}

enum Job {
    Ingest(
        Vec<NewRecord>,
        Option<Entry>,
        oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
    ),
    Withdraw(
        String,
        Vec<[u8; 32]>,
        Option<Entry>,
        oneshot::Sender<Result<WithdrawCounts, StoreError>>,
    ),
}

/// What the writer thread is sent. (Jobs were always sent by value; a stop is rare.)
#[allow(clippy::large_enum_variant)]
enum Msg {
    Job(Job),
    /// Stop after the queued jobs; answered once the writer has written its last byte.
    Stop(oneshot::Sender<()>),
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
}

struct Inner {
    dir: PathBuf,
    state: RwLock<State>,
    poisoned: AtomicBool,
    /// Test fault: run in place of the next record-log fdatasync (after the group's bytes are
    /// written); an error is handled as a failed fsync.
    #[cfg(test)]
    on_sync: std::sync::Mutex<Option<SyncFault>>,
    /// Test fault: the writer stops (as if killed) right after the next group's audit entries
    /// are durable, before any of its frames is written.
    #[cfg(test)]
    stop_after_audit: AtomicBool,
}

/// A fault injected in place of one fdatasync (tests only).
#[cfg(test)]
type SyncFault = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

impl Store {
    /// Opens (or creates) the store under `dir`: scans and checks the log (cutting a torn tail),
    /// rebuilds the in-memory indexes, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_audited(dir, None)
    }

    /// [`Store::open`] with an audit log: every ingest or withdrawal job that carries an entry
    /// has the entry made durable in the audit log before its records are written, so no record
    /// is ever stored without its entry.
    ///
    /// On open, ingest and withdraw entries of groups the gateway stopped before writing (after
    /// the last commit marker, not yet named) are named by a `storage_failure` entry before any
    /// new group is written. If that entry cannot be written now, the store opens refusing
    /// writes (as after a failed write) and retries it before each later write.
    pub fn open_audited(dir: &Path, audit: Option<AuditLog>) -> Result<Self, StoreError> {
        let rec_dir = dir.join("records");
        std::fs::create_dir_all(&rec_dir).map_err(|e| io_at(&rec_dir, e))?;
        fsync_dir(dir)?;
        let mut state = State::default();
        let mut scanned = scan(&rec_dir, &mut state)?;
        if let Some((at, frames)) = scanned.unmarked {
            let path = segment_path(&rec_dir, scanned.seg_no);
            tracing::warn!(segment = %path.display(), cut_at = at, frames, "cutting off the record log a group whose write never finished (no commit marker; never acknowledged)");
            drop(scanned);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_at(&path, e))?;
            f.set_len(at).map_err(|e| io_at(&path, e))?;
            f.sync_all().map_err(|e| io_at(&path, e))?;
            state = State::default();
            scanned = scan(&rec_dir, &mut state)?;
        }
        let unrecorded = match &audit {
            Some(log) => uncommitted_entries(log, &scanned, !state.locs.is_empty())?
                .map(|(first, last)| (first, last, STOPPED.to_owned())),
            None => None,
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            on_sync: std::sync::Mutex::new(None),
            #[cfg(test)]
            stop_after_audit: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(64);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let writer = Writer {
            inner: inner.clone(),
            file: scanned.file,
            seg_no: scanned.seg_no,
            seg_len: scanned.seg_len,
            rec_dir,
            audit,
            unrecorded,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx, ready_tx))
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        // The writer first names the entries of groups a crash kept from being written.
        let _ = ready_rx.recv();
        Ok(Self { inner, tx })
    }

    /// Queues records for the next group commit. The returned receiver resolves once they are
    /// durable (or the commit failed). Waits only for queue space (back-pressure).
    ///
    /// `entry` is the batch's audit entry; the store fills in its counts (keeping `rejected`).
    pub async fn submit(
        &self,
        records: Vec<NewRecord>,
        entry: Option<Entry>,
    ) -> Result<oneshot::Receiver<Result<Vec<Outcome>, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Job::Ingest(records, entry, tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Stops the writer after the queued jobs and waits until it has written its last byte: a
    /// process exiting right after cannot cut a group in half. Later writes, through any handle,
    /// fail with [`StoreError::Closed`].
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes records and waits until they are durable.
    pub async fn ingest(&self, records: Vec<NewRecord>) -> Result<Vec<Outcome>, StoreError> {
        self.submit(records, None)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Removes records of a dataset by record-key token, durably.
    /// `entry` is the withdrawal's audit entry; the store fills in its counts.
    pub async fn withdraw(
        &self,
        dataset: &str,
        keys: Vec<[u8; 32]>,
        entry: Option<Entry>,
    ) -> Result<WithdrawCounts, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Job::Withdraw(
                dataset.to_string(),
                keys,
                entry,
                tx,
            )))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Number of live records per dataset, by dataset name.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let st = self.inner.state.read().map_err(|_| lock_err())?;
        let mut v: Vec<(String, u64)> = st
            .datasets
            .iter()
            .cloned()
            .zip(st.counts.iter().copied())
            .filter(|(_, n)| *n > 0)
            .collect();
        v.sort();
        Ok(v)
    }

    /// Number of live records in the record-key index (kept apart from the per-dataset counters
    /// of [`Store::counts`], so tests can check one against the other).
    pub fn count_records(&self) -> Result<u64, StoreError> {
        Ok(self.inner.state.read().map_err(|_| lock_err())?.keys.len() as u64)
    }

    /// The live record of a dataset's record key, if any.
    pub fn get(
        &self,
        dataset: &str,
        record_key: &[u8; 32],
    ) -> Result<Option<StoredRecord>, StoreError> {
        let seq = {
            let st = self.inner.state.read().map_err(|_| lock_err())?;
            let Some(id) = st.find_dataset(dataset) else {
                return Ok(None);
            };
            match st.keys.get(&rk(id, record_key)) {
                Some(l) => l.seq,
                None => return Ok(None),
            }
        };
        self.record_at(seq)
    }

    /// Sequence numbers of live records carrying a token of a kind.
    pub fn records_with_token(&self, kind: &str, token: &[u8; 32]) -> Result<Vec<u64>, StoreError> {
        let candidates: Vec<u64> = {
            let st = self.inner.state.read().map_err(|_| lock_err())?;
            let Some(id) = st.kinds.iter().position(|k| k == kind) else {
                return Ok(Vec::new());
            };
            st.tokens
                .get(&token_key(id as u8, token))
                .map(|p| p.seqs().to_vec())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for seq in candidates {
            // Confirm liveness and the full token (the index keys on a 120-bit prefix).
            if let Some(rec) = self.record_at(seq)?
                && rec.record.is_some_and(|r| {
                    r.persons
                        .iter()
                        .flat_map(|p| &p.tokens)
                        .any(|t| t.kind == kind && t.token == token)
                })
            {
                out.push(seq);
            }
        }
        Ok(out)
    }

    /// Of `seqs` (ascending record sequence numbers), those whose version has since been
    /// replaced or withdrawn.
    pub fn gone_among(&self, seqs: &[u64]) -> Result<Vec<u64>, StoreError> {
        let st = self.inner.state.read().map_err(|_| lock_err())?;
        let mut out: Vec<u64> = st
            .gone
            .iter()
            .copied()
            .filter(|g| seqs.binary_search(g).is_ok())
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The record stored under a sequence number, live or not (a replaced or withdrawn
    /// version's bytes stay in its segment); `None` if the number names no record.
    pub fn record_any(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        let loc = {
            let st = self.inner.state.read().map_err(|_| lock_err())?;
            match st.locs.get((seq - 1) as usize) {
                Some(l) => *l,
                None => return Ok(None),
            }
        };
        match read_frame_at(&self.inner.dir.join("records"), loc)? {
            (KIND_RECORD, _, body) if body.len() >= 8 => StoredRecord::decode(&body[8..])
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
            _ => Ok(None),
        }
    }

    /// The live record stored under a sequence number.
    pub fn record_at(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        let loc = {
            let st = self.inner.state.read().map_err(|_| lock_err())?;
            match st.locs.get((seq - 1) as usize) {
                Some(l) => *l,
                None => return Ok(None),
            }
        };
        let rec = match read_frame_at(&self.inner.dir.join("records"), loc)? {
            (KIND_RECORD, _, body) if body.len() >= 8 => {
                StoredRecord::decode(&body[8..]).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
            _ => return Ok(None),
        };
        // Live only if the record-key index still points at this version.
        let key = rec
            .record
            .as_ref()
            .and_then(|r| <[u8; 32]>::try_from(r.record_key.as_slice()).ok());
        let st = self.inner.state.read().map_err(|_| lock_err())?;
        let live = match (st.find_dataset(&rec.dataset), key) {
            (Some(id), Some(k)) => st.keys.get(&rk(id, &k)).is_some_and(|l| l.seq == seq),
            _ => false,
        };
        Ok(live.then_some(rec))
    }

    /// The live records of `datasets` (all datasets if empty) with a sequence number above
    /// `after`, in sequence order, and the removal counter at that moment (see
    /// [`Store::removals`]). Read them with [`Store::reader`].
    pub fn snapshot(&self, datasets: &[&str], after: u64) -> Result<Snapshot, StoreError> {
        let st = self.inner.state.read().map_err(|_| lock_err())?;
        let ids: Vec<u16> = datasets.iter().filter_map(|d| st.find_dataset(d)).collect();
        if !datasets.is_empty() && ids.is_empty() {
            return Ok(Snapshot {
                items: Vec::new(),
                removals: st.removals,
            });
        }
        let mut items: Vec<(u64, Loc)> = st
            .keys
            .iter()
            .filter(|(k, l)| l.seq > after && (datasets.is_empty() || ids.contains(&rk_dataset(k))))
            .filter_map(|(_, l)| st.locs.get((l.seq - 1) as usize).map(|loc| (l.seq, *loc)))
            .collect();
        items.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(Snapshot {
            items,
            removals: st.removals,
        })
    }

    /// How many records have been replaced or withdrawn since the store opened.
    pub fn removals(&self) -> u64 {
        self.inner
            .state
            .read()
            .map(|st| st.removals)
            .unwrap_or(u64::MAX)
    }

    /// A reader of snapshot records, reading the segments forward with one buffer.
    pub fn reader(&self) -> SeqReader {
        SeqReader {
            dir: self.inner.dir.join("records"),
            file: None,
            buf: Vec::new(),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether a write has failed and the store has not yet recovered from it (it then
    /// refuses writes).
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::SeqCst)
    }

    /// Test fault: `fault` runs in place of the next fdatasync of the record log, after the
    /// group's bytes are written; an error is handled as a failed fsync.
    #[cfg(test)]
    pub(crate) fn fault_next_sync(
        &self,
        fault: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) {
        if let Ok(mut f) = self.inner.on_sync.lock() {
            *f = Some(Box::new(fault));
        }
    }

    /// Test fault: the writer stops (as a kill would stop it) once the next group's audit
    /// entries are durable, before any of its frames is written; that group's callers and every
    /// later one get [`StoreError::Closed`].
    #[cfg(test)]
    pub(crate) fn stop_after_next_audit_append(&self) {
        self.inner.stop_after_audit.store(true, Ordering::SeqCst);
    }
}

/// Live records at one moment: sequence numbers and where they are, in sequence order.
pub struct Snapshot {
    items: Vec<(u64, Loc)>,
    removals: u64,
}

impl Snapshot {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sequence numbers, ascending.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.items.iter().map(|(s, _)| *s)
    }

    /// Highest sequence number (0 if empty).
    pub fn last_seq(&self) -> u64 {
        self.items.last().map_or(0, |(s, _)| *s)
    }

    /// The store's removal counter when the snapshot was taken.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Reads every record in sequence order with `reader`, calling `f(seq, record)` with the
    /// record read in place (no copy of its values). Stops at the first error (of reading or
    /// of `f`).
    pub fn for_each<E: From<StoreError>>(
        &self,
        reader: &mut SeqReader,
        f: impl FnMut(u64, &RecordView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_some(reader, Want::ALL, f)
    }

    /// [`Snapshot::for_each`] reading only what `want` asks for of each record.
    pub fn for_each_some<E: From<StoreError>>(
        &self,
        reader: &mut SeqReader,
        want: Want<'_>,
        f: impl FnMut(u64, &RecordView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_in(0..self.items.len(), reader, want, f)
    }

    /// [`Snapshot::for_each_some`] over the records at positions `range` (in sequence order)
    /// only: each part of a snapshot split between threads reads its own.
    pub fn for_each_in<E: From<StoreError>>(
        &self,
        range: std::ops::Range<usize>,
        reader: &mut SeqReader,
        want: Want<'_>,
        mut f: impl FnMut(u64, &RecordView<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let items = self.items.get(range).unwrap_or(&[]);
        for (seq, loc) in items {
            let body = reader.read(*loc)?;
            let rec = RecordView::parse_some(body, want)
                .map_err(|e| StoreError::Corrupt(format!("record {seq} does not decode: {e}")))?;
            f(*seq, &rec)?;
        }
        Ok(())
    }
}

/// Reads records at increasing offsets of the segments with one buffered file handle (a
/// release reads a million records this way in about a second).
pub struct SeqReader {
    dir: PathBuf,
    file: Option<(u32, std::io::BufReader<File>, u64)>,
    buf: Vec<u8>,
}

impl SeqReader {
    /// The body (an encoded [`StoredRecord`]) of the record frame at `loc`, CRC checked.
    fn read(&mut self, loc: Loc) -> Result<&[u8], StoreError> {
        let offset = u64::from(loc.offset);
        let reopen =
            !matches!(&self.file, Some((seg, _, pos)) if *seg == loc.segment && *pos <= offset);
        if reopen {
            let p = segment_path(&self.dir, loc.segment);
            let f = File::open(&p).map_err(|e| io_at(&p, e))?;
            let mut r = std::io::BufReader::with_capacity(1 << 20, f);
            r.seek(SeekFrom::Start(offset)).map_err(|e| io_at(&p, e))?;
            self.file = Some((loc.segment, r, offset));
        }
        let Some((_, r, pos)) = self.file.as_mut() else {
            return Err(StoreError::Io("internal: no segment open".into()));
        };
        if *pos < offset {
            r.seek_relative((offset - *pos) as i64)
                .map_err(|e| StoreError::Io(e.to_string()))?;
            *pos = offset;
        }
        let mut head = [0u8; 8];
        r.read_exact(&mut head)
            .map_err(|e| StoreError::Corrupt(format!("frame header: {e}")))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(17..=MAX_FRAME).contains(&len) {
            return Err(StoreError::Corrupt(format!(
                "frame at {offset} has length {len}"
            )));
        }
        self.buf.resize(len, 0);
        r.read_exact(&mut self.buf)
            .map_err(|e| StoreError::Corrupt(format!("frame body: {e}")))?;
        *pos = offset + 8 + len as u64;
        if crc32fast::hash(&self.buf) != crc {
            return Err(StoreError::Corrupt(format!(
                "frame at {offset} fails its CRC"
            )));
        }
        if self.buf[0] != KIND_RECORD {
            return Err(StoreError::Corrupt(format!(
                "frame at {offset} is not a record"
            )));
        }
        Ok(&self.buf[17..])
    }
}

struct Writer {
    inner: Arc<Inner>,
    file: File,
    seg_no: u32,
    seg_len: u64,
    rec_dir: PathBuf,
    audit: Option<AuditLog>,
    /// A refused group whose `storage_failure` entry is not written yet: (first and last of
    /// its audit entries, why it failed). Written once its bytes are cut back; until then the
    /// store refuses writes.
    unrecorded: Option<(u64, u64, String)>,
}

enum JobResult {
    Ingest(Vec<Outcome>),
    Withdraw(WithdrawCounts),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>, ready: std::sync::mpsc::SyncSender<()>) {
        // Entries of groups a crash kept from being written are named before any new group.
        if let Some((first, last, _)) = &self.unrecorded {
            tracing::warn!(
                first,
                last,
                "audit entries of store groups that were never written (the gateway stopped in between); naming them in a storage_failure entry"
            );
            if let Err(why) = self.record_failed_commit() {
                tracing::error!(error = %why, "cannot name the entries of groups that were never written yet; refusing writes until it can (retried before each write)");
                self.inner.poisoned.store(true, Ordering::SeqCst);
            }
        }
        let _ = ready.send(());
        drop(ready);
        let mut stopped: Option<oneshot::Sender<()>> = None;
        while stopped.is_none() {
            let first = match rx.blocking_recv() {
                Some(Msg::Job(j)) => j,
                Some(Msg::Stop(done)) => {
                    stopped = Some(done);
                    break;
                }
                None => break,
            };
            let mut jobs = vec![first];
            let mut n = job_len(&jobs[0]);
            while n < MAX_GROUP_RECORDS {
                match rx.try_recv() {
                    Ok(Msg::Job(j)) => {
                        n += job_len(&j);
                        jobs.push(j);
                    }
                    Ok(Msg::Stop(done)) => {
                        stopped = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if self.inner.poisoned.load(Ordering::SeqCst)
                && let Err(e) = self.recover()
            {
                jobs.into_iter().for_each(|j| fail(j, e.clone()));
                continue;
            }
            let mut audited = Vec::new();
            match self.commit(&mut jobs, &mut audited) {
                Ok(results) => {
                    for (j, r) in jobs.into_iter().zip(results) {
                        match (j, r) {
                            (Job::Ingest(_, _, tx), JobResult::Ingest(o)) => {
                                let _ = tx.send(Ok(o));
                            }
                            (Job::Withdraw(_, _, _, tx), JobResult::Withdraw(c)) => {
                                let _ = tx.send(Ok(c));
                            }
                            (j, _) => fail(j, StoreError::Io("internal: result mismatch".into())),
                        }
                    }
                }
                Err(StoreError::Closed) => {
                    // Only the test fault that stops the writer as a kill would.
                    jobs.into_iter().for_each(|j| fail(j, StoreError::Closed));
                    return;
                }
                Err(e @ StoreError::AuditUnavailable(_)) => {
                    tracing::error!(error = %e, "no audit entry could be written; the records were not stored (fail closed)");
                    jobs.into_iter().for_each(|j| fail(j, e.clone()));
                }
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed; refusing writes until the fault clears (fail closed)");
                    self.inner.poisoned.store(true, Ordering::SeqCst);
                    if let (Some(first), Some(last)) = (audited.first(), audited.last()) {
                        self.unrecorded = Some((*first, *last, e.to_string()));
                    }
                    // Cut the refused group's bytes off now, not at the next write: a restart
                    // in between must not find its frames. Then say so in the audit log.
                    match self.cut_back() {
                        Ok(()) => {
                            if let Err(why) = self.record_failed_commit() {
                                tracing::error!(error = %why, "cannot record the failed commit in the audit log yet; retried before the next write");
                            }
                        }
                        Err(ce) => {
                            tracing::error!(error = %ce, "cannot cut the record log back after a failed commit yet; retried before the next write");
                        }
                    }
                    jobs.into_iter().for_each(|j| fail(j, e.clone()));
                }
            }
        }
        // Later jobs fail with Closed rather than wait on a writer that has gone.
        rx.close();
        // Closed: a last try at the audit entry of a refused group.
        if self.unrecorded.is_some() && self.recover().is_err() {
            tracing::error!("stopping with a refused group not recorded in the audit log");
        }
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    /// Decides every record of the group, writes the frames and fdatasyncs, all under the state
    /// lock so readers never see a version that is not durable.
    fn commit(
        &mut self,
        jobs: &mut [Job],
        audited: &mut Vec<u64>,
    ) -> Result<Vec<JobResult>, StoreError> {
        if self.seg_len >= SEGMENT_BYTES {
            self.rotate()?;
        }
        let inner = self.inner.clone();
        let mut st = inner.state.write().map_err(|_| lock_err())?;
        let mut buf: Vec<u8> = Vec::with_capacity(jobs.iter().map(job_len).sum::<usize>() * 256);
        let mut next = st.locs.len() as u64 + 1;
        let mut new_locs: Vec<Loc> = Vec::new();
        // Changes to apply to the state once the group is durable.
        let mut key_changes: Vec<(RecordKey, Option<Live>)> = Vec::new();
        let mut overlay: HashMap<RecordKey, Option<Live>> = HashMap::new();
        let mut count_delta: HashMap<u16, i64> = HashMap::new();
        let mut removed = 0u64;
        let mut newly_gone: Vec<u64> = Vec::new();
        let mut new_tokens: Vec<(u64, &[TypedToken])> = Vec::new();
        let mut results = Vec::with_capacity(jobs.len());
        let base = self.seg_len;
        let frame = |buf: &mut Vec<u8>,
                     kind: u8,
                     seq: u64,
                     prefix: u64,
                     body: &[u8],
                     new_locs: &mut Vec<Loc>| {
            let offset = base + buf.len() as u64;
            new_locs.push(Loc {
                segment: self.seg_no,
                offset: offset as u32,
            });
            let len = 1 + 8 + 8 + body.len();
            let start = buf.len();
            buf.extend_from_slice(&(len as u32).to_le_bytes());
            buf.extend_from_slice(&[0; 4]);
            buf.push(kind);
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&prefix.to_le_bytes());
            buf.extend_from_slice(body);
            let crc = crc32fast::hash(&buf[start + 8..]);
            buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        };
        // The audit entries, taken out before the records are borrowed below.
        let drafts: Vec<Option<Entry>> = jobs
            .iter_mut()
            .map(|j| match j {
                Job::Ingest(_, e, _) | Job::Withdraw(_, _, e, _) => e.take(),
            })
            .collect();
        for job in jobs.iter() {
            match job {
                Job::Ingest(records, _, _) => {
                    let mut outcomes = Vec::with_capacity(records.len());
                    for r in records {
                        let id = st.dataset_id(&r.dataset);
                        let key = rk(id, &r.record_key);
                        let existing = match overlay.get(&key) {
                            Some(v) => *v,
                            None => st.keys.get(&key).copied(),
                        };
                        let hash16 = half(&r.content_hash);
                        let (outcome, replaces) = match existing {
                            Some(old) if old.hash == hash16 => {
                                outcomes.push(Outcome::Duplicate);
                                continue;
                            }
                            Some(old) => {
                                removed += 1;
                                newly_gone.push(old.seq);
                                (Outcome::Replaced, old.seq)
                            }
                            None => {
                                *count_delta.entry(id).or_default() += 1;
                                (Outcome::Accepted, 0)
                            }
                        };
                        let seq = next;
                        next += 1;
                        frame(
                            &mut buf,
                            KIND_RECORD,
                            seq,
                            replaces,
                            &r.encoded,
                            &mut new_locs,
                        );
                        let live = Some(Live { seq, hash: hash16 });
                        new_tokens.push((seq, r.tokens.as_slice()));
                        overlay.insert(key, live);
                        key_changes.push((key, live));
                        outcomes.push(outcome);
                    }
                    results.push(JobResult::Ingest(outcomes));
                }
                Job::Withdraw(dataset, keys, _, _) => {
                    let mut c = WithdrawCounts::default();
                    let id = st.find_dataset(dataset);
                    for k in keys {
                        let existing = id.and_then(|id| match overlay.get(&rk(id, k)) {
                            Some(v) => *v,
                            None => st.keys.get(&rk(id, k)).copied(),
                        });
                        match (id, existing) {
                            (Some(id), Some(old)) => {
                                let seq = next;
                                next += 1;
                                let body = [dataset.as_bytes(), k.as_slice()].concat();
                                frame(&mut buf, KIND_TOMBSTONE, seq, old.seq, &body, &mut new_locs);
                                overlay.insert(rk(id, k), None);
                                key_changes.push((rk(id, k), None));
                                *count_delta.entry(id).or_default() -= 1;
                                removed += 1;
                                newly_gone.push(old.seq);
                                c.withdrawn += 1;
                            }
                            _ => c.not_found += 1,
                        }
                    }
                    results.push(JobResult::Withdraw(c));
                }
            }
        }
        // The audit entries of the group are durable before any of its records is written.
        if let Some(audit) = &self.audit {
            let mut entries = Vec::new();
            for (draft, result) in drafts.into_iter().zip(&results) {
                let entry = match result {
                    JobResult::Ingest(o) => draft.map(|mut e| {
                        let n = |k: Outcome| o.iter().filter(|x| **x == k).count() as u64;
                        let rejected = e.counts.and_then(|c| c.rejected).unwrap_or(0);
                        e.counts = Some(Counts::ingest(
                            n(Outcome::Accepted),
                            n(Outcome::Duplicate),
                            n(Outcome::Replaced),
                            rejected,
                        ));
                        e
                    }),
                    JobResult::Withdraw(c) => draft.map(|mut e| {
                        e.counts = Some(Counts::withdraw(c.withdrawn, c.not_found));
                        e
                    }),
                };
                entries.extend(entry);
            }
            if !entries.is_empty() {
                let seqs = audit
                    .append_blocking(entries)
                    .map_err(|e| StoreError::AuditUnavailable(e.to_string()))?;
                audited.extend(seqs);
            }
        }
        #[cfg(test)]
        if self.inner.stop_after_audit.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        // The group's commit marker, in the same write and fdatasync as its frames.
        let range = audited.iter().min().zip(audited.iter().max());
        if !buf.is_empty() || range.is_some() {
            marker_frame(&mut buf, range.map(|(a, b)| (*a, *b)));
        }
        if !buf.is_empty() {
            self.file
                .write_all(&buf)
                .map_err(|e| StoreError::Io(format!("cannot append to the record log: {e}")))?;
            #[cfg(test)]
            let injected = self.inner.on_sync.lock().ok().and_then(|mut f| f.take());
            #[cfg(test)]
            let synced = match injected {
                Some(fault) => fault(),
                None => self.file.sync_data(),
            };
            #[cfg(not(test))]
            let synced = self.file.sync_data();
            synced.map_err(|e| StoreError::Io(format!("fsync of the record log failed: {e}")))?;
            self.seg_len += buf.len() as u64;
        }
        for (k, v) in key_changes {
            match v {
                Some(l) => {
                    st.keys.insert(k, l);
                }
                None => {
                    st.keys.remove(&k);
                }
            }
        }
        for (id, d) in count_delta {
            let c = &mut st.counts[id as usize];
            *c = (*c as i64 + d).max(0) as u64;
        }
        st.locs.extend(new_locs);
        st.removals += removed;
        st.gone.extend(newly_gone);
        for (seq, tokens) in new_tokens {
            st.add_tokens(seq, tokens);
        }
        Ok(results)
    }

    /// After a failed write: cuts the segment back to its durable length and writes the
    /// audit entry of the refused group, if not done yet. Ok once the store is writable again;
    /// while the fault persists, the error to refuse writes with.
    fn recover(&mut self) -> Result<(), StoreError> {
        if let Err(e) = self.cut_back() {
            tracing::warn!(error = %e, "record store still cannot be written");
            return Err(StoreError::Poisoned);
        }
        if let Err(e) = self.record_failed_commit() {
            tracing::warn!(error = %e, "the audit entry of a refused group still cannot be written");
            return Err(StoreError::AuditUnavailable(e));
        }
        self.inner.poisoned.store(false, Ordering::SeqCst);
        tracing::info!("record store writable again");
        Ok(())
    }

    /// Reopens the segment and cuts it back to its durable length, dropping whatever a failed
    /// write left after it (a failed fsync is never retried on the same handle).
    fn cut_back(&mut self) -> Result<(), String> {
        let path = segment_path(&self.rec_dir, self.seg_no);
        let reopen = || -> std::io::Result<File> {
            let f = OpenOptions::new().append(true).open(&path)?;
            f.set_len(self.seg_len)?;
            f.sync_all()?;
            Ok(f)
        };
        let f = reopen().map_err(|e| {
            format!(
                "cannot cut {} back to its last durable length: {e}",
                path.display()
            )
        })?;
        self.file = f;
        Ok(())
    }

    /// Records in the audit log that the refused group (see `unrecorded`) was not stored; only
    /// called once its bytes are cut back, so the entry is true.
    fn record_failed_commit(&mut self) -> Result<(), String> {
        let Some((first, last, why)) = self.unrecorded.take() else {
            return Ok(());
        };
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let mut entry = Entry::new(Actor::gateway(), Action::StorageFailure, Decision::Deny);
        entry.reason = Some(format!(
            "entries {first}..={last} were not committed: {why}"
        ));
        if let Err(e) = audit.append_blocking(vec![entry]) {
            self.unrecorded = Some((first, last, why));
            return Err(format!(
                "the audit entry of a refused group cannot be written: {e}"
            ));
        }
        Ok(())
    }

    /// Starts the next segment. Nothing changes unless the new segment is created and its
    /// directory entry is durable, so a failure leaves the writer on the old segment (and no
    /// empty segment after it, which would make a torn tail of the old one refuse start-up).
    fn rotate(&mut self) -> Result<(), StoreError> {
        let next = self.seg_no + 1;
        let path = segment_path(&self.rec_dir, next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_at(&path, e))?;
        if let Err(e) = fsync_dir(&self.rec_dir) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.file = file;
        self.seg_no = next;
        self.seg_len = 0;
        Ok(())
    }
}

/// Reads and checks the frame at a location: (kind, seq, body).
fn read_frame_at(dir: &Path, loc: Loc) -> Result<(u8, u64, Vec<u8>), StoreError> {
    let p = segment_path(dir, loc.segment);
    let mut f = File::open(&p).map_err(|e| io_at(&p, e))?;
    read_frame(&mut f, u64::from(loc.offset))
}

/// Reads and checks one frame at `offset`: (kind, seq, body).
fn read_frame(f: &mut File, offset: u64) -> Result<(u8, u64, Vec<u8>), StoreError> {
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| StoreError::Io(e.to_string()))?;
    let mut head = [0u8; 8];
    f.read_exact(&mut head)
        .map_err(|e| StoreError::Corrupt(format!("frame header: {e}")))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(9..=MAX_FRAME).contains(&len) {
        return Err(StoreError::Corrupt(format!(
            "frame at {offset} has length {len}"
        )));
    }
    let mut payload = vec![0u8; len];
    f.read_exact(&mut payload)
        .map_err(|e| StoreError::Corrupt(format!("frame body: {e}")))?;
    if crc32fast::hash(&payload) != crc {
        return Err(StoreError::Corrupt(format!(
            "frame at {offset} fails its CRC"
        )));
    }
    let seq = u64::from_le_bytes(payload[1..9].try_into().unwrap_or([0; 8]));
    Ok((payload[0], seq, payload[9..].to_vec()))
}

/// What a scan found besides the state.
struct Scanned {
    /// The last segment, open for appending.
    file: File,
    /// Its number.
    seg_no: u32,
    /// Its length.
    seg_len: u64,
    /// Commit markers seen.
    markers: u64,
    /// Highest audit entry index a commit marker covers.
    marked: Option<u64>,
    /// If the log has commit markers and frames after the last one: where those start in the
    /// last segment, and how many there are.
    unmarked: Option<(u64, u64)>,
}

/// Scans every segment in order, rebuilding the state; cuts a torn tail off the last segment.
fn scan(dir: &Path, st: &mut State) -> Result<Scanned, StoreError> {
    let mut segs: Vec<u32> = std::fs::read_dir(dir)
        .map_err(|e| io_at(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("seg-")
                .and_then(|s| s.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    segs.sort_unstable();
    if segs.is_empty() {
        segs.push(1);
    }
    let last = *segs.last().unwrap_or(&1);
    let mut buf = Vec::new();
    let (mut markers, mut marked) = (0u64, None::<u64>);
    // The first frame after the last marker (segment, offset) and how many follow it.
    let mut tail: Option<(u32, u64, u64)> = None;
    for &n in &segs {
        let path = segment_path(dir, n);
        let mut frames = FrameScanner::open(&path)?;
        while let Some((at, payload)) = frames.next(&mut buf)? {
            let kind = payload[0];
            let seq = u64::from_le_bytes(payload[1..9].try_into().unwrap_or([0; 8]));
            let prior = u64::from_le_bytes(payload[9..17].try_into().unwrap_or([0; 8]));
            if kind == KIND_MARKER {
                let body = &payload[17..];
                match body.len() {
                    0 => {}
                    16 => {
                        let first = u64::from_le_bytes(body[..8].try_into().unwrap_or([0; 8]));
                        let end = u64::from_le_bytes(body[8..].try_into().unwrap_or([0; 8]));
                        if first > end {
                            return Err(StoreError::Corrupt(format!(
                                "{}: commit marker at byte {at} names entries {first}..={end}",
                                path.display()
                            )));
                        }
                        marked = Some(marked.map_or(end, |m| m.max(end)));
                    }
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "{}: commit marker at byte {at} has a body of {other} bytes",
                            path.display()
                        )));
                    }
                }
                markers += 1;
                tail = None;
                continue;
            }
            match &mut tail {
                Some((_, _, count)) => *count += 1,
                None => tail = Some((n, at, 1)),
            }
            if seq != st.locs.len() as u64 + 1 {
                return Err(StoreError::Corrupt(format!(
                    "{}: frame at byte {at} has sequence {seq}, expected {}",
                    path.display(),
                    st.locs.len() + 1
                )));
            }
            st.locs.push(Loc {
                segment: n,
                offset: at as u32,
            });
            match kind {
                KIND_RECORD => {
                    let rec =
                        RecordView::parse_some(&payload[17..], Want::PERSONS).map_err(|e| {
                            StoreError::Corrupt(format!(
                                "{}: record {seq} does not decode: {e}",
                                path.display()
                            ))
                        })?;
                    let id = st.dataset_id(rec.dataset);
                    let key = <[u8; 32]>::try_from(rec.record_key)
                        .map_err(|_| StoreError::Corrupt(format!("record {seq} has a bad key")))?;
                    let hash = <[u8; 32]>::try_from(rec.content_hash)
                        .map_err(|_| StoreError::Corrupt(format!("record {seq} has a bad hash")))?;
                    match st.keys.insert(
                        rk(id, &key),
                        Live {
                            seq,
                            hash: half(&hash),
                        },
                    ) {
                        None => st.counts[id as usize] += 1,
                        Some(old) => {
                            st.gone.insert(old.seq);
                        }
                    }
                    for p in &rec.persons {
                        for (kind, token) in p.tokens() {
                            if let Ok(t) = <&[u8; 32]>::try_from(token) {
                                st.add_token(seq, kind, t);
                            }
                        }
                    }
                }
                KIND_TOMBSTONE => {
                    let body = &payload[17..];
                    let bad = || {
                        StoreError::Corrupt(format!(
                            "{}: tombstone {seq} is malformed",
                            path.display()
                        ))
                    };
                    if body.len() < 32 {
                        return Err(bad());
                    }
                    let (name, key) = body.split_at(body.len() - 32);
                    let name = std::str::from_utf8(name).map_err(|_| bad())?;
                    let key = <[u8; 32]>::try_from(key).map_err(|_| bad())?;
                    let id = st.dataset_id(name);
                    if st.keys.get(&rk(id, &key)).is_some_and(|l| l.seq == prior) {
                        st.keys.remove(&rk(id, &key));
                        st.gone.insert(prior);
                        st.counts[id as usize] = st.counts[id as usize].saturating_sub(1);
                    }
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "{}: frame {seq} has unknown kind {other}",
                        path.display()
                    )));
                }
            }
        }
        let (valid_end, len) = (frames.valid_end, frames.len);
        if valid_end < len {
            if n != last {
                return Err(StoreError::Corrupt(format!(
                    "{}: bad frame at byte {valid_end} in a segment that is not the last; refusing to start",
                    path.display()
                )));
            }
            tracing::warn!(segment = %path.display(), cut_bytes = len - valid_end, "cutting a torn tail off the record log (an unacknowledged write)");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_at(&path, e))?;
            f.set_len(valid_end).map_err(|e| io_at(&path, e))?;
            f.sync_all().map_err(|e| io_at(&path, e))?;
        }
    }
    let unmarked = match tail {
        Some((n, at, count)) if markers > 0 => {
            if n != last {
                return Err(StoreError::Corrupt(format!(
                    "{}: {count} frames from byte {at} on have no commit marker, in a segment that is not the last; refusing to start",
                    segment_path(dir, n).display()
                )));
            }
            Some((at, count))
        }
        _ => None,
    };
    let path = segment_path(dir, last);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_at(&path, e))?;
    let len = file.metadata().map_err(|e| io_at(&path, e))?.len();
    fsync_dir(dir)?;
    Ok(Scanned {
        file,
        seg_no: last,
        seg_len: len,
        markers,
        marked,
        unmarked,
    })
}

/// The first and last of the ingest and withdraw entries (decision allow) of groups that were
/// never written: after the highest entry a commit marker covers and not named by a
/// `storage_failure` entry. `None` if there are none, or if the log is legacy (frames but no
/// marker: not checked).
fn uncommitted_entries(
    audit: &AuditLog,
    scanned: &Scanned,
    has_frames: bool,
) -> Result<Option<(u64, u64)>, StoreError> {
    if scanned.markers == 0 && has_frames {
        tracing::info!(
            "the record log has no commit markers (written before they existed): audit entries of groups a crash kept from being written cannot be found and are not checked"
        );
        return Ok(None);
    }
    let start = scanned.marked.map_or(0, |m| m + 1);
    let end = audit.size();
    if start >= end {
        return Ok(None);
    }
    let unreadable = |e: String| {
        StoreError::Io(format!(
            "cannot read audit entries {start}..{end} to check for groups that were never written: {e}"
        ))
    };
    let mut candidates = Vec::new();
    let mut named: Vec<(u64, u64)> = Vec::new();
    let entries = audit
        .read(start, end)
        .map_err(|e| unreadable(e.to_string()))?;
    for bytes in entries {
        let bytes = bytes.map_err(|e| unreadable(e.to_string()))?;
        let e = Entry::decode(&bytes).map_err(|e| unreadable(e.to_string()))?;
        match (e.action, e.decision) {
            (Action::Ingest | Action::Withdraw, Decision::Allow) => candidates.push(e.seq),
            (Action::StorageFailure, _) => {
                named.extend(e.reason.as_deref().and_then(named_entries));
            }
            _ => {}
        }
    }
    let mut lost = candidates
        .into_iter()
        .filter(|s| !named.iter().any(|(a, b)| (*a..=*b).contains(s)));
    let Some(first) = lost.next() else {
        return Ok(None);
    };
    Ok(Some((first, lost.next_back().unwrap_or(first))))
}

/// The entries a `storage_failure` reason names (`entries a..=b were not committed: …`).
fn named_entries(reason: &str) -> Option<(u64, u64)> {
    let range = reason.strip_prefix("entries ")?.split(' ').next()?;
    let (a, b) = range.split_once("..=")?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Appends a commit marker frame naming the group's audit entries (first, last), if any.
fn marker_frame(buf: &mut Vec<u8>, entries: Option<(u64, u64)>) {
    let mut payload = Vec::with_capacity(33);
    payload.push(KIND_MARKER);
    payload.extend_from_slice(&[0; 16]);
    if let Some((first, last)) = entries {
        payload.extend_from_slice(&first.to_le_bytes());
        payload.extend_from_slice(&last.to_le_bytes());
    }
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
}

/// Reads a segment's frames in order through one buffer: the whole segment is never held in
/// memory. Stops at the first frame that is cut short, too long or fails its CRC; `valid_end`
/// is then where the good frames end.
struct FrameScanner {
    file: Option<std::io::BufReader<File>>,
    path: PathBuf,
    at: u64,
    valid_end: u64,
    len: u64,
}

impl FrameScanner {
    fn open(path: &Path) -> Result<Self, StoreError> {
        let (file, len) = if path.exists() {
            let f = File::open(path).map_err(|e| io_at(path, e))?;
            let len = f.metadata().map_err(|e| io_at(path, e))?.len();
            (Some(std::io::BufReader::with_capacity(1 << 20, f)), len)
        } else {
            (None, 0)
        };
        Ok(Self {
            file,
            path: path.to_path_buf(),
            at: 0,
            valid_end: 0,
            len,
        })
    }

    /// The next good frame: its offset and payload (in `buf`).
    fn next<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<Option<(u64, &'b [u8])>, StoreError> {
        let Some(r) = self.file.as_mut() else {
            return Ok(None);
        };
        if self.at + 8 > self.len {
            return Ok(None);
        }
        let mut head = [0u8; 8];
        r.read_exact(&mut head).map_err(|e| io_at(&self.path, e))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(17..=MAX_FRAME).contains(&len) || self.at + 8 + len as u64 > self.len {
            return Ok(None);
        }
        buf.resize(len, 0);
        r.read_exact(buf).map_err(|e| io_at(&self.path, e))?;
        if crc32fast::hash(buf) != crc {
            return Ok(None);
        }
        let at = self.at;
        self.at += 8 + len as u64;
        self.valid_end = self.at;
        Ok(Some((at, buf.as_slice())))
    }
}

fn half(h: &[u8; 32]) -> [u8; 8] {
    let mut o = [0; 8];
    o.copy_from_slice(&h[..8]);
    o
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n:06}.log"))
}

fn job_len(j: &Job) -> usize {
    match j {
        Job::Ingest(r, _, _) => r.len(),
        Job::Withdraw(_, k, _, _) => k.len(),
    }
}

fn fail(job: Job, e: StoreError) {
    match job {
        Job::Ingest(_, _, tx) => {
            let _ = tx.send(Err(e));
        }
        Job::Withdraw(_, _, _, tx) => {
            let _ = tx.send(Err(e));
        }
    }
}

fn lock_err() -> StoreError {
    StoreError::Io("internal: a store lock was poisoned by a panic".into())
}

fn io_at(p: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {e}", p.display()))
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_at(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: u8, hash: u8) -> NewRecord {
        let stored = StoredRecord {
            dataset: "d".into(),
            record: Some(sharing_proto::v1::Record {
                record_key: vec![key; 32],
                content_hash: vec![hash; 32],
                persons: vec![sharing_proto::v1::PersonRole {
                    role: "person".into(),
                    tokens: vec![sharing_proto::v1::TypedToken {
                        kind: "nhs".into(),
                        token: vec![key ^ 0x55; 32],
                    }],
                    fuzzy: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        NewRecord {
            dataset: "d".into(),
            record_key: [key; 32],
            content_hash: [hash; 32],
            tokens: vec![("nhs".into(), [key ^ 0x55; 32])],
            encoded: stored.encode_to_vec(),
        }
    }

    fn reopen(dir: &Path) -> Store {
        for _ in 0..100 {
            if let Ok(s) = Store::open(dir) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("store did not reopen");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn idempotent_ingest_replace_and_withdraw() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let o = s
            .ingest(vec![rec(1, 1), rec(2, 1), rec(1, 1)])
            .await
            .expect("ingest");
        assert_eq!(
            o,
            vec![Outcome::Accepted, Outcome::Accepted, Outcome::Duplicate]
        );
        let o = s.ingest(vec![rec(1, 1), rec(2, 9)]).await.expect("ingest");
        assert_eq!(o, vec![Outcome::Duplicate, Outcome::Replaced]);
        assert_eq!(s.counts().expect("counts"), vec![("d".to_string(), 2)]);
        // Only the new version of key 2 is found by its token.
        let seqs = s.records_with_token("nhs", &[2 ^ 0x55; 32]).expect("tok");
        assert_eq!(seqs.len(), 1);
        assert_eq!(
            s.record_at(seqs[0])
                .expect("at")
                .and_then(|r| r.record)
                .map(|r| r.content_hash),
            Some(vec![9; 32])
        );
        let w = s
            .withdraw("d", vec![[2; 32], [7; 32]], None)
            .await
            .expect("withdraw");
        assert_eq!(
            w,
            WithdrawCounts {
                withdrawn: 1,
                not_found: 1
            }
        );
        assert_eq!(s.counts().expect("counts"), vec![("d".to_string(), 1)]);
        assert!(
            s.records_with_token("nhs", &[2 ^ 0x55; 32])
                .expect("tok")
                .is_empty()
        );
        assert!(s.get("d", &[2; 32]).expect("get").is_none());
        assert!(s.get("d", &[1; 32]).expect("get").is_some());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn state_survives_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.ingest(vec![rec(3, 3), rec(4, 4)]).await.expect("ingest");
            s.ingest(vec![rec(4, 5)]).await.expect("replace");
            s.withdraw("d", vec![[3; 32]], None)
                .await
                .expect("withdraw");
        }
        // A crash mid-append leaves half a frame at the end.
        let seg = dir.path().join("records/seg-000001.log");
        let before = std::fs::metadata(&seg).expect("meta").len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open")
            .write_all(&[40, 0, 0, 0, 1, 2])
            .expect("write");
        let s = reopen(dir.path());
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len(),
            before,
            "torn tail cut"
        );
        assert_eq!(s.counts().expect("counts"), vec![("d".to_string(), 1)]);
        assert!(s.get("d", &[3; 32]).expect("get").is_none());
        let r = s
            .get("d", &[4; 32])
            .expect("get")
            .and_then(|r| r.record)
            .expect("record");
        assert_eq!(r.content_hash, vec![5; 32]);
        assert_eq!(
            s.ingest(vec![rec(4, 5)]).await.expect("again"),
            vec![Outcome::Duplicate]
        );
        assert_eq!(
            s.records_with_token("nhs", &[4 ^ 0x55; 32])
                .expect("tok")
                .len(),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_corrupt_frame_before_the_tail_refuses_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            s.ingest(vec![rec(1, 1)]).await.expect("ingest");
        }
        std::fs::write(dir.path().join("records/seg-000002.log"), b"").expect("second segment");
        let seg = dir.path().join("records/seg-000001.log");
        let mut bytes = std::fs::read(&seg).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&seg, bytes).expect("write");
        std::thread::sleep(std::time::Duration::from_millis(200));
        match Store::open(dir.path()) {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("not the last"), "{m}"),
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => panic!("opened a corrupt log"),
        }
    }

    fn injected_fsync_failure() -> std::io::Result<()> {
        Err(std::io::Error::other("injected fsync failure"))
    }

    fn seg_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("records/seg-000001.log"))
            .expect("segment")
            .len()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_fsync_is_cut_at_once_refused_and_recovered_without_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        s.ingest(vec![rec(1, 1)]).await.expect("ingest");
        let durable = seg_len(dir.path());
        // The group's frames reach the file, then its fdatasync fails.
        s.fault_next_sync(injected_fsync_failure);
        let err = s
            .ingest(vec![rec(2, 2), rec(3, 3)])
            .await
            .expect_err("fsync failed");
        assert!(
            matches!(&err, StoreError::Io(m) if m.contains("fsync")),
            "{err}"
        );
        assert!(s.is_poisoned());
        assert_eq!(
            seg_len(dir.path()),
            durable,
            "the refused frames are cut at once"
        );
        assert!(s.get("d", &[2; 32]).expect("get").is_none());
        assert_eq!(s.count_records().expect("count"), 1);
        // The next write recovers (the file is fine): no restart needed.
        assert_eq!(
            s.ingest(vec![rec(2, 2)]).await.expect("recovered"),
            vec![Outcome::Accepted]
        );
        assert!(!s.is_poisoned());
        // Failed again, then stopped before any later write: nothing of the refused group is
        // found on reopen, and it is accepted (not a duplicate) when resent.
        s.fault_next_sync(injected_fsync_failure);
        s.ingest(vec![rec(3, 3), rec(4, 4)])
            .await
            .expect_err("fsync failed");
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.count_records().expect("count"), 2);
        assert!(s.get("d", &[3; 32]).expect("get").is_none());
        assert_eq!(
            s.ingest(vec![rec(3, 3), rec(4, 4)]).await.expect("resent"),
            vec![Outcome::Accepted, Outcome::Accepted]
        );
        assert_eq!(s.counts().expect("counts"), vec![("d".to_string(), 4)]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_group_is_named_in_the_audit_log_before_any_later_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = skp_core::checkpoint::SigningKey::from_seed_bytes("kingston.skp/audit", &[7; 32])
            .expect("key");
        let audit = AuditLog::open(dir.path(), key, "kingston.skp/audit/v1").expect("audit");
        let s = Store::open_audited(dir.path(), Some(audit.clone())).expect("open");
        let entry = || Entry::new(Actor::gateway(), Action::Ingest, Decision::Allow);
        let ingest = |records: Vec<NewRecord>| {
            let s = s.clone();
            async move {
                s.submit(records, Some(entry()))
                    .await
                    .expect("queued")
                    .await
                    .expect("answered")
            }
        };
        ingest(vec![rec(1, 1)]).await.expect("ingest");
        // The group's ingest entry is durable, its records' fsync fails, and so does the
        // audit append of the storage_failure entry (the audit log is on the same full disk).
        let a = audit.clone();
        s.fault_next_sync(move || {
            a.fail_next_appends(1);
            injected_fsync_failure()
        });
        ingest(vec![rec(2, 2)]).await.expect_err("fsync failed");
        let refused_entry = audit.size() - 1;
        // The next write first records that the group was not stored, then goes ahead.
        assert_eq!(
            ingest(vec![rec(3, 3)]).await.expect("recovered"),
            vec![Outcome::Accepted]
        );
        let entries: Vec<Entry> = audit
            .read(0, audit.size())
            .expect("read")
            .map(|b| Entry::decode(&b.expect("entry")).expect("decode"))
            .collect();
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["ingest", "ingest", "storage_failure", "ingest"]);
        let reason = entries[2].reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with(&format!(
                "entries {refused_entry}..={refused_entry} were not committed: "
            )) && reason.contains("fsync"),
            "{reason}"
        );
        assert_eq!(s.count_records().expect("count"), 2);
        assert!(s.get("d", &[2; 32]).expect("get").is_none());
    }

    fn audit_log(dir: &Path) -> AuditLog {
        let key = skp_core::checkpoint::SigningKey::from_seed_bytes("kingston.skp/audit", &[7; 32])
            .expect("key");
        AuditLog::open(dir, key, "kingston.skp/audit/v1").expect("audit")
    }

    fn reopen_audited(dir: &Path, audit: &AuditLog) -> Store {
        for _ in 0..100 {
            if let Ok(s) = Store::open_audited(dir, Some(audit.clone())) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("store did not reopen");
    }

    async fn ingest_audited(
        s: &Store,
        records: Vec<NewRecord>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let entry = Entry::new(Actor::gateway(), Action::Ingest, Decision::Allow);
        s.submit(records, Some(entry))
            .await
            .expect("queued")
            .await
            .expect("answered")
    }

    fn entries(audit: &AuditLog) -> Vec<Entry> {
        audit
            .read(0, audit.size())
            .expect("read")
            .map(|b| Entry::decode(&b.expect("entry")).expect("decode"))
            .collect()
    }

    fn failures(audit: &AuditLog) -> Vec<String> {
        entries(audit)
            .into_iter()
            .filter(|e| e.action == Action::StorageFailure)
            .map(|e| e.reason.unwrap_or_default())
            .collect()
    }

    fn stopped(first: u64, last: u64) -> String {
        format!("entries {first}..={last} were not committed: {STOPPED}")
    }

    /// A marker frame naming audit entries: 8 bytes of header, 17 of kind and numbers, 16 of
    /// entry indexes.
    const MARKER_BYTES: u64 = 8 + 17 + 16;

    #[tokio::test(flavor = "multi_thread")]
    async fn entries_of_a_group_stopped_before_its_records_are_named_once_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let s = Store::open_audited(dir.path(), Some(audit.clone())).expect("open");
        ingest_audited(&s, vec![rec(1, 1)]).await.expect("ingest");
        // The kill falls after the group's entry is durable, before its records are written.
        s.stop_after_next_audit_append();
        let err = ingest_audited(&s, vec![rec(2, 2), rec(3, 3)])
            .await
            .expect_err("stopped");
        assert!(matches!(err, StoreError::Closed), "{err}");
        let lost = audit.size() - 1;
        drop(s);
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(failures(&audit), vec![stopped(lost, lost)]);
        let actions: Vec<Action> = entries(&audit).iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [Action::Ingest, Action::Ingest, Action::StorageFailure]
        );
        assert_eq!(s.count_records().expect("count"), 1);
        // Reopened again: already named, not named twice.
        drop(s);
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(failures(&audit).len(), 1);
        // Resent: accepted (they were never stored), and still named once after a reopen.
        assert_eq!(
            ingest_audited(&s, vec![rec(2, 2), rec(3, 3)])
                .await
                .expect("resent"),
            vec![Outcome::Accepted, Outcome::Accepted]
        );
        drop(s);
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(failures(&audit), vec![stopped(lost, lost)]);
        assert_eq!(s.count_records().expect("count"), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_group_cut_short_before_its_marker_is_cut_off_whole_and_its_entries_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let s = Store::open_audited(dir.path(), Some(audit.clone())).expect("open");
        ingest_audited(&s, vec![rec(1, 1)]).await.expect("ingest");
        let first_group = seg_len(dir.path());
        ingest_audited(&s, vec![rec(2, 2), rec(3, 3)])
            .await
            .expect("ingest");
        let second_group = seg_len(dir.path());
        ingest_audited(&s, vec![rec(4, 4)]).await.expect("ingest");
        let n = audit.size();
        drop(s);
        // A kill mid-write: the second group's records reached the file whole, its marker did
        // not (nor anything of the third group).
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("records/seg-000001.log"))
            .expect("open")
            .set_len(second_group - MARKER_BYTES)
            .expect("cut");
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(
            seg_len(dir.path()),
            first_group,
            "the unmarked group is cut off whole"
        );
        assert_eq!(s.count_records().expect("count"), 1);
        assert!(s.get("d", &[2; 32]).expect("get").is_none());
        assert_eq!(failures(&audit), vec![stopped(n - 2, n - 1)]);
        // Resent: stored; a new group is numbered on from the cut.
        assert_eq!(
            ingest_audited(&s, vec![rec(2, 2), rec(3, 3), rec(4, 4)])
                .await
                .expect("resent"),
            vec![Outcome::Accepted; 3]
        );
        drop(s);
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(s.count_records().expect("count"), 4);
        assert_eq!(failures(&audit).len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn nothing_lost_names_nothing_even_when_the_last_group_wrote_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let s = Store::open_audited(dir.path(), Some(audit.clone())).expect("open");
        ingest_audited(&s, vec![rec(1, 1), rec(2, 2)])
            .await
            .expect("ingest");
        let entry = Entry::new(Actor::gateway(), Action::Withdraw, Decision::Allow);
        s.withdraw("d", vec![[2; 32]], Some(entry))
            .await
            .expect("withdraw");
        // Groups with entries and no record frame still write their marker.
        let before = seg_len(dir.path());
        assert_eq!(
            ingest_audited(&s, vec![rec(1, 1)]).await.expect("dup"),
            vec![Outcome::Duplicate]
        );
        assert_eq!(
            ingest_audited(&s, vec![]).await.expect("all rejected"),
            vec![]
        );
        let entry = Entry::new(Actor::gateway(), Action::Withdraw, Decision::Allow);
        s.withdraw("d", vec![[9; 32]], Some(entry))
            .await
            .expect("not found");
        assert_eq!(seg_len(dir.path()), before + 3 * MARKER_BYTES);
        drop(s);
        for _ in 0..2 {
            let s = reopen_audited(dir.path(), &audit);
            assert!(failures(&audit).is_empty(), "{:?}", failures(&audit));
            assert_eq!(s.count_records().expect("count"), 1);
            assert_eq!(seg_len(dir.path()), before + 3 * MARKER_BYTES);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_legacy_log_without_markers_is_neither_cut_nor_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let s = Store::open_audited(dir.path(), Some(audit.clone())).expect("open");
        ingest_audited(&s, vec![rec(1, 1), rec(2, 2)])
            .await
            .expect("ingest");
        s.stop_after_next_audit_append();
        ingest_audited(&s, vec![rec(3, 3)])
            .await
            .expect_err("stopped");
        drop(s);
        // As written before markers existed.
        let seg = dir.path().join("records/seg-000001.log");
        let bytes = std::fs::read(&seg).expect("read");
        let mut legacy = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            if bytes[at + 8] != KIND_MARKER {
                legacy.extend_from_slice(&bytes[at..at + 8 + len]);
            }
            at += 8 + len;
        }
        assert_eq!(legacy.len() as u64, bytes.len() as u64 - MARKER_BYTES);
        std::fs::write(&seg, &legacy).expect("write");
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(s.count_records().expect("count"), 2, "legacy frames kept");
        assert!(failures(&audit).is_empty(), "legacy logs are not checked");
        // From the next group on, the log has markers.
        ingest_audited(&s, vec![rec(3, 3)]).await.expect("ingest");
        drop(s);
        let s = reopen_audited(dir.path(), &audit);
        assert_eq!(s.count_records().expect("count"), 3);
        assert!(failures(&audit).is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn if_the_naming_entry_cannot_be_written_on_open_writes_wait_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = audit_log(dir.path());
        let s = Store::open_audited(dir.path(), Some(audit.clone())).expect("open");
        s.stop_after_next_audit_append();
        ingest_audited(&s, vec![rec(1, 1)])
            .await
            .expect_err("stopped");
        let lost = audit.size() - 1;
        drop(s);
        audit.fail_next_appends(1);
        let s = reopen_audited(dir.path(), &audit);
        assert!(s.is_poisoned(), "no group may be written before the entry");
        assert!(failures(&audit).is_empty());
        // The next write first names the lost entry, then goes ahead.
        assert_eq!(
            ingest_audited(&s, vec![rec(1, 1)])
                .await
                .expect("recovered"),
            vec![Outcome::Accepted]
        );
        assert!(!s.is_poisoned());
        let actions: Vec<Action> = entries(&audit).iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            [Action::Ingest, Action::StorageFailure, Action::Ingest]
        );
        assert_eq!(failures(&audit), vec![stopped(lost, lost)]);
    }

    #[test]
    fn storage_failure_reasons_name_their_entries() {
        assert_eq!(named_entries(&stopped(4, 9)), Some((4, 9)));
        assert_eq!(
            named_entries("entries 12..=12 were not committed: fsync of the record log failed"),
            Some((12, 12))
        );
        assert_eq!(named_entries("disk full"), None);
    }
}
