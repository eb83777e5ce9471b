//! The client side for people (analysts, IG officers): a config file naming the gateway, the
//! partnership CA and a JWT, a TLS channel that sends the JWT as a bearer token on every call,
//! and the analyst commands (`gateway agreements`, `gateway explain`).

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sharing_proto::v1 as pb;
use sharing_proto::v1::analyst_service_client::AnalystServiceClient;
use std::path::{Path, PathBuf};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// `analysts/<name>.toml` or `auditors/<name>.toml`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Gateway URL, e.g. `https://localhost:7443`.
    pub gateway: String,
    /// Partnership CA certificate.
    pub ca: PathBuf,
    /// The JWT sent as a bearer token.
    pub token: String,
    /// The pinned audit verifier key (text), for auditors.
    pub pubkey: Option<String>,
    /// The audit log's origin, for auditors.
    pub origin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway: String,
    token_file: PathBuf,
    tls: RawTls,
    audit: Option<RawAudit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    pubkey: PathBuf,
    origin: String,
}

impl ClientConfig {
    /// Loads the file (paths relative to it); `gateway` and `token` override it when given.
    pub fn load(
        path: &Path,
        gateway: Option<String>,
        token: Option<String>,
    ) -> Result<ClientConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read client config {}", path.display()))?;
        let raw: RawConfig = skp_core::toml_file::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let token = match token {
            Some(t) => t,
            None => {
                let p = base.join(&raw.token_file);
                std::fs::read_to_string(&p).with_context(|| {
                    format!(
                        "cannot read the token file {} (make one with `gateway token`)",
                        p.display()
                    )
                })?
            }
        };
        let (pubkey, origin) = match raw.audit {
            Some(a) => (
                Some(crate::audit::client::read_pubkey(
                    &base.join(a.pubkey).to_string_lossy(),
                )?),
                Some(a.origin),
            ),
            None => (None, None),
        };
        Ok(ClientConfig {
            gateway: gateway.unwrap_or(raw.gateway),
            ca: base.join(raw.tls.ca),
            token: token.trim().to_owned(),
            pubkey,
            origin,
        })
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A channel authenticated by the config's token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Connects over TLS (server checked against the partnership CA) with the bearer token.
pub async fn connect(cfg: &ClientConfig) -> Result<(Channel, Bearer)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(&cfg.ca).with_context(|| format!("cannot read {}", cfg.ca.display()))?;
    let host = cfg
        .gateway
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| "localhost".into());
    let host = if host.parse::<std::net::IpAddr>().is_ok() {
        "localhost".to_string()
    } else {
        host
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(host);
    let channel = Endpoint::from_shared(cfg.gateway.clone())
        .with_context(|| format!("gateway URL {:?} is not valid", cfg.gateway))?
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the gateway at {}", cfg.gateway))?;
    let value: MetadataValue<Ascii> = format!("Bearer {}", cfg.token)
        .parse()
        .map_err(|_| anyhow::anyhow!("the token is not valid header text"))?;
    Ok((channel, Bearer(value)))
}

fn status(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} refused: {:?}: {}", s.code(), s.message())
}

/// `gateway agreements`: what the caller may request, with validity and review dates.
pub async fn agreements(cfg: &ClientConfig) -> Result<pb::AgreementList> {
    let (ch, bearer) = connect(cfg).await?;
    let mut client = AnalystServiceClient::with_interceptor(ch, bearer);
    let list = client
        .list_agreements(pb::ListAgreementsRequest {})
        .await
        .map_err(|s| status("ListAgreements", s))?
        .into_inner();
    Ok(list)
}

/// `gateway explain`: the gateway's decision on a request, field by field (audited).
pub async fn explain(cfg: &ClientConfig, req: pb::ExplainRequest) -> Result<pb::Explanation> {
    let (ch, bearer) = connect(cfg).await?;
    let mut client = AnalystServiceClient::with_interceptor(ch, bearer);
    let e = client
        .explain(req)
        .await
        .map_err(|s| status("Explain", s))?
        .into_inner();
    if e.fields.is_empty() && e.allowed {
        bail!("the gateway allowed the request but named no field");
    }
    Ok(e)
}

/// What `gateway extract` / `gateway aggregate` received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Release id.
    pub release_id: String,
    /// Index of the release's audit entry.
    pub audit_entry: u64,
    /// Files written, in order (manifest.json last).
    pub files: Vec<(String, u64)>,
    /// The folder.
    pub dir: PathBuf,
}

/// Asks for a linked extract and writes it to `out` (which must not hold a release already).
pub async fn extract(cfg: &ClientConfig, req: pb::ExtractRequest, out: &Path) -> Result<Received> {
    prepare_out(out)?;
    let (ch, bearer) = connect(cfg).await?;
    let mut client = AnalystServiceClient::with_interceptor(ch, bearer);
    let stream = client
        .extract(req)
        .await
        .map_err(|s| status("Extract", s))?
        .into_inner();
    receive(stream, out).await
}

/// A Parquet copy written by [`write_parquet_copies`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetCopy {
    /// The released CSV file it was made from.
    pub csv: String,
    /// The Parquet file's name, beside the CSV.
    pub parquet: String,
    /// Data rows written.
    pub rows: u64,
}

