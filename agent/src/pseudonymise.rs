//! Turns a source row into a pseudonymised record: values checked and normalised against the
//! catalog, direct identifiers normalised and replaced by tokens, the record key tokenised, the
//! content hash computed. Pure: no I/O. The output never holds a raw direct identifier.

use crate::config::Mapping;
use crate::source::Row;
use sharing_proto::v1::{
    FuzzyTokens, PersonRole, Record, StringSet, TypedToken, Value, value::Kind,
};
use skp_core::LinkageKey;
use skp_core::catalog::{Dataset, Field, FieldClass, FieldType, Role};
use skp_core::fuzzy::{FUZZY_VERSION, PersonFields, RawPerson};
use skp_core::normalise;
use std::collections::HashMap;

/// Why a row cannot be sent. Never holds the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// The catalog field at fault, if one.
    pub field: String,
    /// Source column of that field.
    pub column: String,
    /// Reason.
    pub reason: String,
}

/// Pseudonymises rows of one dataset.
pub struct Pseudonymiser<'a> {
    dataset: &'a Dataset,
    mapping: &'a Mapping,
    key: &'a LinkageKey,
    /// The fields of the roles' `demo` recipes: the only ones whose values as given the fuzzy
    /// tokens need.
    fuzzy_fields: Vec<&'a str>,
}

impl<'a> Pseudonymiser<'a> {
    /// A pseudonymiser for a dataset, its source mapping and the linkage key.
    pub fn new(dataset: &'a Dataset, mapping: &'a Mapping, key: &'a LinkageKey) -> Self {
        let fuzzy_fields = dataset
            .roles
            .iter()
            .flat_map(|r| &r.tokens)
            .filter(|t| t.kind == "demo")
            .flat_map(|t| &t.fields)
            .map(|f| f.as_str())
            .collect();
        Self {
            dataset,
            mapping,
            key,
            fuzzy_fields,
        }
    }

    /// Names of the fields each record carries values for, in order (the batch header).
    pub fn header(&self) -> Vec<String> {
        self.dataset
            .sent_fields()
            .map(|f| f.name.to_string())
            .collect()
    }

    /// Source columns a dataset needs that a file's header lacks: `(field, column, required)`.
    pub fn missing_columns(&self, header: &[String]) -> Vec<(String, String, bool)> {
        self.dataset
            .fields
            .iter()
            .filter(|f| {
                !header
                    .iter()
                    .any(|h| h == self.mapping.column(f.name.as_str()))
            })
            .map(|f| {
                (
                    f.name.to_string(),
                    self.mapping.column(f.name.as_str()).to_string(),
                    f.required,
                )
            })
            .collect()
    }

