//! The embedded record store (sled 0.34), written only by one writer thread that group-commits.
//!
//! Layout, one sled tree with prefixed keys so a group is applied as one atomic `Batch`:
//! - `r` ‖ seq (u64 BE)                                → encoded [`StoredRecord`] (sequential keys)
//! - `k` ‖ dataset ‖ 0x00 ‖ record-key token            → seq ‖ content hash (idempotency index)
//! - `t` ‖ kind ‖ 0x00 ‖ token ‖ seq                     → empty (token index, for linkage)
//! - `c` ‖ dataset                                       → record count (u64 BE)
//! - `m` ‖ "next_seq"                                    → next sequence number
//!
//! Durability: sled 0.34's `flush` is `sync_file_range` on Linux, not an fsync (sled #1452), so
//! after each group the writer flushes and then calls `fsync` on the data file itself. A caller's
//! write resolves only after that. If any write, flush or fsync fails the store is poisoned and
//! refuses every later write (fail closed): a failed fsync is never retried on the same handle.
//! Never sees a raw identifier: records arrive pseudonymised and validated.

use prost::Message;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

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
    /// A write, flush or fsync failed earlier; the store refuses writes until restarted.
    #[error(
        "the store failed to write durably and refuses further writes until the gateway is restarted"
    )]
    Poisoned,
    /// The writer thread has stopped (shutdown).
    #[error("the store is shutting down")]
    Closed,
    /// sled or the file system reported an error.
    #[error("storage error: {0}")]
    Io(String),
    /// A stored value could not be decoded (corruption).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

enum Job {
    Ingest(
        Vec<NewRecord>,
        oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
    ),
    Withdraw(
        String,
        Vec<[u8; 32]>,
        oneshot::Sender<Result<WithdrawCounts, StoreError>>,
    ),
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tx: mpsc::Sender<Job>,
    poisoned: Arc<AtomicBool>,
    dir: PathBuf,
}

/// Most records one group commit takes before it flushes.
const MAX_GROUP_RECORDS: usize = 20_000;

impl Store {
    /// Opens (or creates) the store under `dir` and starts its writer thread.
    pub fn open(dir: &Path, cache_mb: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mb.max(8) * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| {
                StoreError::Io(format!("cannot open the store in {}: {e}", dir.display()))
            })?;
        let data_file = File::open(dir.join("db")).map_err(|e| {
            StoreError::Io(format!("cannot open {}/db for fsync: {e}", dir.display()))
        })?;
        fsync_dir(dir)?;
        let (tx, rx) = mpsc::channel(64);
        let poisoned = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            db: db.clone(),
            data_file,
            poisoned: poisoned.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            db,
            tx,
            poisoned,
            dir: dir.to_path_buf(),
        })
    }

    /// Queues records for the next group commit. The returned receiver resolves once they are
    /// durable (or the commit failed). Waits only for queue space (back-pressure).
    pub async fn submit(
        &self,
        records: Vec<NewRecord>,
    ) -> Result<oneshot::Receiver<Result<Vec<Outcome>, StoreError>>, StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Ingest(records, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Writes records and waits until they are durable.
    pub async fn ingest(&self, records: Vec<NewRecord>) -> Result<Vec<Outcome>, StoreError> {
        self.submit(records)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Removes records of a dataset by record-key token, durably.
    pub async fn withdraw(
        &self,
        dataset: &str,
        keys: Vec<[u8; 32]>,
    ) -> Result<WithdrawCounts, StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Withdraw(dataset.to_string(), keys, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Number of records stored per dataset.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"c") {
            let (k, v) = kv.map_err(io)?;
            out.push((String::from_utf8_lossy(&k[1..]).into_owned(), be_u64(&v)?));
        }
        Ok(out)
    }

    /// Number of stored record entries, counted one by one (checks the maintained counters).
    pub fn count_records(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for kv in self.db.scan_prefix(b"r") {
            kv.map_err(io)?;
            n += 1;
        }
        Ok(n)
    }

    /// The stored record of a dataset's record key, if any.
    pub fn get(
        &self,
        dataset: &str,
        record_key: &[u8; 32],
    ) -> Result<Option<StoredRecord>, StoreError> {
        let Some(v) = self.db.get(key_k(dataset, record_key)).map_err(io)? else {
            return Ok(None);
        };
        let seq = be_u64(&v[..8])?;
        self.record_at(seq)
    }

    /// Sequence numbers of records carrying a token of a kind.
    pub fn records_with_token(&self, kind: &str, token: &[u8; 32]) -> Result<Vec<u64>, StoreError> {
        let mut prefix = key_t_prefix(kind, token);
        let n = prefix.len();
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(io)?;
            out.push(be_u64(&k[n..])?);
        }
        prefix.clear();
        Ok(out)
    }

    /// The record stored under a sequence number.
    pub fn record_at(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        match self.db.get(key_r(seq)).map_err(io)? {
            None => Ok(None),
            Some(b) => StoredRecord::decode(b.as_ref())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a write has failed (the store then refuses writes).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }
}

