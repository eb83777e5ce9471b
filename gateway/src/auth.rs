//! Who is calling: the identity is read from the SAN URI of the client certificate that the TLS
//! layer already verified against the partnership CA. Never from a request field.
//!
//! Identities: `spiffe://<trust-domain>/agency/<agency-id>` (an agency's agent) and
//! `spiffe://<trust-domain>/auditor/<name>` (an information governance officer, until JWT
//! identities exist). A certificate naming several identities names none.

use skp_core::AgencyId;
use tonic::{Request, Status};
use x509_parser::prelude::*;

/// A caller's identity, proven by its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An agency's agent.
    Agent(AgencyId),
    /// An auditor (IG officer), by name.
    Auditor(String),
}

impl Identity {
    /// The identity as its SPIFFE URI.
    pub fn uri(&self, trust_domain: &str) -> String {
        match self {
            Identity::Agent(a) => format!("spiffe://{trust_domain}/agency/{a}"),
            Identity::Auditor(n) => format!("spiffe://{trust_domain}/auditor/{n}"),
        }
    }
}

/// Why a call was not authenticated: the status for the client and the reason for the audit log.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// What the client is told.
    pub status: Status,
    /// What the audit log records (no secrets).
    pub reason: String,
}

/// Reads the caller's identity from the request's verified client certificate.
pub fn identify<T>(req: &Request<T>, trust_domain: &str) -> Result<Identity, AuthFailure> {
    let Some(leaf) = req.peer_certs().and_then(|c| c.first().cloned()) else {
        return Err(AuthFailure {
            status: Status::unauthenticated(
                "a client certificate issued by the partnership CA is required",
            ),
            reason: "call without a client certificate".into(),
        });
    };
    identity_from_cert(leaf.as_ref(), trust_domain).ok_or_else(|| AuthFailure {
        status: Status::unauthenticated(
            "the client certificate names no identity of this partnership",
        ),
        reason: "client certificate names no single agency or auditor of this trust domain".into(),
    })
}

/// The single identity named by a certificate's SPIFFE SAN URIs, if exactly one.
pub fn identity_from_cert(der: &[u8], trust_domain: &str) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found: Option<Identity> = None;
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        let id = if let Some(a) = skp_core::ids::agency_from_spiffe(uri, trust_domain) {
            Some(Identity::Agent(a))
        } else {
            auditor_from_spiffe(uri, trust_domain).map(Identity::Auditor)
        };
        if let Some(id) = id {
            if found.is_some() {
                return None;
            }
            found = Some(id);
        }
    }
    found
}

/// The auditor name in `spiffe://<trust-domain>/auditor/<name>` (lowercase slug).
fn auditor_from_spiffe(uri: &str, trust_domain: &str) -> Option<String> {
    let name = uri
        .strip_prefix("spiffe://")?
        .strip_prefix(trust_domain)?
        .strip_prefix("/auditor/")?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| name.to_owned())
}

/// The agency named by a certificate, if it names exactly one agency and nothing else.
pub fn agency_from_cert(der: &[u8], trust_domain: &str) -> Option<AgencyId> {
    match identity_from_cert(der, trust_domain)? {
        Identity::Agent(a) => Some(a),
        Identity::Auditor(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditor_uris() {
        assert_eq!(
            auditor_from_spiffe("spiffe://kingston.skp/auditor/ig-officer", "kingston.skp"),
            Some("ig-officer".into())
        );
        assert_eq!(
            auditor_from_spiffe("spiffe://other/auditor/ig-officer", "kingston.skp"),
            None
        );
        assert_eq!(
            auditor_from_spiffe("spiffe://kingston.skp/auditor/IG", "kingston.skp"),
            None
        );
        assert_eq!(
            auditor_from_spiffe("spiffe://kingston.skp/auditor/", "kingston.skp"),
            None
        );
        assert_eq!(
            auditor_from_spiffe("spiffe://kingston.skp/auditor/a/b", "kingston.skp"),
            None
        );
    }
}
