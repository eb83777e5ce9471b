//! `agent push` and `agent run`: read an export, pseudonymise, spool, send; drain the spool with
//! retries and back-off. Bad rows are reported with file, line, field and reason; good rows go.

use crate::client;
use crate::config::AgentConfig;
use crate::pseudonymise::Pseudonymiser;
use crate::source;
use crate::spool::Spool;
use anyhow::{Result, bail};
use prost::Message;
use sharing_proto::v1::agent_service_client::AgentServiceClient;
use sharing_proto::v1::{IngestBatch, RecordRejection};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// A row refused before it left the agency.
#[derive(Debug, Clone)]
pub struct SourceRejection {
    /// Source file.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// Catalog field (empty when the whole row is unreadable).
    pub field: String,
    /// Source column.
    pub column: String,
    /// Reason.
    pub reason: String,
}

/// What a push or a spool drain did.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Rows read from the source file.
    pub rows_read: u64,
    /// Rows refused at the agent.
    pub source_rejections: Vec<SourceRejection>,
    /// Records the gateway stored as new.
    pub accepted: u64,
    /// Records the gateway already had unchanged.
    pub duplicates: u64,
    /// Records that replaced an older version.
    pub replaced: u64,
    /// Records refused by the gateway.
    pub gateway_rejected: u64,
    /// The gateway's reasons (`batch_id` names the source file).
    pub gateway_rejections: Vec<RecordRejection>,
    /// Spool files sent and acknowledged.
    pub files_sent: usize,
    /// Spool files still waiting (the gateway could not be reached).
    pub files_pending: usize,
    /// Why the last attempt to reach the gateway failed, when files are still waiting.
    pub last_failure: Option<String>,
    /// Spool files the gateway refused outright, moved aside, with the reason.
    pub files_refused: Vec<(PathBuf, String)>,
    /// Whether the catalog came from the local cache.
    pub catalog_from_cache: bool,
}

impl PushReport {
    /// The process exit code: 0 all stored, 2 some rows rejected, 3 batches left spooled,
    /// 1 a spool file refused outright.
    pub fn exit_code(&self) -> u8 {
        if !self.files_refused.is_empty() {
            1
        } else if self.files_pending > 0 {
            3
        } else if !self.source_rejections.is_empty() || self.gateway_rejected > 0 {
            2
        } else {
            0
        }
    }
}

/// Pseudonymises `file` as `dataset`, spools it, then sends everything in the spool.
pub async fn push(cfg: &AgentConfig, dataset: &str, file: &Path) -> Result<PushReport> {
    crate::config::check_key_permissions(&cfg.key)?;
    let key = cfg.linkage_key()?;
    let spool = Spool::open(&cfg.state_dir)?;
    let mut conn = match client::connect(cfg).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "gateway unreachable; working from the cached catalog");
            None
        }
    };
    let (catalog, cached) = client::catalog(cfg, conn.as_mut()).await?;
    let Some(ds) = catalog.dataset(dataset) else {
        let mine: Vec<&str> = catalog.datasets().map(|d| d.name.as_str()).collect();
        bail!(
            "dataset {dataset:?} is not one this agency may submit; the gateway's catalog lists: {}",
            if mine.is_empty() {
                "none".to_string()
            } else {
                mine.join(", ")
            }
        );
    };
    let mapping = cfg.mapping(dataset);
    let p = Pseudonymiser::new(ds, &mapping, &key);
    let (header, rows) = source::read(file)?;
    let missing: Vec<_> = p
        .missing_columns(&header)
        .into_iter()
        .filter(|(_, _, req)| *req)
        .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(f, c, _)| format!("\"{c}\" (field {f})"))
            .collect();
        bail!(
            "{}: the export lacks required column(s) {}; add them, or map them under [datasets.{dataset}.columns] in {}",
            file.display(),
            list.join(", "),
            cfg.path.display()
        );
    }
    let file_label = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = PushReport {
        catalog_from_cache: cached,
        ..Default::default()
    };
    let fields = p.header();
    let mut batches: Vec<IngestBatch> = Vec::new();
    let mut current = new_batch(ds, &fields, &file_label, 0);
    let mut current_bytes = 0usize;
    for row in rows {
        report.rows_read += 1;
        let row = match row {
            Ok(r) => r,
            Err(bad) => {
                report.source_rejections.push(SourceRejection {
                    file: file_label.clone(),
                    line: bad.line,
                    field: String::new(),
                    column: String::new(),
                    reason: bad.reason,
                });
                continue;
            }
        };
        match p.record(&row) {
            Ok(rec) => {
                let len = rec.encoded_len() + 8;
                if !current.records.is_empty()
                    && (current.records.len() >= cfg.batch_size
                        || current_bytes + len > cfg.max_batch_bytes)
                {
                    let n = batches.len() + 1;
                    batches.push(std::mem::replace(
                        &mut current,
                        new_batch(ds, &fields, &file_label, n),
                    ));
                    current_bytes = 0;
                }
                current_bytes += len;
                current.records.push(rec);
            }
            Err(e) => report.source_rejections.push(SourceRejection {
                file: file_label.clone(),
                line: row.line,
                field: e.field,
                column: e.column,
                reason: e.reason,
            }),
        }
    }
    if !current.records.is_empty() {
        batches.push(current);
    }
    if !batches.is_empty() {
        spool.write(dataset, &batches)?;
    }
    drain(cfg, &spool, &mut conn, &mut report).await?;
    Ok(report)
}

