//! Development PKI (`gateway dev-certs`): a partnership CA, the gateway's server certificate,
//! one client certificate per agency with its SPIFFE SAN URI, a random linkage key for the
//! agents (mode 0600), the audit signing key, a development identity provider key for analyst
//! and auditor JWTs (`idp.key`, 0600, and its public `idp.jwks.json`) and ready-to-run configs. For development and tests only: production
//! certificates come from the partnership's real CA.

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use skp_core::AgencyId;
use skp_core::ids::{KINGSTON_AGENCIES, spiffe_uri};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use x509_parser::num_bigint::BigUint;

/// Name of the development audit key.
pub const AUDIT_KEY_NAME: &str = "kingston.skp/audit";

/// What `dev-certs` made.
#[derive(Debug)]
pub struct DevPki {
    /// The output directory.
    pub dir: PathBuf,
    /// `DIR/gateway.toml`.
    pub gateway_config: PathBuf,
    /// `DIR/agents/<id>.toml`, per agency.
    pub agent_configs: Vec<(AgencyId, PathBuf)>,
    /// `DIR/auditors/<name>.toml`: the IG officer's client config for `gateway audit`.
    pub auditor_config: PathBuf,
    /// The development identity provider: `DIR/idp.key` and `DIR/idp.jwks.json`.
    pub idp: crate::jwt::DevIdp,
}

/// Subject of the development analyst identity.
pub const DEV_ANALYST: &str = "rbk-analyst";

/// Agency of the development analyst and IG officer.
pub const DEV_CLIENT_AGENCY: &str = "rbk-council";

/// Name of the development auditor (IG officer) identity.
pub const DEV_AUDITOR: &str = "ig-officer";

/// The audit log origin for a trust domain (first line of its checkpoints).
pub fn audit_origin(trust_domain: &str) -> String {
    format!("{trust_domain}/audit/v1")
}

/// Options for [`make_dev_pki`].
#[derive(Debug, Clone)]
pub struct DevPkiOptions {
    /// Address written into the configs.
    pub listen: String,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Overwrite an existing directory's material.
    pub force: bool,
}

impl Default for DevPkiOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7443".into(),
            trust_domain: skp_core::TRUST_DOMAIN.into(),
            force: false,
        }
    }
}

