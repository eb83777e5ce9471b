//! A stored record read in place: [`RecordView`] borrows every string and token from the
//! frame's bytes, so a release or a linker reads a million records without a `String` or a
//! `Vec` per value (prost's owned decode allocates about forty times a record).
//!
//! Reads exactly what [`StoredRecord`](super::StoredRecord) encodes, with protobuf's rules
//! (unknown fields skipped, the last of a repeated scalar wins, an embedded message given twice
//! is merged), and refuses what prost refuses (truncation, bad wire types, text that is not
//! UTF-8). Never panics on any input; never copies a value out of the frame.

use skp_core::transform::{Cell, SetItems};
use skp_core::wire::{Fields, WireError, WireValue, zigzag};

/// A stored record, borrowed from its frame.
#[derive(Default)]
pub struct RecordView<'a> {
    /// Dataset name.
    pub dataset: &'a str,
    /// Catalog schema version the record was validated against.
    pub schema_version: u32,
    /// Submitting agency (from its certificate).
    pub agency: &'a str,
    /// Receipt time, Unix milliseconds.
    pub received_unix_ms: i64,
    /// Token of the agency's record key.
    pub record_key: &'a [u8],
    /// SHA-256 of the record's canonical content.
    pub content_hash: &'a [u8],
    /// Line of the source export.
    pub source_line: u64,
    /// Person roles, in stored order.
    pub persons: Vec<PersonView<'a>>,
    /// Values in the order of the record's fields.
    pub values: Vec<Cell<'a>>,
}

impl std::fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Shape only: values and tokens may be personal data.
        f.debug_struct("RecordView")
            .field("dataset", &self.dataset)
            .field("agency", &self.agency)
            .field("persons", &self.persons.len())
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

/// A person role of a stored record, borrowed.
#[derive(Clone, Copy, Default)]
pub struct PersonView<'a> {
    /// Role name (e.g. `victim`).
    pub role: &'a str,
    /// The role's `TypedToken` messages, each checked well-formed when the record was read.
    tokens: &'a [u8],
    /// The role's `FuzzyTokens` (version, presence mask, token bytes), if it has one (several
    /// occurrences merge field by field, as prost merges them).
    fuzzy: Option<(&'a str, u32, &'a [u8])>,
}

impl<'a> PersonView<'a> {
    /// The role's tokens as (kind, token bytes), in stored order.
    pub fn tokens(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a> {
        Fields::new(self.tokens)
            .filter_map(|f| f.ok())
            .filter(|(n, _)| *n == 2)
            .filter_map(|(_, v)| v.bytes().ok())
            .map(|t| token_parts(t).unwrap_or_default())
    }

    /// The role's fuzzy-linkage tokens as (version, presence mask, token bytes), if it has
    /// them. The shape of the tokens is checked at ingest ([`skp_core::fuzzy::TokenSet::from_wire`]).
    pub fn fuzzy(&self) -> Option<(&'a str, u32, &'a [u8])> {
        self.fuzzy
    }
}

/// Why a stored record's bytes cannot be read.
pub type ViewError = WireError;

/// Which parts of a record a reader needs; the rest is skipped over unread (still checked to be
/// well-formed at the framing level, but its text is not validated or split).
#[derive(Clone, Copy, Debug)]
pub struct Want<'m> {
    /// Read the person roles (else `persons` stays empty).
    pub persons: bool,
    /// Read only the values whose index is `true` here (the others read as missing); `None`
    /// reads every value.
    pub values: Option<&'m [bool]>,
}

impl Want<'_> {
    /// Everything.
    pub const ALL: Want<'static> = Want {
        persons: true,
        values: None,
    };
    /// The person roles only.
    pub const PERSONS: Want<'static> = Want {
        persons: true,
        values: Some(&[]),
    };
}

impl<'a> RecordView<'a> {
    /// Reads an encoded [`StoredRecord`](super::StoredRecord).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ViewError> {
        Self::parse_some(bytes, Want::ALL)
    }

    /// Reads the parts of an encoded [`StoredRecord`](super::StoredRecord) that `want` asks
    /// for.
    pub fn parse_some(bytes: &'a [u8], want: Want<'_>) -> Result<Self, ViewError> {
        let mut v = RecordView::default();
        for f in Fields::new(bytes) {
            match f? {
                (1, x) => v.dataset = x.str()?,
                (2, x) => v.schema_version = x.varint()? as u32,
                (3, x) => v.agency = x.str()?,
                (4, x) => v.received_unix_ms = x.varint()? as i64,
                (5, x) => v.merge_record(x.bytes()?, want)?,
                (_, _) => {}
            }
        }
        Ok(v)
    }

    /// Merges an encoded `sharing.v1.Record`.
    fn merge_record(&mut self, bytes: &'a [u8], want: Want<'_>) -> Result<(), ViewError> {
        for f in Fields::new(bytes) {
            match f? {
                (1, x) => self.record_key = x.bytes()?,
                (2, x) => self.content_hash = x.bytes()?,
                (3, x) => {
                    let b = x.bytes()?;
                    if want.persons {
                        self.persons.push(person(b)?);
                    }
                }
                (4, x) => {
                    let b = x.bytes()?;
                    let i = self.values.len();
                    let read = want
                        .values
                        .is_none_or(|m| m.get(i).copied().unwrap_or(false));
                    self.values
                        .push(if read { value(b)? } else { Cell::Missing });
                }
                (5, x) => self.source_line = x.varint()?,
                (_, _) => {}
            }
        }
        Ok(())
    }
}