/// Writes `<name>.parquet` beside each released `<name>.csv` in the release folder `dir`
/// (`gateway extract --format parquet`), after checking every file the manifest lists against
/// its length and SHA-256 there: a copy is made only from a CSV that is exactly what was
/// released. The CSV files and the manifest are left as they are (they are what the audit
/// entry covers); `gateway audit verify-release` accepts the copies only if they match.
///
/// Each copy is written under a temporary name and renamed when complete, so a failure leaves
/// no partial `.parquet`; copies made before it stay.
pub fn write_parquet_copies(dir: &Path) -> Result<Vec<ParquetCopy>> {
    use crate::release::manifest::{self, MANIFEST_FILE, Manifest};
    use crate::release::parquet_out;
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let m = Manifest::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for f in &m.release.files {
        if !is_plain_name(&f.name) || f.name == MANIFEST_FILE {
            bail!(
                "{}: the manifest lists {:?}, which is not a plain file name; refusing the release",
                dir.display(),
                f.name
            );
        }
        let file = dir.join(&f.name);
        let (len, sha) = manifest::hash_file(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if len != f.bytes || sha != f.sha256 {
            bail!(
                "{}: {len} bytes with SHA-256 {sha}, but the manifest lists {} bytes with SHA-256 {}: \
                 the file is not what was released, so no Parquet copy was written; fetch the release again",
                file.display(),
                f.bytes,
                f.sha256
            );
        }
    }
    let mut copies = Vec::new();
    for f in &m.release.files {
        let Some(name) = parquet_out::parquet_name(&f.name) else {
            continue;
        };
        let rows = parquet_out::csv_to_parquet(&dir.join(&f.name), &dir.join(&name))
            .with_context(|| {
                format!(
                    "cannot write the Parquet copy {name} of {} (the release's CSV files in {} are complete and verified; only the copy failed)",
                    f.name,
                    dir.display()
                )
            })?;
        copies.push(ParquetCopy {
            csv: f.name.clone(),
            parquet: name,
            rows,
        });
    }
    Ok(copies)
}

/// Asks for a counts table and writes it to `out` (which must not hold a release already).
pub async fn aggregate(
    cfg: &ClientConfig,
    req: pb::AggregateRequest,
    out: &Path,
) -> Result<Received> {
    prepare_out(out)?;
    let (ch, bearer) = connect(cfg).await?;
    let mut client = AnalystServiceClient::with_interceptor(ch, bearer);
    let stream = client
        .aggregate(req)
        .await
        .map_err(|s| status("Aggregate", s))?
        .into_inner();
    receive(stream, out).await
}

fn prepare_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    if std::fs::read_dir(out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty; give a new or empty folder (a release folder holds exactly its files and manifest.json)",
            out.display()
        );
    }
    Ok(())
}

/// Writes a release stream into `out`: each file to `NAME.part`, renamed when complete; a
/// progress line on a terminal.
async fn receive(mut stream: tonic::Streaming<pb::ReleaseChunk>, out: &Path) -> Result<Received> {
    use std::io::{IsTerminal, Write};
    let progress = std::io::stderr().is_terminal();
    let mut got = Received {
        release_id: String::new(),
        audit_entry: 0,
        files: Vec::new(),
        dir: out.to_path_buf(),
    };
    let mut total = 0u64;
    let mut done = 0u64;
    let mut current: Option<(String, std::io::BufWriter<std::fs::File>, u64)> = None;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| status("the release stream", s))?
    {
        if !chunk.release_id.is_empty() {
            got.release_id = chunk.release_id.clone();
            got.audit_entry = chunk.audit_entry;
            total = chunk.total_bytes;
        }
        if !is_plain_name(&chunk.file) {
            bail!("the gateway sent a file name that is not a plain file name; refusing it");
        }
        if current.as_ref().is_none_or(|(n, _, _)| *n != chunk.file) {
            if current.is_some() {
                bail!("the gateway started a new file before ending the last one");
            }
            let path = out.join(format!("{}.part", chunk.file));
            let f = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            current = Some((chunk.file.clone(), std::io::BufWriter::new(f), 0));
        }
        if let Some((name, w, n)) = current.as_mut() {
            w.write_all(&chunk.data)
                .with_context(|| format!("cannot write {name}"))?;
            *n += chunk.data.len() as u64;
            done += chunk.data.len() as u64;
        }
        if progress && total > 0 {
            eprint!(
                "\rreceiving release: {:>6.1} of {:.1} MB ({:>3}%)",
                done as f64 / 1e6,
                total as f64 / 1e6,
                done * 100 / total
            );
        }
        if chunk.end_of_file
            && let Some((name, w, n)) = current.take()
        {
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(out.join(format!("{name}.part")), out.join(&name))?;
            got.files.push((name, n));
        }
    }
    if progress {
        eprintln!();
    }
    if current.is_some() || got.files.last().is_none_or(|(n, _)| n != "manifest.json") {
        bail!("the release stream ended early; the folder is incomplete (ask again)");
    }
    Ok(got)
}

/// Which releases included the person of `tokens` (kind, 32-byte token).
pub async fn person_releases(
    cfg: &ClientConfig,
    tokens: Vec<(String, Vec<u8>)>,
) -> Result<pb::PersonReleasesResponse> {
    let (ch, bearer) = connect(cfg).await?;
    let mut client =
        sharing_proto::v1::audit_service_client::AuditServiceClient::with_interceptor(ch, bearer);
    Ok(client
        .person_releases(pb::PersonReleasesRequest {
            tokens: tokens
                .into_iter()
                .map(|(kind, token)| pb::PersonToken { kind, token })
                .collect(),
        })
        .await
        .map_err(|s| status("PersonReleases", s))?
        .into_inner())
}

/// A file name with no directory part, not hidden, not `..`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.ends_with(".part")
}