/// Makes a complete development PKI and configs under `dir`.
pub fn make_dev_pki(dir: &Path, opts: &DevPkiOptions) -> Result<DevPki> {
    if dir.join("ca.pem").exists() && !opts.force {
        bail!(
            "{} already holds a development CA; pass --force to replace it (agents and stored data made with the old linkage key will no longer link)",
            dir.display()
        );
    }
    for sub in ["agents", "auditors", "analysts"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "Safer Kingston Partnership development CA",
    );
    ca_params.distinguished_name.push(
        DnType::OrganizationName,
        "Safer Kingston Partnership (development)",
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(5 * 365);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(dir, "ca.pem", &ca_cert.pem(), 0o644)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(ca_params, ca_key);
    // The CRL of agent certificates (`[tls] crl`): empty, number 1; `dev-certs revoke` adds to it.
    write_atomic(
        &dir.join(DEV_CRL_FILE),
        &dev_crl_pem(&issuer, 1u64.into(), Vec::new(), now)?,
        0o644,
    )?;

    let srv_key = KeyPair::generate()?;
    let mut srv = CertificateParams::new(vec!["localhost".to_string()])?;
    srv.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    srv.distinguished_name
        .push(DnType::CommonName, "skp-gateway");
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    srv.not_before = now - Duration::hours(1);
    srv.not_after = now + Duration::days(365);
    let srv_cert = srv.signed_by(&srv_key, &issuer)?;
    write(dir, "gateway.pem", &srv_cert.pem(), 0o644)?;
    write(dir, "gateway.key", &srv_key.serialize_pem(), 0o600)?;

    write(
        dir,
        "linkage.key",
        &format!("{}\n", skp_core::LinkageKey::generate_hex()),
        0o600,
    )?;

    // The gateway's release key: released person ids are derived from it per agreement and
    // purpose. It never leaves the gateway (agents never need it).
    write(
        dir,
        "release.key",
        &format!("{}\n", hex::encode(rand::random::<[u8; 32]>())),
        0o600,
    )?;

    // The gateway's Ed25519 audit key: it signs checkpoints of the audit log; IG officers pin
    // the verifier key (audit.pub) to check them.
    let audit = skp_core::checkpoint::SigningKey::generate(AUDIT_KEY_NAME)?;
    write(
        dir,
        "audit.key",
        &format!("{}\n", audit.to_private_text()),
        0o600,
    )?;
    write(
        dir,
        "audit.pub",
        &format!("{}\n", audit.verifier_key_string()),
        0o644,
    )?;

    // The development identity provider: signs analyst/auditor JWTs (`gateway token`); the
    // gateway pins its public key from idp.jwks.json.
    let idp = crate::jwt::make_dev_idp(dir)?;

    let mut agent_configs = Vec::new();
    for id in KINGSTON_AGENCIES {
        let agency = AgencyId::new(id)?;
        let (cert, key) = issue_agent_cert(
            &issuer,
            &opts.trust_domain,
            &agency,
            now - Duration::hours(1),
            now + Duration::days(365),
        )?;
        write(dir, &format!("agents/{id}.pem"), &cert, 0o644)?;
        write(dir, &format!("agents/{id}.key"), &key, 0o600)?;
        let cfg = agent_config_text(id, &opts.listen);
        let p = write(dir, &format!("agents/{id}.toml"), &cfg, 0o644)?;
        agent_configs.push((agency, p));
    }
    // Development JWTs (24 h, the dev issuer's longest) for an IG officer and an analyst;
    // `gateway token` makes fresh ones.
    let dev_token = |sub: &str, role: crate::jwt::Role, file: &str| -> Result<()> {
        let roles = [role];
        let token = crate::jwt::issue_dev_token(
            &idp.key,
            &crate::jwt::DevTokenRequest {
                agency: Some(DEV_CLIENT_AGENCY),
                ttl: time::Duration::hours(24),
                ..crate::jwt::DevTokenRequest::new(sub, &roles)
            },
        )?;
        write(dir, file, &format!("{token}\n"), 0o600)?;
        Ok(())
    };
    dev_token(
        DEV_AUDITOR,
        crate::jwt::Role::Auditor,
        &format!("auditors/{DEV_AUDITOR}.jwt"),
    )?;
    dev_token(
        DEV_ANALYST,
        crate::jwt::Role::Analyst,
        &format!("analysts/{DEV_ANALYST}.jwt"),
    )?;
    let auditor_config = write(
        dir,
        &format!("auditors/{DEV_AUDITOR}.toml"),
        &client_config_text(&opts.listen, &opts.trust_domain, DEV_AUDITOR, true),
        0o644,
    )?;
    write(
        dir,
        &format!("analysts/{DEV_ANALYST}.toml"),
        &client_config_text(&opts.listen, &opts.trust_domain, DEV_ANALYST, false),
        0o644,
    )?;
    let gateway_config = write(
        dir,
        "gateway.toml",
        &gateway_config_text(&opts.listen, &opts.trust_domain),
        0o644,
    )?;
    Ok(DevPki {
        dir: dir.to_path_buf(),
        gateway_config,
        agent_configs,
        auditor_config,
        idp,
    })
}

/// File name of the development CRL of agent certificates in a dev PKI directory (`[tls] crl`
/// of the gateway.toml that `dev-certs` writes).
pub const DEV_CRL_FILE: &str = "agents.crl.pem";

/// Validity of a development CRL (its nextUpdate after thisUpdate): as long as the agent
/// certificates, since the gateway refuses every agent once the CRL is past its nextUpdate.
const DEV_CRL_DAYS: i64 = 365;

/// What [`revoke_agent`] did.
#[derive(Debug)]
pub struct Revoked {
    /// The serial number revoked (hex, colon-separated).
    pub serial: String,
    /// The CRL file written (or already listing the serial).
    pub crl: PathBuf,
    /// The CRL number of the file now in place.
    pub crl_number: String,
    /// The serial was already in the CRL: nothing was written.
    pub already: bool,
    /// The CRL file did not exist before (a dev PKI made before CRLs): it was created.
    pub created: bool,
}

/// `gateway dev-certs revoke`: adds the serial of `DIR/agents/<agency>.pem` to the dev CRL
/// `DIR/agents.crl.pem` (keeping every entry already there), with the next CRL number, signed
/// by the dev CA, written atomically (temporary file, fsync, rename). A running gateway puts it
/// in force at its next connection.
pub fn revoke_agent(dir: &Path, agency: &AgencyId, now: OffsetDateTime) -> Result<Revoked> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer, parse_x509_pem};
    let issuer = load_issuer(dir)?;
    let cert_path = dir.join("agents").join(format!("{agency}.pem"));
    let pem = std::fs::read(&cert_path).with_context(|| {
        format!(
            "cannot read {}: is {agency} an agency of this development PKI?",
            cert_path.display()
        )
    })?;
    let (_, pem) = parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert_path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", cert_path.display()))?;
    let serial = SerialNumber::from_slice(unsigned(cert.raw_serial()));

    let crl_path = dir.join(DEV_CRL_FILE);
    let ca = crate::tls::read_certs(&dir.join("ca.pem"))?;
    let (mut entries, number, created) = match std::fs::read(&crl_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (Vec::new(), BigUint::from(0u8), true)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", crl_path.display())),
        Ok(bytes) => {
            // Only a CRL the dev CA signed is extended (never re-sign what someone else wrote).
            let set = crate::revocation::CrlSet::parse(&bytes, &ca, &crl_path)?;
            let [der] = set.ders() else {
                bail!(
                    "{} holds {} CRLs; the development CRL holds exactly one",
                    crl_path.display(),
                    set.ders().len()
                );
            };
            let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", crl_path.display()))?;
            let entries = crl
                .iter_revoked_certificates()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(unsigned(r.raw_serial())),
                    revocation_time: r.revocation_date.to_datetime(),
                    reason_code: r.reason_code().and_then(|(_, c)| reason(c.0)),
                    invalidity_date: r.invalidity_date().map(|(_, t)| t.to_datetime()),
                })
                .collect::<Vec<_>>();
            let number = crl.crl_number().cloned().unwrap_or_default();
            (entries, number, false)
        }
    };
    let shown = serial.to_string();
    if entries.iter().any(|e| e.serial_number == serial) {
        return Ok(Revoked {
            serial: shown,
            crl: crl_path,
            crl_number: number.to_string(),
            already: true,
            created,
        });
    }
    entries.push(RevokedCertParams {
        serial_number: serial,
        revocation_time: now,
        reason_code: None,
        invalidity_date: None,
    });
    let number = number + 1u8;
    let text = dev_crl_pem(&issuer, number.to_bytes_be().into(), entries, now)?;
    write_atomic(&crl_path, &text, 0o644)?;
    Ok(Revoked {
        serial: shown,
        crl: crl_path,
        crl_number: number.to_string(),
        already: false,
        created,
    })
}

