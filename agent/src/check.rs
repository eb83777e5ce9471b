//! `agent check`: is this agent ready? Config, key file permissions, certificate validity and
//! days to expiry, connectivity, and the catalog against the configured mappings.

use crate::config::{AgentConfig, check_key_permissions};
use x509_parser::prelude::*;

/// One line of the check report.
#[derive(Debug)]
pub struct CheckLine {
    /// Passed?
    pub ok: bool,
    /// What was checked and what was found.
    pub text: String,
}

/// Runs every check; never stops at the first failure.
pub async fn check(cfg: &AgentConfig) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let mut line = |ok: bool, text: String| out.push(CheckLine { ok, text });
    line(true, format!("config {} parsed", cfg.path.display()));

    match check_key_permissions(&cfg.key_file).and_then(|_| cfg.linkage_key()) {
        Ok(_) => line(
            true,
            format!(
                "linkage key {} (version {}) readable by owner only",
                cfg.key_file.display(),
                cfg.key_version
            ),
        ),
        Err(e) => line(false, format!("linkage key: {e:#}")),
    }
    match check_key_permissions(&cfg.key) {
        Ok(()) => line(
            true,
            format!("client key {} readable by owner only", cfg.key.display()),
        ),
        Err(e) => line(false, format!("client key: {e:#}")),
    }
    match std::fs::read(&cfg.cert) {
        Err(e) => line(false, format!("certificate {}: {e}", cfg.cert.display())),
        Ok(pem) => match parse_x509_pem(&pem) {
            Err(_) => line(
                false,
                format!("certificate {} is not PEM", cfg.cert.display()),
            ),
            Ok((_, p)) => match p.parse_x509() {
                Err(_) => line(
                    false,
                    format!(
                        "certificate {} is not a valid X.509 certificate",
                        cfg.cert.display()
                    ),
                ),
                Ok(cert) => {
                    let now = ::time::OffsetDateTime::now_utc().unix_timestamp();
                    let not_after = cert.validity().not_after.timestamp();
                    let not_before = cert.validity().not_before.timestamp();
                    let days = (not_after - now) / 86_400;
                    if now < not_before {
                        line(
                            false,
                            format!(
                                "certificate is not valid yet (starts {})",
                                cert.validity().not_before
                            ),
                        );
                    } else if now > not_after {
                        line(
                            false,
                            format!(
                                "certificate expired on {}; ask the partnership admin for a new one",
                                cert.validity().not_after
                            ),
                        );
                    } else {
                        line(
                            days >= 14,
                            format!(
                                "certificate valid until {} ({days} days left{})",
                                cert.validity().not_after,
                                if days < 14 { "; renew it now" } else { "" }
                            ),
                        );
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
                    let wanted = format!("/agency/{}", cfg.agency);
                    let ok = uris
                        .iter()
                        .any(|u| u.starts_with("spiffe://") && u.ends_with(&wanted));
                    line(
                        ok,
                        format!(
                            "certificate identity {} (config says agency {})",
                            uris.join(", "),
                            cfg.agency
                        ),
                    );
                }
            },
        },
    }
    match crate::client::connect(cfg).await {
        Err(e) => line(false, format!("gateway {}: {e:#}", cfg.gateway)),
        Ok(mut c) => {
            line(
                true,
                format!("gateway {} reachable over mutual TLS", cfg.gateway),
            );
            match crate::client::catalog(cfg, Some(&mut c)).await {
                Err(e) => line(false, format!("catalog: {e:#}")),
                Ok((cat, _)) => {
                    let names: Vec<&str> = cat.datasets().map(|d| d.name.as_str()).collect();
                    line(
                        !names.is_empty(),
                        format!(
                            "catalog {}: may submit {}",
                            &cat.sha256()[..12.min(cat.sha256().len())],
                            names.join(", ")
                        ),
                    );
                    for (ds, m) in &cfg.datasets {
                        match cat.dataset(ds) {
                            None => line(
                                false,
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
                                        true,
                                        format!("[datasets.{ds}] mapping matches the catalog"),
                                    );
                                } else {
                                    line(
                                        false,
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
