//! Audit entries and their canonical, versioned encoding.
//!
//! An entry is encoded as one line of JSON with a fixed key order (the struct's declaration
//! order), no insignificant whitespace, absent optional fields omitted, and no floating point.
//! The encoding is what the Merkle leaf hashes (`SHA-256(0x00 ‖ bytes)`), so IG officers can read
//! an exported log with ordinary tools and recompute every hash. Entries never carry personal
//! data, tokens or field values: datasets and fields by name, rows by count, released bytes by
//! SHA-256, peers by address or certificate identity.

use serde::{Deserialize, Serialize};

/// The version of the entry format written by this code.
pub const ENTRY_VERSION: u32 = 1;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `agent`, `analyst`, `auditor`, `admin`, `gateway` or `anonymous`.
    pub kind: String,
    /// Certificate identity (SPIFFE URI), JWT subject, or `gateway`.
    pub id: String,
    /// The actor's agency, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
}

/// Counts of an ingest batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestCounts {
    /// New records stored.
    pub accepted: u64,
    /// Records already stored unchanged.
    pub duplicates: u64,
    /// Records that replaced an older version.
    pub replaced: u64,
    /// Records refused.
    pub rejected: u64,
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A batch of records was ingested.
    Ingest,
    /// Records were withdrawn (erasure or rectification).
    Withdraw,
    /// Data was released to an analyst.
    Release,
    /// A release was refused.
    Deny,
    /// The audit log was queried.
    AuditQuery,
    /// A policy was loaded or reloaded.
    PolicyLoad,
    /// An authentication or authorisation failure.
    AuthFailure,
    /// The gateway started.
    GatewayStart,
    /// The gateway stopped.
    GatewayStop,
}

/// The decision recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed and done.
    Allow,
    /// Refused.
    Deny,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Format version ([`ENTRY_VERSION`]).
    pub v: u32,
    /// Position in the log (the Merkle leaf index).
    pub seq: u64,
    /// UTC time, RFC 3339 with milliseconds.
    pub time: String,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: Action,
    /// Allowed or refused.
    pub decision: Decision,
    /// Why, for refusals and failures (names the rule, never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Datasets concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    /// Fields released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Ingest counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<IngestCounts>,
    /// Agreement id, version and policy SHA-256, for releases and denials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<AgreementRef>,
    /// Rows released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// SHA-256 (hex) of the released bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_sha256: Option<String>,
    /// The peer's network address, for connection-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// The agreement a release or denial was decided under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementRef {
    /// Agreement id.
    pub id: String,
    /// Agreement version.
    pub version: String,
    /// SHA-256 (hex) of the policy text in force.
    pub policy_sha256: String,
    /// Purpose id.
    pub purpose: String,
}

/// Why bytes are not a valid entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Not JSON of the entry shape.
    #[error("not an audit entry: {0}")]
    Shape(String),
    /// A version this code does not know.
    #[error(
        "audit entry version {0} is not supported (this gateway writes version {ENTRY_VERSION})"
    )]
    Version(u32),
    /// Valid JSON, but not in canonical form (re-encoding gives other bytes).
    #[error("audit entry is not in canonical form")]
    NotCanonical,
}

impl Entry {
    /// The canonical bytes of the entry (what the Merkle leaf hashes).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry of strings and integers always serialises")
    }

    /// Parses canonical bytes, refusing any other spelling of the same entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let e: Entry =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Shape(e.to_string()))?;
        if e.v != ENTRY_VERSION {
            return Err(EntryError::Version(e.v));
        }
        if e.encode() != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(e)
    }

    /// The Merkle leaf hash of the entry.
    pub fn leaf_hash(&self) -> skp_core::merkle::Hash {
        skp_core::merkle::leaf_hash(&self.encode())
    }
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-25T13:01:02.345Z`.
pub fn rfc3339_millis(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest_entry() -> Entry {
        Entry {
            v: ENTRY_VERSION,
            seq: 7,
            time: rfc3339_millis(time::macros::datetime!(2026-11-25 13:01:02.345 UTC)),
            actor: Actor {
                kind: "agent".into(),
                id: "spiffe://kingston.skp/agency/lfb".into(),
                agency: Some("lfb".into()),
            },
            action: Action::Ingest,
            decision: Decision::Allow,
            reason: None,
            datasets: vec!["lfb_incident".into()],
            fields: vec![],
            counts: Some(IngestCounts {
                accepted: 997,
                duplicates: 0,
                replaced: 0,
                rejected: 3,
            }),
            agreement: None,
            rows: None,
            released_sha256: None,
            peer: None,
        }
    }

    #[test]
    fn canonical_encoding_is_pinned() {
        let bytes = ingest_entry().encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf-8"),
            r#"{"v":1,"seq":7,"time":"2026-11-25T13:01:02.345Z","actor":{"kind":"agent","id":"spiffe://kingston.skp/agency/lfb","agency":"lfb"},"action":"ingest","decision":"allow","datasets":["lfb_incident"],"counts":{"accepted":997,"duplicates":0,"replaced":0,"rejected":3}}"#
        );
        assert_eq!(Entry::decode(&bytes).expect("decode"), ingest_entry());
    }

    #[test]
    fn other_spellings_are_refused() {
        let canonical = String::from_utf8(ingest_entry().encode()).expect("utf-8");
        let spaced = canonical.replace(",\"seq\"", ", \"seq\"");
        assert!(matches!(
            Entry::decode(spaced.as_bytes()),
            Err(EntryError::NotCanonical)
        ));
        let v2 = canonical.replace("\"v\":1", "\"v\":2");
        assert!(matches!(
            Entry::decode(v2.as_bytes()),
            Err(EntryError::Version(2))
        ));
        let extra = canonical.replace("\"seq\":7", "\"seq\":7,\"name\":\"x\"");
        assert!(matches!(
            Entry::decode(extra.as_bytes()),
            Err(EntryError::Shape(_))
        ));
        assert!(Entry::decode(b"not json").is_err());
    }

    #[test]
    fn any_change_changes_the_leaf() {
        let a = ingest_entry();
        let mut b = a.clone();
        b.counts = Some(IngestCounts {
            accepted: 996,
            duplicates: 0,
            replaced: 0,
            rejected: 4,
        });
        assert_ne!(a.leaf_hash(), b.leaf_hash());
    }
}
