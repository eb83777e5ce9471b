//! The IG officer's side: `gateway audit log | export | prove | tree-head` over mutual TLS
//! with an auditor certificate. Every checkpoint received is checked against the pinned
//! verifier key before anything it covers is believed.

use super::entry::Entry;
use crate::client::{Authed, ClientConfig};
use anyhow::{Context, Result, bail};
use sharing_proto::v1 as pb;
use sharing_proto::v1::audit_service_client::AuditServiceClient;
use skp_core::checkpoint::{self, Checkpoint, VerifierKey};
use skp_core::merkle::{self, Hash};
use std::io::Write;
use std::path::Path;

/// The auditor's client config: a [`ClientConfig`] with an `[audit]` section (pinned key and
/// origin).
#[derive(Debug, Clone)]
pub struct AuditorConfig {
    /// Gateway, CA and token.
    pub client: ClientConfig,
    /// The pinned audit verifier key (text).
    pub pubkey: String,
    /// The log's origin.
    pub origin: String,
}

impl AuditorConfig {
    /// Loads an auditor config; `gateway` and `token` override the file's when given.
    pub fn load_with(
        path: &Path,
        gateway: Option<String>,
        token: Option<String>,
    ) -> Result<AuditorConfig> {
        let client = ClientConfig::load(path, gateway, token)?;
        let (Some(pubkey), Some(origin)) = (client.pubkey.clone(), client.origin.clone()) else {
            bail!(
                "{}: no [audit] section: an auditor config names the pinned key, e.g.\n[audit]\npubkey = \"../audit.pub\"\norigin = \"kingston.skp/audit/v1\"",
                path.display()
            );
        };
        Ok(AuditorConfig {
            client,
            pubkey,
            origin,
        })
    }

    fn verifier(&self) -> Result<VerifierKey> {
        VerifierKey::parse(&self.pubkey).map_err(|e| anyhow::anyhow!("pinned audit key: {e}"))
    }
}

/// A verifier key given as its text or as a file holding it.
pub fn read_pubkey(arg: &str) -> Result<String> {
    let text = if Path::new(arg).exists() {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read {arg}"))?
    } else if arg.contains('+') {
        arg.to_owned()
    } else {
        bail!("{arg}: no such file, and not a verifier key (NAME+ID+KEY)");
    };
    let text = text.trim().to_owned();
    VerifierKey::parse(&text)
        .map_err(|e| anyhow::anyhow!("{arg}: not an audit verifier key: {e}"))?;
    Ok(text)
}

/// Connects with the auditor's token.
pub async fn connect(cfg: &AuditorConfig) -> Result<AuditServiceClient<Authed>> {
    let (ch, bearer) = crate::client::connect(&cfg.client).await?;
    Ok(
        AuditServiceClient::with_interceptor(ch, bearer)
            .max_decoding_message_size(64 * 1024 * 1024),
    )
}

fn status(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} refused: {:?}: {}", s.code(), s.message())
}

/// `gateway audit log`: prints matching entries as a table or JSON lines.
pub async fn log(cfg: &AuditorConfig, q: pb::AuditQuery, json: bool) -> Result<u64> {
    let mut client = connect(cfg).await?;
    let mut stream = client
        .query(q)
        .await
        .map_err(|s| status("Query", s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:>7}  {:<24}  {:<15}  {:<5}  {:<34}  detail",
            "entry", "time (UTC)", "action", "dec.", "actor"
        )?;
    }
    let mut n = 0;
    while let Some(item) = stream.message().await.map_err(|s| status("Query", s))? {
        n += 1;
        if json {
            out.write_all(&item.entry)?;
            out.write_all(b"\n")?;
            continue;
        }
        let e = Entry::decode(&item.entry)
            .with_context(|| format!("entry {} from the gateway", item.index))?;
        writeln!(
            out,
            "{:>7}  {:<24}  {:<15}  {:<5}  {:<34}  {}",
            e.seq,
            e.time,
            e.action.as_str(),
            e.decision.as_str(),
            e.actor.id,
            detail(&e)
        )?;
    }
    Ok(n)
}

