//! `agent.toml`: raw serde structs (`deny_unknown_fields`) and the validated runtime config.
//! Paths are relative to the file's own directory.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agency: String,
    gateway: String,
    state_dir: PathBuf,
    tls: RawTls,
    linkage_key: RawKey,
    #[serde(default)]
    push: RawPush,
    #[serde(default)]
    datasets: BTreeMap<String, RawMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    file: PathBuf,
    version: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    batch_size: Option<usize>,
    max_batch_bytes: Option<usize>,
    retries: Option<u32>,
    backoff_ms: Option<u64>,
    connect_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    #[serde(default)]
    columns: BTreeMap<String, String>,
    #[serde(default)]
    values: BTreeMap<String, BTreeMap<String, String>>,
}

/// How one dataset's source export maps onto the catalog.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// Catalog field → source column. Fields not listed read the column of the same name.
    pub columns: BTreeMap<String, String>,
    /// Catalog field → (source code → catalog value).
    pub values: BTreeMap<String, BTreeMap<String, String>>,
}

impl Mapping {
    /// The source column of a catalog field.
    pub fn column<'a>(&'a self, field: &'a str) -> &'a str {
        self.columns.get(field).map(String::as_str).unwrap_or(field)
    }
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The agency this agent runs for (informational: the gateway reads it from the certificate).
    pub agency: String,
    /// Gateway URL, `https://host:port`.
    pub gateway: String,
    /// Spool, catalog cache and other state.
    pub state_dir: PathBuf,
    /// Partnership CA (PEM).
    pub ca: PathBuf,
    /// Agency client certificate (PEM).
    pub cert: PathBuf,
    /// Agency client key (PEM).
    pub key: PathBuf,
    /// Linkage key file.
    pub key_file: PathBuf,
    /// Linkage key version.
    pub key_version: u32,
    /// Records per batch.
    pub batch_size: usize,
    /// Largest encoded batch in bytes.
    pub max_batch_bytes: usize,
    /// Send attempts after the first before giving up (batches stay spooled).
    pub retries: u32,
    /// First retry delay; doubles each attempt.
    pub backoff: std::time::Duration,
    /// Connection timeout.
    pub connect_timeout: std::time::Duration,
    /// Per-dataset source mappings.
    pub datasets: BTreeMap<String, Mapping>,
}

impl AgentConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read agent config {}", path.display()))?;
        let raw: RawConfig = skp_core::toml_file::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        if !raw.gateway.starts_with("https://") {
            bail!(
                "{}: gateway = {:?} must be an https:// URL, e.g. \"https://localhost:7443\"",
                path.display(),
                raw.gateway
            );
        }
        let batch_size = raw.push.batch_size.unwrap_or(1000);
        if !(1..=100_000).contains(&batch_size) {
            bail!(
                "{}: push.batch_size must be between 1 and 100000",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            agency: raw.agency,
            gateway: raw.gateway,
            state_dir: rel(&raw.state_dir),
            ca: rel(&raw.tls.ca),
            cert: rel(&raw.tls.cert),
            key: rel(&raw.tls.key),
            key_file: rel(&raw.linkage_key.file),
            key_version: raw.linkage_key.version,
            batch_size,
            max_batch_bytes: raw.push.max_batch_bytes.unwrap_or(2 * 1024 * 1024),
            retries: raw.push.retries.unwrap_or(3),
            backoff: std::time::Duration::from_millis(raw.push.backoff_ms.unwrap_or(500)),
            connect_timeout: std::time::Duration::from_secs(
                raw.push.connect_timeout_secs.unwrap_or(10),
            ),
            datasets: raw
                .datasets
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        Mapping {
                            columns: v.columns,
                            values: v.values,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The mapping of a dataset (identity when none is configured).
    pub fn mapping(&self, dataset: &str) -> Mapping {
        self.datasets.get(dataset).cloned().unwrap_or_default()
    }

    /// Reads the linkage key, refusing a file that others can read.
    pub fn linkage_key(&self) -> Result<skp_core::LinkageKey> {
        check_key_permissions(&self.key_file)?;
        let text = std::fs::read_to_string(&self.key_file)
            .with_context(|| format!("cannot read the linkage key {}", self.key_file.display()))?;
        skp_core::LinkageKey::from_hex(&text)
            .with_context(|| format!("{}", self.key_file.display()))
    }
}

/// Fails when a secret file is readable or writable by group or others.
pub fn check_key_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} has permissions {mode:o}; a key file must be readable by its owner only: run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}