/// A development CRL signed by the dev CA: thisUpdate a minute before `now` (clock skew),
/// nextUpdate [`DEV_CRL_DAYS`] later.
fn dev_crl_pem(
    issuer: &Issuer<'_, KeyPair>,
    number: SerialNumber,
    revoked: Vec<RevokedCertParams>,
    now: OffsetDateTime,
) -> Result<String> {
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(DEV_CRL_DAYS),
        crl_number: number,
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params
        .signed_by(issuer)
        .context("cannot sign the development CRL")?
        .pem()?)
}

/// The magnitude of a DER INTEGER's content bytes (leading zero bytes dropped), as rcgen
/// takes serial numbers.
fn unsigned(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    &raw[start..]
}

/// The rcgen revocation reason for a CRL reason code.
fn reason(code: u8) -> Option<RevocationReason> {
    use RevocationReason as R;
    Some(match code {
        0 => R::Unspecified,
        1 => R::KeyCompromise,
        2 => R::CaCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        6 => R::CertificateHold,
        8 => R::RemoveFromCrl,
        9 => R::PrivilegeWithdrawn,
        10 => R::AaCompromise,
        _ => return None,
    })
}

/// Replaces `path` with `text` atomically, with permission bits `mode` ([`crate::durable`]:
/// a temporary file in the same directory, written and fsynced, renamed over `path`, then the
/// directory fsynced). A reader sees the old file or the new one, never a part.
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<()> {
    Ok(crate::durable::replace(path, text.as_bytes(), mode)?)
}

