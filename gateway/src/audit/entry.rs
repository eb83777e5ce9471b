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

impl Actor {
    /// The gateway itself.
    pub fn gateway() -> Actor {
        Actor {
            kind: "gateway".into(),
            id: "gateway".into(),
            agency: None,
        }
    }

    /// An agency's agent, by its certificate identity.
    pub fn agent(agency: &str, trust_domain: &str) -> Actor {
        Actor {
            kind: "agent".into(),
            id: format!("spiffe://{trust_domain}/agency/{agency}"),
            agency: Some(agency.to_owned()),
        }
    }

    /// An unidentified peer (failed authentication).
    pub fn anonymous() -> Actor {
        Actor {
            kind: "anonymous".into(),
            id: "anonymous".into(),
            agency: None,
        }
    }
}

/// Record counts of an ingest batch or a withdrawal (absent = not applicable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// New records stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<u64>,
    /// Records already stored unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    /// Records that replaced an older version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<u64>,
    /// Records refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    /// Records withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<u64>,
    /// Withdrawal keys that matched no stored record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<u64>,
}

impl Counts {
    /// Counts of an ingest batch.
    pub fn ingest(accepted: u64, duplicates: u64, replaced: u64, rejected: u64) -> Counts {
        Counts {
            accepted: Some(accepted),
            duplicates: Some(duplicates),
            replaced: Some(replaced),
            rejected: Some(rejected),
            ..Counts::default()
        }
    }

    /// Counts of a withdrawal.
    pub fn withdraw(withdrawn: u64, not_found: u64) -> Counts {
        Counts {
            withdrawn: Some(withdrawn),
            not_found: Some(not_found),
            ..Counts::default()
        }
    }
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
    /// Changes whose entries were written could not be stored (the entries name them).
    StorageFailure,
    /// A dry run of a release request was decided.
    Explain,
    /// A call was refused by a resource limit (`[limits]`; the reason names the setting).
    Limit,
    /// A certificate revocation list was put in force (allow) or a CRL file refused (deny).
    CrlLoad,
}

impl Action {
    /// The action's name as encoded (snake_case).
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::Withdraw => "withdraw",
            Action::Release => "release",
            Action::Deny => "deny",
            Action::AuditQuery => "audit_query",
            Action::PolicyLoad => "policy_load",
            Action::AuthFailure => "auth_failure",
            Action::GatewayStart => "gateway_start",
            Action::GatewayStop => "gateway_stop",
            Action::StorageFailure => "storage_failure",
            Action::Explain => "explain",
            Action::Limit => "limit",
            Action::CrlLoad => "crl_load",
        }
    }
}

impl Decision {
    /// The decision's name as encoded.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
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
    /// Hex root of the tree of all earlier entries (size `seq`): chains each entry to the log
    /// before it, so a verifier can name the first altered entry.
    pub prev: String,
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
    /// Record counts (ingest, withdrawal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Agreement id, version and policy SHA-256, for releases and denials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<AgreementRef>,
    /// Rows released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// SHA-256 (hex) of the released bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_sha256: Option<String>,
    /// Release id (32 hex characters) of a release, naming its manifest and folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
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
    /// A new entry with nothing but who, what and the decision; the log fills in `v`, `seq`,
    /// `prev` and `time` when it appends it.
    pub fn new(actor: Actor, action: Action, decision: Decision) -> Entry {
        Entry {
            v: ENTRY_VERSION,
            seq: 0,
            prev: String::new(),
            time: String::new(),
            actor,
            action,
            decision,
            reason: None,
            datasets: Vec::new(),
            fields: Vec::new(),
            counts: None,
            agreement: None,
            rows: None,
            released_sha256: None,
            release: None,
            peer: None,
        }
    }

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
            prev: "ab".repeat(32),
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
            counts: Some(Counts::ingest(997, 0, 0, 3)),
            agreement: None,
            rows: None,
            released_sha256: None,
            release: None,
            peer: None,
        }
    }

    #[test]
    fn canonical_encoding_is_pinned() {
        let bytes = ingest_entry().encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf-8"),
            r#"{"v":1,"seq":7,"prev":"abababababababababababababababababababababababababababababababab","time":"2026-11-25T13:01:02.345Z","actor":{"kind":"agent","id":"spiffe://kingston.skp/agency/lfb","agency":"lfb"},"action":"ingest","decision":"allow","datasets":["lfb_incident"],"counts":{"accepted":997,"duplicates":0,"replaced":0,"rejected":3}}"#
        );
        assert_eq!(Entry::decode(&bytes).expect("decode"), ingest_entry());
    }

    #[test]
    fn enum_names_match_their_encoding() {
        for a in [
            Action::Ingest,
            Action::Withdraw,
            Action::Release,
            Action::Deny,
            Action::AuditQuery,
            Action::PolicyLoad,
            Action::AuthFailure,
            Action::GatewayStart,
            Action::GatewayStop,
            Action::StorageFailure,
            Action::Explain,
        ] {
            assert_eq!(
                serde_json::to_string(&a).expect("encode"),
                format!("\"{}\"", a.as_str())
            );
        }
        for d in [Decision::Allow, Decision::Deny] {
            assert_eq!(
                serde_json::to_string(&d).expect("encode"),
                format!("\"{}\"", d.as_str())
            );
        }
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
        b.counts = Some(Counts::ingest(996, 0, 0, 4));
        assert_ne!(a.leaf_hash(), b.leaf_hash());
    }
}