struct Writer {
    db: sled::Db,
    data_file: File,
    poisoned: Arc<AtomicBool>,
}

struct Known {
    seq: u64,
    hash: [u8; 32],
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            let mut n = jobs_len(&jobs);
            while n < MAX_GROUP_RECORDS {
                match rx.try_recv() {
                    Ok(j) => {
                        jobs.push(j);
                        n = jobs_len(&jobs);
                    }
                    Err(_) => break,
                }
            }
            if self.poisoned.load(Ordering::SeqCst) {
                for j in jobs {
                    fail(j, StoreError::Poisoned);
                }
                continue;
            }
            match self.commit(&jobs) {
                Ok(results) => {
                    for (j, r) in jobs.into_iter().zip(results) {
                        match (j, r) {
                            (Job::Ingest(_, tx), JobResult::Ingest(o)) => {
                                let _ = tx.send(Ok(o));
                            }
                            (Job::Withdraw(_, _, tx), JobResult::Withdraw(c)) => {
                                let _ = tx.send(Ok(c));
                            }
                            (j, _) => fail(j, StoreError::Io("internal: result mismatch".into())),
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "store commit failed; refusing all further writes (fail closed)");
                    self.poisoned.store(true, Ordering::SeqCst);
                    for j in jobs {
                        fail(j, e.clone());
                    }
                }
            }
        }
        let _ = self.db.flush();
        let _ = self.data_file.sync_all();
    }

    fn commit(&self, jobs: &[Job]) -> Result<Vec<JobResult>, StoreError> {
        let mut batch = sled::Batch::default();
        let mut next_seq = match self.db.get(b"mnext_seq").map_err(io)? {
            Some(v) => be_u64(&v)?,
            None => 1,
        };
        // Keys written earlier in this group: `None` means removed.
        let mut overlay: HashMap<Vec<u8>, Option<Known>> = HashMap::new();
        // Tokens of records written earlier in this group, by seq.
        let mut new_tokens: HashMap<u64, Vec<(String, [u8; 32])>> = HashMap::new();
        let mut count_delta: HashMap<String, i64> = HashMap::new();
        let mut results = Vec::with_capacity(jobs.len());

        for job in jobs {
            match job {
                Job::Ingest(records, _) => {
                    let mut outcomes = Vec::with_capacity(records.len());
                    for r in records {
                        let k = key_k(&r.dataset, &r.record_key);
                        let existing = match overlay.get(&k) {
                            Some(Some(known)) => Some(Known {
                                seq: known.seq,
                                hash: known.hash,
                            }),
                            Some(None) => None,
                            None => self.lookup(&k)?,
                        };
                        let outcome = match existing {
                            Some(old) if old.hash == r.content_hash => {
                                outcomes.push(Outcome::Duplicate);
                                continue;
                            }
                            Some(old) => {
                                self.remove_record(&mut batch, old.seq, &mut new_tokens)?;
                                Outcome::Replaced
                            }
                            None => {
                                *count_delta.entry(r.dataset.clone()).or_default() += 1;
                                Outcome::Accepted
                            }
                        };
                        let seq = next_seq;
                        next_seq += 1;
                        batch.insert(key_r(seq).to_vec(), r.encoded.as_slice());
                        let mut v = seq.to_be_bytes().to_vec();
                        v.extend_from_slice(&r.content_hash);
                        batch.insert(k.clone(), v);
                        for (kind, tok) in &r.tokens {
                            batch.insert(key_t(kind, tok, seq), &[][..]);
                        }
                        new_tokens.insert(seq, r.tokens.clone());
                        overlay.insert(
                            k,
                            Some(Known {
                                seq,
                                hash: r.content_hash,
                            }),
                        );
                        outcomes.push(outcome);
                    }
                    results.push(JobResult::Ingest(outcomes));
                }
                Job::Withdraw(dataset, keys, _) => {
                    let mut c = WithdrawCounts::default();
                    for key in keys {
                        let k = key_k(dataset, key);
                        let existing = match overlay.get(&k) {
                            Some(Some(known)) => Some(Known {
                                seq: known.seq,
                                hash: known.hash,
                            }),
                            Some(None) => None,
                            None => self.lookup(&k)?,
                        };
                        match existing {
                            None => c.not_found += 1,
                            Some(old) => {
                                self.remove_record(&mut batch, old.seq, &mut new_tokens)?;
                                batch.remove(k.clone());
                                overlay.insert(k, None);
                                *count_delta.entry(dataset.clone()).or_default() -= 1;
                                c.withdrawn += 1;
                            }
                        }
                    }
                    results.push(JobResult::Withdraw(c));
                }
            }
        }

        for (dataset, delta) in count_delta {
            let key = [b"c".as_slice(), dataset.as_bytes()].concat();
            let cur = match self.db.get(&key).map_err(io)? {
                Some(v) => be_u64(&v)? as i64,
                None => 0,
            };
            batch.insert(key, ((cur + delta).max(0) as u64).to_be_bytes().to_vec());
        }
        batch.insert(b"mnext_seq".to_vec(), next_seq.to_be_bytes().to_vec());
        self.db.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        self.data_file
            .sync_all()
            .map_err(|e| StoreError::Io(format!("fsync failed: {e}")))?;
        Ok(results)
    }

    fn lookup(&self, k: &[u8]) -> Result<Option<Known>, StoreError> {
        match self.db.get(k).map_err(io)? {
            None => Ok(None),
            Some(v) if v.len() == 40 => {
                let mut hash = [0; 32];
                hash.copy_from_slice(&v[8..]);
                Ok(Some(Known {
                    seq: be_u64(&v[..8])?,
                    hash,
                }))
            }
            Some(_) => Err(StoreError::Corrupt(
                "record-key index entry has the wrong length".into(),
            )),
        }
    }

    /// Removes a stored record and its token index entries (the caller updates the key index).
    fn remove_record(
        &self,
        batch: &mut sled::Batch,
        seq: u64,
        new_tokens: &mut HashMap<u64, Vec<(String, [u8; 32])>>,
    ) -> Result<(), StoreError> {
        let tokens = match new_tokens.remove(&seq) {
            Some(t) => t,
            None => match self.db.get(key_r(seq)).map_err(io)? {
                None => Vec::new(),
                Some(b) => {
                    let rec = StoredRecord::decode(b.as_ref())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    rec.record
                        .map(|r| {
                            r.persons
                                .into_iter()
                                .flat_map(|p| p.tokens)
                                .filter_map(|t| {
                                    <[u8; 32]>::try_from(t.token.as_slice())
                                        .ok()
                                        .map(|b| (t.kind, b))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                }
            },
        };
        for (kind, tok) in tokens {
            batch.remove(key_t(&kind, &tok, seq));
        }
        batch.remove(key_r(seq).to_vec());
        Ok(())
    }
}

enum JobResult {
    Ingest(Vec<Outcome>),
    Withdraw(WithdrawCounts),
}

fn jobs_len(jobs: &[Job]) -> usize {
    jobs.iter()
        .map(|j| match j {
            Job::Ingest(r, _) => r.len(),
            Job::Withdraw(_, k, _) => k.len(),
        })
        .sum()
}

fn fail(job: Job, e: StoreError) {
    match job {
        Job::Ingest(_, tx) => {
            let _ = tx.send(Err(e));
        }
        Job::Withdraw(_, _, tx) => {
            let _ = tx.send(Err(e));
        }
    }
}

fn key_r(seq: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_k(dataset: &str, record_key: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + dataset.len() + 32);
    k.push(b'k');
    k.extend_from_slice(dataset.as_bytes());
    k.push(0);
    k.extend_from_slice(record_key);
    k
}

fn key_t_prefix(kind: &str, token: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + kind.len() + 32 + 8);
    k.push(b't');
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(token);
    k
}

fn key_t(kind: &str, token: &[u8; 32], seq: u64) -> Vec<u8> {
    let mut k = key_t_prefix(kind, token);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn be_u64(b: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("a stored number has the wrong length".into()))
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io(format!("cannot fsync {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: u8, hash: u8) -> NewRecord {
        let stored = StoredRecord {
            dataset: "d".into(),
            record: Some(sharing_proto::v1::Record {
                persons: vec![sharing_proto::v1::PersonRole {
                    role: "person".into(),
                    tokens: vec![sharing_proto::v1::TypedToken {
                        kind: "nhs".into(),
                        token: vec![key ^ 0x55; 32],
                    }],
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

    #[tokio::test]
    async fn idempotent_ingest_and_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), 8).expect("open");
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
        // The replaced version's token entry is gone, the new one is there.
        assert_eq!(
            s.records_with_token("nhs", &[2 ^ 0x55; 32])
                .expect("tok")
                .len(),
            1
        );
        let w = s
            .withdraw("d", vec![[2; 32], [7; 32]])
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

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), 8).expect("open");
            s.ingest(vec![rec(3, 3)]).await.expect("ingest");
        }
        // Give the writer thread a moment to exit and release the lock.
        for _ in 0..50 {
            if let Ok(s) = Store::open(dir.path(), 8) {
                assert!(s.get("d", &[3; 32]).expect("get").is_some());
                let o = s.ingest(vec![rec(3, 3)]).await.expect("ingest");
                assert_eq!(o, vec![Outcome::Duplicate]);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("store did not reopen");
    }
}
