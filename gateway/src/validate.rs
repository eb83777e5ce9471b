//! Validation of incoming batches against the catalog. Never trust the agent: every value is
//! checked again (types, allowed values, required fields, no unknown fields, no direct
//! identifier, no raw identifier pattern in free text, content hash). Pure: no I/O.

use crate::store::{NewRecord, StoredRecord};
use prost::Message;
use sharing_proto::v1::{IngestBatch, Record, Value, value::Kind};
use skp_core::catalog::{Dataset, FieldType, suggest};
use skp_core::normalise::{is_canonical_date, is_canonical_datetime, raw_identifier_in};
use skp_core::{AgencyId, Catalog};

/// A batch-level refusal: the whole batch (and the stream) is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The dataset is not in the catalog.
    #[error("unknown dataset \"{0}\"{1}; `agent check` lists the datasets your agency may submit")]
    UnknownDataset(String, String),
    /// The caller's agency does not own the dataset.
    #[error(
        "agency {agency} may not submit dataset {dataset}: the catalog names {owner} as its owner"
    )]
    NotOwner {
        /// Caller.
        agency: String,
        /// Dataset.
        dataset: String,
        /// Owner in the catalog.
        owner: String,
    },
    /// The agent's schema version differs from the gateway's.
    #[error(
        "dataset {dataset}: the agent sent schema version {sent} but the gateway has version {have}; refresh the agent's catalog (`agent check`)"
    )]
    SchemaVersion {
        /// Dataset.
        dataset: String,
        /// Version sent.
        sent: u32,
        /// Version in the catalog.
        have: u32,
    },
    /// A field named in the batch header is not in the dataset.
    #[error("dataset {dataset} has no field \"{field}\"{hint}; unknown fields are refused")]
    UnknownField {
        /// Dataset.
        dataset: String,
        /// Offending field.
        field: String,
        /// Suggestion.
        hint: String,
    },
    /// A direct-identifier field was sent.
    #[error(
        "dataset {dataset}: field \"{field}\" is a direct identifier and must never leave the agency; the agent sends only its token"
    )]
    DirectIdentifier {
        /// Dataset.
        dataset: String,
        /// Offending field.
        field: String,
    },
    /// A field is named twice in the batch header.
    #[error("dataset {dataset}: field \"{field}\" is named twice in the batch")]
    DuplicateField {
        /// Dataset.
        dataset: String,
        /// Offending field.
        field: String,
    },
}

/// Why one record was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    /// Field at fault, if one.
    pub field: String,
    /// The kind of fault, as a fixed code (the `reason` label of the rejected-records metric).
    pub code: RejectReason,
    /// Reason, naming no value.
    pub reason: String,
}

/// The kind of fault that got a record refused: a short fixed code, never a value or free
/// text, so it can label a metric (the label's values are exactly [`RejectReason::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// A free-text value looks like it holds a raw direct identifier (an NHS number, a
    /// postcode, ...).
    RawIdentifier,
    /// A required field has no value.
    MissingValue,
    /// A value of the wrong type, not a real date, too long, or not one of the allowed values.
    BadValue,
    /// The record key is not a 32-byte token.
    BadKey,
    /// The record carries a different number of values than the batch names fields.
    BadValueCount,
    /// A person role the dataset does not have.
    UnknownRole,
    /// A token of a kind the role does not derive, or not 32 bytes.
    BadToken,
    /// Fuzzy-linkage tokens of another version, a role without a demo recipe, or malformed.
    BadFuzzyTokens,
    /// The content hash is not 32 bytes or does not match the record.
    BadContentHash,
}

impl RejectReason {
    /// Every code, in the order of the variants.
    pub const ALL: [RejectReason; 9] = [
        Self::RawIdentifier,
        Self::MissingValue,
        Self::BadValue,
        Self::BadKey,
        Self::BadValueCount,
        Self::UnknownRole,
        Self::BadToken,
        Self::BadFuzzyTokens,
        Self::BadContentHash,
    ];

    /// The code as the metric label shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RawIdentifier => "raw_identifier",
            Self::MissingValue => "missing_value",
            Self::BadValue => "bad_value",
            Self::BadKey => "bad_key",
            Self::BadValueCount => "bad_value_count",
            Self::UnknownRole => "unknown_role",
            Self::BadToken => "bad_token",
            Self::BadFuzzyTokens => "bad_fuzzy_tokens",
            Self::BadContentHash => "bad_content_hash",
        }
    }
}