/// Issues an agent client certificate (PEM cert, PEM key) with the agency's SPIFFE SAN URI.
pub fn issue_agent_cert(
    issuer: &Issuer<'_, KeyPair>,
    trust_domain: &str,
    agency: &AgencyId,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String)> {
    issue_client_cert(
        issuer,
        &spiffe_uri(trust_domain, agency),
        &format!("agent {agency}"),
        agency.as_str(),
        not_before,
        not_after,
    )
}

/// Issues a client certificate (PEM cert, PEM key) whose identity is the SPIFFE URI `uri`.
pub fn issue_client_cert(
    issuer: &Issuer<'_, KeyPair>,
    uri: &str,
    common_name: &str,
    organisation: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.distinguished_name
        .push(DnType::OrganizationName, organisation);
    p.subject_alt_names = vec![SanType::URI(uri.to_string().try_into()?)];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = not_before;
    p.not_after = not_after;
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Loads the CA of a dev PKI directory as an issuer (for tests and rotation tooling).
pub fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))
        .with_context(|| format!("cannot read {}/ca.pem", dir.display()))?;
    let key_pem = std::fs::read_to_string(dir.join("ca.key"))
        .with_context(|| format!("cannot read {}/ca.key", dir.display()))?;
    let key = KeyPair::from_pem(&key_pem)?;
    Ok(Issuer::from_ca_cert_pem(&ca_pem, key)?)
}

fn gateway_config_text(listen: &str, trust_domain: &str) -> String {
    format!(
        r#"# Gateway configuration made by `gateway dev-certs`. Paths are relative to this file.
# Run: gateway serve --config {{this file}}
listen = "{listen}"
data_dir = "data"
trust_domain = "{trust_domain}"
# catalog_dir = "../policies/catalog"  # default: the catalog compiled into the binary

[tls]
ca = "ca.pem"
cert = "gateway.pem"
key = "gateway.key"
# CRL of agent certificates, checked at every handshake and re-read when the file changes
# (`gateway dev-certs revoke --agency ID` adds to it). Expired or invalid: see the README.
crl = "{crl}"

[limits]
max_message_bytes = 4194304
handshake_timeout_secs = 10
# Per-caller limits (defaults shown; see the README's table):
# max_batch_records = 10000
# max_streams_per_agency = 8
# agency_calls_per_min = 600
# agency_records_per_sec = 200000
# stream_idle_secs = 120
# max_calls_per_user = 4
# user_calls_per_min = 600
# max_concurrent_releases = 2
# max_release_rows = 5000000
# request_timeout_secs = 600

[audit]
# Ed25519 key that signs checkpoints of the audit log; IG officers pin audit.pub.
key = "audit.key"
origin = "{origin}"

[jwt]
# Analyst and auditor JWTs: the development identity provider's public key (`gateway token`
# signs with idp.key). Algorithms are pinned per key (EdDSA/ES256); leeway at most 60 s.
jwks = "{jwks}"
issuer = "{issuer}"
audience = "{audience}"
leeway_secs = 30

# The IG console (HTTPS pages for auditors, Prometheus /metrics): uncomment to serve it.
# [console]
# listen = "127.0.0.1:7444"

[release]
# Released person ids are HMACs of cluster ids under keys derived from this one per agreement
# and purpose (never sent anywhere). 64 hex characters, mode 0600.
key = "release.key"
"#,
        origin = audit_origin(trust_domain),
        crl = DEV_CRL_FILE,
        jwks = crate::jwt::DEV_IDP_JWKS_FILE,
        issuer = crate::jwt::DEV_ISSUER,
        audience = crate::jwt::DEV_AUDIENCE,
    )
}

