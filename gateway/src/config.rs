//! `gateway.toml`: raw serde structs (`deny_unknown_fields`) and the validated runtime config.
//! Paths in the file are relative to the file's own directory.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default largest gRPC message accepted, in bytes (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    data_dir: PathBuf,
    #[serde(default = "default_trust_domain")]
    trust_domain: String,
    catalog_dir: Option<PathBuf>,
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    audit: Option<RawAudit>,
    #[serde(default)]
    policy: RawPolicy,
    jwt: Option<RawJwt>,
    release: Option<RawRelease>,
    console: Option<RawConsole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    jwks: PathBuf,
    issuer: String,
    audience: String,
    leeway_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    key: PathBuf,
    origin: Option<String>,
}

fn default_trust_domain() -> String {
    skp_core::TRUST_DOMAIN.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    max_handshakes: Option<usize>,
    max_batch_records: Option<usize>,
    max_release_rows: Option<u64>,
    max_streams_per_agency: Option<usize>,
    agency_calls_per_min: Option<u32>,
    agency_records_per_sec: Option<u32>,
    max_calls_per_user: Option<usize>,
    user_calls_per_min: Option<u32>,
    max_concurrent_releases: Option<usize>,
    request_timeout_secs: Option<u64>,
    stream_idle_secs: Option<u64>,
    max_connection_streams: Option<u32>,
}

impl RawLimits {
    /// The per-caller limits, each checked against its range.
    fn limits(&self, path: &Path) -> Result<crate::limits::Limits> {
        let d = crate::limits::Limits::default();
        fn pick<T: Copy + PartialOrd + std::fmt::Display>(
            path: &Path,
            name: &str,
            v: Option<T>,
            default: T,
            lo: T,
            hi: T,
        ) -> Result<T> {
            let v = v.unwrap_or(default);
            if v < lo || v > hi {
                bail!(
                    "{}: limits.{name} = {v} is out of range; give a value from {lo} to {hi} (default {default})",
                    path.display()
                );
            }
            Ok(v)
        }
        let secs = |name: &str, v: Option<u64>, default: std::time::Duration| {
            pick(path, name, v, default.as_secs(), 1, 86_400).map(std::time::Duration::from_secs)
        };
        Ok(crate::limits::Limits {
            max_batch_records: pick(
                path,
                "max_batch_records",
                self.max_batch_records,
                d.max_batch_records,
                1,
                1_000_000,
            )?,
            max_release_rows: pick(
                path,
                "max_release_rows",
                self.max_release_rows,
                d.max_release_rows,
                1,
                1_000_000_000,
            )?,
            max_streams_per_agency: pick(
                path,
                "max_streams_per_agency",
                self.max_streams_per_agency,
                d.max_streams_per_agency,
                1,
                10_000,
            )?,
            agency_calls_per_min: pick(
                path,
                "agency_calls_per_min",
                self.agency_calls_per_min,
                d.agency_calls_per_min,
                1,
                1_000_000,
            )?,
            agency_records_per_sec: pick(
                path,
                "agency_records_per_sec",
                self.agency_records_per_sec,
                d.agency_records_per_sec,
                1,
                100_000_000,
            )?,
            max_calls_per_user: pick(
                path,
                "max_calls_per_user",
                self.max_calls_per_user,
                d.max_calls_per_user,
                1,
                10_000,
            )?,
            user_calls_per_min: pick(
                path,
                "user_calls_per_min",
                self.user_calls_per_min,
                d.user_calls_per_min,
                1,
                1_000_000,
            )?,
            max_concurrent_releases: pick(
                path,
                "max_concurrent_releases",
                self.max_concurrent_releases,
                d.max_concurrent_releases,
                1,
                64,
            )?,
            request_timeout: secs(
                "request_timeout_secs",
                self.request_timeout_secs,
                d.request_timeout,
            )?,
            stream_idle_timeout: secs(
                "stream_idle_secs",
                self.stream_idle_secs,
                d.stream_idle_timeout,
            )?,
            max_connection_streams: pick(
                path,
                "max_connection_streams",
                self.max_connection_streams,
                d.max_connection_streams,
                1,
                10_000,
            )?,
        })
    }
}

/// The validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// SPIFFE trust domain of agent certificates.
    pub trust_domain: String,
    /// Directory of catalog TOML files; `None` uses the catalog compiled into the binary.
    pub catalog_dir: Option<PathBuf>,
    /// Partnership CA certificate (PEM).
    pub ca: PathBuf,
    /// Gateway server certificate chain (PEM).
    pub cert: PathBuf,
    /// Gateway server private key (PEM).
    pub key: PathBuf,
    /// Certificate revocation lists (PEM), if any.
    pub crl: Option<PathBuf>,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: std::time::Duration,
    /// Most TLS handshakes in progress at once (slow or hostile clients cannot pile up).
    pub max_handshakes: usize,
    /// Ed25519 audit signing key file (`[audit] key`).
    pub audit_key: PathBuf,
    /// Origin of the audit log's checkpoints (`[audit] origin`).
    pub audit_origin: String,
    /// Directory of agreement files (`[policy] dir`); `None`: the agreements compiled in.
    pub policy_dir: Option<PathBuf>,
    /// JWT validation for analysts and auditors (`[jwt]`).
    pub jwt: crate::jwt::JwtConfig,
    /// The release key file (`[release] key`): 64 hex characters, mode 0600.
    pub release_key: PathBuf,
    /// The HTTPS console listener (`[console] listen`: `/metrics` for operators); `None`: off.
    pub console_listen: Option<SocketAddr>,
    /// Per-caller limits (`[limits]`).
    pub limits: crate::limits::Limits,
}