/// A batch header checked against the catalog.
#[derive(Debug)]
pub struct BatchPlan<'c> {
    /// The dataset.
    pub dataset: &'c Dataset,
    /// For each header position, the index in the dataset's sent fields.
    positions: Vec<usize>,
    sent: Vec<&'c skp_core::Field>,
}

/// Checks the batch header: dataset exists, the caller owns it, schema version, field names.
pub fn plan<'c>(
    catalog: &'c Catalog,
    agency: &AgencyId,
    batch: &IngestBatch,
) -> Result<BatchPlan<'c>, BatchError> {
    let Some(dataset) = catalog.dataset(&batch.dataset) else {
        let names: Vec<&str> = catalog.datasets().map(|d| d.name.as_str()).collect();
        return Err(BatchError::UnknownDataset(
            sanitise(&batch.dataset),
            suggest(&batch.dataset, &names),
        ));
    };
    if &dataset.owner != agency {
        return Err(BatchError::NotOwner {
            agency: agency.to_string(),
            dataset: dataset.name.to_string(),
            owner: dataset.owner.to_string(),
        });
    }
    if batch.schema_version != dataset.version {
        return Err(BatchError::SchemaVersion {
            dataset: dataset.name.to_string(),
            sent: batch.schema_version,
            have: dataset.version,
        });
    }
    let sent: Vec<&skp_core::Field> = dataset.sent_fields().collect();
    let mut positions = Vec::with_capacity(batch.fields.len());
    for name in &batch.fields {
        match sent.iter().position(|f| f.name.as_str() == name) {
            Some(i) => {
                if positions.contains(&i) {
                    return Err(BatchError::DuplicateField {
                        dataset: dataset.name.to_string(),
                        field: sanitise(name),
                    });
                }
                positions.push(i);
            }
            None if dataset.field(name).is_some() => {
                return Err(BatchError::DirectIdentifier {
                    dataset: dataset.name.to_string(),
                    field: name.clone(),
                });
            }
            None => {
                let names: Vec<&str> = sent.iter().map(|f| f.name.as_str()).collect();
                return Err(BatchError::UnknownField {
                    dataset: dataset.name.to_string(),
                    field: sanitise(name),
                    hint: suggest(name, &names),
                });
            }
        }
    }
    Ok(BatchPlan {
        dataset,
        positions,
        sent,
    })
}

impl BatchPlan<'_> {
    /// Checks one record; on success returns it ready for the store.
    pub fn check(
        &self,
        agency: &AgencyId,
        rec: Record,
        received_unix_ms: i64,
    ) -> Result<NewRecord, RecordProblem> {
        let problem = |field: &str, code: RejectReason, reason: String| RecordProblem {
            field: field.to_string(),
            code,
            reason,
        };
        let record_key = <[u8; 32]>::try_from(rec.record_key.as_slice()).map_err(|_| {
            problem(
                "",
                RejectReason::BadKey,
                "record_key must be a 32-byte token".into(),
            )
        })?;
        let content_hash = <[u8; 32]>::try_from(rec.content_hash.as_slice()).map_err(|_| {
            problem(
                "",
                RejectReason::BadContentHash,
                "content_hash must be 32 bytes (SHA-256)".into(),
            )
        })?;
        if rec.values.len() != self.positions.len() {
            return Err(problem(
                "",
                RejectReason::BadValueCount,
                format!(
                    "record carries {} values for the batch's {} fields",
                    rec.values.len(),
                    self.positions.len()
                ),
            ));
        }
        let mut values = vec![Value { kind: None }; self.sent.len()];
        for (v, &pos) in rec.values.into_iter().zip(&self.positions) {
            values[pos] = v;
        }
        // A raw identifier in free text is the most serious fault: report it before any other.
        for (field, value) in self.sent.iter().zip(&values) {
            if let Some(reason) = raw_identifier_reason(field, value) {
                return Err(problem(
                    field.name.as_str(),
                    RejectReason::RawIdentifier,
                    reason,
                ));
            }
        }
        for (field, value) in self.sent.iter().zip(&values) {
            check_value(field, value)
                .map_err(|(code, reason)| problem(field.name.as_str(), code, reason))?;
        }
        let mut tokens = Vec::new();
        for p in &rec.persons {
            let Some(role) = self.dataset.roles.iter().find(|r| r.name == p.role) else {
                return Err(problem(
                    "",
                    RejectReason::UnknownRole,
                    format!(
                        "dataset {} has no person role \"{}\"",
                        self.dataset.name,
                        sanitise(&p.role)
                    ),
                ));
            };
            for t in &p.tokens {
                if !role.tokens.iter().any(|r| r.kind == t.kind) {
                    return Err(problem(
                        "",
                        RejectReason::BadToken,
                        format!(
                            "role {} derives no token of kind \"{}\" in the catalog",
                            role.name,
                            sanitise(&t.kind)
                        ),
                    ));
                }
                let tok = <[u8; 32]>::try_from(t.token.as_slice()).map_err(|_| {
                    problem(
                        "",
                        RejectReason::BadToken,
                        format!("role {} token {} must be 32 bytes", role.name, t.kind),
                    )
                })?;
                tokens.push((t.kind.clone(), tok));
            }
            if let Some(f) = &p.fuzzy {
                check_fuzzy(f, role)
                    .map_err(|reason| problem("", RejectReason::BadFuzzyTokens, reason))?;
            }
        }
        let expected = skp_core::content::content_hash(
            self.dataset.name.as_str(),
            self.dataset.version,
            &record_key,
            &rec.persons,
            &values,
        );
        if expected != content_hash {
            return Err(problem(
                "",
                RejectReason::BadContentHash,
                "content_hash does not match the record's content".into(),
            ));
        }
        let stored = StoredRecord {
            dataset: self.dataset.name.to_string(),
            schema_version: self.dataset.version,
            agency: agency.to_string(),
            received_unix_ms,
            record: Some(Record {
                record_key: rec.record_key,
                content_hash: rec.content_hash,
                persons: rec.persons,
                values,
                source_line: 0,
            }),
        };
        Ok(NewRecord {
            dataset: self.dataset.name.to_string(),
            record_key,
            content_hash,
            tokens,
            encoded: stored.encode_to_vec(),
        })
    }
}