/// One line of what an entry says beyond who and what.
fn detail(e: &Entry) -> String {
    let mut parts = Vec::new();
    if !e.datasets.is_empty() {
        parts.push(e.datasets.join(","));
    }
    if let Some(c) = &e.counts {
        for (k, v) in [
            ("accepted", c.accepted),
            ("duplicates", c.duplicates),
            ("replaced", c.replaced),
            ("rejected", c.rejected),
            ("withdrawn", c.withdrawn),
            ("not_found", c.not_found),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    if let Some(a) = &e.agreement {
        parts.push(format!("{} v{} {}", a.id, a.version, a.purpose));
    }
    if let Some(r) = e.rows {
        parts.push(format!("rows={r}"));
    }
    if let Some(p) = &e.peer {
        parts.push(format!("peer={p}"));
    }
    if let Some(r) = &e.reason {
        parts.push(r.clone());
    }
    parts.join("  ")
}

/// `gateway audit export`: writes the export file (entries + the checkpoint covering them) and
/// checks it before reporting success.
pub async fn export(cfg: &AuditorConfig, out: &Path) -> Result<Checkpoint> {
    let mut client = connect(cfg).await?;
    let mut stream = client
        .export(pb::ExportRequest {})
        .await
        .map_err(|s| status("Export", s))?
        .into_inner();
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = super::export::ExportWriter::new(std::io::BufWriter::new(file))?;
    let mut note = None;
    while let Some(chunk) = stream.message().await.map_err(|s| status("Export", s))? {
        match chunk.item {
            Some(pb::export_chunk::Item::Entry(b)) => w.entry(&b)?,
            Some(pb::export_chunk::Item::Note(n)) => note = Some(n),
            None => {}
        }
    }
    let Some(note) = note else {
        bail!("the export ended without a checkpoint; nothing written");
    };
    let file = w
        .finish(&note)?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    let text = std::fs::read_to_string(out)?;
    let report = super::verify::verify(&text, &cfg.verifier()?, &cfg.origin, None)
        .map_err(|e| anyhow::anyhow!("the export does not verify: {e}"))?;
    Ok(report.checkpoint)
}

/// `gateway audit tree-head`: a signed checkpoint, checked; optionally saved for later.
pub async fn tree_head(cfg: &AuditorConfig, save: Option<&Path>) -> Result<Checkpoint> {
    let mut client = connect(cfg).await?;
    let th = client
        .tree_head(pb::TreeHeadRequest {})
        .await
        .map_err(|s| status("TreeHead", s))?
        .into_inner();
    let cp = checkpoint::open(&th.note, &cfg.verifier()?, &cfg.origin)
        .map_err(|e| anyhow::anyhow!("the gateway's checkpoint does not verify: {e}"))?;
    if let Some(p) = save {
        std::fs::write(p, &th.note).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(cp)
}

/// What `gateway audit prove` checked.
#[derive(Debug)]
pub struct Proven {
    /// The entry's canonical bytes.
    pub entry: Vec<u8>,
    /// Its leaf hash.
    pub leaf: Hash,
    /// The proof path.
    pub path: Vec<Hash>,
    /// The signed checkpoint it was proven against.
    pub checkpoint: Checkpoint,
}

/// `gateway audit prove --entry N`: fetches entry N with its inclusion proof against a freshly
/// signed checkpoint, and checks the signature, the leaf hash and the proof locally.
pub async fn prove(cfg: &AuditorConfig, index: u64) -> Result<Proven> {
    let mut client = connect(cfg).await?;
    let r = client
        .inclusion_proof(pb::InclusionProofRequest {
            index,
            tree_size: 0,
        })
        .await
        .map_err(|s| status("InclusionProof", s))?
        .into_inner();
    let cp = checkpoint::open(&r.note, &cfg.verifier()?, &cfg.origin)
        .map_err(|e| anyhow::anyhow!("the gateway's checkpoint does not verify: {e}"))?;
    if cp.size != r.tree_size || r.index != index {
        bail!(
            "the gateway answered for entry {} in a tree of {} but its checkpoint covers {}",
            r.index,
            r.tree_size,
            cp.size
        );
    }
    let leaf = merkle::leaf_hash(&r.entry);
    if leaf.as_slice() != r.leaf_hash.as_slice() {
        bail!("the entry's bytes do not hash to the leaf hash the gateway sent");
    }
    let e = Entry::decode(&r.entry).with_context(|| format!("entry {index}"))?;
    if e.seq != index {
        bail!("the gateway sent entry {} when asked for {index}", e.seq);
    }
    let path = r
        .path
        .iter()
        .map(|h| merkle::hash_from_slice(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("malformed proof: {e}"))?;
    merkle::verify_inclusion(&leaf, index, cp.size, &path, &cp.root).map_err(|e| {
        anyhow::anyhow!(
            "entry {index} is NOT proven to be in the log of {} entries: {e}",
            cp.size
        )
    })?;
    Ok(Proven {
        entry: r.entry,
        leaf,
        path,
        checkpoint: cp,
    })
}

/// Checks that the gateway's current log extends the tree of `old` (a checkpoint already
/// verified, e.g. a release manifest's): fetches a consistency proof to a freshly signed
/// checkpoint and checks both. Returns the current checkpoint.
pub async fn consistent_with(cfg: &AuditorConfig, old: &Checkpoint) -> Result<Checkpoint> {
    let mut client = connect(cfg).await?;
    let r = client
        .consistency_proof(pb::ConsistencyProofRequest {
            old_size: old.size,
            new_size: 0,
        })
        .await
        .map_err(|s| status("ConsistencyProof", s))?
        .into_inner();
    let cp = checkpoint::open(&r.note, &cfg.verifier()?, &cfg.origin)
        .map_err(|e| anyhow::anyhow!("the gateway's checkpoint does not verify: {e}"))?;
    if cp.size != r.new_size || r.old_size != old.size {
        bail!(
            "the gateway answered for sizes {}..{} but was asked about {} and signed {}",
            r.old_size,
            r.new_size,
            old.size,
            cp.size
        );
    }
    let path = r
        .path
        .iter()
        .map(|h| merkle::hash_from_slice(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("malformed proof: {e}"))?;
    merkle::verify_consistency(old.size, cp.size, &old.root, &cp.root, &path).map_err(|e| {
        anyhow::anyhow!(
            "the gateway's log of {} entries is NOT consistent with the release's checkpoint of {}: {e}",
            cp.size,
            old.size
        )
    })?;
    Ok(cp)
}