fn person(bytes: &[u8]) -> Result<PersonView<'_>, ViewError> {
    let mut p = PersonView {
        role: "",
        tokens: bytes,
        fuzzy: None,
    };
    for f in Fields::new(bytes) {
        match f? {
            (1, x) => p.role = x.str()?,
            (2, x) => {
                token_parts(x.bytes()?)?;
            }
            (3, x) => {
                let f = p.fuzzy.get_or_insert(("", 0, &[]));
                for g in Fields::new(x.bytes()?) {
                    match g? {
                        (1, y) => f.0 = y.str()?,
                        (2, y) => f.1 = y.fixed32()?,
                        (3, y) => f.2 = y.bytes()?,
                        (_, _) => {}
                    }
                }
            }
            (_, _) => {}
        }
    }
    Ok(p)
}

/// (kind, token) of an encoded `TypedToken`.
fn token_parts(bytes: &[u8]) -> Result<(&str, &[u8]), ViewError> {
    let (mut kind, mut token): (&str, &[u8]) = ("", &[]);
    for f in Fields::new(bytes) {
        match f? {
            (1, x) => kind = x.str()?,
            (2, x) => token = x.bytes()?,
            (_, _) => {}
        }
    }
    Ok((kind, token))
}

/// A `sharing.v1.Value`: the last member of its `oneof` given wins; none is a missing value.
fn value(bytes: &[u8]) -> Result<Cell<'_>, ViewError> {
    let mut cell = Cell::Missing;
    for f in Fields::new(bytes) {
        let (n, x): (u32, WireValue<'_>) = f?;
        cell = match n {
            1 => Cell::Text(x.str()?),
            2 => Cell::Int(zigzag(x.varint()?)),
            3 => Cell::Flag(x.varint()? != 0),
            4 => Cell::Date(x.str()?),
            5 => Cell::Datetime(x.str()?),
            // prost would merge two sets given in one value; stored records never hold that
            // (prost writes one), so it is refused rather than copied together.
            6 if matches!(cell, Cell::Set(_)) => return Err(WireError::WrongType),
            6 => Cell::Set(SetItems::encoded(x.bytes()?)?),
            _ => cell,
        };
    }
    Ok(cell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredRecord;
    use proptest::prelude::*;
    use prost::Message;
    use sharing_proto::v1::{
        FuzzyTokens, PersonRole, Record, StringSet, TypedToken, Value, value::Kind,
    };

    fn kind() -> impl Strategy<Value = Option<Kind>> {
        prop_oneof![
            Just(None),
            ".{0,12}".prop_map(|s| Some(Kind::Text(s))),
            any::<i64>().prop_map(|n| Some(Kind::Int(n))),
            any::<bool>().prop_map(|b| Some(Kind::Flag(b))),
            "[0-9-]{0,10}".prop_map(|s| Some(Kind::Date(s))),
            "[0-9T:-]{0,19}".prop_map(|s| Some(Kind::Datetime(s))),
            proptest::collection::vec(".{0,6}", 0..4)
                .prop_map(|items| Some(Kind::Set(StringSet { items }))),
        ]
    }

    fn record() -> impl Strategy<Value = StoredRecord> {
        let token = ("[a-z]{0,5}", proptest::collection::vec(any::<u8>(), 0..33))
            .prop_map(|(kind, token)| TypedToken { kind, token });
        let fuzzy = proptest::option::of(
            (
                ".{0,12}",
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..40),
            )
                .prop_map(|(version, present, tokens)| FuzzyTokens {
                    version,
                    present,
                    tokens,
                }),
        );
        let person = (
            "[a-z_]{0,10}",
            proptest::collection::vec(token, 0..4),
            fuzzy,
        )
            .prop_map(|(role, tokens, fuzzy)| PersonRole {
                role,
                tokens,
                fuzzy,
            });
        (
            (".{0,20}", any::<u32>(), ".{0,10}", any::<i64>()),
            proptest::collection::vec(any::<u8>(), 0..33),
            proptest::collection::vec(any::<u8>(), 0..33),
            proptest::collection::vec(person, 0..4),
            proptest::collection::vec(kind().prop_map(|kind| Value { kind }), 0..12),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |((dataset, sv, agency, ms), key, hash, persons, values, line, has)| StoredRecord {
                    dataset,
                    schema_version: sv,
                    agency,
                    received_unix_ms: ms,
                    record: has.then_some(Record {
                        record_key: key,
                        content_hash: hash,
                        persons,
                        values,
                        source_line: line,
                    }),
                },
            )
    }

    fn assert_same(view: &RecordView<'_>, rec: &StoredRecord) {
        assert_eq!(view.dataset, rec.dataset);
        assert_eq!(view.schema_version, rec.schema_version);
        assert_eq!(view.agency, rec.agency);
        assert_eq!(view.received_unix_ms, rec.received_unix_ms);
        let r = rec.record.clone().unwrap_or_default();
        assert_eq!(view.record_key, r.record_key.as_slice());
        assert_eq!(view.content_hash, r.content_hash.as_slice());
        assert_eq!(view.source_line, r.source_line);
        assert_eq!(view.persons.len(), r.persons.len());
        for (p, q) in view.persons.iter().zip(&r.persons) {
            assert_eq!(p.role, q.role);
            let want: Vec<(&str, &[u8])> = q
                .tokens
                .iter()
                .map(|t| (t.kind.as_str(), t.token.as_slice()))
                .collect();
            assert_eq!(p.tokens().collect::<Vec<_>>(), want);
            let fuzzy = q
                .fuzzy
                .as_ref()
                .map(|f| (f.version.as_str(), f.present, f.tokens.as_slice()));
            assert_eq!(p.fuzzy(), fuzzy);
        }
        let want: Vec<Cell<'_>> = r.values.iter().map(Cell::from).collect();
        assert_eq!(view.values, want);
    }

    proptest! {
        #[test]
        fn reads_exactly_what_prost_encodes(rec in record()) {
            let bytes = rec.encode_to_vec();
            let view = RecordView::parse(&bytes).expect("prost's bytes parse");
            assert_same(&view, &rec);
        }

        #[test]
        fn agrees_with_prost_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let ours = RecordView::parse(&bytes);
            let theirs = StoredRecord::decode(bytes.as_slice());
            if let (Ok(v), Ok(r)) = (&ours, &theirs) {
                assert_same(v, r);
            }
            // What prost refuses is refused.
            if theirs.is_err() {
                prop_assert!(ours.is_err());
            }
        }

        #[test]
        fn a_cut_record_is_refused_like_prost(rec in record(), cut in any::<prop::sample::Index>()) {
            let bytes = rec.encode_to_vec();
            if !bytes.is_empty() {
                let n = cut.index(bytes.len());
                let part = &bytes[..n];
                prop_assert_eq!(
                    RecordView::parse(part).is_ok(),
                    StoredRecord::decode(part).is_ok()
                );
            }
        }
    }

    #[test]
    fn merged_record_messages_are_read_like_prost() {
        let a = StoredRecord {
            dataset: "d".into(),
            record: Some(Record {
                values: vec![Value {
                    kind: Some(Kind::Int(1)),
                }],
                ..Record::default()
            }),
            ..StoredRecord::default()
        };
        let b = StoredRecord {
            record: Some(Record {
                values: vec![Value {
                    kind: Some(Kind::Text("x".into())),
                }],
                source_line: 7,
                ..Record::default()
            }),
            ..StoredRecord::default()
        };
        let mut bytes = a.encode_to_vec();
        bytes.extend(b.encode_to_vec());
        let theirs = StoredRecord::decode(bytes.as_slice()).expect("prost merges");
        let view = RecordView::parse(&bytes).expect("we merge");
        assert_same(&view, &theirs);
    }

    proptest! {
        #[test]
        fn reads_only_what_is_wanted(rec in record(), mask in proptest::collection::vec(any::<bool>(), 0..14), persons in any::<bool>()) {
            let bytes = rec.encode_to_vec();
            let all = RecordView::parse(&bytes).expect("parses");
            let some = RecordView::parse_some(&bytes, Want { persons, values: Some(&mask) })
                .expect("parses");
            prop_assert_eq!(some.values.len(), all.values.len());
            for (i, (a, b)) in all.values.iter().zip(&some.values).enumerate() {
                if mask.get(i).copied().unwrap_or(false) {
                    prop_assert!(a == b);
                } else {
                    prop_assert!(*b == Cell::Missing);
                }
            }
            prop_assert_eq!(some.persons.len(), if persons { all.persons.len() } else { 0 });
            prop_assert_eq!(some.record_key, all.record_key);
        }
    }

    #[test]
    fn debug_shows_no_value() {
        let rec = StoredRecord {
            dataset: "police_crime".into(),
            record: Some(Record {
                values: vec![Value {
                    kind: Some(Kind::Text("SECRET-VALUE".into())),
                }],
                ..Record::default()
            }),
            ..StoredRecord::default()
        };
        let bytes = rec.encode_to_vec();
        let view = RecordView::parse(&bytes).expect("parses");
        assert!(!format!("{view:?}").contains("SECRET"));
    }
}