/// Why a free-text value must be refused as holding a raw direct identifier, if it must.
fn raw_identifier_reason(field: &skp_core::Field, value: &Value) -> Option<String> {
    match (field.ty, &value.kind) {
        (FieldType::Str, Some(Kind::Text(s))) => raw_identifier_in(s).map(|what| {
            format!("text looks like it contains {what}; raw identifiers must not leave the agency")
        }),
        _ => None,
    }
}

/// Checks one value against its field (raw identifiers are checked by
/// [`raw_identifier_reason`] first). The reason never repeats the value.
fn check_value(field: &skp_core::Field, value: &Value) -> Result<(), (RejectReason, String)> {
    let Some(kind) = &value.kind else {
        return if field.required {
            Err((
                RejectReason::MissingValue,
                "required field is missing".into(),
            ))
        } else {
            Ok(())
        };
    };
    check_present_value(field, kind).map_err(|reason| (RejectReason::BadValue, reason))
}

/// [`check_value`] of a value that is there.
fn check_present_value(field: &skp_core::Field, kind: &Kind) -> Result<(), String> {
    let want = field.ty.as_str();
    match (field.ty, kind) {
        (FieldType::Str, Kind::Text(s)) => {
            if s.chars().count() > field.max_len as usize {
                return Err(format!("text longer than {} characters", field.max_len));
            }
            Ok(())
        }
        (FieldType::Int, Kind::Int(_)) | (FieldType::Bool, Kind::Flag(_)) => Ok(()),
        (FieldType::Date, Kind::Date(s)) if is_canonical_date(s) => Ok(()),
        (FieldType::Date, Kind::Date(_)) => {
            Err("date must be a real date written YYYY-MM-DD".into())
        }
        (FieldType::Datetime, Kind::Datetime(s)) if is_canonical_datetime(s) => Ok(()),
        (FieldType::Datetime, Kind::Datetime(_)) => {
            Err("datetime must be real and written YYYY-MM-DDTHH:MM:SS".into())
        }
        (FieldType::Enum, Kind::Text(s)) => {
            if field.values.iter().any(|v| v == s) {
                Ok(())
            } else {
                Err("value is not one of the catalog's allowed values".into())
            }
        }
        (FieldType::Set, Kind::Set(set)) => {
            for (i, item) in set.items.iter().enumerate() {
                if !field.values.iter().any(|v| v == item) {
                    return Err("a set item is not one of the catalog's allowed values".into());
                }
                if set.items[..i].contains(item) {
                    return Err("a set item is repeated".into());
                }
            }
            Ok(())
        }
        (_, k) => Err(format!(
            "expected a {want} value, got a {} value",
            kind_name(k)
        )),
    }
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Text(_) => "text",
        Kind::Int(_) => "int",
        Kind::Flag(_) => "bool",
        Kind::Date(_) => "date",
        Kind::Datetime(_) => "datetime",
        Kind::Set(_) => "set",
    }
}

