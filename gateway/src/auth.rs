//! Who is calling: the agency is read from the SAN URI of the client certificate that the TLS
//! layer already verified against the partnership CA. Never from a request field.

use skp_core::AgencyId;
use tonic::{Request, Status};
use x509_parser::prelude::*;

/// The agency of a caller, proven by its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAgency(pub AgencyId);

/// Reads the calling agency from the request's verified client certificate.
///
/// Returns `Unauthenticated` with no detail to the client when there is no certificate or it
/// names no agency of the trust domain; the reason is logged server-side.
pub fn peer_agency<T>(req: &Request<T>, trust_domain: &str) -> Result<PeerAgency, Status> {
    let Some(certs) = req.peer_certs() else {
        tracing::warn!(peer = ?req.remote_addr(), "agent call without a client certificate");
        return Err(Status::unauthenticated(
            "a client certificate issued by the partnership CA is required for AgentService",
        ));
    };
    let Some(leaf) = certs.first() else {
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    match agency_from_cert(leaf.as_ref(), trust_domain) {
        Some(a) => Ok(PeerAgency(a)),
        None => {
            tracing::warn!(peer = ?req.remote_addr(), "client certificate names no agency of this trust domain");
            Err(Status::unauthenticated(
                "the client certificate names no agency of this partnership",
            ))
        }
    }
}

/// The agency named by a certificate's `spiffe://<trust-domain>/agency/<id>` SAN URI. A
/// certificate with several agency URIs names none (ambiguous identities are refused).
pub fn agency_from_cert(der: &[u8], trust_domain: &str) -> Option<AgencyId> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found: Option<AgencyId> = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(a) = skp_core::ids::agency_from_spiffe(uri, trust_domain)
        {
            if found.is_some() {
                return None;
            }
            found = Some(a);
        }
    }
    found
}