    /// Pseudonymises one row.
    pub fn record(&self, row: &Row) -> Result<Record, RowProblem> {
        let mut normalised: HashMap<&str, String> = HashMap::new();
        // Checked values of the demo recipes' fields as given (after the mapping's code
        // translation), for the fuzzy tokens, which need the words and spelling that exact
        // normalisation folds away.
        let mut checked: HashMap<&str, &str> = HashMap::new();
        let mut values = Vec::new();
        for field in &self.dataset.fields {
            let column = self.mapping.column(field.name.as_str());
            let problem = |reason: String| RowProblem {
                field: field.name.to_string(),
                column: column.to_string(),
                reason,
            };
            let raw = row.cells.get(column).map(String::as_str);
            let raw = match (raw, self.mapping.values.get(field.name.as_str())) {
                (Some(r), Some(map)) => Some(map.get(r).map(String::as_str).unwrap_or(r)),
                (r, _) => r,
            };
            let value = match raw {
                None if field.required => return Err(problem("required value is missing".into())),
                None => None,
                Some(r) => {
                    let v = normalise_value(field, r).map_err(problem)?;
                    if self.fuzzy_fields.contains(&field.name.as_str()) {
                        checked.insert(field.name.as_str(), r);
                    }
                    Some(v)
                }
            };
            if field.class == FieldClass::Direct {
                if let Some(v) = value.and_then(|v| plain_text(&v)) {
                    normalised.insert(field.name.as_str(), v);
                }
            } else {
                if let Some(v) = &value
                    && let Some(t) = plain_text(v)
                {
                    normalised.insert(field.name.as_str(), t);
                }
                values.push(Value { kind: value });
            }
        }

        let mut key_parts = Vec::with_capacity(self.dataset.record_key.len());
        for f in &self.dataset.record_key {
            match normalised.get(f.as_str()) {
                Some(v) => key_parts.push(v.as_str()),
                None => {
                    return Err(RowProblem {
                        field: f.to_string(),
                        column: self.mapping.column(f.as_str()).to_string(),
                        reason: "record key value is missing".into(),
                    });
                }
            }
        }
        let record_key = self
            .key
            .record_key(self.dataset.name.as_str(), &key_parts)
            .0
            .to_vec();

        let mut persons = Vec::new();
        for role in &self.dataset.roles {
            let mut tokens = Vec::new();
            for recipe in &role.tokens {
                let parts: Option<Vec<&str>> = recipe
                    .fields
                    .iter()
                    .map(|f| normalised.get(f.as_str()).map(String::as_str))
                    .collect();
                if let Some(parts) = parts {
                    tokens.push(TypedToken {
                        kind: recipe.kind.clone(),
                        token: self.key.token(&recipe.kind, &parts).0.to_vec(),
                    });
                }
            }
            let fuzzy = self.fuzzy(role, &checked);
            if !tokens.is_empty() || fuzzy.is_some() {
                persons.push(PersonRole {
                    role: role.name.clone(),
                    tokens,
                    fuzzy,
                });
            }
        }
        let content_hash = skp_core::content::content_hash(
            self.dataset.name.as_str(),
            self.dataset.version,
            &record_key,
            &persons,
            &values,
        )
        .to_vec();
        Ok(Record {
            record_key,
            content_hash,
            persons,
            values,
            source_line: row.line,
        })
    }
}

impl Pseudonymiser<'_> {
    /// The fuzzy-linkage tokens of a role, from the fields of its `demo` recipe (surname,
    /// forename, date of birth, sex, in that order, as the catalog requires) that the row has;
    /// `None` when the role has no such recipe or none of its values is usable.
    fn fuzzy(&self, role: &Role, checked: &HashMap<&str, &str>) -> Option<FuzzyTokens> {
        let recipe = role.tokens.iter().find(|r| r.kind == "demo")?;
        let value = |i: usize| {
            recipe
                .fields
                .get(i)
                .and_then(|f| checked.get(f.as_str()).copied())
        };
        let raw = RawPerson {
            surname: value(0),
            forenames: value(1),
            dob: value(2),
            sex: value(3),
            postcode: None,
        };
        let (fields, _invalid) = PersonFields::from_raw(&raw);
        let set = self.key.fuzzy().encode(&fields);
        if set.is_empty() {
            return None;
        }
        let (present, tokens) = set.to_wire();
        Some(FuzzyTokens {
            version: FUZZY_VERSION.to_string(),
            present,
            tokens,
        })
    }
}