/// A name from the network, cut to something safe to echo in an error.
fn sanitise(s: &str) -> String {
    s.chars()
        .take(64)
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

/// A role's fuzzy-linkage tokens are well formed: this encoding version, only slots that
/// exist, 16 bytes each, and only for a role whose catalog entry derives a `demo` token (the
/// fields they are computed from).
fn check_fuzzy(
    f: &sharing_proto::v1::FuzzyTokens,
    role: &skp_core::catalog::Role,
) -> Result<(), String> {
    if !role.tokens.iter().any(|r| r.kind == "demo") {
        return Err(format!(
            "role {} has fuzzy tokens, but the catalog gives it no demo recipe to compute them from",
            role.name
        ));
    }
    if f.version != skp_core::fuzzy::FUZZY_VERSION {
        return Err(format!(
            "role {} fuzzy tokens are of version \"{}\"; this gateway reads {} (update the agent or the gateway so they match)",
            role.name,
            sanitise(&f.version),
            skp_core::fuzzy::FUZZY_VERSION
        ));
    }
    skp_core::fuzzy::TokenSet::from_wire(f.present, &f.tokens)
        .map(|_| ())
        .map_err(|e| format!("role {} fuzzy tokens: {e}", role.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharing_proto::v1::{PersonRole, TypedToken};

    fn catalog() -> Catalog {
        Catalog::embedded().expect("catalog")
    }

    fn agency(s: &str) -> AgencyId {
        AgencyId::new(s).expect("agency")
    }

    fn batch(dataset: &str, fields: &[&str]) -> IngestBatch {
        let c = catalog();
        IngestBatch {
            dataset: dataset.into(),
            schema_version: c.dataset(dataset).map(|d| d.version).unwrap_or(1),
            fields: fields.iter().map(|s| s.to_string()).collect(),
            records: vec![],
            batch_id: "b".into(),
        }
    }

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::Text(s.into())),
        }
    }

    fn sealed(dataset: &Dataset, mut rec: Record, order: &[&str]) -> Record {
        // Content hash over catalog order.
        let sent: Vec<&str> = dataset.sent_fields().map(|f| f.name.as_str()).collect();
        let mut vals = vec![Value { kind: None }; sent.len()];
        for (v, name) in rec.values.iter().zip(order) {
            let i = sent.iter().position(|s| s == name).expect("field");
            vals[i] = v.clone();
        }
        rec.content_hash = skp_core::content::content_hash(
            dataset.name.as_str(),
            dataset.version,
            &rec.record_key,
            &rec.persons,
            &vals,
        )
        .to_vec();
        rec
    }

    #[test]
    fn header_refusals() {
        let c = catalog();
        let met = agency("met-police");
        let lfb = agency("lfb");
        assert!(matches!(
            plan(&c, &met, &batch("police_crimes", &[])),
            Err(BatchError::UnknownDataset(..))
        ));
        assert!(matches!(
            plan(&c, &lfb, &batch("police_crime", &[])),
            Err(BatchError::NotOwner { .. })
        ));
        assert!(matches!(
            plan(&c, &met, &batch("police_crime", &["nope"])),
            Err(BatchError::UnknownField { .. })
        ));
        assert!(matches!(
            plan(&c, &met, &batch("police_crime", &["crime_ref"])),
            Err(BatchError::DirectIdentifier { .. })
        ));
        let mut b = batch("police_crime", &[]);
        b.schema_version = 99;
        assert!(matches!(
            plan(&c, &met, &b),
            Err(BatchError::SchemaVersion { .. })
        ));
        let e = plan(&c, &met, &batch("police_crimes", &[])).expect_err("unknown");
        assert!(
            e.to_string().contains("did you mean \"police_crime\""),
            "{e}"
        );
    }

    #[test]
    fn record_checks() {
        let c = catalog();
        let met = agency("met-police");
        let ds = c.dataset("police_asb_incident").expect("ds");
        // Pick a str field, an enum field and the required fields.
        let required: Vec<&skp_core::Field> = ds.sent_fields().filter(|f| f.required).collect();
        let names: Vec<&str> = required.iter().map(|f| f.name.as_str()).collect();
        let good_values: Vec<Value> = required
            .iter()
            .map(|f| match f.ty {
                FieldType::Int => Value {
                    kind: Some(Kind::Int(1)),
                },
                FieldType::Bool => Value {
                    kind: Some(Kind::Flag(true)),
                },
                FieldType::Date => Value {
                    kind: Some(Kind::Date("2024-07-14".into())),
                },
                FieldType::Datetime => Value {
                    kind: Some(Kind::Datetime("2024-07-14T22:15:00".into())),
                },
                FieldType::Enum => text(&f.values[0]),
                FieldType::Set => Value {
                    kind: Some(Kind::Set(Default::default())),
                },
                _ => text("x"),
            })
            .collect();
        let b = batch("police_asb_incident", &names);
        let p = plan(&c, &met, &b).expect("plan");
        let role = &ds.roles[0];
        let rec = Record {
            record_key: vec![1; 32],
            content_hash: vec![],
            persons: vec![PersonRole {
                role: role.name.clone(),
                tokens: vec![TypedToken {
                    kind: role.tokens[0].kind.clone(),
                    token: vec![2; 32],
                }],
                fuzzy: None,
            }],
            values: good_values.clone(),
            source_line: 7,
        };
        let good = sealed(ds, rec.clone(), &names);
        assert!(p.check(&met, good.clone(), 0).is_ok());

        // Tampered content hash.
        let mut bad = good.clone();
        bad.content_hash[0] ^= 1;
        let e = p.check(&met, bad, 0).expect_err("hash");
        assert!(e.reason.contains("content_hash"), "{e:?}");
        assert_eq!(e.code, RejectReason::BadContentHash);

        // Wrong type in the first field.
        let mut bad = rec.clone();
        bad.values[0] = Value {
            kind: Some(Kind::Flag(true)),
        };
        let bad = sealed(ds, bad, &names);
        let e = p.check(&met, bad, 0).expect_err("type");
        assert_eq!(e.field, names[0]);
        assert_eq!(e.code, RejectReason::BadValue);
        assert!(e.reason.contains("expected"), "{e:?}");

        // Unknown role.
        let mut bad = rec.clone();
        bad.persons[0].role = "witness".into();
        let bad = sealed(ds, bad, &names);
        let e = p.check(&met, bad, 0).expect_err("role");
        assert!(e.reason.contains("no person role"), "{e:?}");
        assert_eq!(e.code, RejectReason::UnknownRole);

        // Fuzzy tokens: well formed are taken; a wrong length or version is refused.
        let fuzzy = |version: &str, present: u32, n: usize| {
            let mut r = rec.clone();
            r.persons[0].fuzzy = Some(sharing_proto::v1::FuzzyTokens {
                version: version.into(),
                present,
                tokens: vec![3; n],
            });
            sealed(ds, r, &names)
        };
        let v1 = skp_core::fuzzy::FUZZY_VERSION;
        assert!(p.check(&met, fuzzy(v1, 0b101, 32), 0).is_ok());
        let e = p.check(&met, fuzzy(v1, 0b101, 31), 0).expect_err("length");
        assert!(
            e.reason.contains("fuzzy tokens: expected 32 bytes"),
            "{e:?}"
        );
        assert_eq!(e.code, RejectReason::BadFuzzyTokens);
        let e = p
            .check(&met, fuzzy("skp/fuzzy/v0", 1, 16), 0)
            .expect_err("v");
        assert!(e.reason.contains("version"), "{e:?}");
        let e = p.check(&met, fuzzy(v1, 1 << 30, 16), 0).expect_err("slots");
        assert!(e.reason.contains("slots"), "{e:?}");

        // Missing required value.
        let mut bad = rec.clone();
        bad.values[0] = Value { kind: None };
        let bad = sealed(ds, bad, &names);
        let e = p.check(&met, bad, 0).expect_err("missing");
        assert!(e.reason.contains("required"), "{e:?}");
        assert_eq!(e.code, RejectReason::MissingValue);

        // A short record key.
        let mut bad = rec.clone();
        bad.record_key = vec![1; 31];
        let bad = sealed(ds, bad, &names);
        assert_eq!(
            p.check(&met, bad, 0).expect_err("key").code,
            RejectReason::BadKey
        );
    }

    #[test]
    fn reject_codes_are_distinct_short_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RejectReason::ALL {
            let s = r.as_str();
            assert!(
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s), "{s} twice");
        }
    }

    #[test]
    fn raw_nhs_number_in_free_text_is_refused() {
        let c = catalog();
        let icb = agency("swl-icb");
        let ds = c.dataset("ed_istv").expect("ed_istv");
        let free = ds
            .field("assault_location_desc")
            .expect("a free-text field");
        assert_eq!(free.ty, FieldType::Str);
        let f = free.clone();
        assert_eq!(
            raw_identifier_reason(&f, &text("outside Oceana, Clarence St")),
            None
        );
        let e = raw_identifier_reason(&f, &text("pt 943 476 5919")).expect("nhs");
        assert!(e.contains("NHS number"), "{e}");
        assert!(!e.contains("943"), "reason must not echo the value: {e}");
        let _ = icb;
    }
}
