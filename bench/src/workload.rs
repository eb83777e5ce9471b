//! The benchmark workload: N synthetic records of one dataset, pseudonymised exactly as the agent
//! does it and grouped into `IngestBatch`es. Made once, before any timing.

use agent::config::Mapping;
use agent::pseudonymise::Pseudonymiser;
use agent::source::Row;
use anyhow::{Result, bail};
use prost::Message;
use sharing_proto::v1::IngestBatch;
use skp_core::{Dataset, LinkageKey};
use std::collections::HashMap;

/// Seed of the synthetic population and rows.
const SEED: u64 = 20_240_714;
/// Synthetic people the rows draw from.
const PEOPLE: usize = 10_000;
/// Rows made per call of `agent::synth::rows` (keeps the raw rows' memory small).
const CHUNK: usize = 10_000;

/// The records to send, in batches.
pub struct Workload {
    /// Batches of `batch` records (the last may be shorter).
    pub batches: Vec<IngestBatch>,
    /// Total records.
    pub records: usize,
    /// Mean encoded size of one `Record`, in bytes.
    pub record_bytes: f64,
    /// Mean encoded size of one batch, in bytes.
    pub batch_bytes: f64,
}

impl Workload {
    /// Makes `n` records of `ds` in batches of `batch`.
    pub fn make(ds: &Dataset, key: &LinkageKey, n: usize, batch: usize) -> Result<Self> {
        let mapping = Mapping::default();
        let p = Pseudonymiser::new(ds, &mapping, key);
        let fields = p.header();
        let people = agent::synth::population(PEOPLE, SEED);
        let new_batch = |i: usize| IngestBatch {
            dataset: ds.name.to_string(),
            schema_version: ds.version,
            fields: fields.clone(),
            records: Vec::with_capacity(batch),
            batch_id: format!("bench#{}", i + 1),
        };
        let mut batches = Vec::with_capacity(n.div_ceil(batch));
        let mut current = new_batch(0);
        let mut record_bytes = 0usize;
        let mut made = 0usize;
        let mut chunk_no = 0u64;
        while made < n {
            let want = CHUNK.min(n - made);
            let rows = agent::synth::rows(ds, &people, want, SEED ^ chunk_no.wrapping_mul(0x9e37));
            chunk_no += 1;
            for cells in rows {
                let mut cells: HashMap<String, String> = cells.into_iter().collect();
                // `synth::rows` numbers references per call: make the record key unique overall
                // through its text fields; a date in a key (`as_at_date`) keeps its value.
                for f in &ds.record_key {
                    use skp_core::catalog::FieldType;
                    let v = match ds.field(f.as_str()).map(|x| x.ty) {
                        Some(FieldType::Int) => "1".to_string(),
                        Some(FieldType::Str | FieldType::Reference) | None => {
                            format!("BENCH-{made:010}")
                        }
                        Some(_) => continue,
                    };
                    cells.insert(f.as_str().to_string(), v);
                }
                let row = Row {
                    line: made as u64 + 2,
                    cells,
                };
                let rec = match p.record(&row) {
                    Ok(r) => r,
                    Err(e) => bail!(
                        "synthetic row {made} of {} cannot be pseudonymised: field {}: {}",
                        ds.name,
                        e.field,
                        e.reason
                    ),
                };
                record_bytes += rec.encoded_len();
                if current.records.len() >= batch {
                    let next = new_batch(batches.len() + 1);
                    batches.push(std::mem::replace(&mut current, next));
                }
                current.records.push(rec);
                made += 1;
            }
        }
        if !current.records.is_empty() {
            batches.push(current);
        }
        let batch_bytes: usize = batches.iter().map(Message::encoded_len).sum();
        Ok(Self {
            records: n,
            record_bytes: record_bytes as f64 / n.max(1) as f64,
            batch_bytes: batch_bytes as f64 / batches.len().max(1) as f64,
            batches,
        })
    }

    /// The batches dealt round-robin into `parts` streams (a copy: sending consumes them).
    pub fn split(&self, parts: usize) -> Vec<Vec<IngestBatch>> {
        let mut out: Vec<Vec<IngestBatch>> = (0..parts)
            .map(|_| Vec::with_capacity(self.batches.len() / parts + 1))
            .collect();
        for (i, b) in self.batches.iter().enumerate() {
            out[i % parts].push(b.clone());
        }
        out
    }

    /// Each record's encoded bytes and index keys, in sending order (for the raw sled baselines).
    pub fn encoded_records(&self) -> Vec<SledItem> {
        self.batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| SledItem {
                record_key: r.record_key.clone(),
                content_hash: r.content_hash.clone(),
                tokens: r
                    .persons
                    .iter()
                    .flat_map(|p| &p.tokens)
                    .map(|t| (t.kind.clone(), t.token.clone()))
                    .collect(),
                encoded: r.encode_to_vec(),
            })
            .collect()
    }
}

/// One record as the raw sled baselines write it.
pub struct SledItem {
    /// 32-byte record-key token.
    pub record_key: Vec<u8>,
    /// 32-byte content hash.
    pub content_hash: Vec<u8>,
    /// `(kind, token)` of every person token.
    pub tokens: Vec<(String, Vec<u8>)>,
    /// The encoded `Record`.
    pub encoded: Vec<u8>,
}
