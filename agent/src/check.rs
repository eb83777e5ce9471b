//! `agent check`: is this agent ready? Config, key file permissions, certificate validity and
//! days to expiry, connectivity, and the catalog against the configured mappings.

use crate::config::{AgentConfig, check_key_permissions};
use std::path::Path;
use x509_parser::prelude::*;

/// How many days before its certificate expires `agent check` starts warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Passed.
    Pass,
    /// Passed, but needs attention soon (e.g. the certificate expires within 30 days).
    Warn,
    /// Failed: the agent will not work until it is fixed.
    Fail,
}

/// One line of the check report.
#[derive(Debug)]
pub struct CheckLine {
    /// Passed, passed with a warning, or failed.
    pub status: Status,
    /// What was checked and what was found.
    pub text: String,
}

impl CheckLine {
    /// Whether the check did not fail (a warning is not a failure).
    pub fn ok(&self) -> bool {
        self.status != Status::Fail
    }
}

/// Where a certificate stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Its validity has not started.
    NotYetValid,
    /// Its validity has ended.
    Expired,
    /// Valid, but ends within [`EXPIRY_WARNING_DAYS`] (whole days left, rounded down).
    ExpiresSoon {
        /// Whole days left.
        days_left: i64,
    },
    /// Valid for [`EXPIRY_WARNING_DAYS`] or more.
    Valid {
        /// Whole days left.
        days_left: i64,
    },
}

/// Where a certificate valid from `not_before` to `not_after` (Unix seconds) stands at `now`.
pub fn validity(not_before: i64, not_after: i64, now: i64) -> Validity {
    let days_left = (not_after - now).div_euclid(86_400);
    if now < not_before {
        Validity::NotYetValid
    } else if now > not_after {
        Validity::Expired
    } else if not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        Validity::ExpiresSoon { days_left }
    } else {
        Validity::Valid { days_left }
    }
}