/// Sends every spooled file (`agent run`).
pub async fn run(cfg: &AgentConfig) -> Result<PushReport> {
    crate::config::check_key_permissions(&cfg.key)?;
    let spool = Spool::open(&cfg.state_dir)?;
    let mut conn = None;
    let mut report = PushReport::default();
    drain(cfg, &spool, &mut conn, &mut report).await?;
    Ok(report)
}

fn new_batch(ds: &skp_core::Dataset, fields: &[String], file: &str, n: usize) -> IngestBatch {
    IngestBatch {
        dataset: ds.name.to_string(),
        schema_version: ds.version,
        fields: fields.to_vec(),
        records: Vec::new(),
        batch_id: format!("{file}#{}", n + 1),
    }
}

/// Sends spool files oldest first. Retryable failures back off and retry up to `cfg.retries`
/// times, then leave the rest spooled; a refusal moves the file aside.
async fn drain(
    cfg: &AgentConfig,
    spool: &Spool,
    conn: &mut Option<AgentServiceClient<Channel>>,
    report: &mut PushReport,
) -> Result<()> {
    let pending = spool.pending()?;
    for (i, path) in pending.iter().enumerate() {
        let batches = Spool::read(path)?;
        let mut attempt = 0u32;
        loop {
            let result = match conn.as_mut() {
                Some(c) => client::send(c, batches.clone())
                    .await
                    .map_err(Failure::Status),
                None => match client::connect(cfg).await {
                    Ok(c) => {
                        let c = conn.insert(c);
                        client::send(c, batches.clone())
                            .await
                            .map_err(Failure::Status)
                    }
                    Err(e) => Err(Failure::Connect(format!("{e:#}"))),
                },
            };
            match result {
                Ok(s) => {
                    report.accepted += s.accepted;
                    report.duplicates += s.duplicates;
                    report.replaced += s.replaced;
                    report.gateway_rejected += s.rejected;
                    report.gateway_rejections.extend(s.rejections);
                    spool.remove(path)?;
                    report.files_sent += 1;
                    break;
                }
                Err(Failure::Status(s)) if !client::is_retryable(&s) => {
                    let why = format!("{:?}: {}", s.code(), s.message());
                    let to = spool.set_aside(path)?;
                    tracing::error!(file = %to.display(), reason = %why, "the gateway refused a spool file; moved aside");
                    report.files_refused.push((to, why));
                    break;
                }
                Err(f) => {
                    *conn = None;
                    if attempt >= cfg.retries {
                        report.files_pending = pending.len() - i;
                        report.last_failure = Some(f.to_string());
                        tracing::warn!(reason = %f, pending = report.files_pending, "gateway unavailable; batches stay spooled for the next run");
                        return Ok(());
                    }
                    let delay = cfg.backoff * 2u32.saturating_pow(attempt);
                    tracing::warn!(reason = %f, retry_in_ms = delay.as_millis() as u64, "send failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
    Ok(())
}

enum Failure {
    Status(tonic::Status),
    Connect(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s) => f.write_str(&client::describe(s)),
            Failure::Connect(s) => f.write_str(s),
        }
    }
}