fn client_config_text(listen: &str, trust_domain: &str, who: &str, auditor: bool) -> String {
    let port = listen.rsplit(':').next().unwrap_or("7443");
    let (what, run) = if auditor {
        ("IG officer", "gateway audit log --config {this file}")
    } else {
        ("analyst", "gateway agreements --config {this file}")
    };
    let audit = if auditor {
        format!(
            r#"
[audit]
# The verifier key you pin: checkpoints must be signed by it.
pubkey = "../audit.pub"
origin = "{}"
"#,
            audit_origin(trust_domain)
        )
    } else {
        String::new()
    };
    format!(
        r#"# Client configuration of the development {what} `{who}`, made by `gateway dev-certs`.
# Paths are relative to this file. Run: {run}
gateway = "https://localhost:{port}"
# A JWT from the partnership's identity provider (dev: `gateway token`), sent as a bearer token.
token_file = "{who}.jwt"

[tls]
ca = "../ca.pem"
{audit}"#
    )
}

fn agent_config_text(id: &str, listen: &str) -> String {
    let port = listen.rsplit(':').next().unwrap_or("7443");
    format!(
        r#"# Agent configuration for {id}, made by `gateway dev-certs`. Paths are relative to this file.
# Run: agent push --config {{this file}} --dataset DATASET FILE.csv
agency = "{id}"
gateway = "https://localhost:{port}"
state_dir = "../agent-state/{id}"

[tls]
ca = "../ca.pem"
cert = "{id}.pem"
key = "{id}.key"

[linkage_key]
file = "../linkage.key"
version = 1

[push]
batch_size = 1000
retries = 3

# Column mapping per dataset: catalog field = "source column". A dataset without a mapping
# reads columns named exactly as the catalog fields.
# [datasets.police_crime.columns]
# crime_ref = "CRIS Ref"
"#
    )
}