/// The text form of a value used in tokens and record keys.
fn plain_text(k: &Kind) -> Option<String> {
    match k {
        Kind::Text(s) | Kind::Date(s) | Kind::Datetime(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Flag(b) => Some(b.to_string()),
        Kind::Set(_) => None,
    }
}

/// Checks and normalises one cell. The reason never repeats the value.
fn normalise_value(field: &Field, raw: &str) -> Result<Kind, String> {
    let n = |r: Result<String, normalise::NormaliseError>| r.map_err(|e| e.to_string());
    Ok(match field.ty {
        FieldType::Str => {
            if raw.chars().count() > field.max_len as usize {
                return Err(format!("text longer than {} characters", field.max_len));
            }
            if field.class != FieldClass::Direct
                && let Some(what) = normalise::raw_identifier_in(raw)
            {
                return Err(format!(
                    "text looks like it contains {what}; remove it from the export (raw identifiers never leave the agency)"
                ));
            }
            Kind::Text(raw.to_string())
        }
        FieldType::Int => Kind::Int(
            raw.parse::<i64>()
                .map_err(|_| "expected a whole number".to_string())?,
        ),
        FieldType::Date => Kind::Date(n(normalise::date(raw))?),
        FieldType::Datetime => Kind::Datetime(n(normalise::datetime(raw))?),
        FieldType::Bool => Kind::Flag(match raw.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => true,
            "false" | "f" | "no" | "n" | "0" => false,
            _ => return Err("expected true/false, yes/no or 1/0".into()),
        }),
        FieldType::Enum => Kind::Text(allowed(field, raw)?),
        FieldType::Set => {
            let mut items: Vec<String> = Vec::new();
            for part in raw
                .split([';', '|'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let v = allowed(field, part)?;
                if !items.contains(&v) {
                    items.push(v);
                }
            }
            Kind::Set(StringSet { items })
        }
        FieldType::NhsNumber => Kind::Text(n(normalise::nhs_number(raw))?),
        FieldType::PncId => Kind::Text(n(normalise::pnc_id(raw))?),
        FieldType::Name => Kind::Text(n(normalise::name(raw))?),
        FieldType::Postcode => Kind::Text(n(normalise::postcode(raw))?),
        FieldType::Reference => Kind::Text(n(normalise::reference(raw))?),
        FieldType::Uprn => Kind::Text(n(normalise::uprn(raw))?),
    })
}

/// The catalog spelling of an enum or set value (exact, or case-insensitive).
fn allowed(field: &Field, raw: &str) -> Result<String, String> {
    if let Some(v) = field.values.iter().find(|v| *v == raw) {
        return Ok(v.clone());
    }
    if let Some(v) = field.values.iter().find(|v| v.eq_ignore_ascii_case(raw)) {
        return Ok(v.clone());
    }
    Err(format!(
        "value is not one of the {} allowed values (see the catalog, or map source codes under [datasets.*.values])",
        field.values.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, cells: &[(&str, &str)]) -> Row {
        Row {
            line,
            cells: cells
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn direct_identifiers_never_appear_in_the_record() {
        let cat = skp_core::Catalog::embedded().expect("catalog");
        let ds = cat.dataset("probation_reoffending_events").expect("ds");
        let key = LinkageKey::from_bytes(&[9; 32]);
        let mapping = Mapping::default();
        let p = Pseudonymiser::new(ds, &mapping, &key);
        // Fill every field with a plausible value.
        let mut cells: Vec<(String, String)> = Vec::new();
        let letter = skp_core::normalise::pnc_check_letter("19", 123456) as char;
        for f in &ds.fields {
            let v = match f.ty {
                FieldType::PncId => format!("2019/0123456{letter}"),
                FieldType::Name => "O'Brien".into(),
                FieldType::Date if f.class == FieldClass::Direct => "1990-01-02".into(),
                FieldType::Date => "2024-05-06".into(),
                FieldType::Datetime => "2024-01-02T03:04".into(),
                FieldType::Int => "3".into(),
                FieldType::Bool => "no".into(),
                FieldType::Enum | FieldType::Set => f.values[0].clone(),
                FieldType::NhsNumber => "9434765919".into(),
                FieldType::Postcode => "KT1 1EE".into(),
                FieldType::Uprn => "128001234567".into(),
                FieldType::Reference => "REF-1".into(),
                FieldType::Str => "x".into(),
            };
            cells.push((f.name.to_string(), v));
        }
        let r = row(
            2,
            &cells
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect::<Vec<_>>(),
        );
        let rec = p.record(&r).expect("record");
        let bytes = prost::Message::encode_to_vec(&rec);
        for needle in ["OBRIEN", "O'Brien", "0123456", "1990-01-02", "REF-1"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} leaked"
            );
        }
        assert!(!rec.persons.is_empty());
        assert_eq!(rec.values.len(), ds.sent_fields().count());
    }

    #[test]
    fn roles_with_a_demo_recipe_carry_fuzzy_tokens_of_their_values_only() {
        let cat = skp_core::Catalog::embedded().expect("catalog");
        let ds = cat.dataset("police_crime").expect("ds");
        let mapping = Mapping::default();
        let mut cells: Vec<(String, String)> = Vec::new();
        for f in &ds.fields {
            let v = match (f.name.as_str(), f.ty) {
                ("victim_surname", _) => "Smith-Jones",
                ("victim_forename", _) => "Mary Ann",
                ("victim_dob", _) => "1984-11-03",
                ("victim_sex", _) => "F",
                // The suspect is unknown: no names, no date of birth.
                (n, _) if n.starts_with("suspect_") => continue,
                (_, FieldType::Date) => "2024-05-06",
                (_, FieldType::Datetime) => "2024-01-02T03:04",
                (_, FieldType::Int) => "3",
                (_, FieldType::Bool) => "no",
                (_, FieldType::Enum | FieldType::Set) => f.values[0].as_str(),
                (_, FieldType::Postcode) => "KT1 1EE",
                (_, FieldType::Uprn) => "128001234567",
                (_, FieldType::PncId | FieldType::NhsNumber) => continue,
                _ => "x",
            };
            cells.push((f.name.to_string(), v.to_string()));
        }
        let cells: Vec<(&str, &str)> = cells
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let encode = |key: &LinkageKey| {
            Pseudonymiser::new(ds, &mapping, key)
                .record(&row(2, &cells))
                .expect("record")
        };
        let key = LinkageKey::from_bytes(&[9; 32]);
        let rec = encode(&key);
        // Only the victim has values; their tokens are those of the fuzzy encoder.
        assert_eq!(rec.persons.len(), 1, "{:?}", rec.persons);
        let f = rec.persons[0].fuzzy.as_ref().expect("fuzzy tokens");
        assert_eq!(f.version, FUZZY_VERSION);
        let got = skp_core::fuzzy::TokenSet::from_wire(f.present, &f.tokens).expect("shape");
        let (fields, invalid) = PersonFields::from_raw(&RawPerson {
            forenames: Some("Mary Ann"),
            surname: Some("Smith-Jones"),
            dob: Some("1984-11-03"),
            sex: Some("F"),
            postcode: None,
        });
        assert!(invalid.is_empty());
        assert_eq!(got, key.fuzzy().encode(&fields));
        assert!(got.len() >= 15, "{} tokens", got.len());
        // No raw value, in any spelling, and no digits of the date.
        let bytes = prost::Message::encode_to_vec(&rec);
        for needle in [
            "SMITH", "Smith", "JONES", "MARY", "Mary", "ANN", "1984", "19841103", "841103",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} leaked"
            );
        }
        // Another key: no token in common.
        let other = encode(&LinkageKey::from_bytes(&[10; 32]));
        let o = other.persons[0].fuzzy.as_ref().expect("fuzzy");
        let theirs = skp_core::fuzzy::TokenSet::from_wire(o.present, &o.tokens).expect("shape");
        assert_eq!(o.present, f.present);
        for (_, t) in got.iter() {
            assert!(theirs.iter().all(|(_, u)| u != t));
        }
    }

    #[test]
    fn bad_values_name_the_field_not_the_value() {
        let cat = skp_core::Catalog::embedded().expect("catalog");
        let ds = cat.dataset("lfb_incident").expect("ds");
        let key = LinkageKey::from_bytes(&[9; 32]);
        let mapping = Mapping::default();
        let p = Pseudonymiser::new(ds, &mapping, &key);
        let e = p.record(&row(5, &[])).expect_err("missing");
        assert!(e.reason.contains("missing"), "{e:?}");
        let date_field = ds
            .fields
            .iter()
            .find(|f| f.ty == FieldType::Date && f.required)
            .expect("a date");
        assert!(normalise_value(date_field, "31/02/2024").is_err());
    }
}
