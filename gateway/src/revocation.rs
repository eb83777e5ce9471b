//! Revocation of agent certificates: reads and validates the CRL file named by `[tls] crl`,
//! decides how the client certificate verifier uses it, and notices when the file changes so a
//! newly revoked agent is refused on its next connection without a restart.
//!
//! Owns the revocation policy (fail closed: a certificate whose revocation status cannot be
//! decided is refused, an expired CRL refuses every agent certificate). Never loosens what is
//! in force: a new file that cannot be read, does not parse, is not signed by the partnership
//! CA or carries a lower CRL number than the one in force is refused, and the last valid CRLs
//! stay in force. Reads only the CRL file; never writes one (`gateway dev-certs revoke` does).

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use time::OffsetDateTime;
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate, X509Name};

/// Why a CRL file was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The file could not be read (missing, permissions, I/O).
    #[error("cannot read the CRL file {path}: {source}")]
    Read {
        /// The CRL file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not PEM, or a PEM block is damaged.
    #[error(
        "{path}: not a PEM CRL file ({reason}); expected one or more \"-----BEGIN X509 CRL-----\" blocks"
    )]
    Pem {
        /// The CRL file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The file holds no CRL at all (an empty list would silently turn revocation off).
    #[error(
        "{path}: holds no \"X509 CRL\" PEM block; an empty file would turn revocation checking off, so it is refused"
    )]
    Empty {
        /// The CRL file.
        path: PathBuf,
    },
    /// A CRL is not a well-formed X.509 v2 CRL.
    #[error("{path}: CRL #{index} is malformed: {reason}")]
    Malformed {
        /// The CRL file.
        path: PathBuf,
        /// 1-based position of the CRL in the file.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A CRL was not issued by any CA in `[tls] ca`.
    #[error(
        "{path}: CRL #{index} is issued by \"{issuer}\", which is not a CA in [tls] ca; use the CRL of the partnership CA"
    )]
    UnknownIssuer {
        /// The CRL file.
        path: PathBuf,
        /// 1-based position of the CRL in the file.
        index: usize,
        /// The CRL's issuer name.
        issuer: String,
    },
    /// A CRL's signature does not verify with its issuer's key.
    #[error(
        "{path}: CRL #{index} (issuer \"{issuer}\") has a bad signature: {reason}; it was altered or signed with another key"
    )]
    BadSignature {
        /// The CRL file.
        path: PathBuf,
        /// 1-based position of the CRL in the file.
        index: usize,
        /// The CRL's issuer name.
        issuer: String,
        /// What the signature check said.
        reason: String,
    },
    /// A CRL has no nextUpdate, so its expiry cannot be enforced.
    #[error(
        "{path}: CRL #{index} has no nextUpdate; the gateway enforces CRL expiry and needs one"
    )]
    NoNextUpdate {
        /// The CRL file.
        path: PathBuf,
        /// 1-based position of the CRL in the file.
        index: usize,
    },
    /// A CRL is older (lower CRL number) than the one in force: an old CRL put back would
    /// un-revoke certificates.
    #[error(
        "{path}: CRL #{index} (issuer \"{issuer}\") has CRL number {number}, lower than {in_force} in force; an older CRL would un-revoke certificates, so it is refused"
    )]
    Rollback {
        /// The CRL file.
        path: PathBuf,
        /// 1-based position of the CRL in the file.
        index: usize,
        /// The CRL's issuer name.
        issuer: String,
        /// Its CRL number.
        number: BigUint,
        /// The CRL number in force for that issuer.
        in_force: BigUint,
    },
    /// rustls (webpki) refused the CRLs when building the verifier.
    #[error("{path}: the CRLs are not usable by the TLS verifier: {reason}")]
    Verifier {
        /// The CRL file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A validated set of CRLs: parsed, each signed by a CA of `[tls] ca`, each with a nextUpdate.
#[derive(Debug, Clone)]
pub struct CrlSet {
    ders: Vec<CertificateRevocationListDer<'static>>,
    /// Per CRL: issuer name (DER) and CRL number, if it has one.
    numbers: Vec<(Vec<u8>, Option<BigUint>)>,
    revoked: usize,
    next_update: OffsetDateTime,
}

impl CrlSet {
    /// Validates the CRLs in PEM text `pem` against the CA certificates `ca`. `origin` names
    /// the file in errors. Does not look at the clock: an expired CRL is valid to load (see
    /// [`CrlSet::expired`]); the verifier then refuses every certificate it covers.
    pub fn parse(pem: &[u8], ca: &[CertificateDer<'_>], origin: &Path) -> Result<Self, CrlError> {
        let ders = CertificateRevocationListDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CrlError::Pem {
                path: origin.to_path_buf(),
                reason: e.to_string(),
            })?;
        if ders.is_empty() {
            return Err(CrlError::Empty {
                path: origin.to_path_buf(),
            });
        }
        let cas: Vec<X509Certificate<'_>> = ca
            .iter()
            .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok().map(|(_, c)| c))
            .collect();
        let mut numbers = Vec::with_capacity(ders.len());
        let mut revoked = 0;
        let mut next_update: Option<OffsetDateTime> = None;
        for (i, der) in ders.iter().enumerate() {
            let index = i + 1;
            let crl = match CertificateRevocationList::from_der(der.as_ref()) {
                Ok(([], crl)) => crl,
                Ok(_) => {
                    return Err(CrlError::Malformed {
                        path: origin.to_path_buf(),
                        index,
                        reason: "trailing bytes after the CRL".into(),
                    });
                }
                Err(e) => {
                    return Err(CrlError::Malformed {
                        path: origin.to_path_buf(),
                        index,
                        reason: e.to_string(),
                    });
                }
            };
            let issuer = crl.issuer().to_string();
            let Some(ca) = cas
                .iter()
                .find(|c| c.subject().as_raw() == crl.issuer().as_raw())
            else {
                return Err(CrlError::UnknownIssuer {
                    path: origin.to_path_buf(),
                    index,
                    issuer,
                });
            };
            crl.verify_signature(ca.public_key())
                .map_err(|e| CrlError::BadSignature {
                    path: origin.to_path_buf(),
                    index,
                    issuer: issuer.clone(),
                    reason: e.to_string(),
                })?;
            let Some(next) = crl.next_update() else {
                return Err(CrlError::NoNextUpdate {
                    path: origin.to_path_buf(),
                    index,
                });
            };
            let next = next.to_datetime();
            next_update = Some(next_update.map_or(next, |n| n.min(next)));
            revoked += crl.iter_revoked_certificates().count();
            numbers.push((crl.issuer().as_raw().to_vec(), crl.crl_number().cloned()));
        }
        let set = CrlSet {
            ders,
            numbers,
            revoked,
            next_update: next_update.expect("at least one CRL, each with a nextUpdate"),
        };
        // The verifier parses CRLs with webpki, which may refuse what x509-parser accepted
        // (e.g. unsupported critical extensions): find out now, not at the next handshake.
        let mut roots = RootCertStore::empty();
        for c in ca {
            let _ = roots.add(c.clone().into_owned());
        }
        if !roots.is_empty() {
            client_verifier(Arc::new(roots), Some(&set)).map_err(|e| CrlError::Verifier {
                path: origin.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        Ok(set)
    }

    /// Reads and validates a CRL file (see [`CrlSet::parse`]).
    pub fn load(path: &Path, ca: &[CertificateDer<'_>]) -> Result<Self, CrlError> {
        let pem = std::fs::read(path).map_err(|source| CrlError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&pem, ca, path)
    }

    /// Refuses `self` as a replacement for `in_force` if, for an issuer both cover, its CRL
    /// number is lower (an old CRL put back would un-revoke certificates).
    pub fn check_not_older_than(&self, in_force: &CrlSet, origin: &Path) -> Result<(), CrlError> {
        for (i, (issuer, number)) in self.numbers.iter().enumerate() {
            let Some(number) = number else { continue };
            let newest_in_force = in_force
                .numbers
                .iter()
                .filter(|(iss, _)| iss == issuer)
                .filter_map(|(_, n)| n.as_ref())
                .max();
            if let Some(old) = newest_in_force
                && number < old
            {
                let issuer = X509Name::from_der(issuer)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_default();
                return Err(CrlError::Rollback {
                    path: origin.to_path_buf(),
                    index: i + 1,
                    issuer,
                    number: number.clone(),
                    in_force: old.clone(),
                });
            }
        }
        Ok(())
    }

    /// The CRLs (DER), as handed to the verifier.
    pub fn ders(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.ders
    }

    /// How many certificates the CRLs revoke.
    pub fn revoked(&self) -> usize {
        self.revoked
    }

    /// The earliest nextUpdate of the CRLs: after it, every certificate they cover is refused.
    pub fn next_update(&self) -> OffsetDateTime {
        self.next_update
    }

    /// Whether a CRL is past its nextUpdate at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        now > self.next_update
    }

    /// The highest CRL number in the set, as text (`-` if none has one), for logs.
    pub fn number(&self) -> String {
        self.numbers
            .iter()
            .filter_map(|(_, n)| n.as_ref())
            .max()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }
}

/// The client certificate verifier: trusts only `roots`; with `crls`, checks revocation at the
/// handshake, fail closed.
///
/// - `with_crls`: every presented certificate is looked up in the CRLs.
/// - `enforce_revocation_expiration`: a CRL past its nextUpdate makes every certificate it
///   covers refused (rustls' default ignores nextUpdate, so a stale CRL, e.g. one an attacker
///   keeps the gateway from refreshing, would silently keep a revoked agent in).
/// - the unknown-status policy stays rustls' default, deny: a certificate whose issuer has no
///   CRL in the file is refused, never waved through.
/// - the whole chain is checked (not `only_check_end_entity_revocation`): today agent
///   certificates are issued by the root itself, so this is the end entity alone, but an
///   intermediate CA added later must come with its own CRL or its certificates are refused.
///
/// Client certificates stay optional at the handshake (`allow_unauthenticated`) so analysts
/// with JWTs can share the port; `AgentService` refuses calls without one.
pub fn client_verifier(
    roots: Arc<RootCertStore>,
    crls: Option<&CrlSet>,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::server::VerifierBuilderError> {
    let mut builder = WebPkiClientVerifier::builder(roots);
    if let Some(crls) = crls {
        builder = builder
            .with_crls(crls.ders.iter().cloned())
            .enforce_revocation_expiration();
    }
    builder.allow_unauthenticated().build()
}

/// What identifies one version of a file without reading it: a rename (atomic replace), a
/// write in place or a removal all change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    /// The stamp of `path` now; `None` if it cannot be read (missing, permissions).
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

/// A CRL file being watched: the CRLs in force and the version of the file last looked at.
#[derive(Debug)]
pub struct CrlWatch {
    path: PathBuf,
    ca: Vec<CertificateDer<'static>>,
    seen: Option<FileStamp>,
    in_force: CrlSet,
}

/// What [`CrlWatch::poll`] found.
#[derive(Debug)]
pub enum CrlPoll {
    /// The file is as last seen: nothing to do.
    Unchanged,
    /// The file changed and its CRLs are now in force.
    Reloaded,
    /// The file changed but was refused; the previous CRLs stay in force.
    Refused(CrlError),
}

impl CrlWatch {
    /// Loads the CRL file at start-up; an invalid file is an error (the gateway does not start).
    pub fn open(path: &Path, ca: Vec<CertificateDer<'static>>) -> Result<CrlWatch, CrlError> {
        let seen = FileStamp::of(path);
        let in_force = CrlSet::load(path, &ca)?;
        Ok(CrlWatch {
            path: path.to_path_buf(),
            ca,
            seen,
            in_force,
        })
    }

    /// Looks at the file (one `stat`); if it changed since last looked at, validates the new
    /// CRLs and puts them in force, or keeps the old ones and says why. A refused version is
    /// reported once, not at every poll.
    pub fn poll(&mut self) -> CrlPoll {
        let stamp = FileStamp::of(&self.path);
        if stamp == self.seen {
            return CrlPoll::Unchanged;
        }
        self.seen = stamp;
        let loaded = CrlSet::load(&self.path, &self.ca).and_then(|new| {
            new.check_not_older_than(&self.in_force, &self.path)
                .map(|()| new)
        });
        match loaded {
            Ok(new) => {
                self.in_force = new;
                CrlPoll::Reloaded
            }
            Err(e) => CrlPoll::Refused(e),
        }
    }

    /// The CRLs in force.
    pub fn in_force(&self) -> &CrlSet {
        &self.in_force
    }

    /// The CRL file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).expect("ca");
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(p, key),
        }
    }

    fn crl(ca: &Ca, number: u64, revoked: &[u64], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .expect("crl")
        .pem()
        .expect("pem")
    }

    fn in_a_year() -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::days(365)
    }

    #[test]
    fn a_crl_of_the_ca_loads_with_its_number_and_count() {
        let ca = ca("test CA");
        let set = CrlSet::parse(
            crl(&ca, 7, &[1, 2], in_a_year()).as_bytes(),
            std::slice::from_ref(&ca.der),
            Path::new("x.pem"),
        )
        .expect("valid");
        assert_eq!(set.revoked(), 2);
        assert_eq!(set.number(), "7");
        assert_eq!(set.ders().len(), 1);
        assert!(!set.expired(OffsetDateTime::now_utc()));
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let ours = ca("test CA");
        let other = ca("test CA");
        let roots = [ours.der.clone()];
        let path = Path::new("/etc/skp/agents.crl.pem");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "holds no"),
            (b"not a crl at all\n".to_vec(), "holds no"),
            (
                b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec(),
                "malformed",
            ),
            (
                b"-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n".to_vec(),
                "not a PEM CRL",
            ),
            // Same issuer name, another key: the signature does not verify.
            (
                crl(&other, 9, &[], in_a_year()).into_bytes(),
                "bad signature",
            ),
        ];
        for (pem, want) in cases {
            let e = CrlSet::parse(&pem, &roots, path).expect_err(want);
            let s = e.to_string();
            assert!(s.contains("/etc/skp/agents.crl.pem"), "{s}");
            assert!(s.contains(want), "{want}: {s}");
        }
        let stranger = ca("another CA");
        let e = CrlSet::parse(crl(&stranger, 1, &[], in_a_year()).as_bytes(), &roots, path)
            .expect_err("unknown issuer");
        assert!(matches!(e, CrlError::UnknownIssuer { .. }), "{e}");
        // A valid CRL with a damaged copy appended: the whole file is refused.
        let mut pem = crl(&ours, 1, &[], in_a_year());
        pem.push_str(&crl(&ours, 2, &[], in_a_year()).replace('A', "B"));
        assert!(CrlSet::parse(pem.as_bytes(), &roots, path).is_err());
    }

    #[test]
    fn an_expired_crl_loads_but_says_so() {
        let ca = ca("test CA");
        let past = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        // rcgen refuses nextUpdate <= thisUpdate, and thisUpdate is an hour ago.
        let set = CrlSet::parse(
            crl(&ca, 1, &[], past).as_bytes(),
            std::slice::from_ref(&ca.der),
            Path::new("x"),
        )
        .expect("valid");
        assert!(set.expired(OffsetDateTime::now_utc()));
    }

    #[test]
    fn an_older_crl_cannot_replace_a_newer_one() {
        let ca = ca("test CA");
        let roots = [ca.der.clone()];
        let p = Path::new("x");
        let v5 = CrlSet::parse(crl(&ca, 5, &[1], in_a_year()).as_bytes(), &roots, p).expect("5");
        let v4 = CrlSet::parse(crl(&ca, 4, &[], in_a_year()).as_bytes(), &roots, p).expect("4");
        let v6 = CrlSet::parse(crl(&ca, 6, &[1], in_a_year()).as_bytes(), &roots, p).expect("6");
        let e = v4.check_not_older_than(&v5, p).expect_err("rollback");
        assert!(e.to_string().contains("lower than 5"), "{e}");
        v6.check_not_older_than(&v5, p).expect("newer");
        v5.check_not_older_than(&v5, p).expect("same");
    }

    #[test]
    fn the_watch_reloads_changes_and_keeps_the_last_valid_crl() {
        let ca = ca("test CA");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("agents.crl.pem");
        let replace = |text: &str| {
            let tmp = dir.path().join("new.tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        };
        replace(&crl(&ca, 1, &[], in_a_year()));
        let mut watch = CrlWatch::open(&path, vec![ca.der.clone()]).expect("open");
        assert_eq!(watch.in_force().revoked(), 0);
        assert!(matches!(watch.poll(), CrlPoll::Unchanged));

        replace(&crl(&ca, 2, &[42], in_a_year()));
        assert!(matches!(watch.poll(), CrlPoll::Reloaded));
        assert_eq!(watch.in_force().revoked(), 1);
        assert_eq!(watch.in_force().number(), "2");
        assert!(matches!(watch.poll(), CrlPoll::Unchanged));

        // A corrupt replacement is refused once, naming the file; number 2 stays in force.
        replace("-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n");
        match watch.poll() {
            CrlPoll::Refused(e) => {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(watch.poll(), CrlPoll::Unchanged), "reported once");
        assert_eq!(watch.in_force().number(), "2");

        // Removed: refused, the last valid CRL stays.
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(
            watch.poll(),
            CrlPoll::Refused(CrlError::Read { .. })
        ));
        assert_eq!(watch.in_force().revoked(), 1);

        // An old CRL put back: refused.
        replace(&crl(&ca, 1, &[], in_a_year()));
        assert!(matches!(
            watch.poll(),
            CrlPoll::Refused(CrlError::Rollback { .. })
        ));
        assert_eq!(watch.in_force().revoked(), 1);

        // Rewritten in place (same inode) with a newer CRL: reloaded.
        std::fs::write(&path, crl(&ca, 3, &[42, 43], in_a_year())).expect("write");
        assert!(matches!(watch.poll(), CrlPoll::Reloaded));
        assert_eq!(watch.in_force().revoked(), 2);
    }

    #[test]
    fn an_invalid_file_at_start_up_is_an_error() {
        let ca = ca("test CA");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("agents.crl.pem");
        assert!(matches!(
            CrlWatch::open(&path, vec![ca.der.clone()]),
            Err(CrlError::Read { .. })
        ));
        std::fs::write(&path, "").expect("write");
        assert!(matches!(
            CrlWatch::open(&path, vec![ca.der.clone()]),
            Err(CrlError::Empty { .. })
        ));
    }
}