/// Writes `text` to `DIR/name` with `mode`, replacing any old file, and syncs it.
pub(crate) fn write(dir: &Path, name: &str, text: &str, mode: u32) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_adds_the_agency_serial_and_the_verifier_then_refuses_only_that_agent() {
        use rustls::pki_types::UnixTime;
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tmp");
        make_dev_pki(dir.path(), &DevPkiOptions::default()).expect("pki");
        let ca = crate::tls::read_certs(&dir.path().join("ca.pem")).expect("ca");
        let crl_path = dir.path().join(DEV_CRL_FILE);
        let initial = crate::revocation::CrlSet::load(&crl_path, &ca).expect("initial CRL");
        assert_eq!((initial.revoked(), initial.number()), (0, "1".to_owned()));

        let lfb = AgencyId::new("lfb").expect("id");
        let now = OffsetDateTime::now_utc();
        let done = revoke_agent(dir.path(), &lfb, now).expect("revoke");
        assert!(!done.already && !done.created);
        assert_eq!(done.crl_number, "2");
        let again = revoke_agent(dir.path(), &lfb, now).expect("again");
        assert!(again.already);
        assert_eq!(again.crl_number, "2", "nothing re-signed");
        let met = AgencyId::new("met-police").expect("id");
        assert_eq!(
            revoke_agent(dir.path(), &met, now + Duration::hours(1))
                .expect("met")
                .crl_number,
            "3"
        );
        let set = crate::revocation::CrlSet::load(&crl_path, &ca).expect("CRL");
        assert_eq!(set.revoked(), 2, "earlier entries are kept");
        initial
            .check_not_older_than(&set, &crl_path)
            .expect_err("the initial CRL is older");

        let mut roots = rustls::RootCertStore::empty();
        for c in &ca {
            roots.add(c.clone()).expect("root");
        }
        let verifier =
            crate::revocation::client_verifier(std::sync::Arc::new(roots), Some(&set)).expect("v");
        let cert = |id: &str| {
            crate::tls::read_certs(&dir.path().join(format!("agents/{id}.pem")))
                .expect("cert")
                .remove(0)
        };
        for (id, revoked) in [("lfb", true), ("met-police", true), ("probation", false)] {
            let got = verifier.verify_client_cert(&cert(id), &[], UnixTime::now());
            if revoked {
                assert_eq!(
                    got.err(),
                    Some(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Revoked
                    )),
                    "{id}"
                );
            } else {
                assert!(got.is_ok(), "{id}: {got:?}");
            }
        }
        assert!(
            revoke_agent(dir.path(), &AgencyId::new("nobody").expect("id"), now).is_err(),
            "no certificate for that agency"
        );
    }

    #[test]
    fn dev_pki_has_private_keys_only_for_the_owner_and_a_usable_audit_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let pki = make_dev_pki(dir.path(), &DevPkiOptions::default()).expect("pki");
        assert_eq!(pki.agent_configs.len(), 5);
        for f in [
            "ca.key",
            "gateway.key",
            "linkage.key",
            "audit.key",
            "release.key",
            "idp.key",
            "agents/lfb.key",
        ] {
            let mode = std::fs::metadata(dir.path().join(f))
                .expect(f)
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let sk = std::fs::read_to_string(dir.path().join("audit.key")).expect("audit.key");
        let vk = std::fs::read_to_string(dir.path().join("audit.pub")).expect("audit.pub");
        let sk =
            skp_core::checkpoint::SigningKey::from_private_text(sk.trim()).expect("signing key");
        let vk = skp_core::checkpoint::VerifierKey::parse(vk.trim()).expect("verifier key");
        let cp = skp_core::checkpoint::Checkpoint::new(
            "kingston.skp/audit/v1",
            0,
            skp_core::merkle::EMPTY_ROOT,
        )
        .expect("cp");
        let note = skp_core::checkpoint::sign(&cp, &sk).expect("sign");
        assert_eq!(
            skp_core::checkpoint::open(&note, &vk, "kingston.skp/audit/v1").expect("open"),
            cp
        );
        let config = crate::config::GatewayConfig::load(&pki.gateway_config).expect("config");
        assert_eq!(config.jwt, crate::jwt::JwtConfig::dev(dir.path()));
        let verifier = crate::jwt::JwtVerifier::load(&config.jwt).expect("jwks");
        assert_eq!(
            verifier.key_ids().collect::<Vec<_>>(),
            [pki.idp.kid.as_str()]
        );
        let roles = [crate::jwt::Role::Analyst];
        let token = crate::jwt::issue_dev_token(
            &pki.idp.key,
            &crate::jwt::DevTokenRequest::new("analyst-1", &roles),
        )
        .expect("token");
        let claims = verifier
            .verify(&token, OffsetDateTime::now_utc())
            .expect("dev token verifies");
        assert!(claims.has(crate::jwt::Role::Analyst));
        assert!(
            make_dev_pki(dir.path(), &DevPkiOptions::default()).is_err(),
            "refuses to overwrite"
        );
    }
}