/// Runs every check; never stops at the first failure.
pub async fn check(cfg: &AgentConfig) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let mut line = |status: Status, text: String| out.push(CheckLine { status, text });
    line(
        Status::Pass,
        format!("config {} parsed", cfg.path.display()),
    );

    match check_key_permissions(&cfg.key_file).and_then(|_| cfg.linkage_key()) {
        Ok(_) => line(
            Status::Pass,
            format!(
                "linkage key {} (version {}) readable by owner only",
                cfg.key_file.display(),
                cfg.key_version
            ),
        ),
        Err(e) => line(Status::Fail, format!("linkage key: {e:#}")),
    }
    match check_key_permissions(&cfg.key) {
        Ok(()) => line(
            Status::Pass,
            format!("client key {} readable by owner only", cfg.key.display()),
        ),
        Err(e) => line(Status::Fail, format!("client key: {e:#}")),
    }
    match std::fs::read(&cfg.cert) {
        Err(e) => line(
            Status::Fail,
            format!("certificate {}: {e}", cfg.cert.display()),
        ),
        Ok(pem) => {
            let now = ::time::OffsetDateTime::now_utc().unix_timestamp();
            for l in certificate_lines(&pem, &cfg.cert, cfg.agency.as_str(), now) {
                line(l.status, l.text);
            }
        }
    }
    match crate::client::connect(cfg).await {
        Err(e) => line(Status::Fail, format!("gateway {}: {e:#}", cfg.gateway)),
        Ok(mut c) => {
            line(
                Status::Pass,
                format!("gateway {} reachable over mutual TLS", cfg.gateway),
            );
            match crate::client::catalog(cfg, Some(&mut c)).await {
                Err(e) => line(Status::Fail, format!("catalog: {e:#}")),
                Ok((_, true)) => line(
                    Status::Fail,
                    "catalog: the gateway failed while sending it (only the cached one is at hand)"
                        .to_string(),
                ),
                Ok((cat, false)) => {
                    let names: Vec<&str> = cat.datasets().map(|d| d.name.as_str()).collect();
                    line(
                        pass(!names.is_empty()),
                        format!(
                            "catalog {}: may submit {}",
                            &cat.sha256()[..12.min(cat.sha256().len())],
                            names.join(", ")
                        ),
                    );
                    for (ds, m) in &cfg.datasets {
                        match cat.dataset(ds) {
                            None => line(
                                Status::Fail,
                                format!(
                                    "[datasets.{ds}] is configured but the catalog does not let this agency submit it"
                                ),
                            ),
                            Some(d) => {
                                let unknown: Vec<&String> = m
                                    .columns
                                    .keys()
                                    .chain(m.values.keys())
                                    .filter(|f| d.field(f).is_none())
                                    .collect();
                                if unknown.is_empty() {
                                    line(
                                        Status::Pass,
                                        format!("[datasets.{ds}] mapping matches the catalog"),
                                    );
                                } else {
                                    line(
                                        Status::Fail,
                                        format!(
                                            "[datasets.{ds}] maps unknown field(s) {unknown:?}"
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// [`Status::Pass`] if `ok`, else [`Status::Fail`].
fn pass(ok: bool) -> Status {
    if ok { Status::Pass } else { Status::Fail }
}

/// The certificate checks: PEM and X.509, validity at `now` (Unix seconds), and the SPIFFE
/// identity against the configured `agency`. `path` names the file in messages.
pub fn certificate_lines(pem: &[u8], path: &Path, agency: &str, now: i64) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let mut line = |status: Status, text: String| out.push(CheckLine { status, text });
    let Ok((_, p)) = parse_x509_pem(pem) else {
        line(
            Status::Fail,
            format!("certificate {} is not PEM", path.display()),
        );
        return out;
    };
    let Ok(cert) = p.parse_x509() else {
        line(
            Status::Fail,
            format!(
                "certificate {} is not a valid X.509 certificate",
                path.display()
            ),
        );
        return out;
    };
    let (not_before, not_after) = (cert.validity().not_before, cert.validity().not_after);
    match validity(not_before.timestamp(), not_after.timestamp(), now) {
        Validity::NotYetValid => line(
            Status::Fail,
            format!("certificate is not valid yet (starts {not_before})"),
        ),
        Validity::Expired => line(
            Status::Fail,
            format!("certificate expired on {not_after}; ask the partnership admin for a new one"),
        ),
        Validity::ExpiresSoon { days_left } => line(
            Status::Warn,
            format!(
                "certificate expires on {not_after} ({days_left} days left, under {EXPIRY_WARNING_DAYS}); ask the partnership admin for a new one now"
            ),
        ),
        Validity::Valid { days_left } => line(
            Status::Pass,
            format!("certificate valid until {not_after} ({days_left} days left)"),
        ),
    }
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| {
                    if let GeneralName::URI(u) = g {
                        Some(u.to_string())
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let wanted = format!("/agency/{agency}");
    let ok = uris
        .iter()
        .any(|u| u.starts_with("spiffe://") && u.ends_with(&wanted));
    line(
        if ok { Status::Pass } else { Status::Fail },
        format!(
            "certificate identity {} (config says agency {agency})",
            uris.join(", ")
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::time::{Duration, OffsetDateTime};
    use rcgen::{CertificateParams, KeyPair, SanType};

    /// A self-signed client certificate for `agency` valid from `from` to `until`.
    fn cert(agency: &str, from: OffsetDateTime, until: OffsetDateTime) -> String {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(
            format!("spiffe://kingston.skp/agency/{agency}")
                .try_into()
                .expect("uri"),
        )];
        p.not_before = from;
        p.not_after = until;
        p.self_signed(&key).expect("cert").pem()
    }

    fn lines_for(from: Duration, until: Duration) -> Vec<CheckLine> {
        let now = OffsetDateTime::now_utc();
        let pem = cert("lfb", now + from, now + until);
        certificate_lines(
            pem.as_bytes(),
            Path::new("agents/lfb.pem"),
            "lfb",
            now.unix_timestamp(),
        )
    }

    #[test]
    fn a_certificate_expiring_within_30_days_warns_but_passes() {
        let lines = lines_for(Duration::days(-300), Duration::days(10));
        assert_eq!(lines[0].status, Status::Warn, "{lines:?}");
        assert!(lines[0].text.contains("days left"), "{lines:?}");
        assert!(lines[0].text.contains("new one now"), "{lines:?}");
        assert!(
            lines.iter().all(CheckLine::ok),
            "a warning is not a failure"
        );
        // Just under the threshold: still a warning; just over: a pass.
        let lines = lines_for(
            Duration::days(-1),
            Duration::days(30) - Duration::minutes(5),
        );
        assert_eq!(lines[0].status, Status::Warn, "{lines:?}");
        let lines = lines_for(
            Duration::days(-1),
            Duration::days(30) + Duration::minutes(5),
        );
        assert_eq!(lines[0].status, Status::Pass, "{lines:?}");
        assert!(lines[0].text.contains("30 days left"), "{lines:?}");
    }

    #[test]
    fn an_expired_or_not_yet_valid_certificate_fails() {
        let lines = lines_for(Duration::days(-30), Duration::hours(-1));
        assert_eq!(lines[0].status, Status::Fail, "{lines:?}");
        assert!(lines[0].text.contains("certificate expired"), "{lines:?}");
        let lines = lines_for(Duration::days(1), Duration::days(300));
        assert_eq!(lines[0].status, Status::Fail, "{lines:?}");
        assert!(lines[0].text.contains("not valid yet"), "{lines:?}");
    }

    #[test]
    fn a_long_lived_certificate_of_the_right_agency_passes() {
        let lines = lines_for(Duration::days(-1), Duration::days(365));
        assert_eq!(
            lines.iter().map(|l| l.status).collect::<Vec<_>>(),
            [Status::Pass, Status::Pass],
            "{lines:?}"
        );
        let now = OffsetDateTime::now_utc();
        let pem = cert(
            "met-police",
            now - Duration::days(1),
            now + Duration::days(365),
        );
        let lines = certificate_lines(
            pem.as_bytes(),
            Path::new("x.pem"),
            "lfb",
            now.unix_timestamp(),
        );
        assert_eq!(lines[1].status, Status::Fail, "wrong agency: {lines:?}");
    }

    #[test]
    fn validity_boundaries() {
        let day = 86_400;
        assert_eq!(validity(0, 100 * day, -1), Validity::NotYetValid);
        assert_eq!(validity(0, 100 * day, 100 * day + 1), Validity::Expired);
        assert_eq!(
            validity(0, 100 * day, 100 * day),
            Validity::ExpiresSoon { days_left: 0 }
        );
        assert_eq!(
            validity(0, 100 * day, 70 * day + 1),
            Validity::ExpiresSoon { days_left: 29 }
        );
        assert_eq!(
            validity(0, 100 * day, 70 * day),
            Validity::Valid { days_left: 30 }
        );
        assert!(
            certificate_lines(b"junk", Path::new("x.pem"), "lfb", 0)
                .iter()
                .all(|l| l.status == Status::Fail)
        );
    }
}
