//! The canonical content hash of a record, computed by the agent and checked by the gateway.
//!
//! `SHA-256("skp-content-v2" ‖ lp(dataset) ‖ u32 schema version ‖ record key ‖ persons ‖ values)`
//! with values in the dataset's catalog order of sent fields (a missing value is encoded as
//! null). Persons are hashed in the order given; the agent sends them in catalog role order.
//! Each person is `lp(role) ‖ u32 count ‖ (lp(kind) ‖ lp(token))* ‖ fuzzy`, where `fuzzy` is
//! `0` when absent, else `1 ‖ lp(version) ‖ u32 present ‖ lp(tokens)` (v2 added it).

use sha2::{Digest, Sha256};
use sharing_proto::v1::{PersonRole, Value, value::Kind};

const CONTENT_DOMAIN: &[u8] = b"skp-content-v2";

/// Computes the content hash of a record whose `values` are in catalog order.
pub fn content_hash(
    dataset: &str,
    schema_version: u32,
    record_key: &[u8],
    persons: &[PersonRole],
    values: &[Value],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CONTENT_DOMAIN);
    lp(&mut h, dataset.as_bytes());
    h.update(schema_version.to_be_bytes());
    lp(&mut h, record_key);
    h.update((persons.len() as u32).to_be_bytes());
    for p in persons {
        lp(&mut h, p.role.as_bytes());
        h.update((p.tokens.len() as u32).to_be_bytes());
        for t in &p.tokens {
            lp(&mut h, t.kind.as_bytes());
            lp(&mut h, &t.token);
        }
        match &p.fuzzy {
            None => h.update([0]),
            Some(f) => {
                h.update([1]);
                lp(&mut h, f.version.as_bytes());
                h.update(f.present.to_be_bytes());
                lp(&mut h, &f.tokens);
            }
        }
    }
    h.update((values.len() as u32).to_be_bytes());
    for v in values {
        match &v.kind {
            None => h.update([0]),
            Some(Kind::Text(s)) => {
                h.update([1]);
                lp(&mut h, s.as_bytes());
            }
            Some(Kind::Int(i)) => {
                h.update([2]);
                h.update(i.to_be_bytes());
            }
            Some(Kind::Flag(b)) => h.update([3, u8::from(*b)]),
            Some(Kind::Date(s)) => {
                h.update([4]);
                lp(&mut h, s.as_bytes());
            }
            Some(Kind::Datetime(s)) => {
                h.update([5]);
                lp(&mut h, s.as_bytes());
            }
            Some(Kind::Set(set)) => {
                h.update([6]);
                h.update((set.items.len() as u32).to_be_bytes());
                for i in &set.items {
                    lp(&mut h, i.as_bytes());
                }
            }
        }
    }
    h.finalize().into()
}

fn lp(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u32).to_be_bytes());
    h.update(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::Text(s.into())),
        }
    }

    #[test]
    fn any_change_changes_the_hash() {
        let base = content_hash("d", 1, &[1; 32], &[], &[text("a"), Value { kind: None }]);
        assert_ne!(
            base,
            content_hash("d", 2, &[1; 32], &[], &[text("a"), Value { kind: None }])
        );
        assert_ne!(
            base,
            content_hash("e", 1, &[1; 32], &[], &[text("a"), Value { kind: None }])
        );
        assert_ne!(
            base,
            content_hash("d", 1, &[2; 32], &[], &[text("a"), Value { kind: None }])
        );
        assert_ne!(
            base,
            content_hash("d", 1, &[1; 32], &[], &[Value { kind: None }, text("a")])
        );
        assert_ne!(
            base,
            content_hash("d", 1, &[1; 32], &[], &[text("a"), text("")])
        );
        assert_eq!(
            base,
            content_hash("d", 1, &[1; 32], &[], &[text("a"), Value { kind: None }])
        );
    }

    #[test]
    fn fuzzy_tokens_are_part_of_the_content() {
        use sharing_proto::v1::FuzzyTokens;
        let person = |fuzzy: Option<FuzzyTokens>| PersonRole {
            role: "victim".into(),
            tokens: Vec::new(),
            fuzzy,
        };
        let fuzzy = |present: u32, tokens: &[u8]| FuzzyTokens {
            version: "skp/fuzzy/v1".into(),
            present,
            tokens: tokens.to_vec(),
        };
        let hash = |p: PersonRole| content_hash("d", 1, &[1; 32], &[p], &[]);
        let none = hash(person(None));
        let some = hash(person(Some(fuzzy(1, &[7; 16]))));
        assert_ne!(none, some);
        assert_ne!(some, hash(person(Some(fuzzy(2, &[7; 16])))));
        assert_ne!(some, hash(person(Some(fuzzy(1, &[8; 16])))));
        assert_ne!(none, hash(person(Some(fuzzy(0, &[])))));
        assert_eq!(some, hash(person(Some(fuzzy(1, &[7; 16])))));
    }
}