impl GatewayConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read gateway config {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawConfig = skp_core::toml_file::parse(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "{}: listen = {:?} is not an address; write it as IP:PORT, e.g. \"127.0.0.1:7443\"",
                path.display(),
                raw.listen
            )
        })?;
        let console_listen = match &raw.console {
            None => None,
            Some(c) => Some(c.listen.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "{}: console.listen = {:?} is not an address; write it as IP:PORT, e.g. \"127.0.0.1:7444\"",
                    path.display(),
                    c.listen
                )
            })?),
        };
        let max_message_bytes = raw
            .limits
            .max_message_bytes
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if !(1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            bail!(
                "{}: limits.max_message_bytes must be between 1024 and 67108864",
                path.display()
            );
        }
        let Some(audit) = raw.audit else {
            bail!(
                "{}: no [audit] section; add one naming the audit signing key, e.g.\n[audit]\nkey = \"audit.key\"\n(`gateway dev-certs` makes one)",
                path.display()
            );
        };
        let audit_origin = audit
            .origin
            .unwrap_or_else(|| crate::pki::audit_origin(&raw.trust_domain));
        if audit_origin.is_empty() || audit_origin.chars().any(|c| c.is_control()) {
            bail!(
                "{}: audit.origin must be a non-empty single line, e.g. \"kingston.skp/audit/v1\"",
                path.display()
            );
        }
        let Some(jwt) = raw.jwt else {
            bail!(
                "{}: no [jwt] section; add the identity provider's keys, e.g.\n[jwt]\njwks = \"idp.jwks.json\"\nissuer = \"https://idp.kingston.skp.dev\"\naudience = \"skp-gateway\"\n(`gateway dev-certs` makes one)",
                path.display()
            );
        };
        let Some(release) = raw.release else {
            bail!(
                "{}: no [release] section; add the key released person ids are derived from, e.g.\n[release]\nkey = \"release.key\"\n(32 random bytes as 64 hex characters, mode 0600; `gateway dev-certs` makes one)",
                path.display()
            );
        };
        let leeway_secs = jwt.leeway_secs.unwrap_or(30);
        if leeway_secs > 60 {
            bail!("{}: jwt.leeway_secs must be at most 60", path.display());
        }
        Ok(Self {
            policy_dir: raw.policy.dir.as_deref().map(rel),
            jwt: crate::jwt::JwtConfig {
                jwks: rel(&jwt.jwks),
                issuer: jwt.issuer,
                audience: jwt.audience,
                leeway_secs,
            },
            audit_key: rel(&audit.key),
            audit_origin,
            release_key: rel(&release.key),
            console_listen,
            listen,
            data_dir: rel(&raw.data_dir),
            trust_domain: raw.trust_domain,
            catalog_dir: raw.catalog_dir.as_deref().map(rel),
            ca: rel(&raw.tls.ca),
            cert: rel(&raw.tls.cert),
            key: rel(&raw.tls.key),
            crl: raw.tls.crl.as_deref().map(rel),
            max_message_bytes,
            handshake_timeout: std::time::Duration::from_secs(
                raw.limits.handshake_timeout_secs.unwrap_or(10),
            ),
            max_handshakes: raw.limits.max_handshakes.unwrap_or(1024),
            limits: raw.limits.limits(path)?,
        })
    }

    /// Loads the catalog this config names (a directory, or the embedded one).
    pub fn load_catalog(&self) -> Result<skp_core::Catalog> {
        match &self.catalog_dir {
            None => Ok(skp_core::Catalog::embedded()?),
            Some(dir) => {
                let mut files = Vec::new();
                for e in std::fs::read_dir(dir)
                    .with_context(|| format!("cannot read catalog_dir {}", dir.display()))?
                {
                    let p = e?.path();
                    if p.extension().is_some_and(|x| x == "toml") {
                        let t = std::fs::read_to_string(&p)
                            .with_context(|| format!("cannot read {}", p.display()))?;
                        files.push((p.display().to_string(), t));
                    }
                }
                Ok(skp_core::Catalog::from_files(files)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_and_line() {
        let text = "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\nlisten_port = 3\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        let e = GatewayConfig::parse(Path::new("/x/gateway.toml"), text).expect_err("bad");
        let s = e.to_string();
        assert!(s.starts_with("/x/gateway.toml:3:"), "{s}");
        assert!(s.contains("listen_port"), "{s}");
    }

    #[test]
    fn relative_paths_anchor_at_the_file() {
        let text = "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\n[tls]\nca=\"a.pem\"\ncert=\"/abs/b\"\nkey=\"c\"\n[audit]\nkey=\"audit.key\"\n[jwt]\njwks=\"j.json\"\nissuer=\"i\"\naudience=\"a\"\n[release]\nkey=\"release.key\"\n";
        let c = GatewayConfig::parse(Path::new("/x/gateway.toml"), text).expect("good");
        assert_eq!(c.ca, Path::new("/x/a.pem"));
        assert_eq!(c.audit_key, Path::new("/x/audit.key"));
        assert_eq!(c.audit_origin, "kingston.skp/audit/v1");
        assert_eq!(c.cert, Path::new("/abs/b"));
        assert_eq!(c.data_dir, Path::new("/x/d"));
    }

    #[test]
    fn bad_listen_says_how_to_fix() {
        let text =
            "listen = \"localhost\"\ndata_dir = \"d\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        let e = GatewayConfig::parse(Path::new("g.toml"), text).expect_err("bad");
        assert!(e.to_string().contains("IP:PORT"), "{e}");
    }

    #[test]
    fn missing_audit_section_says_how_to_fix() {
        let text =
            "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n";
        let e = GatewayConfig::parse(Path::new("g.toml"), text).expect_err("bad");
        assert!(e.to_string().contains("[audit]"), "{e}");
    }
}
