//! Identifier newtypes. An agency id is only ever built from a certificate (gateway side) or a
//! configuration file (agent side, informational); it is never read from a request body.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Default SPIFFE trust domain of the Kingston partnership.
pub const TRUST_DOMAIN: &str = "kingston.skp";

/// Agencies of the shipped Kingston configuration.
pub const KINGSTON_AGENCIES: [&str; 5] =
    ["met-police", "rbk-council", "lfb", "probation", "swl-icb"];

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name after checking it is a lower-case slug (`a-z`, `0-9`, `-`, `_`).
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
                let s = s.into();
                if is_slug(&s) {
                    Ok(Self(s))
                } else {
                    Err(InvalidName { kind: stringify!($name), value_len: s.len() })
                }
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

name_type!(
    /// An agency of the partnership, e.g. `met-police`.
    AgencyId
);
name_type!(
    /// A dataset of the catalog, e.g. `police_crime`.
    DatasetName
);
name_type!(
    /// A field of a dataset, e.g. `ho_offence_code`.
    FieldName
);

/// A name that is not a lower-case slug.
#[derive(Debug, thiserror::Error)]
#[error(
    "{kind} must be 1-64 characters of a-z, 0-9, '-' or '_' (got {value_len} characters that are not)"
)]
pub struct InvalidName {
    kind: &'static str,
    value_len: usize,
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Reads the agency from a SPIFFE URI `spiffe://<trust-domain>/agency/<agency-id>`.
/// Returns `None` for any other shape or trust domain.
pub fn agency_from_spiffe(uri: &str, trust_domain: &str) -> Option<AgencyId> {
    let rest = uri.strip_prefix("spiffe://")?;
    let rest = rest.strip_prefix(trust_domain)?;
    let id = rest.strip_prefix("/agency/")?;
    AgencyId::new(id).ok()
}

/// The SPIFFE URI of an agency.
pub fn spiffe_uri(trust_domain: &str, agency: &AgencyId) -> String {
    format!("spiffe://{trust_domain}/agency/{agency}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_round_trip() {
        let a = AgencyId::new("met-police").expect("slug");
        let uri = spiffe_uri(TRUST_DOMAIN, &a);
        assert_eq!(agency_from_spiffe(&uri, TRUST_DOMAIN), Some(a));
    }

    #[test]
    fn spiffe_rejects_other_shapes() {
        for uri in [
            "spiffe://other.td/agency/met-police",
            "spiffe://kingston.skp/agent/met-police",
            "spiffe://kingston.skp/agency/Met",
            "spiffe://kingston.skp/agency/",
            "spiffe://kingston.skp.evil/agency/lfb",
            "https://kingston.skp/agency/lfb",
            "spiffe://kingston.skp/agency/lfb/extra",
        ] {
            assert_eq!(agency_from_spiffe(uri, TRUST_DOMAIN), None, "{uri}");
        }
    }
}
